"""Multi-seed sweeps: one folder per seed, mean ± std per λ point and per expert, refusals."""

import json

import pytest

from dynmm.config import RunConfig
from dynmm.engine.sweep import aggregate_seeds, run_seeds, seed_config
from dynmm.errors import ConfigError


def summary(metrics, madds, gain=None, collapsed=False):
    points = [
        {"lambda": lam, "metric": m, "madds_per_sample": c, "oracle_gain_share": gain, "collapsed": collapsed}
        for lam, m, c in zip((0.0, 0.5), metrics, madds, strict=True)
    ]
    return {"points": points, "experts": [{"name": "cheap", "madds": 10.0, "metric": metrics[0] - 0.1}], "test_rows": 7}


def test_seed_zero_keeps_the_folders_other_seeds_get_their_own():
    config = RunConfig(name="mosi")
    assert seed_config(config, 0).name == "mosi" and seed_config(config, 0).seed == 0
    assert seed_config(config, 2).name == "mosi_seed2" and seed_config(config, 2).seed == 2


def test_aggregate_is_mean_and_sample_std_over_seeds():
    runs = [summary((0.7, 0.8), (100.0, 50.0), 0.5), summary((0.9, 0.6), (300.0, 50.0), None, collapsed=True)]
    aggregate = aggregate_seeds(runs, [0, 1], "DynMM")
    first, second = aggregate["points"]
    assert first["label"] == "DynMM λ=0" and first["metric_mean"] == pytest.approx(0.8)
    assert first["metric_std"] == pytest.approx(0.1414213562, rel=1e-6)
    assert first["madds_mean"] == pytest.approx(200.0) and second["madds_std"] == 0.0
    assert first["oracle_gain_share_mean"] == 0.5  # the undefined share of seed 1 is left out, not counted as 0
    assert first["collapsed"] and second["collapsed"]
    assert aggregate["experts"][0]["metric_mean"] == pytest.approx(0.7)
    assert aggregate["test_rows"] == 7 and aggregate["seeds"] == [0, 1]


def test_run_seeds_writes_every_seed_and_the_aggregate(tmp_path):
    seen = []

    def sweep(config):
        seen.append((config.name, config.seed))
        return summary((0.5 + config.seed / 10, 0.6), (10.0, 5.0))

    output = tmp_path / "pareto.json"
    combined = run_seeds(RunConfig(name="x"), [0, 3], output, sweep, "DynMM")
    assert seen == [("x", 0), ("x_seed3", 3)]
    assert json.loads(output.read_text()) == combined
    assert combined["seeds"] == [0, 3] and len(combined["per_seed"]) == 2
    assert combined["points"] == combined["per_seed"][0]["points"]  # single-seed readers see seed 0
    with pytest.raises(ConfigError, match="distinct seeds"):
        run_seeds(RunConfig(), [1, 1], output, sweep, "DynMM")
