"""Fusion-level DynMM as one deployable graph per image that keeps the skipping (`dynmm export RUN`).

Both stems and the gate run; then, cell by cell, a `torch.cond` (an ONNX `If`) asks whether this image still
needs the depth (auxiliary) encoder at this stage. If it does, the depth stage runs; if not, an empty (zero) map
of the stage's shape stands in, which no chosen op reads. A chain of conds then runs only the op the gate chose
for the cell. The conds sit one after another, not inside each other, so the graph stays as small as the model.
The graph takes one image: a batch is run image by image (each image's routing is its own, and one image is
what an edge device serves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from dynmm.errors import ConfigError
from dynmm.methods.fusion_level.model import FusionLevelDynMM


class FusionGraph(nn.Module):
    """(main image, auxiliary image), one row each -> (segmentation logits, (1, cells) op choice)."""

    def __init__(self, model: FusionLevelDynMM) -> None:
        super().__init__()
        if model.routing_is_fixed:
            raise ConfigError("a static fusion-level baseline has no routing to keep; export a gated (DynMM) run")
        self.model = model
        self.stage_shapes = stage_shapes(model)

    def forward(self, main: Tensor, aux: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        x, d = m.main.stem(main), m.aux.stem(aux)
        choice = m.eval_choice(m.gate(torch.cat([x, d], dim=1)))
        if m.stem_fusion is not None:
            x = m.stem_fusion(x, d)
        needed = m.aux_stages_needed(choice)
        features = []
        for k in range(m.num_cells):
            d = torch.cond(needed[0] > k, self._depth_stage(k), self._no_depth(k), (d,))
            x = self._op(k)(choice, m.main.stages[k](x), d)
            features.append(x)
        return m.decoder(features, (main.shape[-2], main.shape[-1])), choice

    def _depth_stage(self, k: int) -> Callable[[Tensor], Tensor]:
        """Depth stage k, its output shape stated (the cond's two branches must give the same static shape)."""
        shape = self.stage_shapes[k]
        return lambda d: self.model.aux.stages[k](d).reshape(shape)

    def _no_depth(self, k: int) -> Callable[[Tensor], Tensor]:
        """What stands in for depth stage k's output when the image no longer needs it: zeros of its shape."""
        shape = self.stage_shapes[k]
        return lambda d: d.new_zeros(shape)

    def _op(self, k: int) -> Callable[..., Tensor]:
        """Cell k's op chosen by choice[0, k]: a chain of conds, so only that op runs."""
        cell = self.model.fusion_cells[k]

        def run(i: int) -> Callable[..., Tensor]:
            def call(choice: Tensor, x: Tensor, d: Tensor) -> Tensor:
                return cell.ops[i](x, d if cell.needs_depth[i] else None).clone()  # cond outputs own memory

            return call

        def chain(i: int) -> Callable[..., Tensor]:
            if i == len(cell.ops) - 1:
                return run(i)

            def call(choice: Tensor, x: Tensor, d: Tensor) -> Tensor:
                return torch.cond(choice[0, k] == i, run(i), chain(i + 1), (choice, x, d))

            return call

        return chain(0)


@torch.no_grad()
def stage_shapes(model: FusionLevelDynMM) -> list[tuple[int, ...]]:
    """The (1, C, H, W) output shape of each auxiliary stage for one image, as plain integers."""
    d = model.aux.stem(torch.zeros(1, *model.specs[model.secondary].shape))
    shapes = []
    for stage in model.aux.stages:
        d = stage(d)
        shapes.append(tuple(int(v) for v in d.shape))
    return shapes


def fusion_graphs(model: FusionLevelDynMM, inputs: dict[str, Tensor]) -> dict[str, Any]:
    """The one graph of a fusion-level artifact, with a one-row example."""
    model = model.eval()
    model.set_mode("dispatch")
    names = [model.primary, model.secondary]
    return {
        "module": FusionGraph(model),
        "args": [inputs[n][:1] for n in names],
        "inputs": names,
        "outputs": ["outputs", "choice"],
        "dynamic": False,
    }


class StaticFusionGraph(nn.Module):
    """The same network with one op in every cell and no gate (the whole depth encoder runs): the static fusion
    an exported dynamic model is timed against."""

    def __init__(self, model: FusionLevelDynMM, op: str) -> None:
        super().__init__()
        if op not in model.op_names:
            raise ConfigError(f"op {op!r} is not among the cells' ops {model.op_names}")
        self.model = model
        self.op = model.op_names.index(op)

    def forward(self, main: Tensor, aux: Tensor) -> Tensor:
        m = self.model
        x, d = m.main.stem(main), m.aux.stem(aux)
        if m.stem_fusion is not None:
            x = m.stem_fusion(x, d)
        features = []
        for k, cell in enumerate(m.fusion_cells):
            x, d = m.main.stages[k](x), m.aux.stages[k](d)
            x = cell.ops[self.op](x, d if cell.needs_depth[self.op] else None)
            features.append(x)
        return m.decoder(features, (main.shape[-2], main.shape[-1]))
