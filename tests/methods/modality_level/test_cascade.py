"""Cascade routing: dispatch == masked; an escalated row pays the shared encoder once; export round trip."""

import pytest
import torch

from dynmm.config import DataConfig, GateConfig, ModelConfig
from dynmm.cost import count_madds, measure_madds
from dynmm.engine.export import export_model
from dynmm.errors import ConfigError
from dynmm.methods.modality_level.cascade import (
    CascadeDynMM,
    build_cascade,
    confidence,
)
from dynmm.methods.modality_level.export import (
    cascade_expert_models,
    dynmm_sections,
    load_modality_level,
)
from dynmm.methods.modality_level.routing_analysis import collect_outputs
from dynmm.nn.static_model import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec

SPECS = {
    "text": ModalitySpec("text", (10,), "vector"),
    "audio": ModalitySpec("audio", (1, 8, 16), "image"),
}
TASK = TaskSpec("classification", 4)
ENCODERS = {"default": {"kind": "mlp", "hidden": [16]}, "audio": {"kind": "cnn", "channels": [8, 16]}}
MODELS = [
    ModelConfig(fusion="unimodal", modalities=["text"], encoders=ENCODERS, embed_dim=12),
    ModelConfig(fusion="late_mean", encoders=ENCODERS, embed_dim=12),
]


def experts(seed=0):
    torch.manual_seed(seed)
    return [build_static_model(m, SPECS, TASK) for m in cascade_expert_models(MODELS, SPECS)]


def build(seed=0, gate=None):
    return build_cascade(experts(seed), gate or GateConfig(hidden=8), SPECS, TASK, check=False).eval()


def batch(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"text": torch.randn(n, 10, generator=g), "audio": torch.randn(n, 1, 8, 16, generator=g)}


def test_later_experts_share_the_first_experts_encoder_module():
    model = build()
    assert model.experts[1].encoders["text"] is model.experts[0].encoders["text"]
    assert model.experts[1].encoders["audio"] is not None


@pytest.mark.parametrize("beta", [0.0, -5.0, 5.0, 0.5])
def test_dispatch_equals_masked_and_each_expert_alone(beta):
    model = build()
    model.beta = beta
    x = batch(32)
    with torch.no_grad():
        fast = model(x)
        choice = model.last_gate.choice
        model.set_mode("masked")
        reference = model(x)
        alone = torch.stack([expert(x) for expert in model.experts])
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast, alone[choice, torch.arange(32)], atol=1e-6, rtol=0)


def test_escalation_pays_only_what_the_larger_expert_adds():
    model = build()
    cheap, full = model.expert_madds
    encoder = measure_madds(model.experts[0].encoders["text"], torch.zeros(1, 10)).total
    assert encoder > 0
    assert model.path_madds[0] == cheap
    assert model.path_madds[1] == cheap + full - encoder  # the text encoder runs once
    x = batch(16)
    for beta, branch in ((-100.0, 1), (100.0, 0)):
        model.beta = beta
        counted = count_madds(lambda: model(x)).total / 16
        with torch.no_grad():
            model(x)
        assert bool((model.last_gate.choice == branch).all())
        assert counted == pytest.approx(float(model.realized_madds(model.last_gate.choice).mean()))


def test_gate_reads_the_cheap_experts_results_and_trains_densely():
    model = build(gate=GateConfig(hidden=0, modalities=["confidence", "outputs"]))
    assert sorted(model.gate.specs) == ["confidence", "outputs"]
    model.train()
    for expert in model.experts:
        expert.eval()
    out = model(batch(8))
    out.sum().backward()
    assert model.gate.net[0].weight.grad is not None


def test_offline_rerouting_sees_the_same_branch_outputs():
    model = build()
    x = batch(12)
    record = collect_outputs(model, [(x, torch.zeros(12, dtype=torch.long))])
    with torch.no_grad():
        alone = torch.stack([expert(x) for expert in model.experts])
    torch.testing.assert_close(record.outputs, alone, atol=1e-6, rtol=0)


def test_confidence_by_task():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    assert confidence(TASK, logits)[:, 0].tolist() == pytest.approx([torch.softmax(logits[0], 0).max().item(), 0.5])
    score = torch.tensor([[-1.5], [0.25]])
    assert confidence(TaskSpec("regression", 1), score)[:, 0].tolist() == [1.5, 0.25]
    labels = torch.tensor([[0.0, 0.0]])
    assert confidence(TaskSpec("multilabel", 2), labels).item() == 0.0


def test_trained_experts_with_other_weights_are_refused():
    first, second = experts(0)
    with torch.no_grad():
        second.encoders["text"].net[0].weight.add_(1.0)  # not the first expert's encoder any more
    with pytest.raises(ConfigError, match="other weights"):
        build_cascade([first, second], GateConfig(), SPECS, TASK, check=True)


@pytest.mark.parametrize(
    ("gate", "message"),
    [(GateConfig(kind="transformer"), "cascade gate is an 'mlp'"), (GateConfig(modalities=["text"]), "not \\['text'")],
)
def test_bad_cascade_gates_are_refused(gate, message):
    with pytest.raises(ConfigError, match=message):
        build_cascade(experts(), gate, SPECS, TASK)


def test_export_round_trip_keeps_the_shared_encoder(tmp_path):
    model = build()
    named = list(zip(["cheap", "full"], cascade_expert_models(MODELS, SPECS), strict=True))
    sections = dynmm_sections(named, GateConfig(hidden=8), "cascade")
    export_model(tmp_path, model, MODELS[0], DataConfig(name="demo"), SPECS, TASK, None, "dynmm", sections)
    loaded = load_modality_level(tmp_path).model
    assert isinstance(loaded, CascadeDynMM)
    assert loaded.experts[1].encoders["text"] is loaded.experts[0].encoders["text"]
    x = batch(16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x), atol=0, rtol=0)


def test_a_missing_modality_keeps_every_row_on_the_first_expert():
    model = build()
    model.beta = -100.0  # the gate alone would escalate every row
    with torch.no_grad():
        model(batch(8), missing=["audio"])
    assert bool((model.last_gate.choice == 0).all())


def test_speed_benchmark_times_a_cascade_through_its_own_forward():
    from dynmm.methods.modality_level.speed import forced_choice, measure_modes

    model = build()
    x = batch(16)
    choice = forced_choice(16, 0.5)
    measured = measure_modes(model, x, choice, ["masked", "dispatch"], repeats=1)
    realized = float(model.realized_madds(choice).mean())
    assert measured["madds_per_sample"]["dispatch"] == pytest.approx(realized)
    assert measured["madds_per_sample"]["masked"] > realized
    assert model.forced_choice is None and model.mode == "dispatch"  # restored after every call
