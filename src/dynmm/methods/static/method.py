"""Static fusion as a method: the model `dynmm train` trains when a config names no method section."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dynmm.config import RunConfig
from dynmm.methods.base import Method

if TYPE_CHECKING:
    import typer

    from dynmm.engine.export import Builder
    from dynmm.engine.run_folder import RunResult


class StaticFusion(Method):
    name = "static"
    label = "static"

    def train(self, config: RunConfig, resume: bool) -> RunResult:
        from dynmm.methods.static.run import train_static_run

        return train_static_run(config, resume)

    def builders(self) -> dict[str, Builder]:
        from dynmm.methods.static.export import STATIC_BUILDERS

        return STATIC_BUILDERS

    def owns_run(self, run_dir: Path, model_type: str | None) -> bool:
        return False  # a static run has no report of its own; `dynmm report` says what a DynMM run would hold

    def add_commands(self, bench: typer.Typer, search: typer.Typer) -> None:
        from dynmm.methods.static.cli import add_commands

        add_commands(bench)


STATIC = StaticFusion()
