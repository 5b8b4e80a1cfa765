"""The first training stage of a paper setup, built as its recipe builds it, for `dynmm bench paper-size`.

Why its own module: the recipes run every stage, evaluation and export in one call; the benchmark times one
epoch of the first stage only, on the same LightningModule, data module and Trainer settings (`engine.fit`).

- modality-level DynMM: stage I trains each expert as a static run; the benchmark trains the expert that reads
  the most modalities (late fusion: every modality is loaded and every encoder runs);
- fusion-level DynMM: stage I, the supernet on random paths;
- AdaMML: the warmup phase (policy off, every segment through every modality's net).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl

from dynmm.config import RunConfig, TrainConfig, section_of
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.engine.run_folder import monitor_for
from dynmm.engine.stages import stage_train
from dynmm.errors import ConfigError


@dataclass
class FirstStage:
    """What `engine.fit.fit` needs to train one stage, and a line saying which stage it is."""

    description: str
    module: pl.LightningModule
    train: TrainConfig
    monitor: tuple[str, str]
    skips_parameters: bool


def _modality_level(config: RunConfig, data: MultimodalDataModule) -> FirstStage:
    from dynmm.engine.module import SupervisedModule
    from dynmm.methods.modality_level.config import DynMMConfig
    from dynmm.methods.modality_level.recipe import expert_model
    from dynmm.nn.static_model import build_static_model

    dyn = section_of(config, "dynmm", DynMMConfig)
    info = data.info
    models = [(e, expert_model(config, e)) for e in dyn.experts]
    width = {e.name: len(m.modalities or info.modalities) for e, m in models}
    expert, model_config = max(models, key=lambda pair: width[pair[0].name])
    train = stage_train(config, dyn.expert_train, "dynmm.expert_train")
    model = build_static_model(model_config, info.modalities, info.task)
    module = SupervisedModule(model, info.task, train.lr, train.weight_decay, train.optimizer)
    description = f"stage I, expert {expert.name!r} ({width[expert.name]} modalities; a static run)"
    return FirstStage(description, module, train, monitor_for(train, info.task), False)


def _fusion_level(config: RunConfig, data: MultimodalDataModule) -> FirstStage:
    from dynmm.methods.fusion_level.config import FusionLevelConfig
    from dynmm.methods.fusion_level.model import build_fusion_level
    from dynmm.methods.fusion_level.module import FusionLevelModule
    from dynmm.methods.fusion_level.recipe import SUPERNET_MONITOR
    from dynmm.relax import TemperatureSchedule

    fl = section_of(config, "fusion_level", FusionLevelConfig)
    info = data.info
    train = stage_train(config, fl.supernet_train, "fusion_level.supernet_train")
    model = build_fusion_level(fl, info.modalities, info.task)
    tau = TemperatureSchedule("exponential", fl.tau_start, fl.tau_end, max(train.max_epochs, 1))
    module = FusionLevelModule(
        model, info.task, "supernet", train.lr, train.weight_decay, train.optimizer, fl.resource_weight, tau
    )
    return FirstStage("stage I, supernet on random paths", module, train, SUPERNET_MONITOR, True)


def _adamml(config: RunConfig, data: MultimodalDataModule) -> FirstStage:
    from dynmm.methods.adamml.config import AdaMMLConfig
    from dynmm.methods.adamml.module import AdaMMLModule, build_adamml, resolve_lambdas
    from dynmm.methods.adamml.recipe import MONITORS
    from dynmm.relax import TemperatureSchedule

    ad = section_of(config, "adamml", AdaMMLConfig)
    info = data.info
    train = stage_train(config, ad.warmup_train, "adamml.warmup_train")
    model = build_adamml(ad, info.modalities, info.task, config.seed)
    tau = TemperatureSchedule("multiplicative", ad.tau_start, factor=ad.tau_factor)
    module = AdaMMLModule(
        model, info.task, "warmup", resolve_lambdas(ad, model), ad.gamma, tau, train.lr, train.weight_decay,
        train.optimizer,
    )  # fmt: skip
    return FirstStage("warmup phase (policy off, every segment)", module, train, MONITORS["warmup"], False)


BUILDERS = {"modality_level": _modality_level, "fusion_level": _fusion_level, "adamml": _adamml}
"""Method name (dynmm.methods registry) -> the builder of its first training stage."""


def first_stage(config: RunConfig, data: MultimodalDataModule, overrides: dict[str, Any]) -> FirstStage:
    """The first training stage of `config` on `data` (set up), its `train` settings with `overrides` merged in."""
    from dynmm.methods.registry import method_for

    method = method_for(config).name
    if method not in BUILDERS:
        raise ConfigError(f"dynmm bench paper-size has no first stage for {method} configs ({config.name})")
    stage = BUILDERS[method](config, data)
    stage.train = stage.train.model_copy(update=overrides)
    return stage
