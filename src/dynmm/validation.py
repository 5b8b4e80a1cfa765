"""Checks that a batch matches the modality specs before any torch op sees it.

Why: a wrong shape deep inside a conv gives a traceback that names no modality; checking at the model's door
turns that into one line that says which modality, what was expected and what arrived.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from dynmm.errors import InputError
from dynmm.specs import ModalitySpec


def check_inputs(
    inputs: Mapping[str, Tensor],
    specs: Mapping[str, ModalitySpec],
    required: Iterable[str] | None = None,
    *,
    where: str = "model",
    check_finite: bool = True,
    dtype: torch.dtype | None = None,
) -> int:
    """Validate `inputs` against `specs` for the `required` modalities; return the batch size.

    Extra keys are allowed (a model may use a subset of a data set's modalities). `dtype`: the floating-point
    type the model computes in (`parameter_dtype(model)`); a float64 batch into a float32 model would otherwise
    fail deep inside a layer with a message that names no modality.
    """
    if not isinstance(inputs, Mapping):
        raise InputError(f"{where}: inputs must be a dict of modality -> tensor, got {type(inputs).__name__}")
    names = list(required) if required is not None else list(specs)
    missing = [m for m in names if m not in inputs]
    if missing:
        raise InputError(
            f"{where}: missing modality {', '.join(repr(m) for m in missing)}; "
            f"needs {sorted(names)}, got keys {sorted(inputs)}"
        )
    batch: int | None = None
    first: str | None = None
    for name in names:
        x = inputs[name]
        spec = specs[name]
        if not isinstance(x, Tensor):
            raise InputError(f"{where}: modality {name!r} must be a torch.Tensor, got {type(x).__name__}")
        if not torch.is_floating_point(x):
            raise InputError(f"{where}: modality {name!r} must be a floating-point tensor, got dtype {x.dtype}")
        if dtype is not None and x.dtype != dtype:
            raise InputError(
                f"{where}: modality {name!r} has dtype {x.dtype} but the model computes in {dtype}; "
                f"convert it with .to({dtype})"
            )
        expected = tuple(spec.shape)
        if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise InputError(
                f"{where}: modality {name!r} expected shape (batch, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )
        if batch is None:
            batch, first = x.shape[0], name
        elif x.shape[0] != batch:
            raise InputError(f"{where}: batch sizes differ: {first!r} has {batch} rows, {name!r} has {x.shape[0]}")
        if check_finite and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise InputError(f"{where}: modality {name!r} contains NaN or inf values in {bad} sample(s)")
    if batch == 0:
        raise InputError(f"{where}: empty batch (0 samples)")
    return int(batch or 0)


def parameter_dtype(module: nn.Module) -> torch.dtype | None:
    """The floating-point dtype of a module's first floating-point parameter (None if it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
