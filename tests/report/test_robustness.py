"""Corruptions for robustness curves: seeded, scaled by the modality's std, clear errors."""

import pytest
import torch

from dynmm.data.base import MultimodalDataset
from dynmm.errors import ConfigError
from dynmm.report.robustness import NoiseSpec, corrupt, parse_noise


def dataset():
    g = torch.Generator().manual_seed(0)
    return MultimodalDataset(
        {"a": 3 * torch.randn(2000, 4, generator=g), "b": torch.randn(2000, 2, generator=g)}, torch.zeros(2000)
    )


def test_parse_noise():
    assert parse_noise("audio:gaussian:0.5") == NoiseSpec("audio", "gaussian", 0.5)
    for bad, message in [
        ("audio:0.5", "MODALITY:KIND:LEVEL"),
        ("a:salt:1", "unknown noise kind"),
        ("a:gaussian:x", "not a number"),
        ("a:gaussian:-1", ">= 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_noise(bad)


def test_noise_is_scaled_by_the_modality_std_and_seeded():
    data = dataset()
    noisy = corrupt(data, [NoiseSpec("a", "gaussian", 0.5)])
    added = noisy.inputs["a"] - data.inputs["a"]
    assert float(added.std()) == pytest.approx(0.5 * float(data.inputs["a"].std()), rel=0.05)
    assert torch.equal(noisy.inputs["b"], data.inputs["b"])
    assert torch.equal(noisy.inputs["a"], corrupt(data, [NoiseSpec("a", "gaussian", 0.5)]).inputs["a"])
    assert torch.equal(corrupt(data, [NoiseSpec("a", "gaussian", 0.0)]).inputs["a"], data.inputs["a"])


def test_drop_zero_fills_and_unknown_modalities_are_named():
    data = dataset()
    assert torch.count_nonzero(corrupt(data, drop=["b"]).inputs["b"]) == 0
    with pytest.raises(ConfigError, match="--drop: unknown modality \\['video'\\]"):
        corrupt(data, drop=["video"])
    with pytest.raises(ConfigError, match="--noise: unknown modality"):
        corrupt(data, [NoiseSpec("video", "gaussian", 1.0)])
