"""MM-IMDB as MultiBench ships it (`multimodal_imdb.hdf5`): text and image features of 25,959 movies, 23 genres.

Why lazy: the 4096-d VGG features take ~430 MB; `H5Rows` reads a batch's rows from the file when it is asked
for, so a run starts at once and memory stays flat. Only the genres (25959 x 23) are read into memory.
Splits are MultiBench's (datasets/imdb/get_data.py): rows [0, 15552) train, [15552, 18160) valid,
[18160, 25959) test. They are only meaningful for the full file, so any other number of rows is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.check import CheckReport
from dynmm.data.lazy import H5Rows
from dynmm.errors import ConfigError, DataError
from dynmm.specs import ModalitySpec, TaskSpec

ROWS = 25959
"""Movies in MultiBench's file; the official split boundaries below apply to exactly these rows."""
SPLITS = {"train": (0, 15552), "valid": (15552, 18160), "test": (18160, ROWS)}
MODALITIES = {"text": ("features", 300), "image": ("vgg_features", 4096)}
"""Modality -> (dataset in the file, features): 300-d word2vec average of the plot, 4096-d VGG of the poster."""
TARGET_KEY = "genres"
NUM_GENRES = 23
TASK = TaskSpec("multilabel", NUM_GENRES)
SHAPES = {**{key: (ROWS, dim) for key, dim in MODALITIES.values()}, TARGET_KEY: (ROWS, NUM_GENRES)}
SCALE_ROWS = 2048
"""Train rows whose root mean square sets a modality's scale (`standardize`); a scalar needs no more."""
CHECK_ROWS = 256
"""Rows at the start of each split that `check_mmimdb` scans for NaN/inf."""
MMIMDB_OPTIONS: tuple[str, ...] = ("path", "standardize")
"""Keyword options of `load_mmimdb` and `mmimdb_info`."""


def _check_options(path: object, standardize: object) -> Path:
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise ConfigError(f"mmimdb option path must be the path of multimodal_imdb.hdf5, got {path!r}")
    if not isinstance(standardize, bool):
        raise ConfigError(f"mmimdb option standardize must be bool, got {standardize!r}")
    return Path(path)


def _open(path: Path) -> h5py.File:
    """The file opened read-only; DataError (never an h5py traceback) if it is missing or not HDF5."""
    if not path.exists():
        raise DataError(f"MM-IMDB file {path.absolute()} does not exist (MultiBench's multimodal_imdb.hdf5)")
    if not path.is_file() or not h5py.is_hdf5(path):
        raise DataError(f"MM-IMDB file {path} is not an HDF5 file (expected MultiBench's multimodal_imdb.hdf5)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"MM-IMDB file {path} could not be opened as HDF5: {err}") from err


def _layout(f: h5py.File, path: Path) -> tuple[dict[str, str], list[str]]:
    """What each expected dataset is ("(shape) dtype") and what is wrong with the file's layout."""
    found: dict[str, str] = {}
    problems: list[str] = []
    for key, shape in SHAPES.items():
        data = f.get(key)
        if not isinstance(data, h5py.Dataset):
            what = "has no dataset" if data is None else "has a group, not a dataset,"
            problems.append(f"{path} {what} {key!r} (expected shape {shape}); it has {sorted(f.keys())}")
            continue
        found[key] = f"{data.shape} {data.dtype}"
        if data.shape != shape:
            if len(data.shape) == 2 and data.shape[1] == shape[1]:
                problems.append(
                    f"{path}:{key} has {data.shape[0]} rows, expected {ROWS} (the official MultiBench split "
                    f"boundaries apply to the full file only)"
                )
            else:
                problems.append(f"{path}:{key} has shape {data.shape}, expected {shape}")
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
            problems.append(f"{path}:{key} has dtype {data.dtype}, expected a numeric type")
    return found, problems


def _checked_layout(f: h5py.File, path: Path) -> None:
    problems = _layout(f, path)[1]
    if problems:
        raise DataError("MM-IMDB file is not in MultiBench's format: " + "; ".join(problems))


def _genre_problem(genres: np.ndarray, path: Path) -> str | None:
    bad = ~np.isin(genres, (0, 1))
    if not bad.any():
        return None
    row, col = (int(i) for i in np.argwhere(bad)[0])
    example = genres[row, col].item()
    return (
        f"{path}:{TARGET_KEY} holds {int(bad.sum())} entries other than 0 and 1 (e.g. {example!r} at row {row}, "
        f"genre {col}); expected a multi-label 0/1 matrix"
    )


def _read_genres(f: h5py.File, path: Path) -> np.ndarray:
    genres = np.asarray(f[TARGET_KEY][()])
    problem = _genre_problem(genres, path)
    if problem:
        raise DataError(problem)
    return genres.astype(np.float32)


def _unit_rms_scale(f: h5py.File, key: str, path: Path) -> float:
    """1 / root mean square of the first SCALE_ROWS train rows (1 if they are all zero)."""
    lo, hi = SPLITS["train"]
    x = np.asarray(f[key][lo : min(hi, lo + SCALE_ROWS)], dtype=np.float64)
    rms = float(np.sqrt(np.mean(x**2)))
    if not np.isfinite(rms):
        raise DataError(f"{path}:{key} has NaN or inf values in train rows {lo}..{lo + len(x)}")
    return 1.0 / rms if rms > 0 else 1.0


def load_mmimdb(path: str, standardize: bool = True) -> dict[str, MultimodalDataset]:
    """Train/valid/test splits: modalities `text` (300,) and `image` (4096,) read lazily from `path`, target the
    genres as a float32 0/1 tensor (N_split, 23).

    `standardize` scales each modality by one number, 1 / its root mean square on the first train rows, so
    that both reach the encoders and the gate at unit scale: the raw word2vec averages are far smaller than
    the VGG activations, which makes an MLP on both (the DynMM gate) learn from the text features slowly.
    Per-feature z-scoring is left out on purpose: the features are already network embeddings (MultiBench
    feeds them raw), and an offset would have to be subtracted on every read.
    """
    file = _check_options(path, standardize)
    with _open(file) as f:
        _checked_layout(f, file)
        try:
            genres = torch.from_numpy(_read_genres(f, file))
            scales = {m: _unit_rms_scale(f, k, file) if standardize else 1.0 for m, (k, _) in MODALITIES.items()}
        except OSError as err:
            raise DataError(f"MM-IMDB file {file} could not be read: {err}") from err
    return {
        split: MultimodalDataset(
            {m: H5Rows(file, key, lo, hi, scales[m]) for m, (key, _) in MODALITIES.items()}, genres[lo:hi]
        )
        for split, (lo, hi) in SPLITS.items()
    }


def mmimdb_info(path: str, standardize: bool = True) -> DatasetInfo:
    """Modalities, task and split sizes; reads the file's layout only."""
    file = _check_options(path, standardize)
    with _open(file) as f:
        _checked_layout(f, file)
    modalities = {m: ModalitySpec(m, (dim,), "vector") for m, (_, dim) in MODALITIES.items()}
    return DatasetInfo("mmimdb", modalities, TASK, {split: hi - lo for split, (lo, hi) in SPLITS.items()})


def _value_problems(f: h5py.File, path: Path) -> list[str]:
    """Genres 0/1 and every genre positive somewhere in train; no NaN/inf in the first rows of each split."""
    genres = np.asarray(f[TARGET_KEY][()])
    problem = _genre_problem(genres, path)
    problems = [problem] if problem else []
    lo, hi = SPLITS["train"]
    absent = np.flatnonzero(~(genres[lo:hi] == 1).any(axis=0)).tolist()
    if absent:
        problems.append(
            f"{path}:{TARGET_KEY}: genre column(s) {absent} are never 1 in the train rows [{lo}, {hi}), so a model "
            f"cannot learn them (and their F1 is undefined)"
        )
    for key, _ in MODALITIES.values():
        for split, (lo, hi) in SPLITS.items():
            stop = min(hi, lo + CHECK_ROWS)
            bad = ~np.isfinite(np.asarray(f[key][lo:stop])).all(axis=1)
            if bad.any():
                problems.append(
                    f"{path}:{key} has NaN or inf in {split} row {lo + int(np.argmax(bad))} "
                    f"({int(bad.sum())} of the sampled rows {lo}..{stop})"
                )
    return problems


def check_mmimdb(path: str | Path) -> CheckReport:
    """Validate `multimodal_imdb.hdf5` without loading it: layout (keys, shapes, 25959 rows, numeric dtypes),
    then values (genres 0/1, every genre in train, no NaN/inf in the first CHECK_ROWS rows of each split).
    The value checks run only once the layout is right."""
    file = Path(path)
    report = CheckReport("mmimdb", str(file))
    try:
        f = _open(file)
    except DataError as err:
        report.problems.append(str(err))
        return report
    with f:
        report.found, report.problems = _layout(f, file)
        if report.problems:
            return report
        report.found.update({f"split {s}": f"{hi - lo} rows [{lo}, {hi})" for s, (lo, hi) in SPLITS.items()})
        try:
            report.problems += _value_problems(f, file)
        except OSError as err:
            report.problems.append(f"{file} could not be read: {err}")
    return report
