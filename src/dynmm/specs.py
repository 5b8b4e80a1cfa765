"""What a data set promises about its samples, so that models can be built and inputs checked from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

Inputs = dict[str, Tensor]
"""A batch of inputs: modality name -> tensor of shape (batch, *ModalitySpec.shape)."""

Batch = tuple[Inputs, Tensor]
"""(inputs, target): the TorchMultimodal convention used by every loader and model."""

ModalityKind = Literal["vector", "image", "sequence"]

SEGMENTATION_IGNORE = 255
"""Label of unlabeled pixels in segmentation targets (NYUv2 / ESANet convention): no loss, no metric."""


@dataclass(frozen=True)
class ModalitySpec:
    """Per-sample shape of one modality.

    vector: (features,); image: (channels, height, width); sequence: (time, features).
    """

    name: str
    shape: tuple[int, ...]
    kind: ModalityKind

    def describe(self) -> str:
        return f"{self.kind} {tuple(self.shape)}"


@dataclass(frozen=True)
class TaskSpec:
    """What the target is: a real-valued score (regression), one of `num_classes` labels (classification), any
    subset of `num_classes` labels (multilabel: target (num_classes,) of 0/1, e.g. movie genres), or one label
    per pixel (segmentation: target (H, W) int64; pixels labelled with an ignore index count nowhere)."""

    kind: Literal["regression", "classification", "multilabel", "segmentation"]
    num_classes: int = 0

    @property
    def output_dim(self) -> int:
        """Output channels of a model's head: 1 for regression, else one logit per class (per pixel)."""
        return 1 if self.kind == "regression" else self.num_classes


def example_inputs(specs: dict[str, ModalitySpec], rows: int = 1) -> Inputs:
    """Zero inputs of the promised shapes: enough to build a model and measure its MAdds (which depend on
    shapes, not values) without touching data."""
    import torch

    return {name: torch.zeros(rows, *spec.shape) for name, spec in specs.items()}
