"""Candidate layers of a frozen unimodal backbone: which activations MFAS may fuse, pooled to vectors, and
what it costs to compute each one.

Why forward hooks: the backbones are ordinary static runs (`dynmm train ... --model.fusion=unimodal`), so the
candidate layers are read off the trained model as it is — every ReLU inside its encoder (in order), the
encoder's embedding and the model's output — without a second, tap-aware copy of every encoder class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynmm.cost import counting_madds
from dynmm.errors import ConfigError
from dynmm.modes import eval_mode
from dynmm.nn.static_model import StaticFusionModel

TAP_KINDS = ("relu", "embedding", "output")


def tap_kind(name: str) -> str:
    """The kind of a candidate layer's name: "relu3" -> "relu"."""
    return name.rstrip("0123456789")


@dataclass(frozen=True)
class Tap:
    """A candidate layer: its name and the module whose output it is."""

    name: str
    module: nn.Module


def pool(x: Tensor) -> Tensor:
    """(batch, C, H, W) -> mean over H, W; (batch, C, T) -> max over T (the temporal encoder's own pooling);
    (batch, D) unchanged."""
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    if x.dim() == 3:
        return x.amax(dim=2)
    if x.dim() == 2:
        return x
    raise ConfigError(f"cannot pool a backbone activation of shape {tuple(x.shape)} to a vector")


class Backbone:
    """A frozen unimodal static model and its candidate layers.

    Args:
        model: a trained `StaticFusionModel` over exactly one modality.
        kinds: which candidate layers the search may read: "relu" (every ReLU of the encoder, in order),
            "embedding" (the encoder's output) and "output" (the model's). The MFAS paper's AV-MNIST space is
            the ReLU blocks alone.
    """

    def __init__(self, model: StaticFusionModel, kinds: Sequence[str] = TAP_KINDS) -> None:
        if len(model.modalities) != 1:
            raise ConfigError(f"an MFAS backbone is a one-modality model, got one over {model.modalities}")
        self.modality = model.modalities[0]
        self.model = model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        encoder = model.encoders[self.modality]
        relus = [m for m in encoder.modules() if isinstance(m, nn.ReLU)]
        every = [Tap(f"relu{i + 1}", m) for i, m in enumerate(relus)]
        every += [Tap("embedding", encoder), Tap("output", model)]
        unknown = sorted(set(kinds) - set(TAP_KINDS))
        if unknown:
            raise ConfigError(f"candidate layer kinds {unknown} unknown; choose from {list(TAP_KINDS)}")
        self.taps = [t for t in every if tap_kind(t.name) in kinds]
        if not self.taps:
            raise ConfigError(f"the {self.modality!r} backbone has no candidate layer of kinds {list(kinds)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.taps)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def features(self, x: Tensor) -> list[Tensor]:
        """Pooled output of every candidate layer for a batch of this modality (on the backbone's device), from
        the frozen backbone in eval mode."""
        with eval_mode(self.model):
            return self.tapped(x)

    def tapped(self, x: Tensor) -> list[Tensor]:
        """The same features in the model's current mode and with autograd as the caller has it: what fine-tuning
        a found architecture end to end trains through."""
        x = x.to(self.device)
        captured: dict[int, Tensor] = {}
        handles = [
            tap.module.register_forward_hook(self._capture(captured, i))
            for i, tap in enumerate(self.taps)
            if tap.module is not self.model
        ]
        try:
            output = self.model({self.modality: x})
            captured |= {i: output for i, tap in enumerate(self.taps) if tap.module is self.model}
        finally:
            for handle in handles:
                handle.remove()
        return [pool(captured[i]).float() for i in range(len(self.taps))]

    @staticmethod
    def _capture(store: dict[int, Tensor], index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: Tensor) -> None:
            store[index] = output

        return hook

    def prefix_madds(self, example: Tensor) -> list[int]:
        """MAdds per sample to compute each candidate layer, measured by running the backbone on one sample
        under FlopCounterMode and stopping right after that layer (later layers of the backbone need not run)."""
        return [self._madds_until(tap, example[:1].to(self.device)) for tap in self.taps]

    def _madds_until(self, tap: Tap, x: Tensor) -> int:
        class _Reached(Exception):
            pass

        def stop(module: nn.Module, args: object, output: Tensor) -> None:
            raise _Reached

        handle = tap.module.register_forward_hook(stop) if tap.module is not self.model else None
        try:
            with torch.no_grad(), eval_mode(self.model), counting_madds() as report:
                try:
                    self.model({self.modality: x})
                except _Reached:
                    pass
        finally:
            if handle is not None:
                handle.remove()
        return report().total
