"""Does a MAdds saving become wall-clock time? Masked (papers' way) vs dispatch inference, forced routings.

For each batch size and each fraction of samples routed to the cheap expert, time the gate plus
- masked: every expert on every row, one-hot mask keeps the chosen output (what the published code does);
- dispatch: each expert only on its rows (ours);
and compare the realized speedup (median time masked / dispatch) with the one the counted MAdds predict.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dynmm.cost import count_madds
from dynmm.models.modality_level import ModalityLevelDynMM
from dynmm.routing import Mode, route, take_rows
from dynmm.specs import Inputs


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median wall-clock of `fn()` over `repeats` calls after `warmup` untimed ones (no grad)."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def forced_choice(batch: int, cheap_fraction: float, seed: int = 0) -> Tensor:
    """round(fraction·batch) rows on expert 0 (the cheap one), the rest on the last expert, in seeded order."""
    cheap = round(cheap_fraction * batch)
    choice = torch.full((batch,), 1, dtype=torch.long)
    choice[torch.randperm(batch, generator=torch.Generator().manual_seed(seed))[:cheap]] = 0
    return choice


def tile_rows(inputs: Inputs, batch: int) -> Inputs:
    """A batch of `batch` rows cycling through the given ones."""
    n = next(iter(inputs.values())).shape[0]
    return take_rows(inputs, torch.arange(batch) % n)


MEASURED: tuple[Mode, ...] = ("masked", "dispatch")


def _gate_then_route(
    model: ModalityLevelDynMM, experts: list[nn.Module], x: Inputs, choice: Tensor, mode: Mode
) -> Callable[[], Tensor]:
    """One inference call with a forced routing; the gate runs (and is paid) in every mode."""

    def call() -> Tensor:
        model.gate.logits(x)
        return route(experts, x, choice, None, mode)

    return call


def speed_rows(
    model: ModalityLevelDynMM, inputs: Inputs, batch_sizes: Sequence[int], fractions: Sequence[float], repeats: int
) -> list[dict[str, Any]]:
    """One row per (batch size, cheap fraction): MAdds per sample and median times of masked and dispatch."""
    model.eval()
    experts: list[nn.Module] = [model.experts[0], model.experts[len(model.experts) - 1]]
    rows = []
    for batch in batch_sizes:
        x = tile_rows(inputs, batch)
        for fraction in fractions:
            choice = forced_choice(batch, fraction)

            calls = {mode: _gate_then_route(model, experts, x, choice, mode) for mode in MEASURED}
            madds = {mode: count_madds(call).total / batch for mode, call in calls.items()}
            seconds = {mode: median_seconds(call, repeats) for mode, call in calls.items()}
            rows.append(
                {
                    "batch_size": batch,
                    "cheap_fraction": fraction,
                    "madds_per_sample": madds,
                    "median_ms": {k: 1e3 * v for k, v in seconds.items()},
                    "predicted_speedup": madds["masked"] / madds["dispatch"],
                    "realized_speedup": seconds["masked"] / seconds["dispatch"],
                }
            )
    return rows


def environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }


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
    from dynmm.models.static import build_static_model
    from dynmm.nn.gates import MLPGate

    config = load_config("configs/avdigits/static.yaml", SCALES[scale])
    options = {"seed": 0, "train_size": 2000, "valid_size": 500, "test_size": rows}
    inputs = load_dataset("avdigits", **options)["test"].inputs
    info = dataset_info("avdigits", **options)
    image_only = dataclasses.replace(config.model, fusion="unimodal", modalities=["image"])
    cheap = build_static_model(image_only, info.modalities, info.task)
    full = build_static_model(config.model, info.modalities, info.task)
    gate = MLPGate(2, info.modalities, sorted(info.modalities))
    return ModalityLevelDynMM([cheap, full], gate, inputs), inputs


def run_speed_benchmark(
    scales: Sequence[str], batch_sizes: Sequence[int], fractions: Sequence[float], repeats: int
) -> dict[str, Any]:
    results: dict[str, Any] = {"environment": environment(), "repeats": repeats, "scales": {}}
    for scale in scales:
        model, inputs = avdigits_dynmm(scale, rows=max(batch_sizes))
        results["scales"][scale] = {
            "expert_madds": model.expert_madds,
            "gate_madds": model.gate_madds,
            "rows": speed_rows(model, inputs, batch_sizes, fractions, repeats),
        }
    return results
