"""Run folders: runs/<name>/ with config, checkpoints, exported model and metrics, whichever method trains it.

Layout of a run directory:
    config.yaml              the resolved configuration (after overrides)
    checkpoints/last.ckpt    Lightning checkpoint for `--resume`; best.ckpt by the monitored metric
    model.safetensors/.json  the exported model (no pickle), what `dynmm eval` loads
    metrics.json             valid/test metrics, measured MAdds per sample, parameters, train time
    logs/                    Lightning CSV logs

With several processes every rank runs a method's training; only the main process (rank 0) writes
(distributed.py). Which method trains a config is the method registry's business (dynmm.methods); this module
only creates, checks and reuses folders.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynmm.config import RunConfig, TrainConfig, from_dict, load_yaml, to_dict
from dynmm.engine.distributed import is_main_process
from dynmm.engine.fit import last_checkpoint, readable_checkpoint
from dynmm.errors import ConfigError
from dynmm.io import atomic_write_json
from dynmm.report.metrics import primary_metric
from dynmm.specs import TaskSpec

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def run_directory(config: RunConfig) -> Path:
    return Path(config.output_dir) / config.name


def check_run_dir(config: RunConfig, resume: bool) -> Path:
    """Refuse to overwrite an existing run; on resume, refuse a configuration that differs from the saved one.

    Only reads: a method calls it first, then checks its data and model options (loading the data), and only
    then creates the folder with `prepare_run_dir`, so that a refused start leaves nothing behind (a folder left
    by a refused start would make the corrected command "already exists" and its --resume "different").

    With several processes only the main process looks for an existing run (it alone creates the folder: another
    rank, started later by Lightning's launcher, would find the folder the main process created and refuse it;
    torchrun starts every rank at once). The resume checks only read, and every rank makes them, so that all
    refuse alike."""
    run_dir = run_directory(config)
    saved = run_dir / CONFIG_FILE
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise ConfigError(f"nothing to resume in {run_dir}: {CONFIG_FILE} is missing")
        previous = to_dict(from_dict(RunConfig, load_yaml(saved)))
        changed = _changed_keys(previous, to_dict(config), allowed={"train.max_epochs", "train.progress_bar"})
        if changed:
            raise ConfigError(f"--resume with a different configuration ({', '.join(changed)}); start a new run")
        if last_checkpoint(run_dir).is_file():  # refused before config.yaml is rewritten (e.g. a new max_epochs)
            readable_checkpoint(last_checkpoint(run_dir))
    elif is_main_process() and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"run directory {run_dir} already exists; continue it with --resume or choose another --name")
    return run_dir


def prepare_run_dir(config: RunConfig, resume: bool) -> Path:
    """`check_run_dir`, then create the folder (main process only). Call it once every check that can refuse
    the configuration or its data has passed: nothing is created before."""
    run_dir = check_run_dir(config, resume)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _changed_keys(old: dict[str, Any], new: dict[str, Any], allowed: set[str], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, allowed, f"{path}.")
        elif a != b and path not in allowed:
            changed.append(path)
    return changed


def stage_description(config: RunConfig, section: str, keys: Sequence[str]) -> dict[str, Any]:
    """Everything that shapes a shared stage's weights: seed, data, `train` and the named fields of the method's
    config section (e.g. "fusion_level": layout, ops, ...); what `shared_stage_dir` records and checks."""
    part = config.section(section)
    assert part is not None, section
    return {
        "seed": config.seed,
        "data": {"name": config.data.name, "batch_size": config.data.batch_size, "options": config.data.options},
        "train": to_dict(config.train) | {"progress_bar": None},
        section: {k: v for k, v in part.model_dump().items() if k in keys},
    }


def shared_stage_dir(folder: Path, description: dict[str, Any], record: str, where: str, what: str) -> Path:
    """A stage folder shared by several runs (a λ sweep trains the stage once), claimed for `description`
    (everything that shapes the stage's weights) or checked against the one it holds in `folder/record`.

    `where` (the config key, e.g. "fusion_level.supernet_dir") and `what` (e.g. "supernet") word the error.
    """
    wanted = json.loads(json.dumps(description))  # as it reads back from disk
    path = folder / record
    if path.is_file():
        held = json.loads(path.read_text())
        if held != wanted:
            changed = [key for key in wanted if held.get(key) != wanted[key]]
            raise ConfigError(
                f"{where} {folder} holds a {what} trained with other settings ({', '.join(changed)}); "
                "point this run elsewhere"
            )
    elif is_main_process():  # the other ranks check what it holds when they come after the main process
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, wanted)
    return folder


def monitor_for(train: TrainConfig, task: TaskSpec, default: tuple[str, str] | None = None) -> tuple[str, str]:
    """(metric, min|max) that picks the best checkpoint: the configured one, else `default`, else the task's."""
    name, mode = primary_metric(task)
    monitor, mode = default or (f"val/{name}", mode)
    monitor = train.monitor or monitor
    if train.monitor_mode is not None:
        mode = train.monitor_mode
    elif train.monitor:
        mode = "min" if monitor.rsplit("/", 1)[-1] in {"loss", "mae"} else "max"
    if mode not in {"min", "max"}:
        raise ConfigError(f"train.monitor_mode must be 'min' or 'max', got {mode!r}")
    return monitor, mode


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """What a finished run (or the main process of this one) wrote to metrics.json."""
    return dict(json.loads((run_dir / METRICS_FILE).read_text()))


def saved_config_changes(config: RunConfig) -> list[str] | None:
    """Keys in which `config` differs from the one saved in its run folder (None: nothing saved there).

    A run copied or moved to another folder is still the same run, and the progress bar shapes nothing."""
    saved = run_directory(config) / CONFIG_FILE
    if not saved.is_file():
        return None
    previous = to_dict(from_dict(RunConfig, load_yaml(saved)))
    return _changed_keys(previous, to_dict(config), allowed={"train.progress_bar", "output_dir"})


TrainRun = Callable[[RunConfig, bool], RunResult]
"""Trains a run config into its folder (resume: continue from its last checkpoint); a method's `train`."""


def run_or_reuse(config: RunConfig, train: TrainRun) -> RunResult:
    """Train; resume a run that was interrupted; or reuse one that finished with the same configuration.

    Sweeps, benchmarks and recipes that train other runs (DynMM's experts, MFAS's backbones) call this, so a
    restarted job skips finished work. `train` is the method that trains `config` (`dynmm.methods.train_run`
    picks it from the config).
    """
    run_dir = run_directory(config)
    changed = saved_config_changes(config)
    if changed is None:
        return train(config, False)
    if changed:
        raise ConfigError(f"{run_dir} holds a run with another configuration ({', '.join(changed)}); move it away")
    if (run_dir / METRICS_FILE).is_file():
        return RunResult(run_dir, read_metrics(run_dir))
    return train(config, True)
