"""The λ-sweep summary of fusion-level DynMM: mIoU, MAdds and routing per λ on one shared supernet."""

from __future__ import annotations

from typing import Any

from dynmm.engine.sweep import SweepRun


def fusion_level_summary(sweep: SweepRun) -> dict[str, Any]:
    """mIoU, MAdds (total and of the skippable encoder) and routing of each λ point, on one shared supernet."""
    config, root, lambdas, results = sweep.config, sweep.root, sweep.lambdas, sweep.results
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
