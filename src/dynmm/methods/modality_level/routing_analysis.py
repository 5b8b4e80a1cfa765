"""What a trained modality-level DynMM did and could do: realized cost, routing, β curve, oracle frontier.

`dispatch_results` measures the model as deployed (dispatch mode, real skipping). The analyses that ask "what if
the routing were different" (the test-time cost knob β, oracle routing) need every expert's output on every row;
they run all experts once (`collect_outputs`) and then re-route offline, which is exact because an expert's
output on a row does not depend on the other rows (tested: β = 0 reproduces dispatch).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dynmm.engine.task import predictions, task_loss
from dynmm.methods.modality_level.model import ModalityLevelDynMM
from dynmm.modes import eval_mode
from dynmm.report.metrics import build_metrics
from dynmm.specs import Batch, TaskSpec


def accuracy_name(task: TaskSpec) -> str:
    """The accuracy-like metric that curves and the oracle use: binary sentiment accuracy, exact match of every
    label (multilabel), or accuracy."""
    if task.kind == "multilabel":
        return "exact_match"
    return "acc2" if task.kind == "regression" else "accuracy"


def recorded_accuracy_name(metrics: dict[str, Any]) -> str:
    """`accuracy_name` of the task whose metrics.json this is (the test metrics tell the task apart)."""
    for name in ("acc2", "exact_match"):
        if name in metrics["test"]:
            return name
    return "accuracy"


def per_sample_correct(task: TaskSpec, outputs: Tensor, target: Tensor) -> Tensor:
    """Correct rows in the sense of `accuracy_name`: same sentiment sign (non-negative vs negative), every label
    right (multilabel), or the right class. Its mean equals acc2 / exact_match / accuracy exactly."""
    if task.kind == "regression":
        return (outputs.squeeze(-1) >= 0) == (target >= 0)
    if task.kind == "multilabel":
        return ((outputs > 0) == (target >= 0.5)).all(dim=-1)  # probability > 0.5, torchmetrics' threshold rule
    return outputs.argmax(dim=-1) == target


def class_labels(task: TaskSpec, target: Tensor) -> tuple[Tensor, list[str]]:
    """Per-row class index and names for per-class statistics (sentiment: negative / non-negative)."""
    if task.kind == "regression":
        return (target >= 0).long(), ["negative", "non-negative"]
    return target.long(), [str(c) for c in range(task.num_classes)]


@dataclass
class DispatchResults:
    """The deployed model on one split: metrics, the choice per row, what each row paid."""

    metrics: dict[str, float]
    choice: Tensor
    madds: Tensor
    target: Tensor


@torch.no_grad()
def dispatch_results(
    model: ModalityLevelDynMM, batches: Iterable[Batch], task: TaskSpec, missing: Collection[str] = ()
) -> DispatchResults:
    """Run the model as deployed (its current mode, normally dispatch) and record metrics and routing."""
    metrics = build_metrics(task)
    choices, targets, loss_sum = [], [], 0.0
    with eval_mode(model):
        for inputs, target in batches:
            outputs = model(inputs, missing=missing)
            assert model.last_gate is not None
            choices.append(model.last_gate.choice.cpu())
            targets.append(target)
            loss_sum += float(task_loss(task, outputs, target)) * target.shape[0]
            metrics.update(predictions(task, outputs), target)
    choice, target = torch.cat(choices), torch.cat(targets)
    results = {name: float(value) for name, value in metrics.compute().items()}
    results["loss"] = loss_sum / max(len(target), 1)
    return DispatchResults(results, choice, model.realized_madds(choice), target)


def routing_summary(results: DispatchResults, expert_names: Sequence[str], task: TaskSpec) -> dict[str, Any]:
    """Routing histogram overall and per class, and realized MAdds per sample (mean and per class)."""
    labels, names = class_labels(task, results.target)
    experts = len(expert_names)
    per_class_counts = {}
    per_class_madds = {}
    for index, name in enumerate(names):
        rows = labels == index
        if bool(rows.any()):
            per_class_counts[name] = torch.bincount(results.choice[rows], minlength=experts).tolist()
            per_class_madds[name] = float(results.madds[rows].mean())
    counts = torch.bincount(results.choice, minlength=experts).tolist()
    return {
        "experts": list(expert_names),
        "counts": counts,
        "fractions": [c / max(len(results.choice), 1) for c in counts],
        "per_class": per_class_counts,
        "madds_per_sample": float(results.madds.mean()),
        "madds_per_class": per_class_madds,
    }


@dataclass
class ExpertOutputs:
    """Every expert's output on every row, the gate's logits, and the targets: enough to re-route offline."""

    logits: Tensor  # (rows, experts)
    outputs: Tensor  # (experts, rows, output_dim)
    target: Tensor  # (rows,)


@torch.no_grad()
def collect_outputs(model: ModalityLevelDynMM, batches: Iterable[Batch]) -> ExpertOutputs:
    logits, outputs, targets = [], [], []
    with eval_mode(model):
        for inputs, target in batches:
            logits.append(model.routing_logits(inputs))
            outputs.append(model.branch_outputs(inputs))
            targets.append(target)
    return ExpertOutputs(torch.cat(logits), torch.cat(outputs, dim=1), torch.cat(targets))


def expert_metrics(record: ExpertOutputs, task: TaskSpec) -> list[dict[str, float]]:
    """Each expert alone (metrics and mean loss), from the outputs already collected: no second pass."""
    results = []
    for outputs in record.outputs:
        metrics = build_metrics(task)
        metrics.update(predictions(task, outputs), record.target)
        values = {name: float(value) for name, value in metrics.compute().items()}
        values["loss"] = float(task_loss(task, outputs, record.target))
        results.append(values)
    return results


def reroute(model: ModalityLevelDynMM, record: ExpertOutputs, beta: float) -> tuple[Tensor, Tensor]:
    """(choice, outputs) the model would produce with cost knob β (same rule as the gate at eval)."""
    choice = (record.logits - beta * model.costs.to(record.logits)).argmax(dim=1)
    rows = torch.arange(choice.shape[0])
    if model.soft:
        weights = torch.softmax(record.logits, dim=1)
        return choice, torch.einsum("re,erd->rd", weights, record.outputs)
    return choice, record.outputs[choice, rows]


def beta_grid(model: ModalityLevelDynMM, record: ExpertOutputs, points: int = 200) -> list[float]:
    """β values at which routings change: per row and pair of experts, the β where their scores cross.

    Quantiles of those crossings (plus one β beyond each end and β = 0) trace the whole curve from
    all-on-the-costliest to all-on-the-cheapest with a bounded number of evaluations.
    """
    costs = model.costs.to(record.logits)
    crossings = []
    for i in range(len(costs)):
        for j in range(i + 1, len(costs)):
            if float(costs[i] - costs[j]) != 0.0:
                crossings.append((record.logits[:, i] - record.logits[:, j]) / (costs[i] - costs[j]))
    if not crossings:
        return [0.0]
    values = torch.cat(crossings).double()
    quantiles = torch.quantile(values, torch.linspace(0, 1, points, dtype=torch.float64))
    low, high = float(values.min()), float(values.max())
    grid = {round(float(q), 9) for q in quantiles} | {low - 1.0, high + 1.0, 0.0}
    return sorted(grid)


def beta_curve(
    model: ModalityLevelDynMM, record: ExpertOutputs, task: TaskSpec, betas: Sequence[float]
) -> list[dict[str, float]]:
    """Accuracy and mean realized MAdds for each distinct routing along β (ascending β, costliest first).

    Consecutive βs that give the same routing are merged; the point's β is the middle of that range, so a β
    picked on one split sits away from the edges where the routing flips.
    """
    curve: list[dict[str, float]] = []
    last_key = b""
    for beta in sorted(betas):
        choice, outputs = reroute(model, record, beta)
        key = choice.numpy().tobytes()
        if curve and key == last_key:
            curve[-1]["beta_high"] = beta
            curve[-1]["beta"] = (curve[-1]["beta_low"] + beta) / 2
            continue
        last_key = key
        correct = per_sample_correct(task, outputs, record.target)
        curve.append(
            {
                "beta": beta,
                "beta_low": beta,
                "beta_high": beta,
                "madds": float(model.realized_madds(choice).mean()),
                "metric": float(correct.float().mean()),
                "cheapest_share": float((choice == int(model.costs.argmin())).float().mean()),
            }
        )
    return curve


def oracle_frontier(model: ModalityLevelDynMM, record: ExpertOutputs, task: TaskSpec) -> list[dict[str, float]]:
    """Accuracy vs mean MAdds of the best possible routing, from all-cheapest to the oracle point.

    The oracle sends each row to the cheapest expert that gets it right (the cheapest one if none does);
    the frontier below it upgrades rows one by one in order of added cost, so it is the best accuracy any
    router over these experts can reach at each mean budget. The gate's cost is paid by every row.
    """
    rows = record.target.shape[0]
    costs = torch.tensor(model.path_madds, dtype=torch.float64)
    order = torch.argsort(costs)
    correct = torch.stack([per_sample_correct(task, record.outputs[e], record.target) for e in range(len(costs))])
    cheapest = int(order[0])
    base_correct = correct[cheapest]
    extra = []
    for r in range(rows):
        if bool(base_correct[r]):
            continue
        fixes = [int(e) for e in order if bool(correct[int(e), r])]
        if fixes:
            extra.append(float(costs[fixes[0]] - costs[cheapest]))
    extra.sort()
    start_madds = model.gate_madds + float(costs[cheapest])
    start_metric = float(base_correct.float().mean())
    frontier = [{"madds": start_madds, "metric": start_metric}]
    spent = 0.0
    for k, cost in enumerate(extra, start=1):
        spent += cost
        frontier.append({"madds": start_madds + spent / rows, "metric": start_metric + k / rows})
    return frontier


def envelope_area(points: Sequence[dict[str, float]], low: float, high: float) -> float:
    """∫ over budgets b in [low, high] of the best metric among points with madds ≤ b (0 before the first).

    The same step envelope for every curve, so areas of DynMM and of the oracle compare fairly.
    """
    ordered = sorted((p["madds"], p["metric"]) for p in points)
    area, best, position = 0.0, 0.0, low
    for madds, metric in ordered:
        if madds > high:
            break
        if madds > position:
            area += best * (madds - position)
            position = madds
        best = max(best, metric)
    return area + best * max(high - position, 0.0)


def frontier_comparison(
    curve: Sequence[dict[str, float]], oracle: Sequence[dict[str, float]], low: float, high: float
) -> dict[str, float]:
    """Area of the DynMM β curve relative to the oracle frontier over the experts' MAdds range."""
    dynmm_area, oracle_area = envelope_area(curve, low, high), envelope_area(oracle, low, high)
    return {
        "madds_low": low,
        "madds_high": high,
        "dynmm_area": dynmm_area,
        "oracle_area": oracle_area,
        "area_ratio": dynmm_area / oracle_area if oracle_area else float("nan"),
    }


def beta_for_budget(curve: Sequence[dict[str, float]], budget: float) -> dict[str, float] | None:
    """The point of a β curve with the best metric among those within a mean MAdds budget (None if none is)."""
    within = [p for p in curve if p["madds"] <= budget]
    if not within:
        return None
    return max(within, key=lambda p: (p["metric"], -p["madds"]))


COLLAPSE_SHARE = 0.95
"""A routing in which one branch takes more than this share of the samples is flagged as collapsed: the dynamic
model is then, in effect, that one static expert."""


def collapsed(fractions: Sequence[float]) -> bool:
    return max(fractions) > COLLAPSE_SHARE


def oracle_gain_share(
    madds: float, metric: float, statics: Sequence[tuple[float, float]], oracle: Sequence[dict[str, float]]
) -> float | None:
    """The share of the oracle's gain a routed model captures at its own cost: (its metric − the best static
    model's at ≤ its MAdds) / (the oracle's at ≤ its MAdds − that same static metric).

    `statics` are (MAdds, metric) of the models a user could run instead (each expert alone). 1 means the
    router is as good as knowing in hindsight which expert gets each row right; 0 (or less) that it adds nothing
    over simply running the best static model it can afford. None when nothing static fits the budget or the
    oracle gains nothing there (the share is undefined)."""
    affordable = [m for cost, m in statics if cost <= madds]
    reachable = [p["metric"] for p in oracle if p["madds"] <= madds]
    if not affordable or not reachable:
        return None
    base, best = max(affordable), max(reachable)
    if best <= base:
        return None
    return (metric - base) / (best - base)
