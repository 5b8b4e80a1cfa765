"""Typed data-set options: one check shared by every loader's options dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from dynmm.errors import ConfigError


def check_option_types(options: Any, dataset: str) -> None:
    """Each field of a frozen options dataclass holds its declared type (bool, int or float, the last also
    accepting an int, stored as float); otherwise a ConfigError names the data set, option and value."""
    for f in fields(options):
        value = getattr(options, f.name)
        if f.type == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{dataset} option {f.name} must be bool, got {value!r}")
            continue
        wanted = (int,) if f.type == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ConfigError(f"{dataset} option {f.name} must be {f.type}, got {value!r}")
        if f.type == "float":
            object.__setattr__(options, f.name, float(value))


Options = TypeVar("Options")


def build_options(cls: type[Options], dataset: str, options: Mapping[str, object]) -> Options:
    """`cls(**options)` with defaults filled in; unknown names are a ConfigError that lists the accepted ones
    (`seed` is accepted too: it is the loaders' own argument)."""
    accepted = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown {dataset} option(s) {unknown}; accepted: {['seed', *accepted]}")
    return cls(**options)
