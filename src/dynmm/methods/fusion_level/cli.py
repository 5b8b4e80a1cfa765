"""`dynmm bench fusion-speed`: masked vs dispatch (progressive depth skipping) of a fusion-level run."""

from __future__ import annotations

from pathlib import Path

import typer

from dynmm.console import console, parse_numbers, print_rows


def add_commands(group: typer.Typer) -> None:
    @group.command("fusion-speed")
    def bench_fusion_speed(
        run: Path = typer.Argument(..., help="A trained fusion-level DynMM run (dynmm train configs/rgbd_synth/...)."),
        batch_sizes: str = typer.Option("1,16,64", help="Comma-separated batch sizes."),
        repeats: int = typer.Option(20, help="Timed calls per setting (the median is reported)."),
        output: Path = typer.Option(None, help="JSON file to write (default RUN/speed.json)."),
    ) -> None:
        """Masked (whole depth encoder, every op) vs dispatch (progressive depth skipping) inference time."""
        from dynmm.engine.timing import millions
        from dynmm.io import atomic_write_json
        from dynmm.methods.fusion_level.speed import fusion_level_speed

        sizes = parse_numbers(batch_sizes, "--batch-sizes", int)
        results = fusion_level_speed(run, sizes, repeats)
        output = output or run / "speed.json"
        atomic_write_json(output, results)
        rows = [
            {
                "batch": str(r["batch_size"]),
                "MAdds M masked": millions(r["madds_per_sample"]["masked"]),
                "MAdds M dispatch": millions(r["madds_per_sample"]["dispatch"]),
                "aux-encoder MAdds M dispatch": millions(r["aux_madds_per_sample"]),
                "ms masked": f"{r['median_ms']['masked']:.2f}",
                "ms dispatch": f"{r['median_ms']['dispatch']:.2f}",
                "predicted": f"{r['predicted_speedup']:.2f}×",
                "realized": f"{r['realized_speedup']:.2f}×",
            }
            for r in results["rows"]
        ]
        print_rows(f"{run} · masked vs dispatch · median of {repeats} calls", rows)
        console.print(f"results written to [bold]{output}[/bold]")
