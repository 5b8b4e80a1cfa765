"""The `dynmm` entry point: user errors exit 2 with one line, never a traceback; data info lists the data."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dynmm.cli import app

ENTRY = "from dynmm.cli import main; main()"


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, cwd=cwd)


def test_unknown_config_key_exits_2_with_one_clear_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("name: x\ntrain:\n  max_epoch: 3\n")
    result = run_cli("train", str(config), f"--output_dir={tmp_path}")
    assert result.returncode == 2
    out = " ".join((result.stdout + result.stderr).split())
    assert "error: unknown config key 'train.max_epoch' (did you mean 'max_epochs'?)" in out
    assert "Traceback" not in out
    assert not (tmp_path / "x").exists()  # nothing written for a config that does not load


def test_missing_run_directory_for_eval(tmp_path):
    result = run_cli("eval", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "model.json is missing" in " ".join(result.stdout.split())


def test_data_info_lists_both_data_sets_with_shapes():
    result = CliRunner().invoke(app, ["data", "info"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "mosi" in result.output and "avdigits" in result.output
    assert "1245" in result.output.replace(",", "")  # MOSI train utterances
    assert "(1, 40, 101)" in result.output  # AV digits log-mel


def test_demo_runs_the_quick_baselines_on_both_data_sets(monkeypatch, tmp_path):
    import dynmm.methods.static.baselines as baselines

    calls = []

    def fake_run(spec, datasets, seeds, quick, output, runs_root):
        calls.append((spec, datasets, seeds, quick, output, runs_root))
        return {"seeds": seeds, "datasets": {}}

    monkeypatch.setattr(baselines, "run_baselines", fake_run)
    import dynmm.demo as demo

    def fake_dynmm(root, baselines):
        calls.append(("dynmm", root))
        return [root / "report.html"]

    monkeypatch.setattr(demo, "run_demo_dynmm", fake_dynmm)
    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path / "demo.json")])
    assert result.exit_code == 0, result.output
    (spec, datasets, seeds, quick, output, runs_root), dynmm_call = calls
    assert dynmm_call == ("dynmm", tmp_path) and "DynMM report" in result.output
    assert datasets == ["mosi", "avdigits"] and seeds == 1 and quick is True
    assert all(isinstance(p, Path) for p in (spec, output, runs_root))
    assert spec.is_file()
