"""Train one sampled fusion architecture on backbone features and score it: the unit of work of the search.

Why a plain loop and not a Lightning Trainer: a search trains hundreds of networks of a few linear layers for
one or two epochs over cached tensors; a Trainer's setup per fit would cost more than the fit. The backbones,
which are real training runs, do use Lightning (`dynmm train`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from dynmm.engine.task import predictions, task_loss
from dynmm.io import atomic_write
from dynmm.methods.mfas.feature_cache import FeatureSource
from dynmm.methods.mfas.space import Architecture, FusionNetwork, SearchSpace
from dynmm.report.metrics import build_metrics
from dynmm.specs import TaskSpec


@dataclass(frozen=True)
class FusionTraining:
    """How every sampled architecture is trained."""

    width: int
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    device: torch.device = torch.device("cpu")


class WeightStore:
    """Fusion weights shared across sampled architectures, keyed by `FusionNetwork.shared_modules()` names
    (position and shape); an architecture starts from what earlier ones with the same keys left."""

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}

    def load_into(self, network: FusionNetwork) -> int:
        """Copy stored weights into `network`; returns how many of its modules were found."""
        found = 0
        for key, module in network.shared_modules().items():
            names = [n for n, _ in module.named_parameters()]
            if all(f"{key}/{n}" in self.tensors for n in names):
                with torch.no_grad():
                    for n, p in module.named_parameters():
                        p.copy_(self.tensors[f"{key}/{n}"])  # across devices when the network is on a GPU
                found += 1
        return found

    def save_from(self, network: FusionNetwork) -> None:
        for key, module in network.shared_modules().items():
            for n, p in module.named_parameters():
                self.tensors[f"{key}/{n}"] = p.detach().cpu().clone()

    def write(self, path: Any) -> None:
        atomic_write(path, lambda tmp: save_file(dict(self.tensors), str(tmp)))

    @classmethod
    def read(cls, path: Any) -> WeightStore:
        store = cls()
        store.tensors = dict(load_file(str(path)))
        return store


@dataclass
class Evaluation:
    """What training one architecture gave: its metrics per split and the wall-clock it took."""

    metrics: dict[str, dict[str, float]]
    train_seconds: float
    network: FusionNetwork


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def _batch(
    source: FeatureSource, split: str, rows: Tensor, keys: list[str], device: torch.device
) -> tuple[dict[str, Tensor], Tensor]:
    features = {k: v.to(device, non_blocking=True) for k, v in source.features(split, rows, keys).items()}
    return features, source.target(split, rows).to(device)


def score(
    network: FusionNetwork, source: FeatureSource, split: str, task: TaskSpec, batch_size: int = 4096
) -> dict[str, float]:
    """The task's metrics (and mean loss) of `network` on a whole split."""
    device = next(network.parameters()).device
    metrics = build_metrics(task).to(device)
    keys = sorted(network.input_dims)
    loss_sum, n = 0.0, source.size(split)
    network.eval()
    with torch.no_grad():
        for rows in torch.arange(n).split(batch_size):
            features, target = _batch(source, split, rows, keys, device)
            outputs = network(features)
            loss_sum += float(task_loss(task, outputs, target)) * rows.shape[0]
            metrics.update(predictions(task, outputs), target)
    results = {name: float(value) for name, value in metrics.compute().items()}
    results["loss"] = loss_sum / max(n, 1)
    return results


def train_architecture(
    space: SearchSpace,
    architecture: Architecture,
    source: FeatureSource,
    task: TaskSpec,
    training: FusionTraining,
    seed: int,
    store: WeightStore | None = None,
    splits: tuple[str, ...] = ("valid",),
    epochs: int | None = None,
) -> Evaluation:
    """Build the architecture's network (from `store`'s shared weights when given), train it on `train` and
    score it on `splits`. Initialisation and data order depend only on `seed`, so a resumed search repeats
    exactly what an uninterrupted one does."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = FusionNetwork(space, architecture, training.width, task.output_dim).to(training.device)
    if store is not None:
        store.load_into(network)
    keys = sorted(network.input_dims)
    optimizer = torch.optim.Adam(network.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    network.train()
    for _ in range(training.epochs if epochs is None else epochs):
        for rows in _batches(source.size("train"), training.batch_size, generator):
            features, target = _batch(source, "train", rows, keys, training.device)
            loss = task_loss(task, network(features), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if training.device.type == "cuda":
        torch.cuda.synchronize(training.device)  # the clock must include the queued kernels
    seconds = time.perf_counter() - start
    if store is not None:
        store.save_from(network)
    return Evaluation({split: score(network, source, split, task) for split in splits}, seconds, network)
