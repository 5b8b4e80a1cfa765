"""Re-evaluate a finished run from its exported model: reproduce its metrics, or probe it (`dynmm eval`).

Probes: Gaussian noise on a modality, a missing modality, and for methods with a test-time cost knob (DynMM) a
fixed β or a mean MAdds budget for which β is chosen on the validation split. The run's method evaluates it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynmm.errors import ConfigError
from dynmm.io import read_json
from dynmm.methods.registry import load_exported, method_for_model
from dynmm.report.exported import SPLITS, Probe
from dynmm.report.robustness import NoiseSpec


@dataclass
class Evaluation:
    """Metrics now, the ones metrics.json recorded for the clean split, and method facts (MAdds, routing, β)."""

    metrics: dict[str, float]
    recorded: dict[str, Any]
    dynmm: dict[str, Any] = field(default_factory=dict)


def evaluate_exported(
    run_dir: str | Path,
    split: str = "test",
    noise: Sequence[NoiseSpec] = (),
    drop: Sequence[str] = (),
    beta: float | None = None,
    target_madds: float | None = None,
) -> Evaluation:
    """Metrics of the exported model on `split` (optionally corrupted, or with a cost knob / budget)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    exported = load_exported(run_dir)
    recorded_path = Path(run_dir) / "metrics.json"
    clean = not (noise or drop or beta is not None or target_madds is not None)
    recorded = read_json(recorded_path, "the run's metrics").get(split, {}) if recorded_path.is_file() and clean else {}
    method = method_for_model(exported.model_type)
    probe = Probe(split, noise, drop, beta, target_madds)
    metrics, facts = method.evaluate_exported(Path(run_dir), exported, probe)
    return Evaluation(metrics, recorded, facts)
