"""Rows of a memory-mapped `.npy` file read only when indexed (the `.npy` counterpart of `lazy.H5Rows`).

Why: AV-MNIST's audio training file is 60000 x 112 x 112 spectrograms, 3 GB as float32. Converting it to a
tensor up front doubles that (the file's pages plus the tensor) and makes every run wait for it; a memmap reads
only the rows a batch asks for, and the operating system's page cache keeps them for the next epoch. Pickles
are never loaded (`allow_pickle=False`); object arrays are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dynmm.data.lazy import LazyRows
from dynmm.errors import DataError


class NpyRows(LazyRows):
    """Rows `start..stop` of the `.npy` array in `path`, each reshaped to `row_shape`, as float32 tensors times
    `scale`.

    Args:
        path: the `.npy` file (numeric dtype).
        start, stop: the row range this object exposes (e.g. one split).
        scale: multiplied into every value read (e.g. 1/255 for 8-bit pixels).
        row_shape: the shape of one row as returned (same number of values as a stored row); default: as stored.
    """

    def __init__(
        self,
        path: str | Path,
        start: int,
        stop: int,
        scale: float = 1.0,
        row_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(path, start, stop, scale, row_shape)

    def _open(self) -> Any:
        try:
            data = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{self.path} cannot be memory-mapped as a .npy array: {err}") from None
        if not isinstance(data, np.ndarray) or data.ndim < 1:
            raise DataError(f"{self.path} is not a .npy array with one row per sample")
        if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
            raise DataError(f"{self.path} holds {data.dtype} values; expected integers or floats")
        return data
