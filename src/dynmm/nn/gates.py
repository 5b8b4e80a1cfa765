"""Gates: decide per sample which branch runs. Each returns (choice, weights, logits), MoE-style.

choice (batch,) is what the router dispatches on; weights (batch, branches) combine branches in dense training
(straight-through one-hot from a hard Gumbel-softmax, or the soft distribution for DynMM-d) and feed the
resource loss; logits are kept for the test-time cost knob and analyses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynmm.config import GateConfig
from dynmm.errors import ConfigError
from dynmm.relax import gumbel_softmax
from dynmm.specs import Inputs, ModalitySpec
from dynmm.validation import check_inputs

GateMode = Literal["hard", "soft"]


class GateOutput(NamedTuple):
    choice: Tensor
    weights: Tensor
    logits: Tensor


class Gate(nn.Module):
    """Turns logits into a decision; subclasses only compute `logits(inputs)`.

    Training (module.train()): Gumbel-softmax at temperature `tau`, hard with straight-through weights, or soft.
    Evaluation: no noise; the choice is argmax(logits - cost_penalty), deterministic.
    """

    def __init__(self, num_branches: int, specs: Mapping[str, ModalitySpec], modalities: Sequence[str]) -> None:
        super().__init__()
        if num_branches < 2:
            raise ConfigError(f"a gate needs at least 2 branches to choose from, got {num_branches}")
        self.num_branches = num_branches
        self.modalities = sorted(modalities)
        self.specs = {m: specs[m] for m in self.modalities}
        self.tau = 1.0
        self.mode: GateMode = "hard"

    def logits(self, inputs: Inputs) -> Tensor:
        raise NotImplementedError

    def forward(self, inputs: Inputs, cost_penalty: Tensor | None = None) -> GateOutput:
        check_inputs(inputs, self.specs, where=type(self).__name__)
        logits = self.logits(inputs)
        if self.training:
            index, weights = gumbel_softmax(logits, self.tau, hard=self.mode == "hard")
            return GateOutput(index, weights, logits)
        scores = logits if cost_penalty is None else logits - cost_penalty
        choice = scores.argmax(dim=1)
        weights = F.softmax(logits, dim=1) if self.mode == "soft" else F.one_hot(choice, self.num_branches).float()
        return GateOutput(choice, weights, logits)


def pooled_features(x: Tensor, spec: ModalitySpec) -> Tensor:
    """One vector per sample: vectors as they are, sequences averaged over time, images flattened."""
    if spec.kind == "sequence":
        return x.mean(dim=1)
    return x.flatten(1)


def pooled_size(spec: ModalitySpec) -> int:
    return spec.shape[-1] if spec.kind == "sequence" else math.prod(spec.shape)


class MLPGate(Gate):
    """2-layer MLP (hidden 128 by default) on the concatenated pooled inputs, as in DynMM.

    `hidden=0` gives a linear gate: with experts as small as MOSI's, a 128-wide gate would cost more MAdds than
    every expert together, and its cost is paid by every sample.
    """

    def __init__(
        self,
        num_branches: int,
        specs: Mapping[str, ModalitySpec],
        modalities: Sequence[str],
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(num_branches, specs, modalities)
        in_dim = sum(pooled_size(self.specs[m]) for m in self.modalities)
        if hidden < 0:
            raise ConfigError(f"MLP gate hidden size must be >= 0 (0 = linear gate), got {hidden}")
        layers: list[nn.Module] = [nn.Linear(in_dim, num_branches)]
        if hidden:
            layers = [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_branches)]
        self.net = nn.Sequential(*layers)

    def logits(self, inputs: Inputs) -> Tensor:
        return self.net(torch.cat([pooled_features(inputs[m], self.specs[m]) for m in self.modalities], dim=1))


class TransformerGate(Gate):
    """Transformer encoder (hidden 512, 2 heads by default) over the time-aligned concatenated sequences.

    All modalities must be sequences of the same length (as the MultiBench affect data are).
    """

    def __init__(
        self,
        num_branches: int,
        specs: Mapping[str, ModalitySpec],
        modalities: Sequence[str],
        hidden: int = 512,
        nhead: int = 2,
        num_layers: int = 1,
        dropout: float = 0.0,
        dim_feedforward: int | None = None,
    ) -> None:
        super().__init__(num_branches, specs, modalities)
        lengths = {m: self.specs[m].shape[0] for m in self.modalities if self.specs[m].kind == "sequence"}
        if len(lengths) != len(self.modalities) or len(set(lengths.values())) != 1:
            raise ConfigError(
                "transformer gate needs sequence modalities of one common length, got "
                + ", ".join(f"{m}: {self.specs[m].kind} {self.specs[m].shape}" for m in self.modalities)
            )
        in_dim = sum(self.specs[m].shape[-1] for m in self.modalities)
        self.embed = nn.Linear(in_dim, hidden)
        layer = nn.TransformerEncoderLayer(hidden, nhead, dim_feedforward or hidden, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(hidden, num_branches)

    def logits(self, inputs: Inputs) -> Tensor:
        x = torch.cat([inputs[m] for m in self.modalities], dim=2)
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


GATES: dict[str, type[Gate]] = {"mlp": MLPGate, "transformer": TransformerGate}


def check_gate_config(config: GateConfig) -> None:
    """Fail on a bad gate setting before any training starts (the recipe trains experts first)."""
    if config.kind not in GATES:
        raise ConfigError(f"dynmm.gate.kind: unknown gate {config.kind!r}; choose from {sorted(GATES)}")
    if config.mode not in ("hard", "soft"):
        raise ConfigError(f"dynmm.gate.mode must be 'hard' (DynMM) or 'soft' (DynMM-d), got {config.mode!r}")
    if config.tau <= 0:
        raise ConfigError(f"dynmm.gate.tau must be > 0, got {config.tau}")
    if config.dim_feedforward is not None and config.dim_feedforward < 1:
        raise ConfigError(f"dynmm.gate.dim_feedforward must be >= 1, got {config.dim_feedforward}")


def build_gate(
    config: GateConfig, num_branches: int, specs: Mapping[str, ModalitySpec], default_modalities: Sequence[str]
) -> Gate:
    """The gate a GateConfig describes, looking at `config.modalities` (default: `default_modalities`)."""
    check_gate_config(config)
    modalities = list(config.modalities or default_modalities)
    unknown = [m for m in modalities if m not in specs]
    if unknown:
        raise ConfigError(f"dynmm.gate.modalities: unknown modality {unknown}; the data set has {sorted(specs)}")
    gate: Gate
    if config.kind == "mlp":
        gate = MLPGate(num_branches, specs, modalities, hidden=config.hidden, dropout=config.dropout)
    else:
        gate = TransformerGate(
            num_branches,
            specs,
            modalities,
            config.hidden,
            config.nhead,
            config.num_layers,
            config.dropout,
            config.dim_feedforward,
        )
    gate.tau = config.tau
    gate.mode = cast(GateMode, config.mode)
    return gate
