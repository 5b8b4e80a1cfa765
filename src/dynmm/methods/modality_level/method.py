"""Modality-level DynMM as a method: the `dynmm` config section, model type "dynmm"."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynmm.config import RunConfig
from dynmm.methods.base import Method, sweep_rows
from dynmm.methods.modality_level.config import DynMMConfig

if TYPE_CHECKING:
    import typer

    from dynmm.engine.export import Builder, ExportedModel
    from dynmm.engine.run_folder import RunResult
    from dynmm.engine.sweep import SweepRun
    from dynmm.report.exported import Probe


class ModalityLevel(Method):
    name = "modality_level"
    section = "dynmm"
    config = DynMMConfig
    shared_stage = ("experts_dir", "experts")
    label = "DynMM"

    def train(self, config: RunConfig, resume: bool) -> RunResult:
        from dynmm.methods.modality_level.recipe import run_dynmm_recipe

        return run_dynmm_recipe(config, resume)

    def builders(self) -> dict[str, Builder]:
        from dynmm.methods.modality_level.export import MODALITY_LEVEL_BUILDERS

        return MODALITY_LEVEL_BUILDERS

    def evaluate_exported(
        self, run_dir: Path, exported: ExportedModel, probe: Probe
    ) -> tuple[dict[str, float], dict[str, Any]]:
        from dynmm.methods.modality_level.evaluate_run import evaluate_routed

        return evaluate_routed(exported, probe)

    def report(self, run_dir: Path, sweep: Path | None, baselines: Path | None) -> Path:
        from dynmm.methods.modality_level.report import write_run_report

        return write_run_report(run_dir, sweep, baselines)

    def deploy(self, run_dir: Path, fmt: str, output: Path, verify: bool) -> dict[str, Any]:
        from dynmm.deploy.graphs import check_format
        from dynmm.methods.modality_level.deploy_run import export_modality_level

        return export_modality_level(run_dir, check_format(fmt), output, verify)

    def bench_deploy(self, run_dir: Path, requests: int, threads: list[int]) -> dict[str, Any]:
        from dynmm.methods.modality_level.deploy_bench import bench_export

        return bench_export(run_dir, requests, threads)

    def sweep_summary(self, sweep: SweepRun) -> dict[str, Any]:
        from dynmm.methods.modality_level.sweep import modality_level_summary

        return modality_level_summary(sweep)

    def sweep_table(self, summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        columns = ["model", "MAdds/sample", summary["metric"], "cheapest expert share · oracle gain share"]
        experts = [[e["name"], f"{e['madds']:,.0f}", f"{e['metric']:.4f}", "-"] for e in summary.get("experts", [])]
        shares = [_shares(p) for p in summary["points"]]
        return columns, experts + sweep_rows(self.label, summary["points"], shares)

    def add_commands(self, bench: typer.Typer, search: typer.Typer) -> None:
        from dynmm.methods.modality_level.cli import add_commands

        add_commands(bench)


def _shares(point: dict[str, Any]) -> str:
    """The cheapest expert's share of the samples, the oracle gain share (– when undefined), and a collapse flag."""
    gain = point.get("oracle_gain_share")
    text = f"{next(iter(point['routing'].values())):.2f} · " + ("–" if gain is None else f"{gain:.2f}")
    return text + (" (collapsed)" if point.get("collapsed") else "")


MODALITY_LEVEL = ModalityLevel()
