"""λ sweep of the DynMM recipe: one accuracy–MAdds point per resource weight, experts trained once.

Layout: runs/<name>_sweep/experts/<expert>/ (stage I, shared by every point) and runs/<name>_sweep/lambda_<λ>/
(stages II-III and evaluation of one point). A restarted sweep reuses finished points and resumes the others.
The summary (benchmarks/results/<data>_pareto.json by default) holds the points, each point's β curve, the
oracle frontier, the experts alone and, with a MAdds budget, the best way found to meet it.
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
from dynmm.train.run import run_or_reuse


def point_name(resource_weight: float) -> str:
    return f"lambda_{resource_weight:g}"


def point_config(config: RunConfig, root: Path, resource_weight: float) -> RunConfig:
    assert config.dynmm is not None
    dynmm = dataclasses.replace(config.dynmm, resource_weight=resource_weight, experts_dir=str(root / "experts"))
    return dataclasses.replace(config, name=point_name(resource_weight), output_dir=str(root), dynmm=dynmm)


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
    if config.dynmm is None:
        raise ConfigError("dynmm sweep needs a config with a `dynmm` section (e.g. configs/mosi/dynmm.yaml)")
    if not lambdas or any(value < 0 for value in lambdas):
        raise ConfigError(f"--lambdas needs one or more values >= 0, got {list(lambdas)}")
    root = Path(config.output_dir) / f"{config.name}_sweep"
    points = []
    for value in tqdm(sorted(set(lambdas)), desc="λ sweep", unit="point"):
        result = run_or_reuse(point_config(config, root, value))
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
    last = result.metrics
    summary: dict[str, Any] = {
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
    atomic_write_json(output, summary)
    return summary
