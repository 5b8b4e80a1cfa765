"""Properties of the routing core (`dynmm.routing`) over random branch counts, batch sizes, routings (all rows
to one branch, empty branches), dtypes and output widths: dispatch == masked == dense with one-hot weights,
every row comes back in its place, and a branch that no row chose is never called. Plus its bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from dynmm.errors import InputError
from dynmm.routing import combine, dispatch, route, rows_per_branch
from dynmm.specs import Inputs

DTYPES = [torch.float32, torch.float64, torch.bfloat16]  # bfloat16: elementwise ops and matmul run on CPU
SETTINGS = settings(max_examples=60, deadline=None)


class Branch:
    """Output row = [its input row id, branch id, f_i(x) of `width` values]: where a row lands and who made it
    can be read off the output. Counts its calls and the rows it saw; reads only `modalities`."""

    modalities = ("x", "row")

    def __init__(self, index: int, width: int, linear: bool) -> None:
        self.index, self.width = index, width
        g = torch.Generator().manual_seed(index)
        self.weight = torch.randn(4, width, generator=g) if linear else None
        self.calls: list[int] = []
        self.keys: list[set[str]] = []

    def __call__(self, inputs: Inputs) -> Tensor:
        x, row = inputs["x"], inputs["row"]
        self.calls.append(x.shape[0])
        self.keys.append(set(inputs))
        if self.weight is None:
            values = torch.tanh(x[:, :1] * (self.index + 1) + self.index) * torch.arange(1, self.width + 1).to(x)
        else:
            values = x @ self.weight.to(x.dtype)
        return torch.cat([row[:, None], torch.full_like(row[:, None], self.index), values], dim=1)


@st.composite
def routings(draw: st.DrawFn, min_batch: int = 1) -> tuple[int, Tensor]:
    branches = draw(st.integers(1, 5))
    batch = draw(st.integers(min_batch, 33))
    kind = draw(st.sampled_from(["random", "one branch", "some branches"]))
    if kind == "one branch":
        choice = [draw(st.integers(0, branches - 1))] * batch
    elif kind == "some branches":  # leaves at least one branch empty whenever there are 2+
        used = draw(st.lists(st.integers(0, branches - 1), min_size=1, max_size=max(1, branches - 1), unique=True))
        choice = draw(st.lists(st.sampled_from(used), min_size=batch, max_size=batch))
    else:
        choice = draw(st.lists(st.integers(0, branches - 1), min_size=batch, max_size=batch))
    return branches, torch.tensor(choice, dtype=torch.long)


def make(branches: int, batch: int, dtype: torch.dtype, width: int, linear: bool, seed: int) -> tuple[list, Inputs]:
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "x": torch.randn(batch, 4, generator=g).to(dtype),
        "row": torch.arange(batch).to(dtype),  # exact up to 256 even in bfloat16
        "unused": torch.randn(batch, 3, generator=g),  # no branch reads it: dispatch must not gather it
    }
    return [Branch(i, width, linear) for i in range(branches)], inputs


@SETTINGS
@given(routings(), st.sampled_from(DTYPES), st.integers(1, 6), st.booleans(), st.integers(0, 2**16))
def test_dispatch_equals_masked_and_dense_and_keeps_rows_in_place(routing, dtype, width, linear, seed):
    branches, choice = routing
    batch = choice.shape[0]
    fns, inputs = make(branches, batch, dtype, width, linear, seed)
    fast = route(fns, inputs, choice, None, "dispatch")
    masked = route(fns, inputs, choice, None, "masked")
    dense = route(fns, inputs, choice, F.one_hot(choice, branches).to(dtype), "dense")
    assert fast.shape == (batch, 2 + width) and fast.dtype == dtype
    # Elementwise branches are exact; a matmul over fewer rows may block differently, so 1e-6 there.
    tol = {"rtol": 0.0, "atol": 1e-6 if linear and dtype != torch.bfloat16 else 0.0}
    if linear and dtype == torch.bfloat16:
        tol = {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(fast, masked, **tol)
    torch.testing.assert_close(fast, dense, **tol)
    assert torch.equal(fast[:, 0], torch.arange(batch).to(dtype)), "a row came back in another position"
    assert torch.equal(fast[:, 1], choice.to(dtype)), "a row was answered by a branch it did not choose"


@SETTINGS
@given(routings(), st.integers(0, 2**16))
def test_dispatch_calls_each_chosen_branch_once_on_its_rows_only(routing, seed):
    branches, choice = routing
    fns, inputs = make(branches, choice.shape[0], torch.float32, 2, False, seed)
    dispatch(fns, inputs, choice)
    counts = torch.bincount(choice, minlength=branches).tolist()
    for fn, count in zip(fns, counts, strict=True):
        assert fn.calls == ([count] if count else []), (fn.index, fn.calls, count)
        assert all(keys == {"x", "row"} for keys in fn.keys)  # only what the branch reads
    route(fns, inputs, choice, None, "masked")  # the reference runs every branch on every row
    assert all(fn.calls[-1] == choice.shape[0] for fn in fns)


@SETTINGS
@given(routings())
def test_rows_per_branch_partitions_the_batch_in_ascending_order(routing):
    branches, choice = routing
    parts = rows_per_branch(choice, branches)
    assert len(parts) == branches
    assert sorted(torch.cat(parts).tolist()) == list(range(choice.shape[0]))
    for i, rows in enumerate(parts):
        assert bool((choice[rows] == i).all()) and rows.tolist() == sorted(rows.tolist())


@SETTINGS
@given(st.integers(1, 5), st.sampled_from(["dispatch", "masked", "dense"]))
def test_an_empty_batch_is_refused_in_every_mode_without_calling_a_branch(branches, mode):
    """Fixed: masked and dense used to run every branch on 0 rows and return an empty tensor, while dispatch
    refused; now every mode refuses (dispatch cannot know the output's shape without calling a branch)."""
    fns, inputs = make(branches, 0, torch.float32, 3, False, 0)
    choice = torch.zeros(0, dtype=torch.long)
    with pytest.raises(InputError, match=r"empty batch \(0 rows\)"):
        route(fns, inputs, choice, torch.zeros(0, branches), mode)
    assert all(fn.calls == [] for fn in fns)


@SETTINGS
@given(routings(), st.integers(0, 2**16))
def test_soft_weights_combine_every_branch(routing, seed):
    branches, choice = routing
    fns, inputs = make(branches, choice.shape[0], torch.float64, 2, True, seed)
    weights = torch.softmax(torch.randn(choice.shape[0], branches, generator=torch.Generator().manual_seed(seed)), 1)
    out = combine(fns, inputs, weights.double())
    expected = sum(weights[:, i, None].double() * fns[i](inputs) for i in range(branches))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- bad routing inputs

MODES = ["dispatch", "masked", "dense"]


def _setup(batch: int = 4, branches: int = 3) -> tuple[list, Inputs]:
    return make(branches, batch, torch.float32, 2, False, 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("choice", "match"),
    [
        (torch.tensor([0.0, 1.0, 2.0, 0.0]), "integer branch indices, got dtype torch.float32"),
        (torch.tensor([True, False, True, False]), "integer branch indices, got dtype torch.bool"),
        (torch.zeros(4, 1, dtype=torch.long), r"one index per row, got shape \(4, 1\)"),
        (
            torch.zeros(3, dtype=torch.long),
            r"choice covers 3 rows but the inputs have \{'x': 4, 'row': 4, 'unused': 4\}",
        ),
        (torch.zeros(1, dtype=torch.long), "choice covers 1 rows"),  # would broadcast silently in masked mode
    ],
)
def test_malformed_choice_is_refused_in_every_mode(mode, choice, match):
    fns, inputs = _setup()
    with pytest.raises(InputError, match=match):
        route(fns, inputs, choice, torch.ones(choice.shape[0], 3) / 3, mode)
    assert all(fn.calls == [] for fn in fns)


@pytest.mark.parametrize("mode", ["dispatch", "masked"])
@pytest.mark.parametrize("bad", [3, -1])
def test_choice_out_of_range_is_refused(mode, bad):
    """Fixed for masked: one_hot used to fail with a bare RuntimeError."""
    fns, inputs = _setup()
    with pytest.raises(InputError, match=r"must lie in \[0, 2\]"):
        route(fns, inputs, torch.tensor([0, 1, bad, 0]), None, mode)


def test_int32_choice_works_like_int64():
    fns, inputs = _setup()
    choice = torch.tensor([2, 0, 2, 1])
    for mode in ("dispatch", "masked"):
        torch.testing.assert_close(
            route(fns, inputs, choice.int(), None, mode), route(fns, inputs, choice, None, mode), rtol=0, atol=0
        )


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (None, "dense routing needs per-row weights"),
        (torch.ones(4, 2), r"weights must be \(batch, 3\), got \(4, 2\)"),
        (torch.ones(1, 3), r"weights covers 1 rows"),  # would broadcast one row's weights over the batch
        (torch.ones(4), r"weights must be \(batch, 3\), got \(4,\)"),
    ],
)
def test_malformed_dense_weights_are_refused(weights, match):
    fns, inputs = _setup()
    with pytest.raises(InputError, match=match):
        route(fns, inputs, torch.zeros(4, dtype=torch.long), weights, "dense")


def test_unknown_mode_is_refused():
    fns, inputs = _setup()
    with pytest.raises(InputError, match="unknown routing mode 'fast'"):
        route(fns, inputs, torch.zeros(4, dtype=torch.long), None, "fast")  # type: ignore[arg-type]
