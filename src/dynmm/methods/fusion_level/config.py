"""The `fusion_level` section of a run config: fusion-level DynMM on RGB-D segmentation."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from dynmm.config import Section
from dynmm.errors import ConfigError


class FusionLevelConfig(Section):
    """Fusion-level DynMM for RGB-D segmentation (data with `rgb` and `depth` image modalities).

    Stage I trains the supernet on uniformly random paths (`supernet_train` overrides `train`); stage II trains
    gate + network with the resource loss, Gumbel τ decayed exponentially from `tau_start` to `tau_end` over its
    epochs (`gate_train`). `static_op` instead trains one static baseline: that op in every cell, no gate
    (`identity` = RGB only: the depth encoder never runs). `primary: depth` swaps the roles: the depth encoder
    feeds the decoder and RGB is the skippable one (with `static_op: identity`, the depth-only baseline).
    `supernet_dir` shares stage I between runs that differ only in stage II (a λ sweep): it is trained there
    once and loaded by the others.
    """

    layout: str = "tiny"
    primary: str = "rgb"
    ops: list[str] | None = None
    decoder_width: int = 64
    gate_width: int = 32
    routing: str = "cells"
    """"cells": the gate picks an op per cell; "levels": it picks how many cells, from the first, fuse depth
    (the DynMM authors' gate; ops must be [identity, a fusing op])."""
    stem_op: str | None = None
    """A fusing op applied to the two stems whenever the depth stem runs (the DynMM authors: se_add)."""
    static_op: str | None = None
    resource_weight: float = 0.0
    budget: float | None = None
    """Target mean normalised cost per scene, in (0, 1]: the resource term becomes λ·|batch-mean cost − budget|
    instead of λ·cost, so the gate spends the budget on average where it helps most rather than as little as
    possible on every scene; a budget between two routings' costs can only be met by routing scenes apart."""
    balance_weight: float = 0.0
    """Weight of the routing-balance reward: the batch's mutual information between scene and number of depth
    stages run under the gate's probabilities (entropy of the batch-mean distribution minus the mean per-scene
    entropy, / log(stages + 1), in [0, 1]), so that different scenes may take different depth paths while each
    scene's own choice stays decided; 0 (default) leaves one routing for all free to win."""
    init_weights: dict[str, str] = Field(default_factory=dict)
    """Modality (`rgb`, `depth`) -> a local torchvision ResNet checkpoint (.safetensors or .pth, tensors only)
    that its encoder starts from, e.g. ImageNet weights as ESANet and DynMM use; the classifier is dropped and a
    3-channel stem is summed for 1-channel depth. Nothing is downloaded."""
    supernet_train: dict[str, Any] = Field(default_factory=dict)
    gate_train: dict[str, Any] = Field(default_factory=dict)
    tau_start: float = 1.0
    tau_end: float = 1.0e-4
    supernet_dir: str | None = None


def check_gate_objective(config: FusionLevelConfig) -> None:
    """Refuse stage II loss settings that cannot be met or mean nothing, naming the key."""
    if not config.resource_weight >= 0 or not math.isfinite(config.resource_weight):
        raise ConfigError(f"fusion_level.resource_weight (λ) must be finite and >= 0, got {config.resource_weight}")
    if config.budget is not None and not 0 < config.budget <= 1:
        raise ConfigError(f"fusion_level.budget must be a mean normalised cost in (0, 1], got {config.budget}")
    if not config.balance_weight >= 0 or not math.isfinite(config.balance_weight):
        raise ConfigError(f"fusion_level.balance_weight must be finite and >= 0, got {config.balance_weight}")
