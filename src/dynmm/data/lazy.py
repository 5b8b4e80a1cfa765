"""Rows of an HDF5 dataset read only when indexed, so a data set larger than memory can stand in a
`MultimodalDataset` like an in-memory tensor.

Why: MM-IMDB's 4096-d VGG features are ~430 MB; reading a batch's rows on demand keeps memory flat and lets a
run start at once. The file is opened on first use in each process (DataLoader workers each get their own
handle; h5py handles must not cross a fork), and indexing supports what the library does with a modality's
rows: an int, a slice, or an index tensor (read in increasing order, as h5py requires, then put back in order).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from dynmm.errors import DataError


class H5Rows:
    """Rows `start..stop` of dataset `key` in the HDF5 file `path`, as float32 tensors, times `scale`.

    Args:
        path: the HDF5 file.
        key: the dataset inside it.
        start, stop: the row range this object exposes (e.g. one split).
        scale: multiplied into every value read (e.g. 1/255 for 8-bit pixels).
    """

    def __init__(self, path: str | Path, key: str, start: int, stop: int, scale: float = 1.0) -> None:
        self.path, self.key = Path(path), key
        self.start, self.stop, self.scale = int(start), int(stop), float(scale)
        self._file: h5py.File | None = None
        self._pid = -1
        with h5py.File(self.path, "r") as f:
            if key not in f:
                raise DataError(f"{self.path} has no dataset {key!r}; it has {sorted(f.keys())}")
            total, *tail = f[key].shape
        if not 0 <= self.start <= self.stop <= total:
            raise DataError(f"{self.path}:{key} has {total} rows; rows {self.start}..{self.stop} were asked for")
        self.shape = torch.Size((self.stop - self.start, *tail))

    def __len__(self) -> int:
        return int(self.shape[0])

    def _dataset(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[self.key]

    def __getstate__(self) -> dict[str, Any]:  # a DataLoader worker reopens the file itself
        return {**self.__dict__, "_file": None, "_pid": -1}

    def __getitem__(self, index: int | slice | Tensor | np.ndarray | list[int]) -> Tensor:
        data = self._dataset()
        if isinstance(index, int | np.integer):
            row = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} rows")
            values = data[self.start + row]
        elif isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            values = data[self.start + lo : self.start + hi][::step]
        else:
            rows = torch.as_tensor(index).long().reshape(-1).numpy()
            if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
                raise IndexError(f"row index out of range for {len(self)} rows")
            unique, inverse = np.unique(rows, return_inverse=True)
            values = data[self.start + unique] if unique.size else np.empty((0, *self.shape[1:]))
            values = values[inverse]
        return torch.from_numpy(np.asarray(values, dtype=np.float32) * np.float32(self.scale))


def materialize(x: Tensor | H5Rows) -> Tensor:
    """An in-memory tensor of all rows (for whole-split operations such as adding noise)."""
    return x if isinstance(x, Tensor) else x[:]
