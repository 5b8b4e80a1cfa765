"""The MFAS surrogate: an LSTM reads an architecture layer by layer and predicts its validation score.

Why an LSTM: architectures of different depths share one predictor, and a layer's value depends on the layers
before it. Each layer is embedded as the sum of one embedding per backbone's chosen layer and one for the
activation; the last hidden state goes through a linear map and a sigmoid (scores are accuracies in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import ConfigDict, Strict, with_config
from torch import Tensor, nn
from torchmetrics.functional import spearman_corrcoef

from dynmm.errors import ConfigError
from dynmm.methods.mfas.space import Architecture, SearchSpace


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class SurrogateSettings:
    """Embedding and LSTM sizes, and how each refit trains (full-batch Adam on MSE). Read from `mfas.surrogate`
    with `dynmm.config.from_dict`: unknown keys are refused and values are never coerced (Strict)."""

    embed_dim: Annotated[int, Strict()] = 16
    hidden: Annotated[int, Strict()] = 64
    epochs: Annotated[int, Strict()] = 100
    lr: Annotated[float, Strict()] = 3e-3

    def __post_init__(self) -> None:
        if min(self.embed_dim, self.hidden, self.epochs) < 1 or self.lr <= 0:
            raise ConfigError(f"mfas.surrogate: sizes and epochs must be >= 1 and lr > 0, got {self}")


class Surrogate(nn.Module):
    """Predicts a score in [0, 1] for each architecture of a batch (of any depths)."""

    def __init__(self, space: SearchSpace, settings: SurrogateSettings) -> None:
        super().__init__()
        self.space = space
        self.settings = settings
        self.tap_embeddings = nn.ModuleList(
            nn.Embedding(len(space.layer_names[m]), settings.embed_dim) for m in space.modalities
        )
        self.activation_embedding = nn.Embedding(len(space.activations), settings.embed_dim)
        self.lstm = nn.LSTM(settings.embed_dim, settings.hidden, batch_first=True)
        self.readout = nn.Linear(settings.hidden, 1)

    def _encode(self, architectures: Sequence[Architecture]) -> tuple[Tensor, Tensor]:
        depth = max(len(a) for a in architectures)
        width = len(self.space.modalities) + 1
        codes = torch.zeros(len(architectures), depth, width, dtype=torch.long)
        for i, arch in enumerate(architectures):
            for j, layer in enumerate(arch):
                codes[i, j] = torch.tensor([*layer.taps, layer.activation])
        lengths = torch.tensor([len(a) for a in architectures])
        return codes, lengths

    def forward(self, architectures: Sequence[Architecture]) -> Tensor:
        codes, lengths = self._encode(architectures)
        x = self.activation_embedding(codes[..., -1])
        for i, embedding in enumerate(self.tap_embeddings):
            x = x + embedding(codes[..., i])
        out, _ = self.lstm(x)  # padded steps come after the last real one, so they never reach it
        last = out[torch.arange(len(architectures)), lengths - 1]
        return torch.sigmoid(self.readout(last)).squeeze(-1)

    def predict(self, architectures: Sequence[Architecture]) -> list[float]:
        if not architectures:
            return []
        self.eval()
        with torch.no_grad():
            return [float(v) for v in self(architectures)]

    def fit(self, architectures: Sequence[Architecture], scores: Sequence[float], seed: int) -> float:
        """Continue training on all evaluated architectures; returns the final training MSE."""
        target = torch.tensor(list(scores), dtype=torch.float32)
        optimizer = torch.optim.Adam(self.parameters(), lr=self.settings.lr)
        self.train()
        loss = torch.tensor(0.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(self.settings.epochs):
                loss = nn.functional.mse_loss(self(architectures), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return float(loss.detach())


def prediction_quality(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float | None]:
    """Mean absolute error and Spearman rank correlation of predictions made before the scores were known."""
    if not predicted:
        return {"mae": None, "spearman": None}
    p, m = torch.tensor(list(predicted)), torch.tensor(list(measured))
    rho = float(spearman_corrcoef(p, m)) if len(p) > 2 and p.std() > 0 and m.std() > 0 else None
    return {"mae": float((p - m).abs().mean()), "spearman": rho}
