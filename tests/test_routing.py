"""Routing core: dispatch == masked reference; only chosen rows reach a branch; gradients in dense mode."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dynmm.errors import InputError
from dynmm.routing import combine, dispatch, route, rows_per_branch


class Expert(nn.Module):
    """A small branch that reads a subset of modalities and records which rows it saw."""

    def __init__(self, keys, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.keys = keys
        self.net = nn.Sequential(nn.Linear(4 * len(keys), 8), nn.ReLU(), nn.Linear(8, 3))
        self.seen = []

    def forward(self, inputs):
        self.seen.append(inputs["row_id"].clone())
        return self.net(torch.cat([inputs[k] for k in self.keys], dim=1))


def make(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {"a": torch.randn(batch, 4, generator=g), "b": torch.randn(batch, 4, generator=g)}
    inputs["row_id"] = torch.arange(batch, dtype=torch.float32)
    experts = [Expert(["a"], 1), Expert(["a", "b"], 2), Expert(["b"], 3)]
    return inputs, experts


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 33), seed=st.integers(0, 10_000), force=st.sampled_from([None, 0, 1, 2]))
def test_dispatch_equals_masked_for_random_routings(batch, seed, force):
    inputs, experts = make(batch, seed)
    g = torch.Generator().manual_seed(seed)
    choice = torch.randint(0, 3, (batch,), generator=g) if force is None else torch.full((batch,), force)
    with torch.no_grad():
        fast = route(experts, inputs, choice, None, "dispatch")
        reference = route(experts, inputs, choice, None, "masked")
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=0)


def test_each_branch_sees_only_its_rows_and_empty_branches_never_run():
    inputs, experts = make(6)
    choice = torch.tensor([1, 0, 1, 1, 0, 1])  # nobody picks expert 2
    dispatch(experts, inputs, choice)
    assert experts[0].seen[0].tolist() == [1, 4]
    assert experts[1].seen[0].tolist() == [0, 2, 3, 5]
    assert experts[2].seen == []


def test_batch_of_one():
    inputs, experts = make(1)
    out = dispatch(experts, inputs, torch.tensor([2]))
    torch.testing.assert_close(out, experts[2]({k: v for k, v in inputs.items()}))


def test_dense_mode_gives_gradients_to_the_gate_and_only_chosen_experts_when_dispatching():
    inputs, experts = make(5)
    logits = torch.zeros(5, 3, requires_grad=True)
    weights = torch.softmax(logits, dim=1)
    route(experts, inputs, weights.argmax(1), weights, "dense").sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0

    for e in experts:
        e.zero_grad()
    dispatch(experts, inputs, torch.tensor([0, 0, 1, 1, 1])).sum().backward()
    assert experts[0].net[0].weight.grad.abs().sum() > 0
    assert experts[2].net[0].weight.grad is None  # never ran


def test_combine_is_the_weighted_sum():
    inputs, experts = make(4)
    w = torch.rand(4, 3)
    expected = sum(w[:, i : i + 1] * experts[i](inputs) for i in range(3))
    torch.testing.assert_close(combine(experts, inputs, w), expected)


def test_bad_routing_inputs_are_named():
    inputs, experts = make(3)
    with pytest.raises(InputError, match=r"must lie in \[0, 2\]"):
        dispatch(experts, inputs, torch.tensor([0, 3, 1]))
    with pytest.raises(InputError, match="one index per row"):
        rows_per_branch(torch.zeros(3, 1, dtype=torch.long), 3)
    with pytest.raises(InputError, match=r"weights must be \(batch, 3\)"):
        combine(experts, inputs, torch.rand(3, 2))
    with pytest.raises(InputError, match="unknown routing mode"):
        route(experts, inputs, torch.zeros(3, dtype=torch.long), None, "sparse")  # type: ignore[arg-type]


def test_batch_of_one_runs_its_branch_without_gather_or_scatter():
    from dynmm.routing import dispatch

    seen = []
    branches = [lambda x, i=i: seen.append(i) or x["a"] * (i + 1) for i in range(3)]
    x = {"a": torch.ones(1, 2)}
    assert torch.equal(dispatch(branches, x, torch.tensor([2])), torch.full((1, 2), 3.0)) and seen == [2]
    with pytest.raises(InputError, match=r"routing choice must lie in \[0, 2\], got \[3\]"):
        dispatch(branches, x, torch.tensor([3]))
