"""`dynmm demo` after the quick baselines: a short DynMM recipe on each bundled data set, ending in reports.

Each demo run is an ordinary DynMM run (reused when it already finished), timed with the speed benchmark on
its own test rows, and rendered to runs/demo/<name>/report.html.
"""

from __future__ import annotations

from pathlib import Path

from dynmm.config import load_config
from dynmm.io import atomic_write_json
from dynmm.methods.modality_level.report import SPEED_FILE, write_run_report
from dynmm.methods.modality_level.speed import run_trained_benchmark
from dynmm.methods.registry import run_or_reuse

QUICK_AVDIGITS = [
    "--data.options.train_size=4000",
    "--data.options.test_size=2000",
    "--train.max_epochs=3",
    "--dynmm.gate_train.max_epochs=3",
]
DEMO_RUNS: dict[str, tuple[str, list[str]]] = {
    "mosi_dynmm": ("configs/mosi/dynmm.yaml", []),
    "avdigits_dynmm": ("configs/avdigits/dynmm.yaml", QUICK_AVDIGITS),
}


def run_demo_dynmm(runs_root: Path, repeats: int = 5, baselines: Path | None = None) -> list[Path]:
    """Train (or reuse) each demo DynMM run, time it, and write its report (with the static baselines trained
    under `baselines`, if given); return the report paths."""
    reports = []
    for name, (config_path, overrides) in DEMO_RUNS.items():
        config = load_config(config_path, [*overrides, f"--name={name}", f"--output_dir={runs_root}"])
        run_dir = run_or_reuse(config).run_dir
        speed = run_trained_benchmark(run_dir, [1, 16, 64, 256], [0.25, 0.5, 0.75], repeats)
        atomic_write_json(run_dir / SPEED_FILE, speed)
        reports.append(write_run_report(run_dir, baselines=baselines))
    return reports
