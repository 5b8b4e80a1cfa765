"""The `fusion_level` section of a run config: fusion-level DynMM on RGB-D segmentation."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dynmm.config import Section


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
    static_op: str | None = None
    resource_weight: float = 0.0
    supernet_train: dict[str, Any] = Field(default_factory=dict)
    gate_train: dict[str, Any] = Field(default_factory=dict)
    tau_start: float = 1.0
    tau_end: float = 1.0e-4
    supernet_dir: str | None = None
