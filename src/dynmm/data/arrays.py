"""`data.name: arrays`: a researcher's own data, one array (or column) per modality plus a target, without
editing dynmm.

Layouts (`arrays_sources`): an `.npz` file, a folder of `.npy` files, a parquet file, or a Hugging Face
`datasets` folder written by `save_to_disk`. The first axis of every array is the sample. Memory: `.npy` files,
uncompressed `.npz` members (`np.savez`) and `datasets` folders are memory-mapped and read per batch (a
`LazyRows` modality); compressed `.npz` members and parquet columns are read into memory.

Options (`data.options`; `arrays_plan` checks them and decides what a load reads):
- `path` (required); `target` (default "target"); `split`: the split array, strings train/valid/test (also
  validation/val) or integers 0/1/2 (default: "split" if there is one). Without a split array, a seeded random
  split by `split_fractions` (default [0.8, 0.1, 0.1]) with `seed` (the run seed). A DatasetDict's keys are its
  splits.
- `task`: classification (integer target, default), regression (float target, default), multilabel ((N, K)
  integer 0/1 target, default) or segmentation ((N, H, W) integer target, default; 255 = unlabelled);
  `num_classes` (default: from the target).
- `modalities` (default: every array except target and split); `kinds` {modality: vector | sequence | image}
  (default from the row's shape: (D,) vector, (T, F) sequence, (C, H, W) image, (T, C, H, W) image segments as
  AdaMML reads them; a scalar per row is a vector (1,)). An override reshapes: vector flattens a row, sequence
  keeps the first axis and flattens the rest, image adds a channel axis to an (H, W) row.
- `zscore` (default true; false, or a list of modalities): z-score with statistics of the train rows (of the
  split array `stats_split` if set, e.g. to train a DynMM gate on other rows than the experts but scale its
  inputs as the experts saw them). Statistics are per feature of a vector, per feature (last axis) of a
  sequence, per channel of an image (axis C of (C, H, W) and (T, C, H, W)): a vector's features have unrelated
  units, so one global scale would leave the large-valued ones dominating (StandardScaler and the MOSI loader
  do the same); images and sequences share a channel's statistics over positions (torchvision's Normalize
  convention), which keeps spatial contrast and keeps the recorded statistics small. Population std (ddof 0);
  a channel constant on the train rows is centred, not scaled (std 1).
- `stats` {modality: {mean, std}} (floats or per-channel lists): statistics to use instead of computing them.
  `resolve_arrays_options` fills them in once (the data module calls it through the registry), so a run's
  exported model.json records them and `dynmm eval` / export reuse the very same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dynmm.data.arrays_plan import (
    NAME,
    Layout,
    Plan,
    chunks,
    column_values,
    make_plan,
    option_error,
)
from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.lazy import LazyRows
from dynmm.data.npy_rows import release_mapped_pages
from dynmm.errors import DataError
from dynmm.specs import ModalitySpec

# --- z-scoring ---------------------------------------------------------------------------------------------------


def channel_values(x: np.ndarray, lay: Layout) -> np.ndarray:
    """Rows read from the file as (values, channels) float64, for per-channel statistics."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), *lay.row_shape)
    return np.moveaxis(x, 1 + lay.axis, -1).reshape(-1, lay.channels)


def compute_stats(plan: Plan, name: str) -> dict[str, list[float]]:
    """Per-channel mean and population std of modality `name` over the train rows (of `stats_split` if set), in
    one chunked pass (Chan et al.'s pairwise update, stable for large means); a channel constant on those rows
    gets std 1. NaN/inf values there are a DataError naming the first rows."""
    lay = plan.layouts[name]
    column = plan.source.columns[lay.column]
    count = 0
    mean = np.zeros(lay.channels)
    m2 = np.zeros(lay.channels)
    low, high = np.full(lay.channels, np.inf), np.full(lay.channels, -np.inf)
    for part in chunks(plan.stats_rows, int(np.prod(lay.row_shape))):
        x = channel_values(column_values(column, part), lay)
        if not np.isfinite(x).all():
            bad = ~np.isfinite(np.asarray(column_values(column, part), dtype=np.float64).reshape(len(part), -1)).all(1)
            raise DataError(
                f"{plan.options.path}: modality {name!r} has NaN/inf values in train rows {part[bad][:5].tolist()}; "
                f"see `dynmm data check {plan.options.path} --format arrays`"
            )
        n, chunk_mean = x.shape[0], x.mean(0)
        chunk_m2 = ((x - chunk_mean) ** 2).sum(0)
        delta, total = chunk_mean - mean, count + n
        mean = mean + delta * n / total
        m2 = m2 + chunk_m2 + delta**2 * count * n / total
        count = total
        low, high = np.minimum(low, x.min(0)), np.maximum(high, x.max(0))
        release_mapped_pages(column.values)  # a pass over a multi-GB file must not stay resident
    std = np.sqrt(m2 / max(count, 1))
    std = np.where(low == high, 1.0, std)
    return {"mean": mean.tolist(), "std": std.tolist()}


def _affine(plan: Plan, name: str) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(scale, shift) for `(x + shift) * scale` = (x - mean) / std, from the recorded statistics of `name`."""
    if name not in plan.options.stats:
        return 1.0, 0.0
    lay = plan.layouts[name]
    parts = []
    for key in ("mean", "std"):
        raw = plan.options.stats[name][key]
        try:
            values = np.broadcast_to(np.asarray(raw, dtype=np.float64), (lay.channels,))
        except (ValueError, TypeError):
            raise option_error(
                f"stats.{name}.{key} must be a number or {lay.channels} numbers (one per channel), got {raw!r}"
            ) from None
        parts.append(values)
    mean, std = parts
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise option_error(f"stats.{name} must hold finite means and positive stds")
    return lay.broadcast(1.0 / std), lay.broadcast(-mean)


def _resolved(options: Mapping[str, Any]) -> tuple[dict[str, Any], Plan]:
    plan = make_plan(options)
    o = plan.options
    zscored = list(plan.layouts) if o.zscore is True else [] if o.zscore is False else list(o.zscore)
    missing = [name for name in zscored if name not in o.stats]
    if not missing:
        return dict(options), plan
    computed = {**o.stats, **{name: compute_stats(plan, name) for name in missing}}
    stats = {name: computed[name] for name in zscored}
    plan.options = replace(o, stats=stats)
    return {**options, "stats": stats}, plan


def resolve_arrays_options(**options: Any) -> dict[str, Any]:
    """`options` with `stats` filled in for every z-scored modality that has none, computed once on the train
    rows: the data module records them, so evaluation and export of the run reuse the same numbers."""
    return _resolved(options)[0]


# --- load / info ---------------------------------------------------------------------------------------------------


def _modality(plan: Plan, name: str, rows: np.ndarray) -> Tensor | LazyRows:
    lay = plan.layouts[name]
    column = plan.source.columns[lay.column]
    scale, shift = _affine(plan, name)
    if column.lazy is not None:
        return column.lazy(rows, lay.row_shape, scale, shift)
    out = np.asarray(column_values(column, rows), dtype=np.float32).reshape(len(rows), *lay.row_shape).copy()
    out += shift
    out *= scale
    return torch.from_numpy(out)


def load_arrays(**options: Any) -> dict[str, MultimodalDataset]:
    """Train/valid/test of the user's arrays (options: see the module docstring). Memory-mapped layouts (.npy
    folder, uncompressed .npz members, datasets folders) give `LazyRows` modalities read per batch; parquet and
    compressed .npz members are tensors. Z-scoring uses `stats` when given, else computes them."""
    plan = _resolved(options)[1]
    return {
        split: MultimodalDataset(
            {name: _modality(plan, name, rows) for name in plan.layouts},
            torch.from_numpy(plan.target[rows]),
        )
        for split, rows in plan.rows.items()
    }


def arrays_info(**options: Any) -> DatasetInfo:
    """Modalities (shapes, kinds), task and split sizes; reads the target and split, not the modalities."""
    plan = make_plan(options)
    modalities = {
        name: ModalitySpec(name, lay.row_shape, lay.kind)  # type: ignore[arg-type]
        for name, lay in plan.layouts.items()
    }
    return DatasetInfo(NAME, modalities, plan.task, {split: len(rows) for split, rows in plan.rows.items()})
