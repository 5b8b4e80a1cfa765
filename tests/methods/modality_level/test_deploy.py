"""Deployable artifacts of modality-level DynMM: the runner (onnxruntime + numpy, dynmm and torch unimportable)
and torch.export give dynmm's dispatch outputs and routing; each exported graph's MAdds match FlopCounterMode."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from dynmm.config import GateConfig, ModelConfig  # noqa: E402
from dynmm.deploy.artifact import MANIFEST, write_artifact  # noqa: E402
from dynmm.deploy.verify import verify_artifact  # noqa: E402
from dynmm.methods.modality_level.deploy import deploy_graphs  # noqa: E402
from dynmm.methods.modality_level.deploy_run import dispatch_reference, verify_torch_export  # noqa: E402
from dynmm.methods.modality_level.model import build_modality_level  # noqa: E402
from dynmm.nn.static_model import build_static_model  # noqa: E402
from dynmm.specs import ModalitySpec, TaskSpec  # noqa: E402

from .test_cascade import SPECS, TASK, batch, build  # noqa: E402

EXPERTS = [
    ModelConfig(fusion="unimodal", modalities=["text"], embed_dim=12),
    ModelConfig(fusion="unimodal", modalities=["audio"], embed_dim=12),
    ModelConfig(fusion="late_mean", embed_dim=12),
]
MLP = {"default": {"kind": "mlp", "hidden": [8]}}
ENCODERS = {"default": {"kind": "mlp", "hidden": [16]}, "audio": {"kind": "cnn", "channels": [8, 16]}}


def spread(model):
    """A gate with large random weights, so that a small batch reaches every branch."""
    torch.manual_seed(3)
    for layer in model.gate.net:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=2.0)
    return model


def three_experts(soft=False):
    """DynMM's own gate over three experts (a chain of two torch.cond), biased so every expert gets rows."""
    torch.manual_seed(0)
    experts = [build_static_model(m.model_copy(update={"encoders": ENCODERS}), SPECS, TASK) for m in EXPERTS]
    model = spread(build_modality_level(experts, GateConfig(hidden=8), SPECS).eval())
    model.gate.mode = "soft" if soft else "hard"
    return model


def export(model, tmp_path, fmt="onnx", rows=40):
    inputs = batch(rows)
    manifest = write_artifact(deploy_graphs(model, inputs), tmp_path / "art", fmt, model.specs, {"routing": "x"})
    outputs, choice = dispatch_reference(model, inputs)
    return manifest, inputs, outputs, choice


@pytest.mark.parametrize("which", ["gate", "cascade"])
def test_onnx_artifact_matches_dispatch_outside_dynmm(tmp_path, which):
    model = three_experts() if which == "gate" else spread(build())
    model.beta = 0.0
    manifest, inputs, outputs, choice = export(model, tmp_path)
    assert len(set(choice.tolist())) > 1, "the test needs rows on more than one branch"
    record = verify_artifact(tmp_path / "art", {m: x.numpy() for m, x in inputs.items()}, outputs, choice)
    assert record["batch_1_max_abs_diff"] <= 1e-4 and record["batched_max_abs_diff"] <= 1e-4
    assert record["batch_1_same_routing"] == 1.0 and record["batched_same_routing"] == 1.0
    assert all(c["relative_difference"] <= 0.02 for c in record["madds"]) and record["passed"]
    branches = manifest["branches"]
    assert len(branches) == len(model.experts)
    if which == "gate":  # each branch graph is one expert: its MAdds are the expert's measured cost
        assert [b["madds"] for b in branches] == pytest.approx(model.expert_madds, rel=1e-6)
        assert manifest["router"]["madds"] == pytest.approx(model.gate_madds, rel=1e-6)
    else:  # staying costs nothing more; escalating adds what the larger expert adds on the cached encoders
        assert branches[0]["madds"] == 0
        assert branches[1]["madds"] == pytest.approx(model.path_madds[1] - model.path_madds[0], rel=1e-6)
        assert "cached__text" in branches[1]["reads"]


def test_cost_knob_beta_is_baked_into_the_graph(tmp_path):
    model = three_experts()
    model.beta = 3.0
    _, inputs, outputs, choice = export(model, tmp_path)
    record = verify_artifact(tmp_path / "art", {m: x.numpy() for m, x in inputs.items()}, outputs, choice)
    assert record["passed"]


def test_torch_export_program_matches_dispatch(tmp_path):
    model = three_experts()
    manifest, inputs, outputs, choice = export(model, tmp_path, "torch-export", rows=12)
    assert manifest["model"] == "model.pt2" and manifest["runner"] is None
    record = verify_torch_export(tmp_path / "art", inputs, outputs, choice)
    assert record["passed"] and record["rows"] == 12


def test_soft_gate_exports_but_skips_nothing(tmp_path):
    model = three_experts(soft=True)
    manifest, inputs, outputs, choice = export(model, tmp_path)
    assert manifest["skips"] is False and manifest["router"] is None and (choice == -1).all()
    assert json.loads((tmp_path / "art" / MANIFEST).read_text())["skips"] is False
    record = verify_artifact(tmp_path / "art", {m: x.numpy() for m, x in inputs.items()}, outputs, choice)
    assert record["passed"]


def test_runner_names_a_wrong_input(tmp_path):
    from dynmm.deploy.runner import Artifact

    export(three_experts(), tmp_path, rows=4)
    artifact = Artifact(tmp_path / "art")
    good = {m: x.numpy() for m, x in batch(3).items()}
    with pytest.raises(ValueError, match=r"input 'audio' must be float32 of shape \(batch, 1, 8, 16\)"):
        artifact.predict({**good, "audio": good["audio"][:, :, :4]})
    with pytest.raises(ValueError, match="missing input 'text'"):
        artifact.predict({"audio": good["audio"]})
    with pytest.raises(ValueError, match="share one non-zero batch size"):
        artifact.predict({**good, "text": good["text"][:2]})
    assert artifact.predict(good)[0].shape == (3, 4)


def test_regression_task_and_vector_only_inputs(tmp_path):
    specs = {"a": ModalitySpec("a", (6,), "vector"), "b": ModalitySpec("b", (5,), "vector")}
    task = TaskSpec("regression", 1)
    torch.manual_seed(0)
    experts = [
        build_static_model(ModelConfig(fusion="unimodal", modalities=["a"], encoders=MLP, embed_dim=8), specs, task),
        build_static_model(ModelConfig(fusion="late_mean", encoders=MLP, embed_dim=8), specs, task),
    ]
    model = build_modality_level(experts, GateConfig(hidden=0), specs).eval()
    spread(model)
    g = torch.Generator().manual_seed(2)
    inputs = {"a": torch.randn(30, 6, generator=g), "b": torch.randn(30, 5, generator=g)}
    write_artifact(deploy_graphs(model, inputs), tmp_path / "art", "onnx", model.specs, {})
    outputs, choice = dispatch_reference(model, inputs)
    assert verify_artifact(tmp_path / "art", {m: x.numpy() for m, x in inputs.items()}, outputs, choice)["passed"]
    np.testing.assert_array_equal(np.unique(choice), [0, 1])  # rows on both branches
