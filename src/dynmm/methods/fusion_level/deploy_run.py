"""`dynmm export RUN` for a fusion-level DynMM run: one graph per image, verified on the whole test split against
dynmm's dispatch (segmentation logits and every cell's op)."""

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
from dynmm.methods.fusion_level.deploy import fusion_graphs
from dynmm.methods.fusion_level.export import FUSION_LEVEL_BUILDERS
from dynmm.methods.fusion_level.model import FusionLevelDynMM
from dynmm.specs import Inputs

CHUNK = 16
"""Images per dispatch call when computing dynmm's reference predictions."""


def dispatch_reference(model: FusionLevelDynMM, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """dynmm's segmentation logits and (B, cells) op choices in dispatch mode."""
    model.eval().set_mode("dispatch")

    def choice() -> torch.Tensor:
        assert model.last_choice is not None
        return model.last_choice

    return chunked_reference(model, inputs, CHUNK, choice)


def export_fusion_level(run_dir: Path, fmt: Format, output: Path, verify: bool = True) -> dict[str, Any]:
    """Write RUN's fusion-level DynMM as one per-image graph in `output` (ONNX) and verify it."""
    if fmt != "onnx":
        raise ConfigError("fusion-level DynMM exports as ONNX (--format onnx); torch-export is for DynMM runs")
    model, test_inputs = load_trained(run_dir, FUSION_LEVEL_BUILDERS, FusionLevelDynMM, "a fusion-level DynMM")
    inputs = {m: test_inputs[m] for m in (model.primary, model.secondary)}
    about = {"model_type": exported_model_type(run_dir), "source": str(run_dir)}
    return write_fusion_artifact(model, inputs, output, about, verify)


def write_fusion_artifact(
    model: FusionLevelDynMM, inputs: Inputs, output: Path, about: dict[str, Any], verify: bool = True
) -> dict[str, Any]:
    """The artifact of `model` in `output`, verified on `inputs` (the test split) when asked."""
    output.mkdir(parents=True, exist_ok=True)
    graph = fusion_graphs(model, inputs)
    manifest = {
        "format": "onnx",
        "layout": "image",
        "method": "fusion_level",
        **about,
        "skips": True,
        "inputs": input_entries({m: model.specs[m] for m in graph["inputs"]}),
        "op_names": model.op_names,
        "costs": model.costs,  # measured MAdds of each piece a routing decides (the graph's If nodes hold them all)
        "graphs": {"model": write_graph({**graph, "count": False}, output, "model", "onnx")},
        "runner": "dynmm_runner.py",
    }
    finish_artifact(output, manifest)
    if verify:
        manifest["verification"] = verify_and_record(output, inputs, dispatch_reference(model, inputs))
    return manifest
