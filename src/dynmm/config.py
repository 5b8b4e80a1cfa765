"""Run configuration: typed dataclasses, loaded strictly from YAML plus `--key=value` overrides.

Why strict: a typo such as `max_epoch: 50` must fail loudly with the key's full path and a suggestion, never be
ignored so that a run silently trains with the default. The resolved configuration is written next to every run.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from dynmm.errors import ConfigError


@dataclass
class DataConfig:
    """Which data set, with which loader options, in which batches."""

    name: str = "mosi"
    batch_size: int = 64
    num_workers: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """A static fusion model: one encoder per modality, a fusion from the zoo, a prediction head.

    `encoders` maps a modality name (or `default`, applied to every modality) to encoder options such as
    `{kind: mlp, hidden: [128], dropout: 0.2}`; per-modality entries override `default` key by key.
    """

    fusion: str = "concat"
    modalities: list[str] | None = None
    embed_dim: int = 64
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    fusion_options: dict[str, Any] = field(default_factory=dict)
    head_hidden: list[int] = field(default_factory=list)
    head_dropout: float = 0.0


@dataclass
class TrainConfig:
    """Optimisation and Lightning Trainer settings.

    `accelerator`, `devices`, `strategy` and `num_nodes` go to the Trainer as they are: e.g. `devices: 2,
    strategy: ddp` trains on two processes (GPUs, or CPU processes with gloo), `num_nodes` spans machines; torchrun
    and SLURM's srun start the processes themselves. `data.batch_size` is then per process: 2 processes × 16 rows
    step like 1 process × 32. Stages that skip parameters in training (fusion-level stage I and static ops,
    AdaMML's finetune phase and single-modality baselines) switch `ddp` to `ddp_find_unused_parameters_true`.
    Rank 0 alone writes files; README "Several processes, GPUs and machines" says what runs where.
    """

    max_epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    monitor: str | None = None
    monitor_mode: str | None = None
    early_stopping_patience: int | None = None
    gradient_clip_val: float | None = None
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    deterministic: bool = True
    progress_bar: bool = True
    limit_train_batches: float | None = None


@dataclass
class GateConfig:
    """The gate of modality-level DynMM.

    `kind`: mlp (2 layers on concatenated pooled inputs) or transformer (sequence inputs of one length).
    `modalities`: what the gate looks at (default: every modality some expert uses); a gate on the cheap
    modality only costs less, and the gate's MAdds are paid by every sample.
    `mode`: hard (Gumbel straight-through, one expert per sample) or soft (DynMM-d: weighted sum, no skipping).
    """

    kind: str = "mlp"
    modalities: list[str] | None = None
    hidden: int = 128
    nhead: int = 2
    num_layers: int = 1
    dropout: float = 0.0
    mode: str = "hard"
    tau: float = 1.0


@dataclass
class ExpertConfig:
    """One expert: a name and the `model` keys that differ from the run's `model` section (merged over it)."""

    name: str = "expert"
    model: dict[str, Any] = field(default_factory=dict)


@dataclass
class DynMMConfig:
    """Modality-level DynMM recipe: stage I trains each expert, stage II the gate (experts frozen), optional
    stage III fine-tunes everything.

    `expert_train`, `gate_train`, `finetune_train` override keys of the run's `train` section per stage
    (`finetune_train: null` skips stage III). `gate_data` overrides keys of `data` for stages II-III (e.g. MOSI:
    train the gate on rows whose features the upstream extractors never saw); `eval_data` for the final
    evaluation (default: `gate_data`). `experts_dir` reuses experts trained by another run (a λ sweep trains
    them once).
    """

    experts: list[ExpertConfig] = field(default_factory=list)
    gate: GateConfig = field(default_factory=GateConfig)
    resource_weight: float = 0.0
    expert_train: dict[str, Any] = field(default_factory=dict)
    gate_train: dict[str, Any] = field(default_factory=dict)
    finetune_train: dict[str, Any] | None = None
    gate_data: dict[str, Any] = field(default_factory=dict)
    eval_data: dict[str, Any] | None = None
    experts_dir: str | None = None


@dataclass
class FusionLevelConfig:
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
    supernet_train: dict[str, Any] = field(default_factory=dict)
    gate_train: dict[str, Any] = field(default_factory=dict)
    tau_start: float = 1.0
    tau_end: float = 1.0e-4
    supernet_dir: str | None = None


ADAMML_LIGHT_POLICY: dict[str, Any] = {"hidden": 128, "widths": [8, 16, 24], "strides": [2, 2, 2], "feature_dim": 32}
"""AdaMML's default policy: lighter than `AdaMMLPolicy`'s own defaults (paper-sized LSTM 256), so that on
28x28 digits and 40-mel log-mels it stays cheap next to the recognition nets."""


@dataclass
class AdaMMLConfig:
    """AdaMML on clips of T segments (data with (T, C, H, W) image modalities, e.g. `avclips`).

    `encoders`: recognition encoder per modality (`default` + per-modality entries, as `model.encoders`; unset:
    `dynmm.models.adamml.DEFAULT_ENCODER`). `policy`: `AdaMMLPolicy` options; keys not given take the values of
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

    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=lambda: dict(ADAMML_LIGHT_POLICY))
    fallback: str | None = None
    resource_weight: float = 0.5
    lambdas: dict[str, float] | None = None
    gamma: float = 10.0
    tau_start: float = 5.0
    tau_factor: float = 0.965
    warmup_train: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 5})
    joint_train: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 20})
    finetune_train: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 10})
    warmup_dir: str | None = None
    train_baselines: bool = True


@dataclass
class MFASConfig:
    """MFAS: search the fusion of frozen unimodal backbones (`dynmm search mfas CONFIG`).

    `modalities`: the fused modalities in order (>= 2; default: the data set's, sorted). Each backbone is an
    ordinary static run of the run's `model` + `train` with `fusion: unimodal` on one modality, trained into
    `<run>/backbones/<modality>` unless `backbone_runs` names a finished run for it (trained with `dynmm train`).
    `search_data`: overrides of `data` for the fusion search (e.g. MOSI rows whose features are unseen).
    A fusion layer picks one candidate layer of every backbone and an activation from `activations`;
    h_l = σ(W_l [x_1; ...; x_M; h_{l-1}]) with `width` units; a linear head reads h_L.
    Progressive search (`iterations` passes over positions 1..`layers`): the first step evaluates every
    one-layer architecture (or `first_step_samples` of them), later steps expand the previous step's picks by one
    position, rank the expansions with the LSTM surrogate and draw `samples_per_step` of them with a temperature
    (inverse-exponential from `tau_start` to `tau_end` over `tau_steps` steps). Each evaluation trains only the
    fusion layers for `epochs_per_eval` epochs on cached backbone features, starting from the weights shared by
    position and shape (`weight_sharing`). Then the `top_k` found are trained from scratch for `final_epochs`.
    `search_seeds`: one MFAS search and one random search (same number of evaluations, same training) per seed.
    `cache`: "memory" or "memmap" (`cache_dir`, default `<run>/feature_cache`, keyed by the backbones' weights).
    `timing_architectures`: evaluations also timed with the backbones recomputed for every batch (no cache).
    `metric`: what the search maximises on `valid` (default: accuracy; acc2 for sentiment; f1_micro multilabel).
    `device`: where backbones and fusion networks run: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    """

    modalities: list[str] | None = None
    backbone_runs: dict[str, str] = field(default_factory=dict)
    search_data: dict[str, Any] | None = None
    layers: int = 4
    width: int = 32
    activations: list[str] = field(default_factory=lambda: ["relu", "sigmoid", "leaky_relu"])
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
    surrogate: dict[str, Any] = field(default_factory=dict)
    top_k: int = 3
    final_epochs: int = 20
    search_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    random_search: bool = True
    cache: str = "memory"
    cache_dir: str | None = None
    timing_architectures: int = 3
    metric: str | None = None
    device: str = "auto"


@dataclass
class RunConfig:
    """Everything that defines a run; written resolved to runs/<name>/config.yaml.

    Without a `dynmm`, `fusion_level` or `adamml` section the run trains one static model (`model`); with one
    (at most one), that method's recipe. An `mfas` section makes it a search (`dynmm search mfas`), whose
    backbones are static runs of `model` and `train`.
    """

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dynmm: DynMMConfig | None = None
    fusion_level: FusionLevelConfig | None = None
    adamml: AdaMMLConfig | None = None
    mfas: MFASConfig | None = None


T = typing.TypeVar("T")


def from_dict(cls: type[T], raw: Any, path: str = "") -> T:
    """Build dataclass `cls` from a plain dict, refusing unknown keys and values of the wrong type."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {path or '<root>'!r} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in known:
            full = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {full!r}{hint}; valid keys here: {sorted(known)}")
    values = {}
    for key, value in raw.items():
        full = f"{path}.{key}" if path else key
        values[key] = _coerce(hints[key], value, full)
    return cls(**values)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)  # type: ignore[arg-type]
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config key {path!r}: {value!r} fits no type of {tp}")
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {path!r} expects a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {path!r} expects a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): _coerce(item, v, f"{path}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"config key {path!r} expects {getattr(tp, '__name__', tp)}, got {value!r}")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `--train.max_epochs=3 --model.fusion tfn` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    i = 0
    while i < len(overrides):
        token = overrides[i]
        if not token.startswith("--"):
            raise ConfigError(f"override {token!r} must look like --section.key=value")
        key, sep, text = token[2:].partition("=")
        if not sep:
            if i + 1 >= len(overrides):
                raise ConfigError(f"override {token!r} has no value; write --{key}=VALUE")
            i += 1
            text = overrides[i]
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {token!r}: the value is not valid YAML ({yaml_problem(err)})") from err
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {token!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = value
        i += 1
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge `update` into `base` key by key, recursively.

    A mapping that names another `kind` (e.g. an encoder switched from mlp to identity) replaces the old one
    instead of merging into it: options of one kind of component mean nothing to another.
    """
    if "kind" in update and update["kind"] != base.get("kind"):
        return dict(update)
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own text spans several lines and quotes the
    source, which the CLI's one-line errors must not)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text ({err})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(err)}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config, apply `--key=value` overrides, and validate every key and type."""
    raw = load_yaml(path) if path is not None else {}
    raw = deep_merge(raw, parse_overrides(overrides or []))
    return from_dict(RunConfig, raw)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
