"""Re-evaluate a finished run from its exported model: reproduce its metrics, or probe it.

Probes: Gaussian noise on a modality, a missing modality (DynMM routes around experts that need it), a fixed
test-time cost knob β, or a mean MAdds budget for which β is chosen on the validation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from dynmm.data.base import MultimodalDataset, collate
from dynmm.data.registry import load_dataset
from dynmm.errors import ConfigError
from dynmm.eval.evaluate import evaluate
from dynmm.eval.robustness import NoiseSpec, corrupt
from dynmm.eval.routing_analysis import beta_curve, beta_for_budget, beta_grid, collect_outputs, dispatch_results
from dynmm.io import read_json
from dynmm.models.modality_level import ModalityLevelDynMM
from dynmm.train.export import load_exported

SPLITS = ("train", "valid", "test")


@dataclass
class Evaluation:
    """Metrics now, the ones metrics.json recorded for the clean split, and DynMM facts (MAdds, routing, β)."""

    metrics: dict[str, float]
    recorded: dict[str, Any]
    dynmm: dict[str, Any] = field(default_factory=dict)


def _loader(dataset: MultimodalDataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate)


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
    model, task, batch_size = exported.model, exported.task, exported.data_config.batch_size
    splits = load_dataset(exported.data_config.name, **exported.data_config.options)
    dataset = corrupt(splits[split], noise, drop) if noise or drop else splits[split]
    recorded_path = Path(run_dir) / "metrics.json"
    clean = not (noise or drop or beta is not None or target_madds is not None)
    recorded = read_json(recorded_path, "the run's metrics").get(split, {}) if recorded_path.is_file() and clean else {}
    if not isinstance(model, ModalityLevelDynMM):
        if beta is not None or target_madds is not None:
            raise ConfigError(f"--beta and --target-madds need a DynMM run; {run_dir} holds a static model")
        return Evaluation(evaluate(model, _loader(dataset, batch_size), task), recorded)
    facts: dict[str, Any] = {}
    if target_madds is not None:
        record = collect_outputs(model, _loader(splits["valid"], batch_size))
        point = beta_for_budget(beta_curve(model, record, task, beta_grid(model, record)), target_madds)
        if point is None:
            cheapest = model.gate_madds + min(model.expert_madds)
            raise ConfigError(f"--target-madds {target_madds:,.0f} is below the cheapest routing ({cheapest:,.0f})")
        beta = point["beta"]
        facts["valid_at_beta"] = point
    model.beta = beta or 0.0
    results = dispatch_results(model, _loader(dataset, batch_size), task, missing=drop)
    counts = results.choice.bincount(minlength=len(model.experts))
    facts.update(
        beta=model.beta,
        madds_per_sample=float(results.madds.mean()),
        routing=[int(c) for c in counts],
    )
    return Evaluation(results.metrics, recorded, facts)
