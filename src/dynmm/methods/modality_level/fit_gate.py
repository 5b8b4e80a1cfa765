"""Modality-level DynMM from Python, without YAML: your own experts, any DataLoader of (dict[str, Tensor], target).

`dynmm_from_experts` turns already trained `nn.Module` experts (each maps a dict of modality tensors to
predictions) into a `ModalityLevelDynMM` with an MLP gate; `fit_gate` then trains that gate with the
resource-aware loss of stage II (experts frozen, in eval mode) and, if asked, fine-tunes gate and experts
together (stage III), with the same `DynMMGateModule` the `dynmm train` recipe uses and a plain Lightning
Trainer: CPU by default, no files written unless `checkpoint_dir` is given.

    model = dynmm_from_experts([cheap, costly], specs, expert_modalities=[["text"], ["text", "audio"]])
    fit_gate(model, train_loader, val_loader, task=TaskSpec("classification", 2), resource_weight=0.3)
    model(inputs)  # dispatch: each row runs its chosen expert only
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import Dataset

from dynmm.engine.fit import EpochSeeding, quiet_lightning
from dynmm.engine.module import OPTIMIZERS
from dynmm.errors import ConfigError, InputError
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.methods.modality_level.module import DynMMGateModule
from dynmm.nn.gates import Gate, MLPGate
from dynmm.specs import Batch, Inputs, ModalitySpec, TaskSpec, example_inputs

OBJECTIVE = "val/objective"
"""What the best weights are chosen by when there is a validation loader: task loss + λ·cost on validation, the
trade-off the gate is trained for (accuracy alone would favour the most expensive routing)."""


class ExpertAdapter(nn.Module):
    """A user's expert with the two attributes ModalityLevelDynMM reads: `modalities` (which inputs dispatch
    gathers for it, and which experts a missing modality rules out) and `specs` (their shapes, checked before the
    gate runs). Its forward hands the wrapped module exactly those modalities, in every execution mode."""

    def __init__(self, module: nn.Module, modalities: Sequence[str], specs: Mapping[str, ModalitySpec]) -> None:
        super().__init__()
        self.module = module
        self.modalities = sorted(modalities)
        self.specs = {m: specs[m] for m in self.modalities}

    def forward(self, inputs: Inputs) -> Tensor:
        out: Tensor = self.module({m: inputs[m] for m in self.modalities})
        return out


def dynmm_from_experts(
    experts: Sequence[nn.Module],
    specs: Mapping[str, ModalitySpec],
    *,
    expert_modalities: Sequence[Sequence[str]] | None = None,
    gate: Gate | None = None,
    gate_modalities: Sequence[str] | None = None,
    gate_hidden: int = 128,
    example: Inputs | None = None,
) -> ModalityLevelDynMM:
    """A ModalityLevelDynMM over your own experts, with no config file.

    Args:
        experts: the branches, cheapest first by convention; each maps {modality: (batch, *shape)} to outputs.
        specs: every modality's per-sample shape (`ModalitySpec(name, shape, kind)`).
        expert_modalities: which modalities each expert reads. Default: the expert's own `modalities` attribute
            (as `StaticFusionModel` has), else every modality. An expert without `specs`/`modalities` of its own
            is wrapped in an `ExpertAdapter`, so that dispatch gathers only what it reads and a batch is checked
            for every modality some expert needs (not only those the gate looks at).
        gate: your own `Gate` (e.g. a `TransformerGate`, or an `MLPGate` with mode "soft" for DynMM-d); default:
            an `MLPGate` with `gate_hidden` units (0: linear) on `gate_modalities`.
        gate_modalities: what the default gate looks at (default: every modality some expert reads). A gate on the
            cheap modality alone costs less, and every sample pays the gate.
        example: a batch on which MAdds are measured (default: zeros of the specs' shapes; MAdds depend on shapes).

    The experts' and the gate's MAdds are measured once here (`model.expert_madds`, `model.gate_madds`).
    """
    if len(experts) < 2:
        raise ConfigError(f"experts: need at least 2 experts to route between, got {len(experts)}")
    for i, expert in enumerate(experts):
        if not isinstance(expert, nn.Module):
            raise ConfigError(f"experts[{i}] must be a torch.nn.Module, got {type(expert).__name__}")
    if not specs or not all(isinstance(s, ModalitySpec) for s in specs.values()):
        raise ConfigError("specs must map each modality name to a ModalitySpec, e.g. {'text': ModalitySpec(...)}")
    if expert_modalities is not None and len(expert_modalities) != len(experts):
        raise ConfigError(
            f"expert_modalities must list the modalities of each of the {len(experts)} experts, "
            f"got {len(expert_modalities)} entries"
        )
    wrapped: list[nn.Module] = []
    for i, expert in enumerate(experts):
        declared = getattr(expert, "modalities", None)
        names = list(expert_modalities[i]) if expert_modalities is not None else list(declared or specs)
        unknown = [m for m in names if m not in specs]
        if not names or unknown:
            raise ConfigError(
                f"expert_modalities[{i}] must name modalities of specs {sorted(specs)}, got {sorted(names)}"
            )
        own_specs = getattr(expert, "specs", None)
        described = declared is not None and sorted(declared) == sorted(names) and isinstance(own_specs, Mapping)
        wrapped.append(expert if described else ExpertAdapter(expert, names, specs))
    if gate is None:
        used = sorted({m for e in wrapped for m in getattr(e, "modalities", ())})
        looks_at = list(gate_modalities) if gate_modalities is not None else used
        unknown = [m for m in looks_at if m not in specs]
        if not looks_at or unknown:
            raise ConfigError(f"gate_modalities must name modalities of specs {sorted(specs)}, got {looks_at}")
        gate = MLPGate(len(wrapped), specs, looks_at, hidden=gate_hidden)
    elif gate_modalities is not None:
        raise ConfigError("gate_modalities only applies to the default gate; your gate already knows its modalities")
    return ModalityLevelDynMM(wrapped, gate, example if example is not None else example_inputs(dict(specs)))


class _CheckedGateModule(DynMMGateModule):
    """DynMMGateModule that says clearly when a loader yields something other than (dict, target) batches."""

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return super().training_step(_checked(batch, "train_loader"), batch_idx)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        super().validation_step(_checked(batch, "val_loader"), batch_idx)


def _checked(batch: Any, where: str) -> Batch:
    if (
        not isinstance(batch, tuple | list)
        or len(batch) != 2
        or not isinstance(batch[0], Mapping)
        or not isinstance(batch[1], Tensor)
    ):
        got = type(batch).__name__
        if isinstance(batch, tuple | list):
            got += "(" + ", ".join(type(b).__name__ for b in batch) + ")"
        raise InputError(f"fit_gate: {where} must yield (dict[str, Tensor], target Tensor) batches, got {got}")
    return cast(Batch, (batch[0], batch[1]))


class _KeepBest(pl.Callback):
    """Keep, in memory, the weights of `module` at the best validation objective (no checkpoint files)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.best = math.inf
        self.state: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or OBJECTIVE not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[OBJECTIVE])
        if value < self.best:
            self.best = value
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}


def _batches(loader: Any, name: str, required: bool) -> int | None:
    """Number of batches of a loader (None when it has no length); refuse what cannot be a loader of batches."""
    if loader is None:
        if required:
            raise ConfigError(f"{name} is required: a DataLoader yielding (dict[str, Tensor], target) batches")
        return None
    if isinstance(loader, Dataset) and not isinstance(loader, Iterable):
        raise ConfigError(f"{name}: pass a torch DataLoader over your dataset, not the Dataset itself")
    if not isinstance(loader, Iterable):
        raise ConfigError(f"{name} must be an iterable of (dict, target) batches, got {type(loader).__name__}")
    try:
        count = len(loader)  # type: ignore[arg-type]
    except TypeError:  # an IterableDataset: checked after the fit instead
        return None
    if count == 0:
        raise ConfigError(f"{name} is empty (0 batches); with drop_last=True, use a batch_size <= the row count")
    return count


def _check_arguments(
    model: Any,
    task: Any,
    resource_weight: float,
    max_epochs: int,
    finetune_epochs: int,
    lr: float,
    finetune_lr: float | None,
    weight_decay: float,
    optimizer: str,
) -> None:
    if not isinstance(model, ModalityLevelDynMM):
        raise ConfigError(f"model must be a ModalityLevelDynMM (see dynmm_from_experts), got {type(model).__name__}")
    if not isinstance(task, TaskSpec):
        raise ConfigError(f"task must be a TaskSpec, e.g. TaskSpec('classification', 10), got {task!r}")
    if not math.isfinite(resource_weight) or resource_weight < 0:
        raise ConfigError(f"resource_weight (λ) must be a finite number >= 0, got {resource_weight}")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ConfigError(f"max_epochs must be an integer >= 1, got {max_epochs!r}")
    if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) or finetune_epochs < 0:
        raise ConfigError(f"finetune_epochs must be an integer >= 0 (0: no fine-tuning), got {finetune_epochs!r}")
    for name, value in (("lr", lr), ("finetune_lr", lr if finetune_lr is None else finetune_lr)):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer: unknown {optimizer!r}; choose from {sorted(OPTIMIZERS)}")


def fit_gate(
    model: ModalityLevelDynMM,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch] | None = None,
    *,
    task: TaskSpec,
    resource_weight: float = 0.0,
    max_epochs: int = 10,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str = "adamw",
    finetune_epochs: int = 0,
    finetune_lr: float | None = None,
    seed: int = 0,
    accelerator: str = "cpu",
    gradient_clip_val: float | None = None,
    checkpoint_dir: str | Path | None = None,
    progress_bar: bool = False,
) -> ModalityLevelDynMM:
    """Train the gate of `model` with the resource-aware loss; optionally fine-tune gate and experts after.

    Stage II (`max_epochs`): L = L_task + λ·Σ_i g_i·C_i, with g the gate's straight-through Gumbel-softmax
    weights and C_i expert i's measured MAdds divided by the costliest expert's. The experts are frozen and kept
    in eval mode (their dropout and batch-norm statistics do not move while the gate learns which to trust).
    Stage III (`finetune_epochs` > 0, learning rate `finetune_lr`, default `lr`): the same loss, every weight
    trained. Training runs every expert on every row (dense routing) so that the task loss reaches the gate.

    Args:
        model: a ModalityLevelDynMM, e.g. from `dynmm_from_experts`; trained in place and returned.
        train_loader, val_loader: any iterables (normally torch DataLoaders) of `(inputs, target)` batches with
            `inputs` a dict {modality: (batch, *shape) float tensor}; `target` as `task` expects (class indices,
            scores, 0/1 label vectors).
        task: what the target is: the task loss (cross-entropy, L1, BCE) and the validation metrics follow it.
        resource_weight: λ, the price of compute (0: accuracy only; larger values route more rows to cheaper
            experts; on the normalised scale, λ = 1 costs the costliest expert as much as one unit of task loss).
        max_epochs: epochs of stage II (>= 1).
        lr, weight_decay, optimizer: the optimiser ("adamw", "adam" or "sgd") of stage II (and III).
        finetune_epochs: epochs of stage III (0: the experts are never changed).
        seed: seeds every random generator at the start and at every epoch (Gumbel noise, dropout, shuffling),
            so the same call gives the same gate.
        accelerator: Lightning's accelerator ("cpu", "gpu", "auto"); one device.
        gradient_clip_val: clip gradients to this norm (None: no clipping).
        checkpoint_dir: where Lightning writes checkpoints (`<dir>/gate/checkpoints`, `<dir>/finetune/...`) and CSV
            logs; None (default) writes no file at all.
        progress_bar: show Lightning's progress bar.

    Returns:
        `model`, in eval mode on the CPU, with the weights of the epoch with the best validation objective
        (task loss + λ·cost) of the last stage when `val_loader` is given, else those of the last epoch. Its
        execution mode (dispatch by default) is left as it was.
    """
    _check_arguments(
        model, task, resource_weight, max_epochs, finetune_epochs, lr, finetune_lr, weight_decay, optimizer
    )
    train_batches = _batches(train_loader, "train_loader", required=True)
    _batches(val_loader, "val_loader", required=False)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    quiet_lightning()
    stages = [("gate", max_epochs, lr, False)]
    if finetune_epochs:
        stages.append(("finetune", finetune_epochs, lr if finetune_lr is None else finetune_lr, True))
    try:
        for name, epochs, stage_lr, train_experts in stages:
            module = _CheckedGateModule(
                model, task, resource_weight, stage_lr, weight_decay, optimizer, train_experts=train_experts
            )
            keep = _KeepBest(model if train_experts else model.gate)
            callbacks: list[pl.Callback] = [EpochSeeding(seed), keep]
            stage_dir = folder / name if folder is not None else None
            if stage_dir is not None:
                monitor = OBJECTIVE if val_loader is not None else None
                callbacks.append(
                    ModelCheckpoint(stage_dir / "checkpoints", filename="best", monitor=monitor, save_last=True)
                )
            trainer = pl.Trainer(
                max_epochs=epochs,
                accelerator=accelerator,
                devices=1,
                callbacks=callbacks,
                logger=CSVLogger(stage_dir, name="logs") if stage_dir is not None else False,
                enable_checkpointing=stage_dir is not None,
                enable_progress_bar=progress_bar,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                gradient_clip_val=gradient_clip_val,
                log_every_n_steps=max(1, min(50, train_batches or 50)),
                default_root_dir=stage_dir,
            )
            pl.seed_everything(seed, workers=True, verbose=False)
            # Lightning keeps the train/eval mode modules come in with: the gate (and in stage III the experts)
            # must train whatever state the model was left in; frozen experts are put back in eval mode per epoch.
            model.train()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
            if trainer.global_step == 0:
                raise ConfigError("train_loader yielded no batch: nothing to train the gate on")
            if keep.state is not None:
                (model if train_experts else model.gate).load_state_dict(keep.state)
    finally:
        for parameter_name, parameter in model.named_parameters():
            parameter.requires_grad_(requires_grad.get(parameter_name, True))
        model.cpu()
    return model.eval()
