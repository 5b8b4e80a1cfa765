"""Checks that a batch matches the modality specs and the task before any torch op sees it.

Why: a wrong shape deep inside a conv gives a traceback that names no modality; checking at the model's door
turns that into one line that says which modality, what was expected and what arrived. The target is checked the
same way before the loss (`check_target`): a regression target of shape (batch, 1) against predictions of shape
(batch,) would otherwise broadcast to a (batch, batch) loss and train silently wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn

from dynmm.errors import InputError
from dynmm.specs import SEGMENTATION_IGNORE, ModalitySpec, TaskSpec

SHOWN_ROWS = 5
"""How many offending row indices an error message lists before "...": enough to find them, one line still."""

_META = (
    "'meta' device, a placeholder without data (e.g. made under torch.device('meta')); "
    "give it real values on the model's device"
)


_CHECKED: ContextVar[bool] = ContextVar("dynmm_inputs_checked", default=False)
"""True inside `inputs_checked()`: the batch was checked at the model's door, so its parts do not check again."""


@contextmanager
def inputs_checked() -> Iterator[None]:
    """Within this block check_inputs trusts its caller: a routed model checks a batch once (every modality any
    part reads), then its gate and experts run unchecked. That one check is what batch-1 serving pays."""
    token = _CHECKED.set(True)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def check_inputs(
    inputs: Mapping[str, Tensor],
    specs: Mapping[str, ModalitySpec],
    required: Iterable[str] | None = None,
    *,
    where: str = "model",
    check_finite: bool = True,
    dtype: torch.dtype | None = None,
    model: nn.Module | None = None,
) -> int:
    """Validate `inputs` against `specs` for the `required` modalities; return the batch size.

    Extra keys are allowed (a model may use a subset of a data set's modalities). `dtype`: the floating-point
    type the model computes in (`parameter_dtype(model)`); a float64 batch into a float32 model would otherwise
    fail deep inside a layer with a message that names no modality. `model`: take `dtype` from its parameters
    (only when the check runs: a part of a checked batch pays nothing). Inside `inputs_checked()` nothing is
    checked.
    """
    if torch.compiler.is_compiling() or _CHECKED.get():  # traced for export (torch.cond branches): no checks
        return next((x.shape[0] for x in inputs.values()), 0)  # no int(): a traced batch stays symbolic
    if model is not None:
        dtype = parameter_dtype(model)
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
    non_finite: list[str] = []
    for name in names:
        x = inputs[name]
        spec = specs[name]
        if not isinstance(x, Tensor):
            raise InputError(f"{where}: modality {name!r} must be a torch.Tensor, got {type(x).__name__}")
        if x.device.type == "meta":
            raise InputError(f"{where}: modality {name!r} is on the {_META}")
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
            rows = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1)
            non_finite.append(f"modality {name!r} contains NaN or inf values in {describe_rows(rows)}")
    if non_finite:
        raise InputError(f"{where}: {'; '.join(non_finite)}")
    if batch == 0:
        raise InputError(f"{where}: empty batch (0 samples)")
    return int(batch or 0)


def describe_rows(rows: Tensor) -> str:
    """`rows` (a boolean mask over a batch) as "2 sample(s) (rows 3, 17 of 32)": the count and the first few
    indices, so that the offending rows can be found in the data."""
    index = rows.nonzero().flatten().tolist()
    shown = ", ".join(map(str, index[:SHOWN_ROWS])) + (", ..." if len(index) > SHOWN_ROWS else "")
    return f"{len(index)} sample(s) ({'row' if len(index) == 1 else 'rows'} {shown} of {rows.shape[0]})"


def input_rows(inputs: object) -> int | None:
    """Rows of a batch's inputs (the first modality's first dimension); None when it holds no tensor."""
    if isinstance(inputs, Mapping):
        for x in inputs.values():
            if isinstance(x, Tensor) and x.dim() > 0:
                return int(x.shape[0])
    return None


def check_target(
    target: object,
    task: TaskSpec,
    batch_size: int | None = None,
    *,
    spatial: tuple[int, ...] | None = None,
) -> None:
    """Validate a batch's target against the task before the loss sees it; raise an InputError naming the
    expected and the found shape, dtype or values.

    regression: (batch,) floating point, finite; classification: (batch,) integer class ids in [0, num_classes);
    multilabel: (batch, num_classes) of 0/1 (any numeric dtype); segmentation: (batch, H, W) integer class ids in
    [0, num_classes) or SEGMENTATION_IGNORE. `batch_size`: the rows of the inputs (or of the model's outputs);
    `spatial`: (H, W) a segmentation target must have (the outputs' spatial size). Only shapes, dtypes and one
    reduction per check: cheap enough for every batch.
    """
    if not isinstance(target, Tensor):
        raise InputError(f"target: must be a torch.Tensor, got {type(target).__name__}")
    if target.device.type == "meta":
        raise InputError(f"target: is on the {_META}")
    kind, classes = task.kind, task.num_classes
    rows = "batch" if batch_size is None else str(batch_size)
    if kind == "segmentation":
        size = ", ".join(map(str, spatial)) if spatial is not None else "height, width"
        shape, expected = f"(batch, height, width) = ({rows}, {size})", "integer class ids per pixel"
    elif kind == "multilabel":
        shape, expected = f"(batch, num_classes) = ({rows}, {classes})", "0/1 per label"
    else:
        shape = f"(batch,) = ({rows},)"
        expected = "real-valued scores" if kind == "regression" else "integer class ids"
    found = tuple(target.shape)
    wanted_dims = {"segmentation": 3, "multilabel": 2}.get(kind, 1)
    wrong = target.dim() != wanted_dims
    wrong = wrong or (batch_size is not None and found[0] != batch_size)
    wrong = wrong or (kind == "multilabel" and found[1] != classes)
    wrong = wrong or (kind == "segmentation" and spatial is not None and found[1:] != tuple(spatial))
    if wrong:
        hint = ""
        if batch_size is not None and target.dim() >= 1 and found[0] != batch_size:
            hint = f": the inputs have {batch_size} rows, the target {found[0]}"
        elif target.dim() == wanted_dims + 1 and found[1] == 1:
            hint = "; remove the extra dimension of size 1 (e.g. target.squeeze(1))"
        raise InputError(f"target: expected shape {shape} of {expected} for a {kind} task, got {found}{hint}")
    floating = torch.is_floating_point(target)
    if kind in ("classification", "segmentation"):
        if floating or target.is_complex() or target.dtype == torch.bool:
            raise InputError(
                f"target: expected integer class ids (e.g. torch.int64) for a {kind} task, got dtype {target.dtype}"
            )
        bad = (target < 0) | (target >= classes)
        if kind == "segmentation":
            bad = (bad & (target != SEGMENTATION_IGNORE)).flatten(1).any(1)
        if bool(bad.any()):
            allowed = f"[0, {classes})" + (f" or {SEGMENTATION_IGNORE} (unlabeled)" if kind == "segmentation" else "")
            raise InputError(
                f"target: class ids must lie in {allowed} for a {kind} task with {classes} classes; "
                f"{describe_rows(bad)} hold other ids"
            )
    elif kind == "regression":
        if not floating:
            raise InputError(
                f"target: expected a floating-point tensor for a regression task, got dtype {target.dtype}; "
                "convert it with .float()"
            )
        if not bool(torch.isfinite(target).all()):
            raise InputError(f"target: contains NaN or inf values in {describe_rows(~torch.isfinite(target))}")
    elif kind == "multilabel":
        if target.is_complex():
            raise InputError(f"target: expected 0/1 labels for a multilabel task, got dtype {target.dtype}")
        bad = ((target != 0) & (target != 1)).any(1)
        if bool(bad.any()):
            raise InputError(
                f"target: expected 0 or 1 per label for a multilabel task; {describe_rows(bad)} hold other values"
            )


def parameter_dtype(module: nn.Module) -> torch.dtype | None:
    """The floating-point dtype of a module's first floating-point parameter (None if it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
