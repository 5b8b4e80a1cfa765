"""The `dynmm` command line: train, eval, sweep, report, data, benchmarks, search, demo.

`train`, `eval`, `sweep` and `report` dispatch through the method registry (dynmm.methods); each method adds its
own `bench` and `search` commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from dynmm.console import console, parse_numbers
from dynmm.errors import DynmmError
from dynmm.methods import METHODS

app = typer.Typer(help="Dynamic multimodal fusion: train, evaluate and benchmark.", no_args_is_help=True)
data_app = typer.Typer(help="Bundled data sets.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that write JSON results.", no_args_is_help=True)
search_app = typer.Typer(help="Architecture search.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.add_typer(search_app, name="search")
for _method in METHODS:
    _method.add_commands(bench_app, search_app)

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
    from dynmm.engine.distributed import is_main_process
    from dynmm.methods.registry import train_run

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
    from dynmm.methods.evaluate_run import evaluate_exported
    from dynmm.report.robustness import parse_noise

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


@app.command("export")
def export_run(
    run_dir: Path = typer.Argument(..., help="A finished run directory (model.safetensors + model.json)."),
    format: str = typer.Option("onnx", "--format", help="onnx (run by onnxruntime) or torch-export (.pt2)."),
    output: Path = typer.Option(None, help="Artifact folder to write [default: RUN/deploy_<format>]."),
    verify: bool = typer.Option(True, help="Compare with dynmm's dispatch on the whole test split."),
) -> None:
    """Export a trained model with its skipping intact: batch 1 runs the gate, then only the chosen branch
    (torch.cond, an ONNX If); larger batches run a router graph and each branch graph on its own rows."""
    from dynmm.deploy.artifact import prepare_output
    from dynmm.methods.registry import method_for_run

    folder = prepare_output(output or run_dir / f"deploy_{format.replace('-', '_')}")
    manifest = method_for_run(run_dir).deploy(run_dir, format, folder, verify)
    console.print(f"artifact written to [bold]{folder}[/bold] ({manifest['format']}, skips: {manifest['skips']})")
    if not manifest["skips"]:
        console.print("[yellow]a soft gate mixes every branch: this artifact skips nothing[/yellow]")
    check = manifest.get("verification")
    if check:
        state = "[green]passed[/green]" if check["passed"] else "[red]FAILED[/red]"
        console.print(
            f"verification on {check['rows']} test rows: {state} (max abs diff at batch 1 "
            f"{check['batch_1_max_abs_diff']:.2e}, same routing {check['batch_1_same_routing']:.2%})"
        )
        if not check["passed"]:
            raise typer.Exit(1)


@app.command(context_settings=OVERRIDES)
def sweep(
    ctx: typer.Context,
    config: Path = typer.Argument(
        ..., help="A DynMM run configuration, e.g. configs/avdigits/dynmm.yaml or configs/rgbd_synth/dynmm_fusion.yaml"
    ),
    lambdas: str = typer.Option("0,0.01,0.03,0.1,0.3,1", help="Comma-separated resource weights λ."),
    target_madds: float = typer.Option(None, help="Also report how to meet this mean MAdds budget."),
    output: Path = typer.Option(None, help="JSON summary (default benchmarks/results/<data>_pareto.json)."),
    seeds: str = typer.Option(
        None, help="Comma-separated seeds: one sweep each, mean ± std in the summary (default: the config's seed)."
    ),
) -> None:
    """Train the DynMM recipe for each λ (stage I once: experts or supernet) and write the accuracy–MAdds summary.

    `--seed=N` sweeps one seed (folders runs/<name>_seed<N>_sweep/; seed 0 keeps runs/<name>_sweep/)."""
    from dynmm.config import load_config
    from dynmm.methods.registry import method_for, run_sweep

    run_config = load_config(config, list(ctx.args))
    values = parse_numbers(lambdas, "--lambdas", float)
    seed_list = parse_numbers(seeds, "--seeds", int) if seeds is not None else None
    output = output or Path(f"benchmarks/results/{run_config.data.name}_pareto.json")
    summary = run_sweep(run_config, values, output, target_madds, seed_list)
    columns, rows = method_for(run_config).sweep_table(summary)
    table = Table(title=f"{run_config.name} · λ sweep · test {summary['metric']}")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if "target" in summary:
        console.print_json(json.dumps(summary["target"]))
    console.print(f"results written to [bold]{output}[/bold]")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A finished DynMM, AdaMML or MFAS-search run directory."),
    sweep: Path = typer.Option(None, help="A λ-sweep summary (dynmm sweep's JSON) to add to the Pareto plot."),
    baselines: Path = typer.Option(None, help="Runs of `dynmm bench baselines` (e.g. runs/baselines) to add."),
) -> None:
    """Rebuild RUN/report.html from its metrics, routing, speed.json (dynmm bench speed --run) and a sweep."""
    from dynmm.methods.registry import method_for_run

    path = method_for_run(run_dir).report(run_dir, sweep, baselines)
    console.print(f"report written to [bold]{path}[/bold]")


@data_app.command("info")
def data_info() -> None:
    """Print every bundled data set: samples per split, modalities, shapes, task."""
    from dynmm.data.info import print_data_info

    print_data_info()


@data_app.command("check")
def data_check(
    path: Path = typer.Argument(..., help="Your file or folder, e.g. data/external/mmimdb/multimodal_imdb.hdf5"),
    format: str = typer.Option(..., "--format", help="mmimdb, affect, avmnist, nyuv2 or arrays"),
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


@bench_app.command("export")
def bench_export(
    run: Path = typer.Argument(..., help="A trained DynMM (hard gate) or AdaMML run."),
    requests: int = typer.Option(1000, help="Batch-1 requests timed per model and setting (test rows, cycled)."),
    threads: str = typer.Option("1,0", help="Thread counts to time (0 = all cores)."),
    output: Path = typer.Option(Path("benchmarks/results/deploy_latency.json"), help="JSON file to write."),
) -> None:
    """Batch-1 latency p50/p95/p99 of the exported dynamic model against the exported static late fusion
    (onnxruntime), and of the eager model: realized vs MAdds-predicted speedups."""
    from dynmm.console import print_rows
    from dynmm.errors import ConfigError
    from dynmm.io import atomic_write_json
    from dynmm.methods.registry import method_for_run

    counts = parse_numbers(threads, "--threads", int)
    if requests < 1 or any(t < 0 for t in counts):
        raise ConfigError("--requests must be >= 1 and --threads >= 0")
    results = method_for_run(run).bench_deploy(run, requests, counts)
    atomic_write_json(output, results)
    rows = []
    for s in results["settings"]:
        row = {
            "runtime": s["runtime"],
            "threads": str(s["threads"]),
            "baseline p50 ms": f"{s['baseline']['p50_ms']:.3f}",
            "dynamic p50 / p99 ms": f"{s['dynamic']['p50_ms']:.3f} / {s['dynamic']['p99_ms']:.3f}",
        }
        for name, speed in s["speedups"].items():
            row[f"{name}: realized / predicted"] = (
                f"{speed['realized_speedup']:.2f}× / {speed['predicted_speedup']:.2f}×"
            )
        rows.append(row)
    print_rows(f"batch-1 latency over {requests} requests; baseline: {results['baseline']}", rows)
    console.print(f"results written to [bold]{output}[/bold]")


@bench_app.command("paper-costs")
def bench_paper_costs(
    setups: str = typer.Option("", help="Comma-separated setups (default: all): mmimdb, mosei, nyuv2, ..."),
    output: Path = typer.Option(Path("benchmarks/results/paper_costs.json"), help="JSON file to write."),
) -> None:
    """Every paper setup's config built on inputs of the real shapes: each part's measured MAdds next to the
    paper's (or the authors' code's), the difference, and why they differ where they do."""
    from dynmm.console import print_rows
    from dynmm.io import atomic_write_json
    from dynmm.methods.paper_costs import paper_costs

    results = paper_costs([s for s in setups.split(",") if s] or None)
    atomic_write_json(output, results)
    rows = []
    for setup in results["setups"]:
        for part in setup["parts"]:
            reference, difference = part["reference"], part["difference"]
            rows.append(
                {
                    "setup": setup["setup"],
                    "part": part["part"],
                    "measured M": f"{part['measured'] / 1e6:,.2f}",
                    "reference M": "–" if reference is None else f"{reference / 1e6:,.2f}",
                    "difference": "–" if difference is None else f"{difference:+.1%}",
                    "why": part["explanation"] or "",
                }
            )
    print_rows("MAdds per sample: measured vs the papers", rows)
    console.print(f"results written to [bold]{output}[/bold]")


@bench_app.command("paper-size")
def bench_paper_size(
    setups: str = typer.Option("", help="Comma-separated setups (default: all): mmimdb, mosei, nyuv2, ..."),
    max_steps: str = typer.Option(
        "", help="Steps of each setup's first stage: N, SETUP=N or both, e.g. 50,nyuv2=3 (default: one epoch)."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    workdir: Path = typer.Option(Path("runs/paper_size_data"), help="Where generated files are cached."),
    rows_fraction: float = typer.Option(1.0, help="Scale the row counts down for a quick check (1: real sizes)."),
    output: Path = typer.Option(Path("benchmarks/results/paper_size.json"), help="JSON file to write."),
) -> None:
    """Each paper setup's first training stage on generated data of the real sizes and shapes (files in the
    loaders' formats): rows/s, peak resident memory, and whether its loader streams the files."""
    from dynmm.console import print_rows
    from dynmm.io import atomic_write_json
    from dynmm.methods.paper_size import paper_size, parse_steps

    chosen = [s for s in setups.split(",") if s] or None
    steps, steps_by_setup = parse_steps(max_steps)
    results = paper_size(chosen, steps, device, workdir, rows_fraction, steps_by_setup)
    atomic_write_json(output, results)
    rows, failed = [], []
    for s in results["setups"]:
        row = dict.fromkeys(("setup", "steps", "rows/s", "peak RSS MiB", "files MiB", "streams", "note"), "–")
        row["setup"] = s["setup"]
        if "skipped" in s or "error" in s:
            failed += [s["setup"]] if "error" in s else []
            rows.append(row | {"note": s.get("skipped") or s["error"]})
            continue
        verdict = s["streams"]["verdict"]
        row |= {
            "steps": f"{s['steps']} ({s['epoch_fraction']:.1%} of an epoch)",
            "rows/s": f"{s['rows_per_s']:,.1f}",
            "peak RSS MiB": f"{s['peak_rss_mib']:,.0f}",
            "files MiB": f"{s['files_bytes'] / 2**20:,.0f}",
            "streams": "–" if verdict is None else ("yes" if verdict else "no"),
            "note": s["stage"],
        }
        rows.append(row)
    print_rows(f"one epoch or --max-steps of each first stage on {device}", rows)
    console.print(f"results written to [bold]{output}[/bold]")
    if failed:
        console.print(f"[bold red]failed:[/bold red] {', '.join(failed)}")
        raise typer.Exit(1)


@bench_app.command("arrays")
def bench_arrays(
    folder: Path = typer.Option(Path("/tmp/dynmm_arrays_bench"), help="Where the generated .npy folder is written."),
    gigabytes: float = typer.Option(4.0, help="Total size of the generated folder (GiB)."),
    batch_size: int = typer.Option(512, help="Training and reading batch size."),
    speed_rows: int = typer.Option(100_000, help="Training rows read memory-mapped and held in memory."),
    keep: bool = typer.Option(False, help="Keep the generated files (else they are deleted at the end)."),
    output: Path = typer.Option(Path("benchmarks/results/arrays_memory.json"), help="JSON file to write."),
) -> None:
    """Train on a generated multi-GB folder of .npy files: peak resident memory, and read speed memory-mapped vs
    held in memory (data.name: arrays)."""
    from dynmm.data.arrays_bench import run_arrays_benchmark
    from dynmm.io import atomic_write_json

    results = run_arrays_benchmark(folder, gigabytes, batch_size, speed_rows, keep)
    atomic_write_json(output, results)
    training, speed = results["training"], results["read_speed"]
    console.print(
        f"{results['folder']['bytes'] / 2**30:.2f} GiB of .npy: training peak RSS "
        f"{training['peak_rss_bytes'] / 2**30:.2f} GiB in {training['wall_s']:.0f} s; reads "
        f"{speed['rows_per_s']['memory_mapped']:,.0f} rows/s memory-mapped vs {speed['rows_per_s']['in_memory']:,.0f} "
        f"held in memory ({speed['ratio']:.2f})"
    )
    console.print(f"results written to [bold]{output}[/bold]")


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo/baselines.json"), help="Where the demo writes its results."),
) -> None:
    """Quick baselines, then a short DynMM run on each bundled data set ending in report.html (~10 min, 2 cores)."""
    from dynmm.demo import run_demo_dynmm
    from dynmm.methods.static.cli import run_and_print_baselines

    run_and_print_baselines(Path("configs/baselines.yaml"), ["mosi", "avdigits"], 1, True, output, Path("runs"))
    for report_path in run_demo_dynmm(output.parent, baselines=Path("runs/baselines-quick")):
        console.print(f"DynMM report: [bold]{report_path}[/bold]")


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
