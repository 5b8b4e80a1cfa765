"""Loss and prediction read-out for a task, kept apart from the model so every method shares them."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dynmm.specs import SEGMENTATION_IGNORE, TaskSpec


def predictions(task: TaskSpec, outputs: Tensor) -> Tensor:
    """What metrics consume: the score (regression, shape (B,)), class logits (classification, (B, C)) or label
    probabilities (multilabel, (B, C); explicit, because torchmetrics guesses logits only from the value range)."""
    if task.kind == "regression":
        return outputs.squeeze(-1)
    return outputs.sigmoid() if task.kind == "multilabel" else outputs


def task_loss(task: TaskSpec, outputs: Tensor, target: Tensor) -> Tensor:
    """L1 for sentiment regression (as MultiBench's affect recipes), cross-entropy for classes and for pixels
    (segmentation: outputs (B, C, H, W), target (B, H, W) with unlabeled pixels ignored), binary cross-entropy
    per label for multilabel targets."""
    if task.kind == "regression":
        return F.l1_loss(outputs.squeeze(-1), target.float())
    if task.kind == "segmentation":
        return F.cross_entropy(outputs, target.long(), ignore_index=SEGMENTATION_IGNORE)
    if task.kind == "multilabel":
        return F.binary_cross_entropy_with_logits(outputs, target.float())
    return F.cross_entropy(outputs, target.long())
