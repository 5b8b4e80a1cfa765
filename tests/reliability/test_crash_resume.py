"""A training run killed with SIGKILL and resumed with --resume ends bit-identical to an uninterrupted one (CPU).

The run is a real `dynmm train` subprocess; it is killed right after its first checkpoint appears and again at
a seeded random moment of the resumed run (wherever that falls: loading, mid-epoch, while saving, exporting).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENTRY = "from dynmm.cli import main; main()"
ARGS = [
    "train",
    "configs/mosi/static.yaml",
    "--train.max_epochs=6",
    "--train.progress_bar=false",
    "--model.encoders.default.hidden=[16]",
    "--model.encoders.default.dropout=0.3",  # the resumed epochs must draw the same dropout masks
]


def start(tmp: Path, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", ENTRY, *ARGS, f"--output_dir={tmp}", f"--name={name}", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def finish(process: subprocess.Popen) -> None:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """SIGKILL the process as soon as `ready()`; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.01)
    process.kill()
    raise AssertionError("the run neither checkpointed nor finished in time")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    finish(start(tmp, "whole"))
    return (tmp / "whole" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_twice_and_resumed_is_bit_identical(uninterrupted, tmp_path, seed):
    run = tmp_path / "killed"
    last = run / "checkpoints" / "last.ckpt"
    assert kill_when(start(tmp_path, "killed"), last.is_file), "the first run ended before its first checkpoint"
    assert not (run / "model.safetensors").exists()
    resumed = start(tmp_path, "killed", "--resume")
    delay = random.Random(seed).uniform(0.5, 6.0)
    started = time.monotonic()
    kill_when(resumed, lambda: time.monotonic() - started > delay)
    finish(start(tmp_path, "killed", "--resume"))
    assert (run / "model.safetensors").read_bytes() == uninterrupted
