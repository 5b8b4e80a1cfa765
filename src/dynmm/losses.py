"""Resource-aware losses: the price a gate pays for choosing expensive branches.

DynMM: L = L_task + λ·Σ_i g_i·C(E_i), with C the measured MAdds of each expert normalised by the costliest one,
so λ is comparable across data sets. AdaMML: per modality k, C_k = (fraction of segments using k)² if the clip
is predicted correctly, else γ, weighted by λ_k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dynmm.errors import ConfigError


def normalised_costs(costs: Sequence[float] | Tensor) -> Tensor:
    """Costs divided by the largest, so the most expensive branch costs 1."""
    c = torch.as_tensor(costs, dtype=torch.float32)
    if c.dim() != 1 or c.numel() < 1 or bool((c < 0).any()) or float(c.max()) <= 0:
        raise ConfigError(f"branch costs must be a non-empty list of non-negative numbers, not all 0; got {c}")
    return c / c.max()


def expected_cost(weights: Tensor, costs: Tensor) -> Tensor:
    """Mean over the batch of Σ_i g_i·C_i: with straight-through one-hot weights, the chosen branch's cost."""
    return (weights * costs.to(weights.dtype)).sum(dim=1).mean()


def adamml_usage_cost(keep: Tensor, correct: Tensor, gamma: float = 10.0) -> Tensor:
    """Per-modality AdaMML cost, (modalities,): mean over clips of usage² (correct clips) or γ (wrong ones).

    keep: (clips, segments, modalities) keep decisions (straight-through weights, so gradients flow);
    correct: (clips,) bool.
    """
    usage = keep.mean(dim=1)  # (clips, modalities): fraction of segments that ran each modality
    per_clip = torch.where(correct[:, None], usage.square(), torch.full_like(usage, gamma))
    return per_clip.mean(dim=0)
