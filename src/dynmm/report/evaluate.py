"""Evaluate a model on a data loader with the task's torchmetrics; shared by training and `dynmm eval`."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from dynmm.engine.task import predictions, task_loss
from dynmm.modes import eval_mode
from dynmm.report.metrics import build_metrics
from dynmm.specs import Batch, TaskSpec


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], task: TaskSpec) -> dict[str, float]:
    """Metrics (and mean loss) of `model` in eval mode over all batches."""
    metrics = build_metrics(task)
    loss_sum, count = 0.0, 0
    with eval_mode(model):
        for inputs, target in batches:
            outputs = model(inputs)
            loss_sum += float(task_loss(task, outputs, target)) * target.shape[0]
            count += target.shape[0]
            metrics.update(predictions(task, outputs), target)
    results = {name: float(value) for name, value in metrics.compute().items()}
    results["loss"] = loss_sum / max(count, 1)
    return results
