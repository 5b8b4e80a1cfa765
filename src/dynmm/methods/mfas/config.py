"""The `mfas` section of a run config: the MFAS search (`dynmm search mfas CONFIG`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dynmm.config import Section


class MFASConfig(Section):
    """MFAS: search the fusion of frozen unimodal backbones (`dynmm search mfas CONFIG`).

    `modalities`: the fused modalities in order (>= 2; default: the data set's, sorted). Each backbone is an
    ordinary static run of the run's `model` + `train` with `fusion: unimodal` on one modality, trained into
    `<run>/backbones/<modality>` unless `backbone_runs` names a finished run for it (trained with `dynmm train`).
    `search_data`: overrides of `data` for the fusion search (e.g. MOSI rows whose features are unseen).
    `candidate_layers`: which layers of a backbone a fusion layer may read: "relu" (every ReLU of its encoder),
    "embedding" (the encoder's output), "output" (the unimodal prediction); the MFAS paper's AV-MNIST space is
    `[relu]` over LeNet backbones (encoder kind `lenet`), one layer per conv block.
    A fusion layer picks one candidate layer of every backbone and an activation from `activations`;
    h_l = σ(W_l [x_1; ...; x_M; h_{l-1}]) with `width` units; a linear head reads h_L.
    Progressive search (`iterations` passes over positions 1..`layers`): the first step evaluates every
    one-layer architecture (or `first_step_samples` of them), later steps expand the previous step's picks by one
    position, rank the expansions with the LSTM surrogate and draw `samples_per_step` of them with a temperature
    (inverse-exponential from `tau_start` to `tau_end` over `tau_steps` steps). Each evaluation trains only the
    fusion layers for `epochs_per_eval` epochs on cached backbone features, starting from the weights shared by
    position and shape (`weight_sharing`). Then the `top_k` found are trained from scratch for `final_epochs`.
    `finetune_epochs` > 0: the best found architecture is then trained end to end for that many epochs, its
    backbones unfrozen with learning rate `finetune_backbone_lr` (the fusion layers keep `lr`), into
    `<run>/best_finetuned` (its backbones' weights saved with it).
    `search_seeds`: one MFAS search and one random search (same number of evaluations, same training) per seed.
    `cache`: "memory" or "memmap" (`cache_dir`, default `<run>/feature_cache`, keyed by the backbones' weights).
    `timing_architectures`: evaluations also timed with the backbones recomputed for every batch (no cache).
    `metric`: what the search maximises on `valid` (default: accuracy; acc2 for sentiment; f1_micro multilabel).
    `device`: where backbones and fusion networks run: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    """

    modalities: list[str] | None = None
    backbone_runs: dict[str, str] = Field(default_factory=dict)
    search_data: dict[str, Any] | None = None
    candidate_layers: list[str] = Field(default_factory=lambda: ["relu", "embedding", "output"])
    layers: int = 4
    width: int = 32
    activations: list[str] = Field(default_factory=lambda: ["relu", "sigmoid", "leaky_relu"])
    iterations: int = 1
    first_step_samples: int | None = None
    samples_per_step: int = 15
    epochs_per_eval: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    weight_sharing: bool = True
    tau_start: float = 10.0
    tau_end: float = 0.2
    tau_steps: int = 2
    surrogate: dict[str, Any] = Field(default_factory=dict)
    top_k: int = 3
    final_epochs: int = 20
    finetune_epochs: int = 0
    finetune_backbone_lr: float = 1.0e-4
    search_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    random_search: bool = True
    cache: str = "memory"
    cache_dir: str | None = None
    timing_architectures: int = 3
    metric: str | None = None
    device: str = "auto"
