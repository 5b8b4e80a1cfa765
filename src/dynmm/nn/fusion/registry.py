"""Fusion ops by name, so configs and searches can say `fusion: tfn` and get a clear error for a typo."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dynmm.errors import ConfigError
from dynmm.nn.fusion.base import Fusion

FUSIONS: dict[str, type[Fusion]] = {}
"""Registered fusion ops: name -> class (constructor `(in_dims, out_dim, **options)`)."""

F = TypeVar("F", bound=type[Fusion])


def register_fusion(name: str) -> Callable[[F], F]:
    """Class decorator adding a Fusion subclass to FUSIONS under `name`."""

    def add(cls: F) -> F:
        if name in FUSIONS and FUSIONS[name] is not cls:
            raise ConfigError(f"fusion name {name!r} is already taken by {FUSIONS[name].__name__}")
        FUSIONS[name] = cls
        return cls

    return add


def fusion_class(name: str) -> type[Fusion]:
    """The class registered as `name`; an unknown name raises ConfigError with the closest valid one."""
    if name not in FUSIONS:
        close = difflib.get_close_matches(str(name), FUSIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown fusion {name!r}{hint}; available: {', '.join(sorted(FUSIONS))}")
    return FUSIONS[name]


def fusion_options(name: str) -> list[str]:
    """Keyword options the fusion `name` accepts besides in_dims and out_dim."""
    params = inspect.signature(fusion_class(name).__init__).parameters
    return [p for p in params if p not in ("self", "in_dims", "out_dim")]


def build_fusion(name: str, in_dims: Mapping[str, int], out_dim: int, **options: Any) -> Fusion:
    """Build the registered fusion `name`; unknown names or options raise ConfigError saying what is valid."""
    accepted = fusion_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"fusion {name!r}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    return FUSIONS[name](in_dims, out_dim, **options)
