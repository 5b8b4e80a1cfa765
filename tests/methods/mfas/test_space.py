import random

import pytest
import torch

from dynmm.errors import ConfigError
from dynmm.methods.mfas.space import FusionNetwork, LayerChoice, SearchSpace, from_json, to_json


def test_backbone_layers_and_space_size(space):
    # cnn [4, 8]: two ReLUs + embedding + output; conv1d [8, 8]: the same.
    assert space.layer_names["image"] == ("relu1", "relu2", "embedding", "output")
    assert space.layer_dims["image"] == (4, 8, 6, 3)
    assert len(space.layer_choices()) == 4 * 4 * 3
    assert space.size() == 48 + 48**2 + 48**3


def test_fusion_network_follows_the_recurrence(space):
    arch = (LayerChoice((1, 2), 0), LayerChoice((3, 0), 1))
    net = FusionNetwork(space, arch, width=5, out_dim=3)
    features = {key: torch.randn(4, dim) for key, dim in net.input_dims.items()}
    h1 = torch.relu(net.layers[0](torch.cat([features["image.relu2"], features["audio.embedding"]], 1)))
    h2 = torch.sigmoid(net.layers[1](torch.cat([features["image.output"], features["audio.relu1"], h1], 1)))
    torch.testing.assert_close(net(features), net.head(h2), rtol=0, atol=1e-6)
    assert set(net.shared_modules()) == {"layer0:14x5", "layer1:16x5", "head:5x3"}


def test_json_round_trip_and_description(space):
    arch = (LayerChoice((0, 3), 2),)
    assert from_json(to_json(arch)) == arch
    assert space.describe(arch) == "image.relu1+audio.output:leaky_relu"
    assert space.used_features(arch) == {"image": [0], "audio": [3]}


def test_random_architectures_stay_in_the_space(space):
    rng = random.Random(0)
    for _ in range(50):
        space.check(space.random_architecture(rng))


def test_bad_architectures_and_spaces_are_refused(space):
    with pytest.raises(ConfigError, match="1..3 layers"):
        space.check(tuple(LayerChoice((0, 0), 0) for _ in range(4)))
    with pytest.raises(ConfigError, match="'audio' has 4 candidate layers"):
        space.check((LayerChoice((0, 9), 0),))
    with pytest.raises(ConfigError, match="at least 2 modalities"):
        SearchSpace(("image",), {"image": ("a",)}, {"image": (1,)}, ("relu",), 2)
    with pytest.raises(ConfigError, match="unknown"):
        SearchSpace(("a", "b"), {"a": ("x",), "b": ("y",)}, {"a": (1,), "b": (1,)}, ("tanh",), 2)
    net = FusionNetwork(space, (LayerChoice((0, 0), 0),), 4, 3)
    with pytest.raises(ConfigError, match="needs backbone features"):
        net({"image.relu1": torch.zeros(2, 4)})
