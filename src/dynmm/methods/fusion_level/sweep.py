"""The λ-sweep summary of fusion-level DynMM: mIoU, MAdds and routing per λ on one shared supernet.

Each point carries its routing histograms: how many auxiliary (depth) stages each test sample ran, the op
histogram per cell, the most common full paths, `top_path_share` (share of test samples on the most common full
path: one op per cell), `top_aux_stages_share` (share on the most common number of depth stages run) and
`collapsed` (one path takes more than 95 % of the samples: at that λ the gate is one static model).
"""

from __future__ import annotations

from typing import Any

from dynmm.engine.sweep import SweepRun

ROUTING_KEYS = ("aux_stages_run", "ops_per_cell", "paths", "top_path", "top_path_share", "collapsed")
"""What the summary keeps of each point's test routing (evaluate.py defines them)."""
FLAG_KEYS = ("scenes", "miou", "aux_madds_per_sample", "aux_stages_run")
"""What the summary keeps of each data-flag group (e.g. dark vs lit scenes)."""


def point_routing(test: dict[str, Any]) -> dict[str, Any]:
    """A point's routing histograms and shares from its test metrics; a run evaluated before paths were counted
    has None for the path keys (its depth-stage share is recomputed from the histogram)."""
    stages = test["aux_stages_run"]
    routing = {key: test.get(key) for key in ROUTING_KEYS}
    routing["top_aux_stages_share"] = max(stages) / sum(stages)
    return routing


def point_flags(by_flag: dict[str, Any]) -> dict[str, Any]:
    """Per data flag and group (flagged / not_flagged): scenes, mIoU, depth MAdds and depth-stage histogram."""
    return {
        flag: {group: {k: values[k] for k in FLAG_KEYS if k in values} for group, values in groups.items()}
        for flag, groups in by_flag.items()
    }


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
                "routing": point_routing(test),
                "by_flag": point_flags(result.metrics.get("by_flag", {})),
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
