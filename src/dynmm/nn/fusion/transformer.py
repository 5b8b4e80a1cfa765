"""Transformer fusion: each modality's embedding is one token, and self-attention mixes them.

Why tokens: attention weights are computed per sample, so how much one modality contributes to the fused
vector depends on the input, and the op takes any number of modalities without changing its parameter shapes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dynmm.nn.fusion.base import Fusion
from dynmm.nn.fusion.registry import register_fusion


@register_fusion("transformer")
class TransformerFusion(Fusion):
    """[CLS; proj_m(z_m) + e_m for each modality m] -> nn.TransformerEncoder -> CLS output -> Linear(out_dim).

    e_m is a learned modality embedding (the tokens have no order, so this is how attention tells them apart).

    Args:
        in_dims: modality -> embedding size.
        out_dim: size of the output.
        d_model, nhead, num_layers, dim_feedforward, dropout: as in `nn.TransformerEncoderLayer`.

    Inputs:
        embeddings (Dict[str, Tensor]): modality -> (batch, in_dims[modality]).
    """

    def __init__(
        self,
        in_dims: Mapping[str, int],
        out_dim: int,
        d_model: int = 64,
        nhead: int = 2,
        num_layers: int = 1,
        dim_feedforward: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_dims, out_dim)
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in self.in_dims.items()})
        self.modality_embed = nn.Parameter(torch.randn(len(self.modalities), d_model) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, out_dim)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        zs = self.embeddings_in_order(embeddings)
        tokens = torch.stack([self.proj[m](z) for m, z in zip(self.modalities, zs, strict=True)], dim=1)
        tokens = tokens + self.modality_embed
        cls = self.cls.expand(tokens.shape[0], -1, -1)
        return self.head(self.encoder(torch.cat([cls, tokens], dim=1))[:, 0])
