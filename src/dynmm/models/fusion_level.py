"""Fusion-level DynMM: per sample, a global gate picks a fusion op at every encoder stage; depth stages that no
later cell needs are never run for that sample.

Two ResNet encoders (RGB, depth) of one stage structure; after stage k a fusion cell combines the two maps and
its output feeds the next RGB stage (ESANet). The gate looks at both stems (cheap) and emits N×|ops| logits.
A sample whose cells k..N all choose `identity` (RGB only) needs depth stages < k only: rows are grouped by how
deep the depth encoder must go, and each depth stage runs on the rows that still need it. Every cell executes
through the shared routing core (dispatch / masked / dense), so the papers' masked way and ours are one model.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn

from dynmm.config import FusionLevelConfig
from dynmm.cost import count_madds
from dynmm.errors import ConfigError
from dynmm.modes import eval_mode
from dynmm.nn.fusion_cells import CELL_OPS, FusionCell
from dynmm.nn.resnet import LAYOUTS, ResNetEncoder
from dynmm.nn.segmentation_decoder import SegmentationDecoder
from dynmm.relax import gumbel_softmax
from dynmm.routing import MODES, Mode, route
from dynmm.specs import Inputs, ModalitySpec, TaskSpec
from dynmm.validation import check_inputs


class GlobalConvGate(nn.Module):
    """Two 5×5 stride-2 convs on the concatenated stems, global average pool, linear → (batch, cells, ops)."""

    def __init__(self, in_channels: int, num_cells: int, num_ops: int, width: int = 32) -> None:
        super().__init__()
        self.num_cells, self.num_ops = num_cells, num_ops
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(width, num_cells * num_ops)

    def forward(self, stems: Tensor) -> Tensor:
        return self.head(self.features(stems)).view(-1, self.num_cells, self.num_ops)


Branch = Callable[[Inputs], Tensor]


class FusionLevelDynMM(nn.Module):
    """RGB-D segmentation with a per-sample choice of fusion op per stage and progressive depth skipping.

    Args:
        layout: ResNet layout name for both encoders ("tiny" for CPU, "resnet50" as in the paper).
        num_classes: segmentation classes.
        image_size: (H, W) of the inputs; costs are measured on one sample of this size.
        ops: candidate ops of every cell (names in CELL_OPS); "identity" means RGB only.

    Inputs: {"rgb": (B, 3, H, W), "depth": (B, 1, H, W)}. Output: (B, num_classes, H, W) logits.

    Attributes: mode (dispatch | masked | dense; training is dense unless the routing is fixed), tau (Gumbel
    temperature), static_op (one op index for every cell: a static baseline, no gate), forced_choice ((B, cells)
    op indices, e.g. stage I random paths), last_choice (the (B, cells) choice of the latest forward), last_weights.
    """

    needs_depth: Tensor  # (cells, ops) bool: does op o of cell k read the depth map (a buffer, follows .to())

    def __init__(
        self,
        layout: str,
        num_classes: int,
        image_size: tuple[int, int],
        ops: Sequence[str] = tuple(CELL_OPS),
        decoder_width: int = 64,
        gate_width: int = 32,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown ResNet layout {layout!r}; choose from {sorted(LAYOUTS)}")
        self.rgb = ResNetEncoder(3, LAYOUTS[layout])
        self.depth = ResNetEncoder(1, LAYOUTS[layout])
        self.cells = nn.ModuleList(FusionCell(c, ops) for c in self.rgb.stage_channels)
        self.op_names = list(ops)
        self.num_cells = len(self.cells)
        stems = self.rgb.stem_channels + self.depth.stem_channels
        self.gate = GlobalConvGate(stems, self.num_cells, len(ops), gate_width)
        self.decoder = SegmentationDecoder(self.rgb.stage_channels, num_classes, decoder_width)
        self.specs = {
            "rgb": ModalitySpec("rgb", (3, *image_size), "image"),
            "depth": ModalitySpec("depth", (1, *image_size), "image"),
        }
        self.register_buffer(
            "needs_depth", torch.tensor([cell.needs_depth for cell in self.fusion_cells]), persistent=False
        )
        self.mode: Mode = "dispatch"
        self.tau = 1.0
        self.forced_choice: Tensor | None = None
        self.static_op: int | None = None
        self.beta = 0.0
        self.last_choice: Tensor | None = None
        self.last_weights: Tensor | None = None
        self.costs = self._measure_costs(image_size)

    @property
    def fusion_cells(self) -> list[FusionCell]:
        return [cast(FusionCell, cell) for cell in self.cells]

    # ----------------------------------------------------------------- routing decisions
    def set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown execution mode {mode!r}; choose from {list(MODES)}")
        self.mode = mode

    def fixed_choice(self, batch: int, device: torch.device) -> Tensor | None:
        """The (batch, cells) choice when no gate decides: a static op everywhere or forced paths; else None."""
        if self.static_op is not None:
            return torch.full((batch, self.num_cells), self.static_op, device=device)
        if self.forced_choice is not None:
            if self.forced_choice.shape != (batch, self.num_cells):
                raise ConfigError(
                    f"forced_choice must be (batch, {self.num_cells}), got {tuple(self.forced_choice.shape)} "
                    f"for a batch of {batch}"
                )
            return self.forced_choice.to(device)
        return None

    def decide(self, rgb_stem: Tensor, depth_stem: Tensor) -> tuple[Tensor, Tensor]:
        """(choice (B, cells), weights (B, cells, ops)) from the gate: Gumbel (training) or argmax (eval)."""
        logits = self.gate(torch.cat([rgb_stem, depth_stem], dim=1))
        if self.training:
            return gumbel_softmax(logits, self.tau, hard=True)
        scores = logits - self.beta * self.op_costs() if self.beta else logits
        choice = scores.argmax(dim=-1)
        return choice, nn.functional.one_hot(choice, len(self.op_names)).float()

    @property
    def routing_is_fixed(self) -> bool:
        """No gate decides (a static op or forced paths): nothing to learn by running every op (dense)."""
        return self.static_op is not None or self.forced_choice is not None

    def depth_stages_needed(self, choice: Tensor) -> Tensor:
        """Per row, how many depth stages must run: 1 + the last cell whose op reads depth (0 if none)."""
        reads = self.needs_depth.gather(1, choice.t()).t()  # (B, cells)
        stage = torch.arange(1, self.num_cells + 1, device=choice.device)
        return (reads * stage).amax(dim=1)

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: Inputs, missing: Collection[str] = ()) -> Tensor:
        """Segment a batch. `missing=["depth"]` (depth absent at test time): every cell runs RGB only."""
        check_inputs(inputs, self.specs, where=type(self).__name__)
        rgb, depth = inputs["rgb"], inputs["depth"]
        batch = rgb.shape[0]
        x = self.rgb.stem(rgb)
        fixed = self.fixed_choice(batch, rgb.device)
        if "depth" in missing:
            if "identity" not in self.op_names:
                raise ConfigError("depth is missing but the cells have no `identity` (RGB only) op to fall back on")
            fixed = torch.full((batch, self.num_cells), self.op_names.index("identity"), device=rgb.device)
        depth_x: Tensor | None = None
        if fixed is None:  # the gate reads both stems, so every row's depth stem runs
            depth_x = self.depth.stem(depth)
            choice, weights = self.decide(x, depth_x)
        else:
            choice, weights = fixed, nn.functional.one_hot(fixed, len(self.op_names)).float()
        self.last_choice, self.last_weights = choice, weights
        mode: Mode = "dense" if self.training and fixed is None else self.mode
        if mode == "dispatch":
            needed = self.depth_stages_needed(choice)
        else:  # dense and masked run every op on every row, so every row needs the whole depth encoder
            needed = torch.full((batch,), self.num_cells, device=rgb.device)
        active = torch.arange(batch, device=rgb.device)
        if depth_x is None:  # no gate: the depth stem runs only for rows that will use depth at all
            active = active[needed > 0]
            depth_x = self.depth.stem(depth.index_select(0, active)) if active.numel() else depth[:0]
        features = []
        for k, cell in enumerate(self.fusion_cells):
            x = self.rgb.stages[k](x)
            still = needed.index_select(0, active) > k
            if not bool(still.all()):
                active, depth_x = active[still], depth_x[still]
            if active.numel():
                depth_x = self.depth.stages[k](depth_x)
            position = torch.full((batch,), -1, dtype=torch.long, device=rgb.device)
            position[active] = torch.arange(active.numel(), device=rgb.device)
            branches = [self._branch(op, depth_x) for op in cell.ops]
            x = route(branches, {"rgb": x, "row": position}, choice[:, k], weights[:, k], mode)
            features.append(x)
        return self.decoder(features, (rgb.shape[-2], rgb.shape[-1]))

    @staticmethod
    def _branch(op: nn.Module, depth_rows: Tensor) -> Branch:
        """One op as a routing branch; depth maps are looked up by each routed row's position among the rows
        whose depth stage ran (a row routed to a depth op always has one)."""
        if not getattr(op, "needs_depth", True):
            return lambda x: op(x["rgb"], None)
        return lambda x: op(x["rgb"], depth_rows.index_select(0, x["row"]))

    # ----------------------------------------------------------------- costs
    def _measure_costs(self, image_size: tuple[int, int]) -> dict[str, Any]:
        """MAdds of each piece on one sample, measured by running it: what each routing decision costs."""

        def madds(module: nn.Module, *args: Any) -> float:
            return float(count_madds(partial(module, *args)).total)

        rgb, depth = torch.zeros(1, 3, *image_size), torch.zeros(1, 1, *image_size)
        with eval_mode(self), torch.no_grad():
            x, d = self.rgb.stem(rgb), self.depth.stem(depth)
            fixed = madds(self.rgb.stem, rgb)
            depth_stem = madds(self.depth.stem, depth)
            gate = madds(self.gate, torch.cat([x, d], 1))
            depth_stages, cells, features = [], [], []
            for k, cell in enumerate(self.fusion_cells):
                fixed += madds(self.rgb.stages[k], x)
                depth_stages.append(madds(self.depth.stages[k], d))
                x, d = self.rgb.stages[k](x), self.depth.stages[k](d)
                pairs = zip(cell.ops, cell.needs_depth, strict=True)
                cells.append([madds(op, x, d if needs else None) for op, needs in pairs])
                features.append(x)
            fixed += madds(self.decoder, features, image_size)
        return {"fixed": fixed, "gate": gate, "depth_stem": depth_stem, "depth_stages": depth_stages, "cells": cells}

    def realized_madds(self, choice: Tensor, gate_ran: bool | None = None) -> Tensor:
        """MAdds each sample paid in dispatch mode, from the measured pieces and its choices. The gate (and the
        depth stem it reads) is paid when it ran: by default unless the routing is fixed (a static baseline)."""
        gate_ran = not self.routing_is_fixed if gate_ran is None else gate_ran
        cells = torch.tensor(self.costs["cells"], dtype=torch.float64)  # (cells, ops)
        choice = choice.cpu()
        per_cell = cells.gather(1, choice.t()).t().sum(dim=1)
        gate = float(self.costs["gate"]) if gate_ran else 0.0
        return float(self.costs["fixed"]) + gate + per_cell + self.depth_madds(choice, gate_ran)

    def depth_madds(self, choice: Tensor, gate_ran: bool | None = None) -> Tensor:
        """Depth-encoder MAdds (stem + stages) each sample paid: what progressive skipping saves."""
        gate_ran = not self.routing_is_fixed if gate_ran is None else gate_ran
        depth = torch.tensor(self.costs["depth_stages"], dtype=torch.float64)
        needed = self.depth_stages_needed(choice.to(self.needs_depth.device)).cpu()
        stages = (torch.arange(self.num_cells)[None, :] < needed[:, None]).double() @ depth
        stem_ran = torch.ones_like(stages) if gate_ran else (needed > 0).double()
        return stages + stem_ran * float(self.costs["depth_stem"])

    def op_costs(self) -> Tensor:
        """(cells, ops) cost of each choice for the test-time knob β, normalised by the costliest routing: the
        op itself plus, for an op that reads depth at cell k, the depth stages up to k it forces to run."""
        cells = torch.tensor(self.costs["cells"], dtype=torch.float32, device=self.needs_depth.device)
        depth = torch.tensor(self.costs["depth_stages"], dtype=torch.float32, device=self.needs_depth.device)
        implied = self.needs_depth.float() * depth.cumsum(0)[:, None]
        return (cells + implied) / (cells.max(dim=1).values.sum() + depth.sum())

    def depth_madds_full(self) -> float:
        """The whole depth encoder (stem + every stage), what a static fusion in every cell pays."""
        return float(self.costs["depth_stem"]) + float(sum(self.costs["depth_stages"]))

    def expected_cost(self, weights: Tensor) -> Tensor:
        """Differentiable cost of (straight-through) weights (B, cells, ops), normalised by the costliest routing.

        A depth stage j is paid unless every cell k ≥ j picked an op that ignores depth: P = 1 − Π_{k≥j} p_k(no
        depth); with one-hot weights this is exactly the realized cost of the pieces that routing decides.
        """
        cells = torch.tensor(self.costs["cells"], dtype=weights.dtype, device=weights.device)
        depth = torch.tensor(self.costs["depth_stages"], dtype=weights.dtype, device=weights.device)
        cell_cost = (weights * cells).sum(dim=(1, 2))
        no_depth = (weights * (~self.needs_depth).to(weights.dtype)).sum(dim=2)  # (B, cells)
        skip_from = torch.flip(torch.cumprod(torch.flip(no_depth, [1]), dim=1), [1])  # Π_{k≥j}
        depth_cost = ((1 - skip_from) * depth).sum(dim=1)
        most = cells.max(dim=1).values.sum() + depth.sum()
        return ((cell_cost + depth_cost) / most).mean()


def build_fusion_level(config: FusionLevelConfig, specs: dict[str, ModalitySpec], task: TaskSpec) -> FusionLevelDynMM:
    """The model a FusionLevelConfig describes for a data set with `rgb` and `depth` images and per-pixel labels."""
    missing = [m for m in ("rgb", "depth") if m not in specs]
    if missing or task.kind != "segmentation":
        raise ConfigError(
            f"fusion-level DynMM needs `rgb` and `depth` image modalities and a segmentation task; the data set "
            f"has {sorted(specs)} and a {task.kind} task"
        )
    ops = list(config.ops or CELL_OPS)
    if config.static_op is not None and config.static_op not in ops:
        raise ConfigError(f"fusion_level.static_op {config.static_op!r} is not among the cell ops {ops}")
    if config.resource_weight < 0:
        raise ConfigError(f"fusion_level.resource_weight (λ) must be >= 0, got {config.resource_weight}")
    size = (specs["rgb"].shape[1], specs["rgb"].shape[2])
    model = FusionLevelDynMM(config.layout, task.num_classes, size, ops, config.decoder_width, config.gate_width)
    if config.static_op is not None:
        model.static_op = ops.index(config.static_op)
    return model
