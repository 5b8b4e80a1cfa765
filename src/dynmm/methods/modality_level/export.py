"""Export and reload a modality-level DynMM model (model_type "dynmm"): its experts' full model configs and its
gate's config go into model.json, from which the model is rebuilt without pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from dynmm.config import GateConfig, ModelConfig, from_dict, to_dict
from dynmm.engine.export import Builder, ExportedModel, load_export
from dynmm.methods.modality_level.config import ExpertConfig
from dynmm.methods.modality_level.model import build_modality_level
from dynmm.nn.static_model import build_static_model


def dynmm_sections(experts: list[tuple[str, ModelConfig]], gate: GateConfig) -> dict[str, Any]:
    """What `export_model(..., "dynmm", sections)` records to rebuild the model: each expert's name and full model
    config (the run's `model` with the expert's keys merged), and the gate's config."""
    return {"experts": [{"name": name, "model": to_dict(cfg)} for name, cfg in experts], "gate": to_dict(gate)}


def exported_experts(exported: ExportedModel) -> list[tuple[str, ModelConfig]]:
    """The experts' names and model configs recorded in a DynMM export."""
    return [
        (e.name, from_dict(ModelConfig, e.model, f"experts.{e.name}"))
        for e in (from_dict(ExpertConfig, raw, "experts") for raw in exported.description.get("experts") or [])
    ]


def build_exported_modality_level(exported: ExportedModel) -> nn.Module:
    gate = from_dict(GateConfig, exported.description["gate"], "gate")
    built = [build_static_model(cfg, exported.specs, exported.task) for _, cfg in exported_experts(exported)]
    return build_modality_level(built, gate, exported.specs)


MODALITY_LEVEL_BUILDERS: dict[str, Builder] = {"dynmm": build_exported_modality_level}


def load_modality_level(directory: str | Path) -> ExportedModel:
    return load_export(directory, MODALITY_LEVEL_BUILDERS)
