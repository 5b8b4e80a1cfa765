"""`dynmm bench export RUN`: batch-1 latency of the exported dynamic model against the exported static late
fusion and cheap expert (onnxruntime, one thread and all threads), and of the eager model, with the speedups the
measured MAdds predict."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynmm.data.registry import load_dataset
from dynmm.deploy.artifact import write_artifact
from dynmm.deploy.graphs import PositionalInputs, save_graph
from dynmm.deploy.latency import (
    bench_environment,
    cycled_rows,
    onnx_request,
    realized,
    summary,
    thread_counts,
    time_requests,
)
from dynmm.deploy.runner import Artifact, session
from dynmm.errors import ConfigError
from dynmm.methods.modality_level.deploy import deploy_graphs
from dynmm.methods.modality_level.deploy_run import dispatch_reference
from dynmm.methods.modality_level.export import exported_experts, load_modality_level
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.specs import Inputs


def _expert_graph(expert: torch.nn.Module, inputs: Inputs, path: Path) -> list[str]:
    """Export one expert as a static batch-1 graph; returns the inputs it reads."""
    names = [m for m in inputs if m in getattr(expert, "modalities", inputs)]
    save_graph(PositionalInputs(expert, names), [inputs[m][:1] for m in names], names, ["outputs"], path, "onnx")
    return names


def _by_branch(seconds: np.ndarray, choice: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    return {name: summary(seconds[choice == i]) for i, name in enumerate(names)}


def _eager(model: ModalityLevelDynMM, inputs: Inputs, rows: Sequence[int]) -> dict[str, np.ndarray]:
    """Eager batch-1 latency: the dynamic model in dispatch mode, and its last expert (late fusion) alone."""
    late = model.experts[-1]
    one = [{m: x[r : r + 1] for m, x in inputs.items()} for r in range(max(rows) + 1)]
    with torch.no_grad():
        return {
            "dynamic": time_requests(lambda r: model(one[r]), rows),
            "late_fusion": time_requests(lambda r: late(one[r]), rows),
        }


def _onnx(
    folder: Path, names: dict[str, list[str]], arrays: dict[str, np.ndarray], rows: Sequence[int], threads: int | None
) -> dict[str, np.ndarray]:
    """onnxruntime batch-1 latency: the dynamic artifact (through its runner) and each static graph."""
    artifact = Artifact(folder / "dynamic", threads)
    timed = {"dynamic": time_requests(lambda r: artifact.predict({m: x[r : r + 1] for m, x in arrays.items()}), rows)}
    for name, reads in names.items():
        timed[name] = time_requests(onnx_request(session(folder / f"{name}.onnx", threads), arrays, reads), rows)
    return timed


def _entry(
    timed: dict[str, np.ndarray], choice: np.ndarray, branch_names: list[str], predicted: dict[str, float]
) -> dict[str, Any]:
    """Percentiles of each timed model, and realized against predicted speedups over late fusion."""
    late, dynamic = summary(timed["late_fusion"]), summary(timed["dynamic"])
    entry: dict[str, Any] = {
        "baseline": late,
        "dynamic": dynamic,
        "dynamic_by_branch": _by_branch(timed["dynamic"], choice, branch_names),
        "speedups": {
            "routed cheap": realized(late, summary(timed["dynamic"][choice == 0]), predicted["dynamic_routed_cheap"]),
            "as routed": realized(late, dynamic, predicted["dynamic_as_routed"]),
        },
    }
    if "cheap_expert" in timed:
        entry["cheap_expert"] = summary(timed["cheap_expert"])
        entry["speedups"]["cheap expert"] = realized(late, entry["cheap_expert"], predicted["cheap_expert"])
    return entry


def bench_export(run_dir: Path, requests: int = 1000, threads: Sequence[int] = (1, 0)) -> dict[str, Any]:
    """Latency percentiles per runtime and thread count (0 = all threads); see the module docstring."""
    exported = load_modality_level(run_dir)
    model = exported.model
    if not isinstance(model, ModalityLevelDynMM) or model.soft:
        raise ConfigError(f"{run_dir}: bench export needs a modality-level DynMM run with a hard gate")
    test = load_dataset(exported.data_config.name, **exported.data_config.options)["test"]
    inputs = {m: test.inputs[m].contiguous() for m in model.specs}
    arrays = {m: x.numpy() for m, x in inputs.items()}
    available = next(iter(arrays.values())).shape[0]
    rows = cycled_rows(available, requests)
    _, choice_all = dispatch_reference(model, inputs)
    choice = choice_all[rows]
    branch_names = [name for name, _ in exported_experts(exported)]
    late_madds, cheap_madds = model.expert_madds[-1], model.expert_madds[0]
    routed = model.realized_madds(torch.from_numpy(choice_all)).numpy()
    predicted = {
        "dynamic_routed_cheap": late_madds / (model.gate_madds + model.path_madds[0]),
        "dynamic_as_routed": late_madds / float(routed[rows].mean()),
        "cheap_expert": late_madds / cheap_madds,
    }
    results: dict[str, Any] = {
        "run": str(run_dir),
        "environment": bench_environment(),
        "baseline": "late fusion: the last expert alone, exported static",
        "requests": requests,
        "test_rows": available,
        "madds": {
            "late_fusion": late_madds,
            "cheap_expert": cheap_madds,
            "dynamic_routed_cheap": model.gate_madds + model.path_madds[0],
            "dynamic_as_routed": float(routed[rows].mean()),
        },
        "routing_share": {n: float((choice == i).mean()) for i, n in enumerate(branch_names)},
        "settings": [],
    }
    with tempfile.TemporaryDirectory(prefix="dynmm_bench_export_") as tmp:
        folder = Path(tmp)
        write_artifact(deploy_graphs(model, inputs), folder / "dynamic", "onnx", model.specs, {})
        names = {
            "cheap_expert": _expert_graph(model.experts[0], inputs, folder / "cheap_expert.onnx"),
            "late_fusion": _expert_graph(model.experts[-1], inputs, folder / "late_fusion.onnx"),
        }
        for onnx_threads, torch_threads in thread_counts(threads):
            for runtime, timed in (
                ("onnxruntime", _onnx(folder, names, arrays, rows, onnx_threads)),
                ("eager", _eager(model, inputs, rows)),
            ):
                entry = _entry(timed, choice, branch_names, predicted)
                results["settings"].append({"runtime": runtime, "threads": torch_threads, **entry})
    return results
