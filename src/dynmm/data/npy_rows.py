"""Rows of a memory-mapped `.npy` file (or of an uncompressed `.npz` member) read only when indexed (the `.npy`
counterpart of `lazy.H5Rows`).

Why: AV-MNIST's audio training file is 60000 x 112 x 112 spectrograms, 3 GB as float32. Converting it to a
tensor up front doubles that (the file's pages plus the tensor) and makes every run wait for it; a memmap reads
only the rows a batch asks for, and the operating system's page cache keeps them for the next epoch. Pickles
are never loaded (`allow_pickle=False`); object arrays are refused.

An `.npz` archive written by `np.savez` stores each array as an uncompressed `.npy` member, which can be
memory-mapped at its offset inside the zip file (`npz_member_memmap`); members of `np.savez_compressed` cannot.
"""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dynmm.data.lazy import LazyRows
from dynmm.errors import DataError

_LOCAL_HEADER = 30
"""Bytes of a zip local file header before the member's name and extra field."""
_LOCAL_MAGIC = b"PK\x03\x04"


def _numeric(data: np.ndarray, where: str) -> np.ndarray:
    if not isinstance(data, np.ndarray) or data.ndim < 1:
        raise DataError(f"{where} is not an array with one row per sample")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating) or data.dtype == bool):
        raise DataError(f"{where} holds {data.dtype} values; expected integers or floats")
    return data


def npz_member_memmap(path: str | Path, member: str) -> np.ndarray | None:
    """Array `member` (without `.npy`) of the `.npz` file `path` as a read-only memmap, or None where it cannot be
    mapped (a compressed member, an empty array, a Fortran-ordered or version-3 header): read it with np.load.

    Only headers are read. A missing member or a damaged archive is a DataError."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{member}.npy")
    except KeyError:
        raise DataError(f"{path} has no array {member!r}") from None
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} cannot be read as an .npz archive: {err}") from None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    try:
        with path.open("rb") as handle:
            handle.seek(info.header_offset)
            local = handle.read(_LOCAL_HEADER)
            if len(local) != _LOCAL_HEADER or not local.startswith(_LOCAL_MAGIC):
                raise DataError(f"{path}: the zip header of member {member!r} is damaged")
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            handle.seek(info.header_offset + _LOCAL_HEADER + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                return None
            offset = handle.tell()
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: member {member!r} has an unreadable .npy header: {err}") from None
    if dtype.hasobject:
        raise DataError(f"{path}: array {member!r} holds Python objects (pickled data), which are not loaded")
    if fortran or int(np.prod(shape)) == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))


RELEASE_BYTES = 64 * 2**20
"""NpyRows hands the pages it mapped back to the page cache after about this many bytes (`release_mapped_pages`)."""
FAULT_AROUND_BYTES = 64 * 2**10
"""What one read may map beyond the bytes it copies (Linux's default fault_around_bytes)."""


def release_mapped_pages(array: Any) -> None:
    """Drop the pages of a memory-mapped array from this process's resident set; they stay in the page cache.

    Why: pages of a file mapping that a process has touched count in its resident memory until the kernel needs
    them back, so one epoch over a 4 GB `.npy` folder would show as 4 GB resident (and be counted against memory
    limits such as a cgroup's). MADV_DONTNEED on a read-only file mapping only unmaps them: the next read of
    those rows is a page-cache hit, not a disk read. A no-op for arrays that are not memory-mapped.
    """
    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


class NpyRows(LazyRows):
    """Rows `start..stop` (or the listed `rows`) of the `.npy` array in `path`, each reshaped to `row_shape`, as
    float32 tensors `(value + shift) * scale` (see `LazyRows`).

    Args:
        path: the `.npy` file (numeric dtype), or an `.npz` file with `member` naming an uncompressed array in it.
        start, stop: the row range this object exposes (e.g. one split); `stop=None`: to the last row.
        scale: multiplied into every value read (e.g. 1/255 for 8-bit pixels, or 1/std per channel).
        row_shape: the shape of one row as returned (same number of values as a stored row); default: as stored.
        shift: added to every value before `scale` (e.g. -mean per channel).
        rows: strictly increasing row numbers to expose instead of `start..stop` (a split interleaved in the file).
        member: the array's name inside an `.npz` file (it must be stored uncompressed, as `np.savez` does).
    """

    def __init__(
        self,
        path: str | Path,
        start: int = 0,
        stop: int | None = None,
        scale: float | np.ndarray = 1.0,
        row_shape: tuple[int, ...] | None = None,
        *,
        shift: float | np.ndarray = 0.0,
        rows: np.ndarray | list[int] | None = None,
        member: str | None = None,
    ) -> None:
        self.member = member
        if stop is None:
            self.path = Path(path)
            self._handle, self._pid = None, -1
            stop = int(self._array().shape[0])
        super().__init__(path, start, stop, scale, row_shape, shift=shift, rows=rows)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Scattered rows, each read with one `preadv` straight into the result. Why not the memory map: a
        mapped read of a row faults in its pages and the pages around them, which costs more than the copy and
        grows the process's resident memory; a read into our own buffer costs one system call."""
        data = self._array()
        if not data.flags.c_contiguous or not isinstance(data, np.memmap):
            return super()._read(rows)
        out = np.empty((rows.size, *data.shape[1:]), dtype=data.dtype)
        flat = out.reshape(rows.size, -1).view(np.uint8)
        row_bytes = flat.shape[1]
        fd = self._descriptor()
        for i, row in enumerate(rows.tolist()):
            if os.preadv(fd, [flat[i]], data.offset + row * row_bytes) != row_bytes:
                raise DataError(f"{self.path}: row {row} is cut short (was the file truncated?)")
        return out

    def _descriptor(self) -> int:
        """This process's own read-only descriptor of the file (a DataLoader worker opens its own)."""
        if getattr(self, "_fd_pid", None) != os.getpid():
            self._fd, self._fd_pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in super().__getstate__().items() if k not in ("_fd", "_fd_pid")}

    def _after_read(self, nbytes: int) -> None:
        # A read maps more than it copies: the kernel maps the pages around a fault too (fault-around, 64 KiB).
        self._unreleased = getattr(self, "_unreleased", 0) + nbytes + FAULT_AROUND_BYTES
        if self._unreleased >= RELEASE_BYTES:
            release_mapped_pages(self._array())
            self._unreleased = 0

    def _open(self) -> Any:
        if self.member is not None:
            where = f"{self.path}:{self.member}"
            mapped = npz_member_memmap(self.path, self.member)
            if mapped is None:
                raise DataError(f"{where} is compressed (np.savez_compressed) and cannot be memory-mapped")
            return _numeric(mapped, where)
        try:
            data = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{self.path} cannot be memory-mapped as a .npy array: {err}") from None
        return _numeric(data, str(self.path))
