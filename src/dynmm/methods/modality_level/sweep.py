"""The λ-sweep summary of modality-level DynMM: points, experts alone, oracle frontier, budget choice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynmm.engine.sweep import SweepRun
from dynmm.io import read_json
from dynmm.methods.modality_level.routing_analysis import (
    beta_for_budget,
    collapsed,
    oracle_gain_share,
    recorded_accuracy_name,
)


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


def test_rows(run_dir: Path) -> int:
    """How many test samples every number of the sweep is measured on (routing.json counts each once)."""
    return int(sum(read_json(run_dir / "routing.json", "the run's routing statistics")["counts"]))


def modality_level_summary(sweep: SweepRun) -> dict[str, Any]:
    """Accuracy and MAdds of each λ point, the experts alone, the oracle frontier and the budget choice."""
    config, lambdas, results = sweep.config, sweep.lambdas, sweep.results
    points = []
    for value, result in zip(lambdas, results, strict=True):
        m = result.metrics
        metric = recorded_accuracy_name(m)
        statics = [(e["madds_per_sample"], e[metric]) for e in m["experts"].values()]
        fractions = list(m["routing"]["fractions"].values())
        points.append(
            {
                "lambda": value,
                "run": str(result.run_dir),
                "metric": m["test"][metric],
                "madds_per_sample": m["madds_per_sample"],
                "test": m["test"],
                "routing": m["routing"]["fractions"],
                "collapsed": collapsed(fractions),
                "oracle_gain_share": oracle_gain_share(
                    m["madds_per_sample"], m["test"][metric], statics, m["oracle_frontier"]
                ),
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
        "test_rows": test_rows(results[-1].run_dir),
        "points": points,
        "oracle_frontier": last["oracle_frontier"],
    }
    if sweep.target_madds is not None:
        summary["target"] = budget_choice(points, sweep.target_madds)
    return summary
