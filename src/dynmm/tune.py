"""A λ sweep with its points as Ray Tune trials, in parallel on one machine or a Ray cluster (optional extra
`tune`: `pip install -e ".[tune]"`).

    python -m dynmm.tune configs/mosi/dynmm.yaml --lambdas 0,0.1,0.3 --workers 2 [--address auto] [--k=v ...]

Each trial is one `run_or_reuse` of a λ point, exactly the run `dynmm sweep` makes, in the same folder
(runs/<name>_sweep/lambda_<λ>/). The points share stage I (experts, supernet or AdaMML warmup), which one
process must train alone: the first point runs before the others start, and the others find its stage I finished.
At the end `run_sweep` reuses every finished point and writes the same summary as `dynmm sweep`; a restarted
call skips finished points. Trials need the run folders on a file system every Ray node sees (a cluster's
shared disk), as the sweep's summary is read from them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynmm.config import RunConfig, from_dict, load_config, to_dict
from dynmm.engine.sweep import sweep_root, sweep_values
from dynmm.errors import ConfigError
from dynmm.methods.registry import point_config, run_or_reuse, run_sweep, sweep_method


def _trial(params: dict[str, Any]) -> None:
    """One λ point in a Ray worker: the sweep's own run (reused when finished), reported to Tune."""
    import torch
    from ray import tune

    os.chdir(params["cwd"])  # Ray Tune runs trials in a folder of its own; configs name paths from the project
    torch.set_num_threads(params["threads"])
    config = from_dict(RunConfig, params["config"])
    result = run_or_reuse(point_config(config, Path(params["root"]), params["lambda"]))
    tune.report(
        {"lambda": params["lambda"], "madds_per_sample": result.metrics["madds_per_sample"], "run": str(result.run_dir)}
    )


def tune_sweep(
    config: RunConfig,
    lambdas: Sequence[float],
    output: Path,
    workers: int = 2,
    cpus_per_trial: int = 1,
    address: str | None = None,
    target_madds: float | None = None,
) -> dict[str, Any]:
    """Train the λ points of `config` as Ray Tune trials (`workers` at a time), then write the sweep summary.

    `address`: a running Ray cluster ("auto" or host:port); None starts a local Ray with workers × cpus_per_trial
    CPUs."""
    try:
        import ray
        from ray import tune
    except ImportError as err:
        raise ConfigError('Ray Tune is an optional extra: pip install -e ".[tune]"') from err
    values = sweep_values(lambdas)
    sweep_method(config)
    if workers < 1 or cpus_per_trial < 1:
        raise ConfigError(f"--workers and --cpus-per-trial must be >= 1, got {workers}, {cpus_per_trial}")
    # Absolute paths: trials run elsewhere (another folder, another node with the same shared disk).
    config = config.model_copy(update={"output_dir": str(Path(config.output_dir).resolve())})
    root = sweep_root(config)
    run_or_reuse(point_config(config, root, values[0]))  # trains the shared stage I, alone
    if len(values) > 1:
        started_ray = not ray.is_initialized()
        if started_ray:
            if address is None:
                ray.init(num_cpus=workers * cpus_per_trial, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        try:
            space = {
                "lambda": tune.grid_search(values[1:]),
                "config": to_dict(config),
                "root": str(root),
                "cwd": os.getcwd(),
                "threads": cpus_per_trial,
            }
            tuner = tune.Tuner(
                tune.with_resources(_trial, {"cpu": cpus_per_trial}),
                param_space=space,
                tune_config=tune.TuneConfig(max_concurrent_trials=workers),
                run_config=tune.RunConfig(name="tune", storage_path=str(root / "ray"), verbose=0),
            )
            errors = tuner.fit().errors
            if errors:
                raise errors[0]
        finally:
            if started_ray:
                ray.shutdown()
    return run_sweep(config, values, output, target_madds)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dynmm.tune", description="A λ sweep as Ray Tune trials.")
    parser.add_argument("config", type=Path, help="a DynMM, fusion-level or AdaMML run configuration")
    parser.add_argument("--lambdas", default="0,0.01,0.03,0.1,0.3,1", help="comma-separated resource weights")
    parser.add_argument("--workers", type=int, default=2, help="trials at a time")
    parser.add_argument("--cpus-per-trial", type=int, default=1)
    parser.add_argument("--address", default=None, help='a Ray cluster ("auto", host:port); default: local')
    parser.add_argument("--output", type=Path, default=None, help="summary (default benchmarks/results/...)")
    args, overrides = parser.parse_known_args(argv)
    config = load_config(args.config, overrides)
    output = args.output or Path(f"benchmarks/results/{config.data.name}_pareto.json")
    values = [float(v) for v in args.lambdas.split(",") if v]
    tune_sweep(config, values, output, args.workers, args.cpus_per_trial, args.address)
    print(f"results written to {output}")


if __name__ == "__main__":
    main()
