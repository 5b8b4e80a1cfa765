"""Lightning wrapper around the registry, so that a Trainer gets seeded, reproducible loaders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler

from dynmm.data.base import DatasetInfo, MultimodalDataset, collate, info_from_splits
from dynmm.data.registry import accepted_options, check_options, dataset_info, load_dataset, resolve_options
from dynmm.errors import ConfigError


class EpochShuffle(Sampler[int]):
    """A shuffle whose order is a function of (seed, epoch) only.

    Why: a run resumed from the checkpoint of epoch k must see exactly the batches the uninterrupted run saw in
    epoch k + 1. A DataLoader's own generator advances with every epoch and restarts from the seed on resume;
    this sampler is told the epoch by Lightning (`set_epoch`, as for DistributedSampler) instead.

    With `world_size` ranks, rank r takes every world_size-th index of the same permutation, starting at r, so
    that step k of the ranks together sees exactly the rows of step k of one process with world_size times the
    batch size. The permutation is padded with its own first indices to a multiple of world_size (as
    DistributedSampler does), so every rank runs the same number of steps, which DDP needs.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size - 1}], got {rank}")
        self.size, self.seed, self.epoch = size, seed, 0
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.world_size == 1:
            return iter(order)
        total = len(self) * self.world_size
        padded = (order * -(-total // max(self.size, 1)))[:total]
        return iter(padded[self.rank :: self.world_size])


class MultimodalDataModule(pl.LightningDataModule):
    """Loads a registered data set once; batches are `(inputs: dict[str, Tensor], target)`.

    `seed` drives the training-set shuffle and, for data sets built from a seed (avdigits), their
    construction unless `options` sets `seed` itself.

    Under a Trainer with several processes the training loader gives each rank its shard (EpochShuffle) of
    `batch_size` rows per step: `batch_size` is per process, as everywhere in Lightning. The validation and test
    loaders give every rank the whole split, so that every rank logs the same validation values and picks the
    same best checkpoint as one process would (validation is repeated on each rank; it costs no backward pass).
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
            # Options derived from the data once (arrays' z-score statistics) are filled in here, so that a run's
            # export records `self.options` as used and its evaluation reads the very same values.
            self.options = resolve_options(self.dataset_name, self.options)
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
        dataset = self.splits[split]
        trainer = self.trainer  # set while a Trainer uses this module (fit.py detaches it afterwards)
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffle(len(dataset), self.seed, rank, world_size) if shuffle else None,
            # Its own generator: creating an iterator draws a worker base seed, which must not advance the global
            # RNG that dropout and Gumbel noise use (Lightning creates iterators at slightly different moments
            # in a resumed run).
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
