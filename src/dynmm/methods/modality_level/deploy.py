"""Modality-level DynMM as deployable graphs that keep the skipping (`dynmm export RUN --format onnx`).

The model splits where the routing core splits it (`routing_inputs`, `routed_branches`): a router (the gate, and
for a cascade the first expert, whose results the branches reuse) and one graph per branch. `model` joins them
for batch 1: the router, then a chain of `torch.cond` (an ONNX `If`) so that only the chosen branch executes.
For larger batches the router and each branch are also written as graphs with a dynamic batch, and the runner
gathers each branch's rows (per-expert graphs plus a small dispatcher). A soft gate (DynMM-d) mixes every
branch: it exports as one graph and its manifest says it skips nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.routing import Branch, branch_inputs
from dynmm.specs import Inputs
from dynmm.validation import inputs_checked


def graph_name(key: str) -> str:
    """An input or output name that every runtime accepts (a cascade's `cached:image` -> `cached__image`)."""
    return key.replace(":", "__")


def branch_reads(branch: Branch, carried: Sequence[str]) -> list[str]:
    """The routed tensors a branch reads, in the order its graph takes them."""
    needed = getattr(branch, "modalities", None)
    return list(carried) if needed is None else [m for m in needed if m in carried]


class _Graph(nn.Module):
    """Base of the exported wrappers: positional tensors in (what exporters take), the model's parts inside,
    run with the inputs already checked (a check's data-dependent branches cannot be exported)."""

    def __init__(self, model: ModalityLevelDynMM) -> None:
        super().__init__()
        self.model = model
        self.names = list(model.specs)

    def choice(self, gate_inputs: Inputs) -> Tensor:
        logits = self.model.gate.logits(gate_inputs)
        scores = logits - self.model.beta * self.model.costs if self.model.beta else logits
        return scores.argmax(dim=1)


class BatchOneGraph(_Graph):
    """inputs -> (outputs, choice) for one row: only the chosen branch runs (nested torch.cond)."""

    def forward(self, *tensors: Tensor) -> tuple[Tensor, Tensor]:
        with inputs_checked():
            gate_inputs, carried = self.model.routing_inputs(dict(zip(self.names, tensors, strict=True)))
            choice = self.choice(gate_inputs)
            keys = sorted(carried)
            branches = self.model.routed_branches()

            def run(i: int) -> Callable[..., Tensor]:
                def call(_: Tensor, *values: Tensor) -> Tensor:
                    routed = dict(zip(keys, values, strict=True))
                    return branches[i](branch_inputs(branches[i], routed)).clone()  # cond outputs own memory

                return call

            def chain(i: int) -> Callable[..., Tensor]:
                if i == len(branches) - 1:
                    return run(i)

                def call(picked: Tensor, *values: Tensor) -> Tensor:
                    return torch.cond(picked[0] == i, run(i), chain(i + 1), (picked, *values))

                return call

            return chain(0)(choice, *(carried[k] for k in keys)), choice


class RouterGraph(_Graph):
    """inputs -> (choice, what the branches reuse besides the inputs), any batch."""

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        with inputs_checked():
            inputs = dict(zip(self.names, tensors, strict=True))
            gate_inputs, carried = self.model.routing_inputs(inputs)
            return (self.choice(gate_inputs), *(carried[k] for k in sorted(carried) if k not in inputs))


class BranchGraph(nn.Module):
    """One branch on the rows routed to it: its reads -> outputs, any batch."""

    def __init__(self, branch: Branch, reads: Sequence[str], owner: nn.Module) -> None:
        super().__init__()
        self.owner = owner  # holds the branch's weights (a cascade's branches are not modules)
        self.branch = branch
        self.reads = list(reads)

    def forward(self, *tensors: Tensor) -> Tensor:
        with inputs_checked():
            return self.branch(dict(zip(self.reads, tensors, strict=True))).clone()


class SoftGraph(_Graph):
    """DynMM-d: every branch runs and the gate's soft weights mix them; any batch."""

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.model(dict(zip(self.names, tensors, strict=True)))


def example_rows(inputs: Inputs, rows: int) -> Inputs:
    return {m: x[:rows].contiguous() for m, x in inputs.items()}


def deploy_graphs(model: ModalityLevelDynMM, inputs: Inputs) -> dict[str, Any]:
    """What an artifact of this model holds: each graph's module, example args (one row for `model`, two for the
    dynamic-batch graphs), input and output names; `skips` False for a soft gate."""
    model = model.eval()
    model.set_mode("dispatch")
    specs = list(model.specs)
    one, two = example_rows(inputs, 1), example_rows(inputs, 2)
    if model.soft:
        graph = {"module": SoftGraph(model), "args": [two[m] for m in specs], "inputs": specs, "outputs": ["outputs"]}
        return {"skips": False, "model": {**graph, "dynamic": True}, "router": None, "branches": []}
    router = RouterGraph(model)
    with torch.no_grad(), inputs_checked():
        _, carried = model.routing_inputs(two)
    keys = sorted(carried)
    extras = [k for k in keys if k not in model.specs]  # what the router returns besides the choice
    branches = []
    for index, branch in enumerate(model.routed_branches()):
        reads = branch_reads(branch, keys)
        branches.append(
            {
                "module": BranchGraph(branch, reads, model),
                "args": [carried[k].detach() for k in reads],
                "inputs": [graph_name(k) for k in reads],
                "outputs": ["outputs"],
                "dynamic": True,
                "index": index,
            }
        )
    return {
        "skips": True,
        "model": {
            "module": BatchOneGraph(model),
            "args": [one[m] for m in specs],
            "inputs": specs,
            "outputs": ["outputs", "choice"],
            "dynamic": False,
        },
        "router": {
            "module": router,
            "args": [two[m] for m in specs],
            "inputs": specs,
            "outputs": ["choice", *(graph_name(k) for k in extras)],
            "dynamic": True,
        },
        "branches": branches,
    }
