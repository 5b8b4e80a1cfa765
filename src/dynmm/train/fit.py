"""Fit one LightningModule in a stage directory: checkpoints (best + last, for resume), CSV logs, timing.

Shared by static runs and every stage of the DynMM recipe, so that checkpointing, early stopping and resume
behave the same everywhere.
"""

from __future__ import annotations

import json
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
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import load_file, save_file

from dynmm.config import TrainConfig
from dynmm.errors import ConfigError
from dynmm.io import atomic_write, atomic_write_json
from dynmm.train.module import OPTIMIZERS

LAST_CHECKPOINT = "last.ckpt"


class EpochSeeding(pl.Callback):
    """Seed every RNG at the start of each training epoch from (seed, epoch).

    Why: a resumed run starts from the checkpoint of its last finished epoch, but RNG states (dropout masks,
    Gumbel noise, random paths of a supernet) are not in the checkpoint; reseeding per epoch makes epoch k draw
    the same numbers whether or not the run was interrupted before it, so a resumed run ends bit-identical on CPU.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(self.seed * 1_000_003 + trainer.current_epoch, workers=True, verbose=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed into place, so a run killed while saving keeps its
    previous `last.ckpt` intact instead of a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


@dataclass
class FitResult:
    best_checkpoint: Path
    train_time_s: float
    epochs: int


def quiet_lightning() -> None:
    """Drop Lightning's start-up chatter (accelerator lines, tips); warnings and errors still show."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # On --resume the checkpoint folder is non-empty by design; a fresh run refuses a non-empty run dir earlier.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    # DynMM stage II keeps its frozen experts in eval mode on purpose (no dropout, fixed batch-norm statistics).
    warnings.filterwarnings("ignore", message="Found .* module\\(s\\) in eval mode at the start of training")


def check_train_config(train: TrainConfig, where: str = "train") -> None:
    if train.optimizer not in OPTIMIZERS:
        raise ConfigError(f"{where}.optimizer: unknown {train.optimizer!r}; choose from {sorted(OPTIMIZERS)}")
    if train.max_epochs < 0:
        raise ConfigError(f"{where}.max_epochs must be >= 0, got {train.max_epochs}")


def last_checkpoint(stage_dir: Path) -> Path:
    return stage_dir / "checkpoints" / LAST_CHECKPOINT


def fit(
    module: pl.LightningModule,
    data: pl.LightningDataModule,
    stage_dir: Path,
    train: TrainConfig,
    monitor: str,
    mode: str,
    resume: bool,
    seed: int,
    callbacks: list[pl.Callback] | None = None,
) -> FitResult:
    """Train `module`; resume from `stage_dir`'s last checkpoint when asked; load the best weights back into it.
    Every epoch is seeded from (`seed`, epoch), so an interrupted and resumed fit equals an uninterrupted one."""
    quiet_lightning()
    checkpoint = ModelCheckpoint(
        dirpath=stage_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_last=True
    )
    all_callbacks: list[pl.Callback] = [checkpoint, EpochSeeding(seed), *(callbacks or [])]
    if train.early_stopping_patience is not None:
        all_callbacks.append(EarlyStopping(monitor, patience=train.early_stopping_patience, mode=mode))
    trainer = pl.Trainer(
        max_epochs=train.max_epochs,
        accelerator=train.accelerator,
        devices=train.devices,
        strategy=train.strategy,
        num_nodes=train.num_nodes,
        plugins=[AtomicCheckpointIO()],
        deterministic=train.deterministic,
        callbacks=all_callbacks,
        logger=CSVLogger(stage_dir, name="logs"),  # version_N per (re)start: resuming never deletes logs
        enable_progress_bar=train.progress_bar,
        enable_model_summary=False,
        gradient_clip_val=train.gradient_clip_val,
        limit_train_batches=train.limit_train_batches,
        log_every_n_steps=10,
    )
    last = last_checkpoint(stage_dir)
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume and last.is_file() else None)
    train_time = time.perf_counter() - started
    best = Path(checkpoint.best_model_path or last)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    module.cpu()
    return FitResult(best, round(train_time, 3), trainer.current_epoch)


STAGE_WEIGHTS = "weights.safetensors"
STAGE_DONE = "done.json"


def fit_stage(
    stage_dir: Path,
    module: pl.LightningModule,
    model: torch.nn.Module,
    data: pl.LightningDataModule,
    train: TrainConfig,
    monitor: tuple[str, str],
    seed: int,
    callbacks: list[pl.Callback] | None = None,
) -> dict[str, Any]:
    """One stage of a multi-stage recipe: skipped (its weights loaded into `model`) when it already completed,
    resumed from its last checkpoint when interrupted, else trained; completion is marked only after the
    stage's weights are safely on disk."""
    done = stage_dir / STAGE_DONE
    if done.is_file():
        model.load_state_dict(load_file(str(stage_dir / STAGE_WEIGHTS)))
        return dict(json.loads(done.read_text()))
    pl.seed_everything(seed, workers=True, verbose=False)
    fitted = fit(module, data, stage_dir, train, monitor[0], monitor[1], True, seed, callbacks)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(stage_dir / STAGE_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    summary = {"train_time_s": fitted.train_time_s, "epochs": fitted.epochs, "monitor": monitor[0]}
    atomic_write_json(done, summary)
    return summary
