"""Training of fusion-level DynMM: supernet on random paths (stage I), gate + network with the resource loss
(stage II), or a static single-op baseline.

Paths are set per batch through the model's `forced_choice`, so all three share the model's one forward.
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import torch
from torch import Tensor

from dynmm.engine.module import SupervisedModule
from dynmm.engine.task import task_loss
from dynmm.methods.fusion_level.model import FusionLevelDynMM
from dynmm.relax import TemperatureSchedule
from dynmm.specs import Batch, TaskSpec
from dynmm.validation import input_rows

Stage = Literal["supernet", "gate", "static"]
VALIDATION_PATH_SEED = 1234
"""Stage I validates on random paths too, drawn from this fixed seed, so that epochs compare on equal terms."""


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy (nats) over the last axis, 0·log 0 = 0."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)


def routing_balance(distribution: Tensor) -> Tensor:
    """Mutual information between row and route on a batch, normalised to [0, 1] by log(routes): entropy of the
    batch-mean route distribution minus the rows' mean entropy. High when the rows spread over the routes and
    each row is sure of its own; 0 when every row has the same distribution (one route for all, or every row
    equally undecided), so random routing is not rewarded, only rows that differ."""
    spread = entropy(distribution.mean(dim=0)) - entropy(distribution).mean()
    return spread / math.log(distribution.shape[-1])


class FusionLevelModule(SupervisedModule):
    """Trains a FusionLevelDynMM in one stage (a static stage needs the model's `static_op` set)."""

    def __init__(
        self,
        model: FusionLevelDynMM,
        task: TaskSpec,
        stage: Stage,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        resource_weight: float = 0.0,
        tau: TemperatureSchedule | None = None,
        budget: float | None = None,
        balance_weight: float = 0.0,
    ) -> None:
        super().__init__(model, task, lr, weight_decay, optimizer)
        self.stage = stage
        self.resource_weight = resource_weight
        self.budget = budget
        self.balance_weight = balance_weight
        self.tau = tau or TemperatureSchedule("constant", 1.0)
        self._validation_paths = torch.Generator().manual_seed(VALIDATION_PATH_SEED)

    @property
    def net(self) -> FusionLevelDynMM:
        return cast(FusionLevelDynMM, self.model)

    def _paths(self, batch: int, generator: torch.Generator | None = None) -> Tensor | None:
        """The forced (batch, cells) op choice of this stage; None lets the gate decide."""
        if self.stage == "gate":
            return None
        if self.stage == "static":
            return None  # the model's own static_op
        return self.net.random_choice(batch, generator)

    def on_validation_epoch_start(self) -> None:
        self._validation_paths = torch.Generator().manual_seed(VALIDATION_PATH_SEED)

    def on_test_epoch_start(self) -> None:
        self._validation_paths = torch.Generator().manual_seed(VALIDATION_PATH_SEED)

    def on_train_epoch_start(self) -> None:
        self.net.tau = self.tau(self.current_epoch)
        self.log("train/tau", self.net.tau)

    def gate_terms(self) -> dict[str, Tensor]:
        """Stage II's terms on the latest forward: expected normalised cost (of the straight-through weights),
        balance of the depth-stage counts (of the gate's own probabilities softmax(logits), the distribution the
        Gumbel samples are drawn from: hard samples would reward random routing; 0 when no gate ran) and the
        penalty added to the task loss: λ·cost, or λ·|cost − budget| with a budget, minus balance_weight·balance."""
        net = self.net
        assert net.last_weights is not None
        cost = net.expected_cost(net.last_weights)
        resource = cost if self.budget is None else (cost - self.budget).abs()
        balance = cost.new_zeros(())
        stages = net.stage_probabilities() if self.balance_weight else None
        if stages is not None:
            balance = routing_balance(stages)
        penalty = self.resource_weight * resource - self.balance_weight * balance
        return {"expected_cost": cost, "balance": balance, "penalty": penalty}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, target = batch
        size = input_rows(inputs) or 0  # the target's rows are checked against the inputs' in task_loss
        self.net.forced_choice = self._paths(size)
        outputs = self.net(inputs)
        loss = task_loss(self.task, outputs, target)
        self.log("train/task_loss", loss, batch_size=size)
        if self.stage == "gate":
            terms = self.gate_terms()
            self.log("train/expected_cost", terms["expected_cost"], prog_bar=True, batch_size=size)
            self.log("train/routing_balance", terms["balance"], batch_size=size)
            loss = loss + terms["penalty"]
        return loss

    def _eval_step(self, batch: Batch, metrics: Any, stage: str) -> Tensor:
        """Validation routes as the stage trains (fixed-seed random paths in stage I); also logs the realized
        normalised cost and task loss + stage II's penalty, the objective stage II keeps its best checkpoint by."""
        size = input_rows(batch[0]) or 0
        self.net.forced_choice = self._paths(size, self._validation_paths)
        loss = super()._eval_step(batch, metrics, stage)
        terms = self.gate_terms()
        self.log(f"{stage}/expected_cost", terms["expected_cost"], batch_size=size)
        self.log(f"{stage}/routing_balance", terms["balance"], batch_size=size)
        self.log(f"{stage}/objective", loss + terms["penalty"], batch_size=size)
        return loss
