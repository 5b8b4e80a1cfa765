"""Dispatch never materialises the dense block of branch outputs: checked op by op, not by timing or memory.

The dense tensor of a routed layer is every branch's output on every row: batch × branches × output values. A
masked forward written the obvious way builds it as one stacked tensor and multiplies it by a one-hot mask. Here
`masked` and `dense` mode sum the branch outputs instead of stacking them (routing.combine), so it exists as one
full-batch output per branch. Both forms are checked. A TorchDispatchMode records the shape of every tensor that
every aten op returns during one forward, tagged with the branch module running at the time (forward hooks also
catch a branch such as `identity` that returns its input and runs no op).

In dispatch mode:
- every tensor a branch creates has exactly as many rows as were routed to that branch, and a branch that no row
  chose runs no op at all;
- so the branch outputs hold batch × output values in all (each row gets its one branch), never
  batch × branches × output;
- no tensor outside the branches is a stack of branch outputs (batch × branches × output values or more, laid
  out as branch outputs).
The same recording of masked and dense mode shows every branch working on every row, so the test can fail.
A masked forward that stacks is recorded too, to show the stack check catches a real stack.

What the dense tensor is for each model:
- modality-level DynMM: the experts' predictions, (batch, experts, classes);
- AdaMML: the recognition nets' logits of every (clip, segment, modality), (batch·segments, modalities,
  classes). A skipped pair gets zero logits and never enters a net;
- fusion-level DynMM: every op of a cell on every row, (batch, ops, C, H, W) per cell, plus the auxiliary
  encoder's stages on rows whose later cells never read them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tests.methods.adamml import test_model as test_adamml
from tests.methods.fusion_level import test_model as test_fusion_level
from tests.methods.modality_level.test_model import batch, build
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.hooks import RemovableHandle

from dynmm.methods.modality_level.speed import forced_choice
from dynmm.routing import MODES, Mode, route

Shape = tuple[int, ...]


def _shapes(tree: Any) -> list[Shape]:
    return [tuple(t.shape) for t in tree_flatten(tree)[0] if isinstance(t, Tensor)]


class TensorLog(TorchDispatchMode):
    """Shape of every tensor every aten op returns, tagged with the innermost watched module that was running
    (None outside them); and the shape of every output of a watched module."""

    def __init__(self, watched: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.created: dict[str | None, list[Shape]] = defaultdict(list)
        self.outputs: dict[str, list[Shape]] = defaultdict(list)
        self._running: list[str] = []
        self._hooks: list[RemovableHandle] = []
        for name, module in watched.items():
            self._hooks.append(module.register_forward_pre_hook(self._enter(name)))
            self._hooks.append(module.register_forward_hook(self._leave(name)))

    def _enter(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            self._running.append(name)

        return hook

    def _leave(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._running.pop()
            self.outputs[name] += _shapes(output)

        return hook

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = func(*args, **(kwargs or {}))
        scope = self._running[-1] if self._running else None
        self.created[scope] += _shapes(result)
        return result

    def __exit__(self, *exc: Any) -> Any:
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc)

    def rows(self, scope: str) -> set[int]:
        """Leading sizes of the tensors created while `scope` ran and of its outputs (0-d tensors, e.g. a check's
        bool, left out)."""
        return {shape[0] for shape in [*self.created.get(scope, []), *self.outputs.get(scope, [])] if shape}

    def output_values(self, scopes: Iterable[str]) -> int:
        return sum(math.prod(shape) for scope in scopes for shape in self.outputs.get(scope, []))

    def stacks(self, rows: int, branches: int, item: Shape) -> list[Shape]:
        """Tensors created outside the watched modules that stack branch outputs of shape (rows, *item): at least
        rows × branches × item values, ending in item[1:] with item[0] or branches·item[0] before that, as every
        layout of such a stack does: (rows, branches, *item), (branches, rows, *item), (rows·branches, *item),
        (rows, branches·item[0], *item[1:])."""
        dense = rows * branches * math.prod(item)
        return [
            shape
            for shape in self.created.get(None, [])
            if len(shape) >= len(item)
            and shape[len(shape) - len(item) + 1 :] == item[1:]
            and shape[len(shape) - len(item)] in (item[0], branches * item[0])
            and math.prod(shape) >= dense
        ]


def record(watched: Mapping[str, nn.Module], forward: Callable[[], Any]) -> TensorLog:
    with torch.inference_mode(), TensorLog(watched) as log:
        forward()
    return log


def check_branches(log: TensorLog, mode: Mode, rows: int, routed: Mapping[str, int]) -> None:
    """Dispatch: each branch creates tensors of exactly its routed rows (none if no row chose it); masked and
    dense: of every row."""
    for name, count in routed.items():
        if mode == "dispatch":
            assert log.rows(name) == ({count} if count else set()), (name, count, log.rows(name))
        else:
            assert log.rows(name) == {rows}, (name, log.rows(name))


# ---------------------------------------------------------------------------------------------- modality level
ROWS = 37  # prime, so that no layer width or weight dimension can pass for the batch
CLASSES = 4


def _experts(model: nn.Module) -> dict[str, nn.Module]:
    return {f"expert{i}": expert for i, expert in enumerate(model.experts)}


def _forced(model: nn.Module, x: dict[str, Tensor], mode: Mode) -> tuple[Callable[[], Tensor], Tensor]:
    """What `dynmm bench speed` times: the gate runs, half the rows forced onto the cheap expert."""
    choice = forced_choice(ROWS, 0.5, expensive=len(model.experts) - 1)

    def call() -> Tensor:
        model.gate(x, cost_penalty=model.penalty())
        return route(list(model.experts), x, choice, F.one_hot(choice, len(model.experts)).float(), mode)

    return call, choice


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("routing", ["forced", "gate", "gate, all cheap"])
def test_modality_level_dispatch_runs_each_expert_on_its_rows_only(routing, mode):
    model, x = build(), batch(ROWS)
    if routing == "forced":
        call, choice = _forced(model, x, mode)
    else:
        model.beta = 5.0 if routing == "gate, all cheap" else 0.0  # β = 5 sends every row to the cheap expert
        model.set_mode(mode)

        def call() -> Tensor:
            return model(x)

    # The gate is tagged too, so the stack check sees only the routing core's own tensors (the gate's hidden
    # layer is 8 = experts × classes wide).
    log = record(_experts(model) | {"gate": model.gate}, call)
    if routing != "forced":
        assert model.last_gate is not None
        choice = model.last_gate.choice
    counts = torch.bincount(choice, minlength=len(model.experts)).tolist()
    assert (min(counts) == 0) == (routing == "gate, all cheap")  # a mixed routing, or one expert never chosen
    check_branches(log, mode, ROWS, {f"expert{i}": n for i, n in enumerate(counts)})
    values = log.output_values(_experts(model))
    dense = ROWS * len(model.experts) * CLASSES
    assert values == (ROWS * CLASSES if mode == "dispatch" else dense)
    assert log.stacks(ROWS, len(model.experts), (CLASSES,)) == []


def test_the_stack_check_catches_a_masked_forward_that_stacks():
    model, x = build(), batch(ROWS)
    choice = forced_choice(ROWS, 0.5)

    def stack_and_mask() -> Tensor:
        stacked = torch.stack([expert(x) for expert in model.experts], dim=1)  # (batch, experts, classes)
        return (stacked * F.one_hot(choice, 2)[:, :, None]).sum(dim=1)

    log = record(_experts(model), stack_and_mask)
    assert (ROWS, 2, CLASSES) in log.stacks(ROWS, 2, (CLASSES,))
    call, _ = _forced(model, x, "dispatch")  # the same routing, dispatched
    with torch.no_grad():
        torch.testing.assert_close(stack_and_mask(), call(), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- AdaMML
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", ["random", "learned"])  # forced keep decisions, and the policy's own
def test_adamml_dispatch_runs_each_net_on_its_kept_pairs_only(policy, mode):
    model, clips = test_adamml.build(), test_adamml.clips(6)
    model.set_policy_mode(policy, keep_rate=0.5 if policy == "random" else None, seed=3)
    model.set_mode(mode)
    nets = dict(model.nets.items())
    log = record(nets, lambda: model(clips))
    assert model.last_keep is not None
    pairs = 6 * test_adamml.T
    kept = {m: int((keep > 0.5).sum()) for m, keep in model.last_keep.items()}
    assert all(0 < n < pairs for n in kept.values()), kept  # every net keeps some pairs and skips others
    check_branches(log, mode, pairs, kept)
    classes = model.num_classes
    dense = pairs * len(nets) * classes  # logits of every (clip, segment, modality)
    assert log.output_values(nets) == (sum(kept.values()) * classes if mode == "dispatch" else dense)
    assert log.stacks(pairs, len(nets), (classes,)) == []


# ---------------------------------------------------------------------------------------------- fusion level
def _fusion_scopes(model: nn.Module) -> dict[str, nn.Module]:
    ops = {
        f"cell{k}.{name}": op
        for k, cell in enumerate(model.fusion_cells)
        for name, op in zip(cell.op_names, cell.ops, strict=True)
    }
    return ops | {f"aux{k}": stage for k, stage in enumerate(model.aux.stages)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("routing", ["forced", "gate"])
def test_fusion_level_dispatch_runs_each_op_and_depth_stage_on_its_rows_only(routing, mode):
    rows = 13
    x = test_fusion_level.batch(rows)
    if routing == "forced":
        model = test_fusion_level.build()
        model.forced_choice = test_fusion_level.random_choice(rows, model)
    else:  # a gate whose own choices differ between rows: input-driven logits, and β favouring RGB only
        model = test_fusion_level.build(seed=1)
        with torch.no_grad():
            model.gate.head.bias.zero_()
            model.gate.head.weight.mul_(100.0)
        model.beta = 20.0
    model.set_mode(mode)
    scopes = _fusion_scopes(model)
    log = record(scopes, lambda: model(x))
    choice = model.last_choice
    assert choice is not None
    reads = torch.stack([torch.tensor(c.needs_depth)[choice[:, k]] for k, c in enumerate(model.fusion_cells)], 1)
    needed = (reads * torch.arange(1, model.num_cells + 1)).amax(dim=1)  # 1 + the last cell reading depth, or 0
    routed = {
        f"cell{k}.{name}": int((choice[:, k] == o).sum())
        for k, cell in enumerate(model.fusion_cells)
        for o, name in enumerate(cell.op_names)
    }
    routed |= {f"aux{k}": int((needed > k).sum()) for k in range(model.num_cells)}
    assert 0 < routed["aux2"] < rows and sum(0 < n < rows for n in routed.values()) >= 2  # a mixed routing
    check_branches(log, mode, rows, routed)
    for k, cell in enumerate(model.fusion_cells):
        names = [f"cell{k}.{name}" for name in cell.op_names]
        item = next(shape[1:] for name in names for shape in log.outputs.get(name, []))
        per_row = math.prod(item)
        expected = rows * per_row if mode == "dispatch" else rows * len(names) * per_row
        assert log.output_values(names) == expected, k
        assert log.stacks(rows, len(names), item) == [], k
