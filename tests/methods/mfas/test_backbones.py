import pytest
import torch
from tests.methods.mfas.conftest import SPECS, TASK

from dynmm.config import ModelConfig
from dynmm.cost import measure_madds
from dynmm.errors import ConfigError
from dynmm.methods.mfas.backbones import Backbone, pool
from dynmm.nn.static_model import build_static_model


def test_features_are_pooled_candidate_layers(backbones, splits):
    image = backbones[0]
    x = splits["test"].inputs["image"][:5]
    features = image.features(x)
    assert [f.shape for f in features] == [(5, 4), (5, 8), (5, 6), (5, 3)]
    torch.testing.assert_close(features[-1], image.model({"image": x}))
    torch.testing.assert_close(features[-2], image.model.encoders["image"](x))


def test_pooling_rules():
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(pool(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(pool(x[:, :, 0]), x[:, :, 0].amax(dim=2))
    with pytest.raises(ConfigError, match="cannot pool"):
        pool(torch.zeros(2))


def test_prefix_madds_grow_and_end_at_the_whole_model(backbones, splits):
    for backbone in backbones:
        x = splits["test"].inputs[backbone.modality][:1]
        prefix = backbone.prefix_madds(x)
        assert prefix == sorted(prefix) and prefix[0] > 0
        assert prefix[-1] == measure_madds(backbone.model, {backbone.modality: x}).total
        assert prefix[-2] < prefix[-1]  # the embedding does not pay for the output layer


def test_backbone_must_be_unimodal_and_is_frozen(backbones):
    assert not any(p.requires_grad for b in backbones for p in b.model.parameters())
    both = build_static_model(ModelConfig(fusion="late_mean", encoders={"default": {"kind": "mlp"}}), SPECS, TASK)
    with pytest.raises(ConfigError, match="one-modality model"):
        Backbone(both)


def test_candidate_layer_kinds_select_taps():
    lenet = {"kind": "lenet", "channels": 4, "layers": 2, "out_dim": 8}
    config = ModelConfig(fusion="unimodal", modalities=["image"], embed_dim=6, encoders={"image": lenet})
    model = build_static_model(config, SPECS, TASK)
    assert Backbone(model).names == ("relu1", "relu2", "embedding", "output")
    blocks = Backbone(model, ["relu"])
    assert blocks.names == ("relu1", "relu2")
    x = torch.randn(3, 1, 8, 8)
    features = blocks.features(x)
    assert [f.shape for f in features] == [(3, 4), (3, 8)]
    torch.testing.assert_close(features[-1], model.encoders["image"](x))  # the last block is the embedding
    assert Backbone(model, ["output", "relu"]).names == ("relu1", "relu2", "output")
    with pytest.raises(ConfigError, match="unknown"):
        Backbone(model, ["conv"])
