"""A light FPN/ESANet-style decoder: fused encoder stage features -> per-pixel class logits.

Why this shape: the deepest stage knows *what* is in the image, the early stages *where* its edges are. Starting
from the deepest feature and, stage by stage, upsampling and adding a projected skip from the shallower stage
recovers resolution cheaply; the few convs here keep the decoder's cost small next to the encoders', so the
MAdds that DynMM saves in the depth encoder remain visible in the total.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from dynmm.errors import ConfigError, InputError


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SegmentationDecoder(nn.Module):
    """Top-down decoder over the fused stage features (shallowest first), ending in class logits at `out_size`.

    deepest feature -> 1x1 conv-BN-ReLU to `width`; then for each earlier stage i (deepest first): bilinear
    upsampling to stage i's size (x2 for ResNet stages), + 1x1 conv-BN projection of stage i's feature,
    3x3 conv-BN-ReLU; finally a 3x3 conv to `num_classes` and bilinear upsampling to `out_size`.

    Upsampling goes to the skip's exact size rather than a fixed x2, so inputs whose sides are not multiples
    of 32 (odd sizes after strided convs) still line up.

    Args:
        stage_channels: channels of each stage's fused feature, shallowest first (`ResNetEncoder.stage_channels`).
        num_classes: number of output classes.
        width: channels inside the decoder.
    """

    def __init__(self, stage_channels: Sequence[int], num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.stage_channels = list(stage_channels)
        if not self.stage_channels or min(self.stage_channels) < 1:
            raise ConfigError(f"decoder needs at least one stage with positive channels, got {self.stage_channels}")
        if num_classes < 1 or width < 1:
            raise ConfigError(f"decoder num_classes and width must be positive, got {num_classes} and {width}")
        self.num_classes = num_classes
        self.width = width
        self.reduce = _conv_bn_relu(self.stage_channels[-1], width, 1)
        # skips[i] / refine[i] belong to stage i, for every stage but the deepest
        self.skips = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width)) for c in self.stage_channels[:-1]
        )
        self.refine = nn.ModuleList(_conv_bn_relu(width, width, 3) for _ in self.stage_channels[:-1])
        self.classifier = nn.Conv2d(width, num_classes, 3, padding=1)

    def check_features(self, features: Sequence[Tensor]) -> None:
        """Raise InputError unless there is one (B, C_i, H_i, W_i) feature per stage with the expected C_i."""
        if len(features) != len(self.stage_channels):
            raise InputError(f"decoder expects {len(self.stage_channels)} stage features, got {len(features)}")
        got = [f.shape[1] if f.dim() == 4 else tuple(f.shape) for f in features]
        if got != self.stage_channels:
            raise InputError(
                f"decoder expects (B, C, H, W) stage features with channels {self.stage_channels}, got {got}"
            )

    def forward(self, features: Sequence[Tensor], out_size: tuple[int, int]) -> Tensor:
        self.check_features(features)
        x = self.reduce(features[-1])
        for i in range(len(features) - 2, -1, -1):
            skip = features[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.refine[i](x + self.skips[i](skip))
        logits = self.classifier(x)
        return F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)
