"""The four file layouts `data.name: arrays` reads, each opened as named columns with one row per sample.

- a folder of `.npy` files (one array per file, named by the file's stem): memory-mapped, read per batch;
- an `.npz` archive: members stored uncompressed (`np.savez`) are memory-mapped at their offset in the zip file
  and read per batch; compressed members (`np.savez_compressed`) cannot be mapped and are read into memory;
- a parquet file (pyarrow): the columns used are read into memory when the data set is opened;
- a Hugging Face `datasets` folder (`save_to_disk`, a `Dataset` or a `DatasetDict` with train / valid (or
  validation) / test): Arrow files memory-mapped by `datasets`, rows read per batch.

A parquet or Arrow column of fixed-length lists (nested lists, or `datasets`' ArrayXD features) is an array with
one more axis per level. pyarrow and datasets are optional (`pip install "dynmm[arrow]"`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynmm.data.lazy import LazyRows
from dynmm.data.npy_rows import NpyRows, npz_member_memmap
from dynmm.errors import ConfigError, DataError

EXTRA = 'pip install "dynmm[arrow]"'
VALID_KEYS = ("valid", "validation", "val")
"""Names of a DatasetDict's validation split, in the order they are looked for."""

LazyFactory = Callable[[np.ndarray, tuple[int, ...], Any, Any], LazyRows]
"""(rows, row_shape, scale, shift) -> rows of one column read from the file per batch."""


@dataclass
class Column:
    """One named array: `shape` is (rows, *row); `values[slice]` or `values[sorted row numbers]` gives numpy
    values; `lazy` builds a LazyRows over the file (None: the column is held in memory)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    values: Any
    lazy: LazyFactory | None = None


@dataclass
class Source:
    """The columns found at `path`; `broken` maps a column that cannot be read to the reason. `splits`: the
    split of every row where the layout itself defines splits (a DatasetDict's keys), else None."""

    format: str
    path: Path
    columns: dict[str, Column] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    splits: np.ndarray | None = None


def require(module: str, what: str) -> Any:
    """Import an optional dependency, or fail with one ConfigError that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"reading {what} needs the optional package {module.split('.')[0]}: {EXTRA}") from None


def open_source(path: str | Path, wanted: Collection[str] | None = None) -> Source:
    """Open `path` (format from its name and contents); `wanted`: the only columns a parquet file must read
    (None: all). A missing path or an unknown layout is a DataError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path.absolute()} does not exist; data.name arrays reads {LAYOUTS}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return _npz(path)
        if suffix in (".parquet", ".pq"):
            return _parquet(path, wanted)
        if suffix == ".npy":
            raise DataError(
                f"{path} is one .npy array; put one .npy file per array (modalities, target, split) in a folder "
                "and pass the folder"
            )
        raise DataError(f"{path} is neither .npz nor .parquet; data.name arrays reads {LAYOUTS}")
    if any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json")):
        return _datasets(path)
    files = sorted(path.glob("*.npy"))
    if not files:
        raise DataError(f"{path} holds no .npy files and is not a `datasets` save_to_disk folder; expected {LAYOUTS}")
    return _npy_folder(path, files)


LAYOUTS = (
    "an .npz file, a folder of .npy files, a .parquet file or a Hugging Face datasets folder (save_to_disk), "
    "one array or column per modality plus the target (and optionally a split)"
)


def _npy_factory(path: Path, member: str | None = None) -> LazyFactory:
    def build(rows: np.ndarray, row_shape: tuple[int, ...], scale: Any, shift: Any) -> LazyRows:
        return NpyRows(path, scale=scale, row_shape=row_shape, shift=shift, rows=rows, member=member)

    return build


def _pickle_message(where: str) -> str:
    return (
        f"{where} holds Python objects (pickled data), which are not loaded; save a numeric array (or fixed-width "
        "strings for a split), e.g. np.save(path, np.asarray(x, np.float32))"
    )


def _npy_folder(folder: Path, files: list[Path]) -> Source:
    source = Source("npy folder", folder)
    for file in files:
        try:
            data = np.load(file, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            pickled = "allow_pickle" in str(err) or "Python objects" in str(err)
            source.broken[file.stem] = _pickle_message(file.name) if pickled else f"{file}: {err}"
            continue
        except (OSError, EOFError) as err:
            source.broken[file.stem] = f"{file} cannot be read as a .npy array (truncated or damaged?): {err}"
            continue
        if data.ndim == 0:
            source.broken[file.stem] = f"{file.name} holds a single value; an array needs one row per sample"
            continue
        source.columns[file.stem] = Column(file.stem, tuple(data.shape), data.dtype, data, _npy_factory(file))
    return source


def _npz(path: Path) -> Source:
    source = Source("npz", path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} cannot be read as an .npz archive: {err}") from None
    loaded: Any = None
    for name in names:
        try:
            mapped = npz_member_memmap(path, name)
        except DataError as err:
            source.broken[name] = str(err)
            continue
        if mapped is not None:
            source.columns[name] = Column(name, tuple(mapped.shape), mapped.dtype, mapped, _npy_factory(path, name))
            continue
        loaded = loaded if loaded is not None else np.load(path, allow_pickle=False)
        try:
            data = np.asarray(loaded[name])
        except ValueError as err:
            source.broken[name] = _pickle_message(f"{path}:{name}") if "allow_pickle" in str(err) else str(err)
            continue
        if data.ndim == 0:
            source.broken[name] = f"{path}:{name} holds a single value; an array needs one row per sample"
            continue
        source.columns[name] = Column(name, tuple(data.shape), data.dtype, data)
    return source


# --- Arrow (parquet, datasets) ---------------------------------------------------------------------------------


def _levels(array: Any, name: str) -> tuple[list[int], Any]:
    """Row dims below the first axis of a (chunk of a) list column, and its leaf values; ragged lists or nulls are
    a DataError. Only offsets are read (flatten is zero-copy), so this is cheap on a memory-mapped column."""
    pa = require("pyarrow", "Arrow data")
    pc = require("pyarrow.compute", "Arrow data")
    dims: list[int] = []
    while True:
        if isinstance(array.type, pa.ExtensionType):
            array = array.storage
            continue
        kind = array.type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
            break
        if array.null_count:
            raise DataError(f"column {name!r} has {array.null_count} missing (null) lists; every row needs values")
        if pa.types.is_fixed_size_list(kind):
            length = int(kind.list_size)
        else:
            lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
            if lengths.size and lengths.min() != lengths.max():
                first = int(np.flatnonzero(lengths != lengths[0])[0])
                where = f"rows 0 and {first}" if not dims else f"depth {len(dims) + 1}"
                raise DataError(
                    f"column {name!r} holds lists of different lengths ({int(lengths[0])} and {int(lengths[first])}, "
                    f"{where}); a modality needs fixed-length lists"
                )
            length = int(lengths[0]) if lengths.size else 0
        dims.append(length)
        array = array.flatten()
    return dims, array


def _leaf_dtype(kind: Any, name: str) -> np.dtype:
    pa = require("pyarrow", "Arrow data")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.dtype(str)
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return np.dtype(kind.to_pandas_dtype())
    raise DataError(f"column {name!r} has type {kind}; expected numbers, strings or fixed-length lists of numbers")


def arrow_to_numpy(column: Any, name: str) -> np.ndarray:
    """An Arrow (chunked) array as numpy, one axis per fixed-length list level; strings become a str array."""
    pa = require("pyarrow", "Arrow data")
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = len(array)
    dims, leaf = _levels(array, name)
    dtype = _leaf_dtype(leaf.type, name)
    if dtype.kind == "U":
        if leaf.null_count:
            raise DataError(f"column {name!r} has {leaf.null_count} missing (null) values")
        values = np.asarray(leaf.to_pylist(), dtype=str)
    else:
        values = leaf.to_numpy(zero_copy_only=False)  # nulls become NaN
    return values.reshape(rows, *dims)


def _arrow_layout(chunks: list[Any], name: str) -> tuple[list[int], np.dtype]:
    """Row dims and leaf dtype of a column given as Arrow chunks, every chunk checked (offsets only)."""
    layouts = [_levels(chunk, name) for chunk in chunks if len(chunk)]
    if not layouts:
        return [], np.dtype(np.float32)
    dims = layouts[0][0]
    if any(other != dims for other, _ in layouts[1:]):
        raise DataError(f"column {name!r} holds lists of different lengths in different parts of the data")
    return dims, _leaf_dtype(layouts[0][1].type, name)


def _parquet(path: Path, wanted: Collection[str] | None) -> Source:
    pq = require("pyarrow.parquet", f"the parquet file {path}")
    pa = require("pyarrow", f"the parquet file {path}")
    try:
        names = pq.ParquetFile(path).schema_arrow.names
        read = [n for n in names if wanted is None or n in wanted]
        table = pq.read_table(path, columns=read)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path} cannot be read as a parquet file: {err}") from None
    source = Source("parquet", path)
    for name in read:
        try:
            values = arrow_to_numpy(table.column(name), name)
        except DataError as err:
            source.broken[name] = str(err)
            continue
        source.columns[name] = Column(name, tuple(values.shape), values.dtype, values)
    return source


def _dataset_parts(path: Path) -> tuple[list[str], list[Any]]:
    """The split keys ("" for a plain Dataset) and the datasets of a save_to_disk folder."""
    datasets = require("datasets", f"the Hugging Face datasets folder {path}")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as err:
        raise DataError(f"{path} cannot be read with datasets.load_from_disk: {err}") from None
    if not isinstance(loaded, datasets.DatasetDict):
        return [""], [loaded]
    valid = next((key for key in VALID_KEYS if key in loaded), None)
    if "train" not in loaded or "test" not in loaded or valid is None:
        raise DataError(
            f"{path} is a DatasetDict with splits {sorted(loaded)}; it needs train, valid (or validation) and test "
            "(or save one Dataset with a split column)"
        )
    keys = ["train", valid, "test"]
    return keys, [loaded[key] for key in keys]


class ArrowColumn:
    """One column of the datasets at `path` (parts concatenated in order) as an array-like of `shape`: indexing
    by a slice or sorted row numbers returns numpy values, read from the memory-mapped Arrow files."""

    def __init__(self, path: Path, keys: list[str], name: str, row: tuple[int, ...], parts: list[Any]) -> None:
        self.path, self.keys, self.name = path, keys, name
        self._parts = [part.select_columns([name]).with_format("arrow") for part in parts]
        self._offsets = np.cumsum([0, *(len(part) for part in parts)])
        self.shape = (int(self._offsets[-1]), *row)

    @classmethod
    def reopen(cls, path: Path, keys: list[str], name: str, row: tuple[int, ...]) -> ArrowColumn:
        found, parts = _dataset_parts(path)
        if found != keys:
            raise DataError(f"{path} changed since it was opened: splits {found}, expected {keys}")
        return cls(path, keys, name, row, parts)

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        rows = np.arange(*index.indices(self.shape[0])) if isinstance(index, slice) else np.asarray(index)
        pieces = []
        for i, part in enumerate(self._parts):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            local = rows[(rows >= lo) & (rows < hi)] - lo
            if not local.size:
                continue
            contiguous = local[-1] - local[0] + 1 == local.size and (np.diff(local) > 0).all()
            table = part[int(local[0]) : int(local[-1]) + 1] if contiguous else part[local.tolist()]
            pieces.append(arrow_to_numpy(table.column(self.name), self.name))
        if not pieces:
            return np.empty((0, *self.shape[1:]))
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]


class ArrowRows(LazyRows):
    """Rows of one column of a `datasets` folder, read per batch (see `LazyRows`)."""

    def __init__(self, column: ArrowColumn, rows: np.ndarray, row_shape: tuple[int, ...], scale: Any, shift: Any):
        self.keys, self.name, self.stored = column.keys, column.name, tuple(column.shape[1:])
        super().__init__(column.path, 0, 0, scale, row_shape, shift=shift, rows=rows)

    def _open(self) -> Any:
        return ArrowColumn.reopen(self.path, self.keys, self.name, self.stored)


def _datasets(path: Path) -> Source:
    keys, parts = _dataset_parts(path)
    source = Source("datasets", path)
    names = list(parts[0].column_names)
    for key, part in zip(keys, parts, strict=True):
        if list(part.column_names) != names:
            raise DataError(f"{path}: split {key!r} has columns {part.column_names}, split {keys[0]!r} has {names}")
    if keys != [""]:
        source.splits = np.repeat(np.array(["train", "valid", "test"]), [len(part) for part in parts])
    for name in names:
        try:
            dims, dtype = _arrow_layout([c for part in parts for c in part.data.table.column(name).chunks], name)
        except DataError as err:
            source.broken[name] = str(err)
            continue
        column = ArrowColumn(path, keys, name, tuple(dims), parts)

        def build(rows: np.ndarray, row_shape: tuple[int, ...], scale: Any, shift: Any, c=column) -> LazyRows:
            return ArrowRows(c, rows, row_shape, scale, shift)

        source.columns[name] = Column(name, column.shape, dtype, column, build)
    return source
