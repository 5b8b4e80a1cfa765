"""Candidate ops of a fusion cell in fusion-level DynMM: how an RGB and a depth feature map are merged.

After each encoder stage a cell picks one op per sample. The ops range from free (identity: RGB only, so the
depth encoder need not run at all) to the SE attention fusion of ESANet; the gate learns to pay for depth only
where it helps. Every op maps two (B, C, H, W) maps of equal shape to one (B, C, H, W) map, so ops are
interchangeable and a cell's output always feeds the next RGB stage.

`needs_depth` is what progressive skipping reads: if the cells of stages k..N all pick an op with
`needs_depth = False` for a sample, the depth encoder's stages k..N are not run for it, and its ops get
`depth=None`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from dynmm.errors import ConfigError, InputError


def check_pair(rgb: Tensor, depth: Tensor | None, channels: int, needs_depth: bool, where: str) -> None:
    """Raise InputError unless rgb is (B, channels, H, W) and depth (when needed or given) has the same shape."""
    if rgb.dim() != 4 or rgb.shape[1] != channels:
        raise InputError(f"{where}: expects rgb of shape (B, {channels}, H, W), got {tuple(rgb.shape)}")
    if depth is None:
        if needs_depth:
            raise InputError(f"{where}: needs a depth feature map, got None")
        return
    if depth.shape != rgb.shape:
        raise InputError(
            f"{where}: rgb and depth feature maps must have the same shape, "
            f"got rgb {tuple(rgb.shape)} and depth {tuple(depth.shape)}"
        )


class FusionOp(nn.Module):
    """Base of the cell ops: `forward(rgb, depth)` with (B, C, H, W) inputs of equal shape -> (B, C, H, W).

    Args:
        channels: C, the channels of both feature maps (used by ops with weights and by the shape check).
    """

    name: ClassVar[str]
    needs_depth: ClassVar[bool] = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def _depth(self, rgb: Tensor, depth: Tensor | None) -> Tensor:
        """Validate the pair for an op that reads depth, and return depth."""
        check_pair(rgb, depth, self.channels, True, f"fusion op {self.name!r}")
        assert depth is not None  # check_pair raised otherwise
        return depth


class IdentityOp(FusionOp):
    """RGB only; depth is ignored and may be None. The op that lets the depth encoder be skipped."""

    name = "identity"
    needs_depth = False

    def forward(self, rgb: Tensor, depth: Tensor | None = None) -> Tensor:
        check_pair(rgb, depth, self.channels, False, f"fusion op {self.name!r}")
        return rgb


class AddOp(FusionOp):
    """rgb + depth: parameter-free fusion (FuseNet-style)."""

    name = "add"

    def forward(self, rgb: Tensor, depth: Tensor | None) -> Tensor:
        return rgb + self._depth(rgb, depth)


class WeightedAddOp(FusionOp):
    """rgb + w·depth with a learned scalar w (starting at 1, i.e. as `add`), so a cell can damp noisy depth."""

    name = "weighted_add"

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, rgb: Tensor, depth: Tensor | None) -> Tensor:
        return rgb + self.weight * self._depth(rgb, depth)


class ConcatProjOp(FusionOp):
    """Concatenate [rgb; depth] on channels and project back to C with a 1x1 conv + BatchNorm (learned mixing)."""

    name = "concat_proj"

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.proj = nn.Conv2d(2 * channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, rgb: Tensor, depth: Tensor | None) -> Tensor:
        depth = self._depth(rgb, depth)
        return self.bn(self.proj(torch.cat([rgb, depth], dim=1)))


class SEAddOp(FusionOp):
    """Squeeze-and-excitation on depth, then add to rgb (ESANet's SE fusion, attention on the depth branch).

    Channel weights a = sigmoid(W2 relu(W1 mean_hw(depth) + b1) + b2) rescale depth so that the cell can keep
    the depth channels that are informative for this image; hidden size max(C // reduction, min_hidden).

    Args:
        channels: C.
        reduction: squeeze ratio of the hidden layer.
        min_hidden: floor on the hidden size, so that narrow maps keep a usable bottleneck.
    """

    name = "se_add"

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__(channels)
        hidden = max(channels // reduction, min_hidden)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def attention(self, depth: Tensor) -> Tensor:
        """Per-sample channel weights in (0, 1), shape (B, C)."""
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(depth.mean(dim=(2, 3))))))

    def forward(self, rgb: Tensor, depth: Tensor | None) -> Tensor:
        depth = self._depth(rgb, depth)
        return rgb + depth * self.attention(depth)[:, :, None, None]


CELL_OPS: dict[str, type[FusionOp]] = {op.name: op for op in (IdentityOp, AddOp, WeightedAddOp, ConcatProjOp, SEAddOp)}
"""Cell ops by name, in the default order (which is the order of a gate's logits per cell)."""


class FusionCell(nn.Module):
    """The candidate ops of one fusion point; `forward` runs the op `op_index` (into `op_names`) for a batch.

    Why one op per call, not a weighted sum of all: at inference a sample pays only for its chosen op. A model
    groups rows by their choice and calls the cell once per group; during training a relaxed gate can still
    mix the outputs of separate calls.

    Args:
        channels: C of the fused feature maps.
        ops: names from `CELL_OPS`, in the order the gate's logits use.
    """

    def __init__(self, channels: int, ops: Sequence[str] = tuple(CELL_OPS)) -> None:
        super().__init__()
        names = [ops] if isinstance(ops, str) else list(ops)
        if not names:
            raise ConfigError(f"a fusion cell needs at least one op; choices: {', '.join(CELL_OPS)}")
        for name in names:
            if name not in CELL_OPS:
                close = difflib.get_close_matches(str(name), CELL_OPS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown fusion cell op {name!r}{hint}; choices: {', '.join(CELL_OPS)}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"fusion cell ops must be distinct, got {', '.join(duplicates)} more than once")
        self.channels = channels
        self.op_names: list[str] = names
        self.ops = nn.ModuleList(CELL_OPS[name](channels) for name in names)

    @property
    def needs_depth(self) -> list[bool]:
        """Per op, whether it reads the depth map (False ops let the depth encoder be skipped)."""
        return [CELL_OPS[name].needs_depth for name in self.op_names]

    def forward(self, rgb: Tensor, depth: Tensor | None, op_index: int) -> Tensor:
        if not 0 <= op_index < len(self.ops):
            raise InputError(f"op_index {op_index} is out of range for a cell with ops {self.op_names}")
        return self.ops[op_index](rgb, depth)
