"""Read pickles from users' files without letting them run code: an allowlist of the globals a pickle of numpy
arrays, dicts, lists, tuples, strings, bytes and numbers needs, and nothing else.

Why: `pickle.load` calls whatever callable a file names (`os.system`, `builtins.exec`, ...), so a downloaded
pickle can run anything. Every callable and class a pickle uses is fetched by `Unpickler.find_class` (opcodes
GLOBAL, STACK_GLOBAL, INST and the extension registry), so refusing there refuses it everywhere, including
inside nested containers and the elements of object arrays (which numpy unpickles as ordinary objects).
The allowed callables only build arrays, dtypes, numpy scalars, bytes and a few builtin containers.
"""

from __future__ import annotations

import pickle
from functools import cache
from pathlib import Path
from typing import IO, Any

import numpy as np

from dynmm.errors import DataError

LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1")


def _latin1_encode(text: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
    """`_codecs.encode` as protocol 0-2 pickles use it for bytes (text, "latin1"), and for nothing else: any other
    codec (zlib, base64, rot13, ...) is refused rather than looked up."""
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower() not in LATIN1:
        raise DataError(f"refused _codecs.encode({type(text).__name__}, {encoding!r}): only latin-1 text is allowed")
    return text.encode("latin-1")


def _numpy_reducers() -> dict[str, Any]:
    """The installed numpy's own reconstructors, taken from how it pickles (no private import paths)."""
    found = {
        "_reconstruct": np.zeros(1).__reduce__()[0],
        "scalar": np.float32(0).__reduce__()[0],
        "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],
    }
    return {name: fn for name, fn in found.items() if getattr(fn, "__name__", None) == name}


@cache
def allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object for every global a pickle may name; numpy 1.x (`numpy.core`) and 2.x
    (`numpy._core`) spellings, and protocol-2 (`__builtin__`) and protocol-3+ (`builtins`) spellings."""
    reducers = _numpy_reducers()
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")):
            if name in reducers:
                out[(f"{core}.{module}", name)] = reducers[name]
    out[("_codecs", "encode")] = _latin1_encode
    for builtins in ("builtins", "__builtin__"):
        for cls in (bytes, bytearray, complex, set, frozenset):
            out[(builtins, cls.__name__)] = cls
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose `find_class` returns only `allowed_globals()` and raises DataError for anything else,
    naming the refused `module.name` and the file (`source`)."""

    def __init__(self, file: IO[bytes], source: str) -> None:
        # latin1: numpy arrays pickled by Python 2 keep their raw bytes (numpy's documented setting)
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = allowed_globals()
        if (module, name) not in allowed:
            raise DataError(
                f"{self.source}: refused to unpickle {module}.{name}; only numpy arrays, dicts, lists, tuples, "
                "strings, bytes and numbers are allowed (the file may be corrupt or malicious; nothing was run)"
            )
        return allowed[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.source}: refused a persistent id {str(pid)[:80]!r} (not a plain data pickle)")


def safe_load(path: str | Path) -> Any:
    """Unpickle `path` with RestrictedUnpickler; every failure (missing, unreadable, truncated, not a pickle,
    a refused global) is a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pickle file {path} not found (resolved to {path.resolve()})")
    try:
        with path.open("rb") as file:
            return RestrictedUnpickler(file, str(path)).load()
    except DataError as err:
        if str(path) in str(err):
            raise
        raise DataError(f"{path}: {err}") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    except MemoryError:
        raise DataError(f"{path}: out of memory while unpickling") from None
    except Exception as err:  # a malformed byte stream: UnpicklingError, EOFError, ValueError, TypeError, ...
        reason = "truncated (ends early)" if isinstance(err, EOFError) else f"{type(err).__name__}: {err}"
        raise DataError(f"{path} is not a readable pickle: {str(reason)[:300]}") from None
