"""Gates: hard straight-through choices in training, deterministic argmax (with cost penalty) in eval."""

import pytest
import torch

from dynmm.cost import measure_madds
from dynmm.errors import ConfigError, InputError
from dynmm.nn.gates import MLPGate, TransformerGate
from dynmm.specs import ModalitySpec

VEC = {"text": ModalitySpec("text", (6,), "vector"), "image": ModalitySpec("image", (1, 4, 4), "image")}
SEQ = {"a": ModalitySpec("a", (5, 3), "sequence"), "b": ModalitySpec("b", (5, 2), "sequence")}


def test_mlp_gate_training_gives_one_hot_straight_through_weights_with_gradients():
    gate = MLPGate(3, VEC, ["text", "image"]).train()
    x = {"text": torch.randn(8, 6), "image": torch.randn(8, 1, 4, 4)}
    out = gate(x)
    assert out.choice.shape == (8,) and out.weights.shape == (8, 3) and out.logits.shape == (8, 3)
    assert torch.equal(out.weights.detach(), torch.nn.functional.one_hot(out.choice, 3).float())
    (out.weights * torch.arange(3.0)).sum().backward()
    assert gate.net[0].weight.grad.abs().sum() > 0


def test_eval_is_argmax_and_cost_penalty_shifts_choices():
    gate = MLPGate(2, VEC, ["text", "image"]).eval()
    x = {"text": torch.randn(16, 6), "image": torch.randn(16, 1, 4, 4)}
    out = gate(x)
    assert torch.equal(out.choice, out.logits.argmax(1))
    assert torch.equal(gate(x).choice, out.choice)  # deterministic
    huge = torch.tensor([0.0, 1e6])
    assert torch.all(gate(x, cost_penalty=huge).choice == 0)


def test_soft_mode_weights_are_the_softmax():
    gate = MLPGate(2, VEC, ["text", "image"]).eval()
    gate.mode = "soft"
    x = {"text": torch.randn(4, 6), "image": torch.randn(4, 1, 4, 4)}
    out = gate(x)
    torch.testing.assert_close(out.weights, torch.softmax(out.logits, 1))


def test_transformer_gate_on_sequences_and_its_cost_is_measured():
    gate = TransformerGate(2, SEQ, ["a", "b"], hidden=16, nhead=2).eval()
    x = {"a": torch.randn(3, 5, 3), "b": torch.randn(3, 5, 2)}
    assert gate(x).choice.shape == (3,)
    madds = measure_madds(LogitsOnly(gate), x).total
    embed = 5 * 5 * 16
    attention = 5 * 16 * 16 * 4 + 2 * 5 * 5 * 2 * 8  # q,k,v,out projections + scores and weighted sum
    feed_forward = 2 * 5 * 16 * 16
    assert madds == embed + attention + feed_forward + 16 * 2


class LogitsOnly(torch.nn.Module):
    """measure_madds counts a module returning a tensor; a gate returns a named tuple."""

    def __init__(self, gate):
        super().__init__()
        self.gate = gate

    def forward(self, inputs):
        return self.gate(inputs).logits


def test_gate_errors():
    with pytest.raises(ConfigError, match="at least 2 branches"):
        MLPGate(1, VEC, ["text"])
    with pytest.raises(ConfigError, match="sequence modalities of one common length"):
        TransformerGate(2, VEC, ["text", "image"])
    with pytest.raises(InputError, match="missing modality 'image'"):
        MLPGate(2, VEC, ["text", "image"])({"text": torch.randn(2, 6)})


def test_transformer_gate_feed_forward_width_is_configurable():
    from dynmm.config import GateConfig
    from dynmm.errors import ConfigError
    from dynmm.nn.gates import build_gate
    from dynmm.specs import ModalitySpec

    specs = {"a": ModalitySpec("a", (6, 4), "sequence"), "b": ModalitySpec("b", (6, 3), "sequence")}
    default = build_gate(GateConfig(kind="transformer", hidden=10, nhead=5), 2, specs, ["a", "b"])
    wide = build_gate(GateConfig(kind="transformer", hidden=10, nhead=5, dim_feedforward=64), 2, specs, ["a", "b"])
    assert default.encoder.layers[0].linear1.out_features == 10 and wide.encoder.layers[0].linear1.out_features == 64
    with pytest.raises(ConfigError, match="dim_feedforward must be >= 1"):
        build_gate(GateConfig(kind="transformer", dim_feedforward=0), 2, specs, ["a", "b"])
