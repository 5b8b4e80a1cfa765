"""Re-evaluate a finished run from its exported model, to check that the export reproduces its metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from dynmm.data.base import collate
from dynmm.data.registry import load_dataset
from dynmm.errors import ConfigError
from dynmm.eval.evaluate import evaluate
from dynmm.train.export import load_exported

SPLITS = ("train", "valid", "test")


def evaluate_exported(run_dir: str | Path, split: str = "test") -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of the exported model on `split`, and the ones metrics.json recorded for it (if any)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    exported = load_exported(run_dir)
    dataset = load_dataset(exported.data_config.name, **exported.data_config.options)[split]
    loader = DataLoader(dataset, batch_size=exported.data_config.batch_size, collate_fn=collate)
    results = evaluate(exported.model, loader, exported.task)
    recorded_path = Path(run_dir) / "metrics.json"
    recorded = json.loads(recorded_path.read_text()).get(split, {}) if recorded_path.is_file() else {}
    return results, recorded
