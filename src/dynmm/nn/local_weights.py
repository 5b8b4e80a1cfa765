"""Local weight files as state dicts: what a user's ImageNet (or other) checkpoint is read with.

Why one reader: timm encoders and the fusion-level ResNets both start from files a user brings (nothing is ever
downloaded), and both must refuse a file that would run code when unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dynmm.errors import ConfigError


def one_line(err: BaseException) -> str:
    """`Type: first line of the message`: an error folded into a one-line ConfigError."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def read_state_dict(path: str | Path, where: str) -> dict[str, Tensor]:
    """A local state dict of tensors: .safetensors (preferred) or .pth/.pt/.bin read with
    `torch.load(weights_only=True)` (a file cannot run code); a `state_dict`/`model` wrapper and DataParallel's
    `module.` prefixes are unwrapped. Anything else is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{where}: weights file {str(path)!r} not found (relative paths start at {os.getcwd()})")
    state: Any
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:
            raise ConfigError(f"{where}: cannot read weights {str(path)!r}: {one_line(err)}") from err
    elif path.suffix in (".pth", ".pt", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # weights_only refuses pickled code: say so in one line
            raise ConfigError(
                f"{where}: cannot read weights {str(path)!r} as tensors only (torch.load weights_only=True; "
                f"dynmm never unpickles code): {one_line(err)}"
            ) from err
    else:
        raise ConfigError(f"{where}: weights file {str(path)!r} must end in .safetensors, .pth, .pt or .bin")
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{where}: weights file {str(path)!r} does not hold a state dict of tensors")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state
