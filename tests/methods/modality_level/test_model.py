"""Modality-level DynMM: dispatch == masked; the counted MAdds follow the routing that actually ran."""

import pytest
import torch

from dynmm.config import ModelConfig
from dynmm.cost import count_madds
from dynmm.errors import ConfigError
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.nn.gates import MLPGate
from dynmm.nn.static_model import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec

SPECS = {
    "text": ModalitySpec("text", (10,), "vector"),
    "audio": ModalitySpec("audio", (1, 8, 16), "image"),
}
TASK = TaskSpec("classification", 4)


def build(seed=0):
    torch.manual_seed(seed)
    encoders = {"default": {"kind": "mlp", "hidden": [16]}, "audio": {"kind": "cnn", "channels": [8, 16]}}
    cheap = build_static_model(ModelConfig(fusion="unimodal", modalities=["text"], encoders=encoders), SPECS, TASK)
    full = build_static_model(ModelConfig(fusion="late_mean", encoders=encoders), SPECS, TASK)
    gate = MLPGate(2, SPECS, ["text", "audio"], hidden=8)
    example = {"text": torch.randn(1, 10), "audio": torch.randn(1, 1, 8, 16)}
    return ModalityLevelDynMM([cheap, full], gate, example).eval()


def batch(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"text": torch.randn(n, 10, generator=g), "audio": torch.randn(n, 1, 8, 16, generator=g)}


@pytest.mark.parametrize("beta", [0.0, -5.0, 5.0, 0.3])  # all-expensive, all-cheap and mixed routings
def test_dispatch_equals_masked(beta):
    model = build()
    model.beta = beta
    x = batch(32)
    with torch.no_grad():
        model.set_mode("dispatch")
        fast = model(x)
        model.set_mode("masked")
        reference = model(x)
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=0)


def test_measured_costs_and_counted_madds_follow_the_routing():
    model = build()
    assert model.expert_madds[0] < model.expert_madds[1]
    x = batch(16)
    for beta in (-100.0, 100.0):  # everyone on the full expert, then everyone on the cheap one
        model.beta = beta
        choice = model.gate(x, cost_penalty=beta * model.costs).choice
        counted = count_madds(lambda: model(x)).total / 16
        assert counted == pytest.approx(float(model.realized_madds(choice).mean()))
    model.set_mode("masked")  # the papers' way pays for every expert whatever the gate says
    masked = count_madds(lambda: model(x)).total / 16
    assert masked == pytest.approx(model.gate_madds + sum(model.expert_madds))


def test_training_mode_is_dense_and_the_gate_gets_gradients():
    model = build().train()
    out = model(batch(8))
    out.sum().backward()
    assert model.gate.net[0].weight.grad.abs().sum() > 0
    assert model.last_gate is not None and model.last_gate.weights.shape == (8, 2)


def test_bad_configuration():
    model = build()
    with pytest.raises(ConfigError, match="unknown execution mode"):
        model.set_mode("sparse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="2 branches but 1 experts"):
        ModalityLevelDynMM([model.experts[0]], model.gate, batch(1))


def test_a_missing_modality_routes_to_an_expert_that_does_not_need_it():
    model = build()
    model.beta = -100.0  # left alone, every row would go to the full expert (text + audio)
    x = batch(16)
    x["audio"] = torch.zeros_like(x["audio"])
    with torch.no_grad():
        out = model(x, missing=["audio"])
        assert bool((model.last_gate.choice == 0).all())
        torch.testing.assert_close(out, model.experts[0](x))
        model(x, missing=["text"])  # every expert needs text: the gate decides as usual
        assert bool((model.last_gate.choice == 1).all())


def test_soft_gate_is_dynmm_d_every_expert_mixed_and_paid():
    model = build()
    model.gate.mode = "soft"
    x = batch(8)
    with torch.no_grad():
        out = model(x)
        weights = torch.softmax(model.gate.logits(x), dim=1)
        reference = sum(weights[:, i : i + 1] * expert(x) for i, expert in enumerate(model.experts))
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    counted = count_madds(lambda: model(x)).total / 8
    assert counted == pytest.approx(float(model.realized_madds(model.last_gate.choice).mean()))
    assert counted == pytest.approx(model.gate_madds + sum(model.expert_madds))


def test_linear_gate_is_cheap():
    linear = MLPGate(2, SPECS, ["text"], hidden=0)
    assert len(linear.net) == 1 and linear.net[0].in_features == 10
    with pytest.raises(ConfigError, match="hidden size must be >= 0"):
        MLPGate(2, SPECS, ["text"], hidden=-1)
