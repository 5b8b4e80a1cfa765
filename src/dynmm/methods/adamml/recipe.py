"""AdaMML as one command: warmup (policy off, every segment) -> joint (policy + nets, AdaMML's loss, Gumbel τ
×factor per epoch) -> finetune (policy frozen, nets adapt), then evaluation with the run's own baselines,
export, metrics.json and report.html.

Layout: runs/<name>/{warmup,joint,finetune}/ (checkpoints, logs, weights + done.json per finished phase),
model.safetensors/.json, metrics.json, report.html. Every phase resumes from its last checkpoint and a finished
one is loaded, not retrained. With `warmup_dir` the warmup phase lives there instead, shared by several runs
(a λ sweep); it records what it was trained for, and a run built differently refuses to use it. The warmup
weights (warmup/weights.safetensors) are also the "late fusion" and unimodal baselines.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from safetensors.torch import load_file
from torch import Tensor

from dynmm.config import RunConfig, TrainConfig, dump_config, section_of, to_dict
from dynmm.cost import count_parameters
from dynmm.data.base import DatasetInfo
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.engine.distributed import is_main_process, on_main_process
from dynmm.engine.export import export_model
from dynmm.engine.fit import STAGE_WEIGHTS, fit_stage
from dynmm.engine.run_folder import (
    CONFIG_FILE,
    METRICS_FILE,
    RunResult,
    check_run_dir,
    prepare_run_dir,
    read_metrics,
    shared_stage_dir,
    stage_description,
)
from dynmm.engine.stages import stage_train
from dynmm.io import atomic_write_json, atomic_write_text
from dynmm.methods.adamml.config import AdaMMLConfig
from dynmm.methods.adamml.evaluate import evaluate_adamml_run
from dynmm.methods.adamml.module import PHASES, AdaMMLModule, build_adamml, check_adamml_config, resolve_lambdas
from dynmm.methods.adamml.report import write_adamml_report
from dynmm.relax import TemperatureSchedule

MONITORS = {"warmup": ("val/loss", "min"), "joint": ("val/objective", "min"), "finetune": ("val/objective", "min")}
WARMUP_FOR = "warmup_for.json"
BASELINES_FOR = "baselines_for.json"
"""What a shared warmup phase was trained for: everything that shapes its weights (not λ or later phases)."""


def adamml_section(config: RunConfig) -> AdaMMLConfig:
    return section_of(config, "adamml", AdaMMLConfig)


def warmup_description(config: RunConfig) -> dict[str, Any]:
    return stage_description(config, "adamml", ("encoders", "policy", "warmup_train"))


def train_baselines(
    config: RunConfig,
    info: DatasetInfo,
    data: MultimodalDataModule,
    trains: Mapping[str, TrainConfig],
    folder: Path,
) -> dict[str, dict[str, Tensor]]:
    """Late fusion on all segments and each modality alone on all segments, each trained from scratch (CE, no
    policy) for as many epochs as the three phases together with the warmup phase's settings: the fair
    comparison for AdaMML. Each is a resumable stage in `folder`/<name>, shared by runs that agree on what
    shapes it (a λ sweep trains them once)."""
    ad = adamml_section(config)
    train = trains["warmup"].model_copy(update={"max_epochs": sum(trains[p].max_epochs for p in PHASES)})
    description = warmup_description(config) | {"epochs": train.max_epochs}
    folder = shared_stage_dir(folder, description, BASELINES_FOR, "adamml.train_baselines", "baselines")
    states = {}
    for m in (None, *sorted(info.modalities)):
        pl.seed_everything(config.seed, workers=True, verbose=False)
        model = build_adamml(ad, info.modalities, info.task, config.seed)
        if m is None:
            name = "late_fusion"
            model.set_policy_mode("all")
        else:
            name = f"{m}_alone"
            model.set_policy_mode("random", {n: float(n == m) for n in info.modalities})
        module = AdaMMLModule(
            model, info.task, "baseline", {}, ad.gamma, None, train.lr, train.weight_decay, train.optimizer
        )
        # A single-modality baseline never runs the other nets.
        fit_stage(
            folder / name, module, model, data, train, MONITORS["warmup"], config.seed, skips_parameters=m is not None
        )
        states[name] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return states


def run_adamml_recipe(config: RunConfig, resume: bool = False) -> RunResult:
    ad = adamml_section(config)
    check_adamml_config(ad)
    trains: dict[str, TrainConfig] = {
        phase: stage_train(config, getattr(ad, f"{phase}_train"), f"adamml.{phase}_train") for phase in PHASES
    }
    check_run_dir(config, resume)
    # Every check that can refuse the configuration or its data runs before the run folder is created, so that
    # a refused start leaves nothing behind.
    data = MultimodalDataModule(
        config.data.name, config.data.batch_size, config.data.num_workers, config.seed, config.data.options
    )
    data.setup()
    info = data.info
    pl.seed_everything(config.seed, workers=True, verbose=False)
    model = build_adamml(ad, info.modalities, info.task, config.seed)
    lambdas = resolve_lambdas(ad, model)
    tau = TemperatureSchedule("multiplicative", ad.tau_start, factor=ad.tau_factor)
    shared = (
        shared_stage_dir(
            Path(ad.warmup_dir), warmup_description(config), WARMUP_FOR, "adamml.warmup_dir", "warmup phase"
        )
        if ad.warmup_dir is not None
        else None
    )
    run_dir = prepare_run_dir(config, resume)
    if is_main_process():
        atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))

    stage_dirs = {phase: run_dir / phase for phase in PHASES}
    if shared is not None:
        stage_dirs["warmup"] = shared
    summaries: dict[str, Any] = {}
    for phase in PHASES:
        train = trains[phase]
        module = AdaMMLModule(
            model, info.task, phase, lambdas, ad.gamma, tau, train.lr, train.weight_decay, train.optimizer
        )
        # Finetune runs each net on its kept segments only (the frozen policy decides), so a net can sit out a step.
        summaries[phase] = fit_stage(
            stage_dirs[phase],
            module,
            model,
            data,
            train,
            MONITORS[phase],
            config.seed,
            skips_parameters=phase == "finetune",
        )
    model.set_policy_mode("learned")
    model.eval()

    states = {"warmup": load_file(str(stage_dirs["warmup"] / STAGE_WEIGHTS))}
    if ad.train_baselines:
        folder = Path(ad.warmup_dir).parent if ad.warmup_dir is not None else run_dir
        states |= train_baselines(config, info, data, trains, folder / "baselines")
    batch_size = config.data.batch_size

    def evaluate_and_export() -> dict[str, Any]:
        metrics: dict[str, Any] = evaluate_adamml_run(model, states, data.splits, info.task, batch_size)
        metrics.update(
            madds_per_sample=metrics["test"]["madds_per_clip"],
            full_madds_per_clip=model.full_madds(),
            costs=model.costs,
            lambdas=lambdas,
            gamma=ad.gamma,
            fallback=model.fallback,
            params=count_parameters(model),
            stages=summaries,
        )
        data_config = config.data.model_copy(update={"options": dict(data.options)})
        sections = {"adamml": to_dict(ad)}
        extra = {"metrics": metrics}
        export_model(run_dir, model, config.model, data_config, info.modalities, info.task, extra, "adamml", sections)
        atomic_write_json(run_dir / METRICS_FILE, metrics)
        write_adamml_report(run_dir, metrics, model, data.splits["test"])
        return metrics

    return RunResult(run_dir, on_main_process(evaluate_and_export, lambda: read_metrics(run_dir)))
