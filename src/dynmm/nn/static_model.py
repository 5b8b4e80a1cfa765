"""Static fusion model: every modality is encoded, fused by one fixed operation, and read out by a head.

These are the baselines every dynamic model is compared with, and the experts that modality-level DynMM routes
between. Shaped like TorchMultimodal's LateFusion: encoders keyed by sorted modality name, a fusion module
that takes the dict of embeddings, a head.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from dynmm.config import ModelConfig, encoder_options
from dynmm.errors import ConfigError
from dynmm.nn.encoders import build_encoder
from dynmm.nn.fusion import build_fusion, fusion_class
from dynmm.specs import Inputs, ModalitySpec, TaskSpec
from dynmm.validation import check_inputs


class StaticFusionModel(nn.Module):
    """Encoders → fusion → head, over a fixed subset of modalities.

    Args:
        encoders: modality name -> encoder producing (batch, d_m).
        fusion: takes {modality: embedding} and returns (batch, d).
        head: maps (batch, d) to task outputs (Identity when the fusion already predicts, as late fusion does).
        specs: per-sample shape of each modality, used to check inputs before any layer runs.

    Inputs:
        inputs: modality name -> (batch, *spec.shape), float tensors of the model's dtype, finite, batch >= 1;
            extra modalities are ignored. Anything else is an InputError naming the modality.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        fusion: nn.Module,
        head: nn.Module,
        specs: dict[str, ModalitySpec],
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({name: encoders[name] for name in sorted(encoders)})
        self.fusion = fusion
        self.head = head
        self.specs = {name: specs[name] for name in self.encoders}

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def forward(self, inputs: Inputs) -> Tensor:
        check_inputs(inputs, self.specs, where=type(self).__name__, model=self)
        embeddings = {name: encoder(inputs[name]) for name, encoder in self.encoders.items()}
        return self.head(self.fusion(embeddings))


def select_modalities(config: ModelConfig, specs: dict[str, ModalitySpec]) -> list[str]:
    chosen = list(config.modalities) if config.modalities else sorted(specs)
    unknown = [m for m in chosen if m not in specs]
    if unknown:
        raise ConfigError(f"model.modalities: unknown modality {unknown}; the data set has {sorted(specs)}")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"model.modalities lists a modality twice: {chosen}")
    stray = [k for k in config.encoders if k != "default" and k not in specs]
    if stray:
        raise ConfigError(f"model.encoders has options for {stray}, which the data set lacks; it has {sorted(specs)}")
    return chosen


def build_head(in_dim: int, hidden: list[int], out_dim: int, dropout: float) -> nn.Module:
    """ReLU → [Linear → ReLU]* → Linear: the fusion's output is linear, so the head starts with a non-linearity."""
    layers: list[nn.Module] = [nn.ReLU(), nn.Dropout(dropout)]
    width = in_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def build_static_model(config: ModelConfig, specs: dict[str, ModalitySpec], task: TaskSpec) -> StaticFusionModel:
    """Build the model a `ModelConfig` describes for a data set with these modality specs and task."""
    modalities = select_modalities(config, specs)
    encoders: dict[str, nn.Module] = {}
    for name in modalities:
        options = encoder_options(config, name)
        if options.get("kind", "mlp") != "identity":
            options.setdefault("out_dim", config.embed_dim)
        encoders[name] = build_encoder(specs[name], options)
    in_dims = {name: cast(int, encoders[name].out_dim) for name in modalities}
    predicts = fusion_class(config.fusion).produces_predictions
    fusion_out = task.output_dim if predicts else config.embed_dim
    fusion = build_fusion(config.fusion, in_dims, fusion_out, **config.fusion_options)
    head: nn.Module = (
        nn.Identity()
        if predicts
        else build_head(config.embed_dim, config.head_hidden, task.output_dim, config.head_dropout)
    )
    return StaticFusionModel(encoders, fusion, head, specs)
