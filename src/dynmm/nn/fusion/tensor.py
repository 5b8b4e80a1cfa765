"""Tensor fusion (TFN) and its low-rank factorisation (LMF): all cross-modal products of features.

Appending a constant 1 to each embedding before the outer product keeps the unimodal and lower-order terms in
the product, so one linear map sees all of them (Zadeh et al., 2017). LMF writes that map's weight tensor as a
sum of `rank` outer products of per-modality factors and never builds the product itself (Liu et al., 2018),
so its cost grows with the sum of the embedding sizes instead of their product.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dynmm.errors import ConfigError
from dynmm.nn.fusion.base import Fusion
from dynmm.nn.fusion.registry import register_fusion


def append_one(z: Tensor) -> Tensor:
    """[z; 1] for every row: (batch, d) -> (batch, d + 1)."""
    return torch.cat([z, z.new_ones(z.shape[0], 1)], dim=1)


@register_fusion("tfn")
class TensorFusion(Fusion):
    """Tensor Fusion Network: Linear(flatten([z_1;1] ⊗ ... ⊗ [z_M;1])) with modalities in sorted order.

    The input of the Linear has prod(d_m + 1) features, so keep embeddings small (the paper uses 32-128).

    Args:
        in_dims: modality -> embedding size.
        out_dim: size of the output.

    Inputs:
        embeddings (Dict[str, Tensor]): modality -> (batch, in_dims[modality]).
    """

    def __init__(self, in_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(in_dims, out_dim)
        self.proj = nn.Linear(math.prod(d + 1 for d in self.in_dims.values()), out_dim)

    def outer_product(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """Flat outer product of the 1-appended embeddings, (batch, prod(d_m + 1)), in np.kron order."""
        zs = [append_one(z) for z in self.embeddings_in_order(embeddings)]
        t = zs[0]
        for z in zs[1:]:
            # bmm rather than einsum: FlopCounterMode counts bmm, and an einsum without a sum lowers to a mul.
            t = torch.bmm(t.unsqueeze(2), z.unsqueeze(1)).flatten(1)
        return t

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        return self.proj(self.outer_product(embeddings))


@register_fusion("lmf")
class LowRankFusion(Fusion):
    """Low-rank Multimodal Fusion: sum_r w_r * prod_m ([z_m;1] @ W_m[r]) + b.

    Equal to a TFN whose weight tensor is sum_r w_r * W_1[r] ⊗ ... ⊗ W_M[r] (outer product over input axes).

    Args:
        in_dims: modality -> embedding size.
        out_dim: size of the output.
        rank: number of rank-one terms.

    Inputs:
        embeddings (Dict[str, Tensor]): modality -> (batch, in_dims[modality]).
    """

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, rank: int = 4) -> None:
        super().__init__(in_dims, out_dim)
        if not isinstance(rank, int) or rank <= 0:
            raise ConfigError(f"fusion 'lmf': rank must be a positive integer, got {rank!r}")
        self.rank = rank
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(rank, d + 1, out_dim)) for m, d in self.in_dims.items()}
        )
        self.fusion_weights = nn.Parameter(torch.empty(1, rank))
        self.bias = nn.Parameter(torch.zeros(1, out_dim))
        for f in self.factors.values():
            nn.init.xavier_normal_(f)
        nn.init.xavier_normal_(self.fusion_weights)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        zs = self.embeddings_in_order(embeddings)
        per_modality = [  # each (batch, rank, out_dim)
            torch.einsum("bi,rio->bro", append_one(z), self.factors[m])
            for m, z in zip(self.modalities, zs, strict=True)
        ]
        fused = torch.stack(per_modality).prod(dim=0)
        return torch.einsum("r,bro->bo", self.fusion_weights[0], fused) + self.bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"
