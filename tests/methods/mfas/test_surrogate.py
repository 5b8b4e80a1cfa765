import random

import pytest

from dynmm.errors import ConfigError
from dynmm.methods.mfas.surrogate import Surrogate, SurrogateSettings, prediction_quality


def target(arch):
    """A score that depends on the taps and on depth, as accuracies do."""
    return min(0.95, 0.2 + 0.1 * sum(layer.taps[0] + layer.taps[1] for layer in arch) / len(arch) + 0.05 * len(arch))


def test_surrogate_learns_to_rank_unseen_architectures(space):
    rng = random.Random(0)
    archs = list({space.random_architecture(rng) for _ in range(300)})
    train, held_out = archs[:200], archs[200:260]
    surrogate = Surrogate(space, SurrogateSettings(epochs=300, lr=1e-2))
    before = prediction_quality(surrogate.predict(held_out), [target(a) for a in held_out])
    mse = surrogate.fit(train, [target(a) for a in train], seed=0)
    after = prediction_quality(surrogate.predict(held_out), [target(a) for a in held_out])
    assert mse < 0.005
    assert after["spearman"] > 0.8 and after["mae"] < before["mae"]
    assert all(0 <= p <= 1 for p in surrogate.predict(held_out))


def test_prediction_quality_edge_cases():
    assert prediction_quality([], []) == {"mae": None, "spearman": None}
    assert prediction_quality([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])["spearman"] is None
    assert prediction_quality([0.1, 0.2, 0.3], [0.3, 0.5, 0.9])["spearman"] == pytest.approx(1.0, abs=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="mfas.surrogate"):
        SurrogateSettings(hidden=0)
