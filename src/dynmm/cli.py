"""The `dynmm` command line: train, eval, data info, benchmarks, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dynmm.errors import DynmmError

app = typer.Typer(help="Dynamic multimodal fusion: train, evaluate and benchmark.", no_args_is_help=True)
data_app = typer.Typer(help="Bundled data sets.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that write JSON results.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
# Piped output (CI logs, `| tee`) gets a wide fixed width instead of rich's 80-column fallback.
console = Console(width=None if sys.stdout.isatty() else 140)

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML run configuration, e.g. configs/mosi/static.yaml"),
    resume: bool = typer.Option(False, "--resume", help="Continue runs/<name> from its last checkpoint."),
) -> None:
    """Train a model: `dynmm train CONFIG.yaml [--section.key=value ...] [--resume]`."""
    from dynmm.config import load_config
    from dynmm.train.run import train_run

    result = train_run(load_config(config, list(ctx.args)), resume=resume)
    console.print(f"run written to [bold]{result.run_dir}[/bold]")
    _print_metrics(result.metrics)


@app.command("eval")
def evaluate_run(
    run_dir: Path = typer.Argument(..., help="A run directory holding model.safetensors and model.json."),
    split: str = typer.Option("test", help="Split to evaluate: train, valid or test."),
) -> None:
    """Reload a run's exported model (safetensors, no pickle) and recompute its metrics."""
    from dynmm.train.evaluate_run import evaluate_exported

    results, recorded = evaluate_exported(run_dir, split)
    table = Table(title=f"{run_dir} · {split}")
    for column in ("metric", "now", "recorded in metrics.json"):
        table.add_column(column)
    for name, value in results.items():
        old = recorded.get(name)
        table.add_row(name, f"{value:.4f}", "-" if old is None else f"{old:.4f}")
    console.print(table)


@data_app.command("info")
def data_info() -> None:
    """Print every bundled data set: samples per split, modalities, shapes, task."""
    from dynmm.data.info import print_data_info

    print_data_info()


@bench_app.command("baselines")
def bench_baselines(
    seeds: int = typer.Option(3, help="Seeds per model (metrics are reported as mean and std)."),
    quick: bool = typer.Option(False, help="Short schedule and smaller AV digits splits, for the demo."),
    datasets: str = typer.Option("mosi,avdigits", help="Comma-separated data sets."),
    output: Path = typer.Option(Path("benchmarks/results/baselines.json"), help="JSON file to write."),
    spec: Path = typer.Option(Path("configs/baselines.yaml"), help="Which models to train."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where the individual runs are kept (and reused)."),
) -> None:
    """Train unimodal models and every static fusion; write metrics, MAdds, params and train time."""
    _baselines(spec, [d for d in datasets.split(",") if d], seeds, quick, output, runs_dir)


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo/baselines.json"), help="Where the demo writes its results."),
) -> None:
    """A short baselines benchmark on both bundled data sets (a few minutes on 2 CPU cores)."""
    _baselines(Path("configs/baselines.yaml"), ["mosi", "avdigits"], 1, True, output, Path("runs"))


def _baselines(spec: Path, datasets: list[str], seeds: int, quick: bool, output: Path, runs_dir: Path) -> None:
    from dynmm.bench.baselines import run_baselines

    results = run_baselines(spec, datasets, seeds, quick, output, runs_dir)
    print_results(results)
    console.print(f"results written to [bold]{output}[/bold]")


def print_results(results: dict) -> None:
    from dynmm.bench.baselines import table_rows

    for dataset in results["datasets"]:
        rows = table_rows(results, dataset)
        table = Table(title=f"{dataset} · test split · {results['seeds']} seed(s)")
        for column in rows[0]:
            table.add_column(column)
        for row in rows:
            table.add_row(*row.values())
        console.print(table)


def _print_metrics(metrics: dict) -> None:
    console.print_json(json.dumps({k: metrics[k] for k in ("test", "valid", "madds_per_sample", "params")}))


def main() -> None:
    """Entry point: user errors print one clear line and exit with status 2, never a traceback."""
    try:
        app()
    except DynmmError as err:
        console.print(f"[bold red]error:[/bold red] {err}")
        raise SystemExit(2) from None
