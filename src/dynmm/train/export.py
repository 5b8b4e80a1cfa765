"""Export a trained model as `model.safetensors` + `model.json`, and load it back without pickle.

Why: Lightning `.ckpt` files are pickles (they can execute code when loaded) and tie a model to our class
layout at training time. The exported pair holds only tensors and a JSON description from which the model is
rebuilt, so a user can share and load it safely.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from dynmm.config import (
    AdaMMLConfig,
    DataConfig,
    ExpertConfig,
    FusionLevelConfig,
    GateConfig,
    ModelConfig,
    from_dict,
)
from dynmm.data.base import MultimodalDataset
from dynmm.errors import ConfigError, DataError
from dynmm.io import atomic_write, atomic_write_json
from dynmm.models.fusion_level import build_fusion_level
from dynmm.models.modality_level import build_modality_level
from dynmm.models.static import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec
from dynmm.train.adamml_module import build_adamml

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
DESCRIPTION = "model.json"


@dataclasses.dataclass
class ExportedModel:
    """A model rebuilt from an export, with what is needed to evaluate it again.

    `model_type` is "static" (one fusion model, `model_config`), "dynmm" (a ModalityLevelDynMM whose experts
    are `experts`, each a name and a full ModelConfig, and whose gate is `gate`), "fusion_level" (a
    FusionLevelDynMM of model.json's `fusion_level` section) or "adamml" (an AdaMML of its `adamml` section,
    in dispatch mode with its learned policy).
    """

    model: nn.Module
    model_config: ModelConfig
    data_config: DataConfig
    specs: dict[str, ModalitySpec]
    task: TaskSpec
    extra: dict[str, Any]
    model_type: str = "static"
    experts: list[tuple[str, ModelConfig]] = dataclasses.field(default_factory=list)
    gate: GateConfig | None = None


MODEL_TYPES = ("static", "dynmm", "fusion_level", "adamml")


def export_model(
    directory: Path,
    model: nn.Module,
    model_config: ModelConfig,
    data_config: DataConfig,
    specs: dict[str, ModalitySpec],
    task: TaskSpec,
    extra: dict[str, Any] | None = None,
    experts: list[tuple[str, ModelConfig]] | None = None,
    gate: GateConfig | None = None,
    fusion_level: FusionLevelConfig | None = None,
    adamml: AdaMMLConfig | None = None,
) -> None:
    """Write weights first, then the description: a description on disk always has its weights.

    Pass `experts` and `gate` for a modality-level DynMM model (its experts' full configs and its gate's),
    `fusion_level` or `adamml` for those methods' models (the section they were built from).
    """
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    dynmm = experts is not None and gate is not None
    model_type = "fusion_level" if fusion_level is not None else "dynmm" if dynmm else "static"
    model_type = "adamml" if adamml is not None else model_type
    description = {
        "format_version": FORMAT_VERSION,
        "model_type": model_type,
        "fusion_level": dataclasses.asdict(fusion_level) if fusion_level is not None else None,
        "adamml": dataclasses.asdict(adamml) if adamml is not None else None,
        "model": dataclasses.asdict(model_config),
        "experts": [{"name": name, "model": dataclasses.asdict(cfg)} for name, cfg in experts or []],
        "gate": dataclasses.asdict(gate) if gate is not None else None,
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
    model_type = description.get("model_type")
    if description.get("format_version") != FORMAT_VERSION or model_type not in MODEL_TYPES:
        raise DataError(
            f"{desc_path}: unsupported export (format_version={description.get('format_version')!r}, "
            f"model_type={model_type!r}); expected version {FORMAT_VERSION}, type one of {list(MODEL_TYPES)}"
        )
    try:
        model_config = from_dict(ModelConfig, description["model"], "model")
        data_config = from_dict(DataConfig, description["data"], "data")
        specs = {
            name: ModalitySpec(name, tuple(int(d) for d in s["shape"]), s["kind"])
            for name, s in description["modalities"].items()
        }
        task = TaskSpec(description["task"]["kind"], int(description["task"]["num_classes"]))
        experts = [
            (e.name, from_dict(ModelConfig, e.model, f"experts.{e.name}"))
            for e in (from_dict(ExpertConfig, raw, "experts") for raw in description.get("experts") or [])
        ]
        gate = from_dict(GateConfig, description["gate"], "gate") if model_type == "dynmm" else None
        model: nn.Module
        if model_type == "adamml":
            model = build_adamml(from_dict(AdaMMLConfig, description["adamml"], "adamml"), specs, task)
        elif model_type == "fusion_level":
            model = build_fusion_level(from_dict(FusionLevelConfig, description["fusion_level"]), specs, task)
        elif gate is not None:
            built = [build_static_model(cfg, specs, task) for _, cfg in experts]
            model = build_modality_level(built, gate, specs)
        else:
            model = build_static_model(model_config, specs, task)
    except (KeyError, TypeError, ConfigError) as err:
        raise DataError(f"{desc_path} does not describe a model: {err}") from err
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
    extra = description.get("extra", {})
    return ExportedModel(model, model_config, data_config, specs, task, extra, str(model_type), experts, gate)


Model = TypeVar("Model", bound=nn.Module)


def load_finished(
    run_dir: Path, kind: type[Model], analysis_key: str, what: str
) -> tuple[dict[str, Any], Model, MultimodalDataset]:
    """A finished run's metrics.json (which must hold `analysis_key`), its exported model (a `kind`) and its data
    set's test split: what rebuilding a report needs. `what` names the run kind in the errors."""
    from dynmm.data.registry import load_dataset

    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise DataError(f"{metrics_path} is missing: is {run_dir} a finished {what} run?")
    metrics = json.loads(metrics_path.read_text())
    if analysis_key not in metrics:
        raise DataError(f"{metrics_path} has no {what} analysis; was the run finished by this version?")
    exported = load_exported(run_dir)
    if not isinstance(exported.model, kind):
        raise DataError(f"{run_dir} holds a {exported.model_type} model ({what} expected)")
    test = load_dataset(exported.data_config.name, **exported.data_config.options)["test"]
    return metrics, exported.model, test
