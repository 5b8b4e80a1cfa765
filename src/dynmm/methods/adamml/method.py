"""AdaMML as a method: the `adamml` config section, model type "adamml"."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynmm.config import RunConfig, section_of
from dynmm.errors import ConfigError
from dynmm.methods.adamml.config import AdaMMLConfig
from dynmm.methods.base import Method, sweep_rows

if TYPE_CHECKING:
    import typer

    from dynmm.engine.export import Builder
    from dynmm.engine.run_folder import RunResult
    from dynmm.engine.sweep import SweepRun


class AdaMMLMethod(Method):
    name = "adamml"
    section = "adamml"
    config = AdaMMLConfig
    shared_stage = ("warmup_dir", "warmup")
    label = "AdaMML"

    def train(self, config: RunConfig, resume: bool) -> RunResult:
        from dynmm.methods.adamml.recipe import run_adamml_recipe

        return run_adamml_recipe(config, resume)

    def builders(self) -> dict[str, Builder]:
        from dynmm.methods.adamml.export import ADAMML_BUILDERS

        return ADAMML_BUILDERS

    def report(self, run_dir: Path, sweep: Path | None, baselines: Path | None) -> Path:
        from dynmm.methods.adamml.report import rebuild_adamml_report

        if baselines is not None:
            raise ConfigError("--baselines is not supported for AdaMML runs (their report has its own baselines)")
        return rebuild_adamml_report(run_dir, sweep)

    def deploy(self, run_dir: Path, fmt: str, output: Path, verify: bool) -> dict[str, Any]:
        from dynmm.deploy.graphs import check_format
        from dynmm.methods.adamml.deploy_run import export_adamml

        return export_adamml(run_dir, check_format(fmt), output, verify)

    def check_sweep(self, config: RunConfig) -> None:
        if section_of(config, "adamml", AdaMMLConfig).lambdas is not None:
            raise ConfigError("dynmm sweep scales λ through adamml.resource_weight; remove adamml.lambdas")

    def bench_deploy(self, run_dir: Path, requests: int, threads: list[int]) -> dict[str, Any]:
        from dynmm.methods.adamml.deploy_bench import bench_adamml_export

        return bench_adamml_export(run_dir, requests, threads)

    def sweep_summary(self, sweep: SweepRun) -> dict[str, Any]:
        from dynmm.methods.adamml.sweep import adamml_summary

        return adamml_summary(sweep)

    def sweep_table(self, summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        columns = ["model", "MAdds/clip", summary["metric"], "keep rates"]
        baselines = [
            [b["label"], f"{b['madds_per_clip']:,.0f}", f"{b['accuracy']:.4f}", "-"]
            for b in summary.get("baselines", {}).values()
        ]
        shares = [", ".join(f"{m} {rate:.2f}" for m, rate in p["keep_rate"].items()) for p in summary["points"]]
        return columns, baselines + sweep_rows(self.label, summary["points"], shares)

    def add_commands(self, bench: typer.Typer, search: typer.Typer) -> None:
        from dynmm.methods.adamml.cli import add_commands

        add_commands(bench)


ADAMML = AdaMMLMethod()
