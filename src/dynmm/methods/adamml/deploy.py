"""AdaMML as deployable graphs (`dynmm export RUN` of an AdaMML run): the policy, then each modality's net on
only the (clip, segment) pairs that keep it, late-fused with the exported fusion weights.

Two ways to run them, both in the runner and both verified on the test split:
- a whole clip: `policy` decides every segment of the clip in one call, then each `net_<modality>` runs once on
  all the segments that keep it (the fewest runtime calls: what batch-1 clip latency wants);
- a stream, segment by segment: `policy_step` is the policy on one segment (each modality's light CNN, the FCs
  and one LSTM step, state in and out), then the nets of the modalities kept on that segment; nothing waits for
  the whole clip. Stepping the LSTM gives the same numbers as running it over the sequence.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dynmm.methods.adamml.model import AdaMML
from dynmm.specs import Inputs

STATE = ("lstm_h", "lstm_c")
"""Names of the policy LSTM's state, an input and (with `_next`) an output of every policy step."""


class PolicyStep(nn.Module):
    """(segment of each modality (B, C, H, W), h, c (1, B, hidden)) -> (keep logits (B, 2) per modality, h, c)."""

    def __init__(self, model: AdaMML) -> None:
        super().__init__()
        self.policy = model.policy
        self.modalities = model.modalities

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        policy = self.policy
        segments, (h, c) = tensors[: len(self.modalities)], tensors[len(self.modalities) :]
        features = [policy.encoders[m](policy._coarse(x)) for m, x in zip(self.modalities, segments, strict=True)]
        step = policy.fc(torch.cat(features, dim=1)).unsqueeze(1)
        out, (h, c) = policy.lstm(step, (h, c))
        return (*(policy.heads[m](out[:, 0]) for m in self.modalities), h, c)


class PolicyClip(nn.Module):
    """(clip of each modality (B, T, C, H, W)) -> keep logits (B, T, 2) per modality."""

    def __init__(self, model: AdaMML) -> None:
        super().__init__()
        self.policy = model.policy
        self.modalities = model.modalities

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        logits = self.policy(dict(zip(self.modalities, tensors, strict=True)))
        return tuple(logits[m] for m in self.modalities)


class NetStep(nn.Module):
    """One modality's recognition net on the segments that keep it: (N, C, H, W) -> (N, classes) logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.net(tensors[0])


def segment_graphs(model: AdaMML, inputs: Inputs) -> dict[str, dict[str, Any]]:
    """The policy step and each modality's recognition net, with example args of two rows (dynamic batch)."""
    model = model.eval()
    hidden = model.policy.lstm.hidden_size
    two = {m: inputs[m][:2, 0] for m in model.modalities}
    state = [torch.zeros(1, 2, hidden), torch.zeros(1, 2, hidden)]
    graphs = {
        "policy": {
            "module": PolicyClip(model),
            "args": [inputs[m][:2] for m in model.modalities],
            "inputs": list(model.modalities),
            "outputs": [f"keep_logits_{m}" for m in model.modalities],
            "dynamic": True,
        },
        "policy_step": {
            "module": PolicyStep(model),
            "args": [*(two[m] for m in model.modalities), *state],
            "inputs": [*model.modalities, *STATE],
            "outputs": [*(f"keep_logits_{m}" for m in model.modalities), *(f"{s}_next" for s in STATE)],
            "dynamic": True,
            "batch_dims": [*(0 for _ in model.modalities), 1, 1],
        },
    }
    for m in model.modalities:
        graphs[f"net_{m}"] = {
            "module": NetStep(model.nets[m]),
            "args": [two[m]],
            "inputs": [m],
            "outputs": ["logits"],
            "dynamic": True,
        }
    return graphs
