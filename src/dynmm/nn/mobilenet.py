"""MobileNetV2-style inverted residual blocks and a light CNN built from them (AdaMML's per-modality policy CNN).

Why our own and not torchvision: torchvision is not available here, and AdaMML's policy needs a CNN far smaller
than MobileNetV2 (its cost is paid on every segment of every clip), with configurable widths and strides so the
same class fits a 28x28 digit image and a 1 x n_mels x frames log-mel "image".
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dynmm.errors import ConfigError
from dynmm.nn.image_backbone import check_image_batch, pooled_embedding


def _conv_bn_relu6(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    """Bias-free conv ('same' padding) + BN + ReLU6, MobileNetV2's basic unit (ReLU6 keeps low-precision ranges)."""
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False
    )
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU6(inplace=True)]


def _init_weights(net: nn.Module) -> None:
    """He init for convs (fan-out, as torchvision's MobileNetV2), BN as identity: trains from scratch stably."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class InvertedResidual(nn.Module):
    """1x1 expand (+BN+ReLU6) -> 3x3 depthwise (strided, +BN+ReLU6) -> 1x1 linear projection (+BN).

    The projection has no activation (a "linear bottleneck": ReLU on the narrow tensor would destroy
    information). The input is added back only when the shape is unchanged (stride 1 and in == out channels);
    `expand_ratio` 1 skips the expand conv, as the first MobileNetV2 block does.

    Args:
        in_ch: channels of the input.
        out_ch: channels of the output.
        stride: stride of the depthwise conv (1 or 2).
        expand_ratio: hidden channels = in_ch * expand_ratio.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if min(in_ch, out_ch, stride, expand_ratio) < 1:
            raise ConfigError(
                f"InvertedResidual needs positive channels, stride and expand ratio, got in_ch={in_ch}, "
                f"out_ch={out_ch}, stride={stride}, expand_ratio={expand_ratio}"
            )
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += _conv_bn_relu6(in_ch, hidden, 1)
        layers += _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        layers += [nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class LightCNN(nn.Module):
    """3x3 stem conv (stride 2) -> one inverted residual block per width -> 1x1 conv to `out_dim` -> global pool.

    Returns one `out_dim` vector per image. Global average pooling makes it work for any input size at least
    as large as the total stride wants (e.g. 1x28x28 images and 1x40x51 log-mels with the same widths).

    Args:
        in_channels: channels of the input image.
        widths: output channels of each block; the stem outputs `widths[0]` channels.
        strides: stride of each block's depthwise conv; same length as `widths`.
        expand_ratio: expansion of every block (1 = no expand conv).
        out_dim: size of the returned feature vector (a 1x1 conv + BN + ReLU6 before the pool, as MobileNetV2).
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = (8, 16, 24, 32),
        strides: Sequence[int] = (1, 2, 2, 2),
        expand_ratio: int = 2,
        out_dim: int = 64,
    ) -> None:
        super().__init__()
        widths, strides = tuple(widths), tuple(strides)
        if not widths or len(widths) != len(strides):
            raise ConfigError(f"LightCNN needs one stride per width, got widths {widths} and strides {strides}")
        if min(in_channels, *widths, *strides, expand_ratio, out_dim) < 1:
            raise ConfigError(
                f"LightCNN sizes must be positive, got in_channels={in_channels}, widths={widths}, "
                f"strides={strides}, expand_ratio={expand_ratio}, out_dim={out_dim}"
            )
        self.in_channels = in_channels
        self.out_dim = out_dim
        layers: list[nn.Module] = _conv_bn_relu6(in_channels, widths[0], 3, stride=2)
        channels = widths[0]
        for width, stride in zip(widths, strides, strict=True):
            layers.append(InvertedResidual(channels, width, stride, expand_ratio))
            channels = width
        layers += _conv_bn_relu6(channels, out_dim, 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, "LightCNN")
        return self.pool(self.features(x)).flatten(1)


MOBILENET_V2_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""MobileNetV2's body (Sandler et al. 2018, Table 2): per group expansion t, channels c, repeats n, stride s."""


def _divisible(value: float, divisor: int = 8) -> int:
    """Channels rounded to a multiple of `divisor`, never more than 10 % below `value` (MobileNetV2's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV2(nn.Module):
    """The full MobileNetV2 (AdaMML's policy CNN and audio net): 3x3/2 stem, the 17 inverted residual blocks of
    `MOBILENET_V2_BLOCKS`, 1x1 conv to 1280 channels, global average pool.

    Args:
        in_channels: channels of the input image (3 for RGB, 1 for a spectrogram).
        width_mult: channel multiplier of the stem and blocks (the last conv keeps 1280 unless > 1).
        out_dim: embedding size; 1280 (the default) returns the pooled features as they are, any other size
            adds a Linear projection.
    """

    def __init__(self, in_channels: int = 3, width_mult: float = 1.0, out_dim: int | None = None) -> None:
        super().__init__()
        if in_channels < 1 or width_mult <= 0:
            raise ConfigError(f"MobileNetV2 needs in_channels >= 1 and width_mult > 0, got {in_channels}, {width_mult}")
        self.in_channels = in_channels
        channels = _divisible(32 * width_mult)
        layers: list[nn.Module] = _conv_bn_relu6(in_channels, channels, 3, stride=2)
        for expand, width, repeats, stride in MOBILENET_V2_BLOCKS:
            out = _divisible(width * width_mult)
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out, stride if i == 0 else 1, expand))
                channels = out
        last = _divisible(1280 * width_mult) if width_mult > 1.0 else 1280
        layers += _conv_bn_relu6(channels, last, 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim, self.proj = pooled_embedding(last, out_dim)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, "MobileNetV2")
        return self.proj(self.pool(self.features(x)).flatten(1))
