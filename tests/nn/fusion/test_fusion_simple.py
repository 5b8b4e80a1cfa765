import pytest
import torch

from dynmm.errors import ConfigError
from dynmm.nn.fusion import build_fusion


def test_unimodal_is_a_linear_projection():
    fusion = build_fusion("unimodal", {"text": 4}, 3)
    z = torch.randn(5, 4)
    expected = z @ fusion.proj.weight.T + fusion.proj.bias
    torch.testing.assert_close(fusion({"text": z}), expected)


def test_unimodal_needs_exactly_one_modality():
    with pytest.raises(ConfigError, match="exactly one modality.*\\['audio', 'text'\\]"):
        build_fusion("unimodal", {"text": 4, "audio": 3}, 3)


def test_concat_orders_modalities_by_name():
    fusion = build_fusion("concat", {"text": 4, "audio": 3}, 2)
    text, audio = torch.randn(5, 4), torch.randn(5, 3)
    w, b = fusion.proj.weight, fusion.proj.bias
    assert w.shape == (2, 7)
    expected = audio @ w[:, :3].T + text @ w[:, 3:].T + b  # 'audio' < 'text'
    torch.testing.assert_close(fusion({"text": text, "audio": audio}), expected)
