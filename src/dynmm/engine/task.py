"""Loss and prediction read-out for a task, kept apart from the model so every method shares them."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dynmm.specs import SEGMENTATION_IGNORE, TaskSpec
from dynmm.validation import check_target


def predictions(task: TaskSpec, outputs: Tensor) -> Tensor:
    """What metrics consume: the score (regression, shape (B,)), class logits (classification, (B, C)) or label
    probabilities (multilabel, (B, C); explicit, because torchmetrics guesses logits only from the value range)."""
    if task.kind == "regression":
        return outputs.squeeze(-1)
    return outputs.sigmoid() if task.kind == "multilabel" else outputs


def task_loss(task: TaskSpec, outputs: Tensor, target: Tensor) -> Tensor:
    """L1 for sentiment regression (as MultiBench's affect recipes), cross-entropy for classes and for pixels
    (segmentation: outputs (B, C, H, W), target (B, H, W) with unlabeled pixels ignored), binary cross-entropy
    per label for multilabel targets.

    The target is checked against the task first (`check_target`: shape, dtype, values), so that a target shaped
    (batch, 1) never broadcasts against (batch,) predictions into a silently wrong (batch, batch) loss, and a
    wrong shape or class id is one InputError instead of a traceback from inside torch. Every loss of every
    method goes through here (AdaMML's joint objective checks its batches itself), so every batch is checked
    once, before its loss."""
    spatial = tuple(outputs.shape[-2:]) if task.kind == "segmentation" and outputs.dim() == 4 else None
    check_target(target, task, outputs.shape[0] if outputs.dim() > 0 else None, spatial=spatial)
    if task.kind == "regression":
        return F.l1_loss(outputs.squeeze(-1), target.float())
    if task.kind == "segmentation":
        return F.cross_entropy(outputs, target.long(), ignore_index=SEGMENTATION_IGNORE)
    if task.kind == "multilabel":
        return F.binary_cross_entropy_with_logits(outputs, target.float())
    return F.cross_entropy(outputs, target.long())
