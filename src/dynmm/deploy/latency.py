"""Batch-1 latency as a server sees it: one request (one row) at a time, each timed on its own, summarised by
percentiles; and how much of the MAdds-predicted speedup the measured latencies realize."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)


def time_requests(call: Callable[[int], Any], rows: Sequence[int], warmup: int = 20) -> np.ndarray:
    """Seconds per call of `call(row)` for each row in `rows` (after `warmup` untimed calls)."""
    for row in rows[:warmup]:
        call(row)
    seconds = np.empty(len(rows))
    for i, row in enumerate(rows):
        start = time.perf_counter()
        call(row)
        seconds[i] = time.perf_counter() - start
    return seconds


def summary(seconds: np.ndarray) -> dict[str, float]:
    """Milliseconds at each percentile, the mean, and the number of requests."""
    if seconds.size == 0:
        return {"requests": 0}
    values = {f"p{q}_ms": float(np.percentile(seconds, q) * 1e3) for q in PERCENTILES}
    return {"requests": int(seconds.size), "mean_ms": float(seconds.mean() * 1e3), **values}


def realized(reference: dict[str, float], candidate: dict[str, float], predicted: float) -> dict[str, float]:
    """Speedup of `candidate` over `reference` at the median, against the MAdds-predicted one."""
    speedup = reference["p50_ms"] / candidate["p50_ms"]
    return {"predicted_speedup": predicted, "realized_speedup": speedup, "realized_over_predicted": speedup / predicted}


def runtime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
