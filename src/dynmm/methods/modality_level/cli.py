"""`dynmm bench speed`: dense / masked / dispatch inference time and peak memory of modality-level DynMM."""

from __future__ import annotations

from pathlib import Path

import typer

from dynmm.console import console, print_rows


def add_commands(group: typer.Typer) -> None:
    @group.command("speed")
    def bench_speed(
        batch_sizes: str = typer.Option("1,16,64,256", help="Comma-separated batch sizes."),
        cheap_fraction: str = typer.Option("0.25,0.5,0.75", help="Fractions of rows forced onto the cheap expert."),
        scales: str = typer.Option("default,large", help="Model sizes: default and/or large (bigger audio network)."),
        modes: str = typer.Option("dense,masked,dispatch", help="Execution modes to time (comma-separated)."),
        run: Path | None = typer.Option(
            None,
            "--run",
            help="A trained DynMM run: time its gate's routing and the forced shares on its test set (not --scales).",
        ),
        repeats: int = typer.Option(20, help="Timed calls per setting (the median is reported)."),
        device: str = typer.Option("cpu", help="Where to time: cpu, or cuda (cuda:N) when a GPU is there."),
        output: Path | None = typer.Option(
            None, help="JSON file to write [default: benchmarks/results/speed_avdigits.json, or RUN/speed.json]."
        ),
    ) -> None:
        """Dense / masked (run every expert) vs dispatch (run only the chosen one): inference time and peak memory."""
        from dynmm.errors import ConfigError
        from dynmm.io import atomic_write_json
        from dynmm.methods.modality_level.speed import (
            SCALES,
            memory_table,
            parse_modes,
            run_speed_benchmark,
            run_trained_benchmark,
            time_table,
        )

        chosen = [s for s in scales.split(",") if s]
        unknown = [s for s in chosen if s not in SCALES]
        if unknown:
            raise ConfigError(f"unknown scale(s) {unknown}; choose from {sorted(SCALES)}")
        try:
            sizes = [int(b) for b in batch_sizes.split(",")]
            fractions = [float(f) for f in cheap_fraction.split(",")]
        except ValueError as err:
            raise ConfigError(f"--batch-sizes and --cheap-fraction take comma-separated numbers ({err})") from err
        if any(b < 1 for b in sizes) or any(not 0 <= f <= 1 for f in fractions):
            raise ConfigError("batch sizes must be >= 1 and cheap fractions within [0, 1]")
        mode_list = parse_modes(modes)
        if run is None:
            results = run_speed_benchmark(chosen, sizes, fractions, repeats, mode_list, device)
            output = output or Path("benchmarks/results/speed_avdigits.json")
        else:
            results = run_trained_benchmark(run, sizes, fractions, repeats, mode_list, device)
            output = output or run / "speed.json"
        atomic_write_json(output, results)
        device = results["environment"]["device"]
        for label, entry in results["models"].items():
            for what, rows in (("time", time_table(entry, mode_list)), ("peak memory", memory_table(entry, mode_list))):
                print_rows(f"{label} · {what} · {entry['source']} · {device}, median of {repeats} calls", rows)
        console.print(f"results written to [bold]{output}[/bold]")
