"""The DynMM recipe end to end on MOSI (1-2 epochs per stage): layout, export, resume from any stage."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dynmm.cli import app
from dynmm.config import load_config
from dynmm.data.registry import load_dataset
from dynmm.errors import ConfigError, DataError
from dynmm.methods.evaluate_run import evaluate_exported
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.methods.registry import load_exported, train_run
from dynmm.report.evaluate import evaluate
from dynmm.specs import TaskSpec

CONFIG = "configs/mosi/dynmm.yaml"


def small_config(tmp_path, *extra):
    return load_config(
        CONFIG,
        [
            f"--output_dir={tmp_path}",
            "--name=d",
            "--train.max_epochs=1",
            "--dynmm.gate_train.max_epochs=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return train_run(small_config(tmp, "--dynmm.finetune_train={max_epochs: 1, lr: 1.0e-4}")), tmp


def test_layout_and_metrics(finished):
    result, _ = finished
    run = result.run_dir
    for path in ("config.yaml", "model.safetensors", "model.json", "metrics.json", "routing.json", "report.html"):
        assert (run / path).is_file(), path
    for stage in ("gate", "finetune"):
        assert (run / stage / "done.json").is_file() and (run / stage / "weights.safetensors").is_file()
    for expert in ("text", "late_fusion"):
        assert (run / "experts" / expert / "metrics.json").is_file()
    metrics = result.metrics
    expert_madds = metrics["expert_madds"]
    assert expert_madds["text"] < expert_madds["late_fusion"]
    fractions = metrics["routing"]["fractions"]
    assert sum(fractions.values()) == pytest.approx(1.0)
    expected = metrics["gate_madds"] + sum(fractions[n] * expert_madds[n] for n in expert_madds)
    assert metrics["madds_per_sample"] == pytest.approx(expected)
    routing = json.loads((run / "routing.json").read_text())
    assert sum(routing["counts"]) == sum(sum(c) for c in routing["per_class"].values())
    assert routing["per_flag"] == {}  # MOSI keeps no per-sample flags (AV digits does: image_hard, audio_noisy)
    assert metrics["frontier"]["area_ratio"] <= 1.0 + 1e-9  # nothing beats the oracle


def test_export_is_a_dynmm_model_that_reproduces_metrics(finished):
    result, _ = finished
    exported = load_exported(result.run_dir)
    assert isinstance(exported.model, ModalityLevelDynMM) and exported.model_type == "dynmm"
    assert [e["name"] for e in exported.description["experts"]] == ["text", "late_fusion"]
    evaluation = evaluate_exported(result.run_dir, "test")
    now, recorded = evaluation.metrics, evaluation.recorded
    for name, value in recorded.items():
        assert now[name] == pytest.approx(value, abs=1e-6), name


def test_finished_stages_are_reused_and_an_interrupted_stage_resumes(finished):
    result, tmp = finished
    run = result.run_dir
    gate_weights = load_file(str(run / "gate" / "weights.safetensors"))
    expert_model = (run / "experts" / "text" / "model.safetensors").read_bytes()
    # Simulate a kill during stage III: its completion marker and the final outputs never got written.
    (run / "finetune" / "done.json").unlink()
    (run / "metrics.json").unlink()
    again = train_run(small_config(tmp, "--dynmm.finetune_train={max_epochs: 1, lr: 1.0e-4}"), resume=True)
    assert (run / "experts" / "text" / "model.safetensors").read_bytes() == expert_model  # not retrained
    for key, value in load_file(str(run / "gate" / "weights.safetensors")).items():
        assert torch.equal(value, gate_weights[key]), key
    assert again.metrics["test"] == pytest.approx(result.metrics["test"])


def test_experts_can_be_shared_between_runs(finished, tmp_path):
    result, _ = finished
    shared = result.run_dir / "experts"
    before = (shared / "late_fusion" / "model.safetensors").read_bytes()
    other = train_run(small_config(tmp_path, f"--dynmm.experts_dir={shared}", "--dynmm.resource_weight=1.0"))
    assert not (other.run_dir / "experts").exists()
    assert (shared / "late_fusion" / "model.safetensors").read_bytes() == before
    assert other.metrics["expert_madds"] == result.metrics["expert_madds"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--dynmm.experts=[{name: text, model: {fusion: unimodal, modalities: [text]}}]", "at least 2 experts"),
        ("--dynmm.experts=[{name: a}, {name: a}]", "names must be unique"),
        ("--dynmm.resource_weight=-1", "must be >= 0"),
        ("--dynmm.gate.kind=lstm", "unknown gate 'lstm'"),
        ("--dynmm.gate.mode=medium", "'hard' \\(DynMM\\) or 'soft'"),
        ("--dynmm.gate_train.optimizer=adamx", "unknown 'adamx'"),
    ],
)
def test_bad_recipe_configs_fail_before_training(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train_run(small_config(tmp_path, override))


def test_eval_probes_of_a_dynmm_run(finished):
    result, _ = finished
    run = result.run_dir
    budget = result.metrics["gate_madds"] + min(result.metrics["expert_madds"].values())
    cheap = evaluate_exported(run, "test", target_madds=budget)
    assert cheap.dynmm["valid_at_beta"]["madds"] <= budget + 1e-9 and cheap.recorded == {}
    assert cheap.dynmm["madds_per_sample"] <= 1.1 * budget  # β is chosen on valid; test follows closely
    with pytest.raises(ConfigError, match="below the cheapest routing"):
        evaluate_exported(run, "test", target_madds=budget - 1)
    dropped = evaluate_exported(run, "test", drop=["audio"])
    assert dropped.dynmm["routing"][1] == 0  # late fusion needs audio: everyone goes to text-only
    assert dropped.metrics["acc2"] == pytest.approx(result.metrics["experts"]["text"]["acc2"])


def test_eval_and_sweep_from_the_command_line(finished, tmp_path, monkeypatch):
    result, _ = finished
    runner = CliRunner()
    out = runner.invoke(app, ["eval", str(result.run_dir), "--noise", "audio:gaussian:1", "--drop", "video"])
    assert out.exit_code == 0, out.output
    assert "audio:gaussian:1, drop video" in out.output and "MAdds per sample" in out.output
    summary_path = tmp_path / "pareto.json"
    shared = str(result.run_dir / "experts")
    args = [
        "sweep",
        CONFIG,
        "--lambdas",
        "0,1",
        "--output",
        str(summary_path),
        f"--output_dir={tmp_path}",
        "--train.max_epochs=1",
        "--dynmm.gate_train.max_epochs=1",
        f"--dynmm.experts_dir={shared}",
    ]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    summary = json.loads(summary_path.read_text())
    assert [p["lambda"] for p in summary["points"]] == [0.0, 1.0]
    assert {e["name"] for e in summary["experts"]} == {"text", "late_fusion"}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished sweep point was trained again")

    monkeypatch.setattr("dynmm.methods.registry.train_run", no_training)  # a restarted sweep skips finished points
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(summary_path.read_text())["points"] == summary["points"]


def test_report_command_adds_speed_and_sweep(finished, tmp_path):
    from dynmm.io import atomic_write_json
    from dynmm.methods.modality_level.report import write_run_report
    from dynmm.methods.modality_level.speed import run_trained_benchmark

    result, _ = finished
    run = result.run_dir
    atomic_write_json(run / "speed.json", run_trained_benchmark(run, [4], [0.5], repeats=1))
    sweep = tmp_path / "sweep.json"
    point = {"lambda": 0.5, "madds_per_sample": 3000.0, "metric": 0.7}
    atomic_write_json(sweep, {"points": [point]})
    out = CliRunner().invoke(app, ["report", str(run), "--sweep", str(sweep)])
    assert out.exit_code == 0, out.output
    html = (run / "report.html").read_text()
    assert "figures/speed.png" in html and "λ=0.5" in html and "figures/pareto.png" in html
    with pytest.raises(DataError, match="metrics.json is missing"):
        write_run_report(tmp_path)


def test_report_re_evaluates_static_baselines_on_the_runs_eval_data(finished, tmp_path):
    from dynmm.methods.modality_level.report import baseline_points

    result, _ = finished
    static = load_config(
        "configs/mosi/static.yaml",
        [
            f"--output_dir={tmp_path}",
            "--name=mosi_gmu_seed0",
            "--model.fusion=gmu",
            "--train.max_epochs=1",
            "--train.progress_bar=false",
        ],
    )
    run = train_run(static)
    (points,) = baseline_points(result.run_dir, tmp_path)
    assert points["name"] == "gmu" and points["madds"] == run.metrics["madds_per_sample"]
    # re-evaluated on the DynMM run's evaluation rows (held-out test), not the static run's own test split
    heldout = load_dataset("mosi", split_column="split_heldout", stats_split_column="split")["test"]
    reference = evaluate(load_exported(run.run_dir).model, [(heldout.inputs, heldout.target)], TaskSpec("regression"))
    assert points["metric"] == pytest.approx(reference["acc2"])


def test_dynmm_d_soft_gate_runs_every_expert(tmp_path):
    soft = train_run(small_config(tmp_path, "--dynmm.gate.mode=soft", "--dynmm.gate_train.max_epochs=1"))
    metrics = soft.metrics
    assert metrics["madds_per_sample"] == pytest.approx(metrics["gate_madds"] + sum(metrics["expert_madds"].values()))


def test_export_cli_writes_a_verified_artifact_the_runner_runs_alone(finished, tmp_path):
    """README "Deploy": `dynmm export`, then the artifact's own runner with onnxruntime and numpy only."""
    pytest.importorskip("onnxscript")
    import subprocess
    import sys

    import numpy as np

    result, _ = finished
    art = tmp_path / "art"
    out = CliRunner().invoke(app, ["export", str(result.run_dir), "--format", "onnx", "--output", str(art)])
    assert out.exit_code == 0, out.output
    assert "verification on 174 test rows: passed" in " ".join(out.output.split())
    verification = json.loads((art / "verification.json").read_text())
    assert verification["passed"] and verification["batch_1_same_routing"] == 1.0
    inputs = {
        spec["name"]: np.random.default_rng(0).standard_normal((5, *spec["shape"])).astype(np.float32)
        for spec in json.loads((art / "manifest.json").read_text())["inputs"]
    }
    np.savez(tmp_path / "inputs.npz", **inputs)
    blocked = "import sys; sys.modules['dynmm'] = sys.modules['torch'] = None; import runpy; "
    code = blocked + f"sys.argv = ['r', '{art}', '{tmp_path / 'inputs.npz'}', '{tmp_path / 'out.npz'}']; "
    code += f"runpy.run_path('{art / 'dynmm_runner.py'}', run_name='__main__')"
    subprocess.run([sys.executable, "-c", code], check=True)
    with np.load(tmp_path / "out.npz") as got:
        assert got["outputs"].shape[0] == 5 and np.allclose(got["outputs"], got["batched_outputs"], atol=1e-5)
    again = CliRunner().invoke(app, ["export", str(result.run_dir), "--output", str(result.run_dir)])
    assert again.exit_code != 0 and "is not an artifact folder" in str(again.exception)  # never into the run
