"""Fusion-level DynMM as a method: the `fusion_level` config section, model type "fusion_level"."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynmm.config import RunConfig, section_of
from dynmm.errors import ConfigError
from dynmm.methods.base import Method, sweep_rows
from dynmm.methods.fusion_level.config import FusionLevelConfig

if TYPE_CHECKING:
    import typer

    from dynmm.engine.export import Builder
    from dynmm.engine.run_folder import RunResult
    from dynmm.engine.sweep import SweepRun


class FusionLevel(Method):
    name = "fusion_level"
    section = "fusion_level"
    config = FusionLevelConfig
    shared_stage = ("supernet_dir", "supernet")
    label = "DynMM"

    def train(self, config: RunConfig, resume: bool) -> RunResult:
        from dynmm.methods.fusion_level.recipe import run_fusion_level_recipe

        return run_fusion_level_recipe(config, resume)

    def builders(self) -> dict[str, Builder]:
        from dynmm.methods.fusion_level.export import FUSION_LEVEL_BUILDERS

        return FUSION_LEVEL_BUILDERS

    def report(self, run_dir: Path, sweep: Path | None, baselines: Path | None) -> Path:
        from dynmm.methods.fusion_level.report import rebuild_fusion_report

        return rebuild_fusion_report(run_dir, baselines)

    def check_sweep(self, config: RunConfig) -> None:
        if section_of(config, "fusion_level", FusionLevelConfig).static_op is not None:
            raise ConfigError("dynmm sweep: a static baseline (fusion_level.static_op) has no λ to sweep")

    def sweep_summary(self, sweep: SweepRun) -> dict[str, Any]:
        from dynmm.methods.fusion_level.sweep import fusion_level_summary

        return fusion_level_summary(sweep)

    def sweep_table(self, summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        columns = ["model", "MAdds/sample", summary["metric"], "skippable-encoder MAdds/sample"]
        columns += ["skippable stages run (0..N)", "collapsed"]
        points = summary["points"]
        rows = sweep_rows(self.label, points, [f"{p['aux_madds_per_sample']:,.0f}" for p in points])
        for row, point in zip(rows, points, strict=True):
            routing = point.get("routing", {})
            row += [str(routing.get("aux_stages_run", "")), str(routing.get("collapsed", ""))]
        return columns, rows

    def deploy(self, run_dir: Path, fmt: str, output: Path, verify: bool) -> dict[str, Any]:
        from dynmm.deploy.graphs import check_format
        from dynmm.methods.fusion_level.deploy_run import export_fusion_level

        return export_fusion_level(run_dir, check_format(fmt), output, verify)

    def bench_deploy(self, run_dir: Path, requests: int, threads: list[int]) -> dict[str, Any]:
        from dynmm.methods.fusion_level.deploy_bench import bench_fusion_export

        return bench_fusion_export(run_dir, requests, threads)

    def add_commands(self, bench: typer.Typer, search: typer.Typer) -> None:
        from dynmm.methods.fusion_level.cli import add_commands

        add_commands(bench)


FUSION_LEVEL = FusionLevel()
