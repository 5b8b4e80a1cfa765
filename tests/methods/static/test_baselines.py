"""Baselines benchmark: runs each model per seed, aggregates mean/std, reuses finished runs on restart."""

import json

import pytest

from dynmm.errors import ConfigError
from dynmm.methods.static.baselines import baseline_configs, markdown_table, run_baselines


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "mosi:\n"
        "  base: configs/mosi/static.yaml\n"
        "  quick: {train: {max_epochs: 1}}\n"
        "  models:\n"
        "    text_only: {model: {fusion: unimodal, modalities: [text]}}\n"
        "    late_mean: {model: {fusion: late_mean}}\n"
    )
    return path


def test_configs_per_model_and_seed(spec, tmp_path):
    plan = baseline_configs(spec, "mosi", seeds=2, quick=True, runs_root=tmp_path)
    assert list(plan) == ["text_only", "late_mean"]
    first, second = plan["text_only"]
    assert (first.seed, second.seed) == (0, 1)
    assert first.model.modalities == ["text"] and first.train.max_epochs == 1
    assert first.name == "mosi_text_only_seed0"
    with pytest.raises(ConfigError, match="no entry for data set 'nyu'"):
        baseline_configs(spec, "nyu", 1, True, tmp_path)


def test_run_aggregates_over_seeds_and_reuses_finished_runs(spec, tmp_path):
    output = tmp_path / "out" / "baselines.json"
    results = run_baselines(spec, ["mosi"], seeds=2, quick=True, output=output, runs_root=tmp_path / "runs")
    saved = json.loads(output.read_text())
    assert saved == json.loads(json.dumps(results))
    entry = saved["datasets"]["mosi"]["late_mean"]
    values = entry["test"]["acc2"]["values"]
    assert len(values) == 2
    assert entry["test"]["acc2"]["mean"] == pytest.approx(sum(values) / 2)
    assert entry["madds_per_sample"] > saved["datasets"]["mosi"]["text_only"]["madds_per_sample"]
    assert "| late_mean |" in markdown_table(saved)
    assert output.with_suffix(".md").read_text() == markdown_table(saved)

    stamp = (tmp_path / "runs" / "baselines-quick" / "mosi_late_mean_seed0" / "metrics.json").stat().st_mtime_ns
    again = run_baselines(spec, ["mosi"], seeds=2, quick=True, output=output, runs_root=tmp_path / "runs")
    assert again["datasets"] == results["datasets"]
    assert (tmp_path / "runs" / "baselines-quick" / "mosi_late_mean_seed0" / "metrics.json").stat().st_mtime_ns == stamp
