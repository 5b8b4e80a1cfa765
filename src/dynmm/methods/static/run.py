"""A static fusion run: one model (encoders -> fusion -> head) trained, exported and evaluated in runs/<name>/.

The same run trains each expert of modality-level DynMM (stage I) and each backbone of an MFAS search.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from dynmm.config import RunConfig, dump_config
from dynmm.cost import count_parameters, measure_madds
from dynmm.data.datamodule import MultimodalDataModule
from dynmm.engine.distributed import is_main_process, on_main_process
from dynmm.engine.export import export_model
from dynmm.engine.fit import check_train_config, fit
from dynmm.engine.module import SupervisedModule
from dynmm.engine.run_folder import (
    CONFIG_FILE,
    METRICS_FILE,
    RunResult,
    check_run_dir,
    monitor_for,
    prepare_run_dir,
    read_metrics,
    run_or_reuse,
)
from dynmm.io import atomic_write_json, atomic_write_text
from dynmm.nn.static_model import build_static_model
from dynmm.report.evaluate import evaluate


def train_static_run(config: RunConfig, resume: bool = False) -> RunResult:
    """Train the configured static model, keep the best checkpoint, export and evaluate it.

    Every rank of a multi-process run calls this and gets the same result; only the main process writes."""
    check_train_config(config.train)
    check_run_dir(config, resume)
    # Everything that can refuse the configuration (data options, loading, model, monitor) runs before the run
    # folder is created: a refused start leaves no folder that the corrected command would find.
    pl.seed_everything(config.seed, workers=True, verbose=False)
    data = MultimodalDataModule(
        config.data.name, config.data.batch_size, config.data.num_workers, config.seed, config.data.options
    )
    data.setup()
    info = data.info
    model = build_static_model(config.model, info.modalities, info.task)
    example_inputs, _ = next(iter(data.test_dataloader()))
    cost = measure_madds(model, example_inputs)
    module = SupervisedModule(model, info.task, config.train.lr, config.train.weight_decay, config.train.optimizer)
    monitor, mode = monitor_for(config.train, info.task)
    run_dir = prepare_run_dir(config, resume)
    if is_main_process():
        atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))

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
        data_config = config.data.model_copy(update={"options": dict(data.options)})
        export_model(run_dir, trained, config.model, data_config, info.modalities, info.task, {"metrics": metrics})
        atomic_write_json(run_dir / METRICS_FILE, metrics)
        return metrics

    return RunResult(run_dir, on_main_process(evaluate_and_export, lambda: read_metrics(run_dir)))


def static_run_or_reuse(config: RunConfig) -> RunResult:
    """Train a static run, resume it, or reuse it when it finished with the same configuration."""
    return run_or_reuse(config, train_static_run)


def _parts(by_module: dict[str, int]) -> dict[str, int]:
    """Keep the model's direct parts (encoders.<modality>, fusion, head) from the per-module counts."""
    parts = {}
    for name, madds in by_module.items():
        pieces = name.split(".")[1:]
        if (pieces[:1] == ["encoders"] and len(pieces) == 2) or pieces in (["fusion"], ["head"]):
            parts[".".join(pieces)] = madds
    return parts
