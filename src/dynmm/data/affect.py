"""MultiBench's affect pickles (CMU-MOSI / CMU-MOSEI word-aligned features, e.g. `mosi_raw.pkl`,
`mosei_senti_data.pkl`): text, audio and vision as time-aligned sequences, the sentiment score as target.

The file is a pickled dict with keys train / valid / test, each a dict of numpy arrays: `text` (N, T, 300)
GloVe, `audio` (N, T, 74) COVAREP, `vision` (N, T, 35) Facet (MOSEI raw: 713), `labels` (N, 1, 1) sentiment in
[-3, 3] (also (N, 1) or (N,)), `id` (N, ...) strings. T = 50 words; shorter utterances are zero-padded at the
start, so `max_len` keeps the last `max_len` steps. Widths and lengths are read from the file.
It is unpickled with `dynmm.data.safe_pickle` (an allowlist: a file cannot run code). Non-finite values
(COVAREP audio has -inf and nan; any modality, after conversion to float32) become 0; `meta["nonfinite"]`
counts them per sample. Features stay unscaled, as in MultiBench.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.check import CheckReport
from dynmm.data.safe_pickle import safe_load
from dynmm.errors import ConfigError, DataError
from dynmm.specs import ModalitySpec, TaskSpec

NAME = "affect"
SPLITS = ("train", "valid", "test")
MODALITIES = ("text", "audio", "vision")
ARRAYS = (*MODALITIES, "labels", "id")
LABEL_RANGE = (-3.0, 3.0)
TASK = TaskSpec("regression")
AFFECT_OPTIONS: tuple[str, ...] = ("path", "max_len")
"""Option names of load_affect / affect_info."""
CHUNK = 1024
"""Rows per pass when counting or replacing non-finite values (bounds the boolean mask's memory on MOSEI)."""


def _options(path: object, max_len: object) -> tuple[Path, int | None]:
    if not isinstance(path, str | Path) or not str(path):
        raise ConfigError(f"affect option path must be the path of a pickle file, got {path!r}")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ConfigError(f"affect option max_len must be a positive int or null, got {max_len!r}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(
            f"affect pickle {file} not found (resolved to {file.resolve()}); put MultiBench's mosi_raw.pkl or "
            "mosei_senti_data.pkl there or point data.options.path at it"
        )
    return file, max_len


def _count_nonfinite(a: np.ndarray) -> int:
    if a.dtype.kind != "f":
        return 0
    return sum(
        int(a[i : i + CHUNK].size - np.count_nonzero(np.isfinite(a[i : i + CHUNK]))) for i in range(0, len(a), CHUNK)
    )


def _zero_nonfinite(x: np.ndarray) -> np.ndarray:
    """Set NaN and ±inf in `x` (float, written in place) to 0; returns how many per row."""
    counts = np.zeros(len(x), np.int64)
    for i in range(0, len(x), CHUNK):
        bad = ~np.isfinite(x[i : i + CHUNK])
        counts[i : i + CHUNK] = bad.reshape(len(bad), -1).sum(1)
        x[i : i + CHUNK][bad] = 0.0
    return counts


def _inspect_split(
    split_data: object, split: str, where: str, widths: dict[str, tuple[int, ...]], report: CheckReport
) -> None:
    """Check one split's arrays; `widths` carries each modality's (T, F) from the first split seen."""
    found, problems = report.found, report.problems
    if not isinstance(split_data, dict):
        problems.append(f"{where}: expected a dict of arrays, got {type(split_data).__name__}")
        return
    arrays: dict[str, np.ndarray] = {}
    for key in ARRAYS:
        value = split_data.get(key)
        if key not in split_data:
            problems.append(f"{where}: array {key!r} missing; the split has keys {sorted(map(str, split_data))}")
        elif not isinstance(value, np.ndarray) or value.ndim == 0:
            problems.append(
                f"{where}: {key!r} must be a numpy array with one row per sample, got {type(value).__name__}"
            )
        else:
            arrays[key] = value
            found[f"{split}.{key}"] = f"{tuple(value.shape)} {value.dtype}"
    rows = {key: int(a.shape[0]) for key, a in arrays.items()}
    if len(set(rows.values())) > 1:
        problems.append(f"{where}: arrays disagree on the number of samples: {rows}")
    elif rows and not any(rows.values()):
        problems.append(f"{where}: the split is empty (0 samples)")
    numeric = {}
    for key in (*MODALITIES, "labels"):
        if key in arrays and arrays[key].dtype.kind not in "biuf":
            problems.append(f"{where}: {key!r} must hold numbers, got dtype {arrays[key].dtype}")
        elif key in arrays:
            numeric[key] = arrays[key]
    lengths = {}
    for m in MODALITIES:
        if m not in numeric:
            continue
        a = numeric[m]
        if a.ndim != 3 or 0 in a.shape[1:]:
            problems.append(f"{where}: {m!r} must be 3-D (samples, time, features), got shape {tuple(a.shape)}")
            continue
        lengths[m] = a.shape[1]
        bad = _count_nonfinite(a)
        if bad:
            found[f"{split}.{m}.nonfinite"] = f"{bad} NaN/inf values (replaced by 0)"
        first = widths.setdefault(m, tuple(a.shape[1:]))
        if tuple(a.shape[1:]) != first:
            problems.append(f"{where}: {m!r} has per-sample shape {tuple(a.shape[1:])}, an earlier split {first}")
    if len(set(lengths.values())) > 1:
        problems.append(f"{where}: the sequences must share one time length, got {lengths}")
    if "labels" in numeric:
        _inspect_labels(numeric["labels"], split, where, report)


def _inspect_labels(labels: np.ndarray, split: str, where: str, report: CheckReport) -> None:
    n = labels.shape[0]
    if labels.shape not in ((n,), (n, 1), (n, 1, 1)):
        report.problems.append(f"{where}: 'labels' must have shape (N,), (N, 1) or (N, 1, 1), got {labels.shape}")
        return
    if not n:
        return
    values = labels.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        report.problems.append(f"{where}: 'labels' holds {int((~finite).sum())} NaN/inf values")
        return
    low, high = float(values.min()), float(values.max())
    report.found[f"{split}.labels.range"] = f"[{low:.4g}, {high:.4g}]"
    if low < LABEL_RANGE[0] or high > LABEL_RANGE[1]:
        report.problems.append(
            f"{where}: sentiment labels must lie in [{LABEL_RANGE[0]:g}, {LABEL_RANGE[1]:g}], "
            f"got [{low:.4g}, {high:.4g}]"
        )


def inspect_affect(data: object, report: CheckReport) -> None:
    """Add what an unpickled affect dict holds to `report.found` and what is wrong with it to `report.problems`
    (the loaders accept exactly the dicts with no problems)."""
    if not isinstance(data, dict):
        report.problems.append(
            f"{report.path}: the pickle holds a {type(data).__name__}, expected a dict with keys {list(SPLITS)}"
        )
        return
    report.found["keys"] = ", ".join(sorted(map(str, data)))
    missing = [s for s in SPLITS if s not in data]
    if missing:
        report.problems.append(
            f"{report.path}: split(s) {missing} missing; the pickle has keys {sorted(map(str, data))}"
        )
    widths: dict[str, tuple[int, ...]] = {}
    for split in SPLITS:
        if split in data:
            _inspect_split(data[split], split, f"{report.path} [{split}]", widths, report)


def _read(file: Path) -> dict[str, Any]:
    data = safe_load(file)
    report = CheckReport(NAME, str(file))
    inspect_affect(data, report)
    if report.problems:
        more = len(report.problems) - 3
        tail = f" (and {more} more problem(s))" if more > 0 else ""
        raise DataError("; ".join(report.problems[:3]) + tail)
    return data


def load_affect(path: str | Path, max_len: int | None = None) -> dict[str, MultimodalDataset]:
    """Train/valid/test of a MultiBench affect pickle: `text`, `audio`, `vision` (T, F) float32 sequences (the
    last `max_len` steps if given) with NaN/inf set to 0, target the sentiment (N,) float32."""
    file, max_len = _options(path, max_len)
    data = _read(file)
    out: dict[str, MultimodalDataset] = {}
    for split in SPLITS:
        arrays = data.pop(split)  # frees each split's raw arrays once converted
        n = int(arrays["labels"].shape[0])
        inputs = {}
        replaced = np.zeros(n, np.int64)
        for m in MODALITIES:
            x = arrays[m] if max_len is None else arrays[m][:, -max_len:]
            x = np.array(x, dtype=np.float32, order="C")  # a copy: the pickle's arrays stay untouched
            replaced += _zero_nonfinite(x)
            inputs[m] = torch.from_numpy(x)
        target = torch.from_numpy(np.array(arrays["labels"], dtype=np.float32).reshape(n))
        out[split] = MultimodalDataset(inputs, target, meta={"nonfinite": torch.from_numpy(replaced)})
    return out


def affect_info(path: str | Path, max_len: int | None = None) -> DatasetInfo:
    """Modalities (shapes read from the file), task and split sizes; unpickles the file but builds no tensors."""
    file, max_len = _options(path, max_len)
    data = _read(file)
    train = data["train"]
    modalities = {}
    for m in MODALITIES:
        length, width = train[m].shape[1:]
        modalities[m] = ModalitySpec(m, (min(length, max_len or length), width), "sequence")
    return DatasetInfo(NAME, modalities, TASK, {s: int(data[s]["labels"].shape[0]) for s in SPLITS})


def check_affect(path: str | Path) -> CheckReport:
    """What an affect pickle holds and what is wrong with it; problems are reported, never raised."""
    file = Path(path).expanduser()
    report = CheckReport(NAME, str(file))
    if not file.is_file():
        report.problems.append(f"{file}: file not found (resolved to {file.resolve()})")
        return report
    report.found["file"] = f"{file.stat().st_size} bytes"
    try:
        data = safe_load(file)
    except DataError as err:
        report.problems.append(str(err))
        return report
    inspect_affect(data, report)
    return report
