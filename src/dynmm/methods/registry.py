"""Dispatch through the method registry (`dynmm.methods.METHODS`): `dynmm train / eval / sweep / report`, and
loading any method's exported model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynmm.config import RunConfig
from dynmm.engine.distributed import init_from_launcher
from dynmm.engine.export import Builder, ExportedModel, exported_model_type, load_export
from dynmm.engine.run_folder import RunResult
from dynmm.engine.run_folder import run_or_reuse as reuse_or_train
from dynmm.engine.sweep import SUMMARY_FILE, run_seeds, seed_config, sweep_root, sweep_values
from dynmm.engine.sweep import run_sweep as sweep_loop
from dynmm.errors import ConfigError, DataError
from dynmm.methods import METHODS
from dynmm.methods.base import Method


def method_named(name: str) -> Method:
    for method in METHODS:
        if method.name == name:
            return method
    raise ConfigError(f"unknown method {name!r}; choose from {[m.name for m in METHODS]}")


def method_for(config: RunConfig) -> Method:
    """The method `dynmm train` runs for `config`: the one whose section it holds, or the static model."""
    chosen = [m for m in METHODS if m.trains and m.section is not None and config.section(m.section) is not None]
    if len(chosen) > 1:
        names = ", ".join(f"`{m.section}`" for m in chosen)
        trainable = ", ".join(f"`{m.section}`" for m in METHODS if m.trains and m.section)
        raise ConfigError(f"a run config has at most one of the sections {trainable}; this one has {names}")
    return chosen[0] if chosen else method_named("static")


def train_run(config: RunConfig, resume: bool = False) -> RunResult:
    """Train the configured method into runs/<name>/, keep the best checkpoint, export and evaluate it.

    Every rank of a multi-process run calls this and gets the same result; only the main process writes."""
    init_from_launcher(config.train)
    return method_for(config).train(config, resume)


def run_or_reuse(config: RunConfig) -> RunResult:
    """Train; resume a run that was interrupted; or reuse one that finished with the same configuration."""
    return reuse_or_train(config, train_run)


def _builders() -> dict[str, Builder]:
    return {model_type: build for method in METHODS for model_type, build in method.builders().items()}


def load_exported(directory: str | Path) -> ExportedModel:
    """Rebuild any method's exported model (model.json + model.safetensors) in `directory`."""
    return load_export(directory, _builders())


def method_for_model(model_type: str) -> Method:
    for method in METHODS:
        if model_type in method.builders():
            return method
    raise DataError(f"no method rebuilds models of type {model_type!r}")


def method_for_run(run_dir: Path) -> Method:
    """The method whose finished run is in `run_dir` (for `dynmm report`)."""
    model_type = exported_model_type(run_dir)
    for method in METHODS:
        if method.owns_run(run_dir, model_type):
            return method
    # Anything else is taken for an unfinished DynMM run: its report names the file that is missing.
    return method_named("modality_level")


def sweep_method(config: RunConfig) -> Method:
    """The method whose λ `config` sweeps, after its own checks; refuses a config whose method has no λ."""
    method = method_for(config)
    if method.shared_stage is None:
        sections = [f"`{m.section}`" for m in METHODS if m.shared_stage is not None]
        names = f"{', '.join(sections[:-1])} or {sections[-1]}" if len(sections) > 1 else sections[0]
        raise ConfigError(f"dynmm sweep needs a config with a {names} section (e.g. configs/mosi/dynmm.yaml)")
    method.check_sweep(config)
    return method


def point_config(config: RunConfig, root: Path, resource_weight: float) -> RunConfig:
    """The run of one λ of `config`'s method, pointed at the sweep's shared first stage under `root`."""
    return method_for(config).sweep_point(config, root, resource_weight)


def run_sweep(
    config: RunConfig,
    lambdas: Sequence[float],
    output: Path,
    target_madds: float | None = None,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train (or reuse) one run per λ of `config`'s method and write its accuracy–MAdds summary; with `seeds`,
    one sweep per seed (each summary also in its sweep folder) and mean ± std over them (`aggregate`)."""
    method = sweep_method(config)

    def one(seeded: RunConfig, to: Path) -> dict[str, Any]:
        return sweep_loop(seeded, lambdas, to, method.sweep_point, method.sweep_summary, run_or_reuse, target_madds)

    if seeds is None:
        return one(seed_config(config, config.seed), output)
    sweep_values(lambdas)  # refuse a bad grid before the first seed trains anything
    return run_seeds(config, seeds, output, lambda c: one(c, sweep_root(c) / SUMMARY_FILE), method.label)
