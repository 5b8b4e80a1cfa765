"""What a method is to the rest of dynmm: one small interface, one object per method package.

`dynmm train`, `eval`, `sweep`, `report` and `bench` reach a method only through this interface and the registry
(`dynmm.methods.registry`), never through `if config.<method>` chains. A method package holds everything of its
method (config section, model, LightningModule, recipe, evaluation, report, benchmark, export) and one module,
`method.py`, that describes it with a `Method`. That module stays light (heavy parts are imported when a hook
runs), because the registry imports every method's description when dynmm starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynmm.config import RunConfig, Section, replace_section
from dynmm.errors import ConfigError

if TYPE_CHECKING:
    import typer

    from dynmm.engine.export import Builder, ExportedModel
    from dynmm.engine.run_folder import RunResult
    from dynmm.engine.sweep import SweepRun
    from dynmm.report.exported import Probe


class Method:
    """A method's hooks; the defaults say "this method does not do that".

    Attributes:
        name: the registry name (and the `method` field of its sweep summaries).
        section: the top-level config key this method owns (None: the static model, chosen when no section is
            given), validated by `config`.
        config: the section's pydantic model.
        trains: whether `dynmm train` runs it (MFAS is a search: `dynmm search mfas`).
        label: how tables name its points ("DynMM", "AdaMML").
        shared_stage: for a λ sweep, the section key that names the folder of the first stage every point shares
            (e.g. "experts_dir") and that folder's name under the sweep (e.g. "experts").
    """

    name: str = ""
    section: str | None = None
    config: type[Section] | None = None
    trains: bool = True
    label: str = ""
    shared_stage: tuple[str, str] | None = None

    def train(self, config: RunConfig, resume: bool) -> RunResult:
        """Train `config` into its run folder (resume: continue from the last checkpoints) and evaluate it."""
        raise ConfigError(f"{self.name} runs are not trained with `dynmm train`")

    def builders(self) -> dict[str, Builder]:
        """model.json `model_type` -> the function that rebuilds this method's model from an export."""
        return {}

    def evaluate_exported(
        self, run_dir: Path, exported: ExportedModel, probe: Probe
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """`dynmm eval`: metrics of the exported model under `probe`, and method facts (MAdds, routing, β)."""
        from dynmm.report.exported import evaluate_plain

        if probe.beta is not None or probe.target_madds is not None:
            kind = exported.model_type
            raise ConfigError(f"--beta and --target-madds need a DynMM run; {run_dir} holds a {kind} model")
        return evaluate_plain(exported, probe), {}

    def owns_run(self, run_dir: Path, model_type: str | None) -> bool:
        """Whether a finished run folder is this method's (for `dynmm report`)."""
        return model_type is not None and model_type in self.builders()

    def report(self, run_dir: Path, sweep: Path | None, baselines: Path | None) -> Path:
        """Rebuild RUN/report.html; returns its path."""
        raise ConfigError(f"{run_dir} holds a {self.name} run, which has no report")

    def check_sweep(self, config: RunConfig) -> None:
        """Refuse a config this method cannot sweep λ over (before anything trains)."""

    def sweep_point(self, config: RunConfig, root: Path, resource_weight: float) -> RunConfig:
        """The run of one λ, pointed at the sweep's shared first stage under `root` (`shared_stage`)."""
        from dynmm.engine.sweep import point_name

        if self.section is None or self.shared_stage is None:
            raise ConfigError(f"{self.name} has no λ to sweep")
        key, folder = self.shared_stage
        point = config.model_copy(update={"name": point_name(resource_weight), "output_dir": str(root)})
        return replace_section(point, self.section, resource_weight=resource_weight, **{key: str(root / folder)})

    def sweep_summary(self, sweep: SweepRun) -> dict[str, Any]:
        """The sweep's JSON summary: one accuracy–MAdds point per λ, and what the method adds to it."""
        raise NotImplementedError

    def sweep_table(self, summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        """`dynmm sweep`'s printed table of a summary: its columns and rows (references, then one per λ)."""
        raise NotImplementedError

    def deploy(self, run_dir: Path, fmt: str, output: Path, verify: bool) -> dict[str, Any]:
        """`dynmm export`: write the run's model as a deployable artifact in `output`; returns its manifest."""
        raise ConfigError(f"{run_dir} holds a {self.name} run; `dynmm export` does not export {self.name} models yet")

    def bench_deploy(self, run_dir: Path, requests: int, threads: list[int]) -> dict[str, Any]:
        """`dynmm bench export`: batch-1 latency of the exported and eager model against late fusion."""
        raise ConfigError(f"{run_dir} holds a {self.name} run; `dynmm bench export` does not time {self.name} models")

    def add_commands(self, bench: typer.Typer, search: typer.Typer) -> None:
        """Add this method's `dynmm bench ...` and `dynmm search ...` commands."""


def sweep_rows(label: str, points: Sequence[dict[str, Any]], shares: Sequence[str]) -> list[list[str]]:
    """One table row per λ point: its name, MAdds, metric and the method's own last column."""
    return [
        [f"{label} λ={p['lambda']:g}", f"{p['madds_per_sample']:,.0f}", f"{p['metric']:.4f}", share]
        for p, share in zip(points, shares, strict=True)
    ]
