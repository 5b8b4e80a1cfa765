"""Timing and memory of inference calls, shared by every method's speed benchmark.

Median wall-clock of repeated calls (CUDA synchronised), the peak memory one call allocates, the environment the
numbers depend on, and a trained run's model with its test inputs.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from dynmm.engine.export import Builder, exported_model_type, load_export
from dynmm.errors import ConfigError
from dynmm.routing import take_rows
from dynmm.specs import Inputs


def device_of(inputs: Inputs) -> torch.device:
    return next(iter(inputs.values())).device


def synchronize(device: torch.device) -> None:
    """CUDA kernels run asynchronously: wait for them, or the clock stops before the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 3, device: torch.device | None = None) -> float:
    """Median wall-clock of `fn()` over `repeats` calls after `warmup` untimed ones (no grad)."""
    device = device or torch.device("cpu")
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_allocations(prof: torch.profiler.profile) -> list[tuple[int, int]]:
    """(time ns, bytes) of every CPU-allocator call the profiler saw, in time order; bytes < 0 for a free.

    Read from the raw event tree because `prof.events()` folds the allocations made inside an op into that op's
    net memory (losing the intra-op peak) and lists as `[memory]` only the ones made outside any op.
    """
    from torch._C._profiler import _ExtraFields_Allocation

    results = prof.profiler.kineto_results if prof.profiler is not None else None
    if results is None:
        raise RuntimeError("torch.profiler returned no results; cannot measure peak memory")
    found, stack = [], list(results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        fields = event.extra_fields
        if isinstance(fields, _ExtraFields_Allocation) and fields.device.type == "cpu":
            found.append((event.start_time_ns, fields.alloc_size))
    return sorted(found, key=lambda event: (event[0], -event[1]))  # a tie counts the allocation first


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The profiler's native layer prints two log lines per session straight to file descriptor 2, which no
    logging setting turns off; hide them (Python exceptions still propagate)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Highest running sum of allocated minus freed bytes while `fn()` runs (see peak_memory_bytes)."""
    from torch.profiler import ProfilerActivity, profile

    with (
        _native_stderr_silenced(),
        torch.inference_mode(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        fn()
    live = peak = 0
    for _, size in _cpu_allocations(prof):
        live += size
        peak = max(peak, live)
    return peak


def _cuda_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """The caching allocator's own high-water mark over the call, minus what was live before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | None = None) -> int:
    """Peak bytes torch allocates during one `fn()` call, above what was live before it (0 if nothing).

    CPU: torch.profiler with profile_memory=True records every allocation and free of PyTorch's CPU allocator with a
    timestamp and size; their running sum in time order is the memory the call holds at each moment, so its maximum
    is the call's peak (memory allocated outside PyTorch's allocator, e.g. by a BLAS library, is not seen).
    CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats (bytes in tensors, not the cache).
    Call it after a warm-up, so one-off caches (e.g. oneDNN primitives) do not count as the call's memory.
    """
    device = device or torch.device("cpu")
    return _cuda_peak_bytes(fn, device) if device.type == "cuda" else _cpu_peak_bytes(fn)


def tile_rows(inputs: Inputs, batch: int) -> Inputs:
    """A batch of `batch` rows cycling through the given ones."""
    first = next(iter(inputs.values()))
    return take_rows(inputs, torch.arange(batch, device=first.device) % first.shape[0])


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """What the timings depend on, so that results from different machines are not compared blindly."""
    device = device or torch.device("cpu")
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


M = TypeVar("M", bound=torch.nn.Module)


def load_trained(run_dir: str | Path, builders: Mapping[str, Builder], kind: type[M], what: str) -> tuple[M, Inputs]:
    """A run's exported model (rebuilt by a method's own `builders`), which must be a `kind` (`what` names it in
    the error), in eval mode, and its data set's test inputs (the rows it is meant to route): what a speed
    benchmark or an export needs."""
    from dynmm.data.registry import load_dataset

    model_type = exported_model_type(run_dir)
    if model_type is not None and model_type not in builders:
        raise ConfigError(f"{run_dir}: this needs {what} run, but the run exported a {model_type}")
    exported = load_export(run_dir, builders)
    if not isinstance(exported.model, kind):
        raise ConfigError(
            f"{run_dir}: this needs {what} run, but the run exported a "
            f"{type(exported.model).__name__} ({exported.model_type})"
        )
    inputs = load_dataset(exported.data_config.name, **exported.data_config.options)["test"].inputs
    return exported.model.eval(), inputs


def millions(value: float) -> str:
    """MAdds as millions with two decimals, for the printed tables."""
    return f"{value / 1e6:.2f}"
