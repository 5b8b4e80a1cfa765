"""Files in exactly the format of MultiBench's `multimodal_imdb.hdf5`, kept tiny.

Why: the real file is ~450 MB. Here the datasets have the real full shapes (25959 rows) but are chunked with a
fill value, so unwritten chunks take no space; seeded random values go into a few rows per split only. The
layout numbers are written out again here (not imported from the loader), so a wrong constant there fails.
Options produce the broken variants the checks must catch (a missing key, a wrong width, a wrong row count).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import h5py
import numpy as np

ROWS = 25959
SPLITS = {"train": (0, 15552), "valid": (15552, 18160), "test": (18160, 25959)}
WIDTHS = {"features": 300, "vgg_features": 4096, "genres": 23}
FEATURE_KEYS = ("features", "vgg_features")
CHUNK_ROWS = 16


def default_filled_rows(per_split: int = 64, last: int = 2) -> list[int]:
    """The first `per_split` and the last `last` rows of each split (the last ones test the boundaries)."""
    rows: set[int] = set()
    for lo, hi in SPLITS.values():
        rows.update(range(lo, min(hi, lo + per_split)))
        rows.update(range(max(lo, hi - last), hi))
    return sorted(rows)


def feature_rows(key: str, rows: Iterable[int], seed: int = 0, width: int | None = None) -> np.ndarray:
    """The float32 values the fixture writes into `rows` of `key`: a function of (seed, key, row) alone.
    Text: small normal values (as word2vec averages are); image: non-negative (as post-ReLU VGG activations)."""
    rows, width = list(rows), width or WIDTHS[key]
    out = np.empty((len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
        rng = np.random.default_rng((seed, FEATURE_KEYS.index(key), row))
        x = rng.normal(size=width)
        out[i] = 0.05 * x if key == "features" else 2.0 * np.maximum(x, 0.0)
    return out


def genre_matrix(rows: int = ROWS, seed: int = 0, dtype: str = "int8", width: int = WIDTHS["genres"]) -> np.ndarray:
    """The 0/1 genres the fixture writes: every row, about 15 % positives (every genre occurs in train)."""
    rng = np.random.default_rng((seed, 99))
    return (rng.random((rows, width)) < 0.15).astype(dtype)


def write_mmimdb_fixture(
    path: Path,
    filled_rows: Collection[int] | None = None,
    *,
    seed: int = 0,
    rows: int = ROWS,
    widths: Mapping[str, int] | None = None,
    drop: Collection[str] = (),
    genres_dtype: str = "int8",
) -> Path:
    """Write a file shaped like `multimodal_imdb.hdf5` to `path` and return `path`.

    `filled_rows`: rows of the feature datasets that get `feature_rows` values (default: `default_filled_rows()`);
    every other row reads as 0. Broken variants: `rows` (row count), `widths` (key -> second dimension), `drop`
    (keys left out).
    """
    widths = {**WIDTHS, **(widths or {})}
    filled = sorted(r for r in (default_filled_rows() if filled_rows is None else filled_rows) if r < rows)
    with h5py.File(path, "w") as f:
        for key in FEATURE_KEYS:
            if key in drop:
                continue
            data = f.create_dataset(
                key, shape=(rows, widths[key]), dtype="float32", chunks=(CHUNK_ROWS, widths[key]), fillvalue=0.0
            )
            if filled:
                data[filled] = feature_rows(key, filled, seed, widths[key])
        if "genres" not in drop:
            f.create_dataset("genres", data=genre_matrix(rows, seed, genres_dtype, widths["genres"]))
    return path
