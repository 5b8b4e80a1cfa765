"""Export a trained model as `model.safetensors` + `model.json`, and load it back without pickle.

Why: Lightning `.ckpt` files are pickles (they can execute code when loaded) and tie a model to our class
layout at training time. The exported pair holds only tensors and a JSON description from which the model is
rebuilt, so a user can share and load it safely.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_type_hints

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dynmm.config import DataConfig, ModelConfig, from_dict, to_dict
from dynmm.data.base import MultimodalDataset
from dynmm.errors import ConfigError, DataError
from dynmm.io import atomic_write, atomic_write_json, read_json
from dynmm.specs import ModalityKind, ModalitySpec, TaskSpec

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
DESCRIPTION = "model.json"


@dataclasses.dataclass
class ExportedModel:
    """A model rebuilt from an export, with what is needed to evaluate it again.

    `model_type` names the method's model ("static", "dynmm", "fusion_level", "adamml", ...); `description` is
    the whole of model.json, where a method keeps what else it needs to rebuild its model (a modality-level
    DynMM its `experts` and `gate`, fusion-level and AdaMML their config section).
    """

    model: nn.Module
    model_config: ModelConfig
    data_config: DataConfig
    specs: dict[str, ModalitySpec]
    task: TaskSpec
    extra: dict[str, Any]
    model_type: str = "static"
    description: dict[str, Any] = dataclasses.field(default_factory=dict)


Builder = Callable[[ExportedModel], nn.Module]
"""Rebuilds a method's (untrained) model from an export: `ExportedModel.model` is not set yet when it is called."""


def export_model(
    directory: Path,
    model: nn.Module,
    model_config: ModelConfig,
    data_config: DataConfig,
    specs: dict[str, ModalitySpec],
    task: TaskSpec,
    extra: dict[str, Any] | None = None,
    model_type: str = "static",
    sections: dict[str, Any] | None = None,
) -> None:
    """Write weights first, then the description: a description on disk always has its weights.

    `model_type` names the method that rebuilds it (a key of the builders `load_export` is given); `sections`
    are the method's own keys of model.json (e.g. its config section), from which its builder rebuilds it.
    """
    state = cpu_state_dict(model)
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    description = {
        "format_version": FORMAT_VERSION,
        "model_type": model_type,
        **(sections or {}),
        "model": to_dict(model_config),
        "data": to_dict(data_config),
        "modalities": {name: {"shape": list(s.shape), "kind": s.kind} for name, s in specs.items()},
        "task": {"kind": task.kind, "num_classes": task.num_classes},
        "extra": extra or {},
    }
    atomic_write_json(directory / DESCRIPTION, description)


def cpu_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The weights on the CPU, no two entries sharing memory: safetensors refuses shared tensors, and a module
    used twice (a cascade's shared encoder) appears under both names; each name gets its own copy, and loading
    writes the same values into the one module twice."""
    seen: set[int] = set()
    result = {}
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        pointer = value.untyped_storage().data_ptr()
        result[name] = value.clone() if pointer in seen else value
        seen.add(pointer)
    return result


def exported_model_type(directory: str | Path) -> str | None:
    """The `model_type` the export in `directory` names, read from model.json alone (None without one): which
    method's builder a run needs, known before anything is rebuilt."""
    path = Path(directory) / DESCRIPTION
    if not path.is_file():
        return None
    model_type = read_json(path, "the export's model description").get("model_type")
    return None if model_type is None else str(model_type)


def load_export(directory: str | Path, builders: Mapping[str, Builder]) -> ExportedModel:
    """Rebuild the model described by `model.json` with the builder of its `model_type` and load
    `model.safetensors` into it (strictly). `builders`: the model types the caller can rebuild (every method's,
    through `dynmm.methods.load_exported`, or one method's own)."""
    directory = Path(directory)
    desc_path, weights_path = directory / DESCRIPTION, directory / WEIGHTS
    for path in (desc_path, weights_path):
        if not path.is_file():
            raise DataError(f"no exported model here: {path} is missing (was the run finished?)")
    description = read_json(desc_path, "the export's model description")
    model_type = description.get("model_type")
    if description.get("format_version") != FORMAT_VERSION or model_type not in builders:
        raise DataError(
            f"{desc_path}: unsupported export (format_version={description.get('format_version')!r}, "
            f"model_type={model_type!r}); expected version {FORMAT_VERSION}, type one of {list(builders)}"
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
        exported = ExportedModel(
            nn.Identity(), model_config, data_config, specs, task, extra, str(model_type), description
        )
        model = builders[str(model_type)](exported)
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
    exported.model = model
    return exported


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
    run_dir: Path, builders: Mapping[str, Builder], kind: type[Model], analysis_key: str, what: str
) -> tuple[dict[str, Any], Model, MultimodalDataset]:
    """A finished run's metrics.json (which must hold `analysis_key`), its exported model (a `kind`, rebuilt by
    `builders`) and its data set's test split: what rebuilding a report needs. `what` names the run kind in the
    errors."""
    from dynmm.data.registry import load_dataset

    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise DataError(f"{metrics_path} is missing: is {run_dir} a finished {what} run?")
    metrics = read_json(metrics_path, f"the metrics of a {what} run")
    if analysis_key not in metrics:
        raise DataError(f"{metrics_path} has no {what} analysis; was the run finished by this version?")
    model_type = exported_model_type(run_dir)
    if model_type is not None and model_type not in builders:  # without model.json, load_export names it
        raise DataError(f"{run_dir} holds a {model_type} model ({what} expected)")
    exported = load_export(run_dir, builders)
    if not isinstance(exported.model, kind):
        raise DataError(f"{run_dir} holds a {exported.model_type} model ({what} expected)")
    test = load_dataset(exported.data_config.name, **exported.data_config.options)["test"]
    return metrics, exported.model, test
