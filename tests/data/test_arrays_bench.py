"""`dynmm bench arrays` on a tiny generated folder: it trains through the CLI in a child process, reports that
child's own peak memory, compares memory-mapped and in-memory reads of the same rows, and cleans up."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from dynmm.cli import app
from dynmm.data.arrays_bench import write_folder


def test_the_generated_folder_has_the_asked_size_and_layout(tmp_path):
    written = write_folder(tmp_path / "f", 0.001)
    assert written["bytes"] >= 0.001 * 2**30
    a = np.load(tmp_path / "f" / "a.npy", mmap_mode="r")
    assert a.shape == (written["rows"], 2048) and a.dtype == np.float32
    assert set(np.unique(np.load(tmp_path / "f" / "split.npy"))) <= {0, 1, 2}


def test_bench_arrays_writes_its_json_and_removes_the_files(tmp_path):
    output = tmp_path / "arrays.json"
    folder = tmp_path / "bench"
    args = ["bench", "arrays", "--folder", str(folder), "--gigabytes", "0.002", "--speed-rows", "64"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "32", "--output", str(output)])
    assert result.exit_code == 0, result.output
    results = json.loads(output.read_text())
    assert 0 < results["training"]["peak_rss_bytes"] < 8 * 2**30
    assert results["read_speed"]["lazy_modalities"] == ["a", "b"]  # read from the files, not held in memory
    assert results["read_speed"]["rows_per_s"]["memory_mapped"] > 0
    assert not list(folder.glob("*.npy")) and not (tmp_path / "bench_work").exists()
