"""Fusion-level DynMM: dispatch == masked, skipped depth stages never run, counted MAdds follow the routing."""

import pytest
import torch

from dynmm.cost import count_madds
from dynmm.errors import ConfigError, InputError
from dynmm.methods.fusion_level.model import FusionLevelDynMM

SIZE = (32, 48)


def build(seed=0):
    torch.manual_seed(seed)
    return FusionLevelDynMM("tiny", 5, SIZE, decoder_width=16, gate_width=8).eval()


def batch(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(n, 3, *SIZE, generator=g), "depth": torch.randn(n, 1, *SIZE, generator=g)}


def random_choice(n, model, seed=2):
    g = torch.Generator().manual_seed(seed)
    choice = torch.randint(0, len(model.op_names), (n, model.num_cells), generator=g)
    choice[0] = 0  # RGB only everywhere: no depth stage at all
    choice[1, 2:] = 0  # depth needed for the first two stages only
    choice[2, :] = 1  # depth everywhere
    return choice


@pytest.mark.parametrize("forced", [True, False])
def test_dispatch_equals_masked(forced):
    model = build()
    x = batch(12)
    if forced:
        model.forced_choice = random_choice(12, model)
    assert_dispatch_equals_masked(model, x)


def assert_dispatch_equals_masked(model, x):
    """Dispatch (only the chosen ops and depth stages run) gives masked's outputs (everything runs)."""
    with torch.no_grad():
        model.set_mode("dispatch")
        fast = model(x)
        model.set_mode("masked")
        reference = model(x)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)


def test_rows_whose_trailing_cells_are_identity_never_enter_those_depth_stages():
    model = build()
    choice = random_choice(12, model)
    model.forced_choice = choice
    seen = []
    hooks = [
        stage.register_forward_hook(lambda module, args, out, k=k: seen.append((k, args[0].shape[0])))
        for k, stage in enumerate(model.aux.stages)
    ]
    hooks.append(model.aux.stem.register_forward_hook(lambda m, args, out: seen.append(("stem", args[0].shape[0]))))
    with torch.no_grad():
        model(batch(12))
    for hook in hooks:
        hook.remove()
    needed = model.aux_stages_needed(choice)
    assert needed[0] == 0 and needed[1] == 2 and needed[2] == model.num_cells
    expected = [("stem", int((needed > 0).sum()))]  # no gate here: RGB-only rows skip the depth stem too
    expected += [(k, int((needed > k).sum())) for k in range(model.num_cells) if int((needed > k).sum())]
    assert seen == expected


def test_counted_madds_follow_the_routing_and_the_cost_model():
    model = build()
    x = batch(12)
    choice = random_choice(12, model)
    model.forced_choice = choice
    counted = count_madds(lambda: model(x)).total / 12
    assert counted == pytest.approx(float(model.realized_madds(choice).mean()))
    model.forced_choice = None  # the gate decides and is paid
    with torch.no_grad():
        model(x)
    gated = model.last_choice
    assert count_madds(lambda: model(x)).total / 12 == pytest.approx(float(model.realized_madds(gated).mean()))
    model.set_mode("masked")  # the papers' way runs the whole depth encoder and every op
    model.forced_choice = choice
    assert count_madds(lambda: model(x)).total / 12 > counted


def test_expected_cost_equals_the_realized_cost_of_one_hot_weights():
    model = build()
    choice = random_choice(12, model)
    weights = torch.nn.functional.one_hot(choice, len(model.op_names)).float()
    cells = torch.tensor(model.costs["cells"], dtype=torch.float64)
    depth = torch.tensor(model.costs["aux_stages"], dtype=torch.float64)
    variable = model.realized_madds(choice) - model.costs["fixed"] - model.costs["gate"] - model.costs["aux_stem"]
    most = cells.max(dim=1).values.sum() + depth.sum()
    assert float(model.expected_cost(weights)) == pytest.approx(float((variable / most).mean()), rel=1e-5)
    stem = model.costs["aux_stem"]  # the gate reads the depth stem, so every row pays it
    assert float(model.aux_madds(choice)[0]) == stem and float(model.aux_madds(choice)[2]) == stem + depth.sum()
    model.forced_choice = choice  # without a gate, a row that reads no depth never runs the depth stem either
    assert float(model.aux_madds(choice)[0]) == 0.0 and model.aux_madds_full() == stem + float(depth.sum())


def test_training_is_dense_and_the_gate_gets_gradients():
    model = build().train()
    out = model(batch(4))
    (out.square().mean() + model.expected_cost(model.last_weights)).backward()
    assert model.gate.head.weight.grad.abs().sum() > 0


def test_bad_forced_choice_and_mode():
    model = build()
    model.forced_choice = torch.zeros(3, model.num_cells, dtype=torch.long)
    with pytest.raises(ConfigError, match="forced_choice must be"):
        model(batch(2))
    with pytest.raises(ConfigError, match="unknown execution mode"):
        model.set_mode("sparse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown ResNet layout"):
        FusionLevelDynMM("resnet7", 5, SIZE)


def test_beta_knob_trades_depth_for_cost():
    model = build()
    x = batch(8)
    with torch.no_grad():
        model.beta = 1e6
        model(x)
        assert bool((model.aux_stages_needed(model.last_choice) == 0).all())
        model.beta = -1e6  # the costliest op everywhere: the whole depth encoder runs
        model(x)
        assert bool((model.aux_stages_needed(model.last_choice) == model.num_cells).all())


def test_missing_depth_runs_rgb_only_and_pays_no_depth():
    model = build()
    x = batch(6)
    x["depth"] = torch.zeros_like(x["depth"])
    with torch.no_grad():
        out = model(x, missing=["depth"])
        assert bool((model.last_choice == model.op_names.index("identity")).all())
        model.static_op = model.op_names.index("identity")
        torch.testing.assert_close(out, model(x))
        model.static_op = None
    counted = count_madds(lambda: model(x, missing=["depth"])).total / 6
    assert counted == pytest.approx(float(model.realized_madds(model.last_choice, gate_ran=False).mean()))
    assert float(model.aux_madds(model.last_choice, gate_ran=False).max()) == 0.0


def test_depth_primary_swaps_the_roles():
    """primary="depth": the depth encoder feeds the decoder and RGB is the skippable one; with `identity`
    everywhere that is the depth-only baseline, which never runs the RGB encoder."""
    torch.manual_seed(0)
    model = FusionLevelDynMM("tiny", 5, SIZE, decoder_width=16, gate_width=8, primary="depth").eval()
    assert (model.primary, model.secondary) == ("depth", "rgb") and model.main.stem[0].in_channels == 1
    x = batch(5)
    model.forced_choice = random_choice(5, model)
    with torch.no_grad():
        model.set_mode("masked")
        reference = model(x)
        model.set_mode("dispatch")
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=0)
        model.forced_choice = None
        model.static_op = model.op_names.index("identity")
        ran = []
        hook = model.aux.stem.register_forward_hook(lambda m, args, out: ran.append(args[0].shape[0]))
        depth_only = model(x)
        other_rgb = model({"rgb": torch.randn_like(x["rgb"]), "depth": x["depth"]})
        hook.remove()
    assert ran == [] and torch.equal(depth_only, other_rgb)
    assert float(model.aux_madds(model.last_choice).max()) == 0.0
    model.static_op = None
    with torch.no_grad():
        model(x, missing=["rgb"])
    assert bool((model.last_choice == model.op_names.index("identity")).all())
    with pytest.raises(InputError, match="depth input carries the decoder's features and cannot be missing"):
        model(x, missing=["depth"])
    with pytest.raises(ConfigError, match="primary modality must be one of"):
        FusionLevelDynMM("tiny", 5, SIZE, primary="audio")
