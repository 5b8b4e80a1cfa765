"""Export and reload a static fusion model (model_type "static")."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dynmm.engine.export import Builder, ExportedModel, load_export
from dynmm.nn.static_model import build_static_model


def build_static(exported: ExportedModel) -> nn.Module:
    return build_static_model(exported.model_config, exported.specs, exported.task)


STATIC_BUILDERS: dict[str, Builder] = {"static": build_static}


def load_static(directory: str | Path) -> ExportedModel:
    """A static run's exported model (a modality-level expert, an MFAS backbone, a baseline)."""
    return load_export(directory, STATIC_BUILDERS)
