"""λ points of a DynMM sweep as Ray Tune trials, 2 workers on this machine (optional extra `tune`: skipped where
Ray is not installed, as in CI)."""

import json

import pytest

from dynmm.config import load_config
from dynmm.methods.registry import run_sweep

pytest.importorskip("ray.tune")

from dynmm.engine.tune import tune_sweep  # noqa: E402


def test_two_workers_train_the_points_and_the_sweep_reuses_them(tmp_path):
    config = load_config(
        "configs/mosi/dynmm.yaml",
        [f"--output_dir={tmp_path}", "--name=m", "--train.max_epochs=1", "--dynmm.gate_train.max_epochs=1"],
    )
    summary = tune_sweep(config, [0.0, 0.1, 0.3], tmp_path / "pareto.json", workers=2)
    assert [p["lambda"] for p in summary["points"]] == [0.0, 0.1, 0.3]
    root = tmp_path / "m_sweep"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("lambda_")) == [
        "lambda_0",
        "lambda_0.1",
        "lambda_0.3",
    ]
    assert len(list((root / "experts").iterdir())) == 2  # stage I trained once, by the first point
    trials = [
        json.loads(line) for path in (root / "ray").rglob("result.json") for line in path.read_text().splitlines()
    ]
    assert sorted(t["lambda"] for t in trials) == [0.1, 0.3]  # the others ran as Ray trials, in Ray workers
    written = json.loads((tmp_path / "pareto.json").read_text())
    assert written["points"] == summary["points"]
    # `dynmm sweep` over the same points reuses the trials' runs and gives the same summary.
    again = run_sweep(config, [0.0, 0.1, 0.3], tmp_path / "again.json")
    assert again["points"] == summary["points"]
