import random

import numpy as np

from dynmm.methods.mfas.sampling import distinct_random, expand, temperature_sample
from dynmm.methods.mfas.space import LayerChoice

A, B, C = LayerChoice((0, 0), 0), LayerChoice((1, 0), 0), LayerChoice((0, 1), 1)


def test_expand_appends_or_replaces_and_deduplicates():
    assert expand([(A,), (B,)], 1, [A, C]) == [(A, A), (A, C), (B, A), (B, C)]
    assert expand([(A, B), (C, B)], 0, [A, C]) == [(A, B), (C, B)]


def test_temperature_sampling_cold_is_greedy_and_hot_is_spread():
    candidates = [(LayerChoice((i, 0), 0),) for i in range(20)]
    scores = [0.1 + 0.04 * i for i in range(20)]
    cold = temperature_sample(candidates, scores, 3, 1e-4, np.random.default_rng(0))
    assert sorted(c[0].taps[0] for c in cold) == [17, 18, 19]
    hot_picks = set()
    for seed in range(20):
        hot_picks.update(
            c[0].taps[0] for c in temperature_sample(candidates, scores, 3, 100.0, np.random.default_rng(seed))
        )
    assert len(hot_picks) > 12
    picked = temperature_sample(candidates, scores, 5, 1.0, np.random.default_rng(1))
    assert len(set(picked)) == 5
    assert temperature_sample(candidates[:2], scores[:2], 5, 1.0, np.random.default_rng(1)) == candidates[:2]


def test_distinct_random_excludes_and_never_repeats(space):
    exclude = {space.random_architecture(random.Random(i)) for i in range(10)}
    drawn = distinct_random(space, 40, exclude, random.Random(0))
    assert len(drawn) == len(set(drawn)) == 40
    assert not exclude & set(drawn)
