"""Does AdaMML's skipping become wall-clock time? A trained AdaMML run timed three ways on the same clips:

- late fusion, all segments: every recognition net on every (clip, segment), no policy (the baseline AdaMML is
  measured against);
- masked: the policy runs, then every net on every pair and the skipped ones are zeroed (the papers' code);
- dispatch: the policy runs, then each net only on the pairs it keeps (ours).

MAdds are counted on the timed calls themselves, so "predicted" (late fusion MAdds / dispatch MAdds) and
"realized" (late fusion time / dispatch time) describe the same work. Random keep rates (the policy does not
run) show how dispatch scales with the fraction kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from dynmm.cost import count_madds
from dynmm.engine.timing import environment, load_trained, median_seconds, peak_memory_bytes, tile_rows
from dynmm.errors import ConfigError
from dynmm.methods.adamml.export import ADAMML_BUILDERS
from dynmm.methods.adamml.model import AdaMML, PolicyMode
from dynmm.routing import Mode
from dynmm.specs import Inputs

SETTINGS: dict[str, tuple[PolicyMode, Mode]] = {
    "late_fusion_all": ("all", "dispatch"),
    "masked": ("learned", "masked"),
    "dispatch": ("learned", "dispatch"),
}


def _measure(model: AdaMML, call: Callable[[], Any], batch: int, repeats: int) -> dict[str, float]:
    return {
        "madds_per_clip": count_madds(call).total / batch,
        "median_ms": 1e3 * median_seconds(call, repeats),
        "peak_memory_bytes": float(peak_memory_bytes(call)),
    }


def _setting(model: AdaMML, x: Inputs, policy: PolicyMode, mode: Mode, keep_rate: float | None = None) -> Any:
    def call() -> Any:
        model.set_policy_mode(policy, keep_rate=keep_rate, seed=0 if keep_rate is not None else None)
        model.set_mode(mode)
        with torch.no_grad():
            return model(x)

    return call


def adamml_speed(
    run_dir: str | Path, batch_sizes: Sequence[int], repeats: int, keep_rates: Sequence[float] = ()
) -> dict[str, Any]:
    """Late fusion vs masked vs dispatch per batch size; then dispatch with random keep rates."""
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    model, inputs = load_trained(run_dir, ADAMML_BUILDERS, AdaMML, "an AdaMML")
    rows = []
    for batch in batch_sizes:
        x = tile_rows(inputs, batch)
        row: dict[str, Any] = {"batch_size": batch}
        for name, (policy, mode) in SETTINGS.items():
            row[name] = _measure(model, _setting(model, x, policy, mode), batch, repeats)
            if name == "dispatch":
                assert model.last_keep is not None
                row["keep_rate"] = {m: float(k.float().mean()) for m, k in model.last_keep.items()}
        base, fast = row["late_fusion_all"], row["dispatch"]
        row["predicted_speedup"] = base["madds_per_clip"] / fast["madds_per_clip"]
        row["realized_speedup"] = base["median_ms"] / fast["median_ms"]
        row["realized_over_predicted"] = row["realized_speedup"] / row["predicted_speedup"]
        row["dispatch_over_masked"] = row["masked"]["median_ms"] / fast["median_ms"]
        for rate in keep_rates:
            random = _measure(model, _setting(model, x, "random", "dispatch", rate), batch, repeats)
            random["predicted_speedup"] = base["madds_per_clip"] / random["madds_per_clip"]
            random["realized_speedup"] = base["median_ms"] / random["median_ms"]
            row.setdefault("random_keep", {})[f"{rate:g}"] = random
        rows.append(row)
    model.set_policy_mode("learned")
    model.set_mode("dispatch")
    return {"environment": environment(), "repeats": repeats, "run": str(run_dir), "rows": rows}
