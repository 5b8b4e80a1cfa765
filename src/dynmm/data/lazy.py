"""Rows of an on-disk array read only when indexed, so a data set larger than memory can stand in a
`MultimodalDataset` like an in-memory tensor.

Why: MM-IMDB's 4096-d VGG features are ~430 MB and AV-MNIST's audio spectrograms 3 GB as float32; reading a
batch's rows on demand keeps memory flat and lets a run start at once. The file is opened on first use in each
process (DataLoader workers each get their own handle: h5py handles and memmaps must not cross a fork or be
pickled), and indexing supports what the library does with a modality's rows: an int, a slice, an index tensor
(any order, repeats allowed) or a boolean mask. `LazyRows` holds that logic once; `H5Rows` (an HDF5 dataset)
and `NpyRows` (a memory-mapped .npy file, in `npy_rows.py`) only open their file and read sorted rows.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from dynmm.errors import DataError

RowIndex = int | np.integer | slice | Tensor | np.ndarray | list[int]
"""What indexing a modality's rows accepts: one row, a slice, an index tensor/array/list, a boolean mask."""


def single_row(index: int | np.integer, length: int) -> int:
    """A (possibly negative) row number checked against `length`."""
    row = int(index) + (length if index < 0 else 0)
    if not 0 <= row < length:
        raise IndexError(f"row {index} out of range for {length} rows")
    return row


def row_indices(index: slice | Tensor | np.ndarray | list[int], length: int) -> np.ndarray:
    """The row numbers a slice, index tensor/array/list or boolean mask selects, checked against `length`."""
    if isinstance(index, slice):
        return np.arange(*index.indices(length))
    wanted = torch.as_tensor(index)
    if wanted.dtype == torch.bool:
        if wanted.shape != (length,):
            raise IndexError(f"a boolean mask over {length} rows has shape {tuple(wanted.shape)}")
        wanted = wanted.nonzero().reshape(-1)
    rows = wanted.long().reshape(-1).numpy()
    if rows.size and (rows.min() < 0 or rows.max() >= length):
        raise IndexError(f"row index out of range for {length} rows")
    return rows


def _affine(value: float | np.ndarray, name: str, row_shape: tuple[int, ...], path: Path) -> float | np.ndarray:
    """A scalar stays a float; an array must broadcast to one row (e.g. (C, 1, 1) per channel of an image)."""
    if np.ndim(value) == 0:
        return float(value)
    array = np.asarray(value, dtype=np.float32)
    try:
        fits = np.broadcast_shapes(array.shape, row_shape) == row_shape
    except ValueError:
        fits = False
    if not fits:
        raise DataError(f"{path}: {name} of shape {array.shape} does not broadcast to a row of shape {row_shape}")
    return array


class LazyRows:
    """Rows `start..stop` (or the listed `rows`) of an on-disk array, each reshaped to `row_shape`, as float32
    tensors `(value + shift) * scale`.

    `scale` and `shift` are floats or arrays that broadcast to one row (e.g. a per-channel z-score: shift = -mean,
    scale = 1/std, shaped (C, 1, 1) for an image). `rows`, when given, lists the (strictly increasing) absolute
    row numbers this object exposes instead of the range `start..stop`: a split whose rows interleave with
    other splits' rows in the file.
    Subclasses implement `_open()` (the array-like, opened once per process) and may override `_read` (values
    of sorted, unique absolute row indices).
    """

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(
        self,
        path: str | Path,
        start: int,
        stop: int,
        scale: float | np.ndarray = 1.0,
        row_shape: tuple[int, ...] | None = None,
        *,
        shift: float | np.ndarray = 0.0,
        rows: np.ndarray | list[int] | None = None,
    ) -> None:
        self.path = Path(path)
        self._handle: Any = None
        self._pid = -1
        total, *tail = self._array().shape
        stored = tuple(int(d) for d in tail)
        self.row_shape = stored if row_shape is None else tuple(int(d) for d in row_shape)
        if int(np.prod(self.row_shape)) != int(np.prod(stored)):
            raise DataError(f"{self.path}: a stored row has shape {stored}, which cannot be read as {self.row_shape}")
        self.rows: np.ndarray | None = None
        if rows is not None:
            listed = np.asarray(rows, dtype=np.int64).reshape(-1)
            if listed.size and (listed[0] < 0 or listed[-1] >= total or (np.diff(listed) <= 0).any()):
                raise DataError(f"{self.path} has {total} rows; rows must be strictly increasing numbers below it")
            self.rows = listed
            start, stop = 0, listed.size
        self.start, self.stop = int(start), int(stop)
        if rows is None and not 0 <= self.start <= self.stop <= total:
            raise DataError(f"{self.path} has {total} rows; rows {self.start}..{self.stop} were asked for")
        self.scale = _affine(scale, "scale", self.row_shape, self.path)
        self.shift = _affine(shift, "shift", self.row_shape, self.path)
        self.shape = torch.Size((self.stop - self.start, *self.row_shape))

    def _open(self) -> Any:
        raise NotImplementedError

    def _array(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self._open(), os.getpid()
        return self._handle

    def _read(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._array()[rows])

    def _after_read(self, nbytes: int) -> None:
        """Called with the bytes each read copied out of the file (NpyRows releases mapped pages here)."""

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getstate__(self) -> dict[str, Any]:  # a DataLoader worker opens the file itself
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def __getitem__(self, index: RowIndex) -> Tensor:
        if isinstance(index, int | np.integer):
            return self[np.array([single_row(index, len(self))])][0]
        rows = row_indices(index, len(self))
        unique, inverse = np.unique(rows, return_inverse=True)
        absolute = self.start + unique if self.rows is None else self.rows[unique]
        if unique.size == 0:
            values = np.empty((0, *self.row_shape), dtype=np.float32)
        elif absolute[-1] - absolute[0] + 1 == absolute.size:  # contiguous: one range read
            values = np.asarray(self._array()[absolute[0] : absolute[-1] + 1])
        else:
            values = self._read(absolute)
        # A copy: the file's array stays untouched.
        out = np.array(values, dtype=np.float32)[inverse].reshape(rows.size, *self.row_shape)
        self._after_read(int(np.asarray(values).nbytes))
        if not (isinstance(self.shift, float) and self.shift == 0.0):
            out += self.shift
        if not (isinstance(self.scale, float) and self.scale == 1.0):
            out *= self.scale if isinstance(self.scale, np.ndarray) else np.float32(self.scale)
        return torch.from_numpy(out)

    def head(self, count: int) -> LazyRows:
        """The first `count` rows of these, still read from the file when indexed (indexing with a list of rows
        would read them into a tensor)."""
        if not 0 <= count <= len(self):
            raise IndexError(f"{count} rows asked of {len(self)}")
        part = copy.copy(self)
        part._handle, part._pid = None, -1
        if part.rows is not None:
            part.rows, part.start, part.stop = part.rows[:count], 0, count
        else:
            part.stop = part.start + count
        part.shape = torch.Size((count, *self.row_shape))
        return part

    def index_select(self, dim: int, index: Tensor) -> Tensor:
        """`tensor.index_select(0, rows)` for code written against tensors (e.g. tiling benchmark rows)."""
        if dim != 0:
            raise IndexError(f"{type(self).__name__} selects rows only (dim 0), got dim {dim}")
        return self[index]


class H5Rows(LazyRows):
    """Rows `start..stop` of dataset `key` in the HDF5 file `path` (h5py reads sorted index lists).

    Args:
        path: the HDF5 file.
        key: the dataset inside it.
        start, stop: the row range this object exposes (e.g. one split).
        scale: multiplied into every value read (e.g. 1/255 for 8-bit pixels).
    """

    def __init__(self, path: str | Path, key: str, start: int, stop: int, scale: float = 1.0) -> None:
        self.key = key
        super().__init__(path, start, stop, scale)

    def _open(self) -> Any:
        handle = h5py.File(self.path, "r")
        if self.key not in handle:
            keys = sorted(handle.keys())
            handle.close()
            raise DataError(f"{self.path} has no dataset {self.key!r}; it has {keys}")
        return handle[self.key]


def materialize(x: Tensor | LazyRows) -> Tensor:
    """An in-memory tensor of all rows (for whole-split operations such as adding noise)."""
    return x if isinstance(x, Tensor) else x[:]
