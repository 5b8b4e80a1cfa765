"""`dynmm export RUN` for an AdaMML run: the segment graphs written as an artifact and verified on the whole test
split against dynmm's dispatch (predictions and every keep decision)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynmm.deploy.artifact import finish_artifact, input_entries, write_graph
from dynmm.deploy.graphs import Format
from dynmm.deploy.verify import chunked_reference, verify_and_record
from dynmm.engine.export import exported_model_type
from dynmm.engine.timing import load_trained
from dynmm.errors import ConfigError
from dynmm.methods.adamml.deploy import STATE, segment_graphs
from dynmm.methods.adamml.export import ADAMML_BUILDERS
from dynmm.methods.adamml.model import AdaMML
from dynmm.specs import Inputs

CHUNK = 64
"""Clips per dispatch call when computing dynmm's reference predictions."""


def dispatch_reference(model: AdaMML, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """dynmm's clip logits and keep decisions (B, T, modalities) in dispatch mode with the learned policy."""
    model.eval().set_mode("dispatch")
    model.set_policy_mode("learned")

    def keep() -> torch.Tensor:
        assert model.last_keep is not None
        return torch.stack([model.last_keep[m] for m in model.modalities], dim=2).long()

    return chunked_reference(model, inputs, CHUNK, keep)


def export_adamml(run_dir: Path, fmt: Format, output: Path, verify: bool = True) -> dict[str, Any]:
    """Write RUN's AdaMML as segment graphs in `output` (ONNX only) and verify them; returns the manifest."""
    if fmt != "onnx":
        raise ConfigError("AdaMML exports as ONNX segment graphs (--format onnx); torch-export is for DynMM runs")
    model, test_inputs = load_trained(run_dir, ADAMML_BUILDERS, AdaMML, "an AdaMML")
    inputs = {m: test_inputs[m] for m in model.modalities}
    about = {"method": "adamml", "model_type": exported_model_type(run_dir), "source": str(run_dir)}
    manifest = write_segment_artifact(model, inputs, output, about)
    if verify:
        manifest["verification"] = verify_and_record(output, inputs, dispatch_reference(model, inputs))
    return manifest


def write_segment_artifact(model: AdaMML, inputs: Inputs, output: Path, about: dict[str, Any]) -> dict[str, Any]:
    """The policy, policy-step and net graphs of `model` and their manifest in `output`."""
    output.mkdir(parents=True, exist_ok=True)
    graphs = segment_graphs(model, inputs)
    manifest = {
        "format": "onnx",
        "layout": "segments",
        **about,
        "skips": True,
        "inputs": input_entries(model.specs),
        "modalities": model.modalities,
        "segments": model.segments,
        "state": {"names": list(STATE), "shape": [1, model.policy.lstm.hidden_size]},
        "fusion_weights": model.fusion_weights.tolist(),
        "fallback": model.fallback,
        "graphs": {name: write_graph(graph, output, name, "onnx") for name, graph in graphs.items()},
        "runner": "dynmm_runner.py",
    }
    return finish_artifact(output, manifest)
