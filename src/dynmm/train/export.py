"""Export a trained model as `model.safetensors` + `model.json`, and load it back without pickle.

Why: Lightning `.ckpt` files are pickles (they can execute code when loaded) and tie a model to our class
layout at training time. The exported pair holds only tensors and a JSON description from which the model is
rebuilt, so a user can share and load it safely.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar, get_args, get_type_hints

import torch
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
from dynmm.io import atomic_write, atomic_write_json, read_json
from dynmm.models.fusion_level import build_fusion_level
from dynmm.models.modality_level import build_modality_level
from dynmm.models.static import build_static_model
from dynmm.specs import ModalityKind, ModalitySpec, TaskSpec
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
    description = read_json(desc_path, "the export's model description")
    model_type = description.get("model_type")
    if description.get("format_version") != FORMAT_VERSION or model_type not in MODEL_TYPES:
        raise DataError(
            f"{desc_path}: unsupported export (format_version={description.get('format_version')!r}, "
            f"model_type={model_type!r}); expected version {FORMAT_VERSION}, type one of {list(MODEL_TYPES)}"
        )
    try:
        model_config = from_dict(ModelConfig, description["model"], "model")
        data_config = from_dict(DataConfig, description["data"], "data")
        specs = {name: _spec(name, s) for name, s in description["modalities"].items()}
        task = _task(description["task"])
        if data_config.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {data_config.batch_size}")
        extra = description.get("extra", {})
        if not isinstance(extra, dict):
            raise ConfigError(f"extra must be a mapping, got {type(extra).__name__}")
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
    except (KeyError, TypeError, ValueError, AttributeError) as err:  # ValueError includes ConfigError
        raise DataError(f"{desc_path} does not describe a model: {type(err).__name__}: {err}") from err
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise DataError(f"{weights_path} is not a readable safetensors file ({err})") from err
    _check_tensors(weights_path, state, model.state_dict())
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
    return ExportedModel(model, model_config, data_config, specs, task, extra, str(model_type), experts, gate)


def _spec(name: str, raw: Any) -> ModalitySpec:
    """A modality of model.json: a list of positive integer sizes and a known kind (not whatever int() makes of
    it: 100.7 must not silently become 100)."""
    shape, kind = raw["shape"], raw["kind"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"modality {name!r}: shape must be a list of positive integers, got {shape!r}")
    if kind not in get_args(ModalityKind):
        raise ConfigError(f"modality {name!r}: kind must be one of {list(get_args(ModalityKind))}, got {kind!r}")
    return ModalitySpec(name, tuple(shape), kind)


def _task(raw: Any) -> TaskSpec:
    kind, num_classes = raw["kind"], raw["num_classes"]
    kinds = get_args(get_type_hints(TaskSpec)["kind"])
    if kind not in kinds or not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ConfigError(f"task must have kind in {list(kinds)} and num_classes >= 0, got {raw!r}")
    return TaskSpec(kind, num_classes)


def _check_tensors(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Refuse tensors of another dtype than the model's (load_state_dict would cast int or float64 silently) and
    non-finite weights (a diverged or damaged model answers NaN for every input)."""
    for key, tensor in state.items():
        if key in expected and tensor.dtype != expected[key].dtype:
            raise DataError(f"{path}: tensor {key!r} has dtype {tensor.dtype}, the model expects {expected[key].dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(f"{path}: tensor {key!r} holds NaN or inf values; the exported model is broken")


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
    metrics = read_json(metrics_path, f"the metrics of a {what} run")
    if analysis_key not in metrics:
        raise DataError(f"{metrics_path} has no {what} analysis; was the run finished by this version?")
    exported = load_exported(run_dir)
    if not isinstance(exported.model, kind):
        raise DataError(f"{run_dir} holds a {exported.model_type} model ({what} expected)")
    test = load_dataset(exported.data_config.name, **exported.data_config.options)["test"]
    return metrics, exported.model, test
