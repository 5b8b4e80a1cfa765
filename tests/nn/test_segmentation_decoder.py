import pytest
import torch
import torch.nn.functional as F

from dynmm.errors import ConfigError, InputError
from dynmm.nn.resnet import ResNetEncoder
from dynmm.nn.segmentation_decoder import SegmentationDecoder

CHANNELS = [16, 32, 64, 128]


def stage_features(b: int = 2, h: int = 64, w: int = 64, grad: bool = False) -> list[torch.Tensor]:
    return [
        torch.randn(b, c, h // s, w // s, requires_grad=grad) for c, s in zip(CHANNELS, (4, 8, 16, 32), strict=True)
    ]


def test_output_shape_is_classes_at_input_size():
    dec = SegmentationDecoder(CHANNELS, num_classes=5, width=8)
    for mode in (dec.train, dec.eval):
        mode()
        assert dec(stage_features(), (64, 64)).shape == (2, 5, 64, 64)
    assert dec(stage_features(h=64, w=96), (64, 96)).shape == (2, 5, 64, 96)


def test_after_a_resnet_encoder_with_sizes_not_multiple_of_32():
    enc = ResNetEncoder(3, "tiny").eval()
    dec = SegmentationDecoder(enc.stage_channels, num_classes=3, width=8).eval()
    x = torch.randn(1, 3, 50, 70)  # stage sizes 13x18, 7x9, 4x5, 2x3: not exact halvings
    assert dec(enc(x), (50, 70)).shape == (1, 3, 50, 70)


def test_gradients_reach_every_stage_input_and_parameter():
    dec = SegmentationDecoder(CHANNELS, num_classes=4, width=8)
    feats = stage_features(grad=True)
    out = dec(feats, (64, 64))
    (out * torch.randn_like(out)).sum().backward()
    for i, f in enumerate(feats):
        assert f.grad is not None and f.grad.abs().sum() > 0, f"stage {i}"
    for name, p in dec.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_top_down_path_by_hand_for_two_stages():
    dec = SegmentationDecoder([4, 8], num_classes=3, width=6).eval()
    shallow, deep = torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)
    x = F.interpolate(dec.reduce(deep), scale_factor=2, mode="bilinear", align_corners=False)
    x = dec.refine[0](x + dec.skips[0](shallow))
    expected = F.interpolate(dec.classifier(x), size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(dec([shallow, deep], (32, 32)), expected)


def test_single_stage_decoder_has_no_skips():
    dec = SegmentationDecoder([8], num_classes=2, width=4)
    assert len(dec.skips) == 0
    assert dec([torch.randn(1, 8, 4, 4)], (16, 16)).shape == (1, 2, 16, 16)


def test_feature_errors():
    dec = SegmentationDecoder(CHANNELS, num_classes=5, width=8)
    with pytest.raises(InputError, match="expects 4 stage features, got 3"):
        dec(stage_features()[1:], (64, 64))
    feats = stage_features()
    feats[2] = torch.randn(2, 63, 4, 4)
    with pytest.raises(InputError, match=r"channels \[16, 32, 64, 128\], got \[16, 32, 63, 128\]"):
        dec(feats, (64, 64))


def test_config_errors():
    with pytest.raises(ConfigError, match="at least one stage"):
        SegmentationDecoder([], num_classes=3)
    with pytest.raises(ConfigError, match="num_classes"):
        SegmentationDecoder([8], num_classes=0)
