"""A small AV-MNIST folder in MultiBench's exact npy layout (the format is the per-row shapes; N is only a count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_avmnist_fixture(
    folder: Path,
    train: int = 40,
    test: int = 20,
    dtype: type | np.dtype = np.float32,
    label_dtype: type | np.dtype = np.int64,
    seed: int = 0,
) -> Path:
    """Write image/{train,test}_data.npy (N, 784), audio/{train,test}_data.npy (N, 112, 112) with integer values
    0-255 stored as `dtype`, and {train,test}_labels.npy (N,) digits (each of 0-9 present once N >= 10) as
    `label_dtype`, under `folder`; return `folder`. Values are a seeded function of (split, row)."""
    rng = np.random.default_rng(seed)
    (folder / "image").mkdir(parents=True, exist_ok=True)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    for pool, n in (("train", train), ("test", test)):
        image = rng.integers(0, 256, size=(n, 784))
        audio = rng.integers(0, 256, size=(n, 112, 112))
        labels = rng.permutation(np.arange(n) % 10)
        np.save(folder / "image" / f"{pool}_data.npy", image.astype(dtype))
        np.save(folder / "audio" / f"{pool}_data.npy", audio.astype(dtype))
        np.save(folder / f"{pool}_labels.npy", labels.astype(label_dtype))
    return folder
