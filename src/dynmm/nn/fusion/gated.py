"""Gated Multimodal Unit (Arevalo et al., 2017), for any number of modalities.

Why gates: a per-sample, per-feature convex combination lets the network lean on whichever modality is
informative for this sample, which a fixed concatenation cannot. With two modalities the softmax over
modalities is the paper's sigmoid gate z, h = z * h_1 + (1 - z) * h_2.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dynmm.nn.fusion.base import Fusion
from dynmm.nn.fusion.registry import register_fusion


@register_fusion("gmu")
class GatedMultimodalUnit(Fusion):
    """h_m = tanh(W_m z_m); gates = softmax_m(W_g [z_1; ...; z_M]); output = sum_m gate_m * h_m.

    Args:
        in_dims: modality -> embedding size.
        out_dim: size of the output (and of every h_m).

    Inputs:
        embeddings (Dict[str, Tensor]): modality -> (batch, in_dims[modality]).
    """

    def __init__(self, in_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(in_dims, out_dim)
        self.hidden = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in self.in_dims.items()})
        self.gate = nn.Linear(sum(self.in_dims.values()), len(self.modalities) * out_dim)

    def gates(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """Per-sample, per-feature weights (batch, modalities, out_dim); they sum to one over modalities."""
        logits = self.gate(torch.cat(self.embeddings_in_order(embeddings), dim=1))
        return torch.softmax(logits.view(-1, len(self.modalities), self.out_dim), dim=1)

    def forward(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        zs = self.embeddings_in_order(embeddings)
        h = torch.stack([torch.tanh(self.hidden[m](z)) for m, z in zip(self.modalities, zs, strict=True)], dim=1)
        return (self.gates(embeddings) * h).sum(dim=1)
