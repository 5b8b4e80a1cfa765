"""AdaMML's policy network: per segment of a clip, decide for every modality whether to keep (run) it or skip it.

Per modality a light CNN (MobileNetV2-like) embeds each segment; the embeddings of all modalities are
concatenated, go through FC -> ReLU -> FC -> ReLU and an LSTM over the clip's T segments (so a decision can use
what earlier segments showed), and a 2-way head per modality gives keep/skip logits. `decide` turns the logits
into 0/1 keep masks: hard Gumbel-softmax with straight-through gradients in training, argmax (never random) in
evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynmm.errors import ConfigError, InputError
from dynmm.nn.mobilenet import LightCNN, MobileNetV2
from dynmm.relax import gumbel_softmax

KEEP = 1
"""Index of "keep" in the last axis of the policy's logits (0 = skip)."""


class AdaMMLPolicy(nn.Module):
    """Keep/skip logits for every (clip, segment, modality).

    Args:
        modalities: modality name -> input channels of its segments (e.g. {"audio": 1, "image": 1}).
        feature_dim: size of each modality's CNN feature vector.
        hidden: width of the two FC layers and of the LSTM.
        widths, strides, expand_ratio: the `LightCNN` of every modality.
        downsample: average-pool every segment by this factor before its CNN. The policy decides from a coarse
            look, as AdaMML's does from low-resolution frames: its cost falls by about the factor squared.
        cnn: "light" (`LightCNN` with `widths`, `strides`, `expand_ratio`, `feature_dim`) or "mobilenet_v2" (the
            full MobileNetV2 per modality, 1280 features each, as AdaMML's authors; `widths`, `strides`,
            `expand_ratio` and `feature_dim` are then unused).
        fc_hidden: width of the two FC layers (default: `hidden`); the authors' joint MLP is 2048 wide and
            their LSTM 256.
        resize: (height, width) every segment is resized to (bilinear) before its CNN, e.g. the authors' policy
            sees 160x160 frames; applied after `downsample`.

    Inputs:
        inputs: modality name -> (B, T, C, H, W) segments; B and T must agree across modalities, H and W may
            differ per modality. Extra keys are ignored.

    Returns:
        modality name -> (B, T, 2) logits; index `KEEP` (= 1) is keep, 0 is skip.
    """

    def __init__(
        self,
        modalities: Mapping[str, int],
        feature_dim: int = 64,
        hidden: int = 256,
        widths: Sequence[int] = (8, 16, 24, 32),
        strides: Sequence[int] = (1, 2, 2, 2),
        expand_ratio: int = 2,
        downsample: int = 1,
        cnn: str = "light",
        fc_hidden: int | None = None,
        resize: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ConfigError("AdaMML policy needs at least one modality")
        if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
            raise ConfigError(f"AdaMML policy downsample must be an integer >= 1, got {downsample!r}")
        self.downsample = downsample
        if min(feature_dim, hidden) < 1:
            raise ConfigError(f"AdaMML policy sizes must be positive, got feature_dim={feature_dim}, hidden={hidden}")
        if cnn not in ("light", "mobilenet_v2"):
            raise ConfigError(f"AdaMML policy cnn must be 'light' or 'mobilenet_v2', got {cnn!r}")
        if resize is not None and (len(resize) != 2 or min(resize) < 1):
            raise ConfigError(f"AdaMML policy resize must be [height, width] >= 1, got {resize!r}")
        self.resize = None if resize is None else (int(resize[0]), int(resize[1]))
        self.modalities = sorted(modalities)
        self.channels = {m: modalities[m] for m in self.modalities}
        cnns: dict[str, LightCNN | MobileNetV2] = {
            m: MobileNetV2(self.channels[m])
            if cnn == "mobilenet_v2"
            else LightCNN(self.channels[m], widths, strides, expand_ratio, feature_dim)
            for m in self.modalities
        }
        self.encoders = nn.ModuleDict(cnns)
        features = sum(c.out_dim for c in cnns.values())
        fc_width = hidden if fc_hidden is None else fc_hidden
        self.fc = nn.Sequential(
            nn.Linear(features, fc_width),
            nn.ReLU(inplace=True),
            nn.Linear(fc_width, fc_width),
            nn.ReLU(inplace=True),
        )
        self.lstm = nn.LSTM(fc_width, hidden, batch_first=True)
        self.heads = nn.ModuleDict({m: nn.Linear(hidden, 2) for m in self.modalities})

    def check_inputs(self, inputs: Mapping[str, Tensor]) -> tuple[int, int]:
        """Raise InputError naming the modality at fault; return (B, T)."""
        if not isinstance(inputs, Mapping):
            raise InputError(f"AdaMMLPolicy: inputs must be a dict of modality -> tensor, got {type(inputs).__name__}")
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise InputError(
                f"AdaMMLPolicy: missing modality {', '.join(map(repr, missing))}; "
                f"needs {self.modalities}, got keys {sorted(inputs)}"
            )
        for m in self.modalities:
            x = inputs[m]
            if not isinstance(x, Tensor) or x.dim() != 5 or x.shape[2] != self.channels[m]:
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise InputError(
                    f"AdaMMLPolicy: modality {m!r} expected shape (B, T, {self.channels[m]}, H, W), got {got}"
                )
        sizes = {m: (inputs[m].shape[0], inputs[m].shape[1]) for m in self.modalities}
        first = self.modalities[0]
        for m, got in sizes.items():
            if got != sizes[first]:
                raise InputError(
                    f"AdaMMLPolicy: modality {m!r} has (B, T) = {got}, expected {sizes[first]} as modality "
                    f"{first!r} (all: {', '.join(f'{n!r} {bt}' for n, bt in sizes.items())})"
                )
        batch, steps = sizes[first]
        if batch < 1 or steps < 1:
            raise InputError(f"AdaMMLPolicy: empty input, (B, T) = {sizes[first]}")
        return batch, steps

    def _coarse(self, segments: Tensor) -> Tensor:
        """(N, C, H, W) segments average-pooled by `downsample` (ceil mode: small inputs keep a pixel), then
        resized to `resize`."""
        if self.downsample > 1:
            segments = F.avg_pool2d(segments, self.downsample, ceil_mode=True)
        if self.resize is not None:
            segments = F.interpolate(segments, size=self.resize, mode="bilinear", align_corners=False)
        return segments

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        batch, steps = self.check_inputs(inputs)
        # Every segment of every clip through the CNN in one batch; only the LSTM walks over time.
        features = [self.encoders[m](self._coarse(inputs[m].flatten(0, 1))) for m in self.modalities]
        x = self.fc(torch.cat(features, dim=1)).view(batch, steps, -1)
        h, _ = self.lstm(x)
        return {m: self.heads[m](h) for m in self.modalities}


def decide(
    logits: Mapping[str, Tensor], tau: float, training: bool, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Modality name -> (B, T) float keep mask (1 = run the modality on that segment, 0 = skip).

    Training: hard Gumbel-softmax at temperature `tau`; the 0/1 values carry the soft sample's gradient
    (straight-through), so a loss on the mask (e.g. AdaMML's usage cost) trains the policy. Evaluation:
    argmax of the logits, no noise (ties go to skip).
    """
    if tau <= 0:
        raise ConfigError(f"AdaMML policy temperature must be > 0, got {tau}")
    if training:
        return {m: gumbel_softmax(z, tau, hard=True, generator=generator)[1][..., KEEP] for m, z in logits.items()}
    return {m: (z.argmax(dim=-1) == KEEP).to(z.dtype) for m, z in logits.items()}
