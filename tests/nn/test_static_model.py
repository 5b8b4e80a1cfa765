"""Static fusion model: built from config, checks its inputs, predicts with the right shapes."""

import pytest
import torch

from dynmm.config import ModelConfig
from dynmm.cost import measure_madds
from dynmm.errors import ConfigError, InputError
from dynmm.nn.static_model import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec

SPECS = {
    "image": ModalitySpec("image", (1, 12, 12), "image"),
    "audio": ModalitySpec("audio", (1, 8, 16), "image"),
    "text": ModalitySpec("text", (10,), "vector"),
}
CLASSES = TaskSpec("classification", 5)


def inputs(batch=4):
    return {name: torch.randn(batch, *spec.shape) for name, spec in SPECS.items()}


def config(**kw):
    base = dict(embed_dim=8, encoders={"default": {"kind": "mlp", "hidden": [16]}, "image": {"kind": "cnn"}})
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("fusion", ["concat", "late_mean", "late_weighted", "tfn", "lmf", "mi", "gmu", "transformer"])
def test_every_fusion_builds_and_predicts(fusion):
    model = build_static_model(config(fusion=fusion), SPECS, CLASSES)
    assert model.modalities == ["audio", "image", "text"]
    assert model(inputs()).shape == (4, 5)


def test_late_fusion_is_the_mean_of_per_modality_predictions():
    model = build_static_model(config(fusion="late_mean"), SPECS, CLASSES).eval()
    x = inputs()
    per_modality = [model.fusion.heads[m](model.encoders[m](x[m])) for m in model.modalities]
    torch.testing.assert_close(model(x), torch.stack(per_modality).mean(0))


def test_unimodal_uses_only_its_modality_and_costs_less():
    uni = build_static_model(config(fusion="unimodal", modalities=["text"]), SPECS, TaskSpec("regression"))
    x = inputs()
    del x["image"]  # not needed by a text-only model
    assert uni(x).shape == (4, 1)
    full = build_static_model(config(fusion="concat"), SPECS, TaskSpec("regression"))
    assert measure_madds(uni, x).total < measure_madds(full, inputs()).total


def test_missing_modality_and_wrong_shape_are_reported_by_name():
    model = build_static_model(config(fusion="concat"), SPECS, CLASSES)
    x = inputs()
    del x["audio"]
    with pytest.raises(InputError, match="missing modality 'audio'"):
        model(x)
    with pytest.raises(InputError, match=r"'image' expected shape \(batch, 1, 12, 12\), got \(4, 12, 12\)"):
        model(inputs() | {"image": torch.randn(4, 12, 12)})


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"unknown modality \['depth'\]"):
        build_static_model(config(modalities=["depth"]), SPECS, CLASSES)
    with pytest.raises(ConfigError, match=r"unknown fusion 'tfm' \(did you mean 'tfn'\?\)"):
        build_static_model(config(fusion="tfm"), SPECS, CLASSES)
    with pytest.raises(ConfigError, match=r"options for \['imgae'\], which the data set lacks"):
        build_static_model(config(encoders={"imgae": {"kind": "cnn"}}), SPECS, CLASSES)
    with pytest.raises(ConfigError, match="rank"):
        build_static_model(config(fusion="concat", fusion_options={"rank": 3}), SPECS, CLASSES)
