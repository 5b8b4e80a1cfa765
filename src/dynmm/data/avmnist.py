"""AV-MNIST (MultiBench's npy layout): an MNIST digit image and a spectrogram of a spoken digit, 10 classes.

The files are the user's (they are not bundled); `path` is the folder MultiBench's `datasets/avmnist/get_data.py`
reads. Preprocessing is MultiBench's: image and audio divided by 255, the image reshaped to (1, 28, 28) and the
audio to (1, 112, 112); train = the first N - `valid_size` training rows, valid = the last `valid_size` training
rows (MultiBench: 55000 / 5000 of 60000), test = the test files.

Memory: the image modality of a split is converted to a float32 tensor at once (55000 x 784 floats are 172 MB),
because every model and the DynMM gate read it. The audio modality is an `NpyRows` over the memory-mapped file:
its training split is 2.8 GB as float32, so converting it up front would double the memory a run needs (file pages
plus tensor) and delay every run; a batch reads only its own rows, and the page cache keeps them between epochs.
Whole-split operations (noise robustness) go through `lazy.materialize`, which reads all rows of that split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import torch
from torch import Tensor

from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.check import CheckReport
from dynmm.data.lazy import LazyRows
from dynmm.data.npy_rows import NpyRows
from dynmm.data.options import check_option_types
from dynmm.errors import ConfigError, DataError
from dynmm.specs import ModalitySpec, TaskSpec

NAME = "avmnist"
DEFAULT_VALID_SIZE = 5000
"""MultiBench's validation split: the last 5000 of the 60000 training rows."""
IMAGE_SHAPE = (1, 28, 28)
AUDIO_SHAPE = (1, 112, 112)
SCALE = 1.0 / 255.0
TASK = TaskSpec("classification", num_classes=10)
SAMPLE_ROWS = 256
"""check_avmnist reads this many rows from each end of an image or audio file for its value-range check."""
LAYOUT = (
    "image/train_data.npy (N, 784), image/test_data.npy (M, 784), audio/train_data.npy (N, 112, 112), "
    "audio/test_data.npy (M, 112, 112), train_labels.npy (N,), test_labels.npy (M,); values 0-255, labels 0-9"
)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class _File:
    """One file of the layout: where it lies, which pool (train or test files) and role it has, its row shape."""

    rel: str
    pool: str
    role: str
    row_shape: tuple[int, ...]
    expected: str


_FILES = tuple(
    _File(f"{role}/{pool}_data.npy" if role != "labels" else f"{pool}_labels.npy", pool, role, row, expected)
    for pool in ("train", "test")
    for role, row, expected in (
        ("image", (784,), "(N, 784): one flattened 28x28 image per row"),
        ("audio", (112, 112), "(N, 112, 112): one 112x112 spectrogram per row"),
        ("labels", (), "(N,): one digit per row"),
    )
)
_BY_ROLE = {(f.pool, f.role): f for f in _FILES}


@dataclass(frozen=True)
class AVMNISTOptions:
    """What a user may choose besides `path`: the number of training rows held out (from the end) for valid."""

    valid_size: int = DEFAULT_VALID_SIZE

    def __post_init__(self) -> None:
        check_option_types(self, NAME)
        if self.valid_size < 1:
            raise ConfigError(f"{NAME} option valid_size must be >= 1, got {self.valid_size}")


AVMNIST_OPTIONS: tuple[str, ...] = ("path", *(f.name for f in fields(AVMNISTOptions)))
"""Option names of load_avmnist / avmnist_info (for the data-set registry)."""


def _folder(path: str | Path) -> Path:
    if not isinstance(path, str | Path):
        raise ConfigError(f"{NAME} option path must be a folder name, got {path!r}")
    return Path(path).expanduser()


def _header_dtype(handle: BinaryIO) -> np.dtype:
    handle.seek(0)
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_2_0 if version >= (2, 0) else np.lib.format.read_array_header_1_0
    return read(handle)[2]


def _open(folder: Path, file: _File) -> np.ndarray:
    """The file as a read-only memmap (only its header is read); a DataError says what is wrong with it."""
    where = folder / file.rel
    if not where.is_file():
        raise DataError(f"{file.rel} is missing in {folder.resolve()}; an AV-MNIST folder holds {LAYOUT}")
    try:
        with where.open("rb") as handle:
            magic = handle.read(len(_NPY_MAGIC))
            dtype = _header_dtype(handle) if magic == _NPY_MAGIC else None
    except (OSError, ValueError) as err:
        raise DataError(f"{where} has an unreadable .npy header: {err}") from None
    if dtype is None:
        what = "a zip/.npz archive" if magic.startswith(_ZIP_MAGIC) else "not a NumPy .npy file"
        raise DataError(f"{where} is {what}; expected a .npy array saved with np.save")
    if dtype.hasobject:
        raise DataError(
            f"{where} holds Python objects (dtype {dtype}), i.e. pickled data, which is not loaded "
            "(allow_pickle=False); save it as a numeric array, e.g. np.save(path, np.asarray(x, np.float32))"
        )
    try:
        data = np.load(where, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{where} cannot be read as a .npy array (truncated or damaged?): {err}") from None
    return cast(np.ndarray, data)


def _describe(x: np.ndarray) -> str:
    return f"{tuple(int(d) for d in x.shape)} {x.dtype}"


def _file_problems(file: _File, x: np.ndarray) -> list[str]:
    problems = []
    if x.ndim != 1 + len(file.row_shape) or tuple(x.shape[1:]) != file.row_shape:
        problems.append(f"{file.rel} has shape {tuple(x.shape)}; expected {file.expected}")
    if x.dtype.kind not in "iuf":
        problems.append(f"{file.rel} has dtype {x.dtype}; expected integers or floats")
    return problems


def _inspect(folder: Path, valid_size: int) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """Headers of all six files: the memmaps that opened, what was found, and every structural problem."""
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        return {}, {}, [f"AV-MNIST folder {folder.resolve()} {what}; it must hold {LAYOUT}"]
    arrays: dict[str, np.ndarray] = {}
    found: dict[str, str] = {}
    problems: list[str] = []
    for file in _FILES:
        try:
            x = _open(folder, file)
        except DataError as err:
            problems.append(str(err))
            continue
        found[file.rel] = _describe(x)
        file_problems = _file_problems(file, x)
        problems += file_problems
        if not file_problems:
            arrays[file.rel] = x
    for pool in ("train", "test"):
        counts = {f.rel: int(arrays[f.rel].shape[0]) for f in _FILES if f.pool == pool and f.rel in arrays}
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{rel} {n}" for rel, n in counts.items())
            problems.append(f"the {pool} files disagree on the number of samples: {listed}")
        elif counts:
            n = next(iter(counts.values()))
            if pool == "train" and n <= valid_size:
                problems.append(
                    f"the train files have {n} samples; valid_size={valid_size} takes the last {valid_size} of them "
                    f"for validation and needs more than {valid_size} (set the data option valid_size)"
                )
            if pool == "test" and n < 1:
                problems.append("the test files have no samples")
    return arrays, found, problems


def _raise(folder: Path, problems: list[str]) -> None:
    if len(problems) == 1:
        raise DataError(problems[0])
    raise DataError(f"AV-MNIST files in {folder.resolve()} are not usable:\n" + "\n".join(f"- {p}" for p in problems))


def _checked(path: str | Path, valid_size: int) -> tuple[Path, dict[str, np.ndarray]]:
    AVMNISTOptions(valid_size=valid_size)
    folder = _folder(path)
    arrays, _, problems = _inspect(folder, valid_size)
    if problems:
        _raise(folder, problems)
    return folder, arrays


def _sizes(arrays: Mapping[str, np.ndarray], valid_size: int) -> dict[str, int]:
    n_train = int(arrays[_BY_ROLE["train", "labels"].rel].shape[0])
    n_test = int(arrays[_BY_ROLE["test", "labels"].rel].shape[0])
    return {"train": n_train - valid_size, "valid": valid_size, "test": n_test}


def _label_problems(rel: str, labels: np.ndarray, every_digit: bool) -> list[str]:
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        return [f"{rel} holds non-integer labels (e.g. {labels[labels != np.round(labels)][0]}); expected digits 0-9"]
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        return [f"{rel} holds labels from {labels.min():g} to {labels.max():g}; expected digits 0-9"]
    missing = sorted(set(range(10)) - {int(v) for v in np.unique(labels)})
    if every_digit and missing:
        return [f"{rel} has no sample of digit(s) {missing}; expected all ten digits"]
    return []


def _value_problems(rel: str, x: np.ndarray) -> list[str]:
    """Values of the first and last SAMPLE_ROWS rows must lie in [0, 255] and not look already divided by 255."""
    n = int(x.shape[0])
    rows = np.unique(np.r_[np.arange(min(n, SAMPLE_ROWS)), np.arange(max(0, n - SAMPLE_ROWS), n)])
    if not rows.size:
        return []
    sample = np.asarray(x[rows], dtype=np.float32)
    where = f"{rel} (rows sampled from both ends)"
    if not np.isfinite(sample).all():
        return [f"{where} holds NaN or infinite values"]
    low, high = float(sample.min()), float(sample.max())
    if low < 0 or high > 255:
        return [f"{where} holds values from {low:g} to {high:g}; expected 0-255 (the loader divides by 255)"]
    if high <= 1.0:
        return [
            f"{where} holds values from {low:g} to {high:g}: they look already divided by 255, and the loader "
            "divides by 255 again; store the 0-255 values"
        ]
    return []


def _labels(arrays: Mapping[str, np.ndarray], pool: str) -> np.ndarray:
    rel = _BY_ROLE[pool, "labels"].rel
    labels = np.asarray(arrays[rel])
    problems = _label_problems(rel, labels, every_digit=False)
    if problems:
        raise DataError(problems[0])
    return labels.astype(np.int64)


def load_avmnist(path: str | Path, valid_size: int = DEFAULT_VALID_SIZE) -> dict[str, MultimodalDataset]:
    """Train/valid/test AV-MNIST from MultiBench's npy folder `path`: inputs `image` (1, 28, 28) and `audio`
    (1, 112, 112), float32 in [0, 1] (the stored 0-255 values / 255); target = digit (int64).

    `image` is an in-memory tensor; `audio` an `NpyRows` reading the memory-mapped file per batch (see the module
    docstring). Files that are missing, unreadable, pickled, of the wrong shape or disagreeing on N are a DataError
    that names the file and what was expected; run `check_avmnist` for the value ranges as well.
    """
    folder, arrays = _checked(path, valid_size)
    sizes = _sizes(arrays, valid_size)
    labels = {pool: _labels(arrays, pool) for pool in ("train", "test")}
    ranges = {
        "train": ("train", 0, sizes["train"]),
        "valid": ("train", sizes["train"], sizes["train"] + valid_size),
        "test": ("test", 0, sizes["test"]),
    }
    out: dict[str, MultimodalDataset] = {}
    for split, (pool, lo, hi) in ranges.items():
        image = np.array(arrays[_BY_ROLE[pool, "image"].rel][lo:hi], dtype=np.float32)
        image *= np.float32(SCALE)
        audio = NpyRows(folder / _BY_ROLE[pool, "audio"].rel, lo, hi, SCALE, AUDIO_SHAPE)
        inputs: dict[str, Tensor | LazyRows] = {
            "image": torch.from_numpy(image).reshape(-1, *IMAGE_SHAPE),
            "audio": audio,
        }
        out[split] = MultimodalDataset(inputs, torch.from_numpy(labels[pool][lo:hi]))
    return out


def avmnist_info(path: str | Path, valid_size: int = DEFAULT_VALID_SIZE) -> DatasetInfo:
    """Modalities, task and split sizes from the six files' .npy headers alone (no values are read)."""
    _, arrays = _checked(path, valid_size)
    modalities = {
        "image": ModalitySpec("image", IMAGE_SHAPE, "image"),
        "audio": ModalitySpec("audio", AUDIO_SHAPE, "image"),
    }
    return DatasetInfo(NAME, modalities, TASK, _sizes(arrays, valid_size))


def check_avmnist(path: str | Path, valid_size: int = DEFAULT_VALID_SIZE) -> CheckReport:
    """What `load_avmnist(path, valid_size=...)` would find, and everything wrong with it, without loading it.

    Checks: the folder and its six files exist and are numeric .npy arrays (not pickles, not .npz); shapes are
    (N, 784), (N, 112, 112) and (N,) with N agreeing within the train and within the test files; train N >
    `valid_size`; image and audio values (first and last SAMPLE_ROWS rows of each file) are finite, within
    [0, 255] and not already divided by 255; labels (all of them) are integers 0-9 with every digit present.
    `found` maps each file to "shape dtype" and `splits` to the split sizes the loader would produce.
    """
    AVMNISTOptions(valid_size=valid_size)
    folder = _folder(path)
    report = CheckReport(NAME, str(folder))
    arrays, found, problems = _inspect(folder, valid_size)
    report.found.update(found)
    report.problems += problems
    for file in _FILES:
        if file.rel not in arrays:
            continue
        x = arrays[file.rel]
        if file.role == "labels":
            report.problems += _label_problems(file.rel, np.asarray(x), every_digit=True)
        else:
            report.problems += _value_problems(file.rel, x)
    if not problems:
        sizes = _sizes(arrays, valid_size)
        report.found["splits"] = ", ".join(f"{split} {n}" for split, n in sizes.items())
    return report
