"""What a trained fusion-level DynMM does beyond its headline metrics: the test-time cost knob β, robustness to
noisy or missing depth (the auxiliary modality) and noisy RGB, example segmentations; written to metrics.json
and report.html.

The report leads with what skipping the auxiliary (depth) encoder saves: its MAdds per scene for this run, the
static fusion baselines and other λ points, against the best static fusion. Routing is shown per fusion cell
(which op) and per scene (how many depth stages ran, split by data flag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dynmm.data.base import MultimodalDataset, collate
from dynmm.data.rgbd_synth import CLASS_NAMES as RGBD_SYNTH_CLASSES
from dynmm.io import read_json
from dynmm.methods.fusion_level.evaluate import evaluate_fusion_level
from dynmm.methods.fusion_level.model import FusionLevelDynMM
from dynmm.modes import eval_mode
from dynmm.report.html import write_report
from dynmm.report.robustness import NoiseSpec, corrupt
from dynmm.specs import SEGMENTATION_IGNORE, TaskSpec

BETAS = (-1.0, 0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
NOISE_LEVELS = (0.0, 0.5, 1.0, 2.0)
EXAMPLES = 4
KEEP = ("miou", "pixel_accuracy", "madds_per_sample", "aux_madds_per_sample")
ROUTING = ("aux_stages_run", "ops_per_cell")
KNOWN_CLASS_NAMES = {"rgbd_synth": RGBD_SYNTH_CLASSES}
"""Class names of data sets that have them, for the legend of the example segmentations."""
UNLABELED = "unlabeled"


def _evaluate(
    model: FusionLevelDynMM, data: MultimodalDataset, task: TaskSpec, routing: bool = False, **kw: Any
) -> dict[str, Any]:
    """The headline numbers (KEEP) of `data`, with the per-cell and per-stage routing when asked."""
    results = evaluate_fusion_level(model, DataLoader(data, batch_size=16, collate_fn=collate), task, **kw)
    return {k: results[k] for k in (*KEEP, *(ROUTING if routing else ()))}


def beta_curve(model: FusionLevelDynMM, test: MultimodalDataset, task: TaskSpec) -> list[dict[str, Any]]:
    """mIoU and MAdds of one trained model as β moves its choices towards cheaper ops."""
    curve = []
    for beta in BETAS:
        model.beta = beta
        curve.append({"beta": beta, **_evaluate(model, test, task)})
    model.beta = 0.0
    return curve


def robustness(model: FusionLevelDynMM, test: MultimodalDataset, task: TaskSpec) -> dict[str, Any]:
    """mIoU under Gaussian noise on each modality (std in units of the modality's own std) and without the
    auxiliary modality (depth, unless the roles are swapped)."""
    noise = {
        modality: [
            _evaluate(model, corrupt(test, [NoiseSpec(modality, "gaussian", level)]), task)["miou"]
            for level in NOISE_LEVELS
        ]
        for modality in ("rgb", "depth")
    }
    missing = _evaluate(model, corrupt(test, drop=[model.secondary]), task, missing=[model.secondary])
    return {"levels": list(NOISE_LEVELS), "noise": noise, "missing_aux": missing}


@torch.no_grad()
def examples(model: FusionLevelDynMM, test: MultimodalDataset, unlabeled: int) -> list[dict[str, Any]]:
    """The first test scenes: RGB (rescaled to [0, 1] per image), depth, labels (class-less pixels as class
    `unlabeled`), prediction and its routing."""
    rows = []
    with eval_mode(model):
        for i in range(min(EXAMPLES, len(test))):
            inputs = {k: v[i : i + 1] for k, v in test.inputs.items()}
            prediction = model(inputs).argmax(dim=1)[0].numpy()
            rgb = inputs["rgb"][0].permute(1, 2, 0).numpy()
            rgb = (rgb - rgb.min()) / max(float(rgb.max() - rgb.min()), 1e-6)
            assert model.last_choice is not None
            ops = ", ".join(model.op_names[int(o)] for o in model.last_choice[0])
            label = test.target[i].numpy().copy()
            label[label == SEGMENTATION_IGNORE] = unlabeled
            rows.append(
                {
                    "label": f"scene {i} ({ops})",
                    "panels": {
                        "rgb": rgb,
                        "depth": inputs["depth"][0, 0].numpy(),
                        "labels": label.astype(np.int64),
                        "prediction": prediction.astype(np.int64),
                    },
                }
            )
    return rows


def class_names(data_name: str, num_classes: int) -> list[str]:
    """The data set's class names (generic "class i" when it has none), then UNLABELED: class-less pixels are
    drawn as the class after the last."""
    known = KNOWN_CLASS_NAMES.get(data_name)
    names = list(known) if known is not None and len(known) == num_classes else []
    return [*(names or (f"class {i}" for i in range(num_classes))), UNLABELED]


def by_flag(model: FusionLevelDynMM, test: MultimodalDataset, task: TaskSpec) -> dict[str, Any]:
    """Per data flag (e.g. rgbd_synth's `depth_pairs`: the scene holds an object only depth can label), mIoU,
    MAdds and routing on the flagged scenes and on the others: does the gate pay for depth where it is needed?"""
    results: dict[str, Any] = {}
    for flag, rows in test.flags.items():
        groups = {"flagged": rows.nonzero().flatten(), "not_flagged": (~rows).nonzero().flatten()}
        results[flag] = {
            group: {"scenes": int(idx.numel()), **_evaluate(model, test.subset(idx), task, routing=True)}
            for group, idx in groups.items()
            if idx.numel()
        }
    return results


def analyse(model: FusionLevelDynMM, test: MultimodalDataset, task: TaskSpec) -> dict[str, Any]:
    """β curve (a gated model only: a static op has nothing to trade), robustness and results per data flag."""
    curve = [] if model.routing_is_fixed else beta_curve(model, test, task)
    return {"beta_curve": curve, "robustness": robustness(model, test, task), "by_flag": by_flag(model, test, task)}


def routing_summary(test: dict[str, Any]) -> dict[str, Any]:
    """Whether the gate routes scenes apart (keys the evaluation may record: path shares, collapse)."""
    out: dict[str, Any] = {}
    if test.get("top_path") is not None:
        out["most common routing path"] = test["top_path"]
    if test.get("top_path_share") is not None:
        out["share of scenes on the most common path"] = test["top_path_share"]
    if test.get("collapsed") is not None:
        out["routing collapsed onto one path"] = "yes" if test["collapsed"] else "no"
    return out


def component(
    test: dict[str, Any], static: list[dict[str, Any]], gated: list[dict[str, Any]], metric: str = "miou"
) -> dict[str, Any]:
    """Bars of auxiliary-encoder MAdds per scene: static baselines, other DynMM runs (λ points), this run; the
    saving is stated against the best static fusion (highest metric among baselines that run the encoder)."""
    secondary = test.get("secondary", "depth")
    bars = [
        {"name": p["name"], "group": group, "madds": p["aux_madds"], "metric": p["metric"]}
        | ({"collapsed": p["collapsed"]} if p.get("collapsed") is not None else {})
        for group, points in (("static fusion", static), ("other DynMM runs", gated))
        for p in points
        if p.get("aux_madds") is not None
    ]
    mine = {"name": "this run", "group": "this run", "madds": test["aux_madds_per_sample"], "metric": test[metric]}
    bars.append(mine | ({"collapsed": test["collapsed"]} if test.get("collapsed") is not None else {}))
    fusing = [b for b in bars if b["group"] == "static fusion" and b["madds"] > 0]
    out = {"name": f"{secondary} encoder", "bars": bars, "full": test["aux_madds_full"], "subject": "this run"}
    if fusing:
        best = max(fusing, key=lambda b: b["metric"])
        out |= {"reference": best["name"], "reference_kind": "best static fusion"}
    return out


def stage_histogram(test: dict[str, Any], by_flag: dict[str, Any]) -> dict[str, Any]:
    """Scenes by how many auxiliary-encoder stages they ran, and the same split by each data flag."""
    secondary = test.get("secondary", "depth")
    stages = test["aux_stages_run"]
    stacked = {
        flag: {group.replace("_", " "): numbers["aux_stages_run"] for group, numbers in groups.items()}
        for flag, groups in by_flag.items()
        if all("aux_stages_run" in numbers for numbers in groups.values())
    }
    return {
        "title": f"{secondary}-encoder stages run per scene",
        "xlabel": f"{secondary} stages run",
        "bins": [str(k) for k in range(len(stages))],
        "counts": stages,
        "stacked": stacked,
    }


def _pareto_point(p: dict[str, Any], key: str) -> dict[str, Any]:
    """A run found by baseline_points as a Pareto point (its name under `key`: name or label)."""
    collapsed = {"collapsed": p["collapsed"]} if p.get("collapsed") is not None else {}
    return {key: p["name"], "madds": p["madds"], "metric": p["metric"], **collapsed}


def report_data(
    title: str,
    metrics: dict[str, Any],
    baselines: list[dict[str, Any]] | None = None,
    gated: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report's input from metrics.json, static baselines and other DynMM runs (`baseline_points`)."""
    test = metrics["test"]
    cells = test["ops_per_cell"]
    ops = list(cells[0])
    robust = metrics["robustness"]
    secondary = test.get("secondary", "depth")
    static, others = baselines or [], gated or []
    mine = {"label": "this run", "madds": test["madds_per_sample"], "metric": test["miou"]}
    mine |= {"collapsed": test["collapsed"]} if test.get("collapsed") is not None else {}
    return {
        "title": f"Fusion-level DynMM · {title}",
        "metric": "miou",
        "unit": "scene",
        "summary": {
            "test mIoU": test["miou"],
            "MAdds per sample": test["madds_per_sample"],
            f"{secondary}-encoder MAdds per sample": test["aux_madds_per_sample"],
            f"whole {secondary} encoder": test["aux_madds_full"],
            f"mIoU without {secondary}": robust["missing_aux"]["miou"],
            **{
                f"{secondary}-encoder MAdds per sample, {group.replace('_', ' ')} {flag}": numbers[
                    "aux_madds_per_sample"
                ]
                for flag, groups in metrics.get("by_flag", {}).items()
                for group, numbers in groups.items()
            },
            **routing_summary(test),
        },
        "component": component(test, static, others),
        "pareto": {
            "baselines": [_pareto_point(p, "name") for p in static],
            "dynmm": [mine, *(_pareto_point(p, "label") for p in others)],
            "beta_curve": [
                {"beta": p["beta"], "madds": p["madds_per_sample"], "metric": p["miou"]} for p in metrics["beta_curve"]
            ],
            "test_rows": sum(test["aux_stages_run"]),
        },
        "routing": {
            "experts": ops,
            "counts": [sum(cell[o] for cell in cells) for o in ops],
            "per_class": {f"cell {k + 1}": [cell[o] for o in ops] for k, cell in enumerate(cells)},
            "unit": "cell choice",
            "group": "cell",
        },
        "histograms": [stage_histogram(test, metrics.get("by_flag", {}))],
        "robustness": [
            {
                "title": f"Gaussian noise on {m}",
                "xlabel": "noise std / feature std",
                "levels": robust["levels"],
                "curves": {"DynMM": curve},
            }
            for m, curve in robust["noise"].items()
        ],
    }


def write_fusion_report(
    run_dir: Path,
    metrics: dict[str, Any],
    model: FusionLevelDynMM,
    test: MultimodalDataset,
    baselines: Path | None = None,
) -> Path:
    others = baseline_points(run_dir, baselines) if baselines else []
    static = [p for p in others if not p["gated"]]
    data = report_data(run_dir.name, metrics, static, [p for p in others if p["gated"]])
    data_name = read_json(run_dir / "model.json", "the run's exported model")["data"]["name"]
    names = class_names(data_name, model.decoder.num_classes)
    rows = examples(model, test, unlabeled=names.index(UNLABELED))
    data["examples"] = {"title": "Example segmentations", "rows": rows, "class_names": names}
    return write_report(run_dir, data)


def baseline_points(run_dir: Path, baselines: Path) -> list[dict[str, Any]]:
    """Other finished fusion-level runs on the same data: static single-op baselines and other DynMM runs
    (`gated`), in `baselines` and one level further down (the points of a λ sweep), with their auxiliary-encoder
    MAdds (`aux_madds`) and whether their routing collapsed, where their metrics record them."""
    own = read_json(run_dir / "model.json", "the run's exported model")["data"]
    points = []
    folders = [p for p in sorted(baselines.iterdir()) if p.is_dir()]
    nested = [child for p in folders if not (p / "model.json").is_file() for child in sorted(p.iterdir())]
    for candidate in folders + nested:
        if (
            candidate.resolve() == run_dir.resolve()
            or not (candidate / "metrics.json").is_file()
            or not (candidate / "model.json").is_file()
        ):
            continue
        description = read_json(candidate / "model.json", "a baseline run's exported model")
        if description.get("model_type") != "fusion_level" or description["data"] != own:
            continue
        test = read_json(candidate / "metrics.json", "a baseline run's metrics")["test"]
        gated = description["fusion_level"]["static_op"] is None  # another DynMM run, not a static baseline
        points.append(
            {
                "name": str(candidate.relative_to(baselines)),
                "madds": test["madds_per_sample"],
                "metric": test["miou"],
                "gated": gated,
                "aux_madds": test.get("aux_madds_per_sample"),
                "collapsed": test.get("collapsed") if gated else None,
            }
        )
    return points


def rebuild_fusion_report(run_dir: Path, baselines: Path | None = None) -> Path:
    """`dynmm report RUN` for a fusion-level run."""
    from dynmm.engine.export import load_finished
    from dynmm.methods.fusion_level.export import FUSION_LEVEL_BUILDERS

    metrics, model, test = load_finished(
        run_dir, FUSION_LEVEL_BUILDERS, FusionLevelDynMM, "beta_curve", "fusion-level DynMM"
    )
    return write_fusion_report(run_dir, metrics, model, test, baselines)
