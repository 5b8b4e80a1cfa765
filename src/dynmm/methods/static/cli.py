"""`dynmm bench baselines`: every static baseline, several seeds, one JSON and Markdown table."""

from __future__ import annotations

from pathlib import Path

import typer

from dynmm.console import console, print_rows


def add_commands(group: typer.Typer) -> None:
    @group.command("baselines")
    def bench_baselines(
        seeds: int = typer.Option(3, help="Seeds per model (metrics are reported as mean and std)."),
        quick: bool = typer.Option(False, help="Short schedule and smaller AV digits splits, for the demo."),
        datasets: str = typer.Option("mosi,avdigits", help="Comma-separated data sets."),
        output: Path = typer.Option(Path("benchmarks/results/baselines.json"), help="JSON file to write."),
        spec: Path = typer.Option(Path("configs/baselines.yaml"), help="Which models to train."),
        runs_dir: Path = typer.Option(Path("runs"), help="Where the individual runs are kept (and reused)."),
    ) -> None:
        """Train unimodal models and every static fusion; write metrics, MAdds, params and train time."""
        run_and_print_baselines(spec, [d for d in datasets.split(",") if d], seeds, quick, output, runs_dir)


def run_and_print_baselines(
    spec: Path, datasets: list[str], seeds: int, quick: bool, output: Path, runs_dir: Path
) -> None:
    from dynmm.methods.static.baselines import run_baselines

    results = run_baselines(spec, datasets, seeds, quick, output, runs_dir)
    print_results(results)
    console.print(f"results written to [bold]{output}[/bold]")


def print_results(results: dict) -> None:
    from dynmm.methods.static.baselines import table_rows

    for dataset in results["datasets"]:
        print_rows(f"{dataset} · test split · {results['seeds']} seed(s)", table_rows(results, dataset))
