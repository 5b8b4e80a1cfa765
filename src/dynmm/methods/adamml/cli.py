"""`dynmm bench adamml-speed`: late fusion vs masked vs dispatch AdaMML inference time per clip."""

from __future__ import annotations

from pathlib import Path

import typer

from dynmm.console import console, parse_numbers, print_rows


def add_commands(group: typer.Typer) -> None:
    @group.command("adamml-speed")
    def bench_adamml_speed(
        run: Path = typer.Argument(..., help="A trained AdaMML run (dynmm train configs/avclips/adamml.yaml)."),
        batch_sizes: str = typer.Option("1,8,32", help="Comma-separated batch sizes (clips)."),
        repeats: int = typer.Option(20, help="Timed calls per setting (the median is reported)."),
        keep_rates: str = typer.Option("0.25,0.5,0.75", help="Random keep rates to time dispatch at ('' for none)."),
        output: Path = typer.Option(None, help="JSON file to write (default RUN/speed.json)."),
    ) -> None:
        """Late fusion on all segments vs masked vs dispatch AdaMML inference time, per clip."""
        from dynmm.engine.timing import millions
        from dynmm.io import atomic_write_json
        from dynmm.methods.adamml.speed import adamml_speed

        rates = parse_numbers(keep_rates, "--keep-rates", float)
        results = adamml_speed(run, parse_numbers(batch_sizes, "--batch-sizes", int), repeats, rates)
        output = output or run / "speed.json"
        atomic_write_json(output, results)
        rows = [
            {
                "batch": str(r["batch_size"]),
                "MAdds M late fusion": millions(r["late_fusion_all"]["madds_per_clip"]),
                "MAdds M dispatch": millions(r["dispatch"]["madds_per_clip"]),
                "ms late fusion": f"{r['late_fusion_all']['median_ms']:.2f}",
                "ms masked": f"{r['masked']['median_ms']:.2f}",
                "ms dispatch": f"{r['dispatch']['median_ms']:.2f}",
                "predicted": f"{r['predicted_speedup']:.2f}×",
                "realized": f"{r['realized_speedup']:.2f}×",
            }
            for r in results["rows"]
        ]
        print_rows(f"{run} · AdaMML · median of {repeats} calls", rows)
        console.print(f"results written to [bold]{output}[/bold]")
