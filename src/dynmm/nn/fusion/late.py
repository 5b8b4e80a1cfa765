"""Late fusion: each modality predicts on its own and the predictions are averaged.

Why here and not as a model: the per-modality heads already give task outputs, so a late-fusion op is the
whole tail of the model (`produces_predictions = True`) and the builder puts no head after it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dynmm.nn.fusion.base import Fusion
from dynmm.nn.fusion.registry import register_fusion


@register_fusion("late_mean")
class LateMean(Fusion):
    """One Linear head per modality; the output is the mean of their predictions.

    Args:
        in_dims: modality -> embedding size.
        out_dim: task output size (classes, or 1 for regression).

    Inputs:
        embeddings (Dict[str, Tensor]): modality -> (batch, in_dims[modality]).
    """

    produces_predictions = True

    def __init__(self, in_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(in_dims, out_dim)
        self.heads = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in self.in_dims.items()})

    def predictions(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """Per-modality predictions stacked as (batch, modalities, out_dim), modalities in sorted order."""
        zs = self.embeddings_in_order(embeddings)
        return torch.stack([self.heads[m](z) for m, z in zip(self.modalities, zs, strict=True)], dim=1)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        return self.predictions(embeddings).mean(dim=1)


@register_fusion("late_weighted")
class LateWeighted(LateMean):
    """Per-modality heads combined with learned positive weights softmax(w) that sum to one.

    `w` starts at zero, so training starts from the plain mean and learns to trust the better modality.

    Args:
        in_dims: modality -> embedding size.
        out_dim: task output size.

    Inputs:
        embeddings (Dict[str, Tensor]): modality -> (batch, in_dims[modality]).
    """

    def __init__(self, in_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(in_dims, out_dim)
        self.logits = nn.Parameter(torch.zeros(len(self.modalities)))

    def weights(self) -> Tensor:
        """Combination weights, one per modality in sorted order."""
        return torch.softmax(self.logits, dim=0)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        return torch.einsum("bmo,m->bo", self.predictions(embeddings), self.weights())
