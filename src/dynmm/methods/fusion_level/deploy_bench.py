"""`dynmm bench export RUN` for fusion-level DynMM: batch-1 latency of the exported per-image graph (its Ifs skip
the depth stages and ops the gate did not choose) against the same network exported as a static fusion with the
costliest op in every cell, and the same two eager."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynmm.deploy.graphs import save_graph
from dynmm.deploy.latency import (
    bench_environment,
    cycled_rows,
    onnx_request,
    realized,
    summary,
    thread_counts,
    time_requests,
)
from dynmm.deploy.runner import session
from dynmm.engine.timing import load_trained
from dynmm.errors import ConfigError
from dynmm.methods.fusion_level.deploy import FusionGraph, StaticFusionGraph
from dynmm.methods.fusion_level.deploy_run import dispatch_reference
from dynmm.methods.fusion_level.export import FUSION_LEVEL_BUILDERS
from dynmm.methods.fusion_level.model import FusionLevelDynMM


def _static_op(model: FusionLevelDynMM) -> str:
    """The cells' costliest op that reads depth: the static fusion the dynamic model saves against."""
    cells = torch.tensor(model.costs["cells"]).sum(dim=0)
    reads = model.needs_aux.all(dim=0)
    return model.op_names[int(torch.where(reads, cells, torch.full_like(cells, -1.0)).argmax())]


def bench_fusion_export(run_dir: Path, requests: int = 1000, threads: Sequence[int] = (1, 0)) -> dict[str, Any]:
    """Latency percentiles per image, per runtime and thread count (0 = all threads)."""
    model, test_inputs = load_trained(run_dir, FUSION_LEVEL_BUILDERS, FusionLevelDynMM, "a fusion-level DynMM")
    if model.routing_is_fixed:
        raise ConfigError(f"{run_dir}: bench export needs a gated fusion-level DynMM run")
    names = [model.primary, model.secondary]
    inputs = {m: test_inputs[m].contiguous() for m in names}
    arrays = {m: x.numpy() for m, x in inputs.items()}
    images = next(iter(arrays.values())).shape[0]
    rows = cycled_rows(images, requests)
    _, choice = dispatch_reference(model, inputs)
    paid = model.realized_madds(torch.from_numpy(choice)).numpy()[rows].mean()
    op = _static_op(model)
    full = model.realized_madds(torch.full((1, model.num_cells), model.op_names.index(op)), gate_ran=False)
    predicted = float(full[0]) / float(paid)
    results: dict[str, Any] = {
        "run": str(run_dir),
        "environment": bench_environment(),
        "requests": requests,
        "test_images": images,
        "baseline": f"static fusion: {op} in every cell, the whole depth encoder, no gate",
        "madds": {"static": float(full[0]), "dynamic_as_routed": float(paid)},
        "settings": [],
    }
    one = [{m: x[r : r + 1] for m, x in inputs.items()} for r in range(min(images, requests))]
    with tempfile.TemporaryDirectory(prefix="dynmm_bench_fusion_") as tmp:
        folder = Path(tmp)
        model.eval().set_mode("dispatch")
        args = [inputs[m][:1] for m in names]
        save_graph(FusionGraph(model), args, names, ["outputs", "choice"], folder / "dynamic.onnx", "onnx")
        static = StaticFusionGraph(model, op).eval()
        save_graph(static, args, names, ["outputs"], folder / "static.onnx", "onnx")
        for onnx_threads, torch_threads in thread_counts(threads):
            timed = {
                "onnxruntime": _onnx(folder, arrays, rows, onnx_threads),
                "eager": _eager(model, static, one, rows),
            }
            for runtime, times in timed.items():
                base, dynamic = summary(times["static"]), summary(times["dynamic"])
                results["settings"].append(
                    {
                        "runtime": runtime,
                        "threads": torch_threads,
                        "baseline": base,
                        "dynamic": dynamic,
                        "speedups": {"dynamic vs static": realized(base, dynamic, predicted)},
                    }
                )
    return results


def _onnx(
    folder: Path, arrays: dict[str, np.ndarray], rows: Sequence[int], threads: int | None
) -> dict[str, np.ndarray]:
    """onnxruntime per-image latency of the dynamic and the static graph."""
    names = ("dynamic", "static")
    return {
        name: time_requests(onnx_request(session(folder / f"{name}.onnx", threads), arrays), rows) for name in names
    }


def _eager(
    model: FusionLevelDynMM, static: StaticFusionGraph, one: list[dict[str, torch.Tensor]], rows: Sequence[int]
) -> dict[str, np.ndarray]:
    names = [model.primary, model.secondary]
    with torch.no_grad():
        return {
            "dynamic": time_requests(lambda r: model(one[r % len(one)]), rows),
            "static": time_requests(lambda r: static(*(one[r % len(one)][m] for m in names)), rows),
        }
