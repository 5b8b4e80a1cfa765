"""Small pickles in exactly the format of MultiBench's affect files (`mosi_raw.pkl`, `mosei_senti_data.pkl`).

Written with the real `pickle` module on real numpy arrays, so the files hold numpy's own reduce calls
(`_reconstruct`, `ndarray`, `dtype`, `scalar`; `_codecs.encode` for bytes under protocol 2). The real files
were written by numpy 1.x, which names its globals `numpy.core.*`; numpy 2 writes `numpy._core.*`.
`numpy_names="1.x"` (default) writes the 1.x names: numpy's reduce output is kept, only the module path of
a global is spelled as numpy 1.x spells it.
"""

from __future__ import annotations

import io
import pickle
import types
from pathlib import Path
from typing import Any, Literal

import numpy as np

SEQ_LEN = 50
TEXT_DIM = 300
AUDIO_DIM = 74


_PyPickler: Any = pickle._Pickler  # the pure-Python pickler: its save_global can be overridden


class _Numpy1Pickler(_PyPickler):
    """Pickles exactly as `pickle.Pickler`, but names numpy's `numpy._core.X` globals `numpy.core.X`."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or ""
        if not module.startswith("numpy._core"):
            super().save_global(obj, name)
            return
        module = "numpy.core" + module[len("numpy._core") :]
        name = name or obj.__qualname__
        if self.proto >= 4:
            self.save(module)
            self.save(name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch = {**_PyPickler.dispatch, types.FunctionType: save_global}  # e.g. numpy's _frombuffer


def dump_pickle(obj: Any, protocol: int = 4, numpy_names: Literal["1.x", "2.x"] = "1.x") -> bytes:
    """`pickle.dumps(obj, protocol)`, with numpy's globals named as numpy 1.x or 2.x writes them."""
    if numpy_names == "2.x":
        return pickle.dumps(obj, protocol=protocol)
    buffer = io.BytesIO()
    _Numpy1Pickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


def make_affect_data(
    sizes: tuple[int, int, int] = (24, 8, 8),
    vision_dim: int = 35,
    seq_len: int = SEQ_LEN,
    id_kind: Literal["str", "bytes", "unicode"] = "bytes",
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """{"train", "valid", "test"} -> {"vision", "audio", "text", "labels" (N, 1, 1), "id" (N, 2)}.

    Like the real files: each utterance is zero-padded at the start (its words fill the last steps), audio has
    -inf and NaN entries, labels are sentiment scores in [-3, 3] (some exactly ±3). `id_kind`: an object array
    of bytes (the real files), of str, or a numpy unicode array.
    """
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in zip(("train", "valid", "test"), sizes, strict=True):
        words = rng.integers(3, seq_len + 1, n)
        pad = np.arange(seq_len)[None, :] < (seq_len - words)[:, None]  # (n, T): True on the padding steps
        arrays = {}
        for key, dim in (("vision", vision_dim), ("audio", AUDIO_DIM), ("text", TEXT_DIM)):
            x = rng.normal(0.0, 1.0, (n, seq_len, dim)).astype(np.float32)
            x[pad] = 0.0
            arrays[key] = x
        if n:
            audio = arrays["audio"]
            audio[0, -1, :3] = -np.inf
            audio[n - 1, -2, 5] = np.nan
            audio[n // 2, -1, 7] = np.inf
        labels = np.round(rng.uniform(-3.0, 3.0, (n, 1, 1)), 1).astype(np.float32)
        if n >= 2:
            labels[0, 0, 0], labels[1, 0, 0] = 3.0, -3.0
        arrays["labels"] = labels
        names = [[f"vid{split}{i // 3}", str(i % 3)] for i in range(n)]
        if id_kind == "unicode":
            arrays["id"] = np.array(names, dtype=str).reshape(n, 2)
        else:
            ids = np.empty((n, 2), dtype=object)
            for i, pair in enumerate(names):
                ids[i] = [s.encode() for s in pair] if id_kind == "bytes" else pair
            arrays["id"] = ids
        data[split] = arrays
    return data


def write_affect_pickle(data: Any, path: Path, protocol: int = 4, numpy_names: Literal["1.x", "2.x"] = "1.x") -> Path:
    """Pickle any object (e.g. a broken variant of make_affect_data()) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dump_pickle(data, protocol, numpy_names))
    return path


def write_affect_fixture(
    path: Path,
    sizes: tuple[int, int, int] = (24, 8, 8),
    vision_dim: int = 35,
    protocol: int = 4,
    numpy_names: Literal["1.x", "2.x"] = "1.x",
    id_kind: Literal["str", "bytes", "unicode"] = "bytes",
    seed: int = 0,
) -> Path:
    """Write a small affect pickle (MOSI widths; `vision_dim=713` for MOSEI raw) and return its path."""
    data = make_affect_data(sizes, vision_dim, id_kind=id_kind, seed=seed)
    return write_affect_pickle(data, path, protocol, numpy_names)
