"""Fit one LightningModule in a stage directory: checkpoints (best + last, for resume), CSV logs, timing.

Shared by static runs and every stage of the DynMM recipe, so that checkpointing, early stopping and resume
behave the same everywhere. With several processes (`train.devices`, `train.strategy: ddp`, torchrun, SLURM)
each rank trains on its own shard of the training set and validates on the whole validation split, checkpoints
and logs are written by rank 0, and every rank ends with the same best weights (see distributed.py).
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
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import load_file, save_file

from dynmm.config import TrainConfig
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.engine.distributed import on_main_process
from dynmm.engine.export import cpu_state_dict
from dynmm.engine.module import OPTIMIZERS
from dynmm.errors import ConfigError, DataError
from dynmm.io import atomic_write, atomic_write_json

LAST_CHECKPOINT = "last.ckpt"


class EpochSeeding(pl.Callback):
    """Seed every RNG at the start of each training epoch from (seed, epoch).

    Why: a resumed run starts from the checkpoint of its last finished epoch, but RNG states (dropout masks,
    Gumbel noise, random paths of a supernet) are not in the checkpoint; reseeding per epoch makes epoch k draw
    the same numbers whether or not the run was interrupted before it, so a resumed run ends bit-identical on CPU.

    With several processes, rank 0 keeps exactly this seed and every other rank gets one derived from (seed, epoch,
    rank): the ranks see different rows, and should not draw the same dropout masks or Gumbel noise for them.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(
            epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank), workers=True, verbose=False
        )


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    base = seed * 1_000_003 + epoch
    if rank == 0:
        return base
    return int(np.random.SeedSequence([base, rank]).generate_state(1)[0])


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
    # With several processes every rank validates on the whole split (MultimodalDataModule), so epoch-level
    # validation values are already the same on every rank: there is nothing for sync_dist to reduce.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


def check_train_config(train: TrainConfig, where: str = "train") -> None:
    """Refuse a `train` section that torch or Lightning would only refuse once training starts (with a traceback,
    after the run folder was created): optimiser settings, epochs, and the Trainer's accelerator, devices,
    strategy and number of nodes."""
    if train.optimizer not in OPTIMIZERS:
        raise ConfigError(f"{where}.optimizer: unknown {train.optimizer!r}; choose from {sorted(OPTIMIZERS)}")
    if train.max_epochs < 0:
        raise ConfigError(f"{where}.max_epochs must be >= 0, got {train.max_epochs}")
    if train.lr < 0:
        raise ConfigError(f"{where}.lr must be >= 0, got {train.lr}")
    if train.weight_decay < 0:
        raise ConfigError(f"{where}.weight_decay must be >= 0, got {train.weight_decay}")
    if train.limit_train_batches is not None and not train.limit_train_batches > 0:
        raise ConfigError(
            f"{where}.limit_train_batches must be > 0 (a fraction of the training batches, or their number), "
            f"got {train.limit_train_batches}"
        )
    check_trainer_options(train, where)


def check_trainer_options(train: TrainConfig, where: str = "train") -> None:
    """Let Lightning judge accelerator, devices, strategy and num_nodes now, by building a Trainer that never
    fits (it creates no files): its refusal becomes one ConfigError line naming the keys."""
    quiet_lightning()
    try:
        pl.Trainer(
            accelerator=train.accelerator,
            devices=train.devices,
            strategy=train.strategy,
            num_nodes=train.num_nodes,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    except Exception as err:  # MisconfigurationException, ValueError, ...: whatever Lightning refuses with
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(
            f"{where}: accelerator={train.accelerator!r}, devices={train.devices}, strategy={train.strategy!r}, "
            f"num_nodes={train.num_nodes} refused by Lightning: {reason}"
        ) from None


FIND_UNUSED = {name: f"{name}_find_unused_parameters_true" for name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")}


def strategy_for(train: TrainConfig, skips_parameters: bool) -> str:
    """The configured strategy; for a stage whose training step can leave trainable parameters out of the loss on
    some rank, DDP's variant that finds them after each forward (plain DDP stops with "parameters that were not
    used in producing the loss"): fixed or random paths that skip ops in training (fusion-level stage I and static
    baselines), AdaMML's finetune phase and single-modality baselines. Modality-level DynMM trains dense: every
    expert runs on every row, weighted by the straight-through gate, so every parameter is in the loss even on a
    rank whose gate picks one expert for all its rows (tests/reliability/test_ddp.py)."""
    strategy = train.strategy
    if not skips_parameters:
        return strategy
    if strategy == "auto" and (train.devices != 1 or train.num_nodes > 1):
        strategy = "ddp"
    return FIND_UNUSED.get(strategy, strategy)


def last_checkpoint(stage_dir: Path) -> Path:
    return stage_dir / "checkpoints" / LAST_CHECKPOINT


def readable_checkpoint(path: Path) -> str:
    """`path` if it loads as a plain-data checkpoint (weights_only: a checkpoint cannot run code); a garbage or
    truncated file is a DataError naming it, before Lightning would fail on it with a deep traceback."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise DataError(
            f"cannot resume from {path}: it is not a readable checkpoint ({reason}); move it away to train this "
            "stage again from scratch"
        ) from None
    return str(path)


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
    skips_parameters: bool = False,
) -> FitResult:
    """Train `module`; resume from `stage_dir`'s last checkpoint when asked; load the best weights back into it.
    Every epoch is seeded from (`seed`, epoch), so an interrupted and resumed fit equals an uninterrupted one.
    `skips_parameters`: a training step may leave some trainable parameters without a gradient (strategy_for)."""
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
        strategy=strategy_for(train, skips_parameters),
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
        # MultimodalDataModule shards the training set itself (epoch-seeded, the same rows per step as one
        # process with batch_size × ranks rows) and gives every rank the whole validation split.
        use_distributed_sampler=not isinstance(data, MultimodalDataModule),
    )
    last = last_checkpoint(stage_dir)
    started = time.perf_counter()
    # Every rank decides alike here: the main process writes this stage's checkpoints only inside the fit,
    # once every rank has joined it.
    ckpt_path = readable_checkpoint(last) if resume and last.is_file() else None
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    train_time = time.perf_counter() - started
    data.trainer = None  # a later train_dataloader() outside Lightning is not sharded for this trainer's ranks
    # Rank 0 saved it before Lightning's post-save barrier: every rank loads the same best weights.
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
    skips_parameters: bool = False,
) -> dict[str, Any]:
    """One stage of a multi-stage recipe: skipped (its weights loaded into `model`) when it already completed,
    resumed from its last checkpoint when interrupted, else trained; completion is marked only after the
    stage's weights are safely on disk (by the main process; the other ranks wait for it and read its summary)."""
    done = stage_dir / STAGE_DONE
    if done.is_file():
        model.load_state_dict(load_file(str(stage_dir / STAGE_WEIGHTS)))
        return dict(json.loads(done.read_text()))
    pl.seed_everything(seed, workers=True, verbose=False)
    fitted = fit(module, data, stage_dir, train, monitor[0], monitor[1], True, seed, callbacks, skips_parameters)

    def mark_done() -> dict[str, Any]:
        state = cpu_state_dict(model)
        atomic_write(stage_dir / STAGE_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
        summary = {"train_time_s": fitted.train_time_s, "epochs": fitted.epochs, "monitor": monitor[0]}
        atomic_write_json(done, summary)
        return summary

    return on_main_process(mark_done, lambda: dict(json.loads(done.read_text())))
