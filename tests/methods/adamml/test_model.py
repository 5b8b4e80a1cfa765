"""AdaMML: skipped (clip, segment) pairs never run, dispatch == masked, realized MAdds match the counted ones,
late fusion averages the kept pairs, the loss prices usage, bad inputs name the modality."""

import copy

import pytest
import torch
import torch.nn.functional as F

from dynmm.cost import count_madds
from dynmm.data.avclips import avclips_info
from dynmm.errors import ConfigError, InputError
from dynmm.methods.adamml.model import AdaMML, adamml_loss, default_lambdas
from dynmm.methods.adamml.policy import KEEP
from dynmm.specs import ModalitySpec

T = 3
SPECS = {
    "image": ModalitySpec("image", (T, 1, 12, 12), "image"),
    "audio": ModalitySpec("audio", (T, 1, 10, 13), "image"),
}
# The audio net is wider, so the image net is the cheapest (the default fallback).
ENCODERS = {"default": {"kind": "cnn", "channels": [4, 8], "out_dim": 8}, "audio": {"channels": [8, 16]}}
POLICY = {"feature_dim": 8, "hidden": 16, "widths": (4, 8), "strides": (1, 2), "expand_ratio": 2}


_BUILT: dict[tuple, AdaMML] = {}


def build(seed: int = 0, **kw) -> AdaMML:
    """A fresh copy of a tiny model (built, measured and calibrated once per configuration)."""
    key = (seed, *sorted(kw.items()))
    if key not in _BUILT:
        _BUILT[key] = _build(seed, **kw)
    return copy.deepcopy(_BUILT[key])


def _build(seed: int, **kw) -> AdaMML:
    torch.manual_seed(seed)
    model = AdaMML(SPECS, 5, encoders=ENCODERS, policy=POLICY, **kw).eval()
    # A fresh policy keeps (or skips) everything; centre each keep-vs-skip margin on a reference batch so that
    # the learned (argmax) policy keeps some pairs and skips others, and the tests below see mixed decisions.
    with torch.no_grad():
        logits = model.policy(clips(8, seed=99))
        for m, head in model.policy.heads.items():
            head.bias[KEEP] -= (logits[m][..., KEEP] - logits[m][..., 1 - KEEP]).median()
    return model


def clips(batch: int, seed: int = 1, steps: int = T) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, steps, 1, 12, 12, generator=g),
        "audio": torch.randn(batch, steps, 1, 10, 13, generator=g),
    }


def count_rows(model: AdaMML) -> tuple[dict[str, int], list]:
    """Rows seen by each recognition net and by the policy, via forward hooks."""
    seen = {"image": 0, "audio": 0, "policy": 0}
    handles = []
    for m, net in model.nets.items():
        handles.append(
            net.register_forward_hook(lambda mod, args, out, m=m: seen.__setitem__(m, seen[m] + len(args[0])))
        )
    handles.append(model.policy.register_forward_hook(lambda *a: seen.__setitem__("policy", seen["policy"] + 1)))
    return seen, handles


RANDOM_RATES = [
    {"image": 0.5, "audio": 0.5},
    {"image": 0.0, "audio": 0.6},  # image kept nowhere
    {"image": 1.0, "audio": 1.0},  # everything kept
    {"image": 0.2, "audio": 0.0},  # audio kept nowhere, some clips keep nothing (fallback)
    {"image": 0.0, "audio": 0.0},  # only the fallback
]


@pytest.mark.parametrize("rates", [None, *RANDOM_RATES])  # None: the learned policy (argmax)
def test_dispatch_equals_masked(rates):
    model = build()
    if rates is not None:
        model.set_policy_mode("random", rates)
    x = clips(8)
    outputs, keeps = [], []
    with torch.no_grad():
        for mode in ("dispatch", "masked"):
            model.set_mode(mode)
            if rates is not None:
                model.generator.manual_seed(7)  # the same random keeps in both modes
            outputs.append(model(x))
            keeps.append(model.last_keep)
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-6, rtol=0)
    for m in model.modalities:
        assert torch.equal(keeps[0][m], keeps[1][m])
    assert torch.isfinite(outputs[0]).all()


@pytest.mark.parametrize("policy_mode", ["learned", "random", "fixed"])
def test_skipped_pairs_never_enter_the_recognition_nets(policy_mode):
    model = build()
    model.set_policy_mode(policy_mode, keep_rate=0.4)
    seen, handles = count_rows(model)
    with torch.no_grad():
        model(clips(6))
    kept = sum(int(k.sum()) for k in model.last_keep.values())
    assert 0 < kept < 2 * 6 * T  # some pairs kept, some skipped
    for m in model.modalities:
        assert seen[m] == int(model.last_keep[m].sum())
    assert seen["policy"] == (1 if policy_mode != "random" else 0)
    assert model.last_policy_ran == (policy_mode != "random")
    for h in handles:
        h.remove()


def test_policy_mode_all_keeps_everything_without_running_the_policy():
    model = build()
    model.set_policy_mode("all")
    seen, _ = count_rows(model)
    with torch.no_grad():
        model(clips(4))
    assert seen == {"image": 4 * T, "audio": 4 * T, "policy": 0}
    assert all(bool((k == 1).all()) for k in model.last_keep.values())
    model.train()  # also in training (warmup): the policy is off
    model(clips(4))
    assert seen["policy"] == 0


def test_fallback_keeps_the_cheapest_modality_on_the_first_segment():
    model = build()
    assert model.costs["nets"]["image"] < model.costs["nets"]["audio"]
    assert model.fallback == "image"
    model.set_policy_mode("random", {"image": 0.0, "audio": 0.0})
    with torch.no_grad():
        out = model(clips(5))
    first = torch.zeros(5, T)
    first[:, 0] = 1
    assert torch.equal(model.last_keep["image"], first)
    assert torch.equal(model.last_keep["audio"], torch.zeros(5, T))
    assert torch.isfinite(out).all()
    explicit = build(fallback="audio")
    explicit.set_policy_mode("random", 0.0)
    with torch.no_grad():
        explicit(clips(2))
    assert torch.equal(explicit.last_keep["audio"][:, 0], torch.ones(2))
    with pytest.raises(ConfigError, match="fallback"):
        build(fallback="text")


def test_fallback_only_touches_clips_that_keep_nothing():
    model = build()
    keep = {"image": torch.tensor([[0.0, 0, 0], [0, 0, 0]]), "audio": torch.tensor([[0.0, 0, 0], [0, 1, 0]])}
    out = model.apply_fallback(keep)
    assert torch.equal(out["image"], torch.tensor([[1.0, 0, 0], [0, 0, 0]]))
    assert torch.equal(out["audio"], keep["audio"])


@pytest.mark.parametrize(("policy_mode", "rate"), [("learned", None), ("fixed", None), ("random", 0.5), ("all", None)])
def test_realized_madds_match_the_counted_dispatch_forward(policy_mode, rate):
    # FlopCounterMode counts only matmuls and convolutions, whose MAdds are exactly linear in the rows they
    # see; BN, pooling, softmax and the fusion's sums are element-wise and count 0. So the counted cost of a
    # dispatch forward should equal the measured per-sample costs times what ran; rel=1e-9 only absorbs float
    # rounding of the sums.
    model = build()
    model.set_policy_mode(policy_mode, keep_rate=rate)
    x = clips(6)
    counted = count_madds(lambda: model(x)).total
    realized = model.realized_madds(model.last_keep)
    assert realized.shape == (6,) and realized.dtype == torch.float64
    assert counted == pytest.approx(float(realized.sum()), rel=1e-9)
    for i in range(3):  # per clip: each clip alone
        one = {m: v[i : i + 1] for m, v in x.items()}
        counted = count_madds(lambda one=one: model(one)).total
        assert counted == pytest.approx(float(model.realized_madds(model.last_keep)[0]), rel=1e-9)
    if policy_mode == "all":
        assert float(realized[0]) == pytest.approx(model.full_madds(), rel=1e-9)


def test_costs_are_measured_and_masked_pays_for_everything():
    model = build()
    costs = model.costs
    assert set(costs) == {"policy", "nets", "fusion"}
    assert costs["policy"] > 0 and all(v > 0 for v in costs["nets"].values())
    assert model.full_madds() == pytest.approx(T * sum(costs["nets"].values()) + costs["fusion"])
    model.set_policy_mode("random", 0.3)
    model.set_mode("masked")
    masked = count_madds(lambda: model(clips(4))).total / 4
    assert masked == pytest.approx(model.full_madds(), rel=1e-9)  # the papers' way pays every net on every pair
    keep = {"image": torch.tensor([[1.0, 0, 1]]), "audio": torch.tensor([[0.0, 0, 1]])}
    expected = 2 * costs["nets"]["image"] + costs["nets"]["audio"] + costs["fusion"]
    assert float(model.realized_madds(keep, policy_ran=False)[0]) == pytest.approx(expected)
    assert float(model.realized_madds(keep, policy_ran=True)[0]) == pytest.approx(expected + costs["policy"])


def test_eval_is_deterministic():
    model = build()
    x = clips(6)
    with torch.no_grad():
        first = model(x)
        keep = {m: k.clone() for m, k in model.last_keep.items()}
        second = model(x)
    assert torch.equal(first, second)
    assert all(torch.equal(keep[m], model.last_keep[m]) for m in keep)


def _policy_grads(model: AdaMML) -> dict[str, float]:
    return {m: float(model.policy.heads[m].weight.grad.abs().sum()) for m in model.modalities}


def test_training_gives_the_policy_gradients_from_ce_and_from_the_cost_term():
    model = build().train()
    x = clips(8)
    logits = model(x)
    keep = model.last_keep
    assert all(k.requires_grad for k in keep.values())
    target = logits.detach().argmax(dim=1)  # every clip correct: the cost term is the squared usage
    ce_only, _ = adamml_loss(logits, target, keep, lambdas={})
    ce_only.backward(retain_graph=True)
    assert all(g > 0 for g in _policy_grads(model).values())
    assert model.nets["image"].head.weight.grad.abs().sum() > 0
    model.zero_grad()
    cost_only, parts = adamml_loss(logits.detach(), target, keep, lambdas={"image": 1.0, "audio": 1.0})
    assert parts["cost"] > 0
    cost_only.backward()
    assert all(g > 0 for g in _policy_grads(model).values())
    assert model.nets["image"].head.weight.grad is None  # the cost term reaches the policy only


def test_fixed_policy_gets_no_gradients_and_keeps_its_batch_norm_statistics():
    model = build().train()
    model.set_policy_mode("fixed")
    stats = model.policy.encoders["image"].features[1].running_mean.clone()
    logits = model(clips(6))
    F.cross_entropy(logits, torch.zeros(6, dtype=torch.long)).backward()
    assert all(p.grad is None for p in model.policy.parameters())
    assert model.nets["audio"].head.weight.grad is not None
    assert torch.equal(model.policy.encoders["image"].features[1].running_mean, stats)
    assert model.policy.training  # the policy's own mode is restored


def test_late_fusion_is_a_weighted_mean_over_kept_pairs():
    model = build()
    with torch.no_grad():
        model.fusion_logits.copy_(torch.tensor([0.7, -0.4]))  # modalities sorted: audio, image
    w = model.fusion_weights.detach()
    assert bool((w > 0).all()) and float(w.sum()) == pytest.approx(1.0)
    x = clips(4)
    with torch.no_grad():
        z = {m: torch.stack([model.nets[m](x[m][:, t]) for t in range(T)], dim=1) for m in model.modalities}
        model.set_policy_mode("all")
        everything = model(x)
        reference = sum(w[i] * z[m].sum(dim=1) for i, m in enumerate(model.modalities)) / (T * w.sum())
        torch.testing.assert_close(everything, reference, atol=1e-5, rtol=1e-5)
        model.set_policy_mode("random", 0.5)
        some = model(x)
        keep = model.last_keep
        num = sum(w[i] * (keep[m][..., None] * z[m]).sum(dim=1) for i, m in enumerate(model.modalities))
        den = sum(w[i] * keep[m].sum(dim=1) for i, m in enumerate(model.modalities))
        torch.testing.assert_close(some, num / den[:, None], atol=1e-5, rtol=1e-5)


def test_loss_prices_usage_of_correct_clips_and_gamma_for_wrong_ones():
    logits = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    target = torch.tensor([0, 2])  # clip 0 right, clip 1 wrong
    keep = {
        "image": torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]]),
        "audio": torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]),
    }
    total, parts = adamml_loss(logits, target, keep, {"image": 0.5, "audio": 2.0}, gamma=10.0)
    c_image = (0.5**2 + 10.0) / 2
    c_audio = (0.25**2 + 10.0) / 2
    ce = F.cross_entropy(logits, target)
    assert float(parts["cost_image"]) == pytest.approx(c_image)
    assert float(parts["cost_audio"]) == pytest.approx(c_audio)
    assert float(parts["cost"]) == pytest.approx(0.5 * c_image + 2.0 * c_audio)
    assert float(total) == pytest.approx(float(ce) + 0.5 * c_image + 2.0 * c_audio)
    assert float(parts["ce"]) == pytest.approx(float(ce))
    assert float(parts["usage_image"]) == pytest.approx(0.75)
    # a modality without a lambda costs nothing
    only_image, _ = adamml_loss(logits, target, keep, {"image": 0.5}, gamma=10.0)
    assert float(only_image) == pytest.approx(float(ce) + 0.5 * c_image)
    with pytest.raises(ConfigError, match="text"):
        adamml_loss(logits, target, keep, {"text": 1.0})
    with pytest.raises(InputError, match="'audio'"):
        adamml_loss(logits, target, {**keep, "audio": torch.ones(3, 4)}, {})


def test_default_lambdas_follow_the_measured_costs():
    assert default_lambdas({"nets": {"image": 2.0, "audio": 8.0}}, 0.4) == pytest.approx({"image": 0.1, "audio": 0.4})
    model = build()
    lambdas = default_lambdas(model.costs, 1.0)
    assert lambdas["audio"] == 1.0 and 0 < lambdas["image"] < 1.0
    with pytest.raises(ConfigError):
        default_lambdas({"policy": 1.0}, 1.0)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda x: {"audio": x["audio"]}, "missing modality 'image'"),
        (lambda x: {**x, "image": torch.randn(2, T + 1, 1, 12, 12)}, r"modality 'image' expected shape"),
        (lambda x: {**x, "audio": torch.randn(2, T, 3, 10, 13)}, r"modality 'audio' expected shape"),
        (lambda x: {**x, "image": x["image"][:, 0]}, r"modality 'image' expected shape"),
    ],
)
def test_bad_inputs_name_the_modality_before_any_layer_runs(change, match):
    model = build()
    seen, _ = count_rows(model)
    with pytest.raises(InputError, match=match):
        model(change(clips(2)))
    assert seen == {"image": 0, "audio": 0, "policy": 0}


def test_bad_configuration():
    with pytest.raises(ConfigError, match="same number of segments"):
        AdaMML({**SPECS, "audio": ModalitySpec("audio", (T + 1, 1, 10, 13), "image")}, 5, ENCODERS, POLICY)
    with pytest.raises(ConfigError, match="'text'"):
        AdaMML({**SPECS, "text": ModalitySpec("text", (T, 8), "sequence")}, 5, ENCODERS, POLICY)
    with pytest.raises(ConfigError, match="video"):
        AdaMML(SPECS, 5, {**ENCODERS, "video": {"kind": "cnn"}}, POLICY)
    with pytest.raises(ConfigError, match="policy"):
        AdaMML(SPECS, 5, ENCODERS, {"width": 3})
    model = build()
    with pytest.raises(ConfigError, match="execution mode"):
        model.set_mode("sparse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="policy mode"):
        model.set_policy_mode("greedy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        model.set_policy_mode("random", {"image": 1.5})


def test_default_nets_are_heavier_than_the_policy_per_segment_on_avclips():
    specs = avclips_info().modalities  # T=8, image 1x28x28, audio 1x40x26; shapes only, no data built
    model = AdaMML(specs, 10)
    per_segment_policy = model.costs["policy"] / model.segments
    assert all(cost > 4 * per_segment_policy for cost in model.costs["nets"].values())
    x = {m: torch.randn(2, *s.shape) for m, s in specs.items()}
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 10)


def test_an_encoder_entry_of_another_kind_does_not_inherit_the_defaults_options():
    """The default recognition encoder is a CNN with `channels`; a modality set to another kind (a ResNet) must
    not receive them."""
    from dynmm.methods.adamml.model import AdaMML
    from dynmm.nn.resnet import PooledResNet
    from dynmm.specs import ModalitySpec

    specs = {
        "rgb": ModalitySpec("rgb", (2, 3, 32, 32), "image"),
        "audio": ModalitySpec("audio", (2, 1, 16, 16), "image"),
    }
    model = AdaMML(specs, 3, encoders={"rgb": {"kind": "resnet", "layout": "tiny"}, "audio": {"channels": [4]}})
    assert isinstance(model.nets["rgb"].encoder, PooledResNet)
    assert model.nets["audio"].encoder.features[0].out_channels == 4  # same kind: merged key by key
