"""The `adamml` section of a run config: AdaMML's recognition nets, policy, loss and phases."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dynmm.config import Section

ADAMML_LIGHT_POLICY: dict[str, Any] = {"hidden": 128, "widths": [8, 16, 24], "strides": [2, 2, 2], "feature_dim": 32}
"""AdaMML's default policy: lighter than `AdaMMLPolicy`'s own defaults (paper-sized LSTM 256), so that on
28x28 digits and 40-mel log-mels it stays cheap next to the recognition nets."""


class AdaMMLConfig(Section):
    """AdaMML on clips of T segments (data with (T, C, H, W) image modalities, e.g. `avclips`).

    `encoders`: recognition encoder per modality (`default` + per-modality entries, as `model.encoders`; unset:
    `dynmm.methods.adamml.model.DEFAULT_ENCODER`). `policy`: `AdaMMLPolicy` options; keys not given take the values of
    `ADAMML_LIGHT_POLICY`. `fallback`: modality kept on the first segment of a clip whose policy keeps nothing
    (default: the cheapest recognition net by measured MAdds).
    Loss of the joint phase: CE + Σ_k λ_k·C_k with C_k = (share of the clip's segments that keep k)² if the clip
    is predicted correctly, else `gamma`. `lambdas`: modality -> λ_k; unset: `resource_weight` × the modality's
    measured per-segment MAdds / the costliest modality's (`default_lambdas`).
    Gumbel temperature of the joint phase: `tau_start` × `tau_factor`^epoch (the paper: 5 × 0.965^epoch).
    Phases, each with overrides of `train`: `warmup_train` (policy off, every segment of every modality, CE),
    `joint_train` (policy + nets with the loss above), `finetune_train` (policy frozen at its argmax decisions,
    nets adapt to the segments they keep, CE). `warmup_dir` shares the warmup phase between runs that differ
    only after it (a λ sweep): it is trained there once and loaded by the others; it records what it was
    trained for, and a run built differently refuses to use it.
    `train_baselines`: also train late fusion on all segments and each modality alone on all segments, from
    scratch for as many epochs as the three phases together (the fair comparison; next to the warmup folder,
    shared by a sweep); off: those baselines are read off the warmup weights (cheaper, undertrained).
    """

    encoders: dict[str, dict[str, Any]] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=lambda: dict(ADAMML_LIGHT_POLICY))
    fallback: str | None = None
    resource_weight: float = 0.5
    lambdas: dict[str, float] | None = None
    gamma: float = 10.0
    tau_start: float = 5.0
    tau_factor: float = 0.965
    warmup_train: dict[str, Any] = Field(default_factory=lambda: {"max_epochs": 5})
    joint_train: dict[str, Any] = Field(default_factory=lambda: {"max_epochs": 20})
    finetune_train: dict[str, Any] = Field(default_factory=lambda: {"max_epochs": 10})
    warmup_dir: str | None = None
    train_baselines: bool = True
