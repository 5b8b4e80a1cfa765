"""Final evaluation of a modality-level DynMM run: metrics.json, routing.json and report.html.

Everything here is measured on the run's evaluation data: the deployed model in dispatch mode (metrics,
realized MAdds per sample and per class, routing histogram), every expert alone (the static points it is
compared with), the test-time cost knob β, oracle routing, robustness to noise and to a missing modality.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dynmm.data.base import MultimodalDataset, collate
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.data.registry import load_dataset
from dynmm.errors import DataError
from dynmm.io import atomic_write_json, read_json
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.methods.modality_level.routing_analysis import (
    accuracy_name,
    beta_curve,
    beta_grid,
    collect_outputs,
    dispatch_results,
    expert_metrics,
    frontier_comparison,
    oracle_frontier,
    recorded_accuracy_name,
    routing_summary,
)
from dynmm.report.evaluate import evaluate
from dynmm.report.html import write_report
from dynmm.report.robustness import NoiseSpec, corrupt
from dynmm.specs import TaskSpec

ROUTING_FILE = "routing.json"
METRICS_FILE = "metrics.json"
SPEED_FILE = "speed.json"
NOISE_LEVELS = (0.0, 0.25, 0.5, 1.0, 2.0)


def loader(dataset: MultimodalDataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate)


def metric_of(
    model: nn.Module, dataset: MultimodalDataset, task: TaskSpec, batch_size: int, missing: Collection[str] = ()
) -> float:
    """The accuracy-like metric of a DynMM (dispatch, told what is missing) or a static model."""
    name = accuracy_name(task)
    with warnings.catch_warnings():
        # A model whose only input was dropped predicts a constant: Pearson r is undefined there, and not reported.
        warnings.filterwarnings("ignore", message="The variance of predictions or target is close to zero")
        if isinstance(model, ModalityLevelDynMM):
            return dispatch_results(model, loader(dataset, batch_size), task, missing).metrics[name]
        return evaluate(model, loader(dataset, batch_size), task)[name]


def robustness(
    model: ModalityLevelDynMM, names: Sequence[str], dataset: MultimodalDataset, task: TaskSpec, batch_size: int
) -> dict[str, Any]:
    """Metric vs Gaussian noise level on each modality, and with each modality missing, for DynMM and experts."""
    models: dict[str, nn.Module] = {"DynMM": model, **dict(zip(names, model.experts, strict=True))}
    noise = []
    for modality in sorted(dataset.inputs):
        curves = {
            label: [
                metric_of(m, corrupt(dataset, [NoiseSpec(modality, "gaussian", level)]), task, batch_size)
                for level in NOISE_LEVELS
            ]
            for label, m in models.items()
        }
        noise.append({"modality": modality, "levels": list(NOISE_LEVELS), "curves": curves})
    missing = {
        modality: {
            label: metric_of(m, corrupt(dataset, drop=[modality]), task, batch_size, missing=[modality])
            for label, m in models.items()
        }
        for modality in sorted(dataset.inputs)
    }
    return {"metric": accuracy_name(task), "noise": noise, "missing": missing}


def evaluate_dynmm_run(
    run_dir: Path,
    model: ModalityLevelDynMM,
    names: Sequence[str],
    data: MultimodalDataModule,
    stages: dict[str, Any],
) -> dict[str, Any]:
    """Measure the trained model on valid and test; write routing.json and report.html; return metrics."""
    task = data.info.task
    model.eval()
    valid = dispatch_results(model, data.val_dataloader(), task)
    test = dispatch_results(model, data.test_dataloader(), task)
    routing = routing_summary(test, names, task)
    # Per-sample facts the loader kept (e.g. AV digits' image_hard): does the gate route by them?
    routing["per_flag"] = {
        flag: {
            value: torch.bincount(test.choice[rows if value == "yes" else ~rows], minlength=len(names)).tolist()
            for value in ("yes", "no")
        }
        for flag, rows in data.splits["test"].flags.items()
    }
    record = collect_outputs(model, data.test_dataloader())
    curve = beta_curve(model, record, task, beta_grid(model, record))
    oracle = oracle_frontier(model, record, task)
    low = model.gate_madds + min(model.path_madds)
    high = model.gate_madds + max(model.path_madds)
    experts = {
        name: {**alone, "madds_per_sample": madds}
        for name, alone, madds in zip(names, expert_metrics(record, task), model.expert_madds, strict=True)
    }
    metric = accuracy_name(task)
    costliest = names[max(range(len(names)), key=lambda i: model.expert_madds[i])]
    mean_madds = float(test.madds.mean())
    metrics: dict[str, Any] = {
        "valid": valid.metrics,
        "test": test.metrics,
        "madds_per_sample": mean_madds,
        "madds_per_class": routing["madds_per_class"],
        "expert_madds": dict(zip(names, model.expert_madds, strict=True)),
        "gate_madds": model.gate_madds,
        "routing": {"fractions": dict(zip(names, routing["fractions"], strict=True))},
        "experts": experts,
        "versus_costliest": {
            "expert": costliest,
            "madds_saving": 1.0 - mean_madds / experts[costliest]["madds_per_sample"],
            f"{metric}_change": test.metrics[metric] - experts[costliest][metric],
        },
        "beta_curve": curve,
        "oracle_frontier": oracle,
        "frontier": frontier_comparison(curve, oracle, low, high),
        "robustness": robustness(model, names, data.splits["test"], task, data.batch_size),
        "stages": stages,
    }
    atomic_write_json(run_dir / ROUTING_FILE, routing)
    write_report(run_dir, report_data(run_dir.name, metrics, routing))
    return metrics


def write_run_report(run_dir: Path, sweep: Path | None = None, baselines: Path | None = None) -> Path:
    """(Re)build report.html of a finished DynMM run from its JSON files, adding the speed measured by
    `dynmm bench speed --run RUN` (RUN/speed.json), the points of a λ sweep, and static baselines (seed-0 runs of
    `dynmm bench baselines` in `baselines`, re-evaluated on this run's evaluation data) when given."""
    for name in (METRICS_FILE, "model.json"):
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir / name} is missing: is {run_dir} a finished DynMM run?")
    if not (run_dir / ROUTING_FILE).is_file():
        raise DataError(f"{run_dir / ROUTING_FILE} is missing: is {run_dir} a finished DynMM run?")
    metrics = read_json(run_dir / METRICS_FILE, "the run's metrics")
    if "beta_curve" not in metrics:
        raise DataError(f"{run_dir} is not a DynMM run (its metrics.json has no routing analysis)")
    routing = read_json(run_dir / ROUTING_FILE, "the run's routing statistics")
    speed = run_dir / SPEED_FILE
    sweep_summary = read_json(sweep, "a λ-sweep summary") if sweep is not None else None
    speed_results = read_json(speed, "dynmm bench speed's results") if speed.is_file() else None
    data = report_data(run_dir.name, metrics, routing, speed_results, sweep_summary)
    if baselines is not None:
        data["pareto"]["baselines"] = baseline_points(run_dir, baselines)
    return write_report(run_dir, data)


def baseline_points(run_dir: Path, baselines: Path) -> list[dict[str, Any]]:
    """Every seed-0 static run of the same data set under `baselines`, evaluated on the DynMM run's eval data
    (MOSI: the held-out test rows), so that all points of the Pareto plot are measured on the same samples."""
    from dynmm.engine.export import exported_model_type
    from dynmm.methods.modality_level.export import load_modality_level
    from dynmm.methods.static.export import load_static

    own = load_modality_level(run_dir)
    data = own.data_config
    test = load_dataset(data.name, **data.options)["test"]
    points = []
    for candidate in sorted(baselines.glob(f"{data.name}_*_seed0")):
        if exported_model_type(candidate) != "static":
            continue
        exported = load_static(candidate)
        if exported.specs != own.specs:
            continue
        madds = read_json(candidate / METRICS_FILE, "a baseline run's metrics")["madds_per_sample"]
        name = candidate.name.removeprefix(f"{data.name}_").removesuffix("_seed0")
        points.append({"name": name, "madds": madds, "metric": metric_of(exported.model, test, own.task, 256)})
    return points


def report_data(
    title: str,
    metrics: dict[str, Any],
    routing: dict[str, Any],
    speed: dict[str, Any] | None = None,
    sweep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's input, from metrics.json and routing.json of one run (+ speed.json, a sweep summary)."""
    versus = metrics["versus_costliest"]
    metric = recorded_accuracy_name(metrics)
    aggregate = sweep.get("aggregate") if sweep is not None else None
    data: dict[str, Any] = {
        "title": f"DynMM · {title}",
        "metric": metric,
        "summary": {
            f"test {metric}": metrics["test"][metric],
            "MAdds per sample": metrics["madds_per_sample"],
            f"MAdds saving vs {versus['expert']}": versus["madds_saving"],
            f"{metric} change vs {versus['expert']}": versus[f"{metric}_change"],
            "β-curve area / oracle area": metrics["frontier"]["area_ratio"],
        },
        "pareto": {
            "experts": expert_points(metrics, metric, aggregate),
            "dynmm": dynmm_points(metrics, metric, sweep),
            "beta_curve": [{k: p[k] for k in ("beta", "madds", "metric")} for p in metrics["beta_curve"]],
            "oracle": metrics["oracle_frontier"],
            **_present(test_rows=aggregate["test_rows"] if aggregate else sum(routing["counts"]) or None),
        },
        "routing": {k: routing[k] for k in ("experts", "counts", "per_class")},
        "robustness": [
            {"title": f"Gaussian noise on {n['modality']}", "xlabel": "noise std / feature std", **_curves(n)}
            for n in metrics["robustness"]["noise"]
        ],
    }
    if speed is not None:
        data["speed"] = speed_points(speed)
    return data


def _present(**values: Any) -> dict[str, Any]:
    """The keyword arguments that are not None: optional report keys are left out rather than set to null."""
    return {k: v for k, v in values.items() if v is not None}


def expert_points(metrics: dict[str, Any], metric: str, aggregate: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each expert alone: its mean and spread over the sweep's seeds when aggregated, else this run's numbers."""
    if aggregate is not None:
        return [
            {
                "name": e["name"],
                "madds": e["madds"],
                "metric": e["metric_mean"],
                **_present(metric_std=e.get("metric_std")),
            }
            for e in aggregate["experts"]
        ]
    return [{"name": n, "madds": e["madds_per_sample"], "metric": e[metric]} for n, e in metrics["experts"].items()]


def dynmm_points(metrics: dict[str, Any], metric: str, sweep: dict[str, Any] | None) -> list[dict[str, Any]]:
    """This run and the λ points of a sweep. Aggregated over seeds, the sweep's means (with their spread) stand
    for every λ, this run included (its own numbers are in the summary); single-seed, this run is labelled once,
    by its λ when it is one of the sweep's points."""
    mine = {"label": "this run", "madds": metrics["madds_per_sample"], "metric": metrics["test"][metric]}
    if sweep is None:
        return [mine]
    if "aggregate" in sweep:
        return [_aggregate_point(p) for p in sweep["aggregate"]["points"]]
    swept = [_sweep_point(p) for p in sweep["points"]]
    if any((p["madds"], p["metric"]) == (mine["madds"], mine["metric"]) for p in swept):
        return swept
    return [mine, *swept]


def _sweep_point(p: dict[str, Any]) -> dict[str, Any]:
    """One single-seed λ point, with whether its routing collapsed and its oracle gain share when recorded."""
    optional = _present(collapsed=p.get("collapsed"), oracle_gain_share=p.get("oracle_gain_share"))
    return {"label": f"λ={p['lambda']:g}", "madds": p["madds_per_sample"], "metric": p["metric"], **optional}


def _aggregate_point(p: dict[str, Any]) -> dict[str, Any]:
    """One λ point as mean ± std over the sweep's seeds."""
    optional = _present(
        metric_std=p.get("metric_std"),
        madds_std=p.get("madds_std"),
        collapsed=p.get("collapsed"),
        oracle_gain_share=p.get("oracle_gain_share_mean"),
        oracle_gain_share_std=p.get("oracle_gain_share_std"),
    )
    return {"label": p["label"], "madds": p["madds_mean"], "metric": p["metric_mean"], **optional}


def speed_points(speed: dict[str, Any]) -> list[dict[str, Any]]:
    """Dispatch vs dense speedups (predicted from MAdds, realized in time) of every timed setting."""
    points = []
    for entry in speed["models"].values():
        for row in entry["rows"]:
            if "vs_dense" not in row["predicted_speedup"]:
                continue
            share = row.get("target_cheap_fraction", row["cheap_fraction"])
            label = "trained gate" if row["routing"] == "trained" else f"{share:.0%} cheap"
            points.append(
                {
                    "label": label,
                    "batch_size": row["batch_size"],
                    "predicted_speedup": row["predicted_speedup"]["vs_dense"],
                    "realized_speedup": row["realized_speedup"]["vs_dense"],
                }
            )
    return points


def _curves(entry: dict[str, Any]) -> dict[str, Any]:
    return {"levels": entry["levels"], "curves": entry["curves"]}
