"""AdaMML policy: per-segment keep/skip logits, causal over segments, deterministic in eval, trainable in training."""

import pytest
import torch

from dynmm.cost import measure_madds
from dynmm.errors import ConfigError, InputError
from dynmm.methods.adamml.policy import KEEP, AdaMMLPolicy, decide

SMALL = {"feature_dim": 8, "hidden": 16, "widths": (4, 8), "strides": (1, 2), "expand_ratio": 2}


def make_policy() -> AdaMMLPolicy:
    torch.manual_seed(0)
    return AdaMMLPolicy({"image": 1, "audio": 1}, **SMALL)


def clips(batch: int, steps: int) -> dict[str, torch.Tensor]:
    return {"image": torch.randn(batch, steps, 1, 12, 12), "audio": torch.randn(batch, steps, 1, 10, 13)}


@pytest.mark.parametrize(("batch", "steps"), [(1, 1), (2, 5), (4, 3)])
def test_logits_shape_per_modality(batch, steps):
    policy = make_policy()
    assert policy.modalities == ["audio", "image"]
    out = policy(clips(batch, steps))
    assert sorted(out) == ["audio", "image"]
    assert all(z.shape == (batch, steps, 2) for z in out.values())


def test_eval_logits_do_not_depend_on_the_rest_of_the_batch():
    policy = make_policy().eval()
    x = clips(5, 4)
    with torch.no_grad():
        full = policy(x)
        for i in range(5):
            alone = policy({m: v[i : i + 1] for m, v in x.items()})
            for m in full:
                torch.testing.assert_close(alone[m], full[m][i : i + 1], atol=1e-5, rtol=0)


def test_lstm_is_causal_over_segments():
    policy = make_policy().eval()
    x = clips(2, 6)
    changed = {m: v.clone() for m, v in x.items()}
    changed["audio"][:, 3] = torch.randn_like(changed["audio"][:, 3])
    with torch.no_grad():
        before, after = policy(x), policy(changed)
    for m in before:
        torch.testing.assert_close(before[m][:, :3], after[m][:, :3], atol=0, rtol=0)
        assert not torch.allclose(before[m][:, 3:], after[m][:, 3:])


def test_decide_in_eval_is_deterministic_argmax():
    logits = {"audio": torch.randn(4, 6, 2), "image": torch.randn(4, 6, 2)}
    first = decide(logits, tau=5.0, training=False)
    for m, z in logits.items():
        assert first[m].dtype == z.dtype and first[m].shape == (4, 6)
        assert torch.equal(first[m], (z.argmax(-1) == KEEP).float())
        assert torch.equal(decide(logits, tau=5.0, training=False)[m], first[m])


def test_decide_in_training_is_hard_with_straight_through_gradients():
    policy = make_policy().train()
    logits = policy(clips(3, 4))
    keep = decide(logits, tau=5.0, training=True, generator=torch.Generator().manual_seed(0))
    for m in logits:
        assert keep[m].shape == (3, 4)
        assert set(keep[m].unique().tolist()) <= {0.0, 1.0}
    sum(k.mean() for k in keep.values()).backward()
    assert all(policy.heads[m].weight.grad.abs().sum() > 0 for m in logits)
    assert policy.encoders["audio"].features[0].weight.grad.abs().sum() > 0


def test_decide_training_is_seeded_by_the_generator_and_checks_tau():
    logits = {"audio": torch.zeros(8, 8, 2)}
    draw = lambda: decide(logits, 1.0, True, generator=torch.Generator().manual_seed(3))["audio"]  # noqa: E731
    assert torch.equal(draw(), draw())
    assert 0 < draw().sum() < 64  # random with equal logits
    with pytest.raises(ConfigError, match="temperature"):
        decide(logits, 0.0, training=False)


def test_bad_inputs_name_the_modality():
    policy = make_policy()
    x = clips(2, 3)
    with pytest.raises(InputError, match="missing modality 'image'"):
        policy({"audio": x["audio"]})
    with pytest.raises(InputError, match=r"'image' has \(B, T\) = \(2, 3\), expected \(2, 4\) as modality 'audio'"):
        policy({"image": x["image"], "audio": torch.randn(2, 4, 1, 10, 13)})
    with pytest.raises(InputError, match=r"'image' has \(B, T\) = \(3, 3\), expected \(2, 3\)"):
        policy({"image": torch.randn(3, 3, 1, 12, 12), "audio": x["audio"]})
    with pytest.raises(InputError, match=r"'image' expected shape \(B, T, 1, H, W\), got \(2, 1, 12, 12\)"):
        policy({"image": x["image"][:, 0], "audio": x["audio"]})


def test_bad_config():
    with pytest.raises(ConfigError):
        AdaMMLPolicy({})
    with pytest.raises(ConfigError):
        AdaMMLPolicy({"image": 1}, hidden=0)


def test_policy_madds_are_measured():
    madds = measure_madds(make_policy(), clips(2, 3))
    assert madds.total > 0
    assert madds.by_module["AdaMMLPolicy.lstm"] > 0 and madds.by_module["AdaMMLPolicy.encoders.image"] > 0


def test_downsampled_policy_is_cheaper_and_reads_a_coarse_view():
    torch.manual_seed(0)
    x = {"image": torch.randn(2, 3, 1, 28, 28), "audio": torch.randn(2, 3, 1, 40, 26)}
    full = AdaMMLPolicy({"image": 1, "audio": 1}, hidden=32).eval()
    coarse = AdaMMLPolicy({"image": 1, "audio": 1}, hidden=32, downsample=2).eval()
    coarse.load_state_dict(full.state_dict())  # the same weights: only the view differs
    assert measure_madds(coarse, x).total < measure_madds(full, x).total / 2
    with torch.no_grad():
        pooled = {m: torch.nn.functional.avg_pool2d(v.flatten(0, 1), 2, ceil_mode=True) for m, v in x.items()}
        expected = full({m: v.unflatten(0, (2, 3)) for m, v in pooled.items()})
        got = coarse(x)
    for m in got:
        torch.testing.assert_close(got[m], expected[m])
    with pytest.raises(ConfigError, match="downsample must be an integer >= 1"):
        AdaMMLPolicy({"image": 1}, downsample=0)


def test_authors_policy_shape_mobilenet_v2_joint_mlp_and_resize():
    """cnn: mobilenet_v2 gives 1280 features per modality into a `fc_hidden`-wide MLP and an LSTM of `hidden`;
    `resize` feeds the CNNs a fixed-size view (the authors' 160x160), the same as resizing the clip first."""
    torch.manual_seed(0)
    policy = AdaMMLPolicy({"rgb": 3, "audio": 1}, cnn="mobilenet_v2", fc_hidden=48, hidden=16, resize=(64, 64)).eval()
    assert policy.fc[0].in_features == 2 * 1280 and policy.fc[0].out_features == 48
    assert policy.lstm.input_size == 48 and policy.lstm.hidden_size == 16
    x = {"rgb": torch.randn(2, 3, 3, 40, 50), "audio": torch.randn(2, 3, 1, 30, 20)}
    with torch.no_grad():
        got = policy(x)
        resized = {
            m: torch.nn.functional.interpolate(v.flatten(0, 1), size=(64, 64), mode="bilinear").unflatten(0, (2, 3))
            for m, v in x.items()
        }
        policy.resize = None
        expected = policy(resized)
    for m in got:
        assert got[m].shape == (2, 3, 2)
        torch.testing.assert_close(got[m], expected[m])
    with pytest.raises(ConfigError, match="cnn must be"):
        AdaMMLPolicy({"rgb": 3}, cnn="resnet")
    with pytest.raises(ConfigError, match="resize must be"):
        AdaMMLPolicy({"rgb": 3}, resize=(0, 5))
