import pytest
import torch

from dynmm.errors import ConfigError, InputError
from dynmm.nn.encoders import (
    IdentityEncoder,
    LSTMEncoder,
    MLPEncoder,
    SmallCNNEncoder,
    TransformerEncoder,
    build_encoder,
)
from dynmm.specs import ModalitySpec

VECTOR = ModalitySpec("text", (10,), "vector")
IMAGE = ModalitySpec("image", (1, 28, 28), "image")
SPECTROGRAM = ModalitySpec("audio", (1, 40, 101), "image")
SEQUENCE = ModalitySpec("video", (7, 5), "sequence")


def batch(spec: ModalitySpec, n: int = 3) -> torch.Tensor:
    return torch.randn(n, *spec.shape)


@pytest.mark.parametrize(
    ("spec", "cfg", "out_dim"),
    [
        (VECTOR, {"kind": "identity"}, 10),
        (IMAGE, {"kind": "identity"}, 784),
        (SEQUENCE, {"kind": "identity"}, 35),
        (VECTOR, {"kind": "mlp"}, 64),
        (VECTOR, {"kind": "mlp", "hidden": [16, 8], "out_dim": 5, "dropout": 0.1}, 5),
        (IMAGE, {"kind": "mlp", "hidden": [], "out_dim": 7}, 7),
        (SEQUENCE, {"kind": "mlp", "out_dim": 4}, 4),
        (IMAGE, {"kind": "cnn"}, 64),
        (SPECTROGRAM, {"kind": "cnn", "channels": [32, 64, 128], "out_dim": 12}, 12),
        (SEQUENCE, {"kind": "lstm"}, 64),
        (SEQUENCE, {"kind": "lstm", "hidden": 6, "out_dim": 3, "num_layers": 2, "bidirectional": True}, 3),
        (SEQUENCE, {"kind": "transformer"}, 64),
        (SEQUENCE, {"kind": "transformer", "d_model": 8, "nhead": 4, "num_layers": 2, "out_dim": 9}, 9),
    ],
)
def test_build_encoder_output_shape(spec, cfg, out_dim):
    enc = build_encoder(spec, cfg)
    assert enc.out_dim == out_dim
    for mode in (enc.train, enc.eval):
        mode()
        assert enc(batch(spec)).shape == (3, out_dim)


def test_identity_flattens_in_row_major_order():
    x = batch(IMAGE)
    out = IdentityEncoder(IMAGE)(x)
    torch.testing.assert_close(out, x.reshape(3, 784))
    assert out[1, 28 * 3 + 5] == x[1, 0, 3, 5]


def test_mlp_is_linear_relu_stack():
    enc = MLPEncoder(10, hidden=[6], out_dim=2)
    x = batch(VECTOR)
    lin1, lin2 = enc.net[0], enc.net[3]
    expected = torch.relu(x @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    torch.testing.assert_close(enc(x), expected)


def test_cnn_halves_resolution_per_stage_and_pools_globally():
    enc = SmallCNNEncoder(1, channels=[4, 8, 16], out_dim=5).eval()
    x = batch(SPECTROGRAM)
    feats = enc.features[:-1](x)  # the conv stages, before the adaptive pool
    assert feats.shape == (3, 16, 40 // 8, 101 // 8)
    expected = enc.head(feats.mean(dim=(2, 3)))
    torch.testing.assert_close(enc(x), expected)


def test_cnn_pool_size_keeps_a_coarse_layout():
    enc = SmallCNNEncoder(1, channels=[4, 8], out_dim=5, pool_size=2).eval()
    x = torch.randn(3, 1, 28, 28)
    feats = enc.features[:-1](x)  # (3, 8, 7, 7)
    # adaptive average pooling 7 -> 2 averages rows/cols 0..3 and 3..6 (overlapping at 3)
    quadrants = [
        feats[:, :, r0:r1, c0:c1].mean(dim=(2, 3)) for r0, r1 in ((0, 4), (3, 7)) for c0, c1 in ((0, 4), (3, 7))
    ]
    pooled = torch.stack(quadrants, dim=2)  # (3, 8, 4) in row-major order
    torch.testing.assert_close(enc(x), enc.head(pooled.flatten(1)))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_uses_final_hidden_state_of_each_direction(bidirectional):
    enc = LSTMEncoder(5, hidden=6, out_dim=3, num_layers=2, bidirectional=bidirectional)
    x = batch(SEQUENCE)
    seq, _ = enc.lstm(x)
    # Forward direction ends at the last step; the backward direction ends at the first.
    last = seq[:, -1, :6] if not bidirectional else torch.cat([seq[:, -1, :6], seq[:, 0, 6:]], dim=1)
    torch.testing.assert_close(enc(x), enc.proj(last))


def test_transformer_encoder_mean_pools_over_time_with_learned_positions():
    enc = TransformerEncoder(5, d_model=8, nhead=2, out_dim=3, max_len=7).eval()
    x = batch(SEQUENCE)
    hidden = enc.encoder(enc.embed(x) + enc.pos)
    torch.testing.assert_close(enc(x), enc.proj(hidden.mean(dim=1)))
    # Positions matter: reversing time changes the embedding.
    assert not torch.allclose(enc(x), enc(x.flip(1)), atol=1e-4)


def test_transformer_max_len_defaults_to_sequence_length_and_rejects_longer_inputs():
    enc = build_encoder(SEQUENCE, {"kind": "transformer", "d_model": 8})
    assert enc.max_len == 7 and enc.pos.shape == (7, 8)
    with pytest.raises(InputError, match="length 9.*max_len 7"):
        enc(torch.randn(2, 9, 5))


def test_unknown_kind_names_modality_and_valid_kinds():
    with pytest.raises(ConfigError) as err:
        build_encoder(VECTOR, {"kind": "vgg"})
    msg = str(err.value)
    assert "'text'" in msg and "'vgg'" in msg
    for kind in ("identity", "mlp", "cnn", "lenet", "lstm", "mobilenet_v2", "resnet", "transformer"):
        assert kind in msg


@pytest.mark.parametrize(
    ("spec", "kind", "expected"),
    [
        (VECTOR, "cnn", ["'text'", "vector", "(10,)"]),
        (IMAGE, "lstm", ["'image'", "image", "(1, 28, 28)"]),
        (VECTOR, "transformer", ["'text'", "vector", "(10,)"]),
        (SEQUENCE, "cnn", ["'video'", "sequence", "(7, 5)"]),
    ],
)
def test_kind_that_does_not_fit_the_modality(spec, kind, expected):
    with pytest.raises(ConfigError) as err:
        build_encoder(spec, {"kind": kind})
    for part in expected:
        assert part in str(err.value)


def test_unknown_keyword_names_key_and_accepted_ones():
    with pytest.raises(ConfigError) as err:
        build_encoder(VECTOR, {"kind": "mlp", "hiden": [4], "width": 3})
    msg = str(err.value)
    assert "'hiden'" in msg and "'width'" in msg and "'text'" in msg
    assert "accepted: hidden, out_dim, dropout" in msg


def test_input_size_is_derived_not_configured():
    with pytest.raises(ConfigError, match="'in_dim'.*in_dim is taken from the modality spec"):
        build_encoder(VECTOR, {"kind": "mlp", "in_dim": 10})
    with pytest.raises(ConfigError, match="'in_channels'"):
        build_encoder(IMAGE, {"kind": "cnn", "in_channels": 1})


def test_missing_kind_and_bad_values():
    with pytest.raises(ConfigError, match="'kind'"):
        build_encoder(VECTOR, {"out_dim": 3})
    with pytest.raises(ConfigError, match="'text'.*'mlp'"):
        build_encoder(VECTOR, {"kind": "mlp", "hidden": "wide"})
    with pytest.raises(ConfigError, match="4 pooling stages need height and width >= 16"):
        build_encoder(ModalitySpec("tiny", (1, 8, 8), "image"), {"kind": "cnn", "channels": [4, 4, 4, 4]})
    with pytest.raises(ConfigError, match="max_len 3 is shorter than the sequence length 7"):
        build_encoder(SEQUENCE, {"kind": "transformer", "max_len": 3})


def test_gradients_reach_every_parameter():
    for spec, cfg in [(IMAGE, {"kind": "cnn", "channels": [4]}), (SEQUENCE, {"kind": "lstm", "hidden": 4})]:
        enc = build_encoder(spec, cfg)
        enc(batch(spec)).square().sum().backward()
        for name, p in enc.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_temporal_conv_reads_spectrogram_time_axis_and_sequences():
    import torch

    from dynmm.nn.encoders import build_encoder
    from dynmm.specs import ModalitySpec

    torch.manual_seed(0)
    spec = ModalitySpec("audio", (1, 40, 101), "image")
    encoder = build_encoder(spec, {"kind": "conv1d", "channels": [8, 8], "out_dim": 5}).eval()
    x = torch.randn(3, 1, 40, 101)
    assert encoder(x).shape == (3, 5)
    # mels are channels: the first conv sees 40 input channels and slides over the 101 frames only
    assert encoder.features[0].in_channels == 40
    # shifting the sound in time by a multiple of the pooling stride barely changes a max-pooled embedding
    # while scrambling the mel axis does: the encoder treats the two axes differently
    shifted = torch.roll(x, shifts=2, dims=3)
    scrambled = x[:, :, torch.randperm(40)]
    assert (encoder(shifted) - encoder(x)).abs().mean() < (encoder(scrambled) - encoder(x)).abs().mean()
    seq = build_encoder(ModalitySpec("text", (12, 7), "sequence"), {"kind": "conv1d", "out_dim": 4})
    assert seq(torch.randn(2, 12, 7)).shape == (2, 4)


def test_maxout_mlp_is_multibenchs_maxout_stack():
    from dynmm.cost import count_madds
    from dynmm.nn.encoders import build_encoder
    from dynmm.specs import ModalitySpec

    spec = ModalitySpec("image", (4096,), "vector")
    encoder = build_encoder(spec, {"kind": "maxout_mlp", "hidden": [1024], "out_dim": 512}).eval()
    x = torch.randn(3, 4096)
    assert encoder(x).shape == (3, 512) and encoder.out_dim == 512
    assert count_madds(lambda: encoder(x[:1])).total == 4096 * 1024 * 2 + 1024 * 512 * 2  # two pieces per unit
    first = encoder.net[1]
    z = first.linear(encoder.net[0](x)).view(3, 1024, 2)
    torch.testing.assert_close(first(encoder.net[0](x)), z.amax(dim=2))  # each unit: the max of its pieces
