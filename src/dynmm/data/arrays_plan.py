"""What a load of `data.name: arrays` would read, decided before any modality value is read: the checked
options, each modality's layout (row shape, kind, statistics axis), the splits, the task and the target, and
every problem with them (the loader raises them, `dynmm data check` lists them). See `dynmm.data.arrays`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynmm.data.arrays_sources import Column, Source, open_source
from dynmm.errors import ConfigError, DataError
from dynmm.specs import SEGMENTATION_IGNORE, TaskSpec

NAME = "arrays"
ARRAYS_OPTIONS: tuple[str, ...] = (
    "path",
    "target",
    "split",
    "split_fractions",
    "stats_split",
    "seed",
    "task",
    "num_classes",
    "modalities",
    "kinds",
    "zscore",
    "stats",
)
SPLITS = ("train", "valid", "test")
SPLIT_NAMES = {"train": 0, "valid": 1, "validation": 1, "val": 1, "test": 2}
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
TASKS = ("classification", "multilabel", "regression", "segmentation")
KINDS = ("vector", "sequence", "image")
CHUNK_VALUES = 1 << 22
"""Values read at once when statistics are computed or values scanned (16 MB as float32)."""


def option_error(message: str) -> ConfigError:
    return ConfigError(f"{NAME} option {message}")


def _names(value: Any, option: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise option_error(f"{option} must be a list of names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ArraysOptions:
    """The checked options of `data.name: arrays` (see the module docstring)."""

    path: Path
    target: str = "target"
    split: str | None = None
    split_fractions: tuple[float, float, float] | None = None
    stats_split: str | None = None
    seed: int = 0
    task: str | None = None
    num_classes: int | None = None
    modalities: tuple[str, ...] | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    zscore: bool | tuple[str, ...] = True
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> ArraysOptions:
        unknown = sorted(set(options) - set(ARRAYS_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown {NAME} option(s) {unknown}; accepted: {list(ARRAYS_OPTIONS)}")
        o = dict(options)
        path = o.get("path")
        if not isinstance(path, str | Path) or not str(path):
            raise option_error(f"path must be a file or folder name, got {path!r}")
        for key in ("target", "split", "stats_split", "task"):
            if o.get(key) is not None and not isinstance(o[key], str):
                raise option_error(f"{key} must be a name, got {o[key]!r}")
        if o.get("task") is not None and o["task"] not in TASKS:
            raise option_error(f"task must be one of {list(TASKS)}, got {o['task']!r}")
        for key in ("seed", "num_classes"):
            if o.get(key) is not None and (isinstance(o[key], bool) or not isinstance(o[key], int)):
                raise option_error(f"{key} must be an integer, got {o[key]!r}")
        if o.get("num_classes") is not None and o["num_classes"] < 1:
            raise option_error(f"num_classes must be >= 1, got {o['num_classes']}")
        fractions = o.get("split_fractions")
        if fractions is not None:
            if (
                not isinstance(fractions, list | tuple)
                or len(fractions) != 3
                or not all(isinstance(f, int | float) and not isinstance(f, bool) and f >= 0 for f in fractions)
                or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
            ):
                raise option_error(
                    f"split_fractions must be three numbers >= 0 (train, valid, test) summing to 1, got {fractions!r}"
                )
            fractions = tuple(float(f) for f in fractions)
        kinds = o.get("kinds") or {}
        if not isinstance(kinds, dict) or any(k not in KINDS for k in kinds.values()):
            raise option_error(f"kinds must map modalities to one of {list(KINDS)}, got {kinds!r}")
        zscore = o.get("zscore", True)
        if not isinstance(zscore, bool):
            zscore = _names(zscore, "zscore (true, false or a list of modalities)")
        stats = o.get("stats") or {}
        if not isinstance(stats, dict) or any(
            not isinstance(s, dict) or set(s) != {"mean", "std"} for s in stats.values()
        ):
            raise option_error(f"stats must map modalities to {{mean: ..., std: ...}}, got {stats!r}")
        modalities = o.get("modalities")
        return cls(
            path=Path(path).expanduser(),
            target=o.get("target") or "target",
            split=o.get("split"),
            split_fractions=fractions,
            stats_split=o.get("stats_split"),
            seed=int(o.get("seed") or 0),
            task=o.get("task"),
            num_classes=o.get("num_classes"),
            modalities=None if modalities is None else _names(modalities, "modalities"),
            kinds=dict(kinds),
            zscore=zscore,
            stats={k: dict(v) for k, v in stats.items()},
        )

    def wanted(self) -> set[str] | None:
        """Columns a parquet file must read (None: all)."""
        if self.modalities is None:
            return None
        return {self.target, self.split or "split", self.stats_split or "split", *self.modalities}


# --- modalities ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How one stored array is presented: `row_shape` and `kind` of its ModalitySpec, and `axis`, the row axis
    whose values each get their own z-score statistics."""

    column: str
    row_shape: tuple[int, ...]
    kind: str
    axis: int

    @property
    def channels(self) -> int:
        return self.row_shape[self.axis]

    def broadcast(self, values: np.ndarray) -> np.ndarray:
        """Per-channel values shaped to broadcast against one row, e.g. (C, 1, 1) for an image."""
        shape = [1] * len(self.row_shape)
        shape[self.axis] = self.channels
        return values.astype(np.float32).reshape(shape)


def layout(name: str, stored: tuple[int, ...], kind: str | None) -> Layout:
    """Row shape, kind and statistics axis of a modality whose stored row has shape `stored` (DataError if the
    shape cannot be read as the kind)."""
    size = int(np.prod(stored))
    if kind is None:
        kind = {0: "vector", 1: "vector", 2: "sequence", 3: "image", 4: "image"}.get(len(stored))
        if kind is None:
            raise DataError(
                f"array {name!r} has rows of shape {stored}; a modality's row is (D,), (T, F), (C, H, W) or "
                "(T, C, H, W) (set data.options.kinds to read it as a flat vector)"
            )
    if kind == "vector":
        return Layout(name, (size,), "vector", 0)
    if kind == "sequence":
        row = (stored[0], int(np.prod(stored[1:]))) if len(stored) >= 2 else (size, 1)
        return Layout(name, row, "sequence", 1)
    if len(stored) == 2:
        return Layout(name, (1, *stored), "image", 0)
    if len(stored) in (3, 4):
        return Layout(name, stored, "image", len(stored) - 3)
    raise DataError(f"array {name!r} has rows of shape {stored}, which cannot be read as an image (C, H, W)")


# --- splits ----------------------------------------------------------------------------------------------------


def _first_rows(mask: np.ndarray, count: int = 5) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)[:count]]


def split_codes(values: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """0/1/2 (train/valid/test) per row, -1 where the label is unknown, and the problems found."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        return np.full(len(values), -1), [f"split array {name!r} has shape {values.shape}; expected one label per row"]
    codes = np.full(values.shape[0], -1, dtype=np.int64)
    if values.dtype.kind in "US":
        text = np.char.lower(np.char.strip(values.astype(str)))
        for label, code in SPLIT_NAMES.items():
            codes[text == label] = code
        shown = text
    elif values.dtype.kind in "iuf":
        known = np.isin(values, (0, 1, 2))
        codes[known] = values[known].astype(np.int64)
        shown = values
    else:
        return codes, [
            f"split array {name!r} holds {values.dtype} values; expected strings train/valid/test or integers 0/1/2"
        ]
    unknown = codes < 0
    if unknown.any():
        labels = sorted({str(v) for v in np.unique(shown[unknown])[:5]})
        return codes, [
            f"split array {name!r} has {int(unknown.sum())} rows with unknown labels {labels} (first rows "
            f"{_first_rows(unknown)}); expected train/valid/test (or validation/val) or 0/1/2"
        ]
    return codes, []


def random_split(rows: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """0/1/2 per row: a seeded permutation cut by `fractions` (valid and test rounded, train the rest)."""
    valid, test = round(fractions[1] * rows), round(fractions[2] * rows)
    order = np.random.default_rng(seed).permutation(rows)
    codes = np.zeros(rows, dtype=np.int64)
    codes[order[rows - valid - test : rows - test]] = 1
    codes[order[rows - test :]] = 2
    return codes


# --- target ----------------------------------------------------------------------------------------------------


def infer_task(target: np.ndarray) -> str | None:
    """The task a target's dtype and shape suggest (None: cannot tell)."""
    integer = target.dtype.kind in "iub"
    row = target.shape[1:]
    if row in ((), (1,)):
        return "classification" if integer else "regression"
    if len(row) == 1:
        return "multilabel" if integer else None
    if len(row) == 2:
        return "segmentation" if integer else None
    return None


def _integral(values: np.ndarray) -> bool:
    return values.dtype.kind in "iub" or bool(np.all(values == np.round(values)))


def target_task(
    target: np.ndarray, name: str, task: str | None, num_classes: int | None
) -> tuple[TaskSpec | None, list[str]]:
    """The task spec for `target`, and every way the target does not fit it (each a sentence)."""
    if target.dtype.kind not in "iubf":
        return None, [f"target array {name!r} holds {target.dtype} values; store numbers (class ids, scores, 0/1)"]
    problems = []
    finite: np.ndarray = np.isfinite(target) if target.dtype.kind == "f" else np.ones(target.shape, bool)
    if not finite.all():
        bad = np.asarray(~finite.reshape(len(target), -1).all(1))
        problems.append(
            f"target array {name!r} has {int((~finite).sum())} NaN/inf values (first rows {_first_rows(bad)})"
        )
    kind = task or infer_task(target)
    if kind is None:
        return None, [
            *problems,
            f"target array {name!r} of shape {target.shape} and dtype {target.dtype} fits no default task; set "
            f"data.options.task to one of {list(TASKS)}",
        ]
    values = target[finite] if target.dtype.kind == "f" else target.reshape(-1)
    row = target.shape[1:]
    if kind in ("classification", "regression") and row not in ((), (1,)):
        return None, [*problems, f"a {kind} target has one value per row; {name!r} has rows of shape {row}"]
    if kind == "regression":
        return TaskSpec("regression"), problems
    if kind == "multilabel" and len(row) != 1:
        return None, [*problems, f"a multilabel target has shape (N, K); {name!r} has shape {target.shape}"]
    if kind == "segmentation" and len(row) != 2:
        return None, [*problems, f"a segmentation target has shape (N, H, W); {name!r} has shape {target.shape}"]
    if values.size and not _integral(values):
        example = values[values != np.round(values)][0]
        return None, [*problems, f"a {kind} target holds integers; {name!r} holds {example!r}"]
    if kind == "multilabel":
        if values.size and not np.isin(values, (0, 1)).all():
            problems.append(
                f"a multilabel target holds 0/1 per label; {name!r} holds values from {values.min()} to {values.max()}"
            )
        if num_classes is not None and num_classes != row[0]:
            problems.append(f"num_classes={num_classes} but the multilabel target {name!r} has {row[0]} labels")
        return TaskSpec("multilabel", row[0]), problems
    labels = values[values != SEGMENTATION_IGNORE] if kind == "segmentation" else values
    if labels.size and labels.min() < 0:
        problems.append(f"a {kind} target holds class ids >= 0; {name!r} holds {labels.min()}")
    top = int(labels.max()) + 1 if labels.size else 0
    classes = num_classes if num_classes is not None else top
    if top > classes:
        problems.append(f"num_classes={classes} but the target {name!r} holds class {top - 1}")
    if classes < 2:
        problems.append(f"the target {name!r} holds {classes} class(es); a {kind} task needs at least 2")
    return TaskSpec(kind, classes), problems  # type: ignore[arg-type]


# --- the plan: what a load of these options reads ----------------------------------------------------------------


@dataclass
class Findings:
    """What `inspect_source` found for a set of options: the modalities' columns and layouts, the split, the
    task and target (None where a problem prevents them), and every problem."""

    source: Source
    options: ArraysOptions
    split_name: str | None
    columns: dict[str, Column]
    layouts: dict[str, Layout]
    task: TaskSpec | None
    target: np.ndarray | None
    rows: dict[str, np.ndarray] | None
    stats_rows: np.ndarray | None
    problems: list[str]


@dataclass
class Plan:
    """Everything a load needs, decided from the options and the arrays' headers, target and split."""

    source: Source
    options: ArraysOptions
    layouts: dict[str, Layout]
    task: TaskSpec
    target: np.ndarray
    rows: dict[str, np.ndarray]
    stats_rows: np.ndarray


def column_values(column: Column, rows: np.ndarray | slice | None = None) -> np.ndarray:
    return np.asarray(column.values[slice(None) if rows is None else rows])


def inspect_source(source: Source, o: ArraysOptions) -> Findings:
    """Everything a load of `source` with options `o` would use, and every problem found, reading the target and
    split but not the modalities' values. Option names that match no modality are a ConfigError."""
    problems: list[str] = []
    everything = sorted({*source.columns, *source.broken})

    def column(name: str, role: str) -> Column | None:
        if name in source.columns:
            return source.columns[name]
        hint = " (set data.options.target)" if role == "target" else ""
        missing = f"no {role} array {name!r} in {source.path}; it has {everything}{hint}"
        problems.append(source.broken.get(name, missing))
        return None

    target_column = column(o.target, "target")
    split_name = o.split
    if source.splits is not None and split_name is not None:
        raise option_error(f"split: the DatasetDict {source.path} defines its splits by its keys; drop the option")
    if split_name is None and source.splits is None and "split" in everything and o.target != "split":
        split_name = "split"
    if split_name is not None and o.split_fractions is not None:
        raise option_error(f"split_fractions: the split array {split_name!r} defines the splits; drop one of the two")
    split_column = column(split_name, "split") if split_name is not None else None

    not_modalities = {o.target, split_name, o.stats_split, "split"}
    names = list(o.modalities or [n for n in everything if n not in not_modalities])
    if not names:
        problems.append(f"{source.path} has no modality arrays besides the target and split ({everything})")
    zscored = set(names) if o.zscore is True else set() if o.zscore is False else set(o.zscore)
    for option, keys, allowed in (("kinds", o.kinds, names), ("zscore", zscored, names), ("stats", o.stats, zscored)):
        stray = sorted(set(keys) - set(allowed))
        if stray:
            what = "z-scored modalities" if option == "stats" else "modalities"
            raise option_error(f"{option} names {stray}, which are not {what} {sorted(allowed)}")
    columns = {name: c for name in names if (c := column(name, "modality")) is not None}

    used = {n: c for n, c in [(o.target, target_column), (split_name, split_column), *columns.items()] if n and c}
    if used:
        reference, first = next(iter(used.items()))
        for name, c in used.items():
            if c.shape[0] != first.shape[0]:
                problems.append(
                    f"array {name!r} has {c.shape[0]} rows but {reference!r} has {first.shape[0]}; every array "
                    "needs one row per sample"
                )
    layouts: dict[str, Layout] = {}
    for name, c in columns.items():
        if c.dtype.kind not in "iubf":
            what = "strings" if c.dtype.kind in "USO" else f"{c.dtype} values"
            problems.append(f"modality array {name!r} holds {what} (dtype {c.dtype}); a modality must be numeric")
            continue
        try:
            layouts[name] = layout(name, c.shape[1:], o.kinds.get(name))
        except DataError as err:
            problems.append(str(err))

    task, target = None, None
    if target_column is not None:
        target = column_values(target_column)
        task, found = target_task(target, o.target, o.task, o.num_classes)
        problems += found
    rows = _split_rows(source, o, split_name, split_column, problems)
    stats_rows = rows["train"] if rows is not None else None
    if o.stats_split is not None and (stats_column := column(o.stats_split, "stats_split")) is not None:
        codes, found = split_codes(column_values(stats_column), o.stats_split)
        problems += found
        stats_rows = np.flatnonzero(codes == 0)
        if not found and not stats_rows.size:
            problems.append(f"stats_split array {o.stats_split!r} has no train rows to take statistics from")
    return Findings(source, o, split_name, columns, layouts, task, target, rows, stats_rows, problems)


def _split_rows(
    source: Source, o: ArraysOptions, name: str | None, column: Column | None, problems: list[str]
) -> dict[str, np.ndarray] | None:
    if source.splits is not None:
        codes = split_codes(source.splits, "DatasetDict keys")[0]
    elif name is not None:
        if column is None:
            return None
        codes, found = split_codes(column_values(column), name)
        problems += found
        if found:
            return None
    elif o.target not in source.columns:
        return None  # the missing target is the problem; no rows to split
    else:
        codes = random_split(source.columns[o.target].shape[0], o.split_fractions or DEFAULT_FRACTIONS, o.seed)
    rows = {split: np.flatnonzero(codes == code) for code, split in enumerate(SPLITS)}
    for split, found_rows in rows.items():
        if not found_rows.size:
            how = f"split array {name!r}" if name else f"split_fractions {list(o.split_fractions or DEFAULT_FRACTIONS)}"
            problems.append(f"split {split!r} has no rows ({how}); every split needs at least one")
    return rows


def _target_tensor_values(target: np.ndarray, task: TaskSpec) -> np.ndarray:
    if task.kind == "regression":
        return target.reshape(len(target)).astype(np.float32)
    if task.kind == "multilabel":
        return target.astype(np.float32)
    if task.kind == "classification":
        return target.reshape(len(target)).astype(np.int64)
    return target.astype(np.int64)


def make_plan(options: Mapping[str, Any]) -> Plan:
    """Open the data of `options` and decide the load; every problem found is one DataError."""
    o = ArraysOptions.parse(options)
    f = inspect_source(open_source(o.path, o.wanted()), o)
    if f.problems or f.task is None or f.target is None or f.rows is None or f.stats_rows is None:
        if len(f.problems) == 1:
            raise DataError(f"{f.problems[0]} (see `dynmm data check {o.path} --format arrays`)")
        listed = "\n".join(f"- {p}" for p in f.problems)
        raise DataError(f"{o.path} cannot be loaded (`dynmm data check {o.path} --format arrays`):\n{listed}")
    return Plan(f.source, o, f.layouts, f.task, _target_tensor_values(f.target, f.task), f.rows, f.stats_rows)


def chunks(rows: np.ndarray, row_size: int) -> list[np.ndarray]:
    """`rows` cut into pieces of about CHUNK_VALUES values."""
    step = max(1, CHUNK_VALUES // max(row_size, 1))
    return [rows[i : i + step] for i in range(0, len(rows), step)]
