"""Fusion-level DynMM as one command: stage I supernet on random paths, stage II gate + network with the
resource loss (τ decayed exponentially), evaluation and export; or one static single-op baseline.

Layout: runs/<name>/{supernet,gate | static}/ (checkpoints, logs, weights + done.json per finished stage),
model.safetensors/.json, metrics.json. With `supernet_dir` stage I lives there instead, shared by several runs
(a λ sweep); it records what it was trained for, and a run built differently refuses to use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from dynmm.config import RunConfig, dump_config, section_of, to_dict
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.engine.distributed import is_main_process, on_main_process
from dynmm.engine.export import export_model
from dynmm.engine.fit import fit_stage
from dynmm.engine.run_folder import (
    CONFIG_FILE,
    METRICS_FILE,
    RunResult,
    check_run_dir,
    monitor_for,
    prepare_run_dir,
    read_metrics,
    shared_stage_dir,
    stage_description,
)
from dynmm.engine.stages import stage_train
from dynmm.errors import ConfigError
from dynmm.io import atomic_write_json, atomic_write_text
from dynmm.methods.fusion_level.config import FusionLevelConfig
from dynmm.methods.fusion_level.evaluate import evaluate_fusion_level
from dynmm.methods.fusion_level.model import FusionLevelDynMM, build_fusion_level
from dynmm.methods.fusion_level.module import FusionLevelModule, Stage
from dynmm.methods.fusion_level.report import analyse, write_fusion_report
from dynmm.nn.local_weights import read_state_dict
from dynmm.relax import TemperatureSchedule

SUPERNET_MONITOR = ("val/loss", "min")
GATE_MONITOR = ("val/objective", "min")
SUPERNET_FOR = "supernet_for.json"
"""What a shared stage I was trained for: everything that shapes its weights (not λ or stage II settings)."""


def fusion_level_section(config: RunConfig) -> FusionLevelConfig:
    return section_of(config, "fusion_level", FusionLevelConfig)


def supernet_description(config: RunConfig) -> dict[str, Any]:
    keys = (
        "layout",
        "ops",
        "decoder_width",
        "gate_width",
        "primary",
        "routing",
        "stem_op",
        "init_weights",
        "supernet_train",
    )
    return stage_description(config, "fusion_level", keys)


def shared_supernet_dir(config: RunConfig) -> Path:
    """The shared stage I folder, claimed for this configuration or checked against the one it holds."""
    fl = fusion_level_section(config)
    assert fl.supernet_dir is not None
    description = supernet_description(config)
    return shared_stage_dir(Path(fl.supernet_dir), description, SUPERNET_FOR, "fusion_level.supernet_dir", "supernet")


def init_encoders(model: FusionLevelDynMM, init_weights: Mapping[str, str]) -> None:
    """Load each named modality's encoder from its local torchvision checkpoint, before anything trains."""
    encoders = {model.primary: model.main, model.secondary: model.aux}
    for modality, path in init_weights.items():
        if modality not in encoders:
            raise ConfigError(f"fusion_level.init_weights names {modality!r}; the encoders are {sorted(encoders)}")
        where = f"fusion_level.init_weights.{modality}"
        encoders[modality].load_torchvision_state_dict(read_state_dict(path, where))


def run_fusion_level_recipe(config: RunConfig, resume: bool = False) -> RunResult:
    fl = fusion_level_section(config)
    stages_train = {
        "supernet": stage_train(config, fl.supernet_train, "fusion_level.supernet_train"),
        "gate": stage_train(config, fl.gate_train, "fusion_level.gate_train"),
        "static": stage_train(config, {}, "train"),
    }
    if fl.tau_start <= 0 or fl.tau_end <= 0:
        raise ConfigError(f"fusion_level.tau_start and tau_end must be > 0, got {fl.tau_start}, {fl.tau_end}")
    check_run_dir(config, resume)
    # Every check that can refuse the configuration or its data runs before the run folder is created, so that
    # a refused start leaves nothing behind.
    data = MultimodalDataModule(
        config.data.name, config.data.batch_size, config.data.num_workers, config.seed, config.data.options
    )
    data.setup()
    info = data.info
    pl.seed_everything(config.seed, workers=True, verbose=False)
    model = build_fusion_level(fl, info.modalities, info.task)
    init_encoders(model, fl.init_weights)
    plan: list[tuple[Stage, tuple[str, str]]] = (
        [("static", monitor_for(config.train, info.task))]
        if fl.static_op is not None
        else [("supernet", SUPERNET_MONITOR), ("gate", GATE_MONITOR)]
    )
    shared = shared_supernet_dir(config) if fl.supernet_dir is not None and fl.static_op is None else None
    run_dir = prepare_run_dir(config, resume)
    if is_main_process():
        atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))

    stage_dirs = {stage: run_dir / stage for stage in ("supernet", "gate", "static")}
    if shared is not None:
        stage_dirs["supernet"] = shared
    summaries: dict[str, Any] = {}
    for stage, monitor in plan:
        train = stages_train[stage]
        tau = TemperatureSchedule("exponential", fl.tau_start, fl.tau_end, max(train.max_epochs, 1))
        module = FusionLevelModule(
            model,
            info.task,
            stage,
            train.lr,
            train.weight_decay,
            train.optimizer,
            fl.resource_weight,
            tau,
            budget=fl.budget,
            balance_weight=fl.balance_weight,
        )
        # Stage I's random paths and a static op skip ops (and the gate) in training; stage II trains dense.
        summaries[stage] = fit_stage(
            stage_dirs[stage], module, model, data, train, monitor, config.seed, skips_parameters=stage != "gate"
        )
        model.forced_choice = None
    model.eval()

    def evaluate_and_export() -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "valid": evaluate_fusion_level(model, data.val_dataloader(), info.task),
            "test": evaluate_fusion_level(model, data.test_dataloader(), info.task),
            "costs": model.costs,
            "stages": summaries,
        }
        metrics["madds_per_sample"] = metrics["test"]["madds_per_sample"]
        metrics.update(analyse(model, data.splits["test"], info.task))
        data_config = config.data.model_copy(update={"options": dict(data.options)})
        sections = {"fusion_level": to_dict(fl)}
        extra = {"metrics": metrics}
        export_model(
            run_dir, model, config.model, data_config, info.modalities, info.task, extra, "fusion_level", sections
        )
        atomic_write_json(run_dir / METRICS_FILE, metrics)
        write_fusion_report(run_dir, metrics, model, data.splits["test"], baselines=run_dir.parent)
        return metrics

    return RunResult(run_dir, on_main_process(evaluate_and_export, lambda: read_metrics(run_dir)))
