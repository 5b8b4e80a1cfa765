"""A λ sweep: one accuracy–MAdds point per resource weight, each an ordinary run folder, stage I trained once.

The folders: runs/<name>_sweep/lambda_<λ>/ for the points, and beside them the first stage every point shares
(a method's experts, supernet or warmup phase). A restarted sweep reuses finished points and resumes the others.
Which run a point is, and what the summary holds, is the method's (its `sweep_point` and `sweep_summary`); this
module only loops and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dynmm.config import RunConfig
from dynmm.engine.run_folder import RunResult
from dynmm.errors import ConfigError
from dynmm.io import atomic_write_json

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
