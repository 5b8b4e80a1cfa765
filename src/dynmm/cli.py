"""The `dynmm` command line: train, eval, data info, benchmarks, demo."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dynmm.errors import DynmmError

app = typer.Typer(help="Dynamic multimodal fusion: train, evaluate and benchmark.", no_args_is_help=True)
data_app = typer.Typer(help="Bundled data sets.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that write JSON results.", no_args_is_help=True)
search_app = typer.Typer(help="Architecture search.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.add_typer(search_app, name="search")
# Piped output (CI logs, `| tee`) gets a wide fixed width instead of rich's 80-column fallback.
console = Console(width=None if sys.stdout.isatty() else 140)

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML run configuration, e.g. configs/mosi/static.yaml"),
    resume: bool = typer.Option(False, "--resume", help="Continue runs/<name> from its last checkpoint."),
) -> None:
    """Train a model: `dynmm train CONFIG.yaml [--section.key=value ...] [--resume]`.

    Several processes: `--train.devices=2 --train.strategy=ddp` (Lightning starts the other ranks by re-running
    this command line), or `torchrun --nproc_per_node=2 -m dynmm.cli train ...`; rank 0 writes and prints."""
    from dynmm.config import load_config
    from dynmm.train.distributed import is_main_process
    from dynmm.train.run import train_run

    result = train_run(load_config(config, list(ctx.args)), resume=resume)
    if is_main_process():
        console.print(f"run written to [bold]{result.run_dir}[/bold]")
        _print_metrics(result.metrics)


@app.command("eval")
def evaluate_run(
    run_dir: Path = typer.Argument(..., help="A run directory holding model.safetensors and model.json."),
    split: str = typer.Option("test", help="Split to evaluate: train, valid or test."),
    noise: list[str] = typer.Option([], help="MODALITY:gaussian:LEVEL, noise std = LEVEL × the modality's std."),
    drop: list[str] = typer.Option([], help="A modality missing at test time (zero-filled; DynMM routes around)."),
    beta: float = typer.Option(None, help="DynMM test-time cost knob: choose argmax(logits − β·cost)."),
    target_madds: float = typer.Option(None, help="DynMM: pick β on the valid split to meet this mean MAdds."),
) -> None:
    """Reload a run's exported model (safetensors, no pickle) and recompute or probe its metrics."""
    from dynmm.eval.robustness import parse_noise
    from dynmm.train.evaluate_run import evaluate_exported

    specs = [parse_noise(text) for text in noise]
    result = evaluate_exported(run_dir, split, specs, drop, beta, target_madds)
    probes = [*(f"noise {n}" for n in noise), *(f"drop {d}" for d in drop)]
    table = Table(title=f"{run_dir} · {split}" + (f" · {', '.join(probes)}" if probes else ""))
    for column in ("metric", "now", "recorded in metrics.json"):
        table.add_column(column)
    for name, value in result.metrics.items():
        old = result.recorded.get(name)
        table.add_row(name, f"{value:.4f}", "-" if old is None else f"{old:.4f}")
    console.print(table)
    if result.dynmm:
        facts = result.dynmm
        console.print(
            f"β = {facts['beta']:.4g} · MAdds per sample {facts['madds_per_sample']:,.0f} · "
            f"samples per expert {facts['routing']}"
        )


@app.command(context_settings=OVERRIDES)
def sweep(
    ctx: typer.Context,
    config: Path = typer.Argument(
        ..., help="A DynMM run configuration, e.g. configs/avdigits/dynmm.yaml or configs/rgbd_synth/dynmm_fusion.yaml"
    ),
    lambdas: str = typer.Option("0,0.01,0.03,0.1,0.3,1", help="Comma-separated resource weights λ."),
    target_madds: float = typer.Option(None, help="Also report how to meet this mean MAdds budget."),
    output: Path = typer.Option(None, help="JSON summary (default benchmarks/results/<data>_pareto.json)."),
) -> None:
    """Train the DynMM recipe for each λ (stage I once: experts or supernet) and write the accuracy–MAdds summary."""
    from dynmm.config import load_config
    from dynmm.train.sweep import run_sweep

    run_config = load_config(config, list(ctx.args))
    values = _numbers(lambdas, "--lambdas", float)
    output = output or Path(f"benchmarks/results/{run_config.data.name}_pareto.json")
    summary = run_sweep(run_config, values, output, target_madds)
    method = summary["method"]
    table = Table(title=f"{run_config.name} · λ sweep · test {summary['metric']}")
    last = {
        "fusion_level": "skippable-encoder MAdds/sample",
        "adamml": "keep rates",
        "modality_level": "cheapest expert share",
    }[method]
    unit = "clip" if method == "adamml" else "sample"
    for column in ("model", f"MAdds/{unit}", summary["metric"], last):
        table.add_column(column)
    for expert in summary.get("experts", []):
        table.add_row(expert["name"], f"{expert['madds']:,.0f}", f"{expert['metric']:.4f}", "-")
    for baseline in summary.get("baselines", {}).values():
        table.add_row(baseline["label"], f"{baseline['madds_per_clip']:,.0f}", f"{baseline['accuracy']:.4f}", "-")
    for point in summary["points"]:
        if method == "fusion_level":
            share = f"{point['aux_madds_per_sample']:,.0f}"
        elif method == "adamml":
            share = ", ".join(f"{m} {rate:.2f}" for m, rate in point["keep_rate"].items())
        else:
            share = f"{next(iter(point['routing'].values())):.2f}"
        name = "AdaMML" if method == "adamml" else "DynMM"
        table.add_row(
            f"{name} λ={point['lambda']:g}", f"{point['madds_per_sample']:,.0f}", f"{point['metric']:.4f}", share
        )
    console.print(table)
    if "target" in summary:
        console.print_json(json.dumps(summary["target"]))
    console.print(f"results written to [bold]{output}[/bold]")


@search_app.command("mfas", context_settings=OVERRIDES)
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
    from dynmm.search.mfas.recipe import run_mfas_search

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
        f"best: [bold]{best['name']}[/bold] · test {metric} {best['test'][metric]:.4f} · {best['madds']:,} MAdds/sample"
    )
    if timing.get("speedup"):
        console.print(
            f"per evaluated architecture: {timing['cached_s_per_architecture']:.2f} s cached, "
            f"{timing['live_s_per_architecture']:.2f} s recomputing backbones ({timing['speedup']:.1f}×)"
        )
    console.print(f"results written to [bold]{output}[/bold] and {summary['run_dir']}")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A finished DynMM, AdaMML or MFAS-search run directory."),
    sweep: Path = typer.Option(None, help="A λ-sweep summary (dynmm sweep's JSON) to add to the Pareto plot."),
    baselines: Path = typer.Option(None, help="Runs of `dynmm bench baselines` (e.g. runs/baselines) to add."),
) -> None:
    """Rebuild RUN/report.html from its metrics, routing, speed.json (dynmm bench speed --run) and a sweep."""
    from dynmm.errors import ConfigError
    from dynmm.eval.adamml_report import is_adamml_run, rebuild_adamml_report
    from dynmm.eval.dynmm_report import write_run_report

    if (run_dir / "mfas.json").is_file():
        if sweep is not None or baselines is not None:
            raise ConfigError("--sweep and --baselines do not apply to an MFAS search (it has its random search)")
        from dynmm.search.mfas.report import rebuild_mfas_report

        path = rebuild_mfas_report(run_dir)
    elif is_adamml_run(run_dir):
        if baselines is not None:
            raise ConfigError("--baselines is not supported for AdaMML runs (their report has its own baselines)")
        path = rebuild_adamml_report(run_dir, sweep)
    else:
        path = write_run_report(run_dir, sweep, baselines)
    console.print(f"report written to [bold]{path}[/bold]")


@data_app.command("info")
def data_info() -> None:
    """Print every bundled data set: samples per split, modalities, shapes, task."""
    from dynmm.data.info import print_data_info

    print_data_info()


@data_app.command("check")
def data_check(
    path: Path = typer.Argument(..., help="Your file or folder, e.g. data/external/mmimdb/multimodal_imdb.hdf5"),
    format: str = typer.Option(..., "--format", help="mmimdb, affect, avmnist or nyuv2"),
) -> None:
    """Validate a data set in one of the papers' formats (keys, shapes, dtypes, value ranges, split sizes) and
    print what is wrong, before any training starts. Exits 1 when there are problems."""
    from dynmm.data.registry import check_files

    report = check_files(format, str(path))
    table = Table(title=f"{report.format} · {report.path}")
    table.add_column("found")
    table.add_column("")
    for key, value in report.found.items():
        table.add_row(key, value)
    console.print(table)
    for problem in report.problems:
        console.print(f"[bold red]problem:[/bold red] {problem}")
    if not report.ok:
        raise typer.Exit(1)
    console.print(f"[green]ok[/green]: {format} files at {path} can be loaded with data.options.path={path}")


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


@bench_app.command("speed")
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
    output: Path | None = typer.Option(
        None, help="JSON file to write [default: benchmarks/results/speed_avdigits.json, or RUN/speed.json]."
    ),
) -> None:
    """Dense / masked (run every expert) vs dispatch (run only the chosen one): inference time and peak memory."""
    from dynmm.bench.speed import (
        SCALES,
        memory_table,
        parse_modes,
        run_speed_benchmark,
        run_trained_benchmark,
        time_table,
    )
    from dynmm.errors import ConfigError
    from dynmm.io import atomic_write_json

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
        results = run_speed_benchmark(chosen, sizes, fractions, repeats, mode_list)
        output = output or Path("benchmarks/results/speed_avdigits.json")
    else:
        results = run_trained_benchmark(run, sizes, fractions, repeats, mode_list)
        output = output or run / "speed.json"
    atomic_write_json(output, results)
    device = results["environment"]["device"]
    for label, entry in results["models"].items():
        for what, rows in (("time", time_table(entry, mode_list)), ("peak memory", memory_table(entry, mode_list))):
            _print_rows(f"{label} · {what} · {entry['source']} · {device}, median of {repeats} calls", rows)
    console.print(f"results written to [bold]{output}[/bold]")


@bench_app.command("fusion-speed")
def bench_fusion_speed(
    run: Path = typer.Argument(..., help="A trained fusion-level DynMM run (dynmm train configs/rgbd_synth/...)."),
    batch_sizes: str = typer.Option("1,16,64", help="Comma-separated batch sizes."),
    repeats: int = typer.Option(20, help="Timed calls per setting (the median is reported)."),
    output: Path = typer.Option(None, help="JSON file to write (default RUN/speed.json)."),
) -> None:
    """Masked (whole depth encoder, every op) vs dispatch (progressive depth skipping) inference time."""
    from dynmm.bench.fusion_speed import fusion_level_speed
    from dynmm.bench.speed import millions
    from dynmm.io import atomic_write_json

    sizes = _numbers(batch_sizes, "--batch-sizes", int)
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
    _print_rows(f"{run} · masked vs dispatch · median of {repeats} calls", rows)
    console.print(f"results written to [bold]{output}[/bold]")


@bench_app.command("adamml-speed")
def bench_adamml_speed(
    run: Path = typer.Argument(..., help="A trained AdaMML run (dynmm train configs/avclips/adamml.yaml)."),
    batch_sizes: str = typer.Option("1,8,32", help="Comma-separated batch sizes (clips)."),
    repeats: int = typer.Option(20, help="Timed calls per setting (the median is reported)."),
    keep_rates: str = typer.Option("0.25,0.5,0.75", help="Random keep rates to time dispatch at ('' for none)."),
    output: Path = typer.Option(None, help="JSON file to write (default RUN/speed.json)."),
) -> None:
    """Late fusion on all segments vs masked vs dispatch AdaMML inference time, per clip."""
    from dynmm.bench.adamml_speed import adamml_speed
    from dynmm.bench.speed import millions
    from dynmm.io import atomic_write_json

    rates = _numbers(keep_rates, "--keep-rates", float)
    results = adamml_speed(run, _numbers(batch_sizes, "--batch-sizes", int), repeats, rates)
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
    _print_rows(f"{run} · AdaMML · median of {repeats} calls", rows)
    console.print(f"results written to [bold]{output}[/bold]")


N = typing.TypeVar("N", int, float)


def _numbers(text: str, option: str, kind: type[N]) -> list[N]:
    """A comma-separated option as numbers of `kind`; anything else is a ConfigError naming the option."""
    from dynmm.errors import ConfigError

    try:
        return [kind(v) for v in text.split(",") if v]
    except ValueError as err:
        words = "integers" if kind is int else "numbers"
        raise ConfigError(f"{option} takes comma-separated {words} ({err})") from err


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo/baselines.json"), help="Where the demo writes its results."),
) -> None:
    """Quick baselines, then a short DynMM run on each bundled data set ending in report.html (~10 min, 2 cores)."""
    from dynmm.demo import run_demo_dynmm

    _baselines(Path("configs/baselines.yaml"), ["mosi", "avdigits"], 1, True, output, Path("runs"))
    for report_path in run_demo_dynmm(output.parent, baselines=Path("runs/baselines-quick")):
        console.print(f"DynMM report: [bold]{report_path}[/bold]")


def _baselines(spec: Path, datasets: list[str], seeds: int, quick: bool, output: Path, runs_dir: Path) -> None:
    from dynmm.bench.baselines import run_baselines

    results = run_baselines(spec, datasets, seeds, quick, output, runs_dir)
    print_results(results)
    console.print(f"results written to [bold]{output}[/bold]")


def print_results(results: dict) -> None:
    from dynmm.bench.baselines import table_rows

    for dataset in results["datasets"]:
        _print_rows(f"{dataset} · test split · {results['seeds']} seed(s)", table_rows(results, dataset))


def _print_rows(title: str, rows: list[dict[str, str]]) -> None:
    """A rich table whose columns are the rows' keys."""
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


def _print_metrics(metrics: dict) -> None:
    keys = ("test", "valid", "madds_per_sample", "params", "routing", "versus_costliest", "frontier")
    console.print_json(json.dumps({k: metrics[k] for k in keys if k in metrics}))


def main() -> None:
    """Entry point: user errors print one clear line and exit with status 2, never a traceback."""
    try:
        app()
    except DynmmError as err:
        # Escaped: a message may quote text in brackets; soft_wrap: one line however narrow the terminal.
        console.print(f"[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # `python -m dynmm.cli`, and so `torchrun -m dynmm.cli` and Lightning's DDP launcher
    main()
