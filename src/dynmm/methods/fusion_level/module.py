"""Training of fusion-level DynMM: supernet on random paths (stage I), gate + network with the resource loss
(stage II), or a static single-op baseline.

Paths are set per batch through the model's `forced_choice`, so all three share the model's one forward.
"""

from __future__ import annotations

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
    ) -> None:
        super().__init__(model, task, lr, weight_decay, optimizer)
        self.stage = stage
        self.resource_weight = resource_weight
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
        return torch.randint(0, len(self.net.op_names), (batch, self.net.num_cells), generator=generator)

    def on_validation_epoch_start(self) -> None:
        self._validation_paths = torch.Generator().manual_seed(VALIDATION_PATH_SEED)

    def on_test_epoch_start(self) -> None:
        self._validation_paths = torch.Generator().manual_seed(VALIDATION_PATH_SEED)

    def on_train_epoch_start(self) -> None:
        self.net.tau = self.tau(self.current_epoch)
        self.log("train/tau", self.net.tau)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, target = batch
        size = input_rows(inputs) or 0  # the target's rows are checked against the inputs' in task_loss
        self.net.forced_choice = self._paths(size)
        outputs = self.net(inputs)
        loss = task_loss(self.task, outputs, target)
        self.log("train/task_loss", loss, batch_size=size)
        if self.stage == "gate":
            assert self.net.last_weights is not None
            cost = self.net.expected_cost(self.net.last_weights)
            self.log("train/expected_cost", cost, prog_bar=True, batch_size=size)
            loss = loss + self.resource_weight * cost
        return loss

    def _eval_step(self, batch: Batch, metrics: Any, stage: str) -> Tensor:
        """Validation routes as the stage trains (fixed-seed random paths in stage I); also logs the realized
        normalised cost and task loss + λ·cost, the objective stage II keeps its best checkpoint by."""
        size = input_rows(batch[0]) or 0
        self.net.forced_choice = self._paths(size, self._validation_paths)
        loss = super()._eval_step(batch, metrics, stage)
        assert self.net.last_weights is not None
        cost = self.net.expected_cost(self.net.last_weights)
        self.log(f"{stage}/expected_cost", cost, batch_size=size)
        self.log(f"{stage}/objective", loss + self.resource_weight * cost, batch_size=size)
        return loss
