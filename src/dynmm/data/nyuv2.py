"""NYU Depth V2 (1449 labelled RGB-D frames, 40 classes) for RGB-D segmentation, from either of its usual formats.

Formats (option `format`; "auto" tells them apart by what `path` is):

- `mat`: the official `nyu_depth_v2_labeled.mat` (MATLAB v7.3, i.e. HDF5). h5py shows MATLAB's arrays
  transposed: `images` (1449, 3, 640, 480) uint8, `depths` (1449, 640, 480) float32 metres (in-painted),
  `rawDepths` likewise (with holes = 0), `labels` (1449, 640, 480) uint16 with 894 classes (0 = unlabeled); a
  frame is (480, 640) after swapping the last two axes. Two small MATLAB v5 files from the NYUv2 toolbox must
  be given (defaults: beside the .mat; options `class_mapping` and `splits` name other paths):
  `classMapping40.mat` (`mapClass`, 1 x 894, the 40-class id in 1..40 of original class c at index c - 1)
  and `splits.mat` (`trainNdxs` (795, 1), `testNdxs` (654, 1): 1-based frame indices). `path` is the .mat or
  the folder that holds it.
- `esanet`: the folders ESANet's `src/datasets/nyuv2/prepare_dataset.py` (TUI-NICR/ESANet) writes from those
  three files: `<path>/train.txt` and `<path>/test.txt` list the sample names (the 1-based frame index as
  `%04d`, one per line); sample `<name>` of split s is `<path>/<s>/rgb/<name>.png` (8-bit RGB),
  `<path>/<s>/depth/<name>.png` (16-bit greyscale, millimetres: ESANet stores int(metres * 1000), so 1 mm
  steps; `depth_raw/` holds the raw depth), `<path>/<s>/labels_40/<name>.png` (8-bit greyscale, 0 = void,
  1..40; the `labels_40_colored` palette PNGs hold the same indices and are not read).

Both formats give the same tensors for the same frames (up to ESANet's 1 mm depth rounding):
inputs `rgb` (3, H, W) and `depth` (1, H, W), target (H, W) int64 with the 40 classes as 0..39 and void as
SEGMENTATION_IGNORE (255); meta `frame` = the 1-based NYUv2 frame index (-1 for a non-numeric ESANet name).
Inputs (normalize=True): rgb = ([0, 1] RGB - RGB_MEAN) / RGB_STD (ImageNet statistics, which ImageNet-
pretrained ResNet encoders expect); depth = metres / DEPTH_SCALE (raw-depth holes stay exactly 0).
normalize=False: rgb in [0, 1], depth in metres. Frames other than `height` x `width` are resized with
torch's bilinear interpolation (rgb, in-painted depth) or nearest (labels, raw depth with its holes).

Splits: the standard 795 train / 654 test frames. The protocol has no validation split; `valid_size` = 0
(default) makes `valid` the test split (as ESANet evaluates on test: early stopping and model selection then
see the test frames; say so when reporting), `valid_size` = k > 0 holds out the last k training frames in list
order (consecutive frames, i.e. mostly whole scenes, so near-duplicate views do not leak into valid as a random
subset would) and trains on the rest. Other split sizes load too (small fixtures); `check_nyuv2` reports them.

Rows are read from disk when indexed (`NYUv2Rows`): the 1449 frames as float32 inputs and int64 targets would
take ~10.7 GB at 480 x 640 (the RGB alone 1.3 GB as uint8). A split stands in a MultimodalDataset like an
in-memory tensor; each DataLoader worker opens its own files (and, for the .mat, its own HDF5 chunk cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.check import CheckReport
from dynmm.data.lazy import RowIndex, row_indices, single_row
from dynmm.data.nyuv2_formats import (
    ESANET_LISTS,
    MAPPING_NAME,
    MAT_NAME,
    NUM_CLASSES,
    OFFICIAL_SIZE,
    SPLITS_NAME,
    EsanetFrames,
    MatFrames,
    check_esanet,
    check_mat,
    label_lookup,
    read_list,
    read_mapping,
    read_splits,
    validate_mat,
)
from dynmm.errors import ConfigError, DataError
from dynmm.specs import SEGMENTATION_IGNORE, ModalitySpec, TaskSpec

IGNORE = SEGMENTATION_IGNORE
TASK = TaskSpec("segmentation", num_classes=NUM_CLASSES)
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)
DEPTH_SCALE = 4.0
"""Normalised depth = metres / DEPTH_SCALE: NYUv2's depth (about 0.7..10 m, mean ~2.8 m) lands in ~(0.2, 2.5)."""
FORMATS = ("auto", "mat", "esanet")


@dataclass(frozen=True)
class NYUv2Options:
    """Every keyword load_nyuv2 / nyuv2_info accept (see the module docstring)."""

    path: str = ""
    format: str = "auto"
    height: int = OFFICIAL_SIZE[0]
    width: int = OFFICIAL_SIZE[1]
    class_mapping: str | None = None
    """mat only: classMapping40.mat (default: beside the .mat)."""
    splits: str | None = None
    """mat only: splits.mat (default: beside the .mat)."""
    valid_size: int = 0
    """0: valid = the test split; k > 0: the last k training frames, held out of train."""
    raw_depth: bool = False
    """Read the raw depth (`rawDepths` / `depth_raw/`, holes = 0) instead of the in-painted one."""
    normalize: bool = True

    def __post_init__(self) -> None:
        kinds: dict[str, tuple[type, ...]] = {"str": (str,), "str | None": (str, type(None)), "int": (int,)}
        for f in fields(self):
            value = getattr(self, f.name)
            wanted = kinds.get(str(f.type), (bool,))
            if (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
                raise ConfigError(f"nyuv2 option {f.name} must be {f.type}, got {value!r}")
        if not self.path:
            raise ConfigError("nyuv2 option path is required: the .mat file (or its folder) or an ESANet folder")
        if self.format not in FORMATS:
            raise ConfigError(f"nyuv2 option format must be one of {list(FORMATS)}, got {self.format!r}")
        for name in ("height", "width"):
            if not 1 <= getattr(self, name) <= 4096:
                raise ConfigError(f"nyuv2 option {name} must be in [1, 4096], got {getattr(self, name)}")
        if self.valid_size < 0:
            raise ConfigError(f"nyuv2 option valid_size must be >= 0, got {self.valid_size}")


NYUV2_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(NYUv2Options))


class _Frames(Protocol):
    def rgb(self, key: Any) -> np.ndarray: ...
    def depth(self, key: Any) -> np.ndarray: ...
    def labels(self, key: Any) -> np.ndarray: ...


class NYUv2Rows:
    """One modality (`rgb`, `depth`) or the target (`labels`) of one split, read from disk when indexed.

    Same interface as `dynmm.data.lazy.H5Rows`: `.shape`, `len()`, and indexing by an int (one sample), a
    slice, or an index tensor / array / list (stacked samples). Inputs come back float32, targets int64.
    """

    def __init__(
        self, frames: _Frames, keys: Sequence[Any], kind: str, size: tuple[int, int], normalize: bool, raw_depth: bool
    ) -> None:
        self.frames, self.keys, self.kind = frames, list(keys), kind
        self.size, self.normalize, self.raw_depth = size, normalize, raw_depth
        channels = {"rgb": (3,), "depth": (1,), "labels": ()}[kind]
        self.shape = torch.Size((len(self.keys), *channels, *size))
        self.dtype = torch.int64 if kind == "labels" else torch.float32

    def __len__(self) -> int:
        return len(self.keys)

    def _resize(self, x: Tensor, mode: str) -> Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(
            x[None], size=self.size, mode=mode, **({} if mode == "nearest" else {"align_corners": False})
        )[0]

    def _row(self, i: int) -> Tensor:
        key = self.keys[i]
        if self.kind == "rgb":
            x = self._resize(torch.from_numpy(np.ascontiguousarray(self.frames.rgb(key))).float().div_(255), "bilinear")
            if self.normalize:
                x = (x - torch.tensor(RGB_MEAN)[:, None, None]) / torch.tensor(RGB_STD)[:, None, None]
            return x
        if self.kind == "depth":
            x = self._resize(
                torch.from_numpy(np.ascontiguousarray(self.frames.depth(key)))[None],
                "nearest" if self.raw_depth else "bilinear",
            )
            return x / DEPTH_SCALE if self.normalize else x
        labels = torch.from_numpy(np.ascontiguousarray(self.frames.labels(key)).astype(np.int64))
        labels = self._resize(labels[None].float(), "nearest")[0].long()
        return torch.where(labels == 0, IGNORE, labels - 1)

    def __getitem__(self, index: RowIndex) -> Tensor:
        if isinstance(index, int | np.integer):
            return self._row(single_row(index, len(self)))
        rows = row_indices(index, len(self)).tolist()
        if not rows:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        return torch.stack([self._row(r) for r in rows])


# ---------------------------------------------------------------------------------------------- sources


def _options(**options: object) -> NYUv2Options:
    unknown = sorted(set(options) - set(NYUV2_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown nyuv2 option(s) {unknown}; accepted: {list(NYUV2_OPTIONS)}")
    return NYUv2Options(**options)  # type: ignore[arg-type]


def _resolve(opts: NYUv2Options) -> tuple[str, Path]:
    """(format, file or folder) for the options; DataError if the path holds neither format."""
    path = Path(opts.path).expanduser()
    if not path.exists():
        raise DataError(f"nyuv2 path {path} does not exist (expected {MAT_NAME} or an ESANet folder)")
    if opts.format in ("auto", "mat") and path.is_dir() and (path / MAT_NAME).is_file():
        if opts.format == "mat" or not any((path / n).is_file() for n in ESANET_LISTS.values()):
            return "mat", path / MAT_NAME
    if opts.format in ("auto", "mat") and path.is_file():
        return "mat", path
    if opts.format in ("auto", "esanet") and path.is_dir() and any((path / n).is_file() for n in ESANET_LISTS.values()):
        return "esanet", path
    wanted = {"mat": f"the {MAT_NAME} file or its folder", "esanet": "a folder with train.txt and test.txt"}
    what = wanted.get(opts.format, f"{wanted['mat']}, or {wanted['esanet']} (ESANet)")
    raise DataError(f"nyuv2 path {path} is not {what}")


def _companions(opts: NYUv2Options, mat: Path) -> tuple[Path, Path]:
    mapping = Path(opts.class_mapping) if opts.class_mapping else mat.parent / MAPPING_NAME
    splits = Path(opts.splits) if opts.splits else mat.parent / SPLITS_NAME
    return mapping, splits


def _split_keys(opts: NYUv2Options) -> tuple[str, Path, dict[str, list[Any]]]:
    """Format, path and the per-split keys (0-based frame indices for mat, names for esanet) of train/test."""
    fmt, path = _resolve(opts)
    if fmt == "esanet":
        if opts.class_mapping or opts.splits:
            raise ConfigError(
                "nyuv2 options class_mapping and splits are for the .mat format; ESANet folders hold both"
            )
        return fmt, path, {split: read_list(path / name) for split, name in ESANET_LISTS.items()}
    frames, _ = validate_mat(path)
    ids = read_splits(_companions(opts, path)[1], frames)
    return fmt, path, {split: (v - 1).tolist() for split, v in ids.items()}


def _carve_valid(opts: NYUv2Options, keys: dict[str, list[Any]]) -> dict[str, list[Any]]:
    if opts.valid_size == 0:
        return {"train": keys["train"], "valid": keys["test"], "test": keys["test"]}
    if opts.valid_size >= len(keys["train"]):
        raise ConfigError(
            f"nyuv2 option valid_size must be < the {len(keys['train'])} training frames, got {opts.valid_size}"
        )
    cut = len(keys["train"]) - opts.valid_size
    return {"train": keys["train"][:cut], "valid": keys["train"][cut:], "test": keys["test"]}


def _frame_number(key: Any, fmt: str) -> int:
    if fmt == "mat":
        return int(key) + 1
    return int(key) if str(key).isdigit() else -1


def load_nyuv2(
    path: str,
    format: str = "auto",
    height: int = OFFICIAL_SIZE[0],
    width: int = OFFICIAL_SIZE[1],
    class_mapping: str | None = None,
    splits: str | None = None,
    valid_size: int = 0,
    raw_depth: bool = False,
    normalize: bool = True,
) -> dict[str, MultimodalDataset]:
    """Train / valid / test NYUv2 splits with lazily read rows (see the module docstring for formats, inputs,
    target and how `valid` is made)."""
    opts = NYUv2Options(path, format, height, width, class_mapping, splits, valid_size, raw_depth, normalize)
    fmt, root, keys = _split_keys(opts)
    sources: dict[str, _Frames]
    if fmt == "mat":
        mat = MatFrames(root, label_lookup(read_mapping(_companions(opts, root)[0])), raw_depth)
        sources = {split: mat for split in ("train", "test")}
    else:
        sources = {split: EsanetFrames(root, split, raw_depth) for split in ("train", "test")}
        for split, source in sources.items():
            missing = cast(EsanetFrames, source).missing(keys[split])
            if missing:
                raise DataError(
                    f"{len(missing)} PNG(s) of samples in {ESANET_LISTS[split]} are missing, e.g. {missing[:3]}"
                )
    out: dict[str, MultimodalDataset] = {}
    size = (height, width)
    for split, split_keys in _carve_valid(opts, keys).items():
        source = sources["test" if split == "test" or (split == "valid" and valid_size == 0) else "train"]
        inputs = {kind: NYUv2Rows(source, split_keys, kind, size, normalize, raw_depth) for kind in ("rgb", "depth")}
        target = NYUv2Rows(source, split_keys, "labels", size, normalize, raw_depth)
        meta = {"frame": torch.tensor([_frame_number(k, fmt) for k in split_keys], dtype=torch.int64)}
        out[split] = MultimodalDataset(cast(Any, inputs), cast(Tensor, target), meta=meta)
    _ = out["test"][0]  # read one sample now: a wrong PNG mode or frame fails here, not mid-training
    return out


def nyuv2_info(path: str, **options: object) -> DatasetInfo:
    """Shapes (from the height/width options) and split sizes (from the split files alone; no frame is read)."""
    opts = _options(path=path, **options)
    _, _, keys = _split_keys(opts)
    sizes = {split: len(v) for split, v in _carve_valid(opts, keys).items()}
    modalities = {
        "rgb": ModalitySpec("rgb", (3, opts.height, opts.width), "image"),
        "depth": ModalitySpec("depth", (1, opts.height, opts.width), "image"),
    }
    return DatasetInfo("nyuv2", modalities, TASK, sizes)


def check_nyuv2(
    path: str | Path, format: str = "auto", class_mapping: str | None = None, splits: str | None = None
) -> CheckReport:
    """What `dynmm data check PATH --format nyuv2` reports. The .mat: datasets `images` / `depths` / `labels`
    with the official shapes and dtypes (1449 frames), depth in 0..10 m and labels <= 894 on a few frames,
    classMapping40.mat (894 entries in 1..40) and splits.mat (795 + 654 distinct, disjoint 1-based indices
    <= the frame count) beside it. An ESANet folder: train.txt / test.txt (795 / 654 names), every listed
    name's rgb / depth / labels_40 PNG present, and on a few samples per split: PNG modes (8-bit RGB, 16-bit
    depth, 8-bit labels), 480 x 640 and labels <= 40. `class_mapping` / `splits` as for load_nyuv2."""
    report = CheckReport("nyuv2", str(path))
    try:
        opts = _options(path=str(path), format=format, class_mapping=class_mapping, splits=splits)
        fmt, root = _resolve(opts)
    except (DataError, ConfigError) as err:
        report.problems.append(str(err))
        return report
    report.found["format"] = {"mat": "official .mat (MATLAB v7.3 / HDF5)", "esanet": "ESANet folders of PNGs"}[fmt]
    if fmt == "mat":
        check_mat(root, *_companions(opts, root), report)
    else:
        check_esanet(root, report)
    return report
