"""`dynmm bench export RUN` for AdaMML: per-clip batch-1 latency of the exported segment graphs (policy step, then
only the kept modalities' nets) against exported late fusion over all segments, and the same two eager."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

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
from dynmm.deploy.runner import SegmentArtifact, session
from dynmm.engine.timing import load_trained
from dynmm.methods.adamml.deploy_run import dispatch_reference, write_segment_artifact
from dynmm.methods.adamml.export import ADAMML_BUILDERS
from dynmm.methods.adamml.model import AdaMML


class LateFusionAll(nn.Module):
    """Every net on every segment, fused as AdaMML fuses (all kept): the baseline AdaMML is measured against."""

    def __init__(self, model: AdaMML) -> None:
        super().__init__()
        self.model = model

    def forward(self, *tensors: Tensor) -> Tensor:
        model = self.model
        routed = {
            m: model.nets[m](x.flatten(0, 1)).unflatten(0, x.shape[:2])
            for m, x in zip(model.modalities, tensors, strict=True)
        }
        keep = {m: routed[m].new_ones(routed[m].shape[:2]) for m in model.modalities}
        return model.fuse(routed, keep)


def bench_adamml_export(run_dir: Path, requests: int = 1000, threads: Sequence[int] = (1, 0)) -> dict[str, Any]:
    """Latency percentiles per clip, per runtime and thread count (0 = all threads)."""
    model, test_inputs = load_trained(run_dir, ADAMML_BUILDERS, AdaMML, "an AdaMML")
    inputs = {m: test_inputs[m].contiguous() for m in model.modalities}
    arrays = {m: x.numpy() for m, x in inputs.items()}
    clips = next(iter(arrays.values())).shape[0]
    rows = cycled_rows(clips, requests)
    _, keep = dispatch_reference(model, inputs)
    paid = model.realized_madds({m: torch.from_numpy(keep[..., i]) for i, m in enumerate(model.modalities)}, True)
    full = model.full_madds()
    predicted = full / float(paid.numpy()[rows].mean())
    results: dict[str, Any] = {
        "run": str(run_dir),
        "environment": bench_environment(),
        "baseline": "late fusion over all segments (every net on every segment)",
        "requests": requests,
        "test_clips": clips,
        "madds": {
            "late_fusion": full,
            "dynamic_as_routed": float(paid.numpy()[rows].mean()),
            "policy": model.costs["policy"],
        },
        "keep_rate": {m: float(keep[rows, :, i].mean()) for i, m in enumerate(model.modalities)},
        "settings": [],
    }
    model.set_mode("dispatch")
    one = [{m: x[r : r + 1] for m, x in inputs.items()} for r in range(min(clips, requests))]
    with tempfile.TemporaryDirectory(prefix="dynmm_bench_adamml_") as tmp:
        folder = Path(tmp)
        write_segment_artifact(model, inputs, folder / "dynamic", {})
        late_graph = LateFusionAll(model).eval()
        two = [inputs[m][:2] for m in model.modalities]
        save_graph(late_graph, two, model.modalities, ["outputs"], folder / "late_fusion.onnx", "onnx", True)
        for onnx_threads, torch_threads in thread_counts(threads):
            timed = {"onnxruntime": _onnx(folder, arrays, rows, onnx_threads), "eager": _eager(model, one, rows)}
            for runtime, times in timed.items():
                base, dynamic = summary(times["late_fusion"]), summary(times["dynamic"])
                results["settings"].append(
                    {
                        "runtime": runtime,
                        "threads": torch_threads,
                        "baseline": base,
                        "dynamic": dynamic,
                        "speedups": {"dynamic": realized(base, dynamic, predicted)},
                        "parts": {k: summary(v) for k, v in times.items() if k not in ("dynamic", "late_fusion")},
                    }
                )
    model.set_policy_mode("learned")
    return results


def _onnx(
    folder: Path, arrays: dict[str, np.ndarray], rows: Sequence[int], threads: int | None
) -> dict[str, np.ndarray]:
    """onnxruntime per-clip latency: the segment artifact (through its runner) and late fusion's graph."""
    artifact = SegmentArtifact(folder / "dynamic", threads)
    timed = {
        "dynamic": time_requests(lambda r: artifact.predict({m: x[r : r + 1] for m, x in arrays.items()}), rows),
        "late_fusion": time_requests(onnx_request(session(folder / "late_fusion.onnx", threads), arrays), rows),
        "policy": time_requests(onnx_request(artifact.policy, arrays), rows),
    }
    steps = artifact.manifest["segments"]
    for m, net in artifact.nets.items():  # where the time goes: one call on 1 segment and on all of them
        for n in (1, steps):
            timed[f"net_{m}_{n}_segments"] = time_requests(_segments(net, m, arrays[m], n), rows)
    return timed


def _segments(net: Any, modality: str, clips: np.ndarray, count: int) -> Callable[[int], Any]:
    """One call of a modality's net on the first `count` segments of clip r."""
    return lambda r: net.run(None, {modality: clips[r, :count]})


def _eager(model: AdaMML, one: list[dict[str, Tensor]], rows: Sequence[int]) -> dict[str, np.ndarray]:
    """Eager per-clip latency: the learned policy with dispatch, and late fusion over all segments."""
    with torch.no_grad():
        model.set_policy_mode("learned")
        dynamic = time_requests(lambda r: model(one[r % len(one)]), rows)
        model.set_policy_mode("all")
        late = time_requests(lambda r: model(one[r % len(one)]), rows)
    model.set_policy_mode("learned")
    return {"dynamic": dynamic, "late_fusion": late}
