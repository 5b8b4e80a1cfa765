"""Export and reload a fusion-level DynMM model (model_type "fusion_level"): its config section goes into
model.json, from which the two-branch network, cells and gate are rebuilt."""

from __future__ import annotations

from torch import nn

from dynmm.config import from_dict
from dynmm.engine.export import Builder, ExportedModel
from dynmm.methods.fusion_level.config import FusionLevelConfig
from dynmm.methods.fusion_level.model import build_fusion_level


def build_exported_fusion_level(exported: ExportedModel) -> nn.Module:
    section = from_dict(FusionLevelConfig, exported.description["fusion_level"], "fusion_level")
    return build_fusion_level(section, exported.specs, exported.task)


FUSION_LEVEL_BUILDERS: dict[str, Builder] = {"fusion_level": build_exported_fusion_level}
