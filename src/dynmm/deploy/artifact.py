"""Write an artifact folder from a method's graphs: each graph file, the standalone runner and manifest.json,
with each graph's MAdds counted twice (FlopCounterMode on the torch module, and on the exported ONNX graph) so
that a reader can see that the exported branches are the measured ones."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from dynmm.cost import count_madds
from dynmm.deploy.graphs import SUFFIX, Format, save_graph
from dynmm.errors import ConfigError
from dynmm.io import atomic_write_json
from dynmm.specs import ModalitySpec
from dynmm.validation import inputs_checked

MANIFEST = "manifest.json"
RUNNER = "dynmm_runner.py"
MADDS_TOLERANCE = 0.02
"""An exported graph's MAdds may differ from FlopCounterMode's count of its module by this fraction at most."""


def _one_row(graph: dict[str, Any]) -> list[torch.Tensor]:
    dims = graph.get("batch_dims") or [0] * len(graph["args"])
    return [a.narrow(dim, 0, 1) for a, dim in zip(graph["args"], dims, strict=True)]


def write_graph(graph: dict[str, Any], folder: Path, stem: str, fmt: Format) -> dict[str, Any]:
    """Save one graph; returns its manifest entry (file, names, both MAdds counts per row)."""
    path = save_graph(
        graph["module"],
        graph["args"],
        graph["inputs"],
        graph["outputs"],
        folder / (stem + SUFFIX[fmt]),
        fmt,
        dynamic_batch=graph["dynamic"],
        batch_dims=graph.get("batch_dims"),
    )
    entry: dict[str, Any] = {"graph": path.name, "reads": graph["inputs"], "outputs": graph["outputs"]}
    if not graph.get("count", True):  # a graph whose If nodes hold every path: its paths' costs are listed apart
        return entry
    with torch.no_grad(), inputs_checked():
        entry["madds"] = count_madds(lambda: graph["module"](*_one_row(graph))).total
    if fmt == "onnx":
        from dynmm.deploy.onnx_madds import onnx_madds

        entry["graph_madds"] = onnx_madds(path)
    return entry


def prepare_output(folder: Path) -> Path:
    """The artifact folder: new, empty, or an earlier artifact (its files are replaced); never a folder that
    holds anything else, so that an export cannot overwrite a user's files."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MANIFEST).is_file())):
        raise ConfigError(f"{folder} exists and is not an artifact folder; choose another --output")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_artifact(
    graphs: dict[str, Any], folder: Path, fmt: Format, specs: dict[str, ModalitySpec], about: dict[str, Any]
) -> dict[str, Any]:
    """Write `graphs` (model, router, branches; see a method's deploy module) into `folder`; returns the manifest.
    The batch-1 `model` graph's MAdds are not counted (an If holds every branch): its parts are."""
    folder.mkdir(parents=True, exist_ok=True)
    model = graphs["model"]
    save_graph(
        model["module"],
        model["args"],
        model["inputs"],
        model["outputs"],
        folder / ("model" + SUFFIX[fmt]),
        fmt,
        dynamic_batch=model["dynamic"],
    )
    manifest: dict[str, Any] = {
        "format": fmt,
        "layout": "routed",
        **about,
        "skips": graphs["skips"],
        "inputs": input_entries(specs),
        "model": "model" + SUFFIX[fmt],
        "router": None,
        "branches": [],
        "runner": RUNNER if fmt == "onnx" else None,
    }
    if graphs["router"] is not None:
        manifest["router"] = write_graph(graphs["router"], folder, "router", fmt)
        manifest["branches"] = [
            {"index": b["index"], **write_graph(b, folder, f"branch_{b['index']}", fmt)} for b in graphs["branches"]
        ]
    return finish_artifact(folder, manifest)


def finish_artifact(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Copy the runner beside ONNX graphs and write the manifest (last, so a folder with one is complete)."""
    if manifest["format"] == "onnx":
        shutil.copyfile(Path(__file__).with_name("runner.py"), folder / RUNNER)
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def input_entries(specs: dict[str, ModalitySpec]) -> list[dict[str, Any]]:
    """The manifest's inputs: name, per-row shape, dtype."""
    return [{"name": m, "shape": list(specs[m].shape), "dtype": "float32"} for m in specs]
