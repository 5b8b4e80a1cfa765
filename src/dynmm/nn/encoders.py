"""Per-modality encoders: one modality's batch (batch, *shape) -> an embedding (batch, out_dim).

Why a fixed contract: fusion ops, gates and cost tables only need to know `out_dim`, so any encoder can sit
in front of any fusion. `build_encoder` derives the input size from the modality spec, so a config names only
what a user chooses (kind, width, depth), and a mismatch is reported with the modality's name instead of as a
shape error deep inside a conv or LSTM.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dynmm.errors import ConfigError, InputError
from dynmm.nn.external_encoders import EXTERNAL_KINDS, build_external_encoder
from dynmm.nn.lenet import LeNetEncoder
from dynmm.nn.mobilenet import MobileNetV2
from dynmm.nn.resnet import PooledResNet
from dynmm.nn.run_encoder import build_run_encoder
from dynmm.specs import ModalitySpec


class IdentityEncoder(nn.Module):
    """Flattens (batch, *shape) to (batch, prod(shape)); with `concat` fusion this is early fusion.

    Args:
        spec: the modality whose per-sample shape is flattened.
    """

    def __init__(self, spec: ModalitySpec) -> None:
        super().__init__()
        self.out_dim = math.prod(spec.shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class MLPEncoder(nn.Module):
    """Linear -> ReLU -> Dropout per hidden width, then Linear to `out_dim`; extra input dims are flattened.

    Args:
        in_dim: number of input features (after flattening).
        hidden: widths of the hidden layers; empty gives a single linear map.
        out_dim: embedding size.
        dropout: dropout after every hidden activation.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (128,), out_dim: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class MaxoutMLPEncoder(nn.Module):
    """BatchNorm on the input, then per width a maxout layer (Linear to width × `pieces`, max over the pieces)
    -> BatchNorm -> Dropout: MultiBench's MaxOut_MLP, the MM-IMDB encoders of DynMM's late fusion.

    Args:
        in_dim: number of input features (after flattening).
        hidden: widths of the maxout layers before the last one.
        out_dim: width of the last maxout layer, the embedding.
        pieces: linear pieces each maxout unit takes the max of.
        dropout: dropout after every maxout layer.
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int] = (512,), out_dim: int = 512, pieces: int = 2, dropout: float = 0.3
    ) -> None:
        super().__init__()
        if pieces < 1:
            raise ValueError(f"pieces must be >= 1, got {pieces}")
        layers: list[nn.Module] = [nn.BatchNorm1d(in_dim, eps=1e-4)]
        width = in_dim
        for size in [*hidden, out_dim]:
            layers += [_Maxout(width, size, pieces), nn.BatchNorm1d(size), nn.Dropout(dropout)]
            width = size
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class _Maxout(nn.Module):
    """Linear to `width` × `pieces` outputs, then the max over each unit's pieces."""

    def __init__(self, in_dim: int, width: int, pieces: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, width * pieces)
        self.width, self.pieces = width, pieces

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(x.shape[0], self.width, self.pieces).amax(dim=2)


class SmallCNNEncoder(nn.Module):
    """Stages of conv3x3 -> BatchNorm -> ReLU -> MaxPool(2), adaptive average pool to `pool_size`², Linear.

    The adaptive pool makes it independent of the input's height and width, so the same class encodes 28x28
    digits and 40 x ~101 log-mel spectrograms; `pool_size` > 1 keeps a coarse layout (where a digit's strokes
    are), which a global average (`pool_size` = 1) throws away. A bigger network is just wider `channels`.

    Args:
        in_channels: channels of the input image.
        channels: output channels of each stage; each stage halves height and width.
        out_dim: embedding size.
        dropout: dropout before the final Linear.
        pool_size: side of the pooled feature map fed to the Linear (1 = global average pool).
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (16, 32),
        out_dim: int = 64,
        dropout: float = 0.0,
        pool_size: int = 1,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        width = in_channels
        for c in channels:
            stages += [nn.Conv2d(width, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            width = c
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(pool_size))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width * pool_size**2, out_dim))
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


class TemporalConvEncoder(nn.Module):
    """1-D convolutions over time with every other axis as channels, global max pool, Linear to `out_dim`.

    Why: for a log-mel spectrogram (1, mels, frames) the mel bins are features of each frame, not a spatial
    axis; convolving over time with mels as channels learns far faster than a 2-D CNN with global pooling.
    Also reads sequences (time, features).

    Args:
        in_channels: features per time step (mels × channels of a spectrogram, or a sequence's features).
        channels: output channels of each stage; each stage but the last halves the time axis.
        kernel_size: temporal kernel width (odd).
        out_dim: embedding size.
        dropout: dropout before the final Linear.
        time_last: True for (batch, channels, features, time) inputs, False for (batch, time, features).
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (64, 64, 64),
        kernel_size: int = 5,
        out_dim: int = 64,
        dropout: float = 0.0,
        time_last: bool = True,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        width = in_channels
        for i, c in enumerate(channels):
            stages += [nn.Conv1d(width, c, kernel_size, padding=kernel_size // 2), nn.BatchNorm1d(c), nn.ReLU()]
            if i < len(channels) - 1:
                stages.append(nn.MaxPool1d(2))
            width = c
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, out_dim))
        self.time_last = time_last
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1, -2) if self.time_last else x.transpose(1, 2)
        return self.head(self.features(x).amax(dim=2))


class LSTMEncoder(nn.Module):
    """LSTM over (batch, time, features); the last layer's final hidden state(s) -> Linear to `out_dim`.

    Args:
        in_dim: features per time step.
        hidden: LSTM hidden size.
        out_dim: embedding size.
        num_layers: stacked LSTM layers.
        bidirectional: if True, the forward and backward final states are concatenated.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        out_dim: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
        self.directions = 2 if bidirectional else 1
        self.proj = nn.Linear(hidden * self.directions, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        _, (h_n, _) = self.lstm(x)
        last = h_n[-self.directions :]  # (directions, batch, hidden) of the top layer
        return self.proj(last.transpose(0, 1).flatten(1))


class TransformerEncoder(nn.Module):
    """Linear to `d_model` + learned positions, a transformer encoder, mean over time, Linear to `out_dim`.

    Args:
        in_dim: features per time step.
        d_model, nhead, num_layers, dim_feedforward, dropout: as in `nn.TransformerEncoderLayer`.
        out_dim: embedding size.
        max_len: longest sequence the learned positional table covers.
    """

    def __init__(
        self,
        in_dim: int,
        d_model: int = 64,
        nhead: int = 2,
        num_layers: int = 1,
        dim_feedforward: int = 128,
        out_dim: int = 64,
        max_len: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.proj = nn.Linear(d_model, out_dim)
        self.max_len = max_len
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.max_len:
            raise InputError(f"sequence of length {x.shape[1]} is longer than the encoder's max_len {self.max_len}")
        h = self.embed(x) + self.pos[: x.shape[1]]
        return self.proj(self.encoder(h).mean(dim=1))


@dataclass(frozen=True)
class _Kind:
    cls: type[nn.Module]
    fits: tuple[str, ...]  # modality kinds this encoder can read
    fixed: Callable[[ModalitySpec], dict[str, Any]]  # input sizes read from the spec; a user may not set them
    # spec-dependent defaults a user may override
    defaults: Callable[[ModalitySpec], dict[str, Any]] = lambda s: {}


_KINDS: dict[str, _Kind] = {
    "identity": _Kind(IdentityEncoder, ("vector", "image", "sequence"), lambda s: {"spec": s}),
    "mlp": _Kind(MLPEncoder, ("vector", "image", "sequence"), lambda s: {"in_dim": math.prod(s.shape)}),
    "maxout_mlp": _Kind(MaxoutMLPEncoder, ("vector",), lambda s: {"in_dim": math.prod(s.shape)}),
    "cnn": _Kind(SmallCNNEncoder, ("image",), lambda s: {"in_channels": s.shape[0]}),
    "lenet": _Kind(LeNetEncoder, ("image",), lambda s: {"in_channels": s.shape[0]}),
    "mobilenet_v2": _Kind(MobileNetV2, ("image",), lambda s: {"in_channels": s.shape[0]}),
    "resnet": _Kind(PooledResNet, ("image",), lambda s: {"in_channels": s.shape[0]}),
    "conv1d": _Kind(
        TemporalConvEncoder,
        ("image", "sequence"),
        lambda s: {
            "in_channels": math.prod(s.shape[:-1]) if s.kind == "image" else s.shape[-1],
            "time_last": s.kind == "image",
        },
    ),
    "lstm": _Kind(LSTMEncoder, ("sequence",), lambda s: {"in_dim": s.shape[-1]}),
    "transformer": _Kind(
        TransformerEncoder,
        ("sequence",),
        lambda s: {"in_dim": s.shape[-1]},
        lambda s: {"max_len": s.shape[0]},
    ),
}


def build_encoder(spec: ModalitySpec, cfg: Mapping[str, Any]) -> nn.Module:
    """Build the encoder `cfg["kind"]` for `spec`; the other keys of `cfg` are that class's keyword arguments.

    Input sizes (in_dim, in_channels) come from the spec; a transformer's `max_len` defaults to the sequence
    length. Kinds `module` (a user's nn.Module by import path), `timm` and `hf` wrap networks from outside the
    zoo (`dynmm.nn.external_encoders`); their width is measured by one dry forward.
    """
    where = f"encoder of modality {spec.name!r}"
    kinds = sorted([*_KINDS, *EXTERNAL_KINDS, "from_run"])
    if not isinstance(cfg, Mapping) or "kind" not in cfg:
        raise ConfigError(f"{where}: config must be a mapping with a 'kind' key (one of {kinds}), got {cfg!r}")
    name = cfg["kind"]
    if name in EXTERNAL_KINDS:
        return build_external_encoder(spec, name, {k: v for k, v in cfg.items() if k != "kind"}, where)
    if name == "from_run":
        return build_run_encoder(spec, {k: v for k, v in cfg.items() if k != "kind"}, where, build_encoder)
    if name not in _KINDS:
        raise ConfigError(f"{where}: unknown kind {name!r}; valid kinds: {', '.join(kinds)}")
    entry = _KINDS[name]
    if spec.kind not in entry.fits:
        raise ConfigError(
            f"{where}: kind {name!r} cannot read a {spec.kind} modality of shape {tuple(spec.shape)}; "
            f"it reads {' or '.join(entry.fits)} modalities"
        )
    fixed = entry.fixed(spec)
    options = {k: v for k, v in cfg.items() if k != "kind"}
    accepted = [p for p in inspect.signature(entry.cls).parameters if p not in fixed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(map(repr, unknown))} for kind {name!r}; "
            f"accepted: {', '.join(accepted) or 'none'} ({', '.join(fixed)} is taken from the modality spec)"
        )
    kwargs = {**entry.defaults(spec), **options}
    _check_fit(where, spec, name, kwargs)
    try:
        return entry.cls(**fixed, **kwargs)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"{where}: invalid options {options} for kind {name!r}: {err}") from err


def _check_fit(where: str, spec: ModalitySpec, name: str, kwargs: Mapping[str, Any]) -> None:
    """Catch sizes that would only fail at the first forward: images pooled away, sequences past max_len."""
    if name == "cnn":
        default = inspect.signature(SmallCNNEncoder).parameters["channels"].default
        stages = len(kwargs.get("channels", default))
        if min(spec.shape[1:]) < 2**stages:
            raise ConfigError(
                f"{where}: {stages} pooling stages need height and width >= {2**stages}, got shape {tuple(spec.shape)}"
            )
    if name == "lenet":
        blocks = kwargs.get("layers", inspect.signature(LeNetEncoder).parameters["layers"].default)
        if isinstance(blocks, int) and min(spec.shape[1:]) < 2 ** (blocks - 1):
            raise ConfigError(
                f"{where}: {blocks} LeNet blocks need height and width >= {2 ** (blocks - 1)}, "
                f"got shape {tuple(spec.shape)}"
            )
    if name == "transformer" and kwargs["max_len"] < spec.shape[0]:
        raise ConfigError(f"{where}: max_len {kwargs['max_len']} is shorter than the sequence length {spec.shape[0]}")
