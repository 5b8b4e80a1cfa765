"""Random data files of the papers' real sizes, in exactly the on-disk formats dynmm's loaders read.

Why: `dynmm bench paper-size` runs each paper setup on data of the real row counts and shapes to measure
throughput and memory without the (unbundled) originals. Values are random; only sizes, shapes, dtypes and
layout matter. Every file is written in chunks (rows or frames at a time), so the generator never holds a
whole file in memory. Files are cached per setup under the work folder; `generated.json` records what was
written, and a second run with the same parameters reuses the files.

`rows_fraction` < 1 scales the row counts down (tests). MM-IMDB's split boundaries are fixed by the file's
25,959 rows, so there it keeps the full shape and writes values only into the first fraction of the rows (the
HDF5 chunks of the rest are never allocated and read as zeros).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from dynmm.data import affect, avmnist, mmimdb, nyuv2_formats
from dynmm.errors import ConfigError, DataError
from dynmm.io import atomic_write_json, read_json
from dynmm.methods.paper_size_pickle import StreamedArray, dump_streamed

FORMAT_VERSION = 1
"""Bumped whenever a generator's output changes, so that cached files of an older layout are rewritten."""
CHUNK_BYTES = 64 * 2**20
"""About how many bytes of values one chunk holds while a file is written."""
MOSEI_SPLITS = {"train": 16_326, "valid": 1_871, "test": 4_659}
AFFECT_STEPS = 50
AFFECT_WIDTHS = {"text": 300, "audio": 74, "vision": 35}
"""MultiBench's word-aligned CMU-MOSEI pickle: 50 steps of GloVe text, COVAREP audio and Facet vision."""
AVMNIST_ROWS = {"train": 60_000, "test": 10_000}
MAT_USERBLOCK = 512
"""MATLAB v7.3 files are HDF5 with a 512-byte user block that holds MATLAB's text header."""


@dataclass
class Generated:
    """What was written for one setup: the data options that point the setup's loader at it, and its sizes."""

    setup: str
    dataset: str
    options: dict[str, Any]
    rows: dict[str, int]
    shapes: dict[str, list[int]]
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    key: dict[str, Any] = field(default_factory=dict)


def _scaled(n: int, fraction: float, least: int = 2) -> int:
    return n if fraction == 1.0 else max(least, round(n * fraction))


def _row_chunks(
    rows: int, row_shape: tuple[int, ...], make: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray], seed: int
) -> Iterator[np.ndarray]:
    """`rows` rows of `row_shape` from `make(rng, shape)`, about CHUNK_BYTES at a time."""
    rng = np.random.default_rng(seed)
    per_row = max(1, int(np.prod(row_shape)) * 4)
    step = max(1, CHUNK_BYTES // per_row)
    for start in range(0, rows, step):
        yield make(rng, (min(step, rows - start), *row_shape))


def _uniform(low: float, high: float) -> Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]:
    return lambda rng, shape: rng.uniform(low, high, shape).astype(np.float32)


def _integers(high: int, dtype: type) -> Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]:
    return lambda rng, shape: rng.integers(0, high, shape).astype(dtype)


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


# ---------------------------------------------------------------------------------------------- MM-IMDB


def _mmimdb(folder: Path, fraction: float) -> Generated:
    """MultiBench's multimodal_imdb.hdf5: features (25959, 300), vgg_features (25959, 4096) float32, genres."""
    path = folder / "multimodal_imdb.hdf5"
    written = _scaled(mmimdb.ROWS, fraction, least=mmimdb.CHECK_ROWS)
    with h5py.File(path, "w") as f:
        for i, (key, width) in enumerate(mmimdb.MODALITIES.values()):
            chunk_rows = max(1, 2**20 // (width * 4))
            data = f.create_dataset(key, (mmimdb.ROWS, width), np.float32, chunks=(chunk_rows, width), fillvalue=0)
            start = 0
            for block in _row_chunks(written, (width,), _uniform(-1.0, 1.0), seed=i):
                data[start : start + len(block)] = block
                start += len(block)
        genres = np.random.default_rng(9).random((mmimdb.ROWS, mmimdb.NUM_GENRES)) < 0.2
        f.create_dataset(mmimdb.TARGET_KEY, data=genres.astype(np.int8))
    shapes = {m: [width] for m, (_, width) in mmimdb.MODALITIES.items()}
    rows = {split: hi - lo for split, (lo, hi) in mmimdb.SPLITS.items()}
    return Generated("", "mmimdb", {"path": str(path)}, rows, shapes, [str(path)], _size([path]))


# ---------------------------------------------------------------------------------------------- CMU-MOSEI


def _mosei(folder: Path, fraction: float) -> Generated:
    """MultiBench's mosei_senti_data.pkl: {train, valid, test} × {text, audio, vision (N, 50, F), labels, id}."""
    path = folder / "mosei_senti_data.pkl"
    rows = {split: _scaled(n, fraction) for split, n in MOSEI_SPLITS.items()}
    data: dict[str, Any] = {}
    for s, (split, n) in enumerate(rows.items()):
        arrays: dict[str, Any] = {}
        for m, (modality, width) in enumerate(AFFECT_WIDTHS.items()):
            shape = (AFFECT_STEPS, width)

            def chunks(n: int = n, shape: tuple[int, ...] = shape, seed: int = 10 * s + m) -> Iterator[np.ndarray]:
                return _row_chunks(n, shape, _uniform(-1.0, 1.0), seed)

            arrays[modality] = StreamedArray((n, *shape), np.float32, chunks)
        arrays["labels"] = np.random.default_rng(100 + s).uniform(*affect.LABEL_RANGE, (n, 1, 1)).astype(np.float32)
        arrays["id"] = np.array([f"{split}_{i}" for i in range(n)])
        data[split] = arrays
    size = dump_streamed(data, path)
    shapes = {m: [AFFECT_STEPS, w] for m, w in AFFECT_WIDTHS.items()}
    return Generated("", "affect", {"path": str(path)}, rows, shapes, [str(path)], size)


# ---------------------------------------------------------------------------------------------- NYUv2


def _nyuv2(folder: Path, fraction: float) -> Generated:
    """The official nyu_depth_v2_labeled.mat (v7.3: HDF5 as h5py shows it, transposed) with classMapping40.mat
    and splits.mat beside it; 480×640 frames, the standard 795 / 654 split (scaled by `fraction`)."""
    sizes = {s: _scaled(n, fraction, least=1) for s, n in nyuv2_formats.OFFICIAL_SPLIT_SIZES.items()}
    frames = sum(sizes.values())
    height, width = nyuv2_formats.OFFICIAL_SIZE
    mat = folder / nyuv2_formats.MAT_NAME
    with h5py.File(mat, "w", userblock_size=MAT_USERBLOCK) as f:
        layout = (
            ("images", (3, width, height), np.uint8, _integers(256, np.uint8)),
            ("depths", (width, height), np.float32, _uniform(0.5, 9.5)),
            ("labels", (width, height), np.uint16, _integers(nyuv2_formats.RAW_CLASSES + 1, np.uint16)),
        )
        for i, (key, frame, dtype, make) in enumerate(layout):
            data = f.create_dataset(key, (frames, *frame), dtype, chunks=(1, *frame))
            start = 0
            for block in _row_chunks(frames, data.shape[1:], make, seed=20 + i):
                data[start : start + len(block)] = block
                start += len(block)
    with mat.open("r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, written by dynmm bench paper-size (random values)".ljust(128))
    rng = np.random.default_rng(30)
    mapping = folder / nyuv2_formats.MAPPING_NAME
    scipy.io.savemat(mapping, {nyuv2_formats.MAPPING_KEY: rng.integers(1, 41, (1, nyuv2_formats.RAW_CLASSES))})
    order = rng.permutation(frames) + 1
    split_ids = {"train": np.sort(order[: sizes["train"]]), "test": np.sort(order[sizes["train"] :])}
    splits = folder / nyuv2_formats.SPLITS_NAME
    scipy.io.savemat(splits, {nyuv2_formats.SPLIT_KEYS[s]: ids.reshape(-1, 1) for s, ids in split_ids.items()})
    paths = [mat, mapping, splits]
    shapes = {"rgb": [3, height, width], "depth": [1, height, width]}
    rows = {"train": sizes["train"], "valid": sizes["test"], "test": sizes["test"]}
    return Generated("", "nyuv2", {"path": str(mat)}, rows, shapes, [str(p) for p in paths], _size(paths))


# ---------------------------------------------------------------------------------------------- AV-MNIST


def _write_npy(path: Path, shape: tuple[int, ...], dtype: type, chunks: Iterator[np.ndarray]) -> None:
    """A .npy file written header first, then row chunks (np.save needs the whole array)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    written = 0
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for chunk in chunks:
            block: np.ndarray = np.ascontiguousarray(chunk, dtype=dtype)
            handle.write(block.data)
            written += block.nbytes
    if written != expected:
        raise DataError(f"{path}: wrote {written} bytes of values, expected {expected}")


def _avmnist(folder: Path, fraction: float) -> Generated:
    """MultiBench's AV-MNIST folder: image/{train,test}_data.npy (N, 784), audio/... (N, 112, 112) float32 in
    0..255, {train,test}_labels.npy (N,) int64; valid = the last 5,000 train rows (scaled by `fraction`)."""
    counts = {pool: _scaled(n, fraction, least=20) for pool, n in AVMNIST_ROWS.items()}
    valid = _scaled(avmnist.DEFAULT_VALID_SIZE, fraction, least=10)
    paths = []
    for p, (pool, n) in enumerate(counts.items()):
        for role, row_shape in (("image", (784,)), ("audio", (112, 112))):
            path = folder / role / f"{pool}_data.npy"
            seed = 40 + 2 * p + (role == "audio")
            _write_npy(path, (n, *row_shape), np.float32, _row_chunks(n, row_shape, _integers(256, np.float32), seed))
            paths.append(path)
        labels = folder / f"{pool}_labels.npy"
        _write_npy(labels, (n,), np.int64, iter([np.arange(n) % 10]))
        paths.append(labels)
    options = {"path": str(folder)} | ({} if valid == avmnist.DEFAULT_VALID_SIZE else {"valid_size": valid})
    rows = {"train": counts["train"] - valid, "valid": valid, "test": counts["test"]}
    shapes = {"image": list(avmnist.IMAGE_SHAPE), "audio": list(avmnist.AUDIO_SHAPE)}
    return Generated("", "avmnist", options, rows, shapes, [str(p) for p in paths], _size(paths))


# ---------------------------------------------------------------------------------------------- AV clips


AVCLIPS_SEGMENTS = 8
"""AdaMML's segments per clip (the paper samples 8 segments per video at test time)."""


def _avclips(folder: Path, fraction: float) -> Generated:
    """No files: AV digit clips are generated in memory by their loader; only the options are set (8 segments,
    the config's clip counts scaled by `fraction`)."""
    from dynmm.data.audio import num_frames
    from dynmm.data.avclips import HOP_LENGTH, AVClipsOptions

    defaults = AVClipsOptions()
    sizes = {s: _scaled(getattr(defaults, f"{s}_size"), fraction, least=4) for s in ("train", "valid", "test")}
    options: dict[str, Any] = {"segments": AVCLIPS_SEGMENTS}
    if fraction != 1.0:
        options |= {f"{s}_size": n for s, n in sizes.items()}
    shapes = {
        "image": [AVCLIPS_SEGMENTS, 1, 28, 28],
        "audio": [AVCLIPS_SEGMENTS, 1, defaults.n_mels, num_frames(defaults.clip_samples, HOP_LENGTH)],
    }
    return Generated("", "avclips", options, sizes, shapes)


GENERATORS: dict[str, Callable[[Path, float], Generated]] = {
    "mmimdb": _mmimdb,
    "mosei": _mosei,
    "nyuv2": _nyuv2,
    "avmnist": _avmnist,
    "avclips_adamml": _avclips,
}
"""Paper setup (a key of dynmm.methods.paper_costs.SETUPS) -> the generator of its data."""


def _cached(marker: Path, key: dict[str, Any]) -> Generated | None:
    if not marker.is_file():
        return None
    try:
        found = Generated(**read_json(marker, "the record of generated paper-size data"))
    except (DataError, TypeError):
        return None
    files = [Path(p) for p in found.files]
    if found.key != key or not all(p.is_file() for p in files) or _size(files) != found.bytes:
        return None
    return found


def generate(setup: str, workdir: Path, rows_fraction: float = 1.0) -> Generated:
    """The data of `setup` under `workdir/<setup>/`: reused when a previous call wrote the same, else written."""
    if setup not in GENERATORS:
        raise ConfigError(
            f"no paper-size data generator for setup {setup!r}; generators exist for {sorted(GENERATORS)}"
        )
    if not 0.0 < rows_fraction <= 1.0:
        raise ConfigError(f"rows_fraction must be in (0, 1], got {rows_fraction}")
    folder = workdir / setup
    marker = folder / "generated.json"
    key = {"format_version": FORMAT_VERSION, "rows_fraction": rows_fraction}
    found = _cached(marker, key)
    if found is not None:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    made = GENERATORS[setup](folder, rows_fraction)
    made.setup, made.key = setup, key
    atomic_write_json(marker, asdict(made))
    return made
