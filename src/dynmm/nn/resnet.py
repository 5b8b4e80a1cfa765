"""ResNet encoders (v1.5) whose stages can be run one at a time, for RGB-D segmentation (ESANet-like).

Why our own and not torchvision: torchvision is not available here, and fusion-level DynMM needs more than a
`forward`: it fuses the RGB and depth features after every stage and runs the depth encoder's later stages only
for the rows whose fusion cells still need depth. So the encoder exposes `stem` and `stages` (one module per
stage) besides `forward`, plus the channels of each stage for the fusion cells and the decoder.

The layout follows torchvision's ResNet (7x7/2 conv stem + 3x3/2 max pool, stride on the 3x3 conv of a
bottleneck, projection shortcut only where the shape changes), and the block attributes carry torchvision's
names, so an ImageNet checkpoint can be loaded with `load_torchvision_state_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from dynmm.errors import ConfigError, InputError
from dynmm.nn.image_backbone import pooled_embedding

BlockKind = Literal["basic", "bottleneck"]


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free conv ('same' padding for odd kernels) and the BatchNorm after it (which makes a bias redundant)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return conv, nn.BatchNorm2d(out_channels)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1x1 projection (conv + BN) where the residual's shape changes; None means the identity shortcut."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut, ReLU after the sum (ResNet-18/34).

    Args:
        in_channels: channels of the input.
        width: channels of both convs; the block outputs `width * expansion` (= width) channels.
        stride: stride of the first 3x3 conv (2 halves height and width).
    """

    expansion: ClassVar[int] = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.out_channels = width * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 3, stride)
        self.conv2, self.bn2 = _conv_bn(width, width, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, self.out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided, v1.5) -> 1x1 expand by 4, each with BN, plus a shortcut (ResNet-50 and up).

    The stride sits on the 3x3 conv rather than the first 1x1 (ResNet v1.5, as torchvision): a strided 1x1 would
    simply drop three quarters of the input positions.

    Args:
        in_channels: channels of the input.
        width: channels of the 1x1 and 3x3 convs; the block outputs `width * 4` channels.
        stride: stride of the 3x3 conv.
    """

    expansion: ClassVar[int] = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.out_channels = width * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = _conv_bn(width, self.out_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, self.out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


@dataclass(frozen=True)
class ResNetLayout:
    """What distinguishes ResNet-18/34/50: block kind, per-stage width and block count, and stem width.

    Args:
        block: "basic" (two 3x3 convs) or "bottleneck" (1x1-3x3-1x1, output 4x `widths`).
        widths: the block width of each stage (a bottleneck stage outputs 4x this).
        blocks: the number of blocks of each stage; same length as `widths`.
        stem_width: output channels of the 7x7 stem conv.
    """

    block: BlockKind
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    stem_width: int

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ConfigError(f"unknown ResNet block {self.block!r}; choices: {', '.join(BLOCKS)}")
        if not self.widths or len(self.widths) != len(self.blocks):
            raise ConfigError(
                f"ResNet layout needs one width per stage and one block count per stage, "
                f"got widths {self.widths} and blocks {self.blocks}"
            )
        if min(*self.widths, *self.blocks, self.stem_width) < 1:
            raise ConfigError(
                f"ResNet widths, block counts and stem width must be positive, got widths {self.widths}, "
                f"blocks {self.blocks}, stem_width {self.stem_width}"
            )

    @property
    def stage_channels(self) -> list[int]:
        """Output channels of each stage."""
        return [w * BLOCKS[self.block].expansion for w in self.widths]


LAYOUTS: dict[str, ResNetLayout] = {
    "tiny": ResNetLayout("basic", (16, 32, 64, 128), (1, 1, 1, 1), 16),
    "resnet18": ResNetLayout("basic", (64, 128, 256, 512), (2, 2, 2, 2), 64),
    "resnet34": ResNetLayout("basic", (64, 128, 256, 512), (3, 4, 6, 3), 64),
    "resnet50": ResNetLayout("bottleneck", (64, 128, 256, 512), (3, 4, 6, 3), 64),
}
"""Preset layouts; "tiny" is for tests and CPU smoke runs."""


def resnet_layout(layout: ResNetLayout | str) -> ResNetLayout:
    """A layout given directly or by preset name; an unknown name raises ConfigError listing the presets."""
    if isinstance(layout, ResNetLayout):
        return layout
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown ResNet layout {layout!r}; presets: {', '.join(LAYOUTS)}")
    return LAYOUTS[layout]


class ResNetEncoder(nn.Module):
    """ResNet stem and stages; `forward` returns every stage's output (strides 4, 8, 16, 32 for four stages).

    Run piecewise as `encoder.stages[i](x)` after `encoder.stem(x)`: that is how the fusion-level model fuses
    after each stage and skips late depth stages for some rows. `forward` is the same computation in one call.

    Args:
        in_channels: channels of the input image (3 for RGB, 1 for depth).
        layout: a `ResNetLayout` or the name of one of `LAYOUTS`.
    """

    def __init__(self, in_channels: int, layout: ResNetLayout | str = "resnet18") -> None:
        super().__init__()
        self.layout = resnet_layout(layout)
        self.in_channels = in_channels
        self.stem_channels = self.layout.stem_width
        conv, bn = _conv_bn(in_channels, self.stem_channels, 7, stride=2)
        self.stem = nn.Sequential(conv, bn, nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        block = BLOCKS[self.layout.block]
        self.stages = nn.ModuleList()
        self.stage_channels: list[int] = []
        channels = self.stem_channels
        for i, (width, count) in enumerate(zip(self.layout.widths, self.layout.blocks, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(count):
                b = block(channels, width, stride=2 if i > 0 and j == 0 else 1)
                blocks.append(b)
                channels = b.out_channels
            self.stages.append(nn.Sequential(*blocks))
            self.stage_channels.append(channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """He init for convs (fan-out, as torchvision), BN as identity: training from scratch must be stable."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def check_input(self, x: Tensor) -> None:
        """Raise InputError unless `x` is (batch, in_channels, H, W): a clearer message than conv2d's."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            got = f"{x.shape[1]} channels" if x.dim() == 4 else f"a {x.dim()}-D tensor"
            raise InputError(
                f"ResNetEncoder expects (batch, {self.in_channels}, H, W) input with {self.in_channels} channels, "
                f"got {got} (shape {tuple(x.shape)})"
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.forward_with_stem(x)[1]

    def forward_with_stem(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The stem output (what DynMM's gate reads) and every stage's output, from one pass."""
        self.check_input(x)
        stem = out = self.stem(x)
        features = []
        for stage in self.stages:
            out = stage(out)
            features.append(out)
        return stem, features

    def load_torchvision_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a torchvision ResNet checkpoint (e.g. ImageNet weights) with the same layout; `fc.*` is dropped.

        Why: ESANet-like segmentation starts both encoders from ImageNet weights. If `in_channels` differs from
        the checkpoint's (depth has 1), the stem kernels are summed over input channels and spread evenly, as
        ESANet does for depth: a constant-over-channels input then gives the same response.
        """
        renamed: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            if key.startswith("fc."):
                continue
            key = re.sub(r"^conv1\.", "stem.0.", key)
            key = re.sub(r"^bn1\.", "stem.1.", key)
            key = re.sub(r"^layer(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.", key)
            renamed[key] = value
        stem_weight = renamed.get("stem.0.weight")
        if stem_weight is not None and stem_weight.shape[1] != self.in_channels:
            summed = stem_weight.sum(dim=1, keepdim=True)
            renamed["stem.0.weight"] = (summed / self.in_channels).repeat(1, self.in_channels, 1, 1)
        try:
            self.load_state_dict(renamed)
        except RuntimeError as err:
            raise ConfigError(f"checkpoint does not fit ResNet layout {self.layout}: {err}") from err


class PooledResNet(nn.Module):
    """A ResNet as a per-modality encoder: the last stage's output, global average pooled (AdaMML's recognition
    network for RGB frames is ResNet-50 read this way).

    Args:
        in_channels: channels of the input image.
        layout: a `ResNetLayout` or preset name (default "resnet50").
        out_dim: embedding size; the last stage's channels (2048 for ResNet-50) return the pooled features as
            they are, any other size adds a Linear projection.
    """

    def __init__(self, in_channels: int, layout: ResNetLayout | str = "resnet50", out_dim: int | None = None) -> None:
        super().__init__()
        self.resnet = ResNetEncoder(in_channels, layout)
        self.out_dim, self.proj = pooled_embedding(self.resnet.stage_channels[-1], out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.resnet(x)[-1].mean(dim=(2, 3)))
