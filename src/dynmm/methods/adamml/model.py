"""AdaMML: per segment of a clip, a light policy decides which modalities' recognition networks run.

A clip is T segments per modality, (B, T, C, H, W). The policy (`dynmm.methods.adamml.policy`) gives a keep/skip
decision for every (clip, segment, modality); each modality's recognition network (an encoder from
`dynmm.nn.encoders` followed by a Linear to the classes, much heavier than the policy) then runs only on the
(clip, segment) pairs that keep it, through the shared routing core over the B·T flattened pairs with two
branches [skip -> zero logits (free), net]. Per-segment logits are late-fused: with positive fusion weights
w = softmax(θ) over modalities,

    clip logits = Σ_{t,m} w_m·keep_{m,t}·z_{m,t} / Σ_{t,m} w_m·keep_{m,t},

a weighted average over the kept pairs only (a skipped pair neither votes nor dilutes the average).

Fallback rule: a clip for which nothing at all is kept would have no prediction (0/0), so the `fallback`
modality (by default the cheapest recognition net by measured MAdds) is kept on its first segment. It applies in
every policy mode, and the realized cost counts it.

Policy modes: "learned" (default; Gumbel straight-through in training, argmax in eval), "all" (warmup: the
policy is off and not paid, every pair is kept), "random" (baseline: each pair kept independently with
probability keep_rate[m] from a seeded generator; the policy does not run), "fixed" (finetune: the policy runs
in eval mode, argmax, no gradients reach it).

Execution modes, as the other dynamic models: training with the learned policy is "dense" (every net on every
pair, outputs multiplied by the straight-through keep masks: that is how the task loss reaches the policy);
any other forward uses `mode` ("dispatch" by default: only kept pairs run; "masked": the papers' reference,
every net on every pair, the skipped ones zeroed).

Costs are measured with cost.py on one sample when the model is built (see `costs`), and `realized_madds`
gives what each clip paid in dispatch mode, policy included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynmm.config import deep_merge
from dynmm.cost import count_madds, measure_madds
from dynmm.errors import ConfigError, InputError
from dynmm.losses import adamml_usage_cost
from dynmm.methods.adamml.policy import AdaMMLPolicy, decide
from dynmm.modes import eval_mode
from dynmm.nn.encoders import build_encoder
from dynmm.routing import MODES, Mode, route
from dynmm.specs import Inputs, ModalitySpec
from dynmm.validation import check_inputs

PolicyMode = Literal["learned", "all", "random", "fixed"]
POLICY_MODES: tuple[PolicyMode, ...] = get_args(PolicyMode)

DEFAULT_ENCODER: dict[str, Any] = {"kind": "cnn", "channels": [32, 64, 128], "pool_size": 2, "out_dim": 128}
"""Recognition encoder of every modality unless configured: ~7.5 M MAdds on a 1x28x28 digit, ~9.6 M on a 1x40x26
log-mel, several times the default policy's ~1.1 M per segment."""


def _override(base: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """`entry` key by key over `base`; an entry naming another kind starts afresh (another kind's options,
    e.g. a CNN's channels, mean nothing to a ResNet)."""
    if "kind" in entry and entry["kind"] != base.get("kind"):
        return dict(entry)
    return deep_merge(dict(base), dict(entry))


class RecognitionNet(nn.Module):
    """One modality's per-segment classifier: encoder (B·T, C, H, W) -> (B·T, out_dim), Linear -> class logits."""

    def __init__(self, spec: ModalitySpec, cfg: Mapping[str, Any], num_classes: int) -> None:
        super().__init__()
        self.encoder = build_encoder(spec, cfg)
        self.head = nn.Linear(cast(int, self.encoder.out_dim), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class AdaMML(nn.Module):
    """Policy + per-modality recognition nets + late fusion over kept (segment, modality) pairs.

    Args:
        specs: modality name -> spec of a whole clip, kind "image", shape (T, C, H, W) (as avclips declares).
            Every modality must have the same T. The recognition nets read one segment, (C, H, W).
        num_classes: number of classes.
        encoders: recognition encoder configs for `build_encoder`: a "default" entry, overridden key by key by
            a modality's own entry (as `model.encoders` of the static models); unset: `DEFAULT_ENCODER`.
        policy: keyword arguments of `AdaMMLPolicy` (feature_dim, hidden, widths, strides, expand_ratio).
        fallback: modality kept on the first segment of a clip that keeps nothing; default: the cheapest
            recognition net by measured MAdds.
        seed: seed of the generator the "random" policy mode draws from.

    Inputs:
        inputs: modality name -> (B, T, C, H, W), float tensors of the model's dtype, finite, B >= 1; extra keys
            are ignored.

    Returns:
        (B, num_classes) clip logits.

    Attributes:
        mode: "dispatch" (default), "masked" or "dense": how an eval (or non-learned training) forward executes.
        policy_mode: "learned" (default), "all", "random" or "fixed" (see the module docstring).
        keep_rate: modality -> keep probability of the "random" policy mode.
        tau: Gumbel-softmax temperature of the learned policy in training (AdaMML starts at 5).
        costs: {"policy": MAdds of the policy on one clip of T segments, "nets": {m: MAdds of net m on one
            segment}, "fusion": MAdds of the late fusion on one clip}, all measured.
        last_keep: modality -> (B, T) 0/1 keep masks of the latest forward, after the fallback; in training with
            the learned policy they carry straight-through gradients (what `adamml_loss` needs).
        last_policy_ran: whether the latest forward ran the policy (and paid for it).
        last_policy_logits: modality -> (B, T, 2) policy logits of the latest forward, or None.
        last_fell_back: (B,) bool, the clips of the latest forward that kept nothing and got the fallback.
    """

    def __init__(
        self,
        specs: Mapping[str, ModalitySpec],
        num_classes: int,
        encoders: Mapping[str, Mapping[str, Any]] | None = None,
        policy: Mapping[str, Any] | None = None,
        fallback: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not specs:
            raise ConfigError("AdaMML needs at least one modality")
        if num_classes < 1:
            raise ConfigError(f"AdaMML needs num_classes >= 1, got {num_classes}")
        self.modalities = sorted(specs)
        self.specs = {m: specs[m] for m in self.modalities}
        self.segments = self._check_specs()
        self.segment_specs = {m: ModalitySpec(m, tuple(s.shape[1:]), "image") for m, s in self.specs.items()}
        self.num_classes = num_classes

        encoders = dict(encoders or {})
        stray = sorted(k for k in encoders if k != "default" and k not in self.specs)
        if stray:
            raise ConfigError(f"AdaMML encoders has options for {stray}, which are not modalities {self.modalities}")
        default = _override(DEFAULT_ENCODER, encoders.get("default", {}))
        self.nets = nn.ModuleDict(
            {
                m: RecognitionNet(self.segment_specs[m], _override(default, encoders.get(m, {})), num_classes)
                for m in self.modalities
            }
        )
        try:
            self.policy = AdaMMLPolicy({m: s.shape[0] for m, s in self.segment_specs.items()}, **dict(policy or {}))
        except TypeError as err:
            raise ConfigError(f"AdaMML policy: invalid options {dict(policy or {})}: {err}") from err
        self.fusion_logits = nn.Parameter(torch.zeros(len(self.modalities)))

        self.mode: Mode = "dispatch"
        self.policy_mode: PolicyMode = "learned"
        self.keep_rate = dict.fromkeys(self.modalities, 0.5)
        self.generator = torch.Generator().manual_seed(seed)
        self.tau = 5.0
        self.last_keep: dict[str, Tensor] | None = None
        self.last_policy_ran = False
        self.last_policy_logits: dict[str, Tensor] | None = None
        self.last_fell_back: Tensor | None = None

        self.costs = self._measure_costs()
        nets = self.costs["nets"]
        self.fallback = min(self.modalities, key=lambda m: nets[m]) if fallback is None else fallback
        if self.fallback not in self.modalities:
            raise ConfigError(f"AdaMML fallback modality {self.fallback!r} is not one of {self.modalities}")

    def _check_specs(self) -> int:
        for m, s in self.specs.items():
            if s.kind != "image" or len(s.shape) != 4:
                raise ConfigError(
                    f"AdaMML: modality {m!r} must be a clip of image segments, kind 'image' with shape (T, C, H, W); "
                    f"got {s.describe()}"
                )
        steps = {m: s.shape[0] for m, s in self.specs.items()}
        if len(set(steps.values())) != 1:
            raise ConfigError(f"AdaMML: every modality needs the same number of segments T, got {steps}")
        return next(iter(steps.values()))

    # ------------------------------------------------------------------ settings
    def set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown execution mode {mode!r}; choose from {list(MODES)}")
        self.mode = mode

    def set_policy_mode(
        self, policy_mode: PolicyMode, keep_rate: float | Mapping[str, float] | None = None, seed: int | None = None
    ) -> None:
        """Choose where keep masks come from; `keep_rate` (one rate or one per modality) and `seed` set the
        "random" mode's probabilities and generator."""
        if policy_mode not in POLICY_MODES:
            raise ConfigError(f"unknown AdaMML policy mode {policy_mode!r}; choose from {list(POLICY_MODES)}")
        if keep_rate is not None:
            rates = dict.fromkeys(self.modalities, keep_rate) if not isinstance(keep_rate, Mapping) else keep_rate
            unknown = sorted(set(rates) - set(self.modalities))
            if unknown:
                raise ConfigError(f"AdaMML keep_rate names unknown modalities {unknown}; has {self.modalities}")
            bad = {m: r for m, r in rates.items() if not 0.0 <= float(r) <= 1.0}
            if bad:
                raise ConfigError(f"AdaMML keep rates must lie in [0, 1], got {bad}")
            self.keep_rate.update({m: float(r) for m, r in rates.items()})
        if seed is not None:
            self.generator.manual_seed(seed)
        self.policy_mode = policy_mode

    @property
    def policy_runs(self) -> bool:
        """Whether the current policy mode runs (and pays for) the policy."""
        return self.policy_mode in ("learned", "fixed")

    @property
    def fusion_weights(self) -> Tensor:
        """(modalities,) positive late-fusion weights summing to 1, in `modalities` order."""
        return F.softmax(self.fusion_logits, dim=0)

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: Inputs) -> Tensor:
        check_inputs(inputs, self.specs, self.modalities, where=type(self).__name__, model=self)
        keep = self.apply_fallback(self.keep_masks(inputs))
        self.last_keep = keep
        learning = self.training and self.policy_mode == "learned"
        mode: Mode = "dense" if learning else self.mode
        routed = {m: self._run_net(m, inputs[m], keep[m], mode) for m in self.modalities}
        return self.fuse(routed, keep)

    def keep_masks(self, inputs: Inputs) -> dict[str, Tensor]:
        """Modality -> (B, T) float 0/1 keep masks from the current policy mode (before the fallback rule)."""
        x = inputs[self.modalities[0]]
        batch, steps = x.shape[0], x.shape[1]
        self.last_policy_logits = None
        self.last_policy_ran = self.policy_runs
        if self.policy_mode == "all":
            return {m: x.new_ones(batch, steps) for m in self.modalities}
        if self.policy_mode == "random":
            return {
                m: (torch.rand(batch, steps, generator=self.generator) < self.keep_rate[m]).to(x)
                for m in self.modalities
            }
        if self.policy_mode == "fixed":
            with eval_mode(self.policy), torch.no_grad():
                logits = self.policy(inputs)
            self.last_policy_logits = logits
            return decide(logits, self.tau, training=False)
        logits = self.policy(inputs)
        self.last_policy_logits = logits
        return decide(logits, self.tau, training=self.training)

    def apply_fallback(self, keep: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A clip that keeps nothing at all gets the fallback modality kept on its first segment."""
        kept = sum((k > 0.5).sum(dim=1) for k in keep.values())
        empty = cast(Tensor, kept) == 0
        self.last_fell_back = empty
        out = dict(keep)
        if bool(empty.any()):
            k = keep[self.fallback]
            first = torch.zeros_like(k, dtype=torch.bool)
            first[:, 0] = empty
            out[self.fallback] = torch.where(first, torch.ones_like(k), k)
        return out

    def _run_net(self, m: str, x: Tensor, keep: Tensor, mode: Mode) -> Tensor:
        """(B, T, classes) logits of net m on the kept pairs, zeros on the skipped ones (times keep in dense)."""
        batch, steps = keep.shape
        flat = keep.reshape(-1)
        net = self.nets[m]
        num_classes = self.num_classes

        def skip(rows: Inputs) -> Tensor:
            return rows["x"].new_zeros(rows["x"].shape[0], num_classes)

        def run(rows: Inputs) -> Tensor:
            return net(rows["x"])

        weights = torch.stack([1.0 - flat, flat], dim=1)
        out = route([skip, run], {"x": x.flatten(0, 1)}, (flat > 0.5).long(), weights, mode)
        return out.view(batch, steps, num_classes)

    def fuse(self, routed: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> Tensor:
        """Σ_{t,m} w_m·keep·z / Σ_{t,m} w_m·keep; `routed` already holds keep·z (zeros where skipped)."""
        w = self.fusion_weights
        num = sum(w[i] * routed[m].sum(dim=1) for i, m in enumerate(self.modalities))
        den = sum(w[i] * keep[m].sum(dim=1) for i, m in enumerate(self.modalities))
        return cast(Tensor, num) / cast(Tensor, den).unsqueeze(1)

    # ------------------------------------------------------------------ costs
    def _measure_costs(self) -> dict[str, Any]:
        clip = {m: torch.zeros(1, *s.shape) for m, s in self.specs.items()}
        with eval_mode(self), torch.no_grad():
            policy = measure_madds(self.policy, clip).total
            nets = {m: measure_madds(self.nets[m], clip[m][:, 0]).total for m in self.modalities}
            z = {m: torch.zeros(1, self.segments, self.num_classes) for m in self.modalities}
            keep = {m: torch.ones(1, self.segments) for m in self.modalities}
            fusion = count_madds(lambda: self.fuse(z, keep)).total
        return {"policy": float(policy), "nets": {m: float(v) for m, v in nets.items()}, "fusion": float(fusion)}

    def realized_madds(self, keep: Mapping[str, Tensor], policy_ran: bool | None = None) -> Tensor:
        """(B,) float64 MAdds each clip paid in dispatch mode: the policy (if it ran; default: if the current
        policy mode runs it) + Σ_m (kept segments of m)·nets[m] + the fusion."""
        ran = self.policy_runs if policy_ran is None else policy_ran
        missing = [m for m in self.modalities if m not in keep]
        if missing:
            raise InputError(f"AdaMML.realized_madds: missing keep mask for modality {', '.join(map(repr, missing))}")
        total = sum((keep[m].detach() > 0.5).sum(dim=1).cpu().double() * self.costs["nets"][m] for m in self.modalities)
        extra = self.costs["fusion"] + (self.costs["policy"] if ran else 0.0)
        return cast(Tensor, total) + extra

    def full_madds(self) -> float:
        """Every net on every segment, no policy: what late fusion over all segments pays per clip."""
        return self.segments * sum(self.costs["nets"].values()) + self.costs["fusion"]


def adamml_loss(
    logits: Tensor,
    target: Tensor,
    keep: Mapping[str, Tensor],
    lambdas: Mapping[str, float],
    gamma: float = 10.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """AdaMML's loss: CE(logits, target) + Σ_k λ_k·C_k.

    Per clip C_k = (fraction of the clip's segments that keep k)² if the clip is predicted correctly (argmax ==
    target), else γ; averaged over clips. Gradients reach the policy through the straight-through keep masks in
    the squared-fraction term (γ is a constant). Modalities of `keep` without a λ cost nothing.

    Returns (total, parts): parts holds detached "ce", "cost" (Σ λ_k·C_k), and per modality "cost_<k>" (C_k)
    and "usage_<k>" (mean fraction of segments kept).
    """
    if logits.dim() != 2 or target.shape != (logits.shape[0],):
        raise InputError(
            f"adamml_loss: logits must be (B, classes) and target (B,), got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    unknown = sorted(set(lambdas) - set(keep))
    if unknown:
        raise ConfigError(f"adamml_loss: lambdas name modalities without keep masks: {unknown}; have {sorted(keep)}")
    negative = {m: v for m, v in lambdas.items() if v < 0}
    if negative or gamma < 0:
        raise ConfigError(f"adamml_loss: lambdas and gamma must be >= 0, got lambdas {dict(lambdas)}, gamma {gamma}")
    names = sorted(keep)
    for m in names:
        if keep[m].dim() != 2 or keep[m].shape[0] != logits.shape[0]:
            raise InputError(
                f"adamml_loss: keep mask of modality {m!r} must be (B={logits.shape[0]}, T), got {tuple(keep[m].shape)}"
            )
    ce = F.cross_entropy(logits, target)
    correct = logits.detach().argmax(dim=1) == target
    per_modality = adamml_usage_cost(torch.stack([keep[m] for m in names], dim=2), correct, gamma)
    lam = torch.tensor([float(lambdas.get(m, 0.0)) for m in names], dtype=per_modality.dtype, device=ce.device)
    cost = (lam * per_modality).sum()
    parts = {"ce": ce.detach(), "cost": cost.detach()}
    for i, m in enumerate(names):
        parts[f"cost_{m}"] = per_modality[i].detach()
        parts[f"usage_{m}"] = keep[m].detach().mean()
    return ce + cost, parts


def default_lambdas(costs: Mapping[str, Any], scale: float) -> dict[str, float]:
    """λ_k = scale · nets[k] / max_j nets[j]: each modality priced by its measured per-segment cost.

    `costs` is `AdaMML.costs` (or any mapping with a "nets" entry of modality -> MAdds).
    """
    nets = costs.get("nets") if isinstance(costs.get("nets"), Mapping) else None
    if not nets:
        raise ConfigError(f"default_lambdas needs costs with a 'nets' mapping (AdaMML.costs), got {dict(costs)}")
    most = max(float(v) for v in nets.values())
    if most <= 0 or scale < 0:
        raise ConfigError(f"default_lambdas needs positive net costs and scale >= 0, got {dict(nets)}, scale {scale}")
    return {m: scale * float(v) / most for m, v in nets.items()}
