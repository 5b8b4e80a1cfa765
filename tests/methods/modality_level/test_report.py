"""report_data of a modality-level run: single-seed and seed-aggregated λ sweeps, test-set size, collapsed
routing and oracle gain share reach the report, which accepts the result."""

import copy
from pathlib import Path
from typing import Any

from dynmm.methods.modality_level.report import report_data
from dynmm.report.html import write_report

METRICS: dict[str, Any] = {
    "versus_costliest": {"expert": "late", "madds_saving": 0.3, "acc2_change": -0.01},
    "test": {"acc2": 0.77},
    "madds_per_sample": 3000.0,
    "frontier": {"area_ratio": 0.9},
    "experts": {"text": {"acc2": 0.74, "madds_per_sample": 2000.0}, "late": {"acc2": 0.78, "madds_per_sample": 6000.0}},
    "beta_curve": [{"beta": 0.0, "madds": 3000.0, "metric": 0.77, "choice_fractions": [0.5, 0.5]}],
    "oracle_frontier": [{"madds": 2000.0, "metric": 0.8}, {"madds": 6000.0, "metric": 0.9}],
    "robustness": {"noise": [{"modality": "text", "levels": [0.0, 1.0], "curves": {"DynMM": [0.77, 0.6]}}]},
}
ROUTING = {"experts": ["text", "late"], "counts": [100, 74], "per_class": {"neg": [50, 30], "pos": [50, 44]}}


def aggregate_sweep() -> dict[str, Any]:
    point = {
        "label": "λ=0.01",
        "lambda": 0.01,
        "metric_mean": 0.775,
        "metric_std": 0.012,
        "madds_mean": 3100.0,
        "madds_std": 150.0,
        "collapsed": False,
        "oracle_gain_share_mean": 0.42,
        "oracle_gain_share_std": 0.05,
    }
    collapsed = point | {"label": "λ=1", "lambda": 1.0, "collapsed": True, "oracle_gain_share_mean": None}
    experts = [{"name": "text", "metric_mean": 0.74, "metric_std": 0.01, "madds": 2000.0}]
    single = [{"lambda": 0.01, "madds_per_sample": 3000.0, "metric": 0.77}]
    return {"points": single, "aggregate": {"test_rows": 686, "points": [point, collapsed], "experts": experts}}


def test_single_run_states_the_test_rows_from_the_routing_counts(tmp_path: Path) -> None:
    data = report_data("run", copy.deepcopy(METRICS), ROUTING)
    assert data["pareto"]["test_rows"] == 174
    assert [p["label"] for p in data["pareto"]["dynmm"]] == ["this run"]
    page = write_report(tmp_path, data).read_text(encoding="utf-8")
    assert "test split, 174 samples" in page


def test_single_seed_sweep_points_carry_collapse_and_oracle_gain_share(tmp_path: Path) -> None:
    sweep = {
        "points": [
            {"lambda": 0.5, "madds_per_sample": 2500.0, "metric": 0.7, "collapsed": True, "oracle_gain_share": 0.3},
            {"lambda": 0.1, "madds_per_sample": 3000.0, "metric": 0.77},  # this run
        ]
    }
    dynmm = report_data("run", copy.deepcopy(METRICS), ROUTING, sweep=sweep)["pareto"]["dynmm"]
    assert dynmm == [
        {"label": "λ=0.5", "madds": 2500.0, "metric": 0.7, "collapsed": True, "oracle_gain_share": 0.3},
        {"label": "λ=0.1", "madds": 3000.0, "metric": 0.77},
    ]
    page = write_report(tmp_path, report_data("run", copy.deepcopy(METRICS), ROUTING, sweep=sweep)).read_text()
    assert "collapsed" in page and "<th>oracle gain share</th>" in page


def test_aggregated_sweep_is_drawn_as_mean_and_spread(tmp_path: Path) -> None:
    data = report_data("run", copy.deepcopy(METRICS), ROUTING, sweep=aggregate_sweep())
    pareto = data["pareto"]
    assert pareto["test_rows"] == 686
    assert pareto["experts"] == [{"name": "text", "madds": 2000.0, "metric": 0.74, "metric_std": 0.01}]
    first, second = pareto["dynmm"]  # the sweep's means stand for every λ, this run included
    assert first == {
        "label": "λ=0.01",
        "madds": 3100.0,
        "metric": 0.775,
        "madds_std": 150.0,
        "metric_std": 0.012,
        "collapsed": False,
        "oracle_gain_share": 0.42,
        "oracle_gain_share_std": 0.05,
    }
    assert second["collapsed"] is True and "oracle_gain_share" not in second
    page = write_report(tmp_path, data).read_text(encoding="utf-8")
    assert "0.775 ± 0.012" in page and "3,100 ± 150" in page and "0.42 ± 0.05" in page
    assert "test split, 686 samples" in page and "<td>this run</td>" not in page
