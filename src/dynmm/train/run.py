"""One training run, end to end: runs/<name>/ with config, checkpoints, exported model and metrics.

Layout of a run directory:
    config.yaml              the resolved configuration (after overrides)
    checkpoints/last.ckpt    Lightning checkpoint for `--resume`; best.ckpt by the monitored metric
    model.safetensors/.json  the exported model (no pickle), what `dynmm eval` loads
    metrics.json             valid/test metrics, measured MAdds per sample, parameters, train time
    logs/                    Lightning CSV logs

With several processes every rank runs this; only the main process (rank 0) writes (distributed.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from dynmm.config import RunConfig, TrainConfig, dump_config, from_dict, load_yaml, to_dict
from dynmm.cost import count_parameters, measure_madds
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.errors import ConfigError
from dynmm.eval.evaluate import evaluate
from dynmm.eval.metrics import primary_metric
from dynmm.io import atomic_write_json, atomic_write_text
from dynmm.models.static import build_static_model
from dynmm.specs import TaskSpec
from dynmm.train.distributed import init_from_launcher, is_main_process, on_main_process
from dynmm.train.export import export_model
from dynmm.train.fit import check_train_config, fit, last_checkpoint, readable_checkpoint
from dynmm.train.module import SupervisedModule

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def run_directory(config: RunConfig) -> Path:
    return Path(config.output_dir) / config.name


def _prepare_run_dir(config: RunConfig, resume: bool) -> Path:
    """Refuse to overwrite an existing run; on resume, refuse a configuration that differs from the saved one.

    With several processes only the main process looks for an existing run and creates the folder: another rank,
    started later by Lightning's launcher, would find the folder the main process created and refuse it. The other
    ranks create nothing, so the main process's check sees only what earlier runs left (torchrun starts every rank
    at once). The resume checks only read, and every rank makes them, so that all refuse alike."""
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
    part = getattr(config, section)
    return {
        "seed": config.seed,
        "data": {"name": config.data.name, "batch_size": config.data.batch_size, "options": config.data.options},
        "train": dataclasses.asdict(config.train) | {"progress_bar": None},
        section: {k: getattr(part, k) for k in keys},
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


def train_run(config: RunConfig, resume: bool = False) -> RunResult:
    """Train the configured model (or the DynMM recipe), keep the best checkpoint, export and evaluate it.

    Every rank of a multi-process run calls this and gets the same result; only the main process writes."""
    init_from_launcher(config.train)
    methods = [name for name in ("dynmm", "fusion_level", "adamml") if getattr(config, name) is not None]
    if len(methods) > 1:
        raise ConfigError(
            f"a run config has at most one of the sections `dynmm`, `fusion_level`, `adamml`; this one has "
            f"{', '.join(f'`{m}`' for m in methods)}"
        )
    if config.adamml is not None:
        from dynmm.train.adamml_recipe import run_adamml_recipe

        return run_adamml_recipe(config, resume)
    if config.dynmm is not None:
        from dynmm.train.recipe import run_dynmm_recipe

        return run_dynmm_recipe(config, resume)
    if config.fusion_level is not None:
        from dynmm.train.fusion_recipe import run_fusion_level_recipe

        return run_fusion_level_recipe(config, resume)
    check_train_config(config.train)
    run_dir = _prepare_run_dir(config, resume)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    data = MultimodalDataModule(
        config.data.name, config.data.batch_size, config.data.num_workers, config.seed, config.data.options
    )
    data.setup()
    info = data.info
    model = build_static_model(config.model, info.modalities, info.task)
    example_inputs, _ = next(iter(data.test_dataloader()))
    cost = measure_madds(model, example_inputs)
    if is_main_process():
        atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))

    module = SupervisedModule(model, info.task, config.train.lr, config.train.weight_decay, config.train.optimizer)
    monitor, mode = monitor_for(config.train, info.task)
    fitted = fit(module, data, run_dir, config.train, monitor, mode, resume, config.seed)
    trained = module.model

    def evaluate_and_export() -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "valid": evaluate(trained, data.val_dataloader(), info.task),
            "test": evaluate(trained, data.test_dataloader(), info.task),
            "madds_per_sample": cost.total,
            "madds_by_part": _parts(cost.by_module),
            "params": count_parameters(trained),
            "train_time_s": fitted.train_time_s,
            "epochs": fitted.epochs,
            "best_checkpoint": fitted.best_checkpoint.name,
            "monitor": monitor,
        }
        # The export records the data options actually used (e.g. a data seed filled in from the run seed).
        data_config = dataclasses.replace(config.data, options=dict(data.options))
        export_model(run_dir, trained, config.model, data_config, info.modalities, info.task, {"metrics": metrics})
        atomic_write_json(run_dir / METRICS_FILE, metrics)
        return metrics

    return RunResult(run_dir, on_main_process(evaluate_and_export, lambda: read_metrics(run_dir)))


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


def run_or_reuse(config: RunConfig) -> RunResult:
    """Train; resume a run that was interrupted; or reuse one that finished with the same configuration.

    Sweeps, benchmarks and the DynMM recipe's stage I call this, so a restarted job skips finished work.
    """
    run_dir = run_directory(config)
    changed = saved_config_changes(config)
    if changed is None:
        return train_run(config)
    if changed:
        raise ConfigError(f"{run_dir} holds a run with another configuration ({', '.join(changed)}); move it away")
    if (run_dir / METRICS_FILE).is_file():
        return RunResult(run_dir, json.loads((run_dir / METRICS_FILE).read_text()))
    return train_run(config, resume=True)


def _parts(by_module: dict[str, int]) -> dict[str, int]:
    """Keep the model's direct parts (encoders.<modality>, fusion, head) from the per-module counts."""
    parts = {}
    for name, madds in by_module.items():
        pieces = name.split(".")[1:]
        if (pieces[:1] == ["encoders"] and len(pieces) == 2) or pieces in (["fusion"], ["head"]):
            parts[".".join(pieces)] = madds
    return parts
