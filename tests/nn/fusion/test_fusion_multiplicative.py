import pytest
import torch

from dynmm.errors import ConfigError
from dynmm.nn.fusion import build_fusion

DIMS = {"video": 2, "text": 4, "audio": 3}


def embeddings(batch=5):
    return {m: torch.randn(batch, d, dtype=torch.float64) for m, d in DIMS.items()}


def reference(fusion, z, x):
    """f(x, z)_o = sum_ij z_i W_ijo x_j + sum_i z_i U_io + sum_j V_jo x_j + b_o, one output unit at a time."""
    out = torch.empty(z.shape[0], fusion.out_dim, dtype=z.dtype)
    for o in range(fusion.out_dim):
        bilinear = ((z @ fusion.W[:, :, o]) * x).sum(1)
        out[:, o] = bilinear + z @ fusion.U[:, o] + x @ fusion.V[:, o] + fusion.b[o]
    return out


def test_default_context_is_first_modality():
    fusion = build_fusion("mi", DIMS, 3).double()
    emb = embeddings()
    assert fusion.context == "audio" and fusion.others == ["text", "video"]
    assert fusion.W.shape == (3, 6, 3)
    x = torch.cat([emb["text"], emb["video"]], dim=1)
    torch.testing.assert_close(fusion(emb), reference(fusion, emb["audio"], x))


def test_chosen_context():
    fusion = build_fusion("mi", DIMS, 2, context="text").double()
    emb = embeddings()
    x = torch.cat([emb["audio"], emb["video"]], dim=1)
    torch.testing.assert_close(fusion(emb), reference(fusion, emb["text"], x))


def test_context_modulates_the_weights():
    # For fixed z, f is affine in x with weight V + z^T W: doubling x's contribution is linear.
    fusion = build_fusion("mi", {"a": 2, "b": 3}, 4).double()
    z, x = torch.randn(1, 2, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
    weight = fusion.V + torch.einsum("i,ijo->jo", z[0], fusion.W)
    bias = fusion.b + z[0] @ fusion.U
    torch.testing.assert_close(fusion({"a": z, "b": x})[0], x[0] @ weight + bias)


def test_bad_context_and_single_modality():
    with pytest.raises(
        ConfigError, match="context 'depth' is not one of the modalities \\['audio', 'text', 'video'\\]"
    ):
        build_fusion("mi", DIMS, 3, context="depth")
    with pytest.raises(ConfigError, match="at least two modalities"):
        build_fusion("mi", {"text": 4}, 3)
