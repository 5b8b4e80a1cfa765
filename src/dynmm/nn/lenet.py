"""The MFAS paper's AV-MNIST backbones: LeNet-3 (images) and LeNet-5 (audio spectrograms).

Why this shape: MFAS (Pérez-Rúa et al., CVPR 2019) searches over the global-pooled output of every conv block
of these two networks (3 image layers × 5 audio layers), so the block structure is the search space. Each
block is conv (5x5 in the first block, 3x3 after) -> BatchNorm -> ReLU -> 2x2 max pool, channels doubling per
block; the embedding is the global average of the last block's ReLU output, as in the authors' code (which
pools each ReLU output before its max pool). Each ReLU is its own module, so an MFAS backbone taps exactly
these block outputs.
"""

from __future__ import annotations

from torch import Tensor, nn

from dynmm.errors import InputError
from dynmm.nn.image_backbone import check_image_batch, pooled_embedding


class LeNetEncoder(nn.Module):
    """`layers` conv blocks with `channels` × 2^i channels, global average pool of the last block's ReLU.

    Args:
        in_channels: channels of the input image.
        channels: channels of the first block (MFAS: 24).
        layers: number of conv blocks (LeNet-3: 3, LeNet-5: 5); each halves height and width.
        out_dim: embedding size; the last block's width (`channels` × 2^(layers-1)) uses the pooled block
            output as is, any other size adds a Linear projection.
    """

    def __init__(self, in_channels: int, channels: int = 24, layers: int = 3, out_dim: int | None = None) -> None:
        super().__init__()
        if min(in_channels, channels, layers) < 1:
            raise ValueError(f"channels and layers must be >= 1, got channels={channels}, layers={layers}")
        blocks: list[nn.Module] = []
        width = in_channels
        for i in range(layers):
            out = channels * 2**i
            kernel = 5 if i == 0 else 3
            conv = nn.Conv2d(width, out, kernel, padding=kernel // 2, bias=False)
            block = nn.Sequential(conv, nn.BatchNorm2d(out), nn.ReLU())
            blocks.append(block)
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.in_channels = in_channels
        self.width = width
        self.out_dim, self.proj = pooled_embedding(width, out_dim)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_uniform_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, "LeNetEncoder")
        minimum = 2 ** (len(self.blocks) - 1)
        if min(x.shape[2:]) < minimum:
            raise InputError(
                f"LeNetEncoder with {len(self.blocks)} blocks needs height and width >= {minimum}, "
                f"got shape {tuple(x.shape)}"
            )
        out = x
        for i, block in enumerate(self.blocks):
            if i > 0:
                out = nn.functional.max_pool2d(out, 2)
            out = block(out)
        return self.proj(out.mean(dim=(2, 3)))
