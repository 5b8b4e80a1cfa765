"""What the image backbones used as encoders (LightCNN, MobileNetV2, LeNet, pooled ResNet) share: one check of
the batch they are given, and one rule for the size of the embedding they return."""

from __future__ import annotations

from torch import Tensor, nn

from dynmm.errors import InputError


def check_image_batch(x: Tensor, channels: int, name: str) -> None:
    """Raise InputError naming the network unless `x` is (batch, channels, H, W): clearer than conv2d's error."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise InputError(f"{name} expects (batch, {channels}, H, W) input, got shape {tuple(x.shape)}")


def pooled_embedding(width: int, out_dim: int | None) -> tuple[int, nn.Module]:
    """(embedding size, projection) for a network whose pooled features are `width` wide: the features as they
    are when `out_dim` is None or equal to `width`, else a Linear to `out_dim`."""
    size = width if out_dim is None else out_dim
    return size, nn.Identity() if size == width else nn.Linear(width, size)
