"""Check an ONNX artifact the way a user runs it: its own runner, in a Python where dynmm and torch cannot be
imported (only onnxruntime and numpy), on the whole test split, against dynmm's dispatch."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynmm.deploy.artifact import MADDS_TOLERANCE, MANIFEST, RUNNER
from dynmm.errors import DataError
from dynmm.io import atomic_write_json, read_json

VERIFICATION = "verification.json"
OUTPUT_TOLERANCE = 1e-4
"""Largest absolute difference between the artifact's predictions and dynmm's that verification accepts."""

_ISOLATED = (
    "import runpy, sys; sys.modules['dynmm'] = None; sys.modules['torch'] = None; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
"""Runs the artifact's runner with dynmm and torch made unimportable (an import of either raises ImportError)."""


def run_isolated(folder: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The runner's outputs on `inputs`: one row at a time and as one batch (see runner.py)."""
    with tempfile.TemporaryDirectory(prefix="dynmm_verify_") as tmp:
        source, target = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(source, allow_pickle=False, **inputs)
        command = [sys.executable, "-c", _ISOLATED, str(folder / RUNNER), str(folder), str(source), str(target)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DataError(f"{folder}: the artifact's runner failed outside dynmm:\n{done.stderr[-2000:]}")
        with np.load(target) as result:
            return {name: result[name] for name in result.files}


@torch.no_grad()
def chunked_reference(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], chunk: int, decision: Callable[[], torch.Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """dynmm's own outputs on `inputs`, `chunk` rows per call, and after each call `decision()` (what the model
    chose for those rows: branches, ops or keep masks), both concatenated: what an artifact must reproduce."""
    rows = next(iter(inputs.values())).shape[0]
    outputs, decisions = [], []
    for start in range(0, rows, chunk):
        outputs.append(model({m: x[start : start + chunk] for m, x in inputs.items()}))
        decisions.append(decision())
    return torch.cat(outputs).numpy(), torch.cat(decisions).numpy()


def madds_agreement(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per exported graph (router, branches): FlopCounterMode's MAdds of its module against the ONNX graph's."""
    parts = [("router", manifest["router"])] if manifest.get("router") else []
    parts += [(f"branch {b['index']}", b) for b in manifest.get("branches", [])]
    parts += [(name, graph) for name, graph in manifest.get("graphs", {}).items() if "madds" in graph]
    rows = []
    for name, part in parts:
        measured, graph = float(part["madds"]), float(part["graph_madds"])
        relative = abs(graph - measured) / measured if measured else float(graph != 0)
        rows.append({"graph": name, "madds": measured, "graph_madds": graph, "relative_difference": relative})
    return rows


def verify_artifact(
    folder: Path, inputs: dict[str, np.ndarray], outputs: np.ndarray, choice: np.ndarray
) -> dict[str, Any]:
    """Run the artifact on `inputs` and compare with dynmm's `outputs` and `choice`: the branch per row (-1 where
    nothing is skipped) or, for AdaMML, the 0/1 keep decisions per clip, segment and modality. Returns the
    verification record (the caller writes it to FOLDER/verification.json)."""
    manifest = read_json(folder / MANIFEST, "an artifact manifest")
    result = run_isolated(folder, inputs)
    one, batched = result["outputs"], result["batched_outputs"]
    costs = madds_agreement(manifest)
    record: dict[str, Any] = {
        "rows": int(choice.shape[0]),
        "batch_1_max_abs_diff": float(np.abs(one - outputs).max()),
        "batched_max_abs_diff": float(np.abs(batched - outputs).max()),
        "batch_1_same_routing": float((result["choice"] == choice).mean()),
        "batched_same_routing": float((result["batched_choice"] == choice).mean()),
        "madds": costs,
        "tolerance": {"max_abs_diff": OUTPUT_TOLERANCE, "madds_relative": MADDS_TOLERANCE},
        "runtime": "onnxruntime + numpy, dynmm and torch not importable",
    }
    record["passed"] = bool(
        record["batch_1_max_abs_diff"] <= OUTPUT_TOLERANCE
        and record["batched_max_abs_diff"] <= OUTPUT_TOLERANCE
        and record["batch_1_same_routing"] == 1.0
        and record["batched_same_routing"] == 1.0
        and all(c["relative_difference"] <= MADDS_TOLERANCE for c in costs)
    )
    return record


def verify_and_record(folder: Path, inputs: dict[str, torch.Tensor], reference: tuple[np.ndarray, np.ndarray]) -> dict:
    """verify_artifact on the torch `inputs` against dynmm's (outputs, decisions); the record is also written to
    FOLDER/verification.json."""
    outputs, decisions = reference
    record = verify_artifact(folder, {m: x.numpy() for m, x in inputs.items()}, outputs, decisions)
    atomic_write_json(folder / VERIFICATION, record)
    return record
