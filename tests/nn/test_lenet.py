"""The MFAS paper's LeNet backbones: block structure, widths and the pooled embedding."""

import pytest
import torch
from torch import nn

from dynmm.errors import ConfigError, InputError
from dynmm.nn.encoders import build_encoder
from dynmm.nn.lenet import LeNetEncoder
from dynmm.specs import ModalitySpec

IMAGE = ModalitySpec("image", (1, 28, 28), "image")


def _reference(encoder: LeNetEncoder, x: torch.Tensor) -> torch.Tensor:
    """conv-BN-ReLU, max pool between blocks, global average of the last ReLU: the authors' GP_LeNet."""
    out = x
    for i, block in enumerate(encoder.blocks):
        conv, bn, _ = block
        if i > 0:
            out = nn.functional.max_pool2d(out, 2)
        out = torch.relu(bn(conv(out)))
    return out.mean(dim=(2, 3))


@pytest.mark.parametrize(("layers", "widths"), [(3, [24, 48, 96]), (5, [24, 48, 96, 192, 384])])
def test_blocks_double_channels_and_embedding_is_the_pooled_last_block(layers, widths):
    torch.manual_seed(0)
    encoder = build_encoder(IMAGE, {"kind": "lenet", "channels": 24, "layers": layers}).eval()
    assert [block[0].out_channels for block in encoder.blocks] == widths
    assert [block[0].kernel_size for block in encoder.blocks] == [(5, 5)] + [(3, 3)] * (layers - 1)
    assert encoder.out_dim == widths[-1] and isinstance(encoder.proj, nn.Identity)
    assert sum(isinstance(m, nn.ReLU) for m in encoder.modules()) == layers  # one MFAS tap per block
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(encoder(x), _reference(encoder, x))


def test_other_out_dim_projects_and_bad_inputs_are_named():
    encoder = build_encoder(IMAGE, {"kind": "lenet", "channels": 4, "layers": 2, "out_dim": 10})
    assert encoder(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(InputError, match=r"expects \(batch, 1, H, W\)"):
        encoder(torch.randn(2, 3, 28, 28))
    with pytest.raises(ConfigError, match="6 LeNet blocks need height and width >= 32"):
        build_encoder(IMAGE, {"kind": "lenet", "layers": 6})
