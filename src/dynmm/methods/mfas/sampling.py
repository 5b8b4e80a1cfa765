"""How the search proposes architectures: expand the previous picks by one position, draw by temperature,
or draw uniformly (the random-search baseline)."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

import numpy as np

from dynmm.methods.mfas.space import Architecture, LayerChoice, SearchSpace


def expand(picks: Sequence[Architecture], position: int, choices: Sequence[LayerChoice]) -> list[Architecture]:
    """Every pick with layer `position` set to every choice (appended when the pick is shorter), de-duplicated
    in first-seen order."""
    out: dict[Architecture, None] = {}
    for pick in picks:
        for choice in choices:
            if position < len(pick):
                out[pick[:position] + (choice,) + pick[position + 1 :]] = None
            else:
                out[pick + (choice,)] = None
    return list(out)


def temperature_sample(
    candidates: Sequence[Architecture], scores: Sequence[float], k: int, temperature: float, rng: np.random.Generator
) -> list[Architecture]:
    """k distinct candidates drawn with probability ∝ (score / Σ score)^(1/temperature): near uniform when hot,
    near top-k when cold."""
    if len(candidates) <= k:
        return list(candidates)
    s = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, None)
    log_p = np.log(s / s.sum()) / temperature
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    if np.count_nonzero(p) < k:  # a very cold draw: fall back to the top scores
        order = np.argsort(-s, kind="stable")[:k]
        return [candidates[i] for i in order]
    chosen = rng.choice(len(candidates), size=k, replace=False, p=p)
    return [candidates[i] for i in chosen]


def distinct_random(
    space: SearchSpace, k: int, exclude: Collection[Architecture], rng: random.Random
) -> list[Architecture]:
    """k architectures drawn uniformly (depth, then every layer), none in `exclude`, no repeats."""
    drawn: list[Architecture] = []
    seen = set(exclude)
    for _ in range(1000 * max(k, 1)):
        if len(drawn) == k:
            break
        arch = space.random_architecture(rng)
        if arch not in seen:
            seen.add(arch)
            drawn.append(arch)
    return drawn
