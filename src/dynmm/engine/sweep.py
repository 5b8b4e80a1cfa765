"""A λ sweep: one accuracy–MAdds point per resource weight, each an ordinary run folder, stage I trained once.

The folders: runs/<name>_sweep/lambda_<λ>/ for the points, and beside them the first stage every point shares
(a method's experts, supernet or warmup phase). A restarted sweep reuses finished points and resumes the others.
Which run a point is, and what the summary holds, is the method's (its `sweep_point` and `sweep_summary`); this
module only loops and writes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dynmm.config import RunConfig
from dynmm.engine.run_folder import RunResult
from dynmm.errors import ConfigError
from dynmm.io import atomic_write_json

SUMMARY_FILE = "summary.json"
"""Each seed's own summary, in its sweep folder, when `dynmm sweep --seeds` combines several."""

PointConfig = Callable[[RunConfig, Path, float], RunConfig]


@dataclass
class SweepRun:
    """A finished sweep, what its summary is made from: the config, its folder, the λ values in increasing order,
    each point's run, and a mean MAdds budget to meet (if asked)."""

    config: RunConfig
    root: Path
    lambdas: list[float]
    results: list[RunResult]
    target_madds: float | None = None


Summarise = Callable[[SweepRun], dict[str, Any]]


def point_name(resource_weight: float) -> str:
    return f"lambda_{resource_weight:g}"


def sweep_root(config: RunConfig) -> Path:
    """The folder holding a sweep's points and its shared first stage."""
    return Path(config.output_dir) / f"{config.name}_sweep"


def sweep_values(lambdas: Sequence[float]) -> list[float]:
    """The distinct λ values in increasing order; refuses an empty or negative grid."""
    if not lambdas or any(value < 0 for value in lambdas):
        raise ConfigError(f"--lambdas needs one or more values >= 0, got {list(lambdas)}")
    return sorted(set(lambdas))


def run_sweep(
    config: RunConfig,
    lambdas: Sequence[float],
    output: Path,
    point_config: PointConfig,
    summarise: Summarise,
    run_or_reuse: Callable[[RunConfig], RunResult],
    target_madds: float | None = None,
) -> dict[str, Any]:
    """Train (or reuse) one run per λ and write the summary to `output`."""
    values = sweep_values(lambdas)
    root = sweep_root(config)
    results = [run_or_reuse(point_config(config, root, value)) for value in tqdm(values, desc="λ sweep", unit="point")]
    summary = summarise(SweepRun(config, root, values, results, target_madds))
    atomic_write_json(output, summary)
    return summary


def seed_config(config: RunConfig, seed: int) -> RunConfig:
    """`config` trained from `seed`, in folders of its own: runs/<name>_sweep/ for seed 0 (as sweeps always
    were), runs/<name>_seed<N>_sweep/ otherwise. The data stay the same (a data seed is a data option); the
    initialisations, shuffling and Gumbel noise change."""
    name = config.name if seed == 0 else f"{config.name}_seed{seed}"
    return config.model_copy(update={"seed": seed, "name": name})


AGGREGATED = ("metric", "madds_per_sample", "oracle_gain_share")
"""Per-point numbers a multi-seed summary reports as mean and standard deviation over seeds."""


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    known = [float(v) for v in values if v is not None]
    if not known:
        return None, None
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else 0.0


def aggregate_seeds(summaries: Sequence[dict[str, Any]], seeds: Sequence[int], label: str) -> dict[str, Any]:
    """Mean ± std over seeds of each λ point and of each expert (by name): what the report draws as error bars.

    A point counts as collapsed when it collapsed under any seed."""
    points = []
    for index, first in enumerate(summaries[0]["points"]):
        same = [s["points"][index] for s in summaries]
        point: dict[str, Any] = {"label": f"{label} λ={first['lambda']:g}", "lambda": first["lambda"]}
        for key in AGGREGATED:
            name = "madds" if key == "madds_per_sample" else key
            point[f"{name}_mean"], point[f"{name}_std"] = _mean_std([p.get(key) for p in same])
        point["collapsed"] = any(bool(p.get("collapsed")) for p in same)
        points.append(point)
    experts = []
    for index, first in enumerate(summaries[0].get("experts", [])):
        same = [s["experts"][index] for s in summaries]
        metric_mean, metric_std = _mean_std([e["metric"] for e in same])
        experts.append(
            {"name": first["name"], "metric_mean": metric_mean, "metric_std": metric_std, "madds": first["madds"]}
        )
    aggregate: dict[str, Any] = {"seeds": list(seeds), "points": points, "experts": experts}
    if "test_rows" in summaries[0]:
        aggregate["test_rows"] = summaries[0]["test_rows"]
    return aggregate


def run_seeds(
    config: RunConfig, seeds: Sequence[int], output: Path, sweep: Callable[[RunConfig], dict[str, Any]], label: str
) -> dict[str, Any]:
    """One sweep per seed (each its own folders, each reusable), then one summary: the first seed's summary as
    the top level (so single-seed readers keep working), every seed's in `per_seed`, and `aggregate`."""
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds needs distinct seeds >= 0, got {list(seeds)}")
    summaries = [sweep(seed_config(config, seed)) for seed in seeds]
    combined = {
        **summaries[0],
        "seeds": list(seeds),
        "per_seed": summaries,
        "aggregate": aggregate_seeds(summaries, seeds, label),
    }
    atomic_write_json(output, combined)
    return combined
