"""The contract every fusion op keeps: per-modality embeddings in, one (batch, out_dim) tensor out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import Tensor, nn

from dynmm.errors import ConfigError, InputError


class Fusion(nn.Module):
    """Base class of the static fusion ops.

    Why a base class: every op reads its modalities in the same (sorted) order and fails the same way on a
    missing or mis-sized embedding, so `embeddings_in_order` is written once and each `forward` calls it.

    Args:
        in_dims: embedding size of each modality.
        out_dim: size of the fused output.

    Inputs:
        embeddings (Dict[str, Tensor]): modality name -> (batch, in_dims[name]); extra keys are ignored.
    """

    produces_predictions: ClassVar[bool] = False
    """True when the output already is the task prediction (late fusion), so no head goes after it."""

    def __init__(self, in_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__()
        kind = type(self).__name__
        if not in_dims:
            raise ConfigError(f"{kind}: needs at least one modality, got in_dims={dict(in_dims)}")
        bad = {m: d for m, d in in_dims.items() if not isinstance(d, int) or d <= 0}
        if bad:
            raise ConfigError(f"{kind}: embedding sizes must be positive integers, got {bad}")
        dotted = [m for m in in_dims if not isinstance(m, str) or not m or "." in m]
        if dotted:
            raise ConfigError(f"{kind}: modality names must be non-empty strings without '.', got {dotted}")
        if not isinstance(out_dim, int) or out_dim <= 0:
            raise ConfigError(f"{kind}: out_dim must be a positive integer, got {out_dim!r}")
        self.modalities: list[str] = sorted(in_dims)
        self.in_dims: dict[str, int] = {m: in_dims[m] for m in self.modalities}
        self.out_dim = out_dim

    def embeddings_in_order(self, embeddings: Mapping[str, Tensor]) -> list[Tensor]:
        """Return the embeddings of `self.modalities` in sorted order, after checking keys and shapes."""
        kind = type(self).__name__
        missing = [m for m in self.modalities if m not in embeddings]
        if missing:
            raise InputError(
                f"{kind}: missing embedding for modality {', '.join(map(repr, missing))}; "
                f"needs {self.modalities}, got keys {sorted(embeddings)}"
            )
        out: list[Tensor] = []
        for m in self.modalities:
            z = embeddings[m]
            if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.in_dims[m]:
                got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
                raise InputError(
                    f"{kind}: embedding of modality {m!r} must have shape (batch, {self.in_dims[m]}), got {got}"
                )
            if out and z.shape[0] != out[0].shape[0]:
                raise InputError(
                    f"{kind}: batch sizes differ: {self.modalities[0]!r} has {out[0].shape[0]} rows, "
                    f"{m!r} has {z.shape[0]}"
                )
            out.append(z)
        return out

    def extra_repr(self) -> str:
        return f"in_dims={self.in_dims}, out_dim={self.out_dim}"
