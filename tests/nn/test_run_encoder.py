"""`kind: from_run`: another run's trained encoder, rebuilt from its export, with its weights, kept frozen."""

import pytest
import torch

from dynmm.config import DataConfig, ModelConfig
from dynmm.engine.export import export_model
from dynmm.errors import ConfigError, DataError
from dynmm.nn.encoders import build_encoder
from dynmm.nn.run_encoder import FrozenEncoder
from dynmm.nn.static_model import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec

SPECS = {"text": ModalitySpec("text", (10,), "vector"), "audio": ModalitySpec("audio", (6,), "vector")}
TASK = TaskSpec("classification", 3)


@pytest.fixture
def source(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(fusion="concat", embed_dim=8, encoders={"default": {"kind": "mlp", "hidden": [5]}})
    model = build_static_model(config, SPECS, TASK)
    export_model(tmp_path, model, config, DataConfig(name="demo"), SPECS, TASK)
    return tmp_path, model


def test_loads_the_trained_weights_and_stays_frozen(source):
    path, model = source
    encoder = build_encoder(SPECS["text"], {"kind": "from_run", "path": str(path), "out_dim": 8})
    assert isinstance(encoder, FrozenEncoder) and encoder.out_dim == 8
    x = torch.randn(4, 10)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), model.encoders["text"](x), atol=0, rtol=0)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.encoder.training  # batch-norm statistics and dropout stay fixed while the model trains


def test_in_a_static_model_the_source_encoder_is_reused(source):
    path, _ = source
    encoders = {"default": {"kind": "mlp"}, "text": {"kind": "from_run", "path": str(path)}}
    config = ModelConfig(fusion="late_mean", embed_dim=8, encoders=encoders)
    model = build_static_model(config, SPECS, TASK)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("encoders.text") for name in trainable)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs `path`"),
        ({"path": "nowhere"}, "nowhere/model.json is missing"),
        ({"modality": "video"}, "no encoder for modality 'video'"),
        ({"out_dim": 16}, "outputs 8 features, but 16"),
        ({"hidden": [3]}, "unknown option"),
    ],
)
def test_refusals_name_the_problem(source, options, message):
    path, _ = source
    full = {"kind": "from_run", **({"path": str(path)} if "path" not in options and options != {} else {}), **options}
    with pytest.raises((ConfigError, DataError), match=message):
        build_encoder(SPECS["text"], full)


def test_a_modality_of_another_shape_is_refused(source):
    path, _ = source
    with pytest.raises(ConfigError, match="encoded 'text' as vector"):
        build_encoder(ModalitySpec("text", (12,), "vector"), {"kind": "from_run", "path": str(path)})
