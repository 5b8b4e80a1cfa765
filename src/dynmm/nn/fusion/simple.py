"""The two baselines every comparison needs: one modality alone, and all modalities concatenated."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dynmm.errors import ConfigError
from dynmm.nn.fusion.base import Fusion
from dynmm.nn.fusion.registry import register_fusion


@register_fusion("unimodal")
class Unimodal(Fusion):
    """A single modality projected to `out_dim`: the unimodal expert and the cheapest point on a cost curve.

    Args:
        in_dims: exactly one modality -> embedding size.
        out_dim: size of the output.

    Inputs:
        embeddings (Dict[str, Tensor]): that modality -> (batch, in_dim).
    """

    def __init__(self, in_dims: Mapping[str, int], out_dim: int) -> None:
        if len(in_dims) != 1:
            raise ConfigError(f"fusion 'unimodal' takes exactly one modality, got {sorted(in_dims)}")
        super().__init__(in_dims, out_dim)
        self.proj = nn.Linear(self.in_dims[self.modalities[0]], out_dim)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        (z,) = self.embeddings_in_order(embeddings)
        return self.proj(z)


@register_fusion("concat")
class Concat(Fusion):
    """Concatenate the embeddings (sorted by modality) and apply one Linear.

    With identity encoders this is early fusion of the raw features.

    Args:
        in_dims: modality -> embedding size.
        out_dim: size of the output.

    Inputs:
        embeddings (Dict[str, Tensor]): modality -> (batch, in_dims[modality]).
    """

    def __init__(self, in_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(in_dims, out_dim)
        self.proj = nn.Linear(sum(self.in_dims.values()), out_dim)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        return self.proj(torch.cat(self.embeddings_in_order(embeddings), dim=1))
