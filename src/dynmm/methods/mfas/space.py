"""The MFAS search space: an architecture is a sequence of fusion layers, each picking one candidate layer of
every backbone and a non-linearity; `FusionNetwork` is the trainable network an architecture describes.

Why tuples of indices: the surrogate embeds them, the sampler expands and compares them, and the JSON results
store them; names (`describe`) are only for people.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynmm.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU}


@dataclass(frozen=True, order=True)
class LayerChoice:
    """One fusion layer: the index of the candidate layer taken from each backbone, and of the activation."""

    taps: tuple[int, ...]
    activation: int


Architecture = tuple[LayerChoice, ...]


@dataclass(frozen=True)
class SearchSpace:
    """Candidate layers of each backbone (names and pooled feature sizes) and the activations to choose from.

    Args:
        modalities: the fused modalities, in the order a layer's `taps` follow.
        layer_names: per modality, the names of its candidate layers.
        layer_dims: per modality, the feature size of each candidate layer.
        activations: names from `ACTIVATIONS`.
        max_layers: the deepest fusion network (L).
    """

    modalities: tuple[str, ...]
    layer_names: Mapping[str, tuple[str, ...]]
    layer_dims: Mapping[str, tuple[int, ...]]
    activations: tuple[str, ...]
    max_layers: int

    def __post_init__(self) -> None:
        if len(self.modalities) < 2:
            raise ConfigError(f"MFAS fuses at least 2 modalities, got {list(self.modalities)}")
        unknown = [a for a in self.activations if a not in ACTIVATIONS]
        if unknown or not self.activations:
            raise ConfigError(f"mfas.activations: unknown {unknown}; choose from {sorted(ACTIVATIONS)}")
        if self.max_layers < 1:
            raise ConfigError(f"mfas.layers must be >= 1, got {self.max_layers}")
        for m in self.modalities:
            names, dims = self.layer_names.get(m, ()), self.layer_dims.get(m, ())
            if not names or len(names) != len(dims):
                raise ConfigError(f"backbone of {m!r} exposes no candidate layers (names {names}, sizes {dims})")

    def layer_choices(self) -> list[LayerChoice]:
        """Every possible fusion layer: ∏ M_m × |activations| of them."""
        per_modality = [range(len(self.layer_names[m])) for m in self.modalities]
        return [
            LayerChoice(tuple(taps), a)
            for taps in itertools.product(*per_modality)
            for a in range(len(self.activations))
        ]

    def size(self) -> int:
        """Number of architectures with 1..L layers."""
        n = len(self.layer_choices())
        return sum(n**depth for depth in range(1, self.max_layers + 1))

    def check(self, architecture: Architecture) -> None:
        if not 1 <= len(architecture) <= self.max_layers:
            raise ConfigError(f"an architecture has 1..{self.max_layers} layers, got {len(architecture)}")
        for layer in architecture:
            if len(layer.taps) != len(self.modalities) or not 0 <= layer.activation < len(self.activations):
                raise ConfigError(f"{layer} does not fit the search space of {list(self.modalities)}")
            for m, tap in zip(self.modalities, layer.taps, strict=True):
                if not 0 <= tap < len(self.layer_names[m]):
                    raise ConfigError(f"{layer}: {m!r} has {len(self.layer_names[m])} candidate layers")

    def random_architecture(self, rng: random.Random) -> Architecture:
        """Depth uniform in 1..L, every layer uniform over all choices (the random-search baseline's draw)."""
        choices = self.layer_choices()
        return tuple(rng.choice(choices) for _ in range(rng.randint(1, self.max_layers)))

    def feature_key(self, modality: str, tap: int) -> str:
        return f"{modality}.{self.layer_names[modality][tap]}"

    def used_features(self, architecture: Architecture) -> dict[str, list[int]]:
        """Per modality, the candidate layers an architecture reads (sorted)."""
        used: dict[str, set[int]] = {m: set() for m in self.modalities}
        for layer in architecture:
            for m, tap in zip(self.modalities, layer.taps, strict=True):
                used[m].add(tap)
        return {m: sorted(taps) for m, taps in used.items()}

    def describe(self, architecture: Architecture) -> str:
        """e.g. `image.relu2+audio.embedding:relu | image.output+audio.relu3:sigmoid`."""
        return " | ".join(
            "+".join(self.feature_key(m, t) for m, t in zip(self.modalities, layer.taps, strict=True))
            + f":{self.activations[layer.activation]}"
            for layer in architecture
        )


def to_json(architecture: Architecture) -> list[list[int]]:
    """[[tap_1, ..., tap_M, activation], ...]: the form stored in results and search state."""
    return [[*layer.taps, layer.activation] for layer in architecture]


def from_json(raw: Sequence[Sequence[int]]) -> Architecture:
    return tuple(LayerChoice(tuple(int(t) for t in layer[:-1]), int(layer[-1])) for layer in raw)


class FusionNetwork(nn.Module):
    """h_l = σ_l(W_l [x_l,1; ...; x_l,M; h_{l-1}]) for l = 1..L, then a linear head on h_L.

    Args:
        space: where the architecture's indices point.
        architecture: the fusion layers.
        width: units of every h_l.
        out_dim: task outputs (classes, or 1 for regression).

    Inputs:
        features: `space.feature_key(modality, tap)` -> pooled, normalised backbone features (batch, dim).
    """

    def __init__(self, space: SearchSpace, architecture: Architecture, width: int, out_dim: int) -> None:
        super().__init__()
        space.check(architecture)
        if width < 1:
            raise ConfigError(f"mfas.width must be >= 1, got {width}")
        self.inputs = [
            [space.feature_key(m, t) for m, t in zip(space.modalities, layer.taps, strict=True)]
            for layer in architecture
        ]
        self.input_dims = {
            space.feature_key(m, t): space.layer_dims[m][t]
            for layer in architecture
            for m, t in zip(space.modalities, layer.taps, strict=True)
        }
        self.layers = nn.ModuleList()
        self.activations = nn.ModuleList()
        for position, layer in enumerate(architecture):
            in_dim = sum(space.layer_dims[m][t] for m, t in zip(space.modalities, layer.taps, strict=True))
            self.layers.append(nn.Linear(in_dim + (width if position else 0), width))
            self.activations.append(ACTIVATIONS[space.activations[layer.activation]]())
        self.head = nn.Linear(width, out_dim)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        missing = sorted({k for keys in self.inputs for k in keys} - set(features))
        if missing:
            raise ConfigError(f"fusion network needs backbone features {missing}; got {sorted(features)}")
        h: Tensor | None = None
        for keys, linear, act in zip(self.inputs, self.layers, self.activations, strict=True):
            parts = [features[k] for k in keys] + ([h] if h is not None else [])
            h = act(linear(torch.cat(parts, dim=1)))
        assert h is not None
        return self.head(h)

    def shared_modules(self) -> dict[str, nn.Module]:
        """Modules whose weights are shared across sampled architectures, keyed by position and shape."""
        shared: dict[str, nn.Module] = {
            f"layer{i}:{linear.in_features}x{linear.out_features}": linear for i, linear in enumerate(self.layers)
        }
        shared[f"head:{self.head.in_features}x{self.head.out_features}"] = self.head
        return shared
