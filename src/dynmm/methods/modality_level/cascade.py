"""Cascade routing: the cheap expert runs on every row first, and a gate on what it computed decides which rows
go on to a larger expert, which reuses the cheap expert's encoder outputs.

Why: DynMM's own gate decides from the raw inputs before any expert runs, so it cannot know whether the cheap
expert will be sure of a row, and a row it sends to late fusion pays the shared text encoder twice (once in the
gate's view, once in the expert). Here the gate reads the cheap expert's embeddings, its prediction and that
prediction's confidence (`GATE_INPUTS`); escalation costs only what the larger expert adds (`path_madds`), since
the larger expert was trained on top of the cheap expert's frozen encoders (stage I, `kind: from_run`) and is
given their outputs. Execution goes through the shared routing core like every other model: dispatch runs each
larger expert on its own rows only; dense/masked are the training path and the reference.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from dynmm.config import GateConfig
from dynmm.cost import count_madds, first_sample
from dynmm.errors import ConfigError
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.modes import eval_mode
from dynmm.nn.gates import Gate, build_gate
from dynmm.nn.static_model import StaticFusionModel
from dynmm.routing import Branch
from dynmm.specs import Inputs, ModalitySpec, TaskSpec, example_inputs

GATE_INPUTS = ("confidence", "features", "outputs")
"""What a cascade gate may read (`dynmm.gate.modalities`, default all): the cheap expert's concatenated encoder
outputs, its prediction, and the prediction's confidence (see `confidence`)."""
CACHED = "cached:"
"""Prefix of the routed inputs that carry the cheap expert's encoder outputs to the larger experts."""
CHEAP_OUTPUT = "cheap:outputs"


def confidence(task: TaskSpec, outputs: Tensor) -> Tensor:
    """(rows, 1): how sure the cheap expert is, in the sense its metric is read. Classification: the top class's
    probability; multilabel: the mean distance of each label's probability from the 0.5 threshold, doubled;
    regression (sentiment): |score|, the distance from the sign decision that acc2 scores."""
    if task.kind == "classification":
        return outputs.softmax(dim=-1).amax(dim=-1, keepdim=True)
    if task.kind == "multilabel":
        return (outputs.sigmoid() - 0.5).abs().mean(dim=-1, keepdim=True) * 2
    if task.kind == "regression":
        return outputs.reshape(outputs.shape[0], -1).abs().mean(dim=-1, keepdim=True)
    raise ConfigError(f"cascade routing needs a classification, multilabel or regression task, got {task.kind!r}")


def encoder_width(cheap: StaticFusionModel) -> int:
    return sum(int(getattr(encoder, "out_dim")) for encoder in cheap.encoders.values())  # noqa: B009


def gate_specs(cheap: StaticFusionModel, task: TaskSpec) -> dict[str, ModalitySpec]:
    """The vectors a cascade gate reads, shaped as modalities so any vector gate can read them."""
    return {
        "confidence": ModalitySpec("confidence", (1,), "vector"),
        "features": ModalitySpec("features", (encoder_width(cheap),), "vector"),
        "outputs": ModalitySpec("outputs", (task.output_dim,), "vector"),
    }


class _Escalation:
    """Branch i > 0: expert i on the rows routed to it, its shared encoders replaced by the cached outputs.

    Not an nn.Module, so the expert's weights are owned (and saved) once, by the model's `experts`."""

    def __init__(self, expert: StaticFusionModel, shared: Collection[str]) -> None:
        self.expert = expert
        self.shared = sorted(shared)
        own = [m for m in expert.encoders if m not in shared]
        self.modalities = own + [CACHED + m for m in self.shared]  # what dispatch gathers for its rows

    def __call__(self, inputs: Inputs) -> Tensor:
        embeddings = {m: inputs[CACHED + m] for m in self.shared}
        embeddings |= {m: encoder(inputs[m]) for m, encoder in self.expert.encoders.items() if m not in embeddings}
        return self.expert.head(self.expert.fusion(embeddings))


class _Stay:
    """Branch 0: the cheap expert's prediction, already computed for every row."""

    modalities = [CHEAP_OUTPUT]

    def __call__(self, inputs: Inputs) -> Tensor:
        return inputs[CHEAP_OUTPUT]


def share_encoders(experts: Sequence[StaticFusionModel], check: bool) -> list[list[str]]:
    """Make each later expert use the first expert's encoder module for every modality they both read.

    `check`: the trained encoders must hold the same weights (stage I trains them frozen from the first expert);
    a freshly built model being rebuilt from an export is tied without checking. Returns, per expert, the
    modalities it shares with the first."""
    cheap = experts[0]
    shared: list[list[str]] = [[]]
    for index, expert in enumerate(experts[1:], start=1):
        common = [m for m in expert.encoders if m in cheap.encoders]
        for m in common:
            mine, theirs = _inner(expert.encoders[m]), cheap.encoders[m]
            if _structure(mine) != _structure(theirs):
                raise ConfigError(
                    f"cascade routing: expert {index}'s {m!r} encoder is built differently from the first expert's, "
                    "so it cannot reuse its outputs (give both the same encoder options)"
                )
            if check and not all(torch.equal(a, b) for a, b in zip(_values(mine), _values(theirs), strict=True)):
                raise ConfigError(
                    f"cascade routing: expert {index}'s {m!r} encoder holds other weights than the first expert's; "
                    "train the experts with `dynmm.routing: cascade` (stage I then freezes the shared encoders)"
                )
            expert.encoders[m] = theirs
        shared.append(common)
    return shared


def _inner(encoder: nn.Module) -> nn.Module:
    """A `kind: from_run` encoder wraps the encoder it loaded."""
    from dynmm.nn.run_encoder import FrozenEncoder

    return encoder.encoder if isinstance(encoder, FrozenEncoder) else encoder


def _structure(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(t.shape)) for name, t in module.state_dict().items()]


def _values(module: nn.Module) -> list[Tensor]:
    return list(module.state_dict().values())


class CascadeDynMM(ModalityLevelDynMM):
    """Modality-level DynMM whose first expert always runs and whose gate reads that expert's results.

    Args:
        experts: static fusion models, the first one run on every row; later ones already share its encoders
            (`share_encoders`).
        shared: per expert, the modalities whose encoder outputs it takes from the first expert.
        gate: a gate over `gate_specs` (confidence, features, outputs).
        task: what the outputs mean, for `confidence`.
        example_inputs: a batch on which every path's MAdds are measured.
    """

    def __init__(
        self,
        experts: Sequence[StaticFusionModel],
        shared: Sequence[Sequence[str]],
        gate: Gate,
        task: TaskSpec,
        example_inputs: Inputs,
    ) -> None:
        self.task = task  # read by measure_paths, which the base class calls
        escalations = [_Escalation(e, s) for e, s in zip(experts[1:], shared[1:], strict=True)]
        self.branches: list[Branch] = [_Stay(), *escalations]
        super().__init__(experts, gate, example_inputs)

    @property
    def cheap(self) -> StaticFusionModel:
        return self.experts[0]  # type: ignore[return-value]

    def input_specs(self) -> dict[str, ModalitySpec]:
        """The experts' modalities only: the gate reads what the cheap expert computed, not the inputs."""
        return {m: s for expert in self.experts for m, s in getattr(expert, "specs", {}).items()}

    def cheap_pass(self, inputs: Inputs) -> tuple[Inputs, Inputs]:
        """Run the cheap expert on every row: (the gate's inputs, the routed inputs with its cached results)."""
        cheap = self.cheap
        embeddings = {m: encoder(inputs[m]) for m, encoder in cheap.encoders.items()}
        outputs = cheap.head(cheap.fusion(embeddings))
        views = {
            "confidence": confidence(self.task, outputs),
            "features": torch.cat([embeddings[m] for m in cheap.encoders], dim=1),
            "outputs": outputs.reshape(outputs.shape[0], -1),
        }
        carried = {**inputs, **{CACHED + m: z for m, z in embeddings.items()}, CHEAP_OUTPUT: outputs}
        return {m: views[m] for m in self.gate.specs}, carried

    def measure_paths(self, example_inputs: Inputs) -> tuple[list[float], float]:
        """Staying pays the cheap expert; escalating to expert i also pays what i adds on the cached encoder
        outputs. The gate's own layers are counted apart (its inputs come from the cheap pass)."""
        one = first_sample(example_inputs)
        with eval_mode(self):
            gate_inputs, carried = self.cheap_pass(one)
            cheap = count_madds(lambda: self.cheap_pass(one)).total
            added = [count_madds(partial(branch, carried)).total for branch in self.branches[1:]]
            gate = count_madds(lambda: self.gate.logits(gate_inputs)).total
        return [cheap, *(cheap + a for a in added)], gate

    def routing_inputs(self, inputs: Inputs) -> tuple[Inputs, Inputs]:
        return self.cheap_pass(inputs)

    def routed_branches(self) -> list[Branch]:
        return self.branches


def check_cascade_gate(config: GateConfig) -> None:
    """A cascade gate reads vectors computed by the cheap expert: an MLP (hidden 0 = linear) over some of them."""
    if config.kind != "mlp":
        raise ConfigError(f"dynmm.gate.kind: a cascade gate is an 'mlp' over {list(GATE_INPUTS)}, got {config.kind!r}")
    unknown = sorted(set(config.modalities or ()) - set(GATE_INPUTS))
    if unknown:
        raise ConfigError(
            f"dynmm.gate.modalities: a cascade gate reads the cheap expert's {list(GATE_INPUTS)}, not {unknown}"
        )


def build_cascade(
    experts: Sequence[nn.Module],
    gate_config: GateConfig,
    specs: Mapping[str, ModalitySpec],
    task: TaskSpec,
    check: bool = True,
) -> CascadeDynMM:
    """A cascade over static experts (the first runs on every row); see `share_encoders` for `check`."""
    check_cascade_gate(gate_config)
    if not all(isinstance(e, StaticFusionModel) for e in experts):
        raise ConfigError("cascade routing needs static fusion experts (encoders -> fusion -> head)")
    static = [e for e in experts if isinstance(e, StaticFusionModel)]
    shared = share_encoders(static, check)
    views = gate_specs(static[0], task)
    gate = build_gate(gate_config, len(static), views, list(GATE_INPUTS))
    return CascadeDynMM(static, shared, gate, task, example_inputs(dict(specs)))
