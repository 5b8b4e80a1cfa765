"""The modality-level DynMM recipe as one command, resumable from any stage.

Layout of a DynMM run directory:
    config.yaml                   the resolved configuration
    experts/<name>/               stage I: one ordinary static run per expert (reused when finished)
    gate/, finetune/              stages II and III: checkpoints/, logs/, and weights.safetensors + done.json
                                  once the stage is complete (a restarted recipe skips completed stages)
    model.safetensors/.json       the exported DynMM model
    metrics.json, routing.json    final evaluation (see report.py)

With several processes every rank runs every stage (each stage's Trainer reuses the process group); the files
are written by the main process only, and the other ranks wait for it (engine/distributed.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from dynmm.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    check_run_name,
    deep_merge,
    dump_config,
    from_dict,
    section_of,
    to_dict,
)
from dynmm.data import mosi
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.data.registry import dataset_info
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
    run_directory,
)
from dynmm.engine.stages import data_module, stage_data, stage_train
from dynmm.errors import ConfigError
from dynmm.io import atomic_write_json, atomic_write_text
from dynmm.methods.modality_level.cascade import check_cascade_gate
from dynmm.methods.modality_level.config import DynMMConfig, ExpertConfig
from dynmm.methods.modality_level.export import ROUTINGS, build_routed, cascade_expert_models, dynmm_sections
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.methods.modality_level.module import DynMMGateModule
from dynmm.methods.static.export import load_static
from dynmm.methods.static.run import static_run_or_reuse
from dynmm.nn.gates import check_gate_config
from dynmm.nn.static_model import build_static_model
from dynmm.specs import ModalitySpec, TaskSpec

OBJECTIVE = ("val/objective", "min")
"""Stages II and III keep the checkpoint with the best task loss + λ·cost on validation: the trade-off the gate
is trained for (selecting by accuracy alone would favour the most expensive routing)."""


def dynmm_section(config: RunConfig) -> DynMMConfig:
    return section_of(config, "dynmm", DynMMConfig)


def check_dynmm_config(run: RunConfig) -> None:
    """Everything that can be checked before stage I starts, so a typo never costs an expert training."""
    config = dynmm_section(run)
    if config.routing != "cascade":
        check_gate_config(config.gate)
    stage_train(run, config.gate_train, "dynmm.gate_train")
    if config.finetune_train is not None:
        stage_train(run, config.finetune_train, "dynmm.finetune_train")
    if len(config.experts) < 2:
        raise ConfigError(f"dynmm.experts needs at least 2 experts to route between, got {len(config.experts)}")
    names = [e.name for e in config.experts]
    for i, name in enumerate(names):  # each expert is a run folder experts/<name>/
        try:
            check_run_name(name, f"dynmm.experts[{i}].name")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if len(set(names)) != len(names):
        raise ConfigError(f"dynmm.experts: names must be unique, got {names}")
    if config.resource_weight < 0:
        raise ConfigError(f"dynmm.resource_weight (λ) must be >= 0, got {config.resource_weight}")
    if config.routing not in ROUTINGS:
        raise ConfigError(f"dynmm.routing: unknown routing {config.routing!r}; choose from {list(ROUTINGS)}")
    if config.routing == "cascade":
        check_cascade_gate(config.gate)


STATISTICS_COLUMN: dict[str, Callable[[Mapping[str, object]], object]] = {"mosi": mosi.statistics_column}
"""Data sets whose inputs are z-scored with statistics chosen by a data option: name -> the function that reads
from the options which split column's train rows give the statistics (MOSI: `stats_split_column`, default
`split_column`). The option that sets that column explicitly is `stats_split_column`."""

STATISTICS_OPTION = "stats_split_column"


def follow_expert_statistics(config: RunConfig, stage: DataConfig, key: str) -> DataConfig:
    """`stage` (the gate's or the evaluation's data) z-scored with the same statistics as the experts' data.

    Why: the experts were trained on `data` (MOSI: each modality z-scored with the train-row mean and std of
    `stats_split_column`, default `split_column`). The gate's and the evaluation's rows may come from another
    split column (`split_heldout`: rows whose features the upstream extractors never saw), but they are fed to
    the same frozen experts, which must see inputs scaled exactly as in their training; with the statistics of
    another column every expert would see shifted, rescaled features and the gate would learn (and the
    evaluation report) a routing for inputs no expert was trained on. Changing only `split_column` means "other
    rows", not "other scaling", so when `stage` does not name its statistics column it takes the experts' one.
    When it names a different column explicitly (`dynmm.gate_data.options.stats_split_column` or the same key of
    `eval_data`), the two settings contradict each other, so the run is refused with both columns named instead
    of guessing which one was meant. `key` ("dynmm.gate_data" or "dynmm.eval_data") words that refusal.
    """
    column_of = STATISTICS_COLUMN.get(stage.name)
    if column_of is None or stage.name != config.data.name:
        return stage
    experts, own = column_of(config.data.options), column_of(stage.options)
    if own == experts:
        return stage
    if stage.options.get(STATISTICS_OPTION) is not None:
        raise ConfigError(
            f"{key}.options.{STATISTICS_OPTION} is {own!r}, but the experts' inputs were z-scored with the train "
            f"rows of {experts!r} (data.options); the experts would see differently scaled inputs: set it to "
            f"{experts!r} or leave it out"
        )
    return stage.model_copy(update={"options": {**stage.options, STATISTICS_OPTION: experts}})


def stage_data_configs(config: RunConfig) -> tuple[DataConfig, DataConfig]:
    """(gate data, evaluation data): `data` with `dynmm.gate_data` / `dynmm.eval_data` merged in, z-scored
    like the experts' data (`follow_expert_statistics`)."""
    dyn = dynmm_section(config)
    gate = follow_expert_statistics(config, stage_data(config, dyn.gate_data), "dynmm.gate_data")
    if dyn.eval_data is None:
        return gate, gate
    return gate, follow_expert_statistics(config, stage_data(config, dyn.eval_data), "dynmm.eval_data")


def expert_model(config: RunConfig, expert: ExpertConfig) -> ModelConfig:
    """An expert's model: the run's `model` with the expert's keys merged in."""
    return from_dict(ModelConfig, deep_merge(to_dict(config.model), expert.model), f"dynmm.experts.{expert.name}")


def expert_models(config: RunConfig, specs: dict[str, ModalitySpec], experts_dir: Path | None) -> list[ModelConfig]:
    """Every expert's model. With cascade routing, later experts encode what they share with the first expert
    with its encoder: loaded frozen from experts_dir/<first> for stage I, spelled out when `experts_dir` is None
    (building before stage I, and the export)."""
    dyn = dynmm_section(config)
    models = [expert_model(config, e) for e in dyn.experts]
    if dyn.routing != "cascade":
        return models
    return cascade_expert_models(models, specs, None if experts_dir is None else experts_dir / dyn.experts[0].name)


def expert_run_config(
    config: RunConfig, expert: ExpertConfig, experts_dir: Path, model: ModelConfig | None = None
) -> RunConfig:
    """Stage I for one expert: an ordinary static run of its model (default: `expert_model`)."""
    return config.model_copy(
        update={
            "name": expert.name,
            "output_dir": str(experts_dir),
            "model": model or expert_model(config, expert),
            "train": stage_train(config, dynmm_section(config).expert_train, "dynmm.expert_train"),
            "dynmm": None,
        }
    )


def run_stage(
    name: str,
    run_dir: Path,
    model: ModalityLevelDynMM,
    task: TaskSpec,
    data: MultimodalDataModule,
    config: RunConfig,
    train: TrainConfig,
    train_experts: bool,
) -> dict[str, Any]:
    """Train the gate (stage II) or everything (stage III); a completed stage is loaded instead of retrained."""
    module = DynMMGateModule(
        model,
        task,
        dynmm_section(config).resource_weight,
        train.lr,
        train.weight_decay,
        train.optimizer,
        train_experts=train_experts,
    )
    summary = fit_stage(
        run_dir / name, module, model, data, train, monitor_for(train, task, default=OBJECTIVE), config.seed
    )
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return summary


def run_dynmm_recipe(config: RunConfig, resume: bool = False) -> RunResult:
    """Stage I experts → stage II gate (experts frozen) → optional stage III fine-tuning → evaluation + export."""
    from dynmm.methods.modality_level.report import evaluate_dynmm_run

    dyn = dynmm_section(config)
    check_dynmm_config(config)
    check_run_dir(config, resume)
    # Every check that can refuse the configuration or its data runs before the run folder is created, so that
    # a refused start leaves nothing behind: the experts' run configs and data options, the gate's and the
    # evaluation's data (loaded), and the whole model built once with fresh experts (encoders, fusions, gate).
    experts_dir = Path(dyn.experts_dir) if dyn.experts_dir else run_directory(config) / "experts"
    expert_data = MultimodalDataModule(  # refuses a bad batch size or option name; loads nothing
        config.data.name, config.data.batch_size, config.data.num_workers, config.seed, config.data.options
    )
    expert_info = dataset_info(config.data.name, **expert_data.options)  # refuses bad option values, reads shapes
    models = expert_models(config, expert_info.modalities, None)
    expert_configs = [
        expert_run_config(config, e, experts_dir, m)
        for e, m in zip(dyn.experts, expert_models(config, expert_info.modalities, experts_dir), strict=True)
    ]
    gate_config, eval_config = stage_data_configs(config)
    gate_data = data_module(config, gate_config)
    info = gate_data.info
    eval_data = gate_data if eval_config == gate_config else data_module(config, eval_config)
    fresh = [build_static_model(m, expert_info.modalities, expert_info.task) for m in models]
    build_routed(dyn.routing, fresh, dyn.gate, info.modalities, info.task, trained=False)
    del fresh

    run_dir = prepare_run_dir(config, resume)
    if is_main_process():
        atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))
    expert_dirs = [static_run_or_reuse(c).run_dir for c in expert_configs]

    experts = [load_static(d).model for d in expert_dirs]
    pl.seed_everything(config.seed, workers=True, verbose=False)  # the same gate init whether experts were reused
    model = build_routed(dyn.routing, experts, dyn.gate, info.modalities, info.task)
    stages = {
        "gate": run_stage(
            "gate",
            run_dir,
            model,
            info.task,
            gate_data,
            config,
            stage_train(config, dyn.gate_train, "dynmm.gate_train"),
            False,
        )
    }
    if dyn.finetune_train is not None:
        finetune = stage_train(config, dyn.finetune_train, "dynmm.finetune_train")
        stages["finetune"] = run_stage("finetune", run_dir, model, info.task, gate_data, config, finetune, True)
    model.eval()

    exported_data = eval_config.model_copy(update={"options": dict(eval_data.options)})
    named = [(e.name, m) for e, m in zip(dyn.experts, models, strict=True)]

    def evaluate_and_export() -> dict[str, Any]:
        metrics = evaluate_dynmm_run(run_dir, model, [n for n, _ in named], eval_data, stages)
        extra = {"metrics": {k: metrics[k] for k in ("valid", "test", "madds_per_sample")}}
        sections = dynmm_sections(named, dyn.gate, dyn.routing)
        export_model(run_dir, model, config.model, exported_data, info.modalities, info.task, extra, "dynmm", sections)
        atomic_write_json(run_dir / METRICS_FILE, metrics)
        return metrics

    return RunResult(run_dir, on_main_process(evaluate_and_export, lambda: read_metrics(run_dir)))
