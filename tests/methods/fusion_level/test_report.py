"""report_data of a fusion-level run: the depth-encoder saving vs the best static fusion, routing per cell and
per scene, class names for the legend; optional metrics keys may be absent."""

import copy
from pathlib import Path
from typing import Any

from dynmm.data.rgbd_synth import CLASS_NAMES
from dynmm.methods.fusion_level.report import UNLABELED, class_names, report_data
from dynmm.report.html import write_report

OPS = ("identity", "add")
TEST: dict[str, Any] = {
    "miou": 0.85,
    "pixel_accuracy": 0.97,
    "madds_per_sample": 4.2e7,
    "secondary": "depth",
    "aux_madds_per_sample": 8.0e6,
    "aux_madds_full": 1.4e7,
    "aux_stages_run": [1, 0, 6, 1],
    "ops_per_cell": [{"identity": 2, "add": 6}, {"identity": 3, "add": 5}, {"identity": 8, "add": 0}],
}
METRICS: dict[str, Any] = {
    "test": TEST,
    "beta_curve": [{"beta": 0.0, "madds_per_sample": 4.2e7, "miou": 0.85}],
    "robustness": {"levels": [0.0, 1.0], "noise": {"rgb": [0.85, 0.5]}, "missing_aux": {"miou": 0.5}},
    "by_flag": {
        "depth_pairs": {
            "flagged": {"scenes": 5, "aux_madds_per_sample": 9.0e6, "aux_stages_run": [0, 0, 4, 1]},
            "not_flagged": {"scenes": 3, "aux_madds_per_sample": 6.0e6, "aux_stages_run": [1, 0, 2, 0]},
        }
    },
}
STATIC = [
    {"name": "static_identity", "madds": 3.1e7, "metric": 0.62, "gated": False, "aux_madds": 0.0, "collapsed": None},
    {"name": "static_add", "madds": 4.5e7, "metric": 0.83, "gated": False, "aux_madds": 1.4e7, "collapsed": None},
    {"name": "static_se", "madds": 4.5e7, "metric": 0.81, "gated": False, "aux_madds": 1.4e7, "collapsed": None},
]
GATED = [
    {"name": "sweep/lambda_1", "madds": 3.6e7, "metric": 0.59, "gated": True, "aux_madds": 2.4e6, "collapsed": True}
]


def test_depth_encoder_saving_is_measured_against_the_best_static_fusion(tmp_path: Path) -> None:
    data = report_data("run", copy.deepcopy(METRICS), STATIC, GATED)
    component = data["component"]
    assert component["reference"] == "static_add"  # best mIoU among static runs that run the depth encoder
    assert [b["group"] for b in component["bars"]] == ["static fusion"] * 3 + ["other DynMM runs", "this run"]
    assert component["bars"][3]["collapsed"] is True and component["full"] == 1.4e7
    page = write_report(tmp_path, data).read_text(encoding="utf-8")
    assert "this run: 43% fewer depth encoder MAdds than the best static fusion (static_add)" in page
    assert "test split, 8 scenes" in page


def test_routing_per_cell_and_depth_stages_per_scene_are_separate_figures(tmp_path: Path) -> None:
    data = report_data("run", copy.deepcopy(METRICS))
    assert data["routing"]["group"] == "cell" and data["routing"]["per_class"]["cell 1"] == [2, 6]
    (stages,) = data["histograms"]
    assert stages["counts"] == [1, 0, 6, 1] and stages["bins"] == ["0", "1", "2", "3"]
    assert stages["stacked"] == {"depth_pairs": {"flagged": [0, 0, 4, 1], "not flagged": [1, 0, 2, 0]}}
    write_report(tmp_path, data)
    assert {"routing.png", "histogram_0.png", "component.png"} <= {p.name for p in (tmp_path / "figures").iterdir()}


def test_optional_routing_keys_reach_summary_and_points(tmp_path: Path) -> None:
    metrics = copy.deepcopy(METRICS)
    metrics["test"] |= {"collapsed": True, "top_path": "add+add+identity", "top_path_share": 0.97}
    data = report_data("run", metrics, STATIC)
    assert data["summary"]["routing collapsed onto one path"] == "yes"
    assert data["summary"]["share of scenes on the most common path"] == 0.97
    assert data["pareto"]["dynmm"][0]["collapsed"] is True
    write_report(tmp_path, data)
    assert "routing collapsed onto one path" not in report_data("run", copy.deepcopy(METRICS))["summary"]


def test_class_names_end_with_unlabeled() -> None:
    assert class_names("rgbd_synth", len(CLASS_NAMES)) == [*CLASS_NAMES, UNLABELED]
    assert class_names("nyuv2", 3) == ["class 0", "class 1", "class 2", UNLABELED]
