"""`dynmm bench paper-size`: each paper setup trained on generated data of the real sizes and shapes, one epoch
(or a capped number of steps) of its first stage, recording throughput, peak memory and whether its loader
streams the files or reads them whole.

Why: the loaders are tested on small fixture files; whether a setup fits in memory and how fast it trains at the
papers' sizes is only known by running it there. Data are random (`paper_size_data`), so accuracy means nothing
here. Each setup runs in its own process (`paper_size_child`), so that its peak memory is its own.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dynmm.data.mmimdb import SCALE_ROWS
from dynmm.engine.devices import torch_device
from dynmm.errors import ConfigError
from dynmm.methods.paper_costs import SETUPS
from dynmm.methods.paper_size_data import GENERATORS, Generated, generate

SKIPPED = {
    "mosi_affect": "the same networks as mosei on CMU-MOSI's smaller pickle: mosei covers it",
    "avmnist_mfas": (
        "an MFAS search, not one training stage; its backbones train as static runs on the AV-MNIST files that "
        "avmnist measures"
    ),
    "kinetics_sounds_adamml": (
        "its data are the user's own arrays (data.name: arrays), not a paper file format; float32 arrays of "
        "Kinetics-Sounds' size (5 segments of 224x224 RGB and 256x256 spectrograms per clip) exceed this "
        "machine's free disk, so no generator is written yet"
    ),
}
"""Setups of paper_costs.SETUPS that are left out on purpose, with the reason."""
STREAM_SHARE = 0.5
"""A loader streams when the data grow the process's memory by less than this share of the files' size (what
it holds besides the rows a batch reads: labels, small modalities); one that reads the files whole grows by
their size or more."""
LOADER_NOTES = {
    "mmimdb": (
        "features are read from the HDF5 file per batch (H5Rows); only the genres are held in memory, and the "
        f"first {SCALE_ROWS:,} train rows are read once (as float64) to measure each modality's scale"
    ),
    "affect": (
        "a pickle cannot be read in parts: unpickling materialises every array of the file, and the loader then "
        "keeps float32 copies of all splits, so the whole file is in memory by design of the format"
    ),
    "nyuv2": "frames are read one by one from the .mat (HDF5) when a batch asks for them (NYUv2Rows)",
    "avmnist": (
        "the audio is read per batch from the memory-mapped .npy (NpyRows); the image files (N, 784) are read "
        "whole into float32 tensors by design (every model and the gate read them)"
    ),
    "avclips": "no files: the clips are generated in memory by the loader, so the whole data set is held in RAM",
}


def _machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _streams(made: Generated, measured: dict[str, Any]) -> dict[str, Any]:
    """Whether loading the data grew the process's memory by less than STREAM_SHARE of the files' size, counting
    the peak while loading (which catches a file read whole, converted, then let go). Growth over the steps
    after the first is reported too; it is not part of the verdict, because at small sizes the allocator's own
    growth between steps outweighs any data, and a capped run reads only a small part of the files."""
    note = LOADER_NOTES.get(made.dataset, "")
    steps = round(measured["rss_max_at_step_end_mib"] - measured["rss_after_first_step_mib"], 1)
    if made.bytes == 0:
        return {"verdict": None, "load_growth_mib": None, "steps_growth_mib": steps, "explanation": note}
    load = max(measured["rss_after_load_mib"], measured["peak_rss_while_loading_mib"]) - measured["rss_before_mib"]
    files = made.bytes / 2**20
    verdict = load < STREAM_SHARE * files
    what = "streams" if verdict else "reads the files whole"
    explanation = (
        f"{what}: loading grew resident memory by up to {load:,.0f} MiB, {load / files:.1%} of the {files:,.0f} "
        f"MiB of files (the steps after the first: {steps:+,.0f} MiB); {note}"
    )
    return {
        "verdict": verdict,
        "load_growth_mib": round(load, 1),
        "steps_growth_mib": steps,
        "explanation": explanation,
    }


def _run_child(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run one setup in a fresh Python process; its stderr goes to `folder/child.log`."""
    spec_path, result_path, log = folder / "spec.json", folder / "result.json", folder / "child.log"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    with log.open("w") as stderr:
        command = [sys.executable, "-m", "dynmm.methods.paper_size_child", str(spec_path), str(result_path)]
        code = subprocess.run(command, stdout=stderr, stderr=stderr, check=False).returncode
    if code != 0 or not result_path.is_file():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
        return {"error": f"the run exited with status {code}: {tail} (full log: {log})"}
    return dict(json.loads(result_path.read_text()))


def _setup_result(name: str, workdir: Path, max_steps: int | None, device: str, rows_fraction: float) -> dict[str, Any]:
    config = SETUPS[name][0]
    if name in SKIPPED or name not in GENERATORS:
        reason = SKIPPED.get(name, "no generator of paper-size data for this setup yet")
        return {"setup": name, "config": config, "skipped": reason}
    started = time.perf_counter()
    made = generate(name, workdir, rows_fraction)
    generate_s = time.perf_counter() - started
    spec = {
        "config": config,
        "data_options": made.options,
        "max_steps": max_steps,
        "device": device,
        "scratch": str(workdir),
    }
    measured = _run_child(spec, workdir / name)
    result: dict[str, Any] = {
        "setup": name,
        "config": config,
        "dataset": made.dataset,
        "device": device,
        "max_steps": max_steps,
        "rows": made.rows,
        "shapes": made.shapes,
        "files": [str(Path(f).relative_to(workdir)) for f in made.files],
        "files_bytes": made.bytes,
        "rows_fraction": rows_fraction,
        "generate_or_reuse_s": round(generate_s, 2),
        **measured,
    }
    if "error" not in measured:
        result["streams"] = _streams(made, measured)
    return result


def parse_steps(text: str | None) -> tuple[int | None, dict[str, int]]:
    """`--max-steps` as "N" (every setup), "SETUP=N,..." or both ("50,nyuv2=3"); empty: one whole epoch."""
    default: int | None = None
    by_setup: dict[str, int] = {}
    for item in filter(None, (text or "").split(",")):
        name, _, value = item.rpartition("=")
        try:
            steps = int(value)
        except ValueError:
            raise ConfigError(f"--max-steps: {item!r} is not N or SETUP=N (e.g. 50,nyuv2=3)") from None
        if name:
            by_setup[name.strip()] = steps
        else:
            default = steps
    return default, by_setup


def paper_size(
    setups: list[str] | None = None,
    max_steps: int | None = None,
    device: str = "cpu",
    workdir: Path = Path("runs/paper_size_data"),
    rows_fraction: float = 1.0,
    steps_by_setup: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Generate (or reuse) each setup's data under `workdir` and train its first stage for `max_steps` steps
    (`steps_by_setup` overrides it per setup; None: one epoch); every setup of paper_costs.SETUPS by default."""
    chosen = setups or list(SETUPS)
    by_setup = steps_by_setup or {}
    unknown = [s for s in [*chosen, *by_setup] if s not in SETUPS]
    if unknown:
        raise ConfigError(f"unknown paper setup(s) {unknown}; choose from {sorted(SETUPS)}")
    if any(n is not None and n < 1 for n in [max_steps, *by_setup.values()]):
        raise ConfigError(f"--max-steps must be >= 1, got {max_steps} {by_setup or ''}".strip())
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}")
    torch_device(device, "--device")
    workdir.mkdir(parents=True, exist_ok=True)
    results = [_setup_result(name, workdir, by_setup.get(name, max_steps), device, rows_fraction) for name in chosen]
    return {
        "machine": _machine(),
        "max_steps": max_steps,
        "max_steps_by_setup": by_setup,
        "stream_share": STREAM_SHARE,
        "note": (
            "random values of the real sizes and shapes; one epoch of each setup's first training stage, or "
            "max_steps steps of it; rows_per_s counts the steps after the first, including reading each batch"
        ),
        "setups": results,
    }
