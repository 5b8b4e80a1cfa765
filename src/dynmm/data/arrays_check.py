"""`dynmm data check PATH --format arrays`: what a generic arrays data set holds and everything wrong with it.

Reports each array's shape, dtype and how it is read (memory-mapped or in memory), each modality's kind and
value range, the task, and the split sizes; problems are row-count mismatches (naming both arrays), NaN/inf
values (count and first rows), non-numeric modalities, unknown split labels, an empty split, a missing target
and a target that does not fit the task. Every value of every modality is scanned, in chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dynmm.data.arrays_plan import (
    DEFAULT_FRACTIONS,
    NAME,
    ArraysOptions,
    Findings,
    chunks,
    inspect_source,
)
from dynmm.data.arrays_sources import Column, open_source
from dynmm.data.check import CheckReport
from dynmm.errors import DataError


def _describe(column: Column) -> str:
    how = "memory-mapped" if column.lazy is not None else "in memory"
    return f"{column.shape} {column.dtype}, {how}"


def _scan(column: Column, name: str, role: str) -> tuple[str, list[str]]:
    """Value range of a numeric column over all rows, and a problem for NaN/inf values."""
    rows = np.arange(column.shape[0])
    low, high, bad_values = np.inf, -np.inf, 0
    bad_rows: list[int] = []
    for part in chunks(rows, int(np.prod(column.shape[1:]))):
        x = np.asarray(column.values[part], dtype=np.float64).reshape(len(part), -1)
        finite = np.isfinite(x)
        if not finite.all():
            bad_values += int((~finite).sum())
            bad_rows += part[~finite.all(1)].tolist()
        if finite.any():
            low, high = min(low, float(x[finite].min())), max(high, float(x[finite].max()))
    text = f"values {low:.4g} to {high:.4g}" if low <= high else "no finite values"
    if not bad_values:
        return text, []
    return text, [
        f"{role} array {name!r} has {bad_values} NaN/inf values in {len(bad_rows)} rows (first rows {bad_rows[:5]})"
    ]


def _splits_text(f: Findings) -> str:
    assert f.rows is not None
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in f.rows.items())
    if f.source.splits is not None:
        return f"{sizes} (the DatasetDict's keys)"
    if f.split_name is not None:
        return f"{sizes} (split array {f.split_name!r})"
    fractions = list(f.options.split_fractions or DEFAULT_FRACTIONS)
    return f"{sizes} (no split array: seeded random split {fractions}, seed {f.options.seed})"


def check_arrays(path: str | Path, **options: Any) -> CheckReport:
    """What `load_arrays(path=path, **options)` would find, and every problem, without building tensors.

    Defaults as in `data.options`: target "target", split "split" when there is one (else a seeded random split),
    every other array a modality. Options that match no array are a ConfigError; a missing optional package
    (parquet, datasets) too."""
    o = ArraysOptions.parse({"path": path, **options})
    report = CheckReport(NAME, str(o.path))
    try:
        source = open_source(o.path)
    except DataError as err:
        report.problems.append(str(err))
        return report
    report.found["format"] = source.format
    for name, column in source.columns.items():
        report.found[name] = _describe(column)
    f = inspect_source(source, o)
    unused_broken = [why for name, why in source.broken.items() if why not in f.problems]
    report.problems += unused_broken + f.problems
    for name, column in f.columns.items():
        if name not in f.layouts:
            continue
        values, problems = _scan(column, name, "modality")
        lay = f.layouts[name]
        report.found[name] += f"; {lay.kind} {lay.row_shape}, {values}"
        report.problems += problems
    target = source.columns.get(o.target)
    if target is not None and target.dtype.kind in "iubf":
        report.found[o.target] += f"; {_scan(target, o.target, 'target')[0]}"  # NaN/inf: among f.problems
    if f.task is not None:
        classes = f" ({f.task.num_classes} classes)" if f.task.kind != "regression" else ""
        report.found["task"] = f"{f.task.kind}{classes}"
    if f.rows is not None:
        report.found["splits"] = _splits_text(f)
    return report
