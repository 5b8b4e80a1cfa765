"""Sequential model-based search (MFAS) and the random-search baseline, resumable after every step.

A search folder holds `state.json` (every evaluated architecture with its scores, every step's log, the picks
to expand next) and, for step n, `surrogate.<n>.safetensors` and `shared.<n>.safetensors`. Weights are written
first and the state last, so a search killed at any moment resumes from its last complete step; every random
draw is seeded by (seed, step) and every training by (seed, evaluation), so the resumed search does exactly
what an uninterrupted one would have.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dynmm.errors import DataError
from dynmm.io import atomic_write, atomic_write_json
from dynmm.methods.mfas.evaluate_architecture import WeightStore
from dynmm.methods.mfas.sampling import distinct_random, expand, temperature_sample
from dynmm.methods.mfas.space import Architecture, SearchSpace, from_json, to_json
from dynmm.methods.mfas.surrogate import Surrogate, SurrogateSettings, prediction_quality
from dynmm.relax import TemperatureSchedule

STATE = "state.json"

Evaluate = Callable[[Architecture, int, WeightStore | None], dict[str, Any]]
"""(architecture, seed, shared weights) -> a record with at least `score` (validation, higher is better)."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SearchSettings:
    """The progressive search's knobs (see `MFASConfig`)."""

    iterations: int = 1
    first_step_samples: int | None = None
    samples_per_step: int = 15
    temperature: TemperatureSchedule = TemperatureSchedule("inverse_exponential", 10.0, 0.2, 2)
    surrogate: SurrogateSettings = SurrogateSettings()
    weight_sharing: bool = True


@dataclass
class SearchState:
    """Everything a search has done so far; `evaluations[i]["architecture"]` is in `space.to_json` form."""

    kind: str
    seed: int
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    picks: list[list[list[int]]] = field(default_factory=list)
    done: bool = False

    def evaluated(self) -> set[Architecture]:
        return {from_json(e["architecture"]) for e in self.evaluations}

    def best(self) -> dict[str, Any]:
        return max(self.evaluations, key=lambda e: e["score"])


class _Folder:
    """A search's files; weights of step n are kept until the state of step n + 1 is on disk."""

    def __init__(self, folder: Path, kind: str, seed: int) -> None:
        self.folder = folder
        self.kind, self.seed = kind, seed

    def load(self) -> SearchState:
        path = self.folder / STATE
        if not path.is_file():
            return SearchState(self.kind, self.seed)
        try:
            raw = json.loads(path.read_text())
            state = SearchState(**raw)
        except (json.JSONDecodeError, TypeError) as err:
            raise DataError(f"{path} is not a search state ({err}); move the folder away to start afresh") from err
        if (state.kind, state.seed) != (self.kind, self.seed):
            raise DataError(f"{path} holds a {state.kind} search of seed {state.seed}, not {self.kind} {self.seed}")
        return state

    def weights(self, name: str, step: int) -> Path:
        return self.folder / f"{name}.{step}.safetensors"

    def save(self, state: SearchState, tensors: dict[str, dict[str, Any]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        step = len(state.steps)
        for name, values in tensors.items():
            atomic_write(self.weights(name, step), partial(_save_tensors, values))
        atomic_write_json(self.folder / STATE, state.__dict__)
        for name in tensors:
            for old in self.folder.glob(f"{name}.*.safetensors"):
                if old != self.weights(name, step):
                    old.unlink()


def _save_tensors(tensors: dict[str, Any], path: Path) -> None:
    save_file(dict(tensors), str(path))


def _step_rng(seed: int, step: int) -> tuple[np.random.Generator, random.Random]:
    return np.random.default_rng([seed, step]), random.Random(seed * 1_000_003 + step)


def evaluation_seed(seed: int, kind: str, index: int) -> int:
    return seed * 1_000_003 + (0 if kind == "mfas" else 500_000) + index


def _evaluate_all(
    archs: list[Architecture],
    state: SearchState,
    space: SearchSpace,
    evaluate: Evaluate,
    store: WeightStore | None,
    step: int,
    predicted: list[float] | None,
) -> list[dict[str, Any]]:
    records = []
    for i, arch in enumerate(archs):
        index = len(state.evaluations)
        record = evaluate(arch, evaluation_seed(state.seed, state.kind, index), store)
        record.update(
            index=index,
            step=step,
            architecture=to_json(arch),
            name=space.describe(arch),
            layers=len(arch),
            predicted=None if predicted is None else predicted[i],
        )
        state.evaluations.append(record)
        records.append(record)
    return records


def run_mfas(
    space: SearchSpace,
    evaluate: Evaluate,
    settings: SearchSettings,
    folder: Path,
    seed: int,
    progress: Progress = lambda message: None,
) -> SearchState:
    """Progressive search: for every (iteration, position) step, evaluate proposals, refit the surrogate on all
    evaluations, keep this step's evaluated architectures as the picks the next step expands."""
    files = _Folder(folder, "mfas", seed)
    state = files.load()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        surrogate = Surrogate(space, settings.surrogate)
    store = WeightStore() if settings.weight_sharing else None
    if state.steps:
        done = len(state.steps)
        surrogate.load_state_dict(load_file(str(files.weights("surrogate", done))))
        if store is not None:
            store = WeightStore.read(files.weights("shared", done))
    choices = space.layer_choices()
    plan = [(it, pos) for it in range(settings.iterations) for pos in range(space.max_layers)]
    for step in range(len(state.steps), len(plan)):
        iteration, position = plan[step]
        start = time.perf_counter()
        np_rng, py_rng = _step_rng(seed, step)
        temperature = settings.temperature(step)
        if step == 0:
            candidates = list(choices)
            n_first = settings.first_step_samples
            if n_first is not None and n_first < len(candidates):
                candidates = py_rng.sample(candidates, n_first)
            arch_candidates: list[Architecture] = [(c,) for c in candidates]
            chosen, predicted = arch_candidates, None
        else:
            evaluated = state.evaluated()
            arch_candidates = [a for a in expand(_picks(state), position, choices) if a not in evaluated]
            all_predicted = surrogate.predict(arch_candidates)
            chosen = temperature_sample(arch_candidates, all_predicted, settings.samples_per_step, temperature, np_rng)
            lookup = dict(zip(arch_candidates, all_predicted, strict=True))
            predicted = [lookup[a] for a in chosen]
        progress(f"mfas seed {seed} · step {step + 1}/{len(plan)} · {len(chosen)} of {len(arch_candidates)}")
        records = _evaluate_all(chosen, state, space, evaluate, store, step, predicted)
        quality = prediction_quality(predicted or [], [r["score"] for r in records])
        fit_mse = (
            surrogate.fit(
                [from_json(e["architecture"]) for e in state.evaluations],
                [e["score"] for e in state.evaluations],
                seed * 1_000 + step,
            )
            if state.evaluations
            else None
        )
        if step == 0:  # the first step evaluated everything; expand a temperature draw of it
            scores = [r["score"] for r in records]
            chosen = temperature_sample(chosen, scores, settings.samples_per_step, temperature, np_rng)
        state.picks = [to_json(a) for a in chosen]
        state.steps.append(
            {
                "step": step,
                "iteration": iteration,
                "position": position + 1,
                "temperature": temperature,
                "candidates": len(arch_candidates),
                "evaluated": [r["index"] for r in records],
                "surrogate_mae": quality["mae"],
                "surrogate_spearman": quality["spearman"],
                "surrogate_fit_mse": fit_mse,
                "best_score": max(r["score"] for r in records) if records else None,
                "seconds": time.perf_counter() - start,
            }
        )
        tensors = {"surrogate": surrogate.state_dict()}
        if store is not None:
            tensors["shared"] = store.tensors
        files.save(state, tensors)
    state.done = True
    atomic_write_json(folder / STATE, state.__dict__)
    return state


def _picks(state: SearchState) -> list[Architecture]:
    return [from_json(a) for a in state.picks]


def run_random(
    space: SearchSpace,
    evaluate: Evaluate,
    evaluations: int,
    batch: int,
    weight_sharing: bool,
    folder: Path,
    seed: int,
    progress: Progress = lambda message: None,
) -> SearchState:
    """`evaluations` distinct architectures drawn uniformly, trained exactly like the search's, in steps of
    `batch` (each step saved, so it resumes like the search)."""
    files = _Folder(folder, "random", seed)
    state = files.load()
    store = WeightStore() if weight_sharing else None
    if state.steps and store is not None:
        store = WeightStore.read(files.weights("shared", len(state.steps)))
    steps = -(-evaluations // batch)
    for step in range(len(state.steps), steps):
        start = time.perf_counter()
        _, py_rng = _step_rng(seed, step)
        count = min(batch, evaluations - len(state.evaluations))
        archs = distinct_random(space, count, state.evaluated(), py_rng)
        progress(f"random seed {seed} · step {step + 1}/{steps} · {len(archs)} architectures")
        records = _evaluate_all(archs, state, space, evaluate, store, step, None)
        state.steps.append(
            {
                "step": step,
                "evaluated": [r["index"] for r in records],
                "best_score": max(r["score"] for r in records) if records else None,
                "seconds": time.perf_counter() - start,
            }
        )
        files.save(state, {"shared": store.tensors} if store is not None else {})
    state.done = True
    atomic_write_json(folder / STATE, state.__dict__)
    return state
