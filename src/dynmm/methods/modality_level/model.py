"""Modality-level DynMM: a gate picks ONE expert per sample; only that expert runs (dispatch mode).

Experts are ordinary static fusion models over modality subsets (e.g. text-only vs late fusion of all three).
Their costs are measured once at construction (cost.py), never typed in, and feed the resource-aware loss and
the test-time cost knob β: choose argmax(logits − β·C), one trained model, a whole accuracy–MAdds curve.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynmm.config import GateConfig
from dynmm.cost import measure_madds
from dynmm.errors import ConfigError
from dynmm.losses import normalised_costs
from dynmm.nn.gates import Gate, GateOutput, build_gate
from dynmm.routing import MODES, Branch, Mode, route
from dynmm.specs import Inputs, ModalitySpec, example_inputs
from dynmm.validation import check_inputs, inputs_checked


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
        expert_madds: measured MAdds per sample of each expert alone (gate excluded).
        path_madds: measured MAdds a row routed to each branch pays besides the gate (each expert alone here;
            a cascade's escalation pays the cheap expert plus what the larger expert adds).
        gate_madds: measured MAdds per sample of the gate, paid by every sample.
        mode: "dispatch" (default; run only the chosen expert), "masked" (reference) or "dense" (training).
        beta: test-time cost knob; eval choices are argmax(logits − beta·normalised cost).
        last_gate: the gate output of the latest forward (for the resource loss and routing statistics).
        forced_choice: a routing to use instead of the gate's (the gate still runs); None in normal use.
        specs: every modality the gate or some expert reads; a batch must hold all of them (checked before the
            gate runs, so that a missing or malformed modality fails whichever expert the rows are routed to).
    """

    costs: Tensor  # normalised expert costs (a buffer, so it follows .to(device))

    def __init__(self, experts: Sequence[nn.Module], gate: Gate, example_inputs: Inputs) -> None:
        super().__init__()
        if len(experts) != gate.num_branches:
            raise ConfigError(f"the gate chooses among {gate.num_branches} branches but {len(experts)} experts given")
        self.experts = nn.ModuleList(experts)
        self.gate = gate
        self.expert_madds = [measure_madds(expert, example_inputs).total for expert in self.experts]
        self.expert_modalities = [frozenset(getattr(expert, "modalities", ())) for expert in self.experts]
        self.specs: dict[str, ModalitySpec] = dict(sorted(self.input_specs().items()))
        self.path_madds, self.gate_madds = self.measure_paths(example_inputs)
        self.register_buffer("costs", normalised_costs(self.path_madds), persistent=False)
        self.mode: Mode = "dispatch"
        self.beta = 0.0
        self.last_gate: GateOutput | None = None
        self.forced_choice: Tensor | None = None

    def input_specs(self) -> dict[str, ModalitySpec]:
        """Every modality the gate or some expert reads."""
        experts = {m: s for expert in self.experts for m, s in getattr(expert, "specs", {}).items()}
        return {**self.gate.specs, **experts}

    def measure_paths(self, example_inputs: Inputs) -> tuple[list[float], float]:
        """(MAdds a row routed to each branch pays besides the gate, the gate's MAdds): here each expert alone,
        since the gate reads the raw inputs and every expert encodes its own."""
        return list(self.expert_madds), measure_madds(_GateLogits(self.gate), example_inputs).total

    def routing_inputs(self, inputs: Inputs) -> tuple[Inputs, Inputs]:
        """(what the gate reads, what the branches are routed): here the gate's modalities and the inputs.
        A cascade runs its first expert here and routes its results too; the exported graphs split here."""
        return {m: inputs[m] for m in self.gate.specs}, inputs

    def routed_branches(self) -> list[Branch]:
        """The branches the routing core runs (the experts here; a cascade's reuse the first one's results)."""
        return list(self.experts)

    def routing_logits(self, inputs: Inputs) -> Tensor:
        """The gate's logits on a batch (what β re-routing subtracts costs from)."""
        return self.gate.logits(self.routing_inputs(inputs)[0])

    def branch_outputs(self, inputs: Inputs) -> Tensor:
        """Every branch's output on every row, (branches, rows, ...): what offline re-routing chooses from."""
        carried = self.routing_inputs(inputs)[1]
        return torch.stack([branch(carried) for branch in self.routed_branches()])

    @property
    def soft(self) -> bool:
        """DynMM-d: the gate's soft weights mix every expert, so nothing is skipped."""
        return self.gate.mode == "soft"

    def set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown execution mode {mode!r}; choose from {list(MODES)}")
        self.mode = mode

    def penalty(self, missing: Collection[str] = ()) -> Tensor | None:
        """What eval subtracts from the gate's logits: β·cost, and +inf for experts that need a missing modality
        (as long as some expert does not need it; otherwise the gate decides as usual on zero-filled input)."""
        penalty = self.beta * self.costs if self.beta else None
        blocked = [bool(needs & set(missing)) for needs in self.expert_modalities]
        if any(blocked) and not all(blocked):
            inf = torch.tensor([float("inf") if b else 0.0 for b in blocked], device=self.costs.device)
            penalty = inf if penalty is None else penalty + inf
        return penalty

    def forward(self, inputs: Inputs, missing: Collection[str] = ()) -> Tensor:
        """Route each row to its expert. `missing` names modalities absent at test time (zero-filled in `inputs`)."""
        check_inputs(inputs, self.specs, where=type(self).__name__, model=self)
        inputs = {m: inputs[m] for m in self.specs}  # extra keys are ignored: they never reach gate or experts
        with inputs_checked():  # every modality a part reads was checked just now: its parts do not check again
            gate_inputs, carried = self.routing_inputs(inputs)
            decision = self.decide(gate_inputs, missing)
            mode: Mode = "dense" if self.training or self.soft else self.mode
            return route(self.routed_branches(), carried, decision.choice, decision.weights, mode)

    def decide(self, gate_inputs: Inputs, missing: Collection[str] = ()) -> GateOutput:
        """Run the gate (always paid) and keep its decision, unless `forced_choice` fixes the routing in advance
        (speed benchmarks: a known share of rows on each expert, through the model's own forward)."""
        decision = self.gate(gate_inputs, cost_penalty=self.penalty(missing))
        if self.forced_choice is not None:
            forced = self.forced_choice
            weights = F.one_hot(forced, len(self.experts)).to(decision.weights.dtype)
            decision = GateOutput(forced, weights, decision.logits)
        self.last_gate = decision
        return decision

    def realized_madds(self, choice: Tensor) -> Tensor:
        """MAdds each sample paid given the branch chosen for it: gate + that branch's path (from measured
        costs); DynMM-d pays for every branch."""
        table = torch.tensor(self.path_madds, dtype=torch.float64)
        if self.soft:
            return torch.full(choice.shape, self.gate_madds + float(table.sum()), dtype=torch.float64)
        return self.gate_madds + table[choice.cpu()]


def build_modality_level(
    experts: Sequence[nn.Module], gate_config: GateConfig, specs: dict[str, ModalitySpec]
) -> ModalityLevelDynMM:
    """Gate + trained (or fresh) experts; the gate looks at every modality some expert uses unless told."""
    used = sorted({m for expert in experts for m in getattr(expert, "modalities", ())} or specs)
    gate = build_gate(gate_config, len(experts), specs, used)
    return ModalityLevelDynMM(experts, gate, example_inputs(specs))
