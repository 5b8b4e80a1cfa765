"""Readers of NYUv2's two on-disk formats: the official `.mat` (v7.3 / HDF5) and ESANet's folders of PNGs.

Both give one frame at a time in the same form, so the loader (`dynmm.data.nyuv2`, which documents the formats)
and the check treat them alike: rgb (3, H, W) uint8, depth (H, W) float32 metres, labels (H, W) in 0..40
(0 = void, 1..40 the standard 40 classes). Readers hold no open handle when pickled (a DataLoader worker opens
its own; h5py handles must not cross a fork).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
from PIL import Image

from dynmm.data.check import CheckReport
from dynmm.errors import DataError

MAT_NAME = "nyu_depth_v2_labeled.mat"
MAPPING_NAME = "classMapping40.mat"
SPLITS_NAME = "splits.mat"
MAPPING_KEY = "mapClass"
SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}
MAT_KEYS = {"rgb": "images", "depth": "depths", "raw_depth": "rawDepths", "labels": "labels"}
"""HDF5 dataset of each kind in the `.mat`; h5py shows MATLAB's arrays transposed: images (N, 3, W, H),
the others (N, W, H)."""

ESANET_LISTS = {"train": "train.txt", "test": "test.txt"}
ESANET_DIRS = {"rgb": "rgb", "depth": "depth", "raw_depth": "depth_raw", "labels": "labels_40"}
"""Folder of each kind under `<root>/<split>/`; every sample is `<name>.png` in each."""

OFFICIAL_FRAMES = 1449
OFFICIAL_SPLIT_SIZES = {"train": 795, "test": 654}
OFFICIAL_SIZE = (480, 640)
RAW_CLASSES = 894
NUM_CLASSES = 40
MAX_DEPTH_M = 10.0
"""Kinect depth beyond this is implausible (NYUv2's maps stay below ~10 m)."""

DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I")
"""PIL modes of a 16-bit greyscale PNG (current Pillow opens it as I;16; some versions give I)."""
LABEL_MODES = ("L", "P")
"""8-bit greyscale, or palette PNGs such as ESANet's labels_40_colored (their indices are the labels)."""
_CHUNK_CACHE = 32 * 2**20
"""HDF5 chunk cache per dataset (h5py's default is 1 MiB): room for the chunks a frame spans however the
file was chunked, so reading the next frame of the same chunks does not decompress them again."""


# ---------------------------------------------------------------------------------------------- small files


def _loadmat(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{what} file {path} is missing (it comes with the NYUv2 toolbox; put it beside the .mat)")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as err:  # v7.3 files are HDF5, which loadmat refuses
        raise DataError(f"{what} file {path} is not a MATLAB v5 .mat file ({err})") from err
    except (ValueError, OSError, TypeError) as err:
        raise DataError(f"{what} file {path} cannot be read as a MATLAB .mat file: {err}") from err


def _integers(values: Any, where: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "iuf" or array.size == 0:
        raise DataError(f"{where} must be a non-empty numeric array, got {array.dtype} {array.shape}")
    flat = array.reshape(-1).astype(np.float64)
    if not np.all(np.isfinite(flat)) or not np.all(flat == np.round(flat)):
        raise DataError(f"{where} must hold whole numbers")
    return flat.astype(np.int64)


def read_mapping(path: Path) -> np.ndarray:
    """`mapClass` of classMapping40.mat: (894,) class in 1..40 of each original class id - 1."""
    data = _loadmat(path, "class mapping")
    if MAPPING_KEY not in data:
        keys = sorted(k for k in data if not k.startswith("__"))
        raise DataError(f"class mapping file {path} has no variable {MAPPING_KEY!r}; it has {keys}")
    mapping = _integers(data[MAPPING_KEY], f"{path}:{MAPPING_KEY}")
    if mapping.size != RAW_CLASSES:
        raise DataError(
            f"{path}:{MAPPING_KEY} must have {RAW_CLASSES} entries (one per NYUv2 class), got {mapping.size}"
        )
    if mapping.min() < 1 or mapping.max() > NUM_CLASSES:
        raise DataError(
            f"{path}:{MAPPING_KEY} must map into 1..{NUM_CLASSES}, got values {mapping.min()}..{mapping.max()}"
        )
    return mapping


def label_lookup(mapping: np.ndarray) -> np.ndarray:
    """(895,) uint8 table: original label (0 = unlabeled, 1..894) -> 0 (void) or 1..40."""
    return np.concatenate([[0], mapping]).astype(np.uint8)


def read_splits(path: Path, frames: int | None = None) -> dict[str, np.ndarray]:
    """trainNdxs / testNdxs of splits.mat as 1-based frame indices (distinct, disjoint, within 1..frames)."""
    data = _loadmat(path, "splits")
    out: dict[str, np.ndarray] = {}
    for split, key in SPLIT_KEYS.items():
        if key not in data:
            keys = sorted(k for k in data if not k.startswith("__"))
            raise DataError(f"splits file {path} has no variable {key!r}; it has {keys}")
        ids = _integers(data[key], f"{path}:{key}")
        high = frames if frames is not None else np.iinfo(np.int64).max
        if ids.min() < 1 or ids.max() > high:
            bound = f"1..{frames}" if frames is not None else ">= 1"
            raise DataError(f"{path}:{key} holds 1-based frame indices {bound}, got {ids.min()}..{ids.max()}")
        if np.unique(ids).size != ids.size:
            raise DataError(f"{path}:{key} lists {ids.size - np.unique(ids).size} frame(s) more than once")
        out[split] = ids
    both = np.intersect1d(out["train"], out["test"])
    if both.size:
        raise DataError(f"{path}: {both.size} frame(s) are in both trainNdxs and testNdxs, e.g. {both[:5].tolist()}")
    return out


def read_list(path: Path) -> list[str]:
    """Sample names of an ESANet split list (one per line, e.g. `0003`)."""
    if not path.is_file():
        raise DataError(f"split list {path} is missing (ESANet's prepare_dataset.py writes train.txt and test.txt)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"split list {path} names no samples")
    if len(set(names)) != len(names):
        raise DataError(f"split list {path} names {len(names) - len(set(names))} sample(s) more than once")
    return names


# ---------------------------------------------------------------------------------------------- frames


def read_png(path: Path, kind: str) -> np.ndarray:
    """One ESANet PNG: rgb (H, W, 3) uint8, depth (H, W) uint16 millimetres, labels (H, W) uint8."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except FileNotFoundError as err:
        raise DataError(f"{kind} image {path} is missing") from err
    except OSError as err:
        raise DataError(f"{kind} image {path} cannot be read as a PNG: {err}") from err
    if kind == "rgb" and mode != "RGB":
        raise DataError(f"rgb image {path} must be 8-bit RGB (PIL mode 'RGB'), got mode {mode!r}")
    if kind == "depth":
        if mode not in DEPTH_MODES or (mode == "I" and (array.min() < 0 or array.max() > 65535)):
            raise DataError(f"depth image {path} must be a 16-bit greyscale PNG in millimetres, got mode {mode!r}")
        return array.astype(np.uint16)
    if kind == "labels" and mode not in LABEL_MODES:
        raise DataError(f"label image {path} must be 8-bit greyscale (mode 'L') with 0..40, got mode {mode!r}")
    return array


class MatFrames:
    """Frames of the official `.mat`, read one at a time; labels mapped 894 -> 40 through `lookup`."""

    def __init__(self, path: Path, lookup: np.ndarray, raw_depth: bool = False) -> None:
        self.path, self.lookup = path, lookup
        self.depth_key = MAT_KEYS["raw_depth" if raw_depth else "depth"]
        self._file: h5py.File | None = None
        self._pid = -1
        self.frames, self.size = validate_mat(path, self.depth_key)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": -1}

    def _data(self, key: str) -> Any:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r", rdcc_nbytes=_CHUNK_CACHE)
            self._pid = os.getpid()
        return self._file[key]

    def rgb(self, frame: int) -> np.ndarray:
        return np.asarray(self._data(MAT_KEYS["rgb"])[frame]).transpose(0, 2, 1)

    def depth(self, frame: int) -> np.ndarray:
        return np.asarray(self._data(self.depth_key)[frame], dtype=np.float32).T

    def labels(self, frame: int) -> np.ndarray:
        raw = np.asarray(self._data(MAT_KEYS["labels"])[frame]).T
        if raw.max(initial=0) > RAW_CLASSES:
            raise DataError(f"{self.path}:labels frame {frame + 1} has label {raw.max()} > {RAW_CLASSES}")
        return self.lookup[raw]


def _open_mat(path: Path) -> h5py.File:
    """The .mat opened read-only; a file h5py cannot open (e.g. cut short after its header) is a DataError."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path} cannot be read as HDF5 ({err}); is the file truncated? download it again") from None


def validate_mat(path: Path, depth_key: str = MAT_KEYS["depth"]) -> tuple[int, tuple[int, int]]:
    """(frames, (H, W)) of a `.mat`, after checking its datasets' presence, ranks and agreement."""
    if not h5py.is_hdf5(path):
        raise DataError(f"{path} is not a MATLAB v7.3 (HDF5) file; {_not_hdf5(path)}")
    with _open_mat(path) as f:
        keys = (MAT_KEYS["rgb"], depth_key, MAT_KEYS["labels"])
        missing = [k for k in keys if k not in f or not isinstance(f[k], h5py.Dataset)]
        if missing:
            raise DataError(f"{path} has no dataset(s) {missing}; it has {sorted(f.keys())}")
        images, depth, labels = (f[k] for k in keys)
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"{path}:images must be (frames, 3, W, H) as h5py shows it, got {images.shape}")
        for ds in (depth, labels):
            if ds.shape != (images.shape[0], *images.shape[2:]):
                raise DataError(f"{path}:{ds.name[1:]} must be {(images.shape[0], *images.shape[2:])}, got {ds.shape}")
        if labels.dtype.kind not in "iu":
            raise DataError(f"{path}:labels must hold integers (uint16 class ids), got {labels.dtype}")
        return int(images.shape[0]), (int(images.shape[3]), int(images.shape[2]))


def _not_hdf5(path: Path) -> str:
    if not path.is_file():
        return "the file does not exist"
    with open(path, "rb") as f:
        head = f.read(20)
    if head.startswith(b"MATLAB 5.0"):
        return "it is a MATLAB v5 file; the official nyu_depth_v2_labeled.mat is v7.3"
    return "its header is not HDF5"


class EsanetFrames:
    """Frames of one ESANet split folder `<root>/<split>/`, keyed by sample name."""

    def __init__(self, root: Path, split: str, raw_depth: bool = False) -> None:
        self.folder = root / split
        self.dirs = {kind: ESANET_DIRS[kind] for kind in ("rgb", "labels")}
        self.dirs["depth"] = ESANET_DIRS["raw_depth" if raw_depth else "depth"]

    def _path(self, kind: str, name: str) -> Path:
        return self.folder / self.dirs[kind] / f"{name}.png"

    def missing(self, names: Sequence[str]) -> list[str]:
        """Paths of the PNGs the names need that are not on disk."""
        out = []
        for kind, folder in self.dirs.items():
            present = {p[:-4] for p in os.listdir(self.folder / folder)} if (self.folder / folder).is_dir() else set()
            out += [str(self._path(kind, n)) for n in names if n not in present]
        return out

    def rgb(self, name: str) -> np.ndarray:
        return read_png(self._path("rgb", name), "rgb").transpose(2, 0, 1)

    def depth(self, name: str) -> np.ndarray:
        return read_png(self._path("depth", name), "depth").astype(np.float32) / np.float32(1000)

    def labels(self, name: str) -> np.ndarray:
        path = self._path("labels", name)
        labels = read_png(path, "labels")
        if labels.max(initial=0) > NUM_CLASSES:
            raise DataError(f"label image {path} has value {labels.max()}; labels_40 holds 0 (void) and 1..40")
        return labels


# ---------------------------------------------------------------------------------------------- checks


def _sample(n: int) -> list[int]:
    """First, middle and last of n rows (what the checks read)."""
    return sorted({0, n // 2, n - 1}) if n > 0 else []


def check_mat(path: Path, mapping_path: Path, splits_path: Path, report: CheckReport) -> None:
    """Fill `report` for the official `.mat` and its two companion files."""
    frames = None
    if not h5py.is_hdf5(path):
        report.problems.append(f"{path} is not a MATLAB v7.3 (HDF5) file; {_not_hdf5(path)}")
    else:
        report.found["file"] = f"{path} ({path.stat().st_size / 2**20:.1f} MiB, HDF5)"
        try:
            with _open_mat(path) as f:
                frames = _check_mat_datasets(f, path, report)
        except DataError as err:
            report.problems.append(str(err))
    try:
        mapping = read_mapping(mapping_path)
        report.found["class mapping"] = f"{mapping_path}: {MAPPING_KEY} {mapping.size} entries in 1..{mapping.max()}"
    except DataError as err:
        report.problems.append(str(err))
    try:
        splits = read_splits(splits_path, frames)
    except DataError as err:
        report.problems.append(str(err))
        return
    report.found["splits"] = f"{splits_path}: " + ", ".join(f"{k} {v.size} frames" for k, v in splits.items())
    for split, ids in splits.items():
        if ids.size != OFFICIAL_SPLIT_SIZES[split]:
            report.problems.append(
                f"{splits_path}:{SPLIT_KEYS[split]} has {ids.size} frames; the standard split has "
                f"{OFFICIAL_SPLIT_SIZES[split]} (loading still works)"
            )


def _check_mat_datasets(f: h5py.File, path: Path, report: CheckReport) -> int | None:
    """Keys, shapes, dtypes; depth range and label maximum on a few frames. Returns the frame count."""
    w, h = OFFICIAL_SIZE[1], OFFICIAL_SIZE[0]
    expected = {
        MAT_KEYS["rgb"]: ((OFFICIAL_FRAMES, 3, w, h), np.dtype("uint8")),
        MAT_KEYS["depth"]: ((OFFICIAL_FRAMES, w, h), np.dtype("float32")),
        MAT_KEYS["labels"]: ((OFFICIAL_FRAMES, w, h), np.dtype("uint16")),
    }
    present: dict[str, Any] = {}
    for key, (shape, dtype) in expected.items():
        if key not in f or not isinstance(f[key], h5py.Dataset):
            report.problems.append(
                f"{path}: dataset {key!r} is missing (expected {shape} {dtype}); it has {sorted(f.keys())}"
            )
            continue
        ds = present[key] = f[key]
        report.found[key] = f"{ds.shape} {ds.dtype}"
        if ds.shape != shape:
            report.problems.append(
                f"{path}:{key} has shape {ds.shape}, expected {shape} (h5py's transposed view of MATLAB's arrays)"
            )
        if ds.dtype != dtype:
            report.problems.append(f"{path}:{key} has dtype {ds.dtype}, expected {dtype}")
    if MAT_KEYS["raw_depth"] in f:
        report.found[MAT_KEYS["raw_depth"]] = f"{f[MAT_KEYS['raw_depth']].shape} (for raw_depth: true)"
    if len(present) < len(expected):
        return None
    try:
        frames, _ = validate_mat(path)
    except DataError as err:
        report.problems.append(str(err))
        return None
    rows = _sample(frames)
    depth = np.stack([np.asarray(present[MAT_KEYS["depth"]][i], dtype=np.float64) for i in rows])
    labels = np.stack([np.asarray(present[MAT_KEYS["labels"]][i]) for i in rows])
    which = ", ".join(str(i + 1) for i in rows)
    if not np.isfinite(depth).all():
        report.problems.append(f"{path}:depths has NaN or inf values in frame(s) {which}")
    else:
        report.found[f"depth range (frames {which})"] = f"{depth.min():.3f}..{depth.max():.3f} m"
        if depth.min() < 0 or depth.max() > MAX_DEPTH_M or (depth.reshape(len(rows), -1).max(1) <= 0).any():
            report.problems.append(
                f"{path}:depths spans {depth.min():.3f}..{depth.max():.3f} in frame(s) {which}; expected metres "
                f"in 0..{MAX_DEPTH_M:g} with depth in every frame"
            )
    report.found[f"label max (frames {which})"] = str(int(labels.max()))
    if labels.max() > RAW_CLASSES:
        report.problems.append(f"{path}:labels reaches {labels.max()} in frame(s) {which}; expected 0..{RAW_CLASSES}")
    return frames


def check_esanet(root: Path, report: CheckReport) -> None:
    """Fill `report` for an ESANet folder tree: split lists, PNGs present, modes, sizes and labels on a sample."""
    for split, list_name in ESANET_LISTS.items():
        try:
            names = read_list(root / list_name)
        except DataError as err:
            report.problems.append(str(err))
            continue
        report.found[list_name] = f"{len(names)} samples"
        if len(names) != OFFICIAL_SPLIT_SIZES[split]:
            report.problems.append(
                f"{root / list_name} lists {len(names)} samples; the standard split has "
                f"{OFFICIAL_SPLIT_SIZES[split]} (loading still works)"
            )
        frames = EsanetFrames(root, split)
        for folder in frames.dirs.values():
            if not (frames.folder / folder).is_dir():
                report.problems.append(f"folder {frames.folder / folder} is missing")
        missing = frames.missing(names)
        if missing:
            report.problems.append(
                f"{len(missing)} PNG(s) of samples listed in {list_name} are missing, e.g. {missing[:3]}"
            )
        absent = {Path(p).stem for p in missing}
        sample = [names[i] for i in _sample(len(names)) if names[i] not in absent]
        sizes: set[tuple[int, ...]] = set()
        for name in sample:
            for kind in frames.dirs:
                try:
                    array = getattr(frames, kind)(name)
                except DataError as err:
                    report.problems.append(str(err))
                    continue
                sizes.add(tuple(array.shape[-2:]))
        if sample:
            shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes))
            report.found[f"{split} sample ({', '.join(sample)})"] = f"RGB / 16-bit depth / 8-bit labels, H x W {shown}"
        if sizes and sizes != {OFFICIAL_SIZE}:
            report.problems.append(
                f"{frames.folder}: sampled PNGs are {sorted(sizes)} (H, W); expected all {OFFICIAL_SIZE} "
                f"(the loader resizes to its height/width options)"
            )
    if (root / "train" / ESANET_DIRS["raw_depth"]).is_dir():
        report.found["depth_raw"] = "present (for raw_depth: true)"
