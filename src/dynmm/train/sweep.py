"""λ sweep of a DynMM recipe: one accuracy–MAdds point per resource weight, stage I trained once.

Modality-level: runs/<name>_sweep/experts/<expert>/ (stage I, shared by every point) and
runs/<name>_sweep/lambda_<λ>/ (stages II-III and evaluation of one point). Fusion-level: the supernet
(runs/<name>_sweep/supernet/) is shared the same way and each point trains its own gate; AdaMML shares its
warmup phase and its trained baselines (runs/<name>_sweep/{warmup,baselines}/). A restarted sweep reuses
finished points and resumes the others. The summary (benchmarks/results/<data>_pareto.json by default) holds the
points and each point's β curve; modality-level also the oracle frontier, the experts alone and, with a MAdds
budget, the best way found to meet it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dynmm.config import RunConfig
from dynmm.errors import ConfigError
from dynmm.eval.routing_analysis import beta_for_budget, recorded_accuracy_name
from dynmm.io import atomic_write_json
from dynmm.train.run import RunResult, run_or_reuse


def point_name(resource_weight: float) -> str:
    return f"lambda_{resource_weight:g}"


def point_config(config: RunConfig, root: Path, resource_weight: float) -> RunConfig:
    """The run of one λ, pointed at the sweep's shared stage I (experts or supernet)."""
    point = dataclasses.replace(config, name=point_name(resource_weight), output_dir=str(root))
    if config.adamml is not None:
        adamml = dataclasses.replace(config.adamml, resource_weight=resource_weight, warmup_dir=str(root / "warmup"))
        return dataclasses.replace(point, adamml=adamml)
    if config.fusion_level is not None:
        shared = str(root / "supernet")
        fusion = dataclasses.replace(config.fusion_level, resource_weight=resource_weight, supernet_dir=shared)
        return dataclasses.replace(point, fusion_level=fusion)
    assert config.dynmm is not None
    dynmm = dataclasses.replace(config.dynmm, resource_weight=resource_weight, experts_dir=str(root / "experts"))
    return dataclasses.replace(point, dynmm=dynmm)


def budget_choice(points: Sequence[dict[str, Any]], budget: float) -> dict[str, Any]:
    """Meet a mean MAdds budget two ways: the best λ point within it, and per point the β within it.

    β is read off each point's test β curve here (a summary); `dynmm eval RUN --target-madds` picks β on the
    validation split and reports test numbers, which is the honest protocol for a single model.
    """
    within = [p for p in points if p["madds_per_sample"] <= budget]
    best_lambda = max(within, key=lambda p: p["metric"]) if within else None
    by_beta = {}
    for p in points:
        chosen = beta_for_budget(p["beta_curve"], budget)
        if chosen is not None:
            by_beta[p["run"]] = chosen
    return {
        "budget": budget,
        "best_lambda_point": None if best_lambda is None else {k: best_lambda[k] for k in ("lambda", "run")},
        "beta_per_point": by_beta,
    }


def run_sweep(
    config: RunConfig, lambdas: Sequence[float], output: Path, target_madds: float | None = None
) -> dict[str, Any]:
    """Train (or reuse) one DynMM run per λ and write the accuracy–MAdds summary."""
    if config.dynmm is None and config.fusion_level is None and config.adamml is None:
        raise ConfigError(
            "dynmm sweep needs a config with a `dynmm`, `fusion_level` or `adamml` section (e.g. "
            "configs/mosi/dynmm.yaml)"
        )
    if config.adamml is not None and config.adamml.lambdas is not None:
        raise ConfigError("dynmm sweep scales λ through adamml.resource_weight; remove adamml.lambdas")
    if config.fusion_level is not None and config.fusion_level.static_op is not None:
        raise ConfigError("dynmm sweep: a static baseline (fusion_level.static_op) has no λ to sweep")
    if not lambdas or any(value < 0 for value in lambdas):
        raise ConfigError(f"--lambdas needs one or more values >= 0, got {list(lambdas)}")
    root = Path(config.output_dir) / f"{config.name}_sweep"
    results = [
        run_or_reuse(point_config(config, root, value))
        for value in tqdm(sorted(set(lambdas)), desc="λ sweep", unit="point")
    ]
    if config.adamml is not None:
        summary = adamml_summary(config, sorted(set(lambdas)), results)
    elif config.fusion_level is not None:
        summary = fusion_level_summary(config, root, sorted(set(lambdas)), results)
    else:
        summary = modality_level_summary(config, sorted(set(lambdas)), results, target_madds)
    atomic_write_json(output, summary)
    return summary


def fusion_level_summary(
    config: RunConfig, root: Path, lambdas: Sequence[float], results: Sequence[RunResult]
) -> dict[str, Any]:
    """mIoU, MAdds (total and of the skippable encoder) and routing of each λ point, on one shared supernet."""
    points = []
    for value, result in zip(lambdas, results, strict=True):
        test = result.metrics["test"]
        points.append(
            {
                "lambda": value,
                "run": str(result.run_dir),
                "metric": test["miou"],
                "madds_per_sample": test["madds_per_sample"],
                "aux_madds_per_sample": test["aux_madds_per_sample"],
                "test": test,
                "beta_curve": result.metrics["beta_curve"],
            }
        )
    return {
        "method": "fusion_level",
        "config": config.name,
        "dataset": config.data.name,
        "metric": "miou",
        "supernet": str(root / "supernet"),
        "aux_madds_full": results[-1].metrics["test"]["aux_madds_full"],
        "points": points,
    }


def adamml_summary(config: RunConfig, lambdas: Sequence[float], results: Sequence[RunResult]) -> dict[str, Any]:
    """Accuracy, MAdds per clip and keep rates of each λ point (λ_k = λ × modality k's share of the costliest
    net), with the baselines (shared by every point) and each point's random policy at its own keep rates."""
    points = []
    for value, result in zip(lambdas, results, strict=True):
        m = result.metrics
        test = m["test"]
        points.append(
            {
                "lambda": value,
                "run": str(result.run_dir),
                "metric": test["accuracy"],
                "madds_per_sample": test["madds_per_clip"],
                "madds_fraction": test["madds_fraction"],
                "keep_rate": test["keep_rate"],
                "keep_rate_uninformative": test["keep_rate_uninformative"],
                "keep_rate_informative": test["keep_rate_informative"],
                "random_policy": m["baselines"]["random_policy"],
                "test": test,
            }
        )
    last = results[-1].metrics
    return {
        "method": "adamml",
        "config": config.name,
        "dataset": config.data.name,
        "metric": "accuracy",
        "full_madds_per_clip": last["full_madds_per_clip"],
        "costs": last["costs"],
        "baselines": {k: v for k, v in last["baselines"].items() if k != "random_policy"},
        "points": points,
    }


def modality_level_summary(
    config: RunConfig, lambdas: Sequence[float], results: Sequence[RunResult], target_madds: float | None
) -> dict[str, Any]:
    """Accuracy and MAdds of each λ point, the experts alone, the oracle frontier and the budget choice."""
    points = []
    for value, result in zip(lambdas, results, strict=True):
        m = result.metrics
        metric = recorded_accuracy_name(m)
        points.append(
            {
                "lambda": value,
                "run": str(result.run_dir),
                "metric": m["test"][metric],
                "madds_per_sample": m["madds_per_sample"],
                "test": m["test"],
                "routing": m["routing"]["fractions"],
                "frontier": m["frontier"],
                "versus_costliest": m["versus_costliest"],
                "beta_curve": m["beta_curve"],
            }
        )
    last = results[-1].metrics
    summary: dict[str, Any] = {
        "method": "modality_level",
        "config": config.name,
        "dataset": config.data.name,
        "metric": metric,
        "experts": [
            {"name": name, "madds": e["madds_per_sample"], "metric": e[metric]} for name, e in last["experts"].items()
        ],
        "gate_madds": last["gate_madds"],
        "points": points,
        "oracle_frontier": last["oracle_frontier"],
    }
    if target_madds is not None:
        summary["target"] = budget_choice(points, target_madds)
    return summary
