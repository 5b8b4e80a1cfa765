"""A device a user names (a CLI flag or a config key) as a torch device, or one error saying what is wrong."""

from __future__ import annotations

import torch

from dynmm.errors import ConfigError


def torch_device(name: str, where: str) -> torch.device:
    """`name` as a torch device; ConfigError naming `where` when torch does not know it or it is a CUDA device
    this machine lacks (rather than a failure at the first tensor moved there)."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(
            f"{where} {name!r} is not a torch device (not a device name such as cpu, cuda or cuda:N): {err}"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{where} {name!r}: this torch sees no CUDA GPU (no CUDA device on this machine; torch {torch.__version__})"
        )
    return device
