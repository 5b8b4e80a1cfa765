"""Several training processes (DDP): which one is the main process, and how the others wait for it.

Every rank runs the whole program, from the command line on: torchrun and SLURM start all ranks at once;
Lightning's own launcher (`--train.devices=2 --train.strategy=ddp`) starts the other ranks at the first
`trainer.fit`, re-running the same command line. So every rank takes the same decisions (train, resume, reuse a
finished stage) and calls the same fits in the same order, and:

- only the main process (global rank 0) writes files: run folders, configs, exported weights, metrics, reports,
  stage markers (Lightning already writes checkpoints and logs on rank 0 only);
- the other ranks never look for "already exists" problems (the main process may have created the folder) and
  never create anything, so the main process's checks see only what an earlier run left;
- after the main process writes what the others read next (an expert's export, a stage's weights), every rank
  meets at `wait_for_main_process`, and the others read back what it wrote, so all ranks return the same result.

Between `trainer.fit` calls the process group stays up, so the stages of a recipe reuse it. Without a process
group (one process, or before Lightning's launcher started the others) the waiting is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from dynmm.config import TrainConfig

T = TypeVar("T")

WAIT_TIMEOUT = timedelta(hours=24)
"""How long the other ranks wait for the main process (evaluation and reports of a big run take a while); a main
process that dies closes its connections, which ends the wait at once with an error."""

_waiting: tuple[Any, Any] | None = None  # (the world group it belongs to, a gloo group with WAIT_TIMEOUT)


def process_group_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Global rank 0, or the only process. Before a process group exists the rank comes from the launcher's
    environment: RANK (torchrun), LOCAL_RANK and NODE_RANK (Lightning's launcher), SLURM_PROCID (srun)."""
    if process_group_ready():
        return dist.get_rank() == 0
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if int(env.get("LOCAL_RANK", 0)) != 0 or int(env.get("NODE_RANK", env.get("GROUP_RANK", 0))) != 0:
        return False
    launcher = _external_launcher()
    return launcher is None or launcher.global_rank() == 0


def _external_launcher() -> Any:
    """The cluster environment Lightning will pick when something else started every rank (the same order of
    preference as Lightning's): torchrun (torchelastic), then SLURM's srun. None for Lightning's own launcher."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for kind in (TorchElasticEnvironment, SLURMEnvironment):
        if kind.detect():
            return kind()
    return None


def init_from_launcher(train: TrainConfig) -> None:
    """When torchrun or srun started every rank, form the process group now, before any file is looked at, so
    that the ranks can wait for each other from the first step; Lightning's DDP strategy finds it and uses it.
    (Lightning's own launcher starts the other ranks at the first fit, which forms the group then.)"""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if process_group_ready():
        return
    launcher = _external_launcher()
    if launcher is None or launcher.world_size() <= 1:
        return
    if isinstance(launcher, SLURMEnvironment) and train.devices * train.num_nodes != launcher.world_size():
        # SLURM's variables are also set in a batch script that runs one process without srun: form a group
        # only when the configured processes are the job's tasks (what Lightning expects of srun).
        return
    os.environ["MASTER_ADDR"] = launcher.main_address
    os.environ["MASTER_PORT"] = str(launcher.main_port)
    dist.init_process_group(backend(train), rank=launcher.global_rank(), world_size=launcher.world_size())


def backend(train: TrainConfig) -> str:
    """The backend Lightning's DDP strategy would choose for the configured accelerator: nccl on GPUs, else gloo."""
    gpu = train.accelerator in {"gpu", "cuda"} or (train.accelerator == "auto" and torch.cuda.is_available())
    return "nccl" if gpu else "gloo"


def wait_for_main_process() -> None:
    """Every rank waits here until all have arrived (the main process once it has written what the others read).

    Waits on a gloo group of its own with a long timeout, so a long evaluation on the main process does not hit
    the default group's 30 min limit, and no GPU is involved in the waiting."""
    global _waiting
    if not process_group_ready():
        return
    world = dist.group.WORLD
    if _waiting is None or _waiting[0] is not world:
        _waiting = (world, dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT))
    dist.barrier(group=_waiting[1])


def on_main_process(work: Callable[[], T], read_back: Callable[[], T]) -> T:
    """`work` (which writes files) on the main process only; the other ranks wait until it is done, then return
    `read_back()` (reading what it wrote), so that every rank goes on with the same result."""
    if is_main_process():
        with metrics_stay_local():
            result = work()
        wait_for_main_process()
        return result
    wait_for_main_process()
    return read_back()


@contextmanager
def metrics_stay_local() -> Iterator[None]:
    """torchmetrics gathers a metric's state from every rank when it computes, as soon as a process group exists;
    work done by the main process alone (evaluation after training) would wait there forever for the others.
    Metrics created inside this block compute from this process's data only."""
    if not process_group_ready():
        yield
        return
    import torchmetrics.metric

    original = torchmetrics.metric.jit_distributed_available  # read by Metric.__init__, so a rename fails here
    torchmetrics.metric.jit_distributed_available = lambda: False  # type: ignore[assignment]
    try:
        yield
    finally:
        torchmetrics.metric.jit_distributed_available = original  # type: ignore[assignment]
