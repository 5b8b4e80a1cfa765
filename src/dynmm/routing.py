"""The one routing core: run each branch only on the rows routed to it, and put the results back in order.

Every dynamic model (modality-level and fusion-level DynMM, AdaMML) decides per sample which sub-network runs.
The papers' code runs every branch on every row and multiplies by a one-hot mask, so the skipped work is still
paid for. Here `dispatch` gathers each branch's rows, runs the branch on just those, and scatters the outputs
back; a branch nobody chose never runs. `dense` (training) and `masked` (the papers' reference) run everything
and combine with weights, so tests can check that dispatch == masked exactly and benchmarks can time both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from dynmm.errors import InputError
from dynmm.specs import Inputs

Mode = Literal["dense", "masked", "dispatch"]
MODES: tuple[Mode, ...] = ("dense", "masked", "dispatch")
Branch = Callable[[Inputs], Tensor]


def check_choice(choice: Tensor, num_branches: int, values: bool = True) -> None:
    """One integer branch index per row; with `values`, each in [0, num_branches) (reading them syncs a GPU)."""
    if choice.dim() != 1:
        raise InputError(f"routing choice must be one index per row, got shape {tuple(choice.shape)}")
    if choice.dtype == torch.bool or choice.is_floating_point() or choice.is_complex():
        raise InputError(f"routing choice must hold integer branch indices, got dtype {choice.dtype}")
    if values and choice.numel() and (int(choice.min()) < 0 or int(choice.max()) >= num_branches):
        raise InputError(f"routing choice must lie in [0, {num_branches - 1}], got {choice.unique().tolist()}")


def rows_per_branch(choice: Tensor, num_branches: int) -> list[Tensor]:
    """Indices of the rows that chose each branch (ascending, possibly empty)."""
    check_choice(choice, num_branches)
    order = torch.argsort(choice, stable=True)
    counts = torch.bincount(choice, minlength=num_branches).tolist()
    return list(order.split(counts))


def take_rows(inputs: Inputs, rows: Tensor) -> Inputs:
    return {name: x.index_select(0, rows) for name, x in inputs.items()}


def branch_inputs(branch: Branch, inputs: Inputs) -> Inputs:
    """Only what the branch reads (its `modalities`, when it names them), so that dispatch gathers no more."""
    needed = getattr(branch, "modalities", None)
    return inputs if needed is None else {m: inputs[m] for m in needed if m in inputs}


def dispatch(branches: Sequence[Branch], inputs: Inputs, choice: Tensor) -> Tensor:
    """Run branch i on exactly the rows with choice == i; return all outputs in the original row order."""
    batch = choice.shape[0]
    if batch == 1:  # one row (batch-1 serving): its branch runs on the batch as it is, no sort, gather or scatter
        index = int(choice[0])
        if not 0 <= index < len(branches):
            raise InputError(f"routing choice must lie in [0, {len(branches) - 1}], got [{index}]")
        return branches[index](branch_inputs(branches[index], inputs))
    out: Tensor | None = None
    for branch, rows in zip(branches, rows_per_branch(choice, len(branches)), strict=True):
        if rows.numel() == 0:
            continue
        own = branch_inputs(branch, inputs)
        if rows.numel() == batch:  # every row chose this branch: no copy in, no copy out
            return branch(own)
        result = branch(take_rows(own, rows))
        if out is None:
            out = result.new_zeros((batch, *result.shape[1:]))
        out = out.index_copy(0, rows, result)  # out of place, so gradients reach the chosen branches
    if out is None:
        raise InputError("routing got an empty batch (0 rows)")
    return out


def combine(branches: Sequence[Branch], inputs: Inputs, weights: Tensor) -> Tensor:
    """Run every branch on every row and sum the outputs weighted per row: (batch, branches) weights."""
    if weights.dim() != 2 or weights.shape[1] != len(branches):
        raise InputError(f"routing weights must be (batch, {len(branches)}), got {tuple(weights.shape)}")
    _check_rows(inputs, weights.shape[0], "weights")  # one weight row per input row, or they would broadcast
    total: Tensor | None = None
    for i, branch in enumerate(branches):
        result = branch(inputs)
        w = weights[:, i].reshape(-1, *([1] * (result.dim() - 1))).to(result.dtype)
        total = w * result if total is None else total + w * result
    assert total is not None
    return total


def _check_rows(inputs: Inputs, rows: int, what: str) -> None:
    """Every input tensor must have one row per routing decision."""
    wrong = {name: x.shape[0] for name, x in inputs.items() if x.dim() == 0 or x.shape[0] != rows}
    if wrong:
        raise InputError(f"routing {what} covers {rows} rows but the inputs have {wrong}")


def route(branches: Sequence[Branch], inputs: Inputs, choice: Tensor, weights: Tensor | None, mode: Mode) -> Tensor:
    """Execute a routing decision in one of the three modes.

    dense: every branch on every row, summed with `weights` (straight-through one-hot or soft gate weights),
        so the gate receives gradients — training.
    masked: every branch on every row, keeping the chosen one via a one-hot mask — what the papers' code does;
        a reference for tests and speed comparisons only.
    dispatch: each branch on its own rows only — inference.

    Every mode refuses an empty batch (dispatch could not tell the output's shape without calling a branch that
    no row chose), a choice that is not one integer index in [0, branches) per input row, and inputs whose row
    counts differ from it.
    """
    check_choice(choice, len(branches), values=False)  # dispatch and masked read the values below
    _check_rows(inputs, choice.shape[0], "choice")
    if choice.shape[0] == 0:
        raise InputError("routing got an empty batch (0 rows)")
    if mode == "dispatch":
        return dispatch(branches, inputs, choice)
    if mode == "masked":
        check_choice(choice, len(branches))
        mask = torch.nn.functional.one_hot(choice.long(), len(branches))
        return combine(branches, inputs, mask)
    if mode == "dense":
        if weights is None:
            raise InputError("dense routing needs per-row weights")
        return combine(branches, inputs, weights)
    raise InputError(f"unknown routing mode {mode!r}; choose from {list(MODES)}")
