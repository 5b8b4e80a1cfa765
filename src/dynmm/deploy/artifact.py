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
    return [a[:1] for a in graph["args"]]


def _write(graph: dict[str, Any], folder: Path, stem: str, fmt: Format) -> dict[str, Any]:
    """Save one graph; returns its manifest entry (file, names, both MAdds counts per row)."""
    path = save_graph(
        graph["module"],
        graph["args"],
        graph["inputs"],
        graph["outputs"],
        folder / (stem + SUFFIX[fmt]),
        fmt,
        dynamic_batch=graph["dynamic"],
    )
    with torch.no_grad(), inputs_checked():
        measured = count_madds(lambda: graph["module"](*_one_row(graph))).total
    entry = {"graph": path.name, "reads": graph["inputs"], "outputs": graph["outputs"], "madds": measured}
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
        **about,
        "skips": graphs["skips"],
        "inputs": [{"name": m, "shape": list(specs[m].shape), "dtype": "float32"} for m in specs],
        "model": "model" + SUFFIX[fmt],
        "router": None,
        "branches": [],
        "runner": RUNNER if fmt == "onnx" else None,
    }
    if graphs["router"] is not None:
        manifest["router"] = _write(graphs["router"], folder, "router", fmt)
        manifest["branches"] = [
            {"index": b["index"], **_write(b, folder, f"branch_{b['index']}", fmt)} for b in graphs["branches"]
        ]
    if fmt == "onnx":
        shutil.copyfile(Path(__file__).with_name("runner.py"), folder / RUNNER)
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest
