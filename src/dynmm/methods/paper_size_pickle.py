"""Write a pickle of numpy arrays whose big arrays are streamed to disk in chunks, never held whole in memory.

Why: `dynmm bench paper-size` needs MultiBench affect pickles at CMU-MOSEI's real size (~1.9 GB of float32);
`pickle.dump` needs every array in memory first. The file written here is an ordinary pickle: each big array is
stored as numpy's own protocol-5 reducer `_frombuffer(bytes, dtype, shape, "C")` (the call numpy itself pickles
arrays with, and one `dynmm.data.safe_pickle` allows), and its bytes are written chunk by chunk where the
pickler wrote a short marker. Protocol 3 is used because it has no frames, whose lengths the splice would break.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from dynmm.errors import DataError

PROTOCOL = 3
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
"""The installed numpy's `_frombuffer` (what numpy pickles arrays with under protocol 5)."""
_MARKER_BYTES = 16
_BINBYTES, _BINBYTES8, _SHORT_BINBYTES = b"B", b"\x8e", b"C"

Chunks = Callable[[], Iterator[np.ndarray]]
"""Yields the array's rows in order, a few at a time, as C-contiguous arrays of the declared dtype."""


class StreamedArray:
    """Stands in a pickled structure for an array of `shape` and `dtype` whose values `chunks` yields on write."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type, chunks: Chunks) -> None:
        self.shape, self.dtype, self.chunks = tuple(shape), np.dtype(dtype), chunks
        self.marker = os.urandom(_MARKER_BYTES)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __reduce__(self) -> tuple[Any, ...]:
        return (_FROMBUFFER, (self.marker, self.dtype, self.shape, "C"))


def _collect(obj: Any, found: list[StreamedArray]) -> None:
    if isinstance(obj, StreamedArray):
        found.append(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            _collect(value, found)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _collect(value, found)


def _write_values(handle: BinaryIO, array: StreamedArray) -> None:
    written = 0
    for chunk in array.chunks():
        block = np.ascontiguousarray(chunk, dtype=array.dtype)
        handle.write(block.data)
        written += block.nbytes
    if written != array.nbytes:
        raise DataError(f"a streamed array of shape {array.shape} yielded {written} bytes, expected {array.nbytes}")


def dump_streamed(obj: Any, path: Path) -> int:
    """Pickle `obj` (dicts, lists, tuples, numpy arrays, strings, numbers and `StreamedArray`s) to `path`; each
    StreamedArray's values are written from its chunks. Returns the file's size in bytes."""
    streamed: list[StreamedArray] = []
    _collect(obj, streamed)
    skeleton = pickle.dumps(obj, protocol=PROTOCOL)
    with path.open("wb") as handle:
        position = 0
        for array in streamed:
            token = _SHORT_BINBYTES + bytes([_MARKER_BYTES]) + array.marker
            at = skeleton.find(token, position)
            if at < 0 or skeleton.find(token, at + 1) >= 0:
                raise DataError("the marker of a streamed array was not found exactly once in the pickle")
            handle.write(skeleton[position:at])
            size = array.nbytes
            header = _BINBYTES + struct.pack("<I", size) if size < 2**32 else _BINBYTES8 + struct.pack("<Q", size)
            handle.write(header)
            _write_values(handle, array)
            position = at + len(token)
        handle.write(skeleton[position:])
    return path.stat().st_size
