"""Run configuration: typed pydantic models, loaded strictly from YAML plus `--key=value` overrides.

Why strict: a typo such as `max_epoch: 50` must fail loudly with the key's full path and a suggestion, never be
ignored so that a run silently trains with the default. The resolved configuration is written next to every run.

This module knows no method. A method's own section (`dynmm`, `fusion_level`, `adamml`, `mfas`, ...) is a
`Section` that the method registry (`dynmm.methods`, imported by `import dynmm`) registers with
`register_section`; `RunConfig` then accepts it as an optional top-level key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, field_validator

from dynmm.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are refused, values are never coerced (3.0 is no int, "3" no number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class DataConfig(Section):
    """Which data set, with which loader options, in which batches."""

    name: str = "mosi"
    batch_size: int = 64
    num_workers: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(Section):
    """A static fusion model: one encoder per modality, a fusion from the zoo, a prediction head.

    `encoders` maps a modality name (or `default`, applied to every modality) to encoder options such as
    `{kind: mlp, hidden: [128], dropout: 0.2}`; per-modality entries override `default` key by key.
    """

    fusion: str = "concat"
    modalities: list[str] | None = None
    embed_dim: int = 64
    encoders: dict[str, dict[str, Any]] = Field(default_factory=dict)
    fusion_options: dict[str, Any] = Field(default_factory=dict)
    head_hidden: list[int] = Field(default_factory=list)
    head_dropout: float = 0.0


class TrainConfig(Section):
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


class GateConfig(Section):
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
    dim_feedforward: int | None = None
    """Transformer gate: width of each layer's feed-forward part (default: `hidden`)."""
    mode: str = "hard"
    tau: float = 1.0


class RunConfig(Section):
    """Everything that defines a run; written resolved to runs/<name>/config.yaml.

    Without a method section the run trains one static model (`model`); with one (at most one trainable), that
    method's recipe. Method sections are registered by the methods (`register_section`); `load_config` and
    `from_dict(RunConfig, ...)` build the class that knows every registered one (`run_config_class`).
    """

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name", mode="before")
    @classmethod
    def _name_below_output_dir(cls, value: Any) -> Any:
        return check_run_name(value) if isinstance(value, str) or value is None else value

    def section(self, key: str) -> Section | None:
        """The method section `key` (None when absent or not registered)."""
        value = getattr(self, key, None)
        return value if isinstance(value, Section) else None

    def present_sections(self) -> list[str]:
        """The registered method sections this config holds, in registration order."""
        return [key for key in SECTIONS if self.section(key) is not None]


def check_run_name(name: str | None, key: str = "name") -> str:
    """`name` if it names a folder below the output folder: a relative path (subfolders such as `exp/a` are
    fine), not empty, without `..`, NUL or a drive. Raises ValueError (a ConfigError once pydantic's error is
    translated) otherwise.

    Why: runs/<name>/ is created, written and (with --resume) continued; `--name=../../x` or `--name=/tmp/x`
    would put a whole run outside `output_dir`, and an empty name would write into `output_dir` itself."""
    if name is None or not name.strip() or all(part == "." for part in PureWindowsPath(name).parts):
        raise ValueError(f"{key} must name a folder below output_dir (e.g. mosi_tfn or exp/a), got {name!r}")
    if "\x00" in name:
        raise ValueError(f"{key} must not contain a NUL character, got {name!r}")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        raise ValueError(
            f"{key} {name!r} is an absolute path; a run name is relative to output_dir (e.g. exp/a): "
            "set --output_dir to write elsewhere"
        )
    if ".." in PureWindowsPath(name).parts:
        raise ValueError(f"{key} {name!r} leaves output_dir: a run name is a relative path without '..' (e.g. exp/a)")
    return name


SECTIONS: dict[str, type[Section]] = {}
"""Method sections by top-level key, in registration order (the order of config.yaml)."""

_RUN_CONFIG_CLASSES: dict[tuple[tuple[str, type[Section]], ...], type[RunConfig]] = {}


def register_section(key: str, section: type[Section]) -> None:
    """Let `RunConfig` accept `key: {...}` validated as `section` (a method's own config section)."""
    if key in RunConfig.model_fields:
        raise ConfigError(f"a method section cannot be named {key!r}: that is a key of every run config")
    if SECTIONS.get(key, section) is not section:
        raise ConfigError(f"two methods register the config section {key!r}")
    SECTIONS[key] = section


def run_config_class() -> type[RunConfig]:
    """`RunConfig` with one optional field per registered method section (built once per set of sections)."""
    key = tuple(SECTIONS.items())
    if key not in _RUN_CONFIG_CLASSES:
        fields: dict[str, Any] = {name: (section | None, None) for name, section in SECTIONS.items()}
        _RUN_CONFIG_CLASSES[key] = create_model("RunConfig", __base__=RunConfig, __module__=__name__, **fields)
    return _RUN_CONFIG_CLASSES[key]


S = TypeVar("S", bound=Section)


def section_of(config: RunConfig, key: str, kind: type[S]) -> S:
    """A method's typed view of its own section; a ConfigError when the config has none."""
    value = config.section(key)
    if not isinstance(value, kind):
        raise ConfigError(f"this run config has no `{key}` section")
    return value


def replace_section(config: RunConfig, key: str, **changes: Any) -> RunConfig:
    """A copy of `config` whose section `key` has `changes` (a λ sweep point, a shared stage folder)."""
    current = config.section(key)
    if current is None:
        raise ConfigError(f"this run config has no `{key}` section")
    return config.model_copy(update={key: current.model_copy(update=changes)})


T = TypeVar("T")


def from_dict(cls: type[T], raw: Any, path: str = "") -> T:
    """Build `cls` (a section, or a dataclass marked with pydantic's `with_config(extra="forbid")`) from a plain
    dict, refusing unknown keys and values of the wrong type.

    Errors are one line naming the full dotted key (`train.max_epoch`), with a suggestion for a misspelt key, or
    the expected type and the value found."""
    if cls is RunConfig:
        cls = typing.cast(type[T], run_config_class())
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {path or '<root>'!r} must be a mapping, got {type(raw).__name__}")
    try:
        return TypeAdapter(cls).validate_python(raw)  # strictness is the section's (its model_config)
    except ValidationError as err:
        raise _config_error(err, cls, path) from None


_EXPECTED = {
    "int_type": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "bool",
    "list_type": "a list",
    "dict_type": "a mapping",
}


def _dotted(path: str, loc: tuple[Any, ...]) -> str:
    text = path
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _fields(cls: Any) -> dict[str, Any]:
    """Field name -> annotation of a section or a dataclass ({} for anything else)."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return {name: field.annotation for name, field in cls.model_fields.items()}
    if dataclasses.is_dataclass(cls) and isinstance(cls, type):
        return typing.get_type_hints(cls)
    return {}


def _fields_at(cls: Any, loc: tuple[Any, ...]) -> dict[str, Any]:
    """The fields of the section reached by following `loc` through `cls` ({} past a plain dict or list)."""
    current = cls
    for part in loc:
        current = _fields(current).get(part)
        if typing.get_origin(current) in (Union, types.UnionType):
            current = next((a for a in typing.get_args(current) if a is not type(None)), None)
    return _fields(current)


def _config_error(err: ValidationError, cls: Any, path: str) -> ConfigError:
    """The first problem pydantic found, as the one-line message users know."""
    first = err.errors()[0]
    loc, kind, value = tuple(first["loc"]), first["type"], first.get("input")
    full = _dotted(path, loc)
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):  # a section, a dataclass
        known = sorted(_fields_at(cls, loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"unknown config key {full!r}{hint}; valid keys here: {known}")
    if kind == "value_error":  # a section's own check (e.g. a __post_init__) said what is wrong
        return ConfigError(str(first.get("ctx", {}).get("error", first["msg"])))
    if kind in ("model_type", "dataclass_type"):
        return ConfigError(f"config section {full!r} must be a mapping, got {type(value).__name__}")
    expected = _EXPECTED.get(kind, first["msg"].removeprefix("Input should be ").lower())
    return ConfigError(f"config key {full!r} expects {expected}, got {value!r}")


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


def encoder_options(config: ModelConfig, modality: str) -> dict[str, Any]:
    """`encoders.default` overridden key by key by `encoders.<modality>`.

    A modality entry that names another `kind` replaces the default entirely: options of one encoder kind
    (e.g. an MLP's `hidden`) mean nothing to another.
    """
    return deep_merge(config.encoders.get("default", {}), config.encoders.get(modality, {}))


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


def to_dict(config: BaseModel) -> dict[str, Any]:
    return config.model_dump()


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
