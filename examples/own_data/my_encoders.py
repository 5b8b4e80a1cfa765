"""Your own encoder, named in the config by import path (`kind: module`, `target: my_encoders:AudioNet`).

Any nn.Module whose forward takes one modality's batch and returns features works; dynmm finds the output width
with one dry forward and counts its MAdds like those of its own encoders. Run dynmm from this folder (the
current folder is on the import path), or install your package.
"""

from __future__ import annotations

import torch
from torch import nn


class AudioNet(nn.Module):
    """A 1-D convolution over time, then the mean over time: (batch, steps, features) -> (batch, channels)."""

    def __init__(self, in_features: int = 8, channels: int = 32) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(in_features, channels, kernel_size=3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).mean(dim=2)
