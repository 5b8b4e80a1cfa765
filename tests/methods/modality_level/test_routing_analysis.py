"""Routing analyses against simple references: β = 0 reproduces dispatch, oracle bounds, areas by hand."""

import pytest
import torch
from tests.methods.modality_level.test_model import TASK, batch, build

from dynmm.methods.modality_level.routing_analysis import (
    ExpertOutputs,
    beta_curve,
    beta_for_budget,
    beta_grid,
    collect_outputs,
    dispatch_results,
    envelope_area,
    oracle_frontier,
    per_sample_correct,
    reroute,
    routing_summary,
)
from dynmm.report.metrics import build_metrics
from dynmm.specs import TaskSpec

REGRESSION = TaskSpec("regression")


def labelled(n=64, seed=1):
    x = batch(n, seed)
    target = torch.randint(0, TASK.num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    return [(x, target)]


def test_per_sample_correct_matches_the_metrics():
    g = torch.Generator().manual_seed(0)
    scores, score_target = torch.randn(50, 1, generator=g), torch.randn(50, generator=g)
    acc2 = build_metrics(REGRESSION)["acc2"]
    acc2.update(scores.squeeze(-1), score_target)
    assert float(per_sample_correct(REGRESSION, scores, score_target).float().mean()) == pytest.approx(
        float(acc2.compute())
    )
    logits, labels = torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    accuracy = build_metrics(TASK)["accuracy"]
    accuracy.update(logits, labels)
    assert float(per_sample_correct(TASK, logits, labels).float().mean()) == pytest.approx(float(accuracy.compute()))


@pytest.mark.parametrize("beta", [0.0, 0.3, -2.0])
def test_offline_rerouting_reproduces_dispatch(beta):
    model = build()
    model.beta = beta
    data = labelled()
    with torch.no_grad():
        deployed = model(data[0][0])
    choice, outputs = reroute(model, collect_outputs(model, data), beta)
    assert torch.equal(choice, model.last_gate.choice)
    torch.testing.assert_close(outputs, deployed, atol=1e-6, rtol=0)


def test_dispatch_results_and_routing_summary():
    model = build()
    model.beta = 0.3  # a mixed routing
    results = dispatch_results(model, labelled(), TASK)
    summary = routing_summary(results, ["cheap", "full"], TASK)
    assert summary["counts"] == torch.bincount(results.choice, minlength=2).tolist()
    assert sum(summary["counts"]) == 64
    per_class = torch.tensor(list(summary["per_class"].values())).sum(0).tolist()
    assert per_class == summary["counts"]
    expected = model.gate_madds + sum(c * m for c, m in zip(summary["counts"], model.expert_madds, strict=True)) / 64
    assert summary["madds_per_sample"] == pytest.approx(expected)


def test_beta_curve_spans_all_costliest_to_all_cheapest_and_costs_fall_with_beta():
    model = build()
    record = collect_outputs(model, labelled())
    curve = beta_curve(model, record, TASK, beta_grid(model, record))
    madds = [p["madds"] for p in curve]
    assert madds == sorted(madds, reverse=True)
    assert madds[0] == pytest.approx(model.gate_madds + max(model.expert_madds))
    assert madds[-1] == pytest.approx(model.gate_madds + min(model.expert_madds))
    assert curve[-1]["cheapest_share"] == 1.0


def test_oracle_by_hand():
    model = build()
    # 4 rows; the cheap expert is right on rows 0,1; the full one on rows 1,2; nobody on row 3.
    target = torch.tensor([0, 1, 2, 3])
    cheap = torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 0]), 4).float()
    full = torch.nn.functional.one_hot(torch.tensor([1, 1, 2, 0]), 4).float()
    record = ExpertOutputs(torch.zeros(4, 2), torch.stack([cheap, full]), target)
    frontier = oracle_frontier(model, record, TASK)
    cheap_madds, full_madds = model.expert_madds
    assert [p["metric"] for p in frontier] == [0.5, 0.75]  # row 2 is the only upgrade worth paying for
    assert frontier[1]["madds"] == pytest.approx(model.gate_madds + cheap_madds + (full_madds - cheap_madds) / 4)


def test_oracle_bounds_every_routing():
    model = build()
    record = collect_outputs(model, labelled(128))
    frontier = oracle_frontier(model, record, TASK)
    curve = beta_curve(model, record, TASK, beta_grid(model, record))
    assert max(p["metric"] for p in frontier) >= max(p["metric"] for p in curve)
    low, high = frontier[0]["madds"], model.gate_madds + max(model.expert_madds)
    assert envelope_area(curve, low, high) <= envelope_area(frontier, low, high) + 1e-9


def test_envelope_area_and_budget_by_hand():
    points = [{"madds": 1.0, "metric": 0.5}, {"madds": 3.0, "metric": 0.9}, {"madds": 2.0, "metric": 0.4}]
    # best-so-far: 0.5 on [1, 3), 0.9 on [3, 4]
    assert envelope_area(points, 1.0, 4.0) == pytest.approx(0.5 * 2 + 0.9 * 1)
    assert envelope_area(points, 0.0, 1.0) == 0.0
    assert beta_for_budget(points, 2.5) == points[0]
    assert beta_for_budget(points, 0.5) is None


def test_expert_metrics_from_collected_outputs_match_evaluating_each_expert():
    from dynmm.methods.modality_level.routing_analysis import expert_metrics
    from dynmm.report.evaluate import evaluate

    model = build()
    data = labelled()
    for alone, expert in zip(expert_metrics(collect_outputs(model, data), TASK), model.experts, strict=True):
        reference = evaluate(expert, data, TASK)
        assert alone == pytest.approx(reference, abs=1e-6)


def test_oracle_gain_share_against_the_best_affordable_static_model():
    from dynmm.methods.modality_level.routing_analysis import oracle_gain_share

    statics = [(100.0, 0.70), (300.0, 0.75)]
    oracle = [{"madds": 110.0, "metric": 0.70}, {"madds": 150.0, "metric": 0.80}, {"madds": 250.0, "metric": 0.90}]
    assert oracle_gain_share(200.0, 0.75, statics, oracle) == pytest.approx(0.5)  # (0.75-0.70)/(0.80-0.70)
    assert oracle_gain_share(200.0, 0.70, statics, oracle) == pytest.approx(0.0)  # adds nothing over the cheap one
    assert oracle_gain_share(400.0, 0.80, statics, oracle) == pytest.approx(0.05 / 0.15)
    assert oracle_gain_share(50.0, 0.9, statics, oracle) is None  # nothing static fits the budget
    assert oracle_gain_share(120.0, 0.72, statics, oracle) is None  # the oracle gains nothing at this cost


def test_collapse_flag():
    from dynmm.methods.modality_level.routing_analysis import collapsed

    assert collapsed([0.96, 0.04]) and not collapsed([0.95, 0.05]) and not collapsed([0.5, 0.5])
