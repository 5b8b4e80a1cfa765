"""Corrupted test inputs: Gaussian noise on a modality, or a modality missing altogether.

`--noise audio:gaussian:0.5` adds zero-mean Gaussian noise whose std is 0.5 × the modality's own std on that
split (so one level means the same on z-scored features and on log-mel spectrograms). `--drop video` replaces
the modality by zeros and tells a DynMM model it is missing, so the gate can route around experts that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dynmm.data.base import MultimodalDataset
from dynmm.data.lazy import materialize
from dynmm.errors import ConfigError

NOISE_KINDS = ("gaussian",)


@dataclass(frozen=True)
class NoiseSpec:
    modality: str
    kind: str
    level: float


def parse_noise(text: str) -> NoiseSpec:
    """`MODALITY:gaussian:LEVEL` → NoiseSpec, with an error that shows the expected form."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ConfigError(f"--noise {text!r}: expected MODALITY:KIND:LEVEL, e.g. audio:gaussian:0.5")
    modality, kind, level_text = parts
    if kind not in NOISE_KINDS:
        raise ConfigError(f"--noise {text!r}: unknown noise kind {kind!r}; choose from {list(NOISE_KINDS)}")
    try:
        level = float(level_text)
    except ValueError as err:
        raise ConfigError(f"--noise {text!r}: level {level_text!r} is not a number") from err
    if level < 0:
        raise ConfigError(f"--noise {text!r}: level must be >= 0")
    return NoiseSpec(modality, kind, level)


def _check_modalities(dataset: MultimodalDataset, names: Sequence[str], option: str) -> None:
    unknown = [m for m in names if m not in dataset.inputs]
    if unknown:
        raise ConfigError(f"{option}: unknown modality {unknown}; the data set has {sorted(dataset.inputs)}")


def corrupt(
    dataset: MultimodalDataset, noise: Sequence[NoiseSpec] = (), drop: Sequence[str] = (), seed: int = 0
) -> MultimodalDataset:
    """A copy of `dataset` with seeded noise added and dropped modalities zero-filled (targets unchanged)."""
    _check_modalities(dataset, [n.modality for n in noise], "--noise")
    _check_modalities(dataset, drop, "--drop")
    generator = torch.Generator().manual_seed(seed)
    inputs = {k: materialize(v) for k, v in dataset.inputs.items()}
    for spec in noise:
        x = inputs[spec.modality]
        noise_tensor = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        inputs[spec.modality] = x + spec.level * x.std() * noise_tensor
    for name in drop:
        inputs[name] = torch.zeros_like(inputs[name])
    return MultimodalDataset(inputs, dataset.target, dataset.flags, dataset.meta)
