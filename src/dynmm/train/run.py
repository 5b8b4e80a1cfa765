"""One training run, end to end: runs/<name>/ with config, checkpoints, exported model and metrics.

Layout of a run directory:
    config.yaml              the resolved configuration (after overrides)
    checkpoints/last.ckpt    Lightning checkpoint for `--resume`; best.ckpt by the monitored metric
    model.safetensors/.json  the exported model (no pickle), what `dynmm eval` loads
    metrics.json             valid/test metrics, measured MAdds per sample, parameters, train time
    logs/                    Lightning CSV logs
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from dynmm.config import RunConfig, dump_config, from_dict, load_yaml, to_dict
from dynmm.cost import count_parameters, measure_madds
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.errors import ConfigError
from dynmm.eval.evaluate import evaluate
from dynmm.eval.metrics import primary_metric
from dynmm.io import atomic_write_json, atomic_write_text
from dynmm.models.static import build_static_model
from dynmm.specs import TaskSpec
from dynmm.train.export import export_model
from dynmm.train.module import OPTIMIZERS, SupervisedModule

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LAST_CHECKPOINT = "last.ckpt"


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def run_directory(config: RunConfig) -> Path:
    return Path(config.output_dir) / config.name


def _prepare_run_dir(config: RunConfig, resume: bool) -> Path:
    """Refuse to overwrite an existing run; on resume, refuse a configuration that differs from the saved one."""
    run_dir = run_directory(config)
    saved = run_dir / CONFIG_FILE
    if resume:
        if not (run_dir / "checkpoints" / LAST_CHECKPOINT).is_file():
            raise ConfigError(f"nothing to resume in {run_dir}: checkpoints/{LAST_CHECKPOINT} is missing")
        previous = to_dict(from_dict(RunConfig, load_yaml(saved)))
        changed = _changed_keys(previous, to_dict(config), allowed={"train.max_epochs", "train.progress_bar"})
        if changed:
            raise ConfigError(f"--resume with a different configuration ({', '.join(changed)}); start a new run")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"run directory {run_dir} already exists; continue it with --resume or choose another --name")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _changed_keys(old: dict[str, Any], new: dict[str, Any], allowed: set[str], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, allowed, f"{path}.")
        elif a != b and path not in allowed:
            changed.append(path)
    return changed


def _monitor(config: RunConfig, task: TaskSpec) -> tuple[str, str]:
    name, mode = primary_metric(task)
    monitor = config.train.monitor or f"val/{name}"
    if config.train.monitor_mode is not None:
        mode = config.train.monitor_mode
    elif config.train.monitor:
        mode = "min" if monitor.rsplit("/", 1)[-1] in {"loss", "mae"} else "max"
    if mode not in {"min", "max"}:
        raise ConfigError(f"train.monitor_mode must be 'min' or 'max', got {mode!r}")
    return monitor, mode


def _quiet_lightning() -> None:
    """Drop Lightning's start-up chatter (accelerator lines, tips); warnings and errors still show."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # On --resume the checkpoint folder is non-empty by design; a fresh run refuses a non-empty run dir earlier.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")


def train_run(config: RunConfig, resume: bool = False) -> RunResult:
    """Train the configured model, keep the best checkpoint by the monitored metric, export and evaluate it."""
    if config.train.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer: unknown {config.train.optimizer!r}; choose from {sorted(OPTIMIZERS)}")
    run_dir = _prepare_run_dir(config, resume)
    _quiet_lightning()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    data = MultimodalDataModule(
        config.data.name, config.data.batch_size, config.data.num_workers, config.seed, config.data.options
    )
    data.setup()
    info = data.info
    model = build_static_model(config.model, info.modalities, info.task)
    example_inputs, _ = next(iter(data.test_dataloader()))
    cost = measure_madds(model, example_inputs)
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))

    module = SupervisedModule(model, info.task, config.train.lr, config.train.weight_decay, config.train.optimizer)
    monitor, mode = _monitor(config, info.task)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_last=True
    )
    callbacks: list[pl.Callback] = [checkpoint]
    if config.train.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor, patience=config.train.early_stopping_patience, mode=mode))
    trainer = pl.Trainer(
        max_epochs=config.train.max_epochs,
        accelerator=config.train.accelerator,
        devices=config.train.devices,
        deterministic=config.train.deterministic,
        callbacks=callbacks,
        logger=CSVLogger(run_dir, name="logs"),  # version_N per (re)start: resuming never deletes logs
        enable_progress_bar=config.train.progress_bar,
        enable_model_summary=False,
        gradient_clip_val=config.train.gradient_clip_val,
        limit_train_batches=config.train.limit_train_batches,
        log_every_n_steps=10,
    )
    last = run_dir / "checkpoints" / LAST_CHECKPOINT
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
    train_time = time.perf_counter() - started

    best = checkpoint.best_model_path or str(last)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    trained = module.model.cpu()
    metrics: dict[str, Any] = {
        "valid": evaluate(trained, data.val_dataloader(), info.task),
        "test": evaluate(trained, data.test_dataloader(), info.task),
        "madds_per_sample": cost.total,
        "madds_by_part": _parts(cost.by_module),
        "params": count_parameters(trained),
        "train_time_s": round(train_time, 3),
        "epochs": trainer.current_epoch,
        "best_checkpoint": Path(best).name,
        "monitor": monitor,
    }
    # The export records the data options actually used (e.g. a data seed filled in from the run seed).
    data_config = dataclasses.replace(config.data, options=dict(data.options))
    export_model(run_dir, trained, config.model, data_config, info.modalities, info.task, {"metrics": metrics})
    atomic_write_json(run_dir / METRICS_FILE, metrics)
    return RunResult(run_dir, metrics)


def _parts(by_module: dict[str, int]) -> dict[str, int]:
    """Keep the model's direct parts (encoders.<modality>, fusion, head) from the per-module counts."""
    parts = {}
    for name, madds in by_module.items():
        pieces = name.split(".")[1:]
        if (pieces[:1] == ["encoders"] and len(pieces) == 2) or pieces in (["fusion"], ["head"]):
            parts[".".join(pieces)] = madds
    return parts
