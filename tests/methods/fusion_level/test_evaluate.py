"""Routing statistics of an evaluation and of the sweep summary: paths, shares and the collapse flag."""

from collections import Counter
from pathlib import Path

import pytest
import torch

from dynmm.engine.run_folder import RunResult
from dynmm.engine.sweep import SweepRun
from dynmm.methods.fusion_level.evaluate import evaluate_fusion_level, routing_shares
from dynmm.methods.fusion_level.model import FusionLevelDynMM
from dynmm.methods.fusion_level.sweep import fusion_level_summary
from dynmm.specs import TaskSpec

SIZE = (32, 48)
TASK = TaskSpec("segmentation", num_classes=5)


def evaluate(choice=None, static_op=None):
    torch.manual_seed(0)
    model = FusionLevelDynMM("tiny", 5, SIZE, decoder_width=16, gate_width=8).eval()
    model.forced_choice, model.static_op = choice, static_op
    g = torch.Generator().manual_seed(1)
    n = 20 if choice is None else len(choice)
    inputs = {"rgb": torch.randn(n, 3, *SIZE, generator=g), "depth": torch.randn(n, 1, *SIZE, generator=g)}
    return model, evaluate_fusion_level(model, [(inputs, torch.randint(0, 5, (n, *SIZE), generator=g))], TASK)


def test_one_routing_for_all_is_collapsed():
    model, result = evaluate(static_op=2)
    assert result["collapsed"] is True and result["top_path_share"] == 1.0
    assert result["top_path"] == "+".join(["weighted_add"] * model.num_cells)
    assert result["paths"] == {result["top_path"]: 20} and result["top_aux_stages_share"] == 1.0


def test_samples_routed_apart_are_not_collapsed():
    choice = torch.zeros(20, 4, dtype=torch.long)
    choice[:12, :2] = 1  # 12 rows: add in cells 1-2 (2 depth stages), 8 rows: RGB only
    _, result = evaluate(choice)
    assert result["collapsed"] is False and result["top_path_share"] == pytest.approx(0.6)
    assert result["aux_stages_run"] == [8, 0, 12, 0, 0] and result["top_aux_stages_share"] == pytest.approx(0.6)
    assert result["paths"] == {"add+add+identity+identity": 12, "identity+identity+identity+identity": 8}


def test_collapse_threshold_is_strictly_above_95_percent():
    assert routing_shares(Counter(a=96, b=4), [0, 100])["collapsed"] is True
    assert routing_shares(Counter(a=95, b=5), [0, 100])["collapsed"] is False  # 95 % is not "more than 95 %"
    shares = routing_shares(Counter(a=50, b=30, c=20), [50, 50])
    assert shares["top_path"] == "a" and shares["top_path_share"] == 0.5 and shares["top_aux_stages_share"] == 0.5


def test_sweep_summary_has_routing_histograms_per_point(tmp_path):
    from dynmm.config import load_config

    _, apart = evaluate(torch.tensor([[1, 0, 0, 0]] * 5 + [[0, 0, 0, 0]] * 5))
    _, static = evaluate(static_op=1)
    group = {"scenes": 5, "miou": 0.5, "aux_madds_per_sample": 1.0, "aux_stages_run": [5, 0, 0, 0, 0], "x": 1}
    by_flag = {"dark": {"flagged": group, "not_flagged": group}}
    results = [
        RunResult(Path(tmp_path / name), {"test": test, "beta_curve": [], "by_flag": by_flag})
        for name, test in (("a", apart), ("b", static))
    ]
    config = load_config("configs/rgbd_synth/dynmm_fusion.yaml", [])
    summary = fusion_level_summary(SweepRun(config, tmp_path, [0.1, 0.3], results))
    first, second = (point["routing"] for point in summary["points"])
    assert first["aux_stages_run"] == [5, 5, 0, 0, 0] and first["collapsed"] is False
    assert first["top_path_share"] == 0.5 and first["top_aux_stages_share"] == 0.5
    assert first["ops_per_cell"][0] == {"identity": 5, "add": 5, "weighted_add": 0, "concat_proj": 0, "se_add": 0}
    assert second["collapsed"] is True and second["top_path_share"] == 1.0
    assert summary["points"][0]["by_flag"]["dark"]["flagged"] == {k: v for k, v in group.items() if k != "x"}
