import pytest
import torch

from dynmm.errors import ConfigError, InputError
from dynmm.nn.fusion_cells import (
    CELL_OPS,
    AddOp,
    ConcatProjOp,
    FusionCell,
    IdentityOp,
    SEAddOp,
    WeightedAddOp,
)

C = 8


def pair(b: int = 3, c: int = C, h: int = 5, w: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(b, c, h, w), torch.randn(b, c, h, w)


def test_registry_names_order_and_depth_needs():
    assert list(CELL_OPS) == ["identity", "add", "weighted_add", "concat_proj", "se_add"]
    assert {name: op.needs_depth for name, op in CELL_OPS.items()} == {
        "identity": False,
        "add": True,
        "weighted_add": True,
        "concat_proj": True,
        "se_add": True,
    }
    assert all(op.name == name for name, op in CELL_OPS.items())


@pytest.mark.parametrize("name", list(CELL_OPS))
def test_every_op_keeps_the_shape_and_gets_gradients(name):
    op = CELL_OPS[name](C)
    rgb, depth = pair()
    rgb.requires_grad_(True)
    depth.requires_grad_(True)
    out = op(rgb, depth)
    assert out.shape == rgb.shape
    (out * torch.randn_like(out)).sum().backward()  # not out.sum(): a BN output's mean is fixed
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    assert (depth.grad is not None) == op.needs_depth
    for pname, p in op.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_identity_returns_rgb_and_accepts_no_depth():
    rgb, depth = pair()
    op = IdentityOp(C)
    assert op(rgb, None) is rgb
    assert op(rgb) is rgb
    assert op(rgb, depth) is rgb


def test_add_and_weighted_add():
    rgb, depth = pair()
    torch.testing.assert_close(AddOp(C)(rgb, depth), rgb + depth)
    op = WeightedAddOp(C)
    assert op.weight.shape == () and op.weight.item() == 1.0  # starts as plain add
    torch.testing.assert_close(op(rgb, depth), rgb + depth)
    with torch.no_grad():
        op.weight.fill_(0.25)
    torch.testing.assert_close(op(rgb, depth), rgb + 0.25 * depth)


def test_concat_proj_is_1x1_conv_of_concatenation_then_batchnorm():
    op = ConcatProjOp(C).eval()
    with torch.no_grad():
        op.bn.running_mean.uniform_(-1, 1)
        op.bn.running_var.uniform_(0.5, 2)
        op.bn.weight.uniform_(0.5, 2)
        op.bn.bias.uniform_(-1, 1)
    rgb, depth = pair()
    w = op.proj.weight[:, :, 0, 0]  # (C, 2C): first C input channels read rgb, the next C read depth
    mixed = torch.einsum("oc,bchw->bohw", w[:, :C], rgb) + torch.einsum("oc,bchw->bohw", w[:, C:], depth)
    bn = op.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps))[None, :, None, None]
    expected = (mixed - bn.running_mean[None, :, None, None]) * scale + bn.bias[None, :, None, None]
    torch.testing.assert_close(op(rgb, depth), expected)


def test_se_add_by_hand():
    op = SEAddOp(64)
    assert op.squeeze.out_features == 4  # 64 // 16
    assert SEAddOp(C).squeeze.out_features == 4  # floor of 4 for narrow maps
    assert SEAddOp(256).squeeze.out_features == 16
    rgb, depth = pair(c=64)
    squeezed = depth.mean(dim=(2, 3))  # (B, C)
    hidden = torch.relu(squeezed @ op.squeeze.weight.T + op.squeeze.bias)
    weights = torch.sigmoid(hidden @ op.excite.weight.T + op.excite.bias)
    expected = rgb + depth * weights[:, :, None, None]
    torch.testing.assert_close(op(rgb, depth), expected)
    # attention is per sample: changing one sample's depth leaves the other samples' outputs unchanged
    other = depth.clone()
    other[0] = torch.randn_like(other[0])
    torch.testing.assert_close(op(rgb, other)[1:], expected[1:])


@pytest.mark.parametrize("name", [n for n, op in CELL_OPS.items() if op.needs_depth])
def test_ops_that_need_depth_reject_none(name):
    rgb, _ = pair()
    with pytest.raises(InputError, match=f"'{name}'.*needs a depth"):
        CELL_OPS[name](C)(rgb, None)


def test_cell_runs_the_chosen_op_for_the_whole_batch():
    cell = FusionCell(C)
    assert cell.op_names == list(CELL_OPS)
    assert cell.needs_depth == [False, True, True, True, True]
    rgb, depth = pair()
    for i, op in enumerate(cell.ops):
        torch.testing.assert_close(cell(rgb, depth, i), op(rgb, depth))
    assert cell(rgb, None, 0) is rgb


def test_cell_with_a_subset_of_ops_keeps_their_order():
    cell = FusionCell(C, ["se_add", "identity"])
    assert cell.op_names == ["se_add", "identity"]
    assert isinstance(cell.ops[0], SEAddOp) and isinstance(cell.ops[1], IdentityOp)
    assert cell.needs_depth == [True, False]


def test_cell_config_errors():
    with pytest.raises(ConfigError) as err:
        FusionCell(C, ["identity", "se-add"])
    msg = str(err.value)
    assert "'se-add'" in msg and "did you mean 'se_add'" in msg
    for name in CELL_OPS:
        assert name in msg
    with pytest.raises(ConfigError, match="at least one op"):
        FusionCell(C, [])
    with pytest.raises(ConfigError, match="distinct.*add"):
        FusionCell(C, ["add", "identity", "add"])


def test_cell_input_errors():
    cell = FusionCell(C)
    rgb, depth = pair()
    with pytest.raises(InputError, match=r"rgb \(3, 8, 5, 6\) and depth \(3, 8, 4, 6\)"):
        cell(rgb, depth[:, :, :4], 1)
    with pytest.raises(InputError, match=r"\(B, 8, H, W\), got \(3, 4, 5, 6\)"):
        cell(rgb[:, :4], depth[:, :4], 1)
    with pytest.raises(InputError, match="needs a depth"):
        cell(rgb, None, 4)
    with pytest.raises(InputError, match="op_index 5 is out of range"):
        cell(rgb, depth, 5)
    with pytest.raises(InputError, match="op_index -1"):
        cell(rgb, depth, -1)
