"""Export a trained model as `model.safetensors` + `model.json`, and load it back without pickle.

Why: Lightning `.ckpt` files are pickles (they can execute code when loaded) and tie a model to our class
layout at training time. The exported pair holds only tensors and a JSON description from which the model is
rebuilt, so a user can share and load it safely.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from dynmm.config import DataConfig, ModelConfig, from_dict
from dynmm.errors import ConfigError, DataError
from dynmm.io import atomic_write, atomic_write_json
from dynmm.models.static import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
DESCRIPTION = "model.json"


@dataclasses.dataclass
class ExportedModel:
    """A model rebuilt from an export, with what is needed to evaluate it again."""

    model: nn.Module
    model_config: ModelConfig
    data_config: DataConfig
    specs: dict[str, ModalitySpec]
    task: TaskSpec
    extra: dict[str, Any]


def export_model(
    directory: Path,
    model: nn.Module,
    model_config: ModelConfig,
    data_config: DataConfig,
    specs: dict[str, ModalitySpec],
    task: TaskSpec,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write weights first, then the description: a description on disk always has its weights."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    description = {
        "format_version": FORMAT_VERSION,
        "model_type": "static",
        "model": dataclasses.asdict(model_config),
        "data": dataclasses.asdict(data_config),
        "modalities": {name: {"shape": list(s.shape), "kind": s.kind} for name, s in specs.items()},
        "task": {"kind": task.kind, "num_classes": task.num_classes},
        "extra": extra or {},
    }
    atomic_write_json(directory / DESCRIPTION, description)


def load_exported(directory: str | Path) -> ExportedModel:
    """Rebuild the model described by `model.json` and load `model.safetensors` into it (strictly)."""
    directory = Path(directory)
    desc_path, weights_path = directory / DESCRIPTION, directory / WEIGHTS
    for path in (desc_path, weights_path):
        if not path.is_file():
            raise DataError(f"no exported model here: {path} is missing (was the run finished?)")
    try:
        description = json.loads(desc_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{desc_path} is not valid JSON ({err}); the export is corrupt") from err
    if description.get("format_version") != FORMAT_VERSION or description.get("model_type") != "static":
        raise DataError(
            f"{desc_path}: unsupported export (format_version={description.get('format_version')!r}, "
            f"model_type={description.get('model_type')!r}); expected version {FORMAT_VERSION}, type 'static'"
        )
    try:
        model_config = from_dict(ModelConfig, description["model"], "model")
        data_config = from_dict(DataConfig, description["data"], "data")
        specs = {
            name: ModalitySpec(name, tuple(int(d) for d in s["shape"]), s["kind"])
            for name, s in description["modalities"].items()
        }
        task = TaskSpec(description["task"]["kind"], int(description["task"]["num_classes"]))
    except (KeyError, TypeError, ConfigError) as err:
        raise DataError(f"{desc_path} does not describe a model: {err}") from err
    model = build_static_model(model_config, specs, task)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise DataError(f"{weights_path} is not a readable safetensors file ({err})") from err
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        raise DataError(f"{weights_path} does not match {desc_path}: {str(err).splitlines()[-1]}") from err
    if result.missing_keys or result.unexpected_keys:
        raise DataError(
            f"{weights_path} does not match {desc_path}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    model.eval()
    return ExportedModel(model, model_config, data_config, specs, task, description.get("extra", {}))
