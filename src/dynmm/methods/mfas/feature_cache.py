"""Backbone features for the fusion search: computed once and cached, or recomputed per batch for comparison.

Why a cache: the backbones are frozen, so every sampled architecture would otherwise run both backbones over the
whole training set in every epoch only to train a few small linear layers — the cost the reference
implementations pay. `FeatureCache` runs each backbone once per split and keeps every candidate layer's pooled,
standardised features (in memory, or as .npy memmaps in a folder named by a hash of the backbones' weights and
the data, so a restarted search reuses them and a retrained backbone never reads stale ones).
`LiveFeatures` serves the same features by running the backbones on every batch: the reference way, kept to
measure what the cache saves and to test that both agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from dynmm.data.base import MultimodalDataset
from dynmm.errors import ConfigError, InputError
from dynmm.io import atomic_write_json
from dynmm.methods.mfas.backbones import Backbone

SPLITS = ("train", "valid", "test")
CHUNK = 512
COMPLETE = "complete.json"


class FeatureSource(Protocol):
    """Where a fusion network's inputs come from: features by key for rows of a split, and the targets."""

    def size(self, split: str) -> int: ...

    def features(self, split: str, rows: Tensor, keys: Sequence[str]) -> dict[str, Tensor]: ...

    def target(self, split: str, rows: Tensor) -> Tensor: ...


def cache_key(backbones: Sequence[Backbone], weight_files: Sequence[Path], data: Mapping[str, Any]) -> str:
    """Hash of the backbones' weight files, their candidate layers and the data description."""
    digest = hashlib.sha256()
    for backbone, path in zip(backbones, weight_files, strict=True):
        digest.update(backbone.modality.encode())
        digest.update(",".join(backbone.names).encode())
        digest.update(Path(path).read_bytes())
    digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _batched_features(backbone: Backbone, x: Tensor) -> list[Tensor]:
    chunks = [[f.cpu() for f in backbone.features(x[i : i + CHUNK])] for i in range(0, x.shape[0], CHUNK)]
    return [torch.cat([c[j] for c in chunks]) for j in range(len(backbone.taps))]


class Standardizer:
    """Per-feature z-score with train statistics: candidate layers differ in scale by orders of magnitude
    (post-ReLU means vs logits), and a fusion layer concatenates several of them."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, train: Tensor) -> Standardizer:
        return cls(train.mean(dim=0), train.std(dim=0).clamp_min(1e-6))

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def tensors(self, key: str) -> dict[str, Tensor]:
        return {f"{key}/mean": self.mean.contiguous(), f"{key}/std": self.std.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], key: str) -> Standardizer:
        return cls(tensors[f"{key}/mean"], tensors[f"{key}/std"])


class FeatureCache:
    """Pooled, standardised features of every candidate layer of every backbone, for every split.

    Args:
        backbones: one per modality.
        splits: split name -> data set holding those modalities.
        folder: where memmaps live (None: keep everything in memory).
    """

    def __init__(
        self,
        backbones: Sequence[Backbone],
        splits: Mapping[str, MultimodalDataset],
        folder: Path | None = None,
    ) -> None:
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise ConfigError(f"the MFAS feature cache needs splits {list(SPLITS)}; missing {missing}")
        self.keys = [f"{b.modality}.{name}" for b in backbones for name in b.names]
        self.targets = {s: splits[s].target for s in SPLITS}
        self.standardizers: dict[str, Standardizer] = {}
        self.folder = folder
        self.reused = folder is not None and (folder / COMPLETE).is_file()
        self.arrays: dict[str, dict[str, np.ndarray | Tensor]] = {s: {} for s in SPLITS}
        if self.reused:
            assert folder is not None
            self._open(folder)
        else:
            self._compute(backbones, splits)

    def _compute(self, backbones: Sequence[Backbone], splits: Mapping[str, MultimodalDataset]) -> None:
        for backbone in backbones:
            m = backbone.modality
            if m not in splits["train"].inputs:
                raise ConfigError(f"the search data has no modality {m!r} for its backbone")
            per_split = {s: _batched_features(backbone, splits[s].inputs[m]) for s in SPLITS}
            for j, name in enumerate(backbone.names):
                key = f"{m}.{name}"
                standardize = Standardizer.fit(per_split["train"][j])
                self.standardizers[key] = standardize
                for split in SPLITS:
                    self.arrays[split][key] = standardize(per_split[split][j]).contiguous()
        if self.folder is not None:
            self._write(self.folder)

    def _write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            for key, value in self.arrays[split].items():
                array = np.lib.format.open_memmap(
                    folder / f"{split}.{key}.npy", mode="w+", dtype=np.float32, shape=tuple(value.shape)
                )
                array[:] = np.asarray(value)
                array.flush()
        stats = {k: {"mean": s.mean.tolist(), "std": s.std.tolist()} for k, s in self.standardizers.items()}
        atomic_write_json(folder / "stats.json", stats)
        atomic_write_json(folder / COMPLETE, {"keys": self.keys})  # last: a half-written cache is recomputed
        self._open(folder)

    def _open(self, folder: Path) -> None:
        stats = json.loads((folder / "stats.json").read_text())
        self.standardizers = {
            k: Standardizer(torch.tensor(v["mean"]), torch.tensor(v["std"])) for k, v in stats.items()
        }
        for split in SPLITS:
            for key in self.keys:
                self.arrays[split][key] = np.load(folder / f"{split}.{key}.npy", mmap_mode="r")

    def size(self, split: str) -> int:
        return int(self.targets[split].shape[0])

    def features(self, split: str, rows: Tensor, keys: Sequence[str]) -> dict[str, Tensor]:
        out = {}
        for key in keys:
            stored = self.arrays[split][key]
            if isinstance(stored, Tensor):
                out[key] = stored[rows]
            else:  # memmap: numpy fancy indexing copies just these rows
                out[key] = torch.from_numpy(np.ascontiguousarray(stored[rows.numpy()]))
        return out

    def target(self, split: str, rows: Tensor) -> Tensor:
        return self.targets[split][rows]

    def dims(self) -> dict[str, int]:
        return {key: int(self.arrays["train"][key].shape[1]) for key in self.keys}


class LiveFeatures:
    """The same features as a `FeatureCache`, recomputed by running the backbones on each batch (no cache).

    Args:
        backbones: one per modality.
        splits: split name -> data set (may be empty when only `compute` is used).
        standardizers: feature key -> the cache's train-split standardisation.
    """

    def __init__(
        self,
        backbones: Sequence[Backbone],
        splits: Mapping[str, MultimodalDataset],
        standardizers: Mapping[str, Standardizer],
    ) -> None:
        self.backbones = {b.modality: b for b in backbones}
        self.splits = splits
        self.standardizers = standardizers

    def size(self, split: str) -> int:
        return len(self.splits[split])

    def features(self, split: str, rows: Tensor, keys: Sequence[str]) -> dict[str, Tensor]:
        data = self.splits[split].inputs
        return self.compute({m: data[m][rows] for m in self.backbones if m in data}, keys)

    def compute(self, inputs: Mapping[str, Tensor], keys: Sequence[str], trainable: bool = False) -> dict[str, Tensor]:
        """Standardised features `keys` (e.g. "image.relu2") of a batch of raw inputs; `trainable` runs the
        backbones as they are (mode, gradients) instead of frozen."""
        out = {}
        for modality, backbone in self.backbones.items():
            wanted = [k for k in keys if k.split(".", 1)[0] == modality]
            if not wanted:
                continue
            if modality not in inputs:
                raise InputError(f"the fused model needs modality {modality!r}; got {sorted(inputs)}")
            values = backbone.tapped(inputs[modality]) if trainable else backbone.features(inputs[modality])
            by_key = {f"{modality}.{name}": v for name, v in zip(backbone.names, values, strict=True)}
            out.update({k: self.standardizers[k](by_key[k]) for k in wanted})
        return out

    def target(self, split: str, rows: Tensor) -> Tensor:
        return self.splits[split].target[rows]
