"""Fusion-level DynMM: per sample, a global gate picks a fusion op at every encoder stage; depth stages that no
later cell needs are never run for that sample.

Two ResNet encoders (RGB, depth) of one stage structure; after stage k a fusion cell combines the two maps and
its output feeds the next RGB stage (ESANet). The gate looks at both stems (cheap) and emits N×|ops| logits.
A sample whose cells k..N all choose `identity` (RGB only) needs depth stages < k only: rows are grouped by how
deep the depth encoder must go, and each depth stage runs on the rows that still need it. Every cell executes
through the shared routing core (dispatch / masked / dense), so the papers' masked way and ours are one model.

The roles can be swapped (`primary="depth"`): the depth encoder then carries the decoder's features and RGB is
the encoder that may be skipped. With `static_op="identity"` that is the depth-only baseline. In the code the
carrying encoder is `main` (it reads the `primary` input) and the skippable one `aux` (the `secondary` input);
the cell ops keep ESANet's names, `rgb` for the main map and `depth` for the auxiliary one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn

from dynmm.cost import count_madds
from dynmm.errors import ConfigError, InputError
from dynmm.methods.fusion_level.config import FusionLevelConfig, check_gate_objective
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
        ops: candidate ops of every cell (names in CELL_OPS); "identity" means the primary modality only.
        primary: the modality whose encoder feeds the decoder ("rgb", as in the paper, or "depth").
        routing: "cells" (the gate picks an op per cell: |ops|^cells routings) or "levels" (the DynMM authors'
            gate: it picks how many cells, from the first, fuse the auxiliary map, one of cells + 1 levels; needs
            ops [identity, a fusing op]).
        stem_op: a fusing op (e.g. "se_add") applied to the two stems whenever the auxiliary stem runs, before
            the first stage, as the DynMM authors' code always fuses the stems; None (default) leaves the main
            stem as it is.

    Inputs: {"rgb": (B, 3, H, W), "depth": (B, 1, H, W)}, float tensors of the model's dtype, finite, B >= 1
    (extra keys are ignored; anything else is an InputError naming the modality). Output: (B, num_classes, H, W) logits.

    Attributes: mode (dispatch | masked | dense; training is dense unless the routing is fixed), tau (Gumbel
    temperature), static_op (one op index for every cell: a static baseline, no gate), forced_choice ((B, cells)
    op indices, e.g. stage I random paths), last_choice (the (B, cells) choice of the latest forward), last_weights,
    last_logits (the gate's (B, cells, ops) logits of the latest forward; None when no gate ran).
    """

    needs_aux: Tensor  # (cells, ops) bool: does op o of cell k read the auxiliary map (a buffer, follows .to())

    def __init__(
        self,
        layout: str,
        num_classes: int,
        image_size: tuple[int, int],
        ops: Sequence[str] = tuple(CELL_OPS),
        decoder_width: int = 64,
        gate_width: int = 32,
        primary: str = "rgb",
        routing: str = "cells",
        stem_op: str | None = None,
    ) -> None:
        super().__init__()
        check_routing(routing, list(ops), stem_op)
        self.routing = routing
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown ResNet layout {layout!r}; choose from {sorted(LAYOUTS)}")
        channels = {"rgb": 3, "depth": 1}
        if primary not in channels:
            raise ConfigError(f"primary modality must be one of {sorted(channels)}, got {primary!r}")
        self.primary, self.secondary = primary, next(m for m in channels if m != primary)
        self.main = ResNetEncoder(channels[self.primary], LAYOUTS[layout])
        self.aux = ResNetEncoder(channels[self.secondary], LAYOUTS[layout])
        self.cells = nn.ModuleList(FusionCell(c, ops) for c in self.main.stage_channels)
        self.op_names = list(ops)
        self.num_cells = len(self.cells)
        stems = self.main.stem_channels + self.aux.stem_channels
        if routing == "levels":
            self.gate = GlobalConvGate(stems, 1, self.num_cells + 1, gate_width)
        else:
            self.gate = GlobalConvGate(stems, self.num_cells, len(ops), gate_width)
        self.stem_fusion: nn.Module | None = None if stem_op is None else CELL_OPS[stem_op](self.main.stem_channels)
        self.decoder = SegmentationDecoder(self.main.stage_channels, num_classes, decoder_width)
        self.specs = {m: ModalitySpec(m, (c, *image_size), "image") for m, c in channels.items()}
        self.register_buffer(
            "needs_aux", torch.tensor([cell.needs_depth for cell in self.fusion_cells]), persistent=False
        )
        self.mode: Mode = "dispatch"
        self.tau = 1.0
        self.forced_choice: Tensor | None = None
        self.static_op: int | None = None
        self.beta = 0.0
        self.last_choice: Tensor | None = None
        self.last_weights: Tensor | None = None
        self.last_logits: Tensor | None = None
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
            if self.forced_choice.dtype != torch.long or not bool(
                ((self.forced_choice >= 0) & (self.forced_choice < len(self.op_names))).all()
            ):
                raise ConfigError(
                    f"forced_choice must hold int64 op indices in [0, {len(self.op_names) - 1}] (ops {self.op_names}), "
                    f"got dtype {self.forced_choice.dtype}, values {self.forced_choice.unique().tolist()}"
                )
            return self.forced_choice.to(device)
        return None

    def decide(self, main_stem: Tensor, aux_stem: Tensor) -> tuple[Tensor, Tensor]:
        """(choice (B, cells), weights (B, cells, ops)) from the gate: Gumbel (training) or argmax (eval)."""
        logits = self.gate(torch.cat([main_stem, aux_stem], dim=1))
        self.last_logits = logits
        if self.training:
            choice, weights = gumbel_softmax(logits, self.tau, hard=True)
            if self.routing == "levels":
                return self._levels_to_cells(weights[:, 0])
            return choice, weights
        choice = self.eval_choice(logits)
        return choice, nn.functional.one_hot(choice, len(self.op_names)).float()

    def eval_choice(self, logits: Tensor) -> Tensor:
        """(B, cells) op per cell at test time: the argmax of the gate's logits less β × each choice's cost."""
        if self.routing == "levels":
            scores = logits[:, 0] - self.beta * self.level_costs() if self.beta else logits[:, 0]
            level = scores.argmax(dim=-1)
            cells = torch.arange(self.num_cells, device=logits.device)
            return (level[:, None] > cells[None, :]).long()
        scores = logits - self.beta * self.op_costs() if self.beta else logits
        return scores.argmax(dim=-1)

    def _levels_to_cells(self, level_weights: Tensor) -> tuple[Tensor, Tensor]:
        """(B, cells + 1) level weights -> (choice, (B, cells, 2) weights): cell k fuses iff the level is > k,
        with weight Σ_{j>k} w_j, so one-hot levels give one-hot cells and the straight-through gradient reaches
        every level's logit."""
        up_to = level_weights.cumsum(dim=1)[:, : self.num_cells]  # Σ_{j<=k} w_j: cell k keeps RGB only
        weights = torch.stack([up_to, 1 - up_to], dim=2)
        return weights.argmax(dim=2), weights

    def random_choice(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """(batch, cells) uniformly random routings (stage I's paths): an op per cell, or a level."""
        if self.routing == "levels":
            level = torch.randint(0, self.num_cells + 1, (batch, 1), generator=generator)
            return (level > torch.arange(self.num_cells)[None, :]).long()
        return torch.randint(0, len(self.op_names), (batch, self.num_cells), generator=generator)

    def stage_probabilities(self) -> Tensor | None:
        """(B, cells + 1) probability of running 0..N auxiliary stages under the latest gate logits (None if no
        gate ran): a level's probability directly, or from the independent per-cell op probabilities."""
        if self.last_logits is None:
            return None
        if self.routing == "levels":
            return self.last_logits[:, 0].softmax(dim=-1)
        return self.aux_stage_distribution(self.last_logits.softmax(dim=-1))

    @property
    def routing_is_fixed(self) -> bool:
        """No gate decides (a static op or forced paths): nothing to learn by running every op (dense)."""
        return self.static_op is not None or self.forced_choice is not None

    def aux_stages_needed(self, choice: Tensor) -> Tensor:
        """Per row, how many auxiliary stages must run: 1 + the last cell whose op reads them (0 if none)."""
        reads = self.needs_aux.gather(1, choice.t()).t()  # (B, cells)
        stage = torch.arange(1, self.num_cells + 1, device=choice.device)
        return (reads * stage).amax(dim=1)

    def aux_stage_distribution(self, probs: Tensor) -> Tensor:
        """(B, cells + 1) probability that a row runs 0..N auxiliary stages, from independent per-cell op
        probabilities (B, cells, ops): it runs at most j stages iff no cell after j reads them, so
        P(≤ j) = Π_{k>j} p_k(no aux) and P(= j) = P(≤ j) − P(≤ j − 1). One-hot probs give aux_stages_needed."""
        no_aux = (probs * (~self.needs_aux).to(probs.dtype)).sum(dim=2)  # (B, cells)
        at_most = torch.flip(torch.cumprod(torch.flip(no_aux, [1]), dim=1), [1])  # P(≤ j), j = 0..N-1
        at_most = torch.cat([at_most, at_most.new_ones(at_most.shape[0], 1)], dim=1)
        return torch.cat([at_most[:, :1], at_most[:, 1:] - at_most[:, :-1]], dim=1).clamp_min(0)

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: Inputs, missing: Collection[str] = ()) -> Tensor:
        """Segment a batch. `missing=["depth"]` (depth absent at test time): every cell runs RGB only (with
        `primary="depth"` the roles swap: RGB may be missing, depth may not)."""
        check_inputs(inputs, self.specs, where=type(self).__name__, model=self)
        if self.primary in missing:
            raise InputError(
                f"{type(self).__name__}: the {self.primary} input carries the decoder's features and cannot be "
                f"missing; only {self.secondary} can"
            )
        main, aux = inputs[self.primary], inputs[self.secondary]
        batch = main.shape[0]
        x = self.main.stem(main)
        fixed = self.fixed_choice(batch, main.device)
        if self.secondary in missing:
            if "identity" not in self.op_names:
                raise ConfigError(
                    f"{self.secondary} is missing but the cells have no `identity` ({self.primary} only) op to "
                    "fall back on"
                )
            fixed = torch.full((batch, self.num_cells), self.op_names.index("identity"), device=main.device)
        aux_x: Tensor | None = None
        self.last_logits = None
        if fixed is None:  # the gate reads both stems, so every row's auxiliary stem runs
            aux_x = self.aux.stem(aux)
            choice, weights = self.decide(x, aux_x)
            if self.stem_fusion is not None:
                x = self.stem_fusion(x, aux_x)
        else:
            choice, weights = fixed, nn.functional.one_hot(fixed, len(self.op_names)).float()
        self.last_choice, self.last_weights = choice, weights
        mode: Mode = "dense" if self.training and fixed is None else self.mode
        if mode == "dispatch":
            needed = self.aux_stages_needed(choice)
        else:  # dense and masked run every op on every row, so every row needs the whole auxiliary encoder
            needed = torch.full((batch,), self.num_cells, device=main.device)
        active = torch.arange(batch, device=main.device)
        if aux_x is None:  # no gate: the auxiliary stem runs only for rows that will use it at all
            active = active[needed > 0]
            aux_x = self.aux.stem(aux.index_select(0, active)) if active.numel() else aux[:0]
            if self.stem_fusion is not None:  # only rows whose routing reads depth, in every mode
                reads = self.aux_stages_needed(choice).index_select(0, active) > 0
                if bool(reads.any()):
                    rows = active[reads]
                    x = x.index_copy(0, rows, self.stem_fusion(x.index_select(0, rows), aux_x[reads]))
        features = []
        for k, cell in enumerate(self.fusion_cells):
            x = self.main.stages[k](x)
            still = needed.index_select(0, active) > k
            if not bool(still.all()):
                active, aux_x = active[still], aux_x[still]
            if active.numel():
                aux_x = self.aux.stages[k](aux_x)
            position = torch.full((batch,), -1, dtype=torch.long, device=main.device)
            position[active] = torch.arange(active.numel(), device=main.device)
            branches = [self._branch(op, aux_x) for op in cell.ops]
            x = route(branches, {"main": x, "row": position}, choice[:, k], weights[:, k], mode)
            features.append(x)
        return self.decoder(features, (main.shape[-2], main.shape[-1]))

    @staticmethod
    def _branch(op: nn.Module, aux_rows: Tensor) -> Branch:
        """One op as a routing branch; auxiliary maps are looked up by each routed row's position among the rows
        whose auxiliary stage ran (a row routed to an op that reads them always has one)."""
        if not getattr(op, "needs_depth", True):
            return lambda x: op(x["main"], None)
        return lambda x: op(x["main"], aux_rows.index_select(0, x["row"]))

    # ----------------------------------------------------------------- costs
    def _measure_costs(self, image_size: tuple[int, int]) -> dict[str, Any]:
        """MAdds of each piece on one sample, measured by running it: what each routing decision costs."""

        def madds(module: nn.Module, *args: Any) -> float:
            return float(count_madds(partial(module, *args)).total)

        main = torch.zeros(1, *self.specs[self.primary].shape)
        aux = torch.zeros(1, *self.specs[self.secondary].shape)
        with eval_mode(self), torch.no_grad():
            x, d = self.main.stem(main), self.aux.stem(aux)
            fixed = madds(self.main.stem, main)
            aux_stem = madds(self.aux.stem, aux)
            gate = madds(self.gate, torch.cat([x, d], 1))
            stem_fusion = 0.0
            if self.stem_fusion is not None:
                stem_fusion = madds(self.stem_fusion, x, d)
                x = self.stem_fusion(x, d)
            aux_stages, cells, features = [], [], []
            for k, cell in enumerate(self.fusion_cells):
                fixed += madds(self.main.stages[k], x)
                aux_stages.append(madds(self.aux.stages[k], d))
                x, d = self.main.stages[k](x), self.aux.stages[k](d)
                pairs = zip(cell.ops, cell.needs_depth, strict=True)
                cells.append([madds(op, x, d if needs else None) for op, needs in pairs])
                features.append(x)
            fixed += madds(self.decoder, features, image_size)
        return {
            "fixed": fixed,
            "gate": gate,
            "aux_stem": aux_stem,
            "stem_fusion": stem_fusion,
            "aux_stages": aux_stages,
            "cells": cells,
        }

    def realized_madds(self, choice: Tensor, gate_ran: bool | None = None) -> Tensor:
        """MAdds each sample paid in dispatch mode, from the measured pieces and its choices. The gate (and the
        auxiliary stem it reads) is paid when it ran: by default unless the routing is fixed (a static baseline)."""
        gate_ran = not self.routing_is_fixed if gate_ran is None else gate_ran
        cells = torch.tensor(self.costs["cells"], dtype=torch.float64)  # (cells, ops)
        choice = choice.cpu()
        per_cell = cells.gather(1, choice.t()).t().sum(dim=1)
        gate = float(self.costs["gate"]) if gate_ran else 0.0
        return float(self.costs["fixed"]) + gate + per_cell + self.aux_madds(choice, gate_ran)

    def aux_madds(self, choice: Tensor, gate_ran: bool | None = None) -> Tensor:
        """Auxiliary-encoder MAdds (stem, its fusion with the main stem, stages) each sample paid: what
        progressive skipping saves."""
        gate_ran = not self.routing_is_fixed if gate_ran is None else gate_ran
        aux = torch.tensor(self.costs["aux_stages"], dtype=torch.float64)
        needed = self.aux_stages_needed(choice.to(self.needs_aux.device)).cpu()
        stages = (torch.arange(self.num_cells)[None, :] < needed[:, None]).double() @ aux
        stem_ran = torch.ones_like(stages) if gate_ran else (needed > 0).double()
        stem = float(self.costs["aux_stem"]) + float(self.costs.get("stem_fusion", 0.0))
        return stages + stem_ran * stem

    def op_costs(self) -> Tensor:
        """(cells, ops) cost of each choice for the test-time knob β, normalised by the costliest routing: the
        op itself plus, for an op that reads the auxiliary map at cell k, the auxiliary stages up to k it forces."""
        cells = torch.tensor(self.costs["cells"], dtype=torch.float32, device=self.needs_aux.device)
        aux = torch.tensor(self.costs["aux_stages"], dtype=torch.float32, device=self.needs_aux.device)
        implied = self.needs_aux.float() * aux.cumsum(0)[:, None]
        return (cells + implied) / (cells.max(dim=1).values.sum() + aux.sum())

    def aux_madds_full(self) -> float:
        """The whole auxiliary encoder (stem, stem fusion, every stage), what a static fusion in every cell pays."""
        stem = float(self.costs["aux_stem"]) + float(self.costs.get("stem_fusion", 0.0))
        return stem + float(sum(self.costs["aux_stages"]))

    def level_costs(self) -> Tensor:
        """(cells + 1,) cost of each level for the test-time knob β, normalised by the costliest: the cells' ops
        plus the auxiliary stages the level runs."""
        cells = torch.tensor(self.costs["cells"], dtype=torch.float32, device=self.needs_aux.device)
        aux = torch.tensor(self.costs["aux_stages"], dtype=torch.float32, device=self.needs_aux.device)
        fused = torch.arange(self.num_cells + 1, device=cells.device)[:, None] > torch.arange(
            self.num_cells, device=cells.device
        )
        cost = torch.where(fused, cells[:, 1], cells[:, 0]).sum(dim=1) + (fused.float() * aux).sum(dim=1)
        return cost / cost.max()

    def expected_cost(self, weights: Tensor) -> Tensor:
        """Differentiable cost of (straight-through) weights (B, cells, ops), normalised by the costliest routing.

        An auxiliary stage j is paid unless every cell k ≥ j picked an op that ignores it: P = 1 − Π_{k≥j} p_k(no
        aux); with one-hot weights this is exactly the realized cost of the pieces that routing decides.
        """
        cells = torch.tensor(self.costs["cells"], dtype=weights.dtype, device=weights.device)
        aux = torch.tensor(self.costs["aux_stages"], dtype=weights.dtype, device=weights.device)
        cell_cost = (weights * cells).sum(dim=(1, 2))
        no_aux = (weights * (~self.needs_aux).to(weights.dtype)).sum(dim=2)  # (B, cells)
        skip_from = torch.flip(torch.cumprod(torch.flip(no_aux, [1]), dim=1), [1])  # Π_{k≥j}
        aux_cost = ((1 - skip_from) * aux).sum(dim=1)
        most = cells.max(dim=1).values.sum() + aux.sum()
        return ((cell_cost + aux_cost) / most).mean()


def check_routing(routing: str, ops: list[str], stem_op: str | None) -> None:
    """Refuse a routing the ops cannot express and a stem op that fuses nothing, naming the key."""
    if routing not in ("cells", "levels"):
        raise ConfigError(f"fusion_level.routing must be 'cells' or 'levels', got {routing!r}")
    fusing_second = len(ops) == 2 and ops[1] in CELL_OPS and CELL_OPS[ops[1]].needs_depth
    if routing == "levels" and not (fusing_second and ops[0] == "identity"):
        raise ConfigError(
            f"fusion_level.routing 'levels' picks how many cells fuse, so the ops must be [identity, a fusing op] "
            f"(e.g. [identity, se_add]), got {ops}"
        )
    if stem_op is not None and (stem_op not in CELL_OPS or not CELL_OPS[stem_op].needs_depth):
        fusing = [name for name, op in CELL_OPS.items() if op.needs_depth]
        raise ConfigError(f"fusion_level.stem_op must be a fusing op ({', '.join(fusing)}), got {stem_op!r}")


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
    check_gate_objective(config)
    size = (specs["rgb"].shape[1], specs["rgb"].shape[2])
    model = FusionLevelDynMM(
        config.layout,
        task.num_classes,
        size,
        ops,
        config.decoder_width,
        config.gate_width,
        config.primary,
        config.routing,
        config.stem_op,
    )
    if config.static_op is not None:
        model.static_op = ops.index(config.static_op)
    return model
