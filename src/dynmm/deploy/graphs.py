"""Write one torch module as an ONNX graph (dynamo exporter: `torch.cond` becomes an ONNX `If`) or as a
torch.export program (.pt2), with named inputs and outputs and, where asked, a dynamic batch dimension."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from dynmm.errors import ConfigError
from dynmm.validation import inputs_checked

Format = Literal["onnx", "torch-export"]
FORMATS: tuple[Format, ...] = ("onnx", "torch-export")
SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}


def check_format(name: str) -> Format:
    if name not in FORMATS:
        raise ConfigError(f"unknown export format {name!r}; choose from {list(FORMATS)}")
    return name  # type: ignore[return-value]


def _dynamic_shapes(
    args: Sequence[Tensor], dynamic_batch: bool, batch_dims: Sequence[int] | None
) -> tuple[tuple[dict[int, object], ...]] | None:
    """The batch dimension of each arg (0 unless `batch_dims` says, e.g. 1 for an LSTM state); the graphs'
    forward takes `*tensors`, one parameter."""
    if not dynamic_batch:
        return None
    batch = torch.export.Dim("batch", min=1)
    dims = list(batch_dims) if batch_dims is not None else [0] * len(args)
    return (tuple({dim: batch} for dim in dims),)


def save_graph(
    module: nn.Module,
    args: Sequence[Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: Path,
    fmt: Format,
    dynamic_batch: bool = False,
    batch_dims: Sequence[int] | None = None,
) -> Path:
    """Export `module(*args)` to `path` (its suffix is the format's); a dynamic batch needs args with ≥ 2 rows,
    or the exporter fixes the batch at 1."""
    module = module.eval()
    shapes = _dynamic_shapes(args, dynamic_batch, batch_dims)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporters' progress lines and deprecation notes are not the user's
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        if fmt == "onnx":
            program = torch.onnx.export(
                module,
                tuple(args),
                dynamo=True,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=shapes,
                verbose=False,
            )
            assert program is not None
            program.save(str(path))
        else:
            exported = torch.export.export(module, tuple(args), dynamic_shapes=shapes)
            torch.export.save(exported, str(path))
    return path


class PositionalInputs(nn.Module):
    """A model that takes a dict of modalities, called with positional tensors (what exporters take)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, *tensors: Tensor) -> Tensor:
        with inputs_checked():  # a check's data-dependent branches cannot be exported; the runtime checks shapes
            return self.model(dict(zip(self.names, tensors, strict=True)))
