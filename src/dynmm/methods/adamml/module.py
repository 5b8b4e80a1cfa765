"""Training of AdaMML in its three phases: warmup (policy off, every pair kept, CE), joint (policy + nets with
AdaMML's loss, Gumbel τ per epoch) and finetune (policy frozen at its argmax decisions, nets adapt, CE).

The phase sets the model's policy mode for training; validation runs in eval mode, so the learned policy decides
by argmax (warmup validates as it trains, every pair kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast, get_args

from torch import Tensor

from dynmm.config import deep_merge
from dynmm.engine.module import SupervisedModule
from dynmm.engine.task import task_loss
from dynmm.errors import ConfigError
from dynmm.methods.adamml.config import ADAMML_LIGHT_POLICY, AdaMMLConfig
from dynmm.methods.adamml.model import AdaMML, PolicyMode, adamml_loss, default_lambdas
from dynmm.relax import TemperatureSchedule
from dynmm.specs import Batch, ModalitySpec, TaskSpec
from dynmm.validation import check_target, input_rows

Phase = Literal["warmup", "joint", "finetune", "baseline"]
PHASES: tuple[Phase, ...] = ("warmup", "joint", "finetune")
"""The recipe's phases; "baseline" trains the nets (CE) under whatever static policy mode the model is set to
(every segment, or one modality alone) for the trained baselines."""
POLICY_OF_PHASE: dict[Phase, PolicyMode | None] = {
    "warmup": "all",
    "joint": "learned",
    "finetune": "fixed",
    "baseline": None,
}


def check_adamml_config(cfg: AdaMMLConfig) -> None:
    """What can be checked before the model exists (modality names are checked by `resolve_lambdas`)."""
    if cfg.tau_start <= 0 or cfg.tau_factor <= 0:
        raise ConfigError(f"adamml.tau_start and tau_factor must be > 0, got {cfg.tau_start}, {cfg.tau_factor}")
    if cfg.gamma < 0 or cfg.resource_weight < 0:
        raise ConfigError(f"adamml.gamma and resource_weight must be >= 0, got {cfg.gamma}, {cfg.resource_weight}")


def build_adamml(cfg: AdaMMLConfig, specs: Mapping[str, ModalitySpec], task: TaskSpec, seed: int = 0) -> AdaMML:
    """The AdaMML of `cfg` for data with these specs (a classification task); costs are measured here."""
    check_adamml_config(cfg)
    if task.kind != "classification":
        raise ConfigError(f"AdaMML classifies clips; this data set's task is {task.kind!r}")
    policy = deep_merge(ADAMML_LIGHT_POLICY, cfg.policy)
    return AdaMML(specs, task.num_classes, encoders=cfg.encoders, policy=policy, fallback=cfg.fallback, seed=seed)


def resolve_lambdas(cfg: AdaMMLConfig, model: AdaMML) -> dict[str, float]:
    """λ per modality: the configured ones (every modality named must exist; unnamed ones cost nothing), else
    `resource_weight` scaled by each modality's measured per-segment cost."""
    if cfg.lambdas is None:
        return default_lambdas(model.costs, cfg.resource_weight)
    unknown = sorted(set(cfg.lambdas) - set(model.modalities))
    if unknown:
        raise ConfigError(f"adamml.lambdas names unknown modalities {unknown}; the data has {model.modalities}")
    negative = {m: v for m, v in cfg.lambdas.items() if v < 0}
    if negative:
        raise ConfigError(f"adamml.lambdas must be >= 0, got {negative}")
    return {m: float(cfg.lambdas.get(m, 0.0)) for m in model.modalities}


class AdaMMLModule(SupervisedModule):
    """Trains an AdaMML in one phase.

    Logs `<stage>/loss` (CE), accuracy, `<stage>/objective` (CE + Σ_k λ_k·C_k, AdaMML's loss, what the joint
    and finetune phases keep their best checkpoint by), `<stage>/madds_fraction` (realized MAdds per clip /
    every net on every segment) and `<stage>/keep_<m>` (share of segments that keep m).
    In the finetune phase the policy is frozen: its parameters stop requiring gradients (so the optimizer never
    sees them) and it runs in eval mode (its batch-norm statistics stay as the joint phase left them).
    """

    def __init__(
        self,
        model: AdaMML,
        task: TaskSpec,
        phase: Phase,
        lambdas: Mapping[str, float],
        gamma: float = 10.0,
        tau: TemperatureSchedule | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
    ) -> None:
        if phase not in get_args(Phase):
            raise ConfigError(f"unknown AdaMML phase {phase!r}; choose from {list(get_args(Phase))}")
        super().__init__(model, task, lr, weight_decay, optimizer)
        self.phase = phase
        self.lambdas = dict(lambdas)
        self.gamma = gamma
        self.tau = tau or TemperatureSchedule("multiplicative", 5.0, factor=0.965)
        policy_mode = POLICY_OF_PHASE[phase]
        if policy_mode is not None:
            model.set_policy_mode(policy_mode)
        elif model.policy_runs:
            raise ConfigError(
                f"an AdaMML baseline trains without the policy, but the model's mode is {model.policy_mode!r}"
            )
        model.policy.requires_grad_(phase == "joint")

    @property
    def net(self) -> AdaMML:
        return cast(AdaMML, self.model)

    def on_train_epoch_start(self) -> None:
        if self.phase == "joint":
            self.net.tau = self.tau(self.current_epoch)
            self.log("train/tau", self.net.tau)

    def _keep(self) -> dict[str, Tensor]:
        assert self.net.last_keep is not None
        return self.net.last_keep

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, target = batch
        if self.phase == "joint":  # the other phases' task_loss checks the target itself
            check_target(target, self.task, input_rows(inputs))
        size = target.shape[0]
        outputs = self.net(inputs)
        keep = self._keep()
        if self.phase == "joint":
            loss, parts = adamml_loss(outputs, target, keep, self.lambdas, self.gamma)
            self.log("train/task_loss", parts["ce"], batch_size=size)
            self.log("train/cost", parts["cost"], prog_bar=True, batch_size=size)
        else:
            loss = task_loss(self.task, outputs, target)
            self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for m in self.net.modalities:
            self.log(f"train/keep_{m}", keep[m].detach().mean(), batch_size=size)
        return loss

    def _eval_step(self, batch: Batch, metrics: Any, stage: str) -> Tensor:
        inputs, target = batch
        check_target(target, self.task, input_rows(inputs))
        size = target.shape[0]
        outputs = self.net(inputs)
        keep = self._keep()
        objective, parts = adamml_loss(outputs, target, keep, self.lambdas, self.gamma)
        realized = self.net.realized_madds(keep, self.net.last_policy_ran)
        self.log(f"{stage}/loss", parts["ce"], batch_size=size)
        metrics.update(outputs, target)
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=size)
        self.log(f"{stage}/objective", objective, batch_size=size)
        fraction = (realized.mean() / self.net.full_madds()).float()
        self.log(f"{stage}/madds_fraction", fraction, prog_bar=stage == "val", batch_size=size)
        for m in self.net.modalities:
            self.log(f"{stage}/keep_{m}", parts[f"usage_{m}"], batch_size=size)
        return parts["ce"]
