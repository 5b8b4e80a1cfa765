"""Batch-1 latency as a server sees it: one request (one row) at a time, each timed on its own, summarised by
percentiles; and how much of the MAdds-predicted speedup the measured latencies realize."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

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


def cycled_rows(available: int, requests: int) -> list[int]:
    """`requests` row indices over `available` test rows: every row once before any repeats."""
    return [i % available for i in range(requests)]


def onnx_request(
    run: Any, arrays: Mapping[str, np.ndarray], names: Sequence[str] | None = None
) -> Callable[[int], Any]:
    """One batch-1 request of an onnxruntime session: row r of each named input (default: all of `arrays`)."""
    keys = list(arrays) if names is None else list(names)
    return lambda r: run.run(None, {m: arrays[m][r : r + 1] for m in keys})


def thread_counts(threads: Sequence[int]) -> Iterator[tuple[int | None, int]]:
    """For each requested count (0 = all cores): (onnxruntime's intra-op threads, None for its default; the
    count torch is set to, recorded in the results). Torch's own count is restored afterwards, also on error."""
    default = torch.get_num_threads()
    try:
        for count in threads:
            torch.set_num_threads(count or default)
            yield count or None, count or default
    finally:
        torch.set_num_threads(default)


def bench_environment() -> dict[str, Any]:
    """What batch-1 latencies depend on: torch, the machine, onnxruntime's version and execution providers."""
    import onnxruntime

    from dynmm.deploy.runner import providers
    from dynmm.engine.timing import environment

    return {**environment(), "onnxruntime": str(onnxruntime.__version__), "providers": providers()}
