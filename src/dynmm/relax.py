"""Gumbel-softmax relaxation of a discrete choice, and the temperature schedules the methods anneal it with.

Why our own: `torch.nn.functional.gumbel_softmax` takes no generator (so draws cannot be seeded per call) and
gives no access to the hard index; gates need both the index (to dispatch) and the straight-through weights
(to train).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dynmm.errors import ConfigError

_TINY = torch.finfo(torch.float32).tiny


def sample_gumbel(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None, **kw) -> Tensor:
    """Standard Gumbel noise -log(-log U), U ~ Uniform(0, 1), kept away from log(0)."""
    u = torch.rand(shape, generator=generator, **kw).clamp_(min=_TINY, max=1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def gumbel_softmax(
    logits: Tensor,
    tau: float = 1.0,
    hard: bool = True,
    noise: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Relaxed one-hot sample over the last axis: returns (index, weights).

    hard=True gives one-hot weights in the forward pass whose gradient is that of the soft sample
    (straight-through); hard=False gives the soft sample. noise=False drops the Gumbel noise (deterministic
    argmax at test time).
    """
    if tau <= 0:
        raise ConfigError(f"Gumbel-softmax temperature must be > 0, got {tau}")
    perturbed = logits
    if noise:
        perturbed = logits + sample_gumbel(logits.shape, generator, device=logits.device, dtype=logits.dtype)
    soft = F.softmax(perturbed / tau, dim=-1)
    index = soft.argmax(dim=-1)
    if not hard:
        return index, soft
    one_hot = F.one_hot(index, logits.shape[-1]).to(soft.dtype)
    return index, one_hot - soft.detach() + soft


ScheduleKind = Literal["constant", "exponential", "multiplicative", "inverse_exponential"]


@dataclass(frozen=True)
class TemperatureSchedule:
    """Temperature as a function of the epoch.

    constant: `start` forever.
    exponential: from `start` to `end` geometrically over `epochs` epochs (DynMM fusion-level: 1 -> 1e-4).
    multiplicative: `start` × `factor`^epoch (AdaMML: 5 × 0.965^epoch), floored at `end`.
    inverse_exponential: `end` + (`start` - `end`)·exp(-epoch / `epochs`) (MFAS sampling temperature).
    """

    kind: ScheduleKind = "constant"
    start: float = 1.0
    end: float = 1e-4
    epochs: int = 1
    factor: float = 0.965

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "exponential", "multiplicative", "inverse_exponential"):
            raise ConfigError(f"unknown temperature schedule {self.kind!r}")
        if self.start <= 0 or self.end <= 0 or self.epochs < 1 or self.factor <= 0:
            raise ConfigError(f"temperature schedule needs start, end, factor > 0 and epochs >= 1, got {self}")

    def __call__(self, epoch: int) -> float:
        if self.kind == "constant":
            return self.start
        if self.kind == "exponential":
            progress = min(max(epoch, 0), self.epochs) / self.epochs
            return self.start * (self.end / self.start) ** progress
        if self.kind == "multiplicative":
            return max(self.start * self.factor**epoch, self.end)
        return self.end + (self.start - self.end) * math.exp(-epoch / self.epochs)
