"""The walk-through in examples/own_data runs as written: your arrays, checked, a static baseline, DynMM with your
own encoder class, a λ sweep and the report (one epoch per stage, on a copy of the folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_data"


@pytest.mark.slow
def test_the_own_data_walkthrough_runs(tmp_path):
    folder = shutil.copytree(EXAMPLE, tmp_path / "own_data")
    env = {"QUICK": "1", "DYNMM": f"{sys.executable} -m dynmm.cli", "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", "walkthrough.sh"], cwd=folder, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = folder / "runs"
    assert (runs / "own_dynmm" / "report.html").is_file()
    metrics = json.loads((runs / "own_static" / "metrics.json").read_text())
    assert metrics["madds_by_part"]["encoders.audio"] > 0  # the user's AudioNet, counted like any encoder
    sweep = json.loads((runs / "own_pareto.json").read_text())
    assert [p["lambda"] for p in sweep["points"]] == [0, 0.3, 1]
    if find_spec("pyarrow") is not None:
        assert (runs / "own_dynmm_parquet" / "metrics.json").is_file()
