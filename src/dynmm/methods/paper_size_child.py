"""One setup of `dynmm bench paper-size`, run in a process of its own: `python -m dynmm.methods.paper_size_child
SPEC.json RESULT.json`.

Why a process per setup: the peak resident memory a process reports (`ru_maxrss`) is its highest ever, so a
setup measured after another would report the other's peak. The spec names the config, the data options of the
generated files, the step cap and the device; the result holds times, rows and memory as measured here.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from dynmm.config import load_config
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.engine.fit import fit
from dynmm.engine.timing import synchronize
from dynmm.io import atomic_write_json
from dynmm.methods.paper_size_stage import first_stage

MIB = 2**20


def _status_kib(field: str) -> int | None:
    """A `kB` field of /proc/self/status (Linux), in KiB; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


def current_rss_bytes() -> int:
    """This process's resident memory now (VmRSS; elsewhere its peak so far, the best available)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's highest resident memory so far: VmHWM on Linux, else ru_maxrss.

    Why not ru_maxrss on Linux: it survives exec, so a child started by `subprocess` (vfork + exec) reports at
    least the resident memory its parent had then; VmHWM belongs to the child's own address space."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _StepsDone(Exception):
    """Raised after the last timed step so that the epoch's validation pass (not part of training
    throughput, and on NYUv2 at 480x640 on a CPU longer than the capped steps) does not run."""


class StepTimer(pl.Callback):
    """Records when each training step ends, its rows and the resident memory then; stops after `limit` steps
    (or at the epoch's last step)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.started = 0.0
        self.ends: list[float] = []
        self.rows: list[int] = []
        self.rss: list[int] = []
        self.epoch_steps = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_steps = int(trainer.num_training_batches)
        self.started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        synchronize(pl_module.device)
        self.ends.append(time.perf_counter())
        self.rows.append(int(batch[1].shape[0]))
        self.rss.append(current_rss_bytes())
        if len(self.ends) >= min(self.limit or self.epoch_steps, self.epoch_steps):
            raise _StepsDone


def _throughput(timer: StepTimer) -> dict[str, Any]:
    """Rows per second over the steps after the first (the first pays for lazy initialisation and warm-up);
    over the only step when there is one. Times include reading each batch."""
    if len(timer.ends) > 1:
        seconds, rows, counted = timer.ends[-1] - timer.ends[0], sum(timer.rows[1:]), len(timer.ends) - 1
    else:
        seconds, rows, counted = timer.ends[0] - timer.started, sum(timer.rows), 1
    return {
        "timed_steps": counted,
        "timed_rows": rows,
        "timed_s": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 2) if seconds > 0 else None,
        "first_step_s": round(timer.ends[0] - timer.started, 3),
    }


def run_setup(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the generated data, build the first stage and train it for `spec["max_steps"]` steps or one epoch."""
    started = time.perf_counter()
    rss_before = current_rss_bytes()
    config = load_config(spec["config"], [])
    options = {**config.data.options, **spec["data_options"]}
    config = config.model_copy(update={"data": config.data.model_copy(update={"options": options})})
    data = MultimodalDataModule(
        config.data.name, config.data.batch_size, config.data.num_workers, config.seed, config.data.options
    )
    data.setup()
    loaded = time.perf_counter()
    rss_loaded, peak_loading = current_rss_bytes(), peak_rss_bytes()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    max_steps = spec["max_steps"]
    overrides = {
        "max_epochs": 1,
        "limit_train_batches": float(max_steps) if max_steps and max_steps > 1 else None,
        "early_stopping_patience": None,
        "progress_bar": False,
        "accelerator": "gpu" if spec["device"] == "cuda" else "cpu",
        "devices": 1,
    }
    stage = first_stage(config, data, overrides)
    timer = StepTimer(max_steps)
    if spec["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="paper_size_", dir=spec.get("scratch")) as scratch:
        try:
            fit(stage.module, data, Path(scratch), stage.train, *stage.monitor, False, config.seed, [timer],
                stage.skips_parameters)  # fmt: skip
        except _StepsDone:
            pass
    if not timer.ends:
        raise RuntimeError(f"{spec['config']}: no training step ran")
    train_rows = len(data.splits["train"])
    epoch_steps = math.ceil(train_rows / config.data.batch_size)
    return {
        "stage": stage.description,
        "batch_size": config.data.batch_size,
        "num_workers": config.data.num_workers,
        "train_rows": train_rows,
        "steps": len(timer.ends),
        "epoch_steps": epoch_steps,
        "epoch_fraction": round(len(timer.ends) / epoch_steps, 4),
        "torch_threads": torch.get_num_threads(),
        "load_s": round(loaded - started, 3),
        "wall_s": round(time.perf_counter() - started, 3),
        **_throughput(timer),
        "rss_before_mib": round(rss_before / MIB, 1),
        "rss_after_load_mib": round(rss_loaded / MIB, 1),
        "peak_rss_while_loading_mib": round(peak_loading / MIB, 1),
        "rss_after_first_step_mib": round(timer.rss[0] / MIB, 1),
        "rss_after_last_step_mib": round(timer.rss[-1] / MIB, 1),
        "rss_max_at_step_end_mib": round(max(timer.rss) / MIB, 1),
        "peak_rss_mib": round(peak_rss_bytes() / MIB, 1),
        "cuda_peak_mib": round(torch.cuda.max_memory_allocated() / MIB, 1) if spec["device"] == "cuda" else None,
    }


def main(argv: list[str]) -> None:
    spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    atomic_write_json(result_path, run_setup(spec))


if __name__ == "__main__":
    main(sys.argv[1:])
