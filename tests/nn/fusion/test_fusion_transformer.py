import math

import pytest
import torch

from dynmm.nn.fusion import build_fusion

DIMS = {"video": 2, "text": 4, "audio": 3}


def layer_norm(x, norm):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def encoder_layer(x, layer, nhead):
    """Post-norm encoder layer written out: multi-head self-attention, then a ReLU feed-forward block."""
    b, n, d = x.shape
    dh = d // nhead
    q, k, v = (x @ layer.self_attn.in_proj_weight.T + layer.self_attn.in_proj_bias).split(d, dim=-1)
    heads = []
    for h in range(nhead):
        cols = slice(h * dh, (h + 1) * dh)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(dh)
        heads.append(torch.softmax(scores, dim=-1) @ v[..., cols])
    out_proj = layer.self_attn.out_proj
    attn = torch.cat(heads, dim=-1) @ out_proj.weight.T + out_proj.bias
    x = layer_norm(x + attn, layer.norm1)
    ff = torch.relu(x @ layer.linear1.weight.T + layer.linear1.bias) @ layer.linear2.weight.T + layer.linear2.bias
    return layer_norm(x + ff, layer.norm2)


@pytest.mark.parametrize(("nhead", "num_layers"), [(2, 1), (4, 2)])
def test_matches_manual_attention(nhead, num_layers):
    fusion = build_fusion("transformer", DIMS, 3, d_model=8, nhead=nhead, num_layers=num_layers, dim_feedforward=16)
    fusion = fusion.double().eval()
    emb = {m: torch.randn(5, d, dtype=torch.float64) for m, d in DIMS.items()}
    tokens = [emb[m] @ fusion.proj[m].weight.T + fusion.proj[m].bias for m in ("audio", "text", "video")]
    x = torch.stack(tokens, dim=1) + fusion.modality_embed
    x = torch.cat([fusion.cls.expand(5, 1, 8), x], dim=1)
    for layer in fusion.encoder.layers:
        x = encoder_layer(x, layer, nhead)
    expected = x[:, 0] @ fusion.head.weight.T + fusion.head.bias
    torch.testing.assert_close(fusion(emb), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the inference fast path must agree too
        torch.testing.assert_close(fusion(emb), expected, rtol=1e-5, atol=1e-5)


def test_modality_embedding_distinguishes_tokens():
    # Same embedding for both modalities, but swapping their values changes the output.
    fusion = build_fusion("transformer", {"a": 3, "b": 3}, 2, d_model=8).eval()
    with torch.no_grad():
        fusion.proj["b"].load_state_dict(fusion.proj["a"].state_dict())
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    assert not torch.allclose(fusion({"a": x, "b": y}), fusion({"a": y, "b": x}), atol=1e-6)
