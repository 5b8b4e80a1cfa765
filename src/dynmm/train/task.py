"""Loss and prediction read-out for a task, kept apart from the model so every method shares them."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dynmm.specs import SEGMENTATION_IGNORE, TaskSpec


def predictions(task: TaskSpec, outputs: Tensor) -> Tensor:
    """What metrics consume: the score (regression, shape (B,)) or class logits (classification, (B, C))."""
    return outputs.squeeze(-1) if task.kind == "regression" else outputs


def task_loss(task: TaskSpec, outputs: Tensor, target: Tensor) -> Tensor:
    """L1 for sentiment regression (as MultiBench's affect recipes), cross-entropy for classes and for pixels
    (segmentation: outputs (B, C, H, W), target (B, H, W) with unlabeled pixels ignored)."""
    if task.kind == "regression":
        return F.l1_loss(outputs.squeeze(-1), target.float())
    if task.kind == "segmentation":
        return F.cross_entropy(outputs, target.long(), ignore_index=SEGMENTATION_IGNORE)
    return F.cross_entropy(outputs, target.long())
