"""The λ-sweep summary of AdaMML: accuracy, MAdds per clip and keep rates per λ, with shared baselines."""

from __future__ import annotations

from typing import Any

from dynmm.engine.sweep import SweepRun


def adamml_summary(sweep: SweepRun) -> dict[str, Any]:
    """Accuracy, MAdds per clip and keep rates of each λ point (λ_k = λ × modality k's share of the costliest
    net), with the baselines (shared by every point) and each point's random policy at its own keep rates."""
    config, lambdas, results = sweep.config, sweep.lambdas, sweep.results
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
