"""LightningModule for supervised multimodal models: the science (loss, metrics, optimiser), nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from dynmm.engine.task import predictions, task_loss
from dynmm.report.metrics import build_metrics
from dynmm.specs import Batch, TaskSpec

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


class SupervisedModule(pl.LightningModule):
    """Trains any `dict[str, Tensor] -> Tensor` model on (inputs, target) batches.

    Metrics are logged as `val/<name>` and `test/<name>`; checkpoints can monitor any of them.
    """

    def __init__(
        self,
        model: nn.Module,
        task: TaskSpec,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_name = optimizer
        self.val_metrics = build_metrics(task).clone(prefix="val/")
        self.test_metrics = build_metrics(task).clone(prefix="test/")

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.model(inputs)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, target = batch
        loss = task_loss(self.task, self.model(inputs), target)
        self.log("train/loss", loss, prog_bar=True, batch_size=target.shape[0])
        return loss

    def _eval_step(self, batch: Batch, metrics: Any, stage: str) -> Tensor:
        """Log the task loss and metrics; return the loss so that subclasses can add their own terms."""
        inputs, target = batch
        outputs = self.model(inputs)
        loss = task_loss(self.task, outputs, target)
        self.log(f"{stage}/loss", loss, batch_size=target.shape[0])
        metrics.update(predictions(self.task, outputs), target)
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=target.shape[0])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        extra = {"momentum": 0.9} if self.optimizer_name == "sgd" else {}
        return OPTIMIZERS[self.optimizer_name](params, lr=self.lr, weight_decay=self.weight_decay, **extra)
