"""Tiny random backbones and data for the MFAS tests: shapes and numerics, no real training."""

import pytest
import torch

from dynmm.config import ModelConfig
from dynmm.data.base import MultimodalDataset
from dynmm.methods.mfas.backbones import Backbone
from dynmm.methods.mfas.feature_cache import FeatureCache
from dynmm.methods.mfas.space import SearchSpace
from dynmm.nn.static_model import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec

SPECS = {
    "image": ModalitySpec("image", (1, 8, 8), "image"),
    "audio": ModalitySpec("audio", (1, 6, 10), "image"),
}
TASK = TaskSpec("classification", 3)
ENCODERS = {"image": {"kind": "cnn", "channels": [4, 8]}, "audio": {"kind": "conv1d", "channels": [8, 8]}}


def make_backbone(modality: str, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    config = ModelConfig(fusion="unimodal", modalities=[modality], embed_dim=6, encoders={modality: ENCODERS[modality]})
    return Backbone(build_static_model(config, {modality: SPECS[modality]}, TASK))


def make_splits(sizes=(96, 40, 40), seed: int = 0) -> dict[str, MultimodalDataset]:
    g = torch.Generator().manual_seed(seed)
    splits = {}
    for name, n in zip(("train", "valid", "test"), sizes, strict=True):
        target = torch.randint(0, 3, (n,), generator=g)
        image = torch.randn(n, 1, 8, 8, generator=g) + target.view(-1, 1, 1, 1)
        audio = torch.randn(n, 1, 6, 10, generator=g) - target.view(-1, 1, 1, 1)
        splits[name] = MultimodalDataset({"image": image, "audio": audio}, target)
    return splits


@pytest.fixture(scope="module")
def backbones():
    return [make_backbone("image"), make_backbone("audio", seed=1)]


@pytest.fixture(scope="module")
def splits():
    return make_splits()


@pytest.fixture(scope="module")
def cache(backbones, splits):
    return FeatureCache(backbones, splits)


@pytest.fixture(scope="module")
def space(backbones, cache):
    dims = cache.dims()
    return SearchSpace(
        ("image", "audio"),
        {b.modality: b.names for b in backbones},
        {b.modality: tuple(dims[f"{b.modality}.{n}"] for n in b.names) for b in backbones},
        ("relu", "sigmoid", "leaky_relu"),
        3,
    )
