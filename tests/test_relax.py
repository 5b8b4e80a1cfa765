"""Gumbel-softmax: straight-through gradient equals the soft one; hard choices follow softmax(logits)."""

import math

import pytest
import torch

from dynmm.errors import ConfigError
from dynmm.relax import TemperatureSchedule, gumbel_softmax


def test_straight_through_gradient_equals_soft_gradient():
    logits = torch.randn(6, 4)
    upstream = torch.randn(6, 4)
    grads = []
    for hard in (True, False):
        x = logits.clone().requires_grad_(True)
        _, weights = gumbel_softmax(x, tau=0.7, hard=hard, generator=torch.Generator().manual_seed(3))
        (weights * upstream).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_hard_weights_are_one_hot_at_the_returned_index():
    index, weights = gumbel_softmax(torch.randn(10, 5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(weights.detach(), torch.nn.functional.one_hot(index, 5).float())


def test_hard_choice_frequencies_match_softmax_probabilities():
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    draws = 20_000
    index, _ = gumbel_softmax(logits.expand(draws, 4), tau=1.0, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(index, minlength=4).double() / draws
    p = torch.softmax(logits.double(), 0)
    # each frequency within 5 standard errors of its probability
    assert torch.all((freq - p).abs() < 5 * torch.sqrt(p * (1 - p) / draws))


def test_without_noise_the_choice_is_the_argmax():
    logits = torch.randn(8, 3)
    index, _ = gumbel_softmax(logits, noise=False)
    assert torch.equal(index, logits.argmax(1))


def test_schedules():
    exp = TemperatureSchedule("exponential", start=1.0, end=1e-4, epochs=10)
    assert exp(0) == pytest.approx(1.0) and exp(10) == pytest.approx(1e-4) and exp(5) == pytest.approx(1e-2)
    mult = TemperatureSchedule("multiplicative", start=5.0, factor=0.965, end=1e-3)
    assert mult(3) == pytest.approx(5 * 0.965**3)
    inv = TemperatureSchedule("inverse_exponential", start=10.0, end=1.0, epochs=2)
    assert inv(0) == pytest.approx(10.0) and inv(2) == pytest.approx(1 + 9 * math.exp(-1))
    assert TemperatureSchedule("constant", start=2.0)(100) == 2.0
    with pytest.raises(ConfigError):
        TemperatureSchedule("cosine")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be > 0"):
        gumbel_softmax(torch.zeros(2, 2), tau=0)
