"""Modality-level DynMM: a gate picks ONE expert per sample; only that expert runs (dispatch mode).

Experts are ordinary static fusion models over modality subsets (e.g. text-only vs late fusion of all three).
Their costs are measured once at construction (cost.py), never typed in, and feed the resource-aware loss and
the test-time cost knob β: choose argmax(logits − β·C), one trained model, a whole accuracy–MAdds curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dynmm.cost import measure_madds
from dynmm.errors import ConfigError
from dynmm.losses import normalised_costs
from dynmm.nn.gates import Gate, GateOutput
from dynmm.routing import MODES, Mode, route
from dynmm.specs import Inputs


class _GateLogits(nn.Module):
    """Wraps a gate so that measure_madds counts exactly the gate's own forward."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, inputs: Inputs) -> Tensor:
        return self.gate.logits(inputs)


class ModalityLevelDynMM(nn.Module):
    """Gate + experts, executed through the shared routing core.

    Args:
        experts: the B branches, cheapest first by convention; each maps the input dict to predictions.
        gate: returns (choice, weights, logits) over the B experts.
        example_inputs: a batch (one row is enough) on which the experts' and the gate's MAdds are measured.

    Attributes:
        expert_madds: measured MAdds per sample of each expert (gate excluded).
        gate_madds: measured MAdds per sample of the gate, paid by every sample.
        mode: "dispatch" (default; run only the chosen expert), "masked" (reference) or "dense" (training).
        beta: test-time cost knob; eval choices are argmax(logits − beta·normalised cost).
        last_gate: the gate output of the latest forward (for the resource loss and routing statistics).
    """

    costs: Tensor  # normalised expert costs (a buffer, so it follows .to(device))

    def __init__(self, experts: Sequence[nn.Module], gate: Gate, example_inputs: Inputs) -> None:
        super().__init__()
        if len(experts) != gate.num_branches:
            raise ConfigError(f"the gate chooses among {gate.num_branches} branches but {len(experts)} experts given")
        self.experts = nn.ModuleList(experts)
        self.gate = gate
        self.expert_madds = [measure_madds(expert, example_inputs).total for expert in self.experts]
        self.gate_madds = measure_madds(_GateLogits(gate), example_inputs).total
        self.register_buffer("costs", normalised_costs(self.expert_madds), persistent=False)
        self.mode: Mode = "dispatch"
        self.beta = 0.0
        self.last_gate: GateOutput | None = None

    def set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown execution mode {mode!r}; choose from {list(MODES)}")
        self.mode = mode

    def forward(self, inputs: Inputs) -> Tensor:
        penalty = self.beta * self.costs if self.beta else None
        decision = self.gate(inputs, cost_penalty=penalty)
        self.last_gate = decision
        mode: Mode = "dense" if self.training else self.mode
        return route(list(self.experts), inputs, decision.choice, decision.weights, mode)

    def realized_madds(self, choice: Tensor) -> Tensor:
        """MAdds each sample paid given the experts chosen for it: gate + its expert (from measured costs)."""
        table = torch.tensor(self.expert_madds, dtype=torch.float64)
        return self.gate_madds + table[choice.cpu()]
