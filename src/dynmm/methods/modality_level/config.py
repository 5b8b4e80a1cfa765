"""The `dynmm` section of a run config: modality-level DynMM's experts, gate and stages."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dynmm.config import GateConfig, Section


class ExpertConfig(Section):
    """One expert: a name and the `model` keys that differ from the run's `model` section (merged over it)."""

    name: str = "expert"
    model: dict[str, Any] = Field(default_factory=dict)


class DynMMConfig(Section):
    """Modality-level DynMM recipe: stage I trains each expert, stage II the gate (experts frozen), optional
    stage III fine-tunes everything.

    `routing`: `gate` is DynMM's own gate on the raw inputs (the paper's; default). `cascade` runs the first
    expert on every row and lets a gate on its results (`dynmm.gate.modalities` among confidence, features,
    outputs) escalate rows to a later expert; later experts are trained on the first expert's frozen encoders
    and reuse their outputs, so an escalated row pays only what the larger expert adds.

    `expert_train`, `gate_train`, `finetune_train` override keys of the run's `train` section per stage
    (`finetune_train: null` skips stage III). `gate_data` overrides keys of `data` for stages II-III (e.g. MOSI:
    train the gate on rows whose features the upstream extractors never saw); `eval_data` for the final
    evaluation (default: `gate_data`). `experts_dir` reuses experts trained by another run (a λ sweep trains
    them once).
    """

    experts: list[ExpertConfig] = Field(default_factory=list)
    gate: GateConfig = Field(default_factory=GateConfig)
    routing: str = "gate"
    resource_weight: float = 0.0
    expert_train: dict[str, Any] = Field(default_factory=dict)
    gate_train: dict[str, Any] = Field(default_factory=dict)
    finetune_train: dict[str, Any] | None = None
    gate_data: dict[str, Any] = Field(default_factory=dict)
    eval_data: dict[str, Any] | None = None
    experts_dir: str | None = None
