"""The recipe with `dynmm.routing: cascade` on MOSI (1-2 epochs per stage), and multi-seed sweeps."""

import json

import pytest
import yaml
from tests.methods.modality_level.test_recipe import CONFIG, small_config
from typer.testing import CliRunner

from dynmm.cli import app
from dynmm.methods.evaluate_run import evaluate_exported
from dynmm.methods.modality_level.cascade import CascadeDynMM
from dynmm.methods.registry import load_exported, train_run


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return train_run(small_config(tmp, "--dynmm.routing=cascade", "--dynmm.gate.modalities=null"))


def test_stage_one_trains_the_larger_expert_on_the_cheap_experts_frozen_encoder(cascade):
    run = cascade.run_dir
    late = yaml.safe_load((run / "experts" / "late_fusion" / "config.yaml").read_text())
    assert late["model"]["encoders"]["text"] == {"kind": "from_run", "path": str(run / "experts" / "text")}
    description = json.loads((run / "model.json").read_text())
    assert description["routing"] == "cascade"
    # the export spells the shared encoder out, so the model rebuilds without the experts' folders
    assert description["experts"][1]["model"]["encoders"]["text"]["kind"] == "mlp"


def test_escalated_rows_pay_the_text_encoder_once_and_the_export_reproduces_metrics(cascade):
    metrics = cascade.metrics
    exported = load_exported(cascade.run_dir)
    model = exported.model
    assert isinstance(model, CascadeDynMM)
    assert model.path_madds[1] < model.expert_madds[0] + model.expert_madds[1]
    assert set(model.gate.specs) == {"confidence", "features", "outputs"}
    evaluation = evaluate_exported(cascade.run_dir, "test")
    for name, value in evaluation.recorded.items():
        assert evaluation.metrics[name] == pytest.approx(value, abs=1e-6), name
    assert metrics["madds_per_sample"] <= model.gate_madds + max(model.path_madds) + 1e-6


def test_sweep_over_seeds_writes_each_seed_and_mean_and_std(tmp_path):
    output = tmp_path / "pareto.json"
    args = ["sweep", CONFIG, "--lambdas", "0.1", "--seeds", "0,1", "--output", str(output)]
    args += [f"--output_dir={tmp_path}", "--name=m", "--train.max_epochs=1", "--dynmm.gate_train.max_epochs=1"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    summary = json.loads(output.read_text())
    assert summary["seeds"] == [0, 1]
    assert (tmp_path / "m_sweep" / "summary.json").is_file() and (tmp_path / "m_seed1_sweep" / "summary.json").is_file()
    (point,) = summary["aggregate"]["points"]
    metrics = [s["points"][0]["metric"] for s in summary["per_seed"]]
    assert point["metric_mean"] == pytest.approx(sum(metrics) / 2)
    assert summary["aggregate"]["test_rows"] == 174  # MOSI split_heldout test
    assert "oracle_gain_share" in summary["points"][0] and "collapsed" in summary["points"][0]
