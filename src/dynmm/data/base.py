"""The one in-memory data set type every loader returns, and what it promises (DatasetInfo)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dynmm.data.lazy import LazyRows
from dynmm.errors import DataError
from dynmm.specs import Batch, Inputs, ModalitySpec, TaskSpec


class MultimodalDataset(Dataset[Batch]):
    """All rows of one split held as tensors; indexing yields `(inputs, target)` for one sample.

    `flags` (bool, per sample) and `meta` (integer, per sample) carry facts about each sample that are not
    model inputs, e.g. which samples were corrupted, so that per-sample decisions can be analysed later.
    A modality may also be `LazyRows` (rows read from disk when indexed: `dynmm.data.lazy`), which supports the
    same indexing; whole-split operations go through `lazy.materialize`.
    """

    def __init__(
        self,
        inputs: Mapping[str, Tensor | LazyRows],
        target: Tensor,
        flags: Mapping[str, Tensor] | None = None,
        meta: Mapping[str, Tensor] | None = None,
    ) -> None:
        if not inputs:
            raise DataError("a multimodal data set needs at least one modality")
        n = int(target.shape[0])
        # LazyRows duck-types the tensor interface used on a split's rows (shape, len, indexing).
        self.inputs: dict[str, Tensor] = {k: v.float() if isinstance(v, Tensor) else v for k, v in inputs.items()}  # type: ignore[misc]
        self.target = target
        self.flags: dict[str, Tensor] = {k: v.bool() for k, v in (flags or {}).items()}
        self.meta: dict[str, Tensor] = dict(meta or {})
        for group, tensors in (("modality", self.inputs), ("flag", self.flags), ("meta", self.meta)):
            for key, value in tensors.items():
                if value.shape[0] != n:
                    raise DataError(f"{group} {key!r} has {value.shape[0]} rows but the target has {n}")

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def __getitem__(self, index: int) -> Batch:
        return {k: v[index] for k, v in self.inputs.items()}, self.target[index]

    def __getitems__(self, indices: Sequence[int]) -> SampleBatch:
        """A DataLoader batch's samples, read with one indexing per modality (the DataLoader calls this instead of
        `__getitem__` per row). Why: a memory-mapped modality (`LazyRows`) pays a fixed cost per read, and even
        in-memory tensors pay one per row: 100 µs a row read one by one against a few µs a row in batches."""
        rows = torch.as_tensor(indices, dtype=torch.long)
        inputs = {k: v.index_select(0, rows) if isinstance(v, Tensor) else v[rows] for k, v in self.inputs.items()}
        target = self.target.index_select(0, rows) if isinstance(self.target, Tensor) else self.target[rows]
        return SampleBatch(inputs, target)

    def subset(self, indices: Sequence[int] | Tensor) -> MultimodalDataset:
        """A new data set of the given rows (flags and meta follow), e.g. for cross-fitting."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return MultimodalDataset(
            {k: v[idx] for k, v in self.inputs.items()},
            self.target[idx],
            {k: v[idx] for k, v in self.flags.items()},
            {k: v[idx] for k, v in self.meta.items()},
        )


class SampleBatch(Sequence[Batch]):
    """The samples of one DataLoader batch, read together (`MultimodalDataset.__getitems__`). `collate` returns
    `batch` as it is; any other collate function sees an ordinary sequence of `(inputs, target)` samples."""

    def __init__(self, inputs: Inputs, target: Tensor) -> None:
        self.batch: Batch = (inputs, target)

    def __len__(self) -> int:
        return int(self.batch[1].shape[0])

    def __getitem__(self, index: int) -> Batch:  # type: ignore[override]
        inputs, target = self.batch
        return {k: v[index] for k, v in inputs.items()}, target[index]


def collate(samples: Sequence[Batch]) -> Batch:
    """Stack samples into `(inputs, target)`; default_collate would turn the pair into a list."""
    if isinstance(samples, SampleBatch):
        return samples.batch
    inputs: Inputs = {k: torch.stack([s[0][k] for s in samples]) for k in samples[0][0]}
    return inputs, torch.stack([s[1] for s in samples])


@dataclass(frozen=True)
class DatasetInfo:
    """What a loaded data set offers: its modalities, task and the number of rows per split."""

    name: str
    modalities: dict[str, ModalitySpec]
    task: TaskSpec
    sizes: dict[str, int] = field(default_factory=dict)


def info_from_splits(
    name: str, splits: Mapping[str, MultimodalDataset], kinds: Mapping[str, str], task: TaskSpec
) -> DatasetInfo:
    """Describe loaded splits from their tensors (shapes taken from the first split)."""
    first = next(iter(splits.values()))
    modalities = {
        key: ModalitySpec(key, tuple(value.shape[1:]), kinds[key])  # type: ignore[arg-type]
        for key, value in first.inputs.items()
    }
    return DatasetInfo(name, modalities, task, {split: len(ds) for split, ds in splits.items()})
