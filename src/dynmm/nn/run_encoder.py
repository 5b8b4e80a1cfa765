"""`kind: from_run`: the trained encoder of another run's exported model, rebuilt from its files and frozen.

Why: a cascade of experts (modality-level DynMM, `routing: cascade`) runs the cheap expert first and hands its
encoder outputs to the larger expert for the rows it escalates. That is only exact when the larger expert was
trained on top of the very same encoder, so stage I trains it with the cheap expert's encoder loaded from the
cheap expert's run folder and kept fixed. The same option serves any user who wants to reuse a trained encoder.
Only `model.json` and `model.safetensors` are read (no pickle, no dynmm run machinery).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from dynmm.errors import ConfigError
from dynmm.io import read_json
from dynmm.specs import ModalitySpec

OPTIONS = ("path", "modality", "freeze", "out_dim")
EncoderBuilder = Callable[[ModalitySpec, Mapping[str, Any]], nn.Module]


class FrozenEncoder(nn.Module):
    """An encoder whose parameters stay fixed and which stays in eval mode (batch-norm statistics, dropout) while
    the model around it trains."""

    def __init__(self, encoder: nn.Module, out_dim: int, freeze: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = out_dim
        self.frozen = freeze
        if freeze:
            for parameter in encoder.parameters():
                parameter.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


def source_encoder_options(path: Path, modality: str, where: str) -> tuple[dict[str, Any], ModalitySpec]:
    """The encoder options and modality spec the run in `path` built `modality`'s encoder from."""
    from dynmm.config import ModelConfig, encoder_options, from_dict

    description = read_json(path / "model.json", f"{where}: the exported model of run {path}")
    modalities = description.get("modalities") or {}
    if modality not in modalities:
        raise ConfigError(f"{where}: run {path} has no encoder for modality {modality!r}; it has {sorted(modalities)}")
    model = from_dict(ModelConfig, description.get("model") or {}, f"{path}/model.json model")
    options = encoder_options(model, modality)
    if options.get("kind", "mlp") != "identity":
        options.setdefault("out_dim", model.embed_dim)
    entry = modalities[modality]
    return options, ModalitySpec(modality, tuple(entry["shape"]), entry["kind"])


def build_run_encoder(
    spec: ModalitySpec, options: Mapping[str, Any], where: str, build_encoder: EncoderBuilder
) -> nn.Module:
    """The encoder of `options["path"]`'s exported model for `options.get("modality", spec.name)`, with its
    trained weights, frozen unless `freeze: false`. `build_encoder` builds the source's encoder kind (passed in
    by dynmm.nn.encoders, which dispatches to this module)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown} for kind 'from_run'; accepted: {list(OPTIONS)}")
    if not isinstance(options.get("path"), str):
        raise ConfigError(f"{where}: kind 'from_run' needs `path`, the folder of a finished run with model.json")
    path = Path(options["path"])
    modality = str(options.get("modality", spec.name))
    source, source_spec = source_encoder_options(path, modality, where)
    if tuple(source_spec.shape) != tuple(spec.shape) or source_spec.kind != spec.kind:
        raise ConfigError(
            f"{where}: run {path} encoded {modality!r} as {source_spec.describe()}, but this modality is "
            f"{spec.describe()}"
        )
    encoder = build_encoder(spec, source)
    out_dim = int(getattr(encoder, "out_dim"))  # noqa: B009 - every encoder of the zoo sets out_dim
    wanted = options.get("out_dim")
    if wanted is not None and int(wanted) != out_dim:
        raise ConfigError(
            f"{where}: run {path}'s {modality!r} encoder outputs {out_dim} features, but {wanted} are expected "
            f"(model.embed_dim): set the same embed_dim as that run"
        )
    _load_encoder_weights(encoder, path, f"encoders.{modality}.", where)
    return FrozenEncoder(encoder, out_dim, bool(options.get("freeze", True)))


def _load_encoder_weights(encoder: nn.Module, path: Path, prefix: str, where: str) -> None:
    weights = path / "model.safetensors"
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{where}: cannot read {weights} ({err})") from err
    own = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
    expected = set(encoder.state_dict())
    if set(own) != expected:
        missing, extra = sorted(expected - set(own)), sorted(set(own) - expected)
        raise ConfigError(f"{where}: {weights} does not hold this encoder (missing {missing[:3]}, extra {extra[:3]})")
    encoder.load_state_dict(own)
