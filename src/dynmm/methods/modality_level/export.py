"""Export and reload a modality-level DynMM model (model_type "dynmm"): its experts' full model configs and its
gate's config go into model.json, from which the model is rebuilt without pickle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from dynmm.config import GateConfig, ModelConfig, encoder_options, from_dict, to_dict
from dynmm.engine.export import Builder, ExportedModel, load_export
from dynmm.errors import DataError
from dynmm.methods.modality_level.cascade import build_cascade
from dynmm.methods.modality_level.config import ExpertConfig
from dynmm.methods.modality_level.model import ModalityLevelDynMM, build_modality_level
from dynmm.nn.static_model import build_static_model, select_modalities
from dynmm.specs import ModalitySpec, TaskSpec

ROUTINGS = ("gate", "cascade")


def dynmm_sections(experts: list[tuple[str, ModelConfig]], gate: GateConfig, routing: str = "gate") -> dict[str, Any]:
    """What `export_model(..., "dynmm", sections)` records to rebuild the model: each expert's name and full model
    config (the run's `model` with the expert's keys merged), the gate's config, and the routing (a file without
    one is DynMM's own gate)."""
    sections = {"experts": [{"name": name, "model": to_dict(cfg)} for name, cfg in experts], "gate": to_dict(gate)}
    return sections if routing == "gate" else {**sections, "routing": routing}


def cascade_expert_models(
    models: Sequence[ModelConfig], specs: dict[str, ModalitySpec], source: Path | None = None
) -> list[ModelConfig]:
    """The experts' model configs for cascade routing: every later expert encodes the modalities it shares with
    the first one with the first one's encoder, loaded frozen from the first expert's run folder `source`
    (stage I, `kind: from_run`) or, without `source`, spelled out as the first expert's encoder options (what the
    export records, so that the model rebuilds without the experts' folders)."""
    cheap = models[0]
    cheap_modalities = set(select_modalities(cheap, specs))
    result = [cheap]
    for model in models[1:]:
        shared = [m for m in select_modalities(model, specs) if m in cheap_modalities]
        if source is None:
            replaced = {m: encoder_options(cheap, m) for m in shared}
        else:
            replaced = {m: {"kind": "from_run", "path": str(source)} for m in shared}
        result.append(model.model_copy(update={"encoders": {**model.encoders, **replaced}}))
    return result


def build_routed(
    routing: str,
    experts: Sequence[nn.Module],
    gate: GateConfig,
    specs: dict[str, ModalitySpec],
    task: TaskSpec,
    trained: bool = True,
) -> ModalityLevelDynMM:
    """The model of `routing` over these experts; `trained`: a cascade checks that the experts' shared
    encoders hold the same weights (a model rebuilt from an export is tied before its weights are loaded)."""
    if routing == "cascade":
        return build_cascade(experts, gate, specs, task, check=trained)
    return build_modality_level(experts, gate, specs)


def exported_experts(exported: ExportedModel) -> list[tuple[str, ModelConfig]]:
    """The experts' names and model configs recorded in a DynMM export."""
    return [
        (e.name, from_dict(ModelConfig, e.model, f"experts.{e.name}"))
        for e in (from_dict(ExpertConfig, raw, "experts") for raw in exported.description.get("experts") or [])
    ]


def build_exported_modality_level(exported: ExportedModel) -> nn.Module:
    gate = from_dict(GateConfig, exported.description["gate"], "gate")
    built = [build_static_model(cfg, exported.specs, exported.task) for _, cfg in exported_experts(exported)]
    routing = str(exported.description.get("routing", "gate"))
    if routing not in ROUTINGS:
        raise DataError(f"model.json: unknown routing {routing!r}; this version knows {list(ROUTINGS)}")
    return build_routed(routing, built, gate, exported.specs, exported.task, trained=False)


MODALITY_LEVEL_BUILDERS: dict[str, Builder] = {"dynmm": build_exported_modality_level}


def load_modality_level(directory: str | Path) -> ExportedModel:
    return load_export(directory, MODALITY_LEVEL_BUILDERS)
