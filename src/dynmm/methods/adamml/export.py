"""Export and reload an AdaMML model (model_type "adamml"): its config section goes into model.json; the
rebuilt model runs in dispatch mode with its learned policy."""

from __future__ import annotations

from torch import nn

from dynmm.config import from_dict
from dynmm.engine.export import Builder, ExportedModel
from dynmm.methods.adamml.config import AdaMMLConfig
from dynmm.methods.adamml.module import build_adamml


def build_exported_adamml(exported: ExportedModel) -> nn.Module:
    section = from_dict(AdaMMLConfig, exported.description["adamml"], "adamml")
    return build_adamml(section, exported.specs, exported.task)


ADAMML_BUILDERS: dict[str, Builder] = {"adamml": build_exported_adamml}
