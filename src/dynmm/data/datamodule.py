"""Lightning wrapper around the registry, so that a Trainer gets seeded, reproducible loaders."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from dynmm.data.base import DatasetInfo, MultimodalDataset, collate, info_from_splits
from dynmm.data.registry import accepted_options, check_options, dataset_info, load_dataset
from dynmm.errors import ConfigError


class MultimodalDataModule(pl.LightningDataModule):
    """Loads a registered data set once; batches are `(inputs: dict[str, Tensor], target)`.

    `seed` drives the training-set shuffle and, for data sets built from a seed (avdigits), their
    construction unless `options` sets `seed` itself.
    """

    def __init__(
        self,
        name: str,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset_name = name
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.options = dict(options or {})
        check_options(name, self.options)
        if "seed" in accepted_options(name):
            self.options.setdefault("seed", seed)
        self.splits: dict[str, MultimodalDataset] = {}
        self._info: DatasetInfo | None = None

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = load_dataset(self.dataset_name, **self.options)
            task = dataset_info(self.dataset_name, **self.options)
            kinds = {k: spec.kind for k, spec in task.modalities.items()}
            self._info = info_from_splits(self.dataset_name, self.splits, kinds, task.task)

    @property
    def info(self) -> DatasetInfo:
        """Modalities, task and split sizes of the loaded data (available after setup())."""
        if self._info is None:
            raise RuntimeError("call setup() before reading .info")
        return self._info

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.splits:
            raise RuntimeError(f"call setup() before asking for the {split} loader")
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            generator=generator,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
