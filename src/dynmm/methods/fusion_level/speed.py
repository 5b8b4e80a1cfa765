"""Does progressive depth skipping become wall-clock time? A trained fusion-level DynMM run, masked (every depth
stage and every op on every image, as the papers' code) vs dispatch (only the depth stages some later cell needs,
each op on its own images), with MAdds counted on the timed calls and peak memory per call."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from dynmm.cost import count_madds
from dynmm.engine.timing import environment, load_trained, median_seconds, peak_memory_bytes, tile_rows
from dynmm.methods.fusion_level.export import FUSION_LEVEL_BUILDERS
from dynmm.methods.fusion_level.model import FusionLevelDynMM
from dynmm.routing import Mode

TIMED: tuple[Mode, ...] = ("masked", "dispatch")


def fusion_level_speed(run_dir: str | Path, batch_sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    model, inputs = load_trained(run_dir, FUSION_LEVEL_BUILDERS, FusionLevelDynMM, "a fusion-level DynMM")
    rows = []
    for batch in batch_sizes:
        x = tile_rows(inputs, batch)
        row: dict[str, Any] = {"batch_size": batch, "madds_per_sample": {}, "median_ms": {}, "peak_memory_bytes": {}}
        call = partial(model, x)
        for mode in TIMED:
            model.set_mode(mode)
            row["madds_per_sample"][mode] = count_madds(call).total / batch
            row["median_ms"][mode] = 1e3 * median_seconds(call, repeats)
            row["peak_memory_bytes"][mode] = peak_memory_bytes(call)
        assert model.last_choice is not None
        row["aux_madds_per_sample"] = float(model.aux_madds(model.last_choice).mean())
        row["predicted_speedup"] = row["madds_per_sample"]["masked"] / row["madds_per_sample"]["dispatch"]
        row["realized_speedup"] = row["median_ms"]["masked"] / row["median_ms"]["dispatch"]
        rows.append(row)
    model.set_mode("dispatch")
    return {"environment": environment(), "repeats": repeats, "run": str(run_dir), "rows": rows}
