"""`dynmm search mfas CONFIG`: the MFAS search and its random-search baseline, printed and written."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dynmm.console import console


def add_commands(group: typer.Typer) -> None:
    @group.command("mfas", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def search_mfas(
        ctx: typer.Context,
        config: Path = typer.Argument(
            ..., help="A run configuration with an `mfas` section, e.g. configs/avdigits/mfas.yaml"
        ),
        output: Path = typer.Option(None, help="JSON results (default benchmarks/results/mfas_<data>.json)."),
    ) -> None:
        """MFAS: train the backbones, cache their features, search (and random-search) fusion architectures per seed,
        train the best fully; resumes wherever it stopped when run again."""
        from dynmm.config import load_config
        from dynmm.methods.mfas.recipe import run_mfas_search

        run_config = load_config(config, list(ctx.args))
        output = output or Path(f"benchmarks/results/mfas_{run_config.data.name}.json")
        summary = run_mfas_search(run_config, output, progress=lambda message: console.print(f"[dim]{message}[/dim]"))
        metric = summary["metric"]
        table = Table(title=f"{run_config.name} · MFAS vs random search · {metric}")
        for column in ("seed", "search", "evaluated", "best valid (search)", "final valid", "final test"):
            table.add_column(column)
        for result in summary["searches"]:
            final = result["final"]["best"]
            table.add_row(
                str(result["seed"]),
                result["kind"],
                str(len(result["evaluations"])),
                f"{result['best']['score']:.4f}",
                f"{final['valid'][metric]:.4f}",
                f"{final['test'][metric]:.4f}",
            )
        console.print(table)
        best, timing = summary["best"], summary["timing"]
        console.print(
            f"best: [bold]{best['name']}[/bold] · test {metric} {best['test'][metric]:.4f} · "
            f"{best['madds']:,} MAdds/sample"
        )
        if timing.get("speedup"):
            console.print(
                f"per evaluated architecture: {timing['cached_s_per_architecture']:.2f} s cached, "
                f"{timing['live_s_per_architecture']:.2f} s recomputing backbones ({timing['speedup']:.1f}×)"
            )
        console.print(f"results written to [bold]{output}[/bold] and {summary['run_dir']}")
