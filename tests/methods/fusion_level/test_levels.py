"""The DynMM authors' fusion-level gate: one of cells + 1 depth levels (cells 1..level fuse depth), and their
stems fused whenever the depth stem runs; the same dispatch, costs and skipping as the per-cell gate."""

import pytest
import torch
from tests.methods.fusion_level.test_model import assert_dispatch_equals_masked

from dynmm.cost import count_madds
from dynmm.errors import ConfigError
from dynmm.methods.fusion_level.model import FusionLevelDynMM

SIZE = (32, 48)
OPS = ("identity", "se_add")


def build(stem_op="se_add", seed=0):
    torch.manual_seed(seed)
    return FusionLevelDynMM("tiny", 5, SIZE, OPS, 16, 8, routing="levels", stem_op=stem_op).eval()


def batch(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 1, n)[:, None, None, None]
    return {"rgb": torch.randn(n, 3, *SIZE, generator=g) * scale, "depth": torch.randn(n, 1, *SIZE, generator=g)}


def test_gate_picks_a_level_and_cells_follow_it():
    model = build()
    assert model.gate.head.out_features == model.num_cells + 1
    logits = torch.tensor([[[5.0, 0, 0, 0, 0]], [[0, 0, 5.0, 0, 0]], [[0, 0, 0, 0, 5.0]]])
    assert model.eval_choice(logits).tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert model.aux_stages_needed(model.eval_choice(logits)).tolist() == [0, 2, 4]
    paths = model.random_choice(200, torch.Generator().manual_seed(0))
    assert bool((paths[:, 1:] <= paths[:, :-1]).all())  # nested: a cell fuses only if every earlier one does
    assert set(model.aux_stages_needed(paths).tolist()) == set(range(model.num_cells + 1))


def test_level_weights_are_one_hot_cells_with_gradients_to_every_level():
    model = build().train()
    model.tau = 1.0
    x = batch(6)
    out = model(x)
    weights = model.last_weights
    assert weights.shape == (6, model.num_cells, 2)
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(6, model.num_cells))
    assert bool(((weights == 0) | (weights == 1)).all())
    (out.mean() + model.expected_cost(weights)).backward()
    assert model.gate.head.weight.grad is not None and bool((model.gate.head.weight.grad.abs().sum(dim=1) > 0).all())
    probs = model.stage_probabilities()
    assert probs.shape == (6, model.num_cells + 1)
    torch.testing.assert_close(probs, model.last_logits[:, 0].softmax(dim=-1))


@pytest.mark.parametrize("stem_op", ["se_add", None])
def test_dispatch_equals_masked_and_counted_madds_follow_the_routing(stem_op):
    model = build(stem_op)
    x = batch(12)
    model.forced_choice = model.random_choice(12, torch.Generator().manual_seed(3))
    assert len(model.aux_stages_needed(model.forced_choice).unique()) > 2
    assert_dispatch_equals_masked(model, x)
    model.set_mode("dispatch")
    for forced in (model.forced_choice, None):  # stage I's paths (no gate), then the gate's own choice
        model.forced_choice = forced
        with torch.no_grad():
            model(x)
        counted = count_madds(lambda: model(x)).total / 12
        assert counted == pytest.approx(float(model.realized_madds(model.last_choice).mean()))
    assert (model.costs["stem_fusion"] > 0) == (stem_op is not None)


def test_stem_fusion_runs_only_where_the_depth_stem_does():
    """A static RGB-only row never runs the depth stem, so its stem is not fused either."""
    model = build()
    model.forced_choice = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0]])
    seen = []
    hook = model.stem_fusion.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    with torch.no_grad():
        model(batch(2))
    hook.remove()
    assert seen == [1]
    assert float(model.aux_madds(model.forced_choice)[0]) == 0.0
    stem = model.costs["aux_stem"] + model.costs["stem_fusion"]
    assert float(model.aux_madds(model.forced_choice)[1]) == pytest.approx(stem + sum(model.costs["aux_stages"][:2]))


def test_beta_trades_levels_for_cost_and_bad_settings_are_named():
    model = build()
    costs = model.level_costs()
    assert costs.shape == (model.num_cells + 1,) and bool((costs[1:] > costs[:-1]).all()) and float(costs[-1]) == 1
    x = batch(12)
    with torch.no_grad():
        model(x)
        free = model.aux_stages_needed(model.last_choice).float().mean()
        model.beta = 1e3
        model(x)
    assert model.aux_stages_needed(model.last_choice).sum() == 0 <= free
    with pytest.raises(ConfigError, match=r"ops must be \[identity, a fusing op\]"):
        FusionLevelDynMM("tiny", 5, SIZE, ("identity", "add", "se_add"), routing="levels")
    with pytest.raises(ConfigError, match=r"ops must be \[identity, a fusing op\]"):
        FusionLevelDynMM("tiny", 5, SIZE, ("identity", "se_ad"), routing="levels")
    with pytest.raises(ConfigError, match="routing must be"):
        FusionLevelDynMM("tiny", 5, SIZE, OPS, routing="paths")
    with pytest.raises(ConfigError, match="stem_op must be a fusing op"):
        FusionLevelDynMM("tiny", 5, SIZE, OPS, stem_op="identity")


def test_exported_graph_keeps_the_levels_and_the_stem_fusion(tmp_path):
    pytest.importorskip("onnxscript")
    from dynmm.methods.fusion_level.deploy_run import write_fusion_artifact

    model = build()
    torch.nn.init.normal_(model.gate.head.weight, std=10.0)
    g = torch.Generator().manual_seed(1)
    scale = torch.logspace(-1, 1, 16)[:, None, None, None]
    inputs = {
        "rgb": torch.randn(16, 3, *SIZE, generator=g) * scale,
        "depth": torch.randn(16, 1, *SIZE, generator=g) * scale.flip(0),
    }
    with torch.no_grad():
        model(inputs)
    assert len(model.aux_stages_needed(model.last_choice).unique()) > 1, "the test needs images routed apart"
    check = write_fusion_artifact(model, inputs, tmp_path / "art", {})["verification"]
    assert check["passed"] and check["batch_1_same_routing"] == 1.0 and check["batch_1_max_abs_diff"] <= 1e-4
