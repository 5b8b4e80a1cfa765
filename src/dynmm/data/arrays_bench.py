"""Does a folder of multi-GB `.npy` files train without being loaded into memory, and at what read speed?

`dynmm bench arrays` writes a generated folder (two float32 modalities, a target and a split array) of a given
total size, then
- trains one epoch of static late fusion on it with `dynmm train` in a child process and records that process's
  peak resident memory (VmHWM: what the kernel counted for it, file pages it mapped included);
- reads the same training rows through the training DataLoader (same shuffling sampler, batch size and collate)
  twice: from the memory-mapped files, and from tensors holding those rows in memory; rows per second of each.
The page cache is warm in both reads (the folder was just written): this measures what dynmm adds on top of the
operating system, not the disk.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from dynmm.errors import ConfigError

FEATURES = {"a": 2048, "b": 1024}
"""Per-row float32 features of the two generated modalities (12 KiB a row)."""
CHUNK_ROWS = 16384


def write_folder(folder: Path, gigabytes: float, seed: int = 0) -> dict[str, Any]:
    """A folder of .npy files totalling `gigabytes` (GiB), written chunk by chunk (never whole in memory)."""
    row_bytes = 4 * sum(FEATURES.values()) + 8 + 1
    rows = int(gigabytes * 2**30 // row_bytes) + 1
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, rows)
    np.save(folder / "target.npy", target)
    np.save(folder / "split.npy", rng.choice(np.array([0, 1, 2], dtype=np.int8), rows, p=[0.9, 0.05, 0.05]))
    for name, width in FEATURES.items():
        out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=(rows, width))
        for start in range(0, rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, rows)
            chunk = rng.standard_normal((stop - start, width), dtype=np.float32)
            chunk[:, 0] += target[start:stop] - 0.5  # something to learn
            out[start:stop] = chunk
        out.flush()
        del out
    files = sorted(folder.glob("*.npy"))
    return {"rows": rows, "bytes": sum(p.stat().st_size for p in files), "files": [p.name for p in files]}


def _config(folder: Path, runs: Path, batch_size: int) -> dict[str, Any]:
    return {
        "name": "arrays_memory",
        "output_dir": str(runs),
        "data": {"name": "arrays", "batch_size": batch_size, "options": {"path": str(folder)}},
        "model": {"fusion": "late_mean", "embed_dim": 16, "encoders": {"default": {"kind": "mlp", "hidden": []}}},
        "train": {"max_epochs": 1, "lr": 1e-3, "progress_bar": False},
    }


CHILD = """
import sys
from dynmm.cli import main
sys.argv = ["dynmm", "train", sys.argv[1]]
try:
    main()
finally:
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print("VmHWM_KB=" + status["VmHWM"].split()[0], flush=True)
"""
"""`dynmm train` that reports its own peak resident memory when it ends. VmHWM of /proc/self/status is the peak
of this program's own address space; `wait4`'s ru_maxrss is not, since Linux carries over into it the resident
size of the forked copy of the parent (here: the process that just wrote gigabytes of arrays)."""


def train_peak_rss(folder: Path, work: Path, batch_size: int) -> dict[str, Any]:
    """One epoch of `dynmm train` in a child process: its peak resident memory, time and test metrics."""
    shutil.rmtree(work, ignore_errors=True)  # this benchmark's own scratch folder: a fresh run every time
    work.mkdir(parents=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(_config(folder, work / "runs", batch_size)))
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, str(config)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peaks = [line for line in child.stdout.splitlines() if line.startswith("VmHWM_KB=")]
    if child.returncode != 0 or not peaks:
        raise ConfigError(
            f"the training child failed (exit {child.returncode}): {(child.stdout + child.stderr)[-2000:]}"
        )
    metrics = yaml.safe_load((work / "runs" / "arrays_memory" / "metrics.json").read_text())
    return {
        "peak_rss_bytes": int(peaks[-1].removeprefix("VmHWM_KB=")) * 1024,
        "wall_s": round(seconds, 2),
        "train_time_s": metrics["train_time_s"],
        "test": metrics["test"],
    }


def _rows_per_second(loader: Any, rows: int) -> float:
    start = time.perf_counter()
    seen = sum(int(target.shape[0]) for _, target in loader)
    assert seen == rows, (seen, rows)
    return rows / (time.perf_counter() - start)


def read_speed(folder: Path, rows: int, batch_size: int, repeats: int = 3) -> dict[str, Any]:
    """Rows per second of the training DataLoader over `rows` training rows: memory-mapped vs held in memory."""
    from dynmm.data.base import MultimodalDataset
    from dynmm.data.datamodule import MultimodalDataModule
    from dynmm.data.lazy import LazyRows, materialize

    data = MultimodalDataModule("arrays", batch_size, 0, 0, {"path": str(folder)})
    data.setup()
    train = data.splits["train"]
    if rows > len(train):
        raise ConfigError(f"--speed-rows {rows} exceeds the {len(train)} training rows")
    lazy = MultimodalDataset(
        {k: v.head(rows) if isinstance(v, LazyRows) else v[:rows] for k, v in train.inputs.items()},
        train.target[:rows],
    )
    held = MultimodalDataset({k: materialize(v) for k, v in lazy.inputs.items()}, lazy.target)
    timings: dict[str, list[float]] = {"memory_mapped": [], "in_memory": []}
    for _ in range(repeats):  # alternate, so that neither always runs on a warmer machine
        for label, dataset in (("memory_mapped", lazy), ("in_memory", held)):
            data.splits["train"] = dataset
            timings[label].append(_rows_per_second(data.train_dataloader(), rows))
    best = {label: max(values) for label, values in timings.items()}
    return {
        "rows": rows,
        "batch_size": batch_size,
        "lazy_modalities": sorted(k for k, v in lazy.inputs.items() if not isinstance(v, torch.Tensor)),
        "rows_per_s": {label: round(v, 1) for label, v in best.items()},
        "rows_per_s_all": {label: [round(v, 1) for v in values] for label, values in timings.items()},
        "ratio": round(best["memory_mapped"] / best["in_memory"], 3),
    }


def run_arrays_benchmark(
    folder: Path, gigabytes: float, batch_size: int, speed_rows: int, keep: bool = False
) -> dict[str, Any]:
    """Write the folder (unless it holds one already), train on it, time its reads; the JSON results."""
    written = write_folder(folder, gigabytes) if not (folder / "a.npy").is_file() else None
    sizes = {p.name: p.stat().st_size for p in sorted(folder.glob("*.npy"))}
    results = {
        "environment": {"torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads()},
        "folder": {"bytes": sum(sizes.values()), "files": sizes, "written_now": written is not None},
        "training": train_peak_rss(folder, folder.parent / f"{folder.name}_work", batch_size),
        "read_speed": read_speed(folder, speed_rows, batch_size),
    }
    results["targets"] = {
        "peak_rss_under_1_5_gib": results["training"]["peak_rss_bytes"] < 1.5 * 2**30,
        "read_speed_at_least_0_8": results["read_speed"]["ratio"] >= 0.8,
    }
    if not keep:
        for path in folder.glob("*.npy"):
            path.unlink()
        shutil.rmtree(folder.parent / f"{folder.name}_work", ignore_errors=True)
    return results
