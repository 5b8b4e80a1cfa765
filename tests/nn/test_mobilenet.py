"""Inverted residual blocks (MobileNetV2 shape rules) and the light CNN on digit images and log-mels."""

import pytest
import torch

from dynmm.errors import ConfigError, InputError
from dynmm.nn.mobilenet import InvertedResidual, LightCNN


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "stride", "residual", "out_hw"),
    [(8, 8, 1, True, (9, 12)), (8, 16, 1, False, (9, 12)), (8, 8, 2, False, (5, 6)), (8, 16, 2, False, (5, 6))],
)
def test_inverted_residual_shapes_and_when_the_input_is_added(in_ch, out_ch, stride, residual, out_hw):
    block = InvertedResidual(in_ch, out_ch, stride, expand_ratio=3).eval()
    assert block.use_residual is residual
    x = torch.randn(2, in_ch, 9, 12)
    out = block(x)
    assert out.shape == (2, out_ch, *out_hw)
    if residual:
        torch.testing.assert_close(out, x + block.conv(x))


def test_expand_ratio_one_skips_the_expand_conv():
    convs = lambda b: [m for m in b.conv if isinstance(m, torch.nn.Conv2d)]  # noqa: E731
    assert len(convs(InvertedResidual(8, 8, 1, 1))) == 2  # depthwise + projection
    expand, depthwise, project = convs(InvertedResidual(8, 12, 1, 4))
    assert (expand.out_channels, depthwise.groups, project.out_channels) == (32, 32, 12)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 40, 51), (3, 8, 8)])
def test_light_cnn_gives_one_vector_per_image(shape):
    net = LightCNN(shape[0], widths=(8, 16), strides=(1, 2), expand_ratio=2, out_dim=24).eval()
    assert net(torch.randn(3, *shape)).shape == (3, 24)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"widths": ()},
        {"widths": (8, 16), "strides": (1,)},
        {"widths": (8, 0), "strides": (1, 2)},
        {"widths": (8,), "strides": (0,)},
        {"expand_ratio": 0},
        {"out_dim": -1},
        {"in_channels": 0},
    ],
)
def test_light_cnn_rejects_bad_sizes(kwargs):
    args = {"in_channels": 1, "widths": (8,), "strides": (1,)} | kwargs
    with pytest.raises(ConfigError):
        LightCNN(**args)


def test_light_cnn_rejects_wrong_channels():
    with pytest.raises(InputError, match=r"\(batch, 1, H, W\)"):
        LightCNN(1)(torch.randn(2, 3, 28, 28))


def test_mobilenet_v2_has_the_papers_blocks_and_cost():
    """17 inverted residual blocks, 1280 pooled features, and about the MobileNetV2 paper's 300 M MAdds at 224."""
    from dynmm.cost import measure_madds
    from dynmm.nn.mobilenet import MobileNetV2

    net = MobileNetV2(3).eval()
    assert sum(isinstance(m, InvertedResidual) for m in net.modules()) == 17
    x = torch.randn(1, 3, 224, 224)
    assert net(x).shape == (1, 1280)
    assert measure_madds(net, x).total == pytest.approx(300e6, rel=0.01)
    assert MobileNetV2(1, out_dim=10)(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    with pytest.raises(InputError, match=r"expects \(batch, 1, H, W\)"):
        MobileNetV2(1)(torch.randn(2, 3, 64, 64))
    with pytest.raises(ConfigError):
        MobileNetV2(3, width_mult=0)
