"""Resource losses against direct computations."""

import pytest
import torch

from dynmm.errors import ConfigError
from dynmm.losses import adamml_usage_cost, expected_cost, normalised_costs


def test_expected_cost_is_the_chosen_experts_normalised_cost():
    costs = normalised_costs([2_000, 500_000])
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert float(expected_cost(weights, costs)) == pytest.approx((0.004 + 1 + 0.004 + 1) / 4)


def test_expected_cost_gradient_pushes_towards_the_cheap_expert():
    logits = torch.zeros(3, 2, requires_grad=True)
    expected_cost(torch.softmax(logits, 1), normalised_costs([1.0, 4.0])).backward()
    assert torch.all(logits.grad[:, 1] > 0) and torch.all(logits.grad[:, 0] < 0)


def test_adamml_usage_cost():
    keep = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])  # 2 clips, 2 segments, 2 modalities
    correct = torch.tensor([True, False])
    cost = adamml_usage_cost(keep, correct, gamma=10.0)
    # clip 0 correct: usage (1.0, 0.5) -> squared (1.0, 0.25); clip 1 wrong: gamma for both
    torch.testing.assert_close(cost, torch.tensor([(1.0 + 10) / 2, (0.25 + 10) / 2]))


def test_bad_costs():
    with pytest.raises(ConfigError):
        normalised_costs([0.0, 0.0])
    with pytest.raises(ConfigError):
        normalised_costs([-1.0, 2.0])
