"""What a trained fusion-level DynMM does beyond its headline metrics: the test-time cost knob β, robustness to
noisy or missing depth (the auxiliary modality) and noisy RGB, example segmentations; written to metrics.json
and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dynmm.data.base import MultimodalDataset, collate
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
def examples(model: FusionLevelDynMM, test: MultimodalDataset) -> list[dict[str, Any]]:
    """The first test scenes: RGB (rescaled to [0, 1] per image), depth, labels, prediction and its routing."""
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
            label[label == SEGMENTATION_IGNORE] = 19  # unlabeled drawn in the last colour
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


def report_data(title: str, metrics: dict[str, Any], baselines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    test = metrics["test"]
    cells = test["ops_per_cell"]
    ops = list(cells[0])
    robust = metrics["robustness"]
    secondary = test.get("secondary", "depth")
    return {
        "title": f"Fusion-level DynMM · {title}",
        "metric": "miou",
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
        },
        "pareto": {
            "baselines": baselines or [],
            "dynmm": [{"label": "DynMM", "madds": test["madds_per_sample"], "metric": test["miou"]}],
            "beta_curve": [
                {"beta": p["beta"], "madds": p["madds_per_sample"], "metric": p["miou"]} for p in metrics["beta_curve"]
            ],
        },
        "routing": {
            "experts": ops,
            "counts": [sum(cell[o] for cell in cells) for o in ops],
            "per_class": {f"cell {k + 1}": [cell[o] for o in ops] for k, cell in enumerate(cells)},
        },
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
    static = [{k: v for k, v in p.items() if k != "gated"} for p in others if not p["gated"]]
    data = report_data(run_dir.name, metrics, static)
    data["pareto"]["dynmm"] += [
        {"label": p["name"], "madds": p["madds"], "metric": p["metric"]} for p in others if p["gated"]
    ]
    data["examples"] = {"title": "Example segmentations", "rows": examples(model, test)}
    return write_report(run_dir, data)


def baseline_points(run_dir: Path, baselines: Path) -> list[dict[str, Any]]:
    """Other finished fusion-level runs on the same data: static single-op baselines and other DynMM runs
    (`gated`), in `baselines` and one level further down (the points of a λ sweep)."""
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
