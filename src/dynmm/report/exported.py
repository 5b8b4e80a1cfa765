"""Evaluate an exported model again on one split of its data set, clean or probed (noise, a missing modality)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch.utils.data import DataLoader

from dynmm.data.base import MultimodalDataset, collate
from dynmm.data.registry import load_dataset
from dynmm.engine.export import ExportedModel
from dynmm.errors import ConfigError
from dynmm.report.evaluate import evaluate
from dynmm.report.robustness import NoiseSpec, corrupt

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Probe:
    """What `dynmm eval` asks of an exported model: a split, Gaussian noise on some modalities, others missing
    (zero-filled), and for a model with a test-time cost knob a fixed β or a mean MAdds budget to meet."""

    split: str = "test"
    noise: Sequence[NoiseSpec] = ()
    drop: Sequence[str] = ()
    beta: float | None = None
    target_madds: float | None = None


def split_loader(dataset: MultimodalDataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate)


def exported_splits(exported: ExportedModel) -> dict[str, MultimodalDataset]:
    """Every split of the data set the model was evaluated on (with the data options it recorded)."""
    return load_dataset(exported.data_config.name, **exported.data_config.options)


def probed(
    splits: dict[str, MultimodalDataset], split: str, noise: Sequence[NoiseSpec], drop: Sequence[str]
) -> MultimodalDataset:
    """`split`, with Gaussian noise on some modalities and others zero-filled (missing), when asked."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    return corrupt(splits[split], noise, drop) if noise or drop else splits[split]


def evaluate_plain(exported: ExportedModel, probe: Probe) -> dict[str, float]:
    """The exported model's metrics on the probe's split (noise and missing modalities applied), in its recorded
    batch size."""
    dataset = probed(exported_splits(exported), probe.split, probe.noise, probe.drop)
    return evaluate(exported.model, split_loader(dataset, exported.data_config.batch_size), exported.task)
