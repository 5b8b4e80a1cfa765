"""`dynmm export RUN` for a modality-level DynMM run: its graphs written as an artifact, then verified on the
whole test split against dynmm's own dispatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynmm.data.registry import load_dataset
from dynmm.deploy.artifact import MANIFEST, write_artifact
from dynmm.deploy.graphs import Format
from dynmm.deploy.verify import OUTPUT_TOLERANCE, VERIFICATION, chunked_reference, verify_and_record
from dynmm.errors import ConfigError
from dynmm.io import atomic_write_json, read_json
from dynmm.methods.modality_level.deploy import deploy_graphs
from dynmm.methods.modality_level.export import exported_experts, load_modality_level
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.specs import Inputs

CHUNK = 256
"""Rows per dispatch call when computing dynmm's reference predictions."""


def dispatch_reference(model: ModalityLevelDynMM, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """dynmm's own predictions and routing (dispatch mode; -1 for a soft gate, which routes nothing)."""
    model.eval().set_mode("dispatch")

    def routing() -> torch.Tensor:
        assert model.last_gate is not None
        return torch.full_like(model.last_gate.choice, -1) if model.soft else model.last_gate.choice

    return chunked_reference(model, inputs, CHUNK, routing)


def verify_torch_export(folder: Path, inputs: Inputs, outputs: np.ndarray, choice: np.ndarray) -> dict[str, Any]:
    """The batch-1 program (torch.export.load, no dynmm code) on every test row against dynmm's dispatch."""
    program = torch.export.load(str(folder / "model.pt2")).module()
    names = [spec["name"] for spec in read_json(folder / MANIFEST, "an artifact manifest")["inputs"]]
    rows = next(iter(inputs.values())).shape[0]
    diff, same = 0.0, 0
    for row in range(rows):
        got = program(*(inputs[m][row : row + 1] for m in names))
        got_out, got_choice = got if isinstance(got, tuple) else (got, None)
        diff = max(diff, float((got_out - torch.from_numpy(outputs[row : row + 1])).abs().max()))
        same += got_choice is None or int(got_choice[0]) == int(choice[row])
    record = {"rows": rows, "batch_1_max_abs_diff": diff, "batch_1_same_routing": same / rows}
    return {**record, "passed": diff <= OUTPUT_TOLERANCE and same == rows, "runtime": "torch.export.load"}


def export_modality_level(run_dir: Path, fmt: Format, output: Path, verify: bool = True) -> dict[str, Any]:
    """Write RUN's model as a deployable artifact in `output` (and verify it); returns the manifest."""
    exported = load_modality_level(run_dir)
    model = exported.model
    if not isinstance(model, ModalityLevelDynMM):
        raise ConfigError(f"{run_dir} holds a {exported.model_type} model, not a modality-level DynMM")
    test = load_dataset(exported.data_config.name, **exported.data_config.options)["test"]
    inputs = {m: test.inputs[m] for m in model.specs}
    about = {
        "method": "modality_level",
        "model_type": exported.model_type,
        "routing": exported.description.get("routing", "gate"),
        "branch_names": [name for name, _ in exported_experts(exported)],
        "path_madds": model.path_madds,
        "gate_madds": model.gate_madds,
        "source": str(run_dir),
    }
    manifest = write_artifact(deploy_graphs(model, inputs), output, fmt, model.specs, about)
    if verify and fmt == "onnx":
        manifest["verification"] = verify_and_record(output, inputs, dispatch_reference(model, inputs))
    elif verify:
        manifest["verification"] = verify_torch_export(output, inputs, *dispatch_reference(model, inputs))
        atomic_write_json(output / VERIFICATION, manifest["verification"])
    return manifest
