"""MFAS as a method: the `mfas` config section; a search (`dynmm search mfas`), not a `dynmm train` run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dynmm.errors import ConfigError
from dynmm.methods.base import Method
from dynmm.methods.mfas.config import MFASConfig

if TYPE_CHECKING:
    import typer


class MFASMethod(Method):
    name = "mfas"
    section = "mfas"
    config = MFASConfig
    trains = False
    label = "MFAS"

    def owns_run(self, run_dir: Path, model_type: str | None) -> bool:
        return (run_dir / "mfas.json").is_file()

    def report(self, run_dir: Path, sweep: Path | None, baselines: Path | None) -> Path:
        from dynmm.methods.mfas.report import rebuild_mfas_report

        if sweep is not None or baselines is not None:
            raise ConfigError("--sweep and --baselines do not apply to an MFAS search (it has its random search)")
        return rebuild_mfas_report(run_dir)

    def add_commands(self, bench: typer.Typer, search: typer.Typer) -> None:
        from dynmm.methods.mfas.cli import add_commands

        add_commands(search)


MFAS = MFASMethod()
