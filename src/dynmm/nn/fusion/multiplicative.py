"""Multiplicative interactions (Jayakumar et al., ICLR 2020): one modality generates the weights for the rest.

f(x, z) = z^T W x + z^T U + V x + b, i.e. a Linear layer on x whose weight (V + z^T W) and bias (b + z^T U)
depend on the context z. It contains gating, hypernetworks and bilinear pooling as special cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dynmm.errors import ConfigError
from dynmm.nn.fusion.base import Fusion
from dynmm.nn.fusion.registry import register_fusion


@register_fusion("mi")
class MultiplicativeInteraction(Fusion):
    """Multiplicative interaction layer with one context modality z and x = the other modalities concatenated.

    Args:
        in_dims: modality -> embedding size; at least two modalities.
        out_dim: size of the output.
        context: modality used as z (default: the first in sorted order).

    Inputs:
        embeddings (Dict[str, Tensor]): modality -> (batch, in_dims[modality]).
    """

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, context: str | None = None) -> None:
        super().__init__(in_dims, out_dim)
        if len(self.modalities) < 2:
            raise ConfigError(f"fusion 'mi' needs at least two modalities, got {self.modalities}")
        context = self.modalities[0] if context is None else context
        if context not in self.in_dims:
            raise ConfigError(f"fusion 'mi': context {context!r} is not one of the modalities {self.modalities}")
        self.context = context
        self.others = [m for m in self.modalities if m != context]
        d_z, d_x = self.in_dims[context], sum(self.in_dims[m] for m in self.others)
        # Uniform init on the scale nn.Linear uses, shrunk by sqrt(d_z) where z multiplies the term.
        self.W = nn.Parameter(_uniform((d_z, d_x, out_dim), 1 / math.sqrt(d_x * d_z)))
        self.U = nn.Parameter(_uniform((d_z, out_dim), 1 / math.sqrt(d_z)))
        self.V = nn.Parameter(_uniform((d_x, out_dim), 1 / math.sqrt(d_x)))
        self.b = nn.Parameter(_uniform((out_dim,), 1 / math.sqrt(d_x)))

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        named = dict(zip(self.modalities, self.embeddings_in_order(embeddings), strict=True))
        z = named[self.context]
        x = torch.cat([named[m] for m in self.others], dim=1)
        bilinear = torch.einsum("bj,bjo->bo", x, torch.einsum("bi,ijo->bjo", z, self.W))
        return bilinear + z @ self.U + x @ self.V + self.b

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, context={self.context!r}"


def _uniform(shape: tuple[int, ...], bound: float) -> Tensor:
    return torch.empty(shape).uniform_(-bound, bound)
