"""Encoders from outside the built-in zoo, named in YAML: a user's own nn.Module, a timm backbone, a HF model.

Why a wrapper instead of trusting the network: the fusion needs each encoder's `out_dim` and a (batch, width)
tensor. Both are found by running the network once on a one-sample zero input of the modality's shape (no grad,
eval mode, the mode restored after), so a wrong shape, a tuple output or a failing forward is reported when the
model is built, naming the modality and the shape, instead of at the first batch. Outputs of more than two dims
are pooled like the built-in encoders pool: a mean over time for (batch, time, features), a mean over space for
(batch, channels, *space). The wrapped networks are ordinary submodules, so `dynmm.cost` counts their MAdds.

Nothing here downloads: timm models are built with `pretrained=False` and take weights from a local file (read
by safetensors or `torch.load(weights_only=True)`, never by unpickling code); HF models load from a local folder
with `local_files_only=True`.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dynmm.errors import ConfigError, InputError
from dynmm.modes import eval_mode
from dynmm.nn.local_weights import one_line, read_state_dict
from dynmm.specs import ModalitySpec

EXTERNAL_KINDS = ("hf", "module", "timm")
POOLS = ("mean", "max", "first", "flatten")
HF_POOLS = ("mean", "first")
HF_INPUTS = ("embeds", "ids")

_OPTIONS = {
    "module": ("target", "kwargs", "pool", "pool_dims", "out_dim", "freeze"),
    "timm": ("name", "weights", "kwargs", "pool", "pool_dims", "out_dim", "freeze"),
    "hf": ("path", "input", "pool", "pad_id", "out_dim", "freeze"),
}
_TIMM_FIXED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "num_classes", "in_chans")
_EXTRA_HINT = {"timm": " (timm imports torchvision, which must be the build made for your torch)", "hf": ""}


def pool_output(y: Tensor, pool: str = "mean", dims: Sequence[int] | None = None) -> Tensor:
    """(batch, ...) -> (batch, features). 2-D passes through. `pool` (mean/max/first) reduces `dims` (default: the
    time axis 1 of a 3-D (batch, time, features) output, the space axes 2.. of (batch, channels, *space)); what
    is left is flattened. `flatten` keeps every value."""
    if y.dim() == 2:
        return y
    if pool == "flatten":
        return y.flatten(1)
    axes = (
        sorted({d % y.dim() for d in dims}) if dims is not None else ([1] if y.dim() == 3 else list(range(2, y.dim())))
    )
    if pool == "mean":
        y = y.mean(dim=axes)
    elif pool == "max":
        y = y.amax(dim=axes)
    else:  # first
        for axis in reversed(axes):
            y = y.select(axis, 0)
    return y.flatten(1)


class ExternalEncoder(nn.Module):
    """A network from outside the zoo as a dynmm encoder: its output pooled to (batch, width), then an optional
    Linear to `out_dim`.

    Args:
        module: the network; takes (batch, *spec.shape).
        width: features of its pooled output (measured by `build_external_encoder`).
        pool, pool_dims: how an output of more than 2 dims is reduced (see `pool_output`).
        out_dim: if set, a Linear maps the pooled output to this size; else `out_dim` = `width`.
        freeze: keep the network's parameters fixed and the network in eval mode (batch-norm statistics and
            dropout too); the Linear still trains.
    """

    def __init__(
        self,
        module: nn.Module,
        width: int,
        pool: str = "mean",
        pool_dims: Sequence[int] | None = None,
        out_dim: int | None = None,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        self.module = module
        self.pool = pool
        self.pool_dims = tuple(pool_dims) if pool_dims is not None else None
        self.proj: nn.Module = nn.Linear(width, out_dim) if out_dim is not None else nn.Identity()
        self.out_dim = out_dim if out_dim is not None else width
        self.frozen = freeze
        _freeze(module, freeze)

    def train(self, mode: bool = True) -> ExternalEncoder:
        super().train(mode)
        if self.frozen:
            self.module.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(pool_output(self.module(x), self.pool, self.pool_dims))


class HFEncoder(nn.Module):
    """A transformers model over a sequence modality, pooled to (batch, hidden), then an optional Linear.

    `embeds`: a (batch, time, features) float sequence enters as `inputs_embeds`, through a Linear to the model's
    embedding width when `features` differs (it is part of the encoder, so it trains and its MAdds count).
    `ids`: a (batch, time) tensor of token ids (dynmm batches are float, so integer values stored as floats)
    enters as `input_ids`; positions equal to `pad_id` are masked out of attention and of the mean.

    Args:
        model: a transformers `PreTrainedModel` whose forward returns `last_hidden_state`.
        width: its hidden size (measured by `build_external_encoder`).
        in_features: features per time step for `embeds`; None for `ids`.
        pool: `mean` over time, or `first` (the CLS / first token).
        out_dim, freeze: as in `ExternalEncoder` (freeze keeps the input Linear trainable).
        pad_id: padding token id for `ids` input.
    """

    def __init__(
        self,
        model: nn.Module,
        width: int,
        in_features: int | None,
        pool: str = "mean",
        out_dim: int | None = None,
        freeze: bool = False,
        pad_id: int | None = None,
    ) -> None:
        super().__init__()
        embeddings = model.get_input_embeddings()  # type: ignore[operator]
        self.embed_width = int(embeddings.embedding_dim)
        self.vocab_size = int(embeddings.num_embeddings)
        self.input = "ids" if in_features is None else "embeds"
        self.proj_in: nn.Module = (
            nn.Linear(in_features, self.embed_width)
            if in_features is not None and in_features != self.embed_width
            else nn.Identity()
        )
        self.model = model
        self.pool = pool
        self.pad_id = pad_id
        self.proj: nn.Module = nn.Linear(width, out_dim) if out_dim is not None else nn.Identity()
        self.out_dim = out_dim if out_dim is not None else width
        self.frozen = freeze
        _freeze(model, freeze)

    def train(self, mode: bool = True) -> HFEncoder:
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        mask: Tensor | None = None
        if self.input == "ids":
            ids = x.long()
            if not torch.equal(ids.to(x.dtype), x) or bool(((ids < 0) | (ids >= self.vocab_size)).any()):
                raise InputError(f"HF encoder: token ids must be integers in [0, {self.vocab_size}), got other values")
            if self.pad_id is not None:
                mask = (ids != self.pad_id).long()
            out = self.model(input_ids=ids, attention_mask=mask)
        else:
            out = self.model(inputs_embeds=self.proj_in(x))
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if self.pool == "first":
            pooled = hidden[:, 0]
        elif mask is None:
            pooled = hidden.mean(dim=1)
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return self.proj(pooled)


def build_external_encoder(spec: ModalitySpec, kind: str, options: Mapping[str, Any], where: str) -> nn.Module:
    """Build `kind` (module, timm or hf) for `spec` from its YAML options (everything but `kind`)."""
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(map(repr, unknown))} for kind {kind!r}; "
            f"accepted: {', '.join(_OPTIONS[kind])}"
        )
    opts = _Options(options, where)
    out_dim = opts.positive_int("out_dim")
    freeze = opts.get("freeze", bool, False)
    if kind == "hf":
        return _build_hf(spec, opts, out_dim, freeze)
    pool = opts.choice("pool", POOLS, "mean")
    pool_dims = opts.int_list("pool_dims")
    if pool_dims is not None and pool == "flatten":
        raise ConfigError(f"{where}: pool_dims has no meaning with pool: flatten (every value is kept)")
    if kind == "module":
        target = opts.get("target", str, None)
        if target is None:
            raise ConfigError(f"{where}: kind 'module' needs target: 'package.module:ClassOrFactory'")
        module = _build_target(target, opts.mapping("kwargs"), where)
        what = f"target {target!r}"
    else:
        module = _build_timm(spec, opts)
        what = f"timm model {options['name']!r}"
    width = _dry_width(module, spec, where, what, lambda y: pool_output(y, pool, pool_dims), pool_dims)
    return ExternalEncoder(module, width, pool, pool_dims, out_dim, freeze)


class _Options:
    """Typed reads of one encoder's YAML options, each failure a ConfigError naming the option."""

    def __init__(self, options: Mapping[str, Any], where: str) -> None:
        self.options, self.where = options, where

    def get(self, key: str, kind: type, default: Any) -> Any:
        value = self.options.get(key, default)
        if value is None or (isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))):
            return value
        raise ConfigError(f"{self.where}: option {key!r} must be a {kind.__name__}, got {value!r}")

    def positive_int(self, key: str) -> int | None:
        value = self.get(key, int, None)
        if value is not None and value <= 0:
            raise ConfigError(f"{self.where}: option {key!r} must be a positive integer (or null), got {value}")
        return value  # type: ignore[no-any-return]

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.options.get(key, default)
        if value not in choices:
            raise ConfigError(f"{self.where}: option {key!r} must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def int_list(self, key: str) -> list[int] | None:
        value = self.options.get(key)
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or not value
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
        ):
            raise ConfigError(f"{self.where}: option {key!r} must be a non-empty list of axes, got {value!r}")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.options.get(key) or {}
        if not isinstance(value, Mapping) or any(not isinstance(k, str) for k in value):
            raise ConfigError(f"{self.where}: option {key!r} must be a mapping of keyword arguments, got {value!r}")
        return dict(value)


def _freeze(module: nn.Module, freeze: bool) -> None:
    if freeze:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        module.eval()


def _cwd_on_path() -> str:
    """Configs run from the project folder: its modules import as they would under `python -m` (appended, so an
    installed package of the same name still wins)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    return cwd


def _build_target(target: str, kwargs: dict[str, Any], where: str) -> nn.Module:
    """Import `package.module:Attr` (Attr may be dotted), check it builds modules, call it with `kwargs`."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"{where}: target must be 'package.module:ClassOrFactory', got {target!r}")
    cwd = _cwd_on_path()
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # a user's module may fail to import in any way: report it in one line
        raise ConfigError(
            f"{where}: cannot import module {module_name!r} of target {target!r}: {one_line(err)} "
            f"(searched the installed packages and the folder dynmm runs in, {cwd})"
        ) from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"{where}: module {module_name!r} ({getattr(obj, '__file__', None) or module_name}) has no attribute "
                f"{attr!r} (target {target!r})"
            )
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        raise ConfigError(
            f"{where}: target {target!r} is an nn.Module instance; name its class or a function that builds one, "
            "so every model built gets its own weights"
        )
    if isinstance(obj, type) and not issubclass(obj, nn.Module):
        raise ConfigError(f"{where}: target {target!r} is the class {obj.__name__}, which is not a torch.nn.Module")
    if not callable(obj):
        raise ConfigError(
            f"{where}: target {target!r} is a {type(obj).__name__}, not an nn.Module class or a function returning one"
        )
    try:
        module = obj(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: target {target!r} rejected kwargs {kwargs}: {one_line(err)}") from err
    except Exception as err:  # the user's constructor: any failure becomes one line naming the target
        raise ConfigError(f"{where}: building target {target!r} with kwargs {kwargs} failed: {one_line(err)}") from err
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{where}: target {target!r} returned a {type(module).__name__}, not an nn.Module")
    return module


def _dry_width(
    module: nn.Module,
    spec: ModalitySpec,
    where: str,
    what: str,
    pool: Callable[[Tensor], Tensor],
    pool_dims: Sequence[int] | None = None,
) -> int:
    """Run `module` once on zeros of shape (1, *spec.shape) (no grad, eval mode, mode restored); return the
    pooled output's width, or a ConfigError naming the modality and the shape."""
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.get_default_dtype())
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    x = torch.zeros(1, *spec.shape, dtype=dtype, device=device)
    with eval_mode(module), torch.no_grad():
        try:
            y = module(x)
        except Exception as err:  # any failure of a foreign forward is reported with the input it got
            raise ConfigError(
                f"{where}: {what} failed on a zero input of shape {tuple(x.shape)} (modality {spec.name!r}, "
                f"{spec.describe()}): {one_line(err)}"
            ) from err
    if not isinstance(y, Tensor):
        raise ConfigError(
            f"{where}: {what} returned a {type(y).__name__}, not a tensor; an encoder returns one tensor "
            "(batch, features), or (batch, time, features) / (batch, channels, *space) to be pooled"
        )
    if y.dim() < 2 or y.shape[0] != 1:
        raise ConfigError(
            f"{where}: {what} returned shape {tuple(y.shape)} for a batch of 1 (modality {spec.name!r}); "
            "expected the batch first and at least one feature axis, e.g. (1, features)"
        )
    if pool_dims is not None and y.dim() > 2:
        axes = {d % y.dim() for d in pool_dims if -y.dim() <= d < y.dim()}
        if len(axes) < len(set(pool_dims)) or 0 in axes or len(axes) == y.dim() - 1:
            raise ConfigError(
                f"{where}: pool_dims {list(pool_dims)} must name some, not all, of the axes 1..{y.dim() - 1} "
                f"of the output {tuple(y.shape)} (axis 0 is the batch)"
            )
    return int(pool(y).shape[1])


def _import_extra(name: str, kind: str, where: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as err:  # absent, or present but broken (e.g. timm without a working torchvision)
        raise ConfigError(
            f"{where}: kind {kind!r} needs the package {name}, which did not import ({one_line(err)}); "
            f'install the extra: pip install "dynmm[{kind}]"{_EXTRA_HINT[kind]}'
        ) from err


def _fits(spec: ModalitySpec, kind: str, kinds: Sequence[str], where: str, why: str) -> None:
    if spec.kind not in kinds:
        raise ConfigError(
            f"{where}: kind {kind!r} cannot read a {spec.kind} modality of shape {tuple(spec.shape)}; {why}"
        )


def _build_timm(spec: ModalitySpec, opts: _Options) -> nn.Module:
    """timm.create_model(name, pretrained=False, num_classes=0, in_chans=channels), then the local weights."""
    where = opts.where
    _fits(spec, "timm", ("image",), where, "it reads image modalities (channels, height, width)")
    name = opts.get("name", str, None)
    if name is None:
        raise ConfigError(f"{where}: kind 'timm' needs name: a timm model name such as resnet18")
    kwargs = opts.mapping("kwargs")
    fixed = sorted(set(kwargs) & set(_TIMM_FIXED))
    if fixed:
        raise ConfigError(
            f"{where}: kwargs {fixed} are set by dynmm (in_chans from the modality, num_classes=0, pretrained off: "
            "give a local file as weights:)"
        )
    weights = opts.get("weights", str, None)
    timm = _import_extra("timm", "timm", where)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=spec.shape[0], **kwargs)
    except Exception as err:  # unknown model name, bad kwargs: one line
        raise ConfigError(f"{where}: timm could not build {name!r} with kwargs {kwargs}: {one_line(err)}") from err
    if weights is not None:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        load_local_weights(model, weights, where, cfg.get("classifier"), cfg.get("first_conv"))
    return model  # type: ignore[no-any-return]


def load_local_weights(
    model: nn.Module,
    path: str | Path,
    where: str,
    classifier: str | Sequence[str] | None = None,
    first_conv: str | Sequence[str] | None = None,
) -> None:
    """Load a local state dict into `model`: .safetensors (preferred) or .pth/.pt/.bin (tensors only).

    A checkpoint's classifier weights (`classifier` prefixes) are dropped, since the encoder has no classifier; a
    first conv (`first_conv`) trained on another number of input channels is adapted as timm does (summed to
    one channel, or repeated and rescaled). Any other missing, unexpected or misshapen key is a ConfigError.
    """
    state = read_state_dict(path, where)
    own = model.state_dict()
    drop = tuple(f"{c}." for c in _names(classifier))
    state = {k: v for k, v in state.items() if k in own or not k.startswith(drop)}
    for conv in _names(first_conv):
        key = f"{conv}.weight"
        if key in state and key in own and state[key].dim() == 4 and state[key].shape[1] != own[key].shape[1]:
            state[key] = adapt_input_conv(state[key], own[key].shape[1])
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshapen = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or misshapen:
        found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
        problems = [f"{label} {items[:4]}{' ...' if len(items) > 4 else ''}" for label, items in found if items]
        raise ConfigError(f"{where}: weights {str(path)!r} do not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)


def _names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """A conv weight (out, c, kh, kw) trained on c input channels, for `in_chans` channels (timm's rule): summed
    over channels for one channel, else the channels repeated and rescaled by c / in_chans."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    channels = weight.shape[1]
    repeat = math.ceil(in_chans / channels)
    return weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (channels / in_chans)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" progress bar in a run's log (restored afterwards)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _build_hf(spec: ModalitySpec, opts: _Options, out_dim: int | None, freeze: bool) -> nn.Module:
    """AutoModel.from_pretrained(path, local_files_only=True) over a float sequence or a vector of token ids."""
    where = opts.where
    source = opts.choice("input", HF_INPUTS, "embeds")
    if source == "embeds":
        _fits(
            spec,
            "hf",
            ("sequence",),
            where,
            "input: embeds reads a sequence (time, features); a vector of token ids needs input: ids",
        )
    else:
        _fits(spec, "hf", ("vector",), where, "input: ids reads a vector modality (time,) of token ids")
    pool = opts.choice("pool", HF_POOLS, "mean")
    pad_id = opts.get("pad_id", int, None)
    if pad_id is not None and source != "ids":
        raise ConfigError(f"{where}: pad_id applies to input: ids only")
    path = opts.get("path", str, None)
    if path is None:
        raise ConfigError(f"{where}: kind 'hf' needs path: a local folder written by save_pretrained")
    transformers = _import_extra("transformers", "hf", where)
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(
            f"{where}: path {path!r} is not a folder (relative paths start at {os.getcwd()}); write one with "
            "model.save_pretrained(path) — dynmm loads local folders only, it never downloads"
        )
    try:
        with _quiet_transformers():
            model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:  # not a model folder, unknown architecture, missing weights: one line
        raise ConfigError(f"{where}: transformers could not load a model from {path!r}: {one_line(err)}") from err
    if model.get_input_embeddings() is None:
        raise ConfigError(f"{where}: the model in {path!r} has no input embeddings to feed")
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and spec.shape[0] > limit:
        raise ConfigError(
            f"{where}: sequence length {spec.shape[0]} exceeds the model's max_position_embeddings {limit}"
        )
    in_features = spec.shape[-1] if source == "embeds" else None
    probe = HFEncoder(model, 1, in_features, pool, pad_id=pad_id)
    width = _dry_width(probe, spec, where, f"the HF model in {path!r}", lambda y: y)
    encoder = HFEncoder(model, width, in_features, pool, out_dim, freeze, pad_id)
    encoder.proj_in = probe.proj_in  # the same initial weights the probe ran with
    return encoder.train()
