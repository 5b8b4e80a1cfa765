import pytest
import torch

from dynmm.cost import count_madds, count_parameters, measure_madds
from dynmm.errors import ConfigError, InputError
from dynmm.nn.resnet import LAYOUTS, BasicBlock, Bottleneck, ResNetEncoder, ResNetLayout


@pytest.mark.parametrize(
    ("name", "in_channels", "size", "channels"),
    [
        ("tiny", 3, 64, [16, 32, 64, 128]),
        ("resnet18", 1, 64, [64, 128, 256, 512]),
        ("resnet34", 3, 64, [64, 128, 256, 512]),
        ("resnet50", 1, 32, [256, 512, 1024, 2048]),
    ],
)
def test_stage_output_shapes_of_each_layout(name, in_channels, size, channels):
    enc = ResNetEncoder(in_channels, name).eval()
    assert enc.stage_channels == channels
    assert enc.stem_channels == (16 if name == "tiny" else 64)
    with torch.no_grad():
        feats = enc(torch.randn(1, in_channels, size, size))
    strides = (4, 8, 16, 32)
    assert [tuple(f.shape) for f in feats] == [
        (1, c, size // s, size // s) for c, s in zip(channels, strides, strict=True)
    ]


def test_block_counts_of_presets():
    enc = ResNetEncoder(3, "resnet34")
    assert [len(stage) for stage in enc.stages] == [3, 4, 6, 3]
    assert all(isinstance(b, BasicBlock) for stage in enc.stages for b in stage)
    assert isinstance(ResNetEncoder(3, LAYOUTS["resnet50"]).stages[0][0], Bottleneck)


def test_stem_and_stage_strides_and_piecewise_run_equals_forward():
    enc = ResNetEncoder(3, "tiny").eval()
    x = torch.randn(2, 3, 64, 96)
    out = enc.stem(x)
    assert out.shape == (2, 16, 16, 24)  # H/4: conv stride 2 + max pool stride 2
    piecewise = []
    for stage, stride in zip(enc.stages, (4, 8, 16, 32), strict=True):
        out = stage(out)
        assert out.shape[-2:] == (64 // stride, 96 // stride)
        piecewise.append(out)
    for a, b in zip(piecewise, enc(x), strict=True):
        torch.testing.assert_close(a, b)
    stem, feats = enc.forward_with_stem(x)
    torch.testing.assert_close(stem, enc.stem(x))
    torch.testing.assert_close(feats[-1], piecewise[-1])


def test_running_late_stages_on_some_rows_matches_the_full_batch_in_eval():
    # What progressive skipping relies on: a stage's output for a row does not depend on the other rows.
    enc = ResNetEncoder(1, "tiny").eval()
    x = torch.randn(4, 1, 32, 32)
    full = enc(x)
    mid = enc.stages[1](enc.stages[0](enc.stem(x)))
    rows = torch.tensor([0, 2])
    torch.testing.assert_close(enc.stages[3](enc.stages[2](mid[rows])), full[3][rows])


def test_bottleneck_parameter_count_by_hand():
    block = Bottleneck(64, 32, stride=2)  # 64 -> 128 channels
    conv1 = 64 * 32  # 1x1, no bias
    conv2 = 32 * 32 * 9  # 3x3
    conv3 = 32 * 128  # 1x1 expand by 4
    shortcut = 64 * 128  # 1x1 projection (stride and channels change)
    bn = 2 * (32 + 32 + 128 + 128)  # weight + bias of each BatchNorm
    assert count_parameters(block) == conv1 + conv2 + conv3 + shortcut + bn
    assert block.out_channels == 128


def test_shortcut_is_identity_only_when_shape_is_kept():
    assert BasicBlock(16, 16).downsample is None
    assert BasicBlock(16, 16, stride=2).downsample is not None
    assert BasicBlock(16, 32).downsample is not None
    assert Bottleneck(64, 16).downsample is None  # 64 -> 16 * 4 = 64
    assert Bottleneck(64, 64).downsample is not None


def test_bottleneck_strides_on_the_3x3_conv():
    block = Bottleneck(16, 8, stride=2)
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2) and block.conv3.stride == (1, 1)


def test_basic_block_madds_equal_hand_count_of_its_convs():
    block = BasicBlock(8, 16, stride=2)
    x = torch.randn(3, 8, 16, 16)  # measure_madds counts one sample
    out_pixels = 8 * 8
    conv1 = 16 * 8 * 9 * out_pixels
    conv2 = 16 * 16 * 9 * out_pixels
    shortcut = 16 * 8 * out_pixels
    assert measure_madds(block, x).total == conv1 + conv2 + shortcut
    identity_block = BasicBlock(8, 8)
    assert count_madds(lambda: identity_block(x[:1])).total == 2 * 8 * 8 * 9 * 16 * 16


def test_block_computes_relu_of_residual_sum():
    block = BasicBlock(4, 4).eval()
    x = torch.randn(2, 4, 8, 8)
    inner = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), torch.relu(inner + x))


def test_wrong_channel_count_names_expected_and_got():
    enc = ResNetEncoder(1, "tiny")
    with pytest.raises(InputError, match=r"1 channels, got 3 channels.*\(2, 3, 32, 32\)"):
        enc(torch.randn(2, 3, 32, 32))
    with pytest.raises(InputError, match="3-D"):
        enc(torch.randn(1, 32, 32))


def test_layout_errors():
    with pytest.raises(ConfigError, match="'resnet101'.*tiny, resnet18, resnet34, resnet50"):
        ResNetEncoder(3, "resnet101")
    with pytest.raises(ConfigError, match="'wide'.*basic, bottleneck"):
        ResNetLayout("wide", (8,), (1,), 8)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="one width per stage"):
        ResNetLayout("basic", (8, 16), (1,), 8)


def test_custom_layout_with_three_stages():
    enc = ResNetEncoder(2, ResNetLayout("bottleneck", (4, 8, 16), (1, 2, 1), 8)).eval()
    feats = enc(torch.randn(1, 2, 32, 32))
    assert enc.stage_channels == [16, 32, 64]
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 8, 8), (32, 4, 4), (64, 2, 2)]


def _as_torchvision_state_dict(enc: ResNetEncoder) -> dict[str, torch.Tensor]:
    """Rename our keys to torchvision's (conv1, bn1, layerK, fc) to check the loader's mapping."""
    renamed = {}
    for key, value in enc.state_dict().items():
        key = key.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
        if key.startswith("stages."):
            _, index, rest = key.split(".", 2)
            key = f"layer{int(index) + 1}.{rest}"
        renamed[key] = value.clone()
    renamed["fc.weight"] = torch.zeros(10, enc.stage_channels[-1])
    renamed["fc.bias"] = torch.zeros(10)
    return renamed


def test_load_torchvision_state_dict_maps_keys_and_adapts_the_stem_to_depth():
    rgb = ResNetEncoder(3, "tiny")
    checkpoint = _as_torchvision_state_dict(rgb)
    assert "layer1.0.conv1.weight" in checkpoint and "bn1.running_var" in checkpoint
    copy = ResNetEncoder(3, "tiny")
    copy.load_torchvision_state_dict(checkpoint)
    for key, value in rgb.state_dict().items():
        torch.testing.assert_close(copy.state_dict()[key], value)

    depth = ResNetEncoder(1, "tiny").eval()
    depth.load_torchvision_state_dict(checkpoint)
    torch.testing.assert_close(depth.stem[0].weight, rgb.stem[0].weight.sum(dim=1, keepdim=True))
    gray = torch.randn(1, 1, 32, 32)
    # a gray image seen as 1 channel or as 3 equal channels gives the same features
    torch.testing.assert_close(depth(gray)[-1], rgb.eval()(gray.repeat(1, 3, 1, 1))[-1], atol=1e-4, rtol=1e-4)

    with pytest.raises(ConfigError, match="does not fit"):
        ResNetEncoder(3, "resnet18").load_torchvision_state_dict(checkpoint)


def test_pooled_resnet_encoder_kind_reads_the_last_stage():
    from dynmm.nn.encoders import build_encoder
    from dynmm.nn.resnet import PooledResNet
    from dynmm.specs import ModalitySpec

    torch.manual_seed(0)
    encoder = build_encoder(ModalitySpec("rgb", (3, 64, 64), "image"), {"kind": "resnet", "layout": "tiny"}).eval()
    assert isinstance(encoder, PooledResNet) and encoder.out_dim == 128
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(encoder(x), encoder.resnet(x)[-1].mean(dim=(2, 3)))
    projected = build_encoder(
        ModalitySpec("d", (1, 32, 32), "image"), {"kind": "resnet", "layout": "tiny", "out_dim": 7}
    )
    assert projected(torch.randn(2, 1, 32, 32)).shape == (2, 7)
