"""Tiny NYUv2 data written in the real formats, from one in-memory `Content`, so both loaders can be compared.

- `write_mat`: `nyu_depth_v2_labeled.mat` as MATLAB v7.3 writes it (HDF5 behind a 512-byte userblock holding
  MATLAB's header; arrays transposed as h5py shows them: images (N, 3, W, H) uint8, depths / rawDepths
  (N, W, H) float32 metres, labels (N, W, H) uint16 with 0..894), plus `classMapping40.mat` (`mapClass`, 1 x 894)
  and `splits.mat` (`trainNdxs` / `testNdxs`, (n, 1), 1-based) as MATLAB v5 files via scipy.io.savemat.
  Datasets are chunked one frame per chunk: frames never written take no space (they read as the fill value,
  a plausible 2 m depth), so `official_content` can hold the real 1449 frames of 480 x 640 in a small file.
- `write_esanet`: ESANet's folders (train.txt / test.txt with `%04d` names; <split>/rgb, depth, depth_raw,
  labels_40 PNGs: 8-bit RGB, 16-bit millimetres, 8-bit 0..40). Samples without content are hard links to the
  split's first sample, so the official 795 + 654 names cost no disk and little time.

The mapping is random (values 1..40), not NYUv2's: the user supplies the real classMapping40.mat.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

MAT_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  2 03:04:05 2012 HDF5 schema 1.00 ."


@dataclass
class Content:
    """Frames in NYUv2 terms: (n, H, W, 3) uint8 RGB, (n, H, W) uint16 depth in mm (raw: with holes = 0),
    (n, H, W) uint16 labels 0..894; `frames` their 1-based frame numbers; `total` frames in the .mat."""

    rgb: np.ndarray
    depth_mm: np.ndarray
    raw_mm: np.ndarray
    labels: np.ndarray
    frames: list[int]
    train: list[int]
    test: list[int]
    mapping: np.ndarray
    total: int

    @property
    def labels40(self) -> np.ndarray:
        """The labels mapped to 0 (void) / 1..40, as ESANet's labels_40 PNGs hold them."""
        return np.concatenate([[0], self.mapping])[self.labels].astype(np.uint8)

    def row(self, frame: int) -> int:
        return self.frames.index(frame)


def make_content(
    height: int = 12,
    width: int = 16,
    total: int = 9,
    train: tuple[int, ...] = (1, 3, 4, 6, 8),
    test: tuple[int, ...] = (2, 5, 9),
    frames: tuple[int, ...] | None = None,
    smooth: bool = False,
    seed: int = 0,
) -> Content:
    """Random frames for `frames` (default: every train and test frame); labels include 0, 1 and 894."""
    rng = np.random.default_rng(seed)
    chosen = sorted(frames if frames is not None else set(train) | set(test))
    n = len(chosen)
    if smooth:  # compresses well at 480 x 640
        ramp = np.linspace(0, 1, width)[None, None, :, None] * np.linspace(0.5, 1, height)[None, :, None, None]
        rgb = (255 * ramp * rng.uniform(0.3, 1, (n, 1, 1, 3))).astype(np.uint8)
        depth = np.broadcast_to((800 + 6000 * ramp[..., 0]).astype(np.uint16), (n, height, width)).copy()
        labels = np.broadcast_to((np.arange(width) // 40 * 70 % 895).astype(np.uint16), (n, height, width)).copy()
    else:
        rgb = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
        depth = rng.integers(500, 9500, (n, height, width)).astype(np.uint16)
        labels = rng.integers(0, 895, (n, height, width)).astype(np.uint16)
        labels[:, 0, :3] = (0, 1, 894)
        labels[:, 1] = 0
    raw = depth.copy()
    raw[:, ::3, ::2] = 0
    mapping = rng.integers(1, 41, 894)
    return Content(rgb, depth, raw, labels, chosen, list(train), list(test), mapping, total)


def official_content(per_split: int = 2, seed: int = 0) -> Content:
    """The official layout: 1449 frames of 480 x 640, 795 / 654 split; only `per_split` frames of each have content."""
    order = np.random.default_rng(seed).permutation(np.arange(1, 1450))
    train, test = sorted(order[:795].tolist()), sorted(order[795:].tolist())
    return make_content(480, 640, 1449, tuple(train), tuple(test), (*train[:per_split], *test[:per_split]), True, seed)


def _matlab_class(ds: h5py.Dataset, name: str) -> None:
    ds.attrs["MATLAB_class"] = np.bytes_(name)


def write_mat(folder: Path, content: Content, companions: bool = True) -> Path:
    """nyu_depth_v2_labeled.mat (+ classMapping40.mat and splits.mat) in `folder`; returns the .mat path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nyu_depth_v2_labeled.mat"
    n, h, w = content.total, content.rgb.shape[1], content.rgb.shape[2]
    with h5py.File(path, "w", userblock_size=512) as f:
        images = f.create_dataset("images", (n, 3, w, h), np.uint8, chunks=(1, 3, w, h), compression="gzip")
        depths, raw = (
            f.create_dataset(k, (n, w, h), np.float32, chunks=(1, w, h), compression="gzip", fillvalue=2.0)
            for k in ("depths", "rawDepths")
        )
        labels = f.create_dataset("labels", (n, w, h), np.uint16, chunks=(1, w, h), compression="gzip")
        for j, frame in enumerate(content.frames):
            images[frame - 1] = content.rgb[j].transpose(2, 1, 0)
            depths[frame - 1] = (content.depth_mm[j].astype(np.float32) / np.float32(1000)).T
            raw[frame - 1] = (content.raw_mm[j].astype(np.float32) / np.float32(1000)).T
            labels[frame - 1] = content.labels[j].T
        for ds, cls in ((images, "uint8"), (depths, "single"), (raw, "single"), (labels, "uint16")):
            _matlab_class(ds, cls)
    with open(path, "r+b") as fh:  # MATLAB's 128-byte header: text, subsystem offset, version 0x0200, 'IM'
        fh.write(MAT_HEADER.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM")
    if companions:
        write_mapping(folder / "classMapping40.mat", content.mapping)
        write_splits(folder / "splits.mat", content.train, content.test)
    return path


def write_mapping(path: Path, mapping: np.ndarray) -> None:
    scipy.io.savemat(path, {"mapClass": np.asarray(mapping, dtype=np.float64)[None]})


def write_splits(path: Path, train: list[int], test: list[int]) -> None:
    scipy.io.savemat(
        path, {"trainNdxs": np.asarray(train, np.float64)[:, None], "testNdxs": np.asarray(test, np.float64)[:, None]}
    )


def write_esanet(root: Path, content: Content) -> Path:
    """ESANet's folder tree for the content's train / test lists; returns `root`."""
    dirs = ("rgb", "depth", "depth_raw", "labels_40")
    for split, ids in (("train", content.train), ("test", content.test)):
        (root / f"{split}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}.txt").write_text("".join(f"{i:04d}\n" for i in ids))
        for d in dirs:
            (root / split / d).mkdir(parents=True, exist_ok=True)
        first: str | None = None
        for frame in ids:
            name = f"{frame:04d}"
            if frame in content.frames:
                j = content.row(frame)
                arrays = (content.rgb[j], content.depth_mm[j], content.raw_mm[j], content.labels40[j])
                for d, array in zip(dirs, arrays, strict=True):
                    Image.fromarray(array).save(root / split / d / f"{name}.png")
                first = first or name
            else:
                if first is None:
                    raise ValueError(f"the first sample of {split} needs content to link the others to")
                for d in dirs:
                    _link(root / split / d / f"{first}.png", root / split / d / f"{name}.png")
    return root


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
