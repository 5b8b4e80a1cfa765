"""Does a MAdds saving become wall-clock time and memory? Dense, masked and dispatch inference, side by side.

For each batch size and routing, time one inference call (the gate always runs and is paid) in each mode:
- dense: every expert on every row, summed with one-hot weights (what training does);
- masked: every expert on every row, one-hot mask keeps the chosen output (what the published code does);
- dispatch: each expert only on its rows (ours);
and compare dispatch's realized speedup (median time of the other mode / dispatch) with the one the counted
MAdds predict, next to the peak memory each mode allocates. The routing is either forced (a given share of rows
on the cheapest expert, the rest on the most expensive) or the trained gate's own eval-mode choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from dynmm.cost import count_madds
from dynmm.engine.devices import torch_device
from dynmm.engine.timing import (
    device_of,
    environment,
    load_trained,
    median_seconds,
    millions,
    peak_memory_bytes,
    tile_rows,
)
from dynmm.errors import ConfigError
from dynmm.methods.modality_level.export import MODALITY_LEVEL_BUILDERS
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.routing import MODES, Mode
from dynmm.specs import Inputs

Routing = Literal["forced", "trained"]


def forced_choice(batch: int, cheap_fraction: float, seed: int = 0, expensive: int = 1) -> Tensor:
    """round(fraction·batch) rows on expert 0 (the cheap one), the rest on `expensive`, in seeded order."""
    cheap = round(cheap_fraction * batch)
    choice = torch.full((batch,), expensive, dtype=torch.long)
    choice[torch.randperm(batch, generator=torch.Generator().manual_seed(seed))[:cheap]] = 0
    return choice


def gate_choice(model: ModalityLevelDynMM, x: Inputs) -> Tensor:
    """The routing the model's own eval forward takes: the gate's argmax(logits − β·cost)."""
    with torch.inference_mode():
        model(x)
    assert model.last_gate is not None
    return model.last_gate.choice


def _inference_call(model: ModalityLevelDynMM, x: Inputs, mode: Mode, forced: Tensor | None) -> Callable[[], Tensor]:
    """One inference call through the model's own forward in `mode`: the gate runs (and is paid) in every mode
    (a cascade's first expert too); its choice is used unless one is forced."""

    def call() -> Tensor:
        previous = model.mode
        model.set_mode(mode)
        model.forced_choice = forced
        try:
            return model(x)
        finally:
            model.forced_choice = None
            model.set_mode(previous)

    return call


def speedups(values: dict[Mode, float]) -> dict[str, float]:
    """How many times more the other modes spend than dispatch: {"vs_dense": dense / dispatch, ...}."""
    if "dispatch" not in values:
        return {}
    return {f"vs_{mode}": values[mode] / values["dispatch"] for mode in values if mode != "dispatch"}


def dense_tensor_bytes(model: ModalityLevelDynMM, output: Tensor) -> int:
    """Bytes of the (batch, experts, output) tensor stacking every expert's output on every row, the dense tensor a
    masked forward that stacks before masking would hold; `output` is one call's (batch, output) result. Dispatch
    never builds it, and masked and dense here sum the expert outputs instead of stacking them
    (tests/reliability/test_dispatch_memory.py checks both)."""
    return len(model.experts) * output.numel() * output.element_size()


def measure_modes(
    model: ModalityLevelDynMM, x: Inputs, forced: Tensor | None, modes: Sequence[Mode], repeats: int
) -> dict[str, Any]:
    """Counted MAdds per sample, median time and peak memory of one inference call in each mode, and the size of
    the dense tensor for reference."""
    device, batch = device_of(x), next(iter(x.values())).shape[0]
    calls = {mode: _inference_call(model, x, mode, forced) for mode in modes}
    madds = {mode: count_madds(call).total / batch for mode, call in calls.items()}
    seconds = {mode: median_seconds(call, repeats, device=device) for mode, call in calls.items()}
    peaks = {mode: peak_memory_bytes(call, device) for mode, call in calls.items()}  # after timing's warm-up
    with torch.inference_mode():
        output = next(iter(calls.values()))()  # every mode returns the same (batch, output) shape
    return {
        "madds_per_sample": madds,
        "median_ms": {mode: 1e3 * s for mode, s in seconds.items()},
        "peak_memory_bytes": peaks,
        "dense_tensor_bytes": dense_tensor_bytes(model, output),
        "predicted_speedup": speedups(madds),
        "realized_speedup": speedups(seconds),
        "peak_memory_ratio": speedups({mode: float(peak) for mode, peak in peaks.items()}),
    }


def _row(routing: Routing, choice: Tensor, measured: dict[str, Any], target: float | None = None) -> dict[str, Any]:
    """One JSON row; `cheap_fraction` is the share of rows that really went to the cheap expert (for a forced
    routing it can differ from the target `round(target·batch)/batch`, e.g. 0 of 1 row at target 0.25)."""
    row: dict[str, Any] = {"routing": routing, "batch_size": choice.shape[0]}
    row["cheap_fraction"] = float((choice == 0).float().mean())
    if target is not None:
        row["target_cheap_fraction"] = target
    return row | measured


def speed_rows(
    model: ModalityLevelDynMM,
    inputs: Inputs,
    batch_sizes: Sequence[int],
    fractions: Sequence[float],
    repeats: int,
    modes: Sequence[Mode] = MODES,
) -> list[dict[str, Any]]:
    """Forced routings: per (batch size, cheap fraction), that share of rows on the cheapest expert, the rest on
    the most expensive one, so the saving is known in advance whatever the gate learned."""
    model.eval()
    rows = []
    for batch in batch_sizes:
        x = tile_rows(inputs, batch)
        for fraction in fractions:
            choice = forced_choice(batch, fraction, expensive=len(model.experts) - 1).to(device_of(x))
            rows.append(_row("forced", choice, measure_modes(model, x, choice, modes, repeats), target=fraction))
    return rows


def _check_hard_gate(model: ModalityLevelDynMM) -> None:
    if model.gate.mode == "soft":
        raise ConfigError("a soft gate (DynMM-d) mixes every expert on every row: there is nothing to dispatch")


def trained_rows(
    model: ModalityLevelDynMM, inputs: Inputs, batch_sizes: Sequence[int], repeats: int, modes: Sequence[Mode] = MODES
) -> list[dict[str, Any]]:
    """The trained gate's own eval-mode routing on real inputs: the saving a deployment actually gets."""
    _check_hard_gate(model)
    model.eval()
    rows = []
    for batch in batch_sizes:
        x = tile_rows(inputs, batch)
        with torch.inference_mode():
            choice = gate_choice(model, x)
        rows.append(_row("trained", choice, measure_modes(model, x, None, modes, repeats)))
    return rows


SCALES: dict[str, list[str]] = {
    "default": [],
    # A bigger audio network, so that expert compute dominates the gate and the gather/scatter overhead.
    "large": ["--model.encoders.audio.channels=[256, 256, 256]", "--model.encoders.default.channels=[32, 64]"],
}


def avdigits_dynmm(scale: str, rows: int = 256) -> tuple[ModalityLevelDynMM, Inputs]:
    """Image-only expert vs late fusion of image and audio, MLP gate, on AV digits test rows (untrained:
    timing and MAdds do not depend on the weights)."""
    from dynmm.config import load_config
    from dynmm.data.registry import dataset_info, load_dataset
    from dynmm.nn.gates import MLPGate
    from dynmm.nn.static_model import build_static_model

    config = load_config("configs/avdigits/static.yaml", SCALES[scale])
    options = {"seed": 0, "train_size": 2000, "valid_size": 500, "test_size": rows}
    inputs = load_dataset("avdigits", **options)["test"].inputs
    info = dataset_info("avdigits", **options)
    image_only = config.model.model_copy(update={"fusion": "unimodal", "modalities": ["image"]})
    cheap = build_static_model(image_only, info.modalities, info.task)
    full = build_static_model(config.model, info.modalities, info.task)
    gate = MLPGate(2, info.modalities, sorted(info.modalities))
    return ModalityLevelDynMM([cheap, full], gate, inputs), inputs


def load_run(run_dir: str | Path) -> tuple[ModalityLevelDynMM, Inputs]:
    """A run's exported modality-level DynMM (hard gate) and its test inputs."""
    model, inputs = load_trained(run_dir, MODALITY_LEVEL_BUILDERS, ModalityLevelDynMM, "a modality-level DynMM")
    _check_hard_gate(model)
    return model, inputs


def _model_entry(model: ModalityLevelDynMM, source: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"source": source, "expert_madds": model.expert_madds, "gate_madds": model.gate_madds, "rows": rows}


def _results(device: torch.device, repeats: int, modes: Sequence[Mode], models: dict[str, Any]) -> dict[str, Any]:
    return {"environment": environment(device), "repeats": repeats, "modes": list(modes), "models": models}


def run_speed_benchmark(
    scales: Sequence[str],
    batch_sizes: Sequence[int],
    fractions: Sequence[float],
    repeats: int,
    modes: Sequence[Mode] = MODES,
    device: str = "cpu",
) -> dict[str, Any]:
    """Forced routings on untrained AV digits DynMMs, one model per scale, on `device` (e.g. "cuda")."""
    target = resolve_device(device)
    models = {}
    for scale in scales:
        model, inputs = avdigits_dynmm(scale, rows=max(batch_sizes))
        model, inputs = model.to(target), {m: x.to(target) for m, x in inputs.items()}
        rows = speed_rows(model, inputs, batch_sizes, fractions, repeats, modes)
        models[scale] = _model_entry(model, f"untrained AV digits DynMM, scale {scale}", rows)
    return _results(target, repeats, modes, models)


def run_trained_benchmark(
    run_dir: str | Path,
    batch_sizes: Sequence[int],
    fractions: Sequence[float],
    repeats: int,
    modes: Sequence[Mode] = MODES,
    device: str = "cpu",
) -> dict[str, Any]:
    """A trained run: its gate's own routing on the test inputs, then the forced shares on the same model."""
    target = resolve_device(device)
    model, inputs = load_run(run_dir)
    model, inputs = model.to(target), {m: x.to(target) for m, x in inputs.items()}
    rows = trained_rows(model, inputs, batch_sizes, repeats, modes)
    rows += speed_rows(model, inputs, batch_sizes, fractions, repeats, modes)
    return _results(device_of(inputs), repeats, modes, {Path(run_dir).name: _model_entry(model, str(run_dir), rows)})


def resolve_device(name: str) -> torch.device:
    """A torch device the benchmark can use; a clear error where it is not there (e.g. cuda without a GPU)."""
    return torch_device(name, "--device")


def parse_modes(text: str) -> list[Mode]:
    """`--modes dense,dispatch` -> ["dense", "dispatch"], in the canonical order, unknown names refused."""
    names = [m for m in text.split(",") if m]
    if not names or any(m not in MODES for m in names):
        raise ConfigError(f"--modes takes a comma-separated subset of {list(MODES)}, got {text!r}")
    return [m for m in MODES if m in names]


def _setting(row: dict[str, Any]) -> dict[str, str]:
    return {"batch": str(row["batch_size"]), "routing": row["routing"], "cheap": f"{row['cheap_fraction']:.2f}"}


def time_table(entry: dict[str, Any], modes: Sequence[str]) -> list[dict[str, str]]:
    """The CLI's cost table for one model: per mode MAdds (M) and median ms, then dispatch's speedups."""
    table = []
    for row in entry["rows"]:
        cells = _setting(row)
        cells |= {f"MAdds M {mode}": millions(row["madds_per_sample"][mode]) for mode in modes}
        cells |= {f"ms {mode}": f"{row['median_ms'][mode]:.2f}" for mode in modes}
        for key, value in row["predicted_speedup"].items():
            versus = key.removeprefix("vs_")
            cells[f"pred. vs {versus}"] = f"{value:.2f}×"
            cells[f"real. vs {versus}"] = f"{row['realized_speedup'][key]:.2f}×"
        table.append(cells)
    return table


def memory_table(entry: dict[str, Any], modes: Sequence[str]) -> list[dict[str, str]]:
    """The CLI's memory table for one model: per mode the peak MiB one inference call allocates, the other modes'
    peak over dispatch's, and the dense (batch, experts, output) tensor's KiB for reference."""
    table = []
    for row in entry["rows"]:
        cells = _setting(row)
        cells |= {f"peak MiB {mode}": f"{row['peak_memory_bytes'][mode] / 2**20:.2f}" for mode in modes}
        ratios = row.get("peak_memory_ratio", {})
        cells |= {f"peak {key.removeprefix('vs_')} / dispatch": f"{v:.2f}×" for key, v in ratios.items()}
        if "dense_tensor_bytes" in row:
            cells["dense tensor KiB"] = f"{row['dense_tensor_bytes'] / 2**10:.1f}"
        table.append(cells)
    return table
