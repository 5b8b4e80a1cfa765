"""End-to-end training run on MOSI (a few epochs): files written, eval reproduces, resume, refusals."""

import json

import pytest
from typer.testing import CliRunner

from dynmm.cli import app
from dynmm.config import load_config
from dynmm.errors import ConfigError, DataError
from dynmm.methods.evaluate_run import evaluate_exported
from dynmm.methods.registry import load_exported, train_run

CONFIG = "configs/mosi/static.yaml"


def small_config(tmp_path, *extra):
    return load_config(
        CONFIG,
        [f"--output_dir={tmp_path}", "--name=t", "--train.max_epochs=2", "--train.progress_bar=false", *extra],
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return train_run(small_config(tmp)), tmp


def test_run_directory_has_everything(finished_run):
    result, _ = finished_run
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"config.yaml", "checkpoints", "model.safetensors", "model.json", "metrics.json", "logs"} <= names
    assert (result.run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"acc2", "acc2_nonzero", "acc7", "mae", "corr"}
    assert metrics["madds_per_sample"] > 0
    assert set(metrics["madds_by_part"]) == {"encoders.audio", "encoders.text", "encoders.video", "fusion"}
    assert sum(metrics["madds_by_part"].values()) == metrics["madds_per_sample"]
    assert metrics["epochs"] == 2


def test_eval_from_safetensors_reproduces_metrics(finished_run):
    result, _ = finished_run
    evaluation = evaluate_exported(result.run_dir, "test")
    now, recorded = evaluation.metrics, evaluation.recorded
    for name, value in recorded.items():
        assert now[name] == pytest.approx(value, abs=1e-6), name


def test_existing_run_is_never_overwritten(finished_run):
    result, tmp = finished_run
    before = (result.run_dir / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already exists; continue it with --resume"):
        train_run(small_config(tmp))
    assert (result.run_dir / "model.safetensors").read_bytes() == before


def test_resume_continues_to_more_epochs_and_refuses_changed_config(finished_run):
    result, tmp = finished_run
    with pytest.raises(ConfigError, match=r"different configuration \(train.lr\)"):
        train_run(small_config(tmp, "--train.lr=0.5"), resume=True)
    resumed = train_run(small_config(tmp, "--train.max_epochs=3"), resume=True)
    assert resumed.metrics["epochs"] == 3


def test_corrupt_or_missing_export_gives_clear_error(tmp_path, finished_run):
    result, _ = finished_run
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.json").write_text((result.run_dir / "model.json").read_text())
    with pytest.raises(DataError, match="model.safetensors is missing"):
        load_exported(copy)
    (copy / "model.safetensors").write_bytes((result.run_dir / "model.safetensors").read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable safetensors file"):
        load_exported(copy)
    (copy / "model.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_exported(copy)


def test_cli_reports_user_errors_in_one_line(tmp_path):
    runner = CliRunner()
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  max_epoch: 3\n")
    outcome = runner.invoke(app, ["train", str(config)])
    assert outcome.exit_code != 0
    assert isinstance(outcome.exception, ConfigError)
    assert "did you mean 'max_epochs'" in str(outcome.exception)
