"""Task metrics built from torchmetrics.

Affect (MOSI) metrics follow MultiBench: binary accuracy in two variants, 7-class accuracy, MAE and Pearson
correlation on the continuous sentiment score. Classification: accuracy and macro-F1.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, Metric, MetricCollection, PearsonCorrCoef
from torchmetrics.classification import (
    BinaryAccuracy,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MultilabelExactMatch,
    MultilabelF1Score,
)

from dynmm.specs import SEGMENTATION_IGNORE, TaskSpec

IGNORE = -1


class SentimentBinaryAccuracy(BinaryAccuracy):
    """Binary accuracy on a continuous sentiment score.

    `exclude_zero=False`: negative (< 0) vs non-negative (>= 0), the data set's own `label_bin` convention.
    `exclude_zero=True`: the "non-zero" variant common in MOSI papers: utterances labelled exactly 0 are dropped
    and positive means > 0.
    """

    def __init__(self, exclude_zero: bool = False) -> None:
        super().__init__(ignore_index=IGNORE)
        self.exclude_zero = exclude_zero

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        if self.exclude_zero:
            positive_pred = preds > 0
            positive_true = torch.where(target == 0, IGNORE, (target > 0).long())
        else:
            positive_pred = preds >= 0
            positive_true = (target >= 0).long()
        super().update(positive_pred.long(), positive_true)


class SentimentSevenClassAccuracy(MulticlassAccuracy):
    """Accuracy after rounding the score, clipped to [-3, 3], to the 7 integer classes."""

    def __init__(self) -> None:
        super().__init__(num_classes=7, average="micro")

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        def to_class(x: Tensor) -> Tensor:
            return (torch.round(x.clamp(-3, 3)) + 3).long()

        super().update(to_class(preds), to_class(target))


def affect_metrics() -> MetricCollection:
    metrics: dict[str, Metric] = {
        "acc2": SentimentBinaryAccuracy(exclude_zero=False),
        "acc2_nonzero": SentimentBinaryAccuracy(exclude_zero=True),
        "acc7": SentimentSevenClassAccuracy(),
        "mae": MeanAbsoluteError(),
        "corr": PearsonCorrCoef(),
    }
    return MetricCollection(metrics)  # type: ignore[arg-type]


def classification_metrics(num_classes: int) -> MetricCollection:
    metrics: dict[str, Metric] = {
        "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "macro_f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
    }
    return MetricCollection(metrics)  # type: ignore[arg-type]


def multilabel_metrics(num_labels: int) -> MetricCollection:
    """Micro- and macro-F1 at threshold 0.5 (MM-IMDB's metrics in the papers) and exact match (every label
    right), the per-sample notion of correct that oracle routing uses. Inputs are probabilities."""
    metrics: dict[str, Metric] = {
        "f1_micro": MultilabelF1Score(num_labels=num_labels, average="micro", threshold=0.5),
        "f1_macro": MultilabelF1Score(num_labels=num_labels, average="macro", threshold=0.5),
        "exact_match": MultilabelExactMatch(num_labels=num_labels, threshold=0.5),
    }
    return MetricCollection(metrics)  # type: ignore[arg-type]


def segmentation_metrics(num_classes: int) -> MetricCollection:
    """Mean IoU over classes and pixel accuracy, both ignoring unlabeled pixels."""
    metrics: dict[str, Metric] = {
        "miou": MulticlassJaccardIndex(num_classes=num_classes, average="macro", ignore_index=SEGMENTATION_IGNORE),
        "pixel_accuracy": MulticlassAccuracy(
            num_classes=num_classes, average="micro", ignore_index=SEGMENTATION_IGNORE
        ),
    }
    return MetricCollection(metrics)  # type: ignore[arg-type]


def build_metrics(task: TaskSpec) -> MetricCollection:
    """Regression targets here are sentiment scores (MOSI), hence the affect metrics."""
    if task.kind == "regression":
        return affect_metrics()
    if task.kind == "segmentation":
        return segmentation_metrics(task.num_classes)
    if task.kind == "multilabel":
        return multilabel_metrics(task.num_classes)
    return classification_metrics(task.num_classes)


def primary_metric(task: TaskSpec) -> tuple[str, str]:
    """(metric name, "max" or "min") used to pick the best checkpoint by default."""
    if task.kind == "segmentation":
        return ("miou", "max")
    if task.kind == "multilabel":
        return ("f1_micro", "max")
    return ("mae", "min") if task.kind == "regression" else ("accuracy", "max")
