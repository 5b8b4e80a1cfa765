"""Stage II of modality-level DynMM: train the gate with the resource-aware loss, experts frozen (or fine-tuned).

L = L_task + λ·Σ_i g_i·C(E_i), with g the straight-through Gumbel weights of the gate and C the experts' measured
MAdds normalised by the costliest expert. Frozen experts are also kept in eval mode, so their dropout and
batch-norm statistics do not change while the gate learns to route.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor

from dynmm.engine.module import SupervisedModule
from dynmm.engine.task import task_loss
from dynmm.losses import expected_cost
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.specs import Batch, TaskSpec


class DynMMGateModule(SupervisedModule):
    """Trains a ModalityLevelDynMM's gate (and optionally its experts) with the resource-aware loss."""

    def __init__(
        self,
        model: ModalityLevelDynMM,
        task: TaskSpec,
        resource_weight: float,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        train_experts: bool = False,
    ) -> None:
        super().__init__(model, task, lr, weight_decay, optimizer)
        self.resource_weight = resource_weight
        self.train_experts = train_experts
        for parameter in model.experts.parameters():
            parameter.requires_grad_(train_experts)

    @property
    def dynmm(self) -> ModalityLevelDynMM:
        """The routed model (stored once, as `model`, so checkpoints hold each weight once)."""
        return cast(ModalityLevelDynMM, self.model)

    def on_train_epoch_start(self) -> None:
        if not self.train_experts:
            self.dynmm.experts.eval()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, target = batch
        outputs = self.dynmm(inputs)
        decision = self.dynmm.last_gate
        assert decision is not None
        task = task_loss(self.task, outputs, target)
        resource = expected_cost(decision.weights, self.dynmm.costs)
        size = target.shape[0]
        self.log("train/task_loss", task, batch_size=size)
        self.log("train/expected_cost", resource, prog_bar=True, batch_size=size)
        self.log("train/cheapest_share", (decision.choice == 0).float().mean(), batch_size=size)
        return task + self.resource_weight * resource

    def _eval_step(self, batch: Batch, metrics: Any, stage: str) -> Tensor:
        """Also log the realized normalised cost and the objective the recipe selects checkpoints by:
        task loss + λ·cost, the same trade-off the gate is trained for."""
        loss = super()._eval_step(batch, metrics, stage)
        decision = self.dynmm.last_gate
        assert decision is not None
        size = decision.choice.shape[0]
        cost = expected_cost(decision.weights, self.dynmm.costs)
        self.log(f"{stage}/expected_cost", cost, batch_size=size)
        self.log(f"{stage}/objective", loss + self.resource_weight * cost, batch_size=size, prog_bar=stage == "val")
        return loss
