import torch

from dynmm.nn.fusion import build_fusion


def test_two_modalities_match_the_sigmoid_gmu():
    fusion = build_fusion("gmu", {"visual": 3, "text": 4}, 5).double()
    v, t = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    # Arevalo et al.: h_v = tanh(W_v x_v), h_t = tanh(W_t x_t), z = sigmoid(W_z [x_v; x_t]),
    # h = z * h_v + (1 - z) * h_t. A softmax over two logits is the sigmoid of their difference.
    h_t = torch.tanh(t @ fusion.hidden["text"].weight.T + fusion.hidden["text"].bias)
    h_v = torch.tanh(v @ fusion.hidden["visual"].weight.T + fusion.hidden["visual"].bias)
    w, b = fusion.gate.weight, fusion.gate.bias  # rows: 'text' block, then 'visual' block (sorted order)
    w_z, b_z = w[5:] - w[:5], b[5:] - b[:5]
    inputs = torch.cat([t, v], dim=1)  # columns in sorted order too
    z = torch.sigmoid(inputs @ w_z.T + b_z)
    expected = z * h_v + (1 - z) * h_t
    torch.testing.assert_close(fusion({"visual": v, "text": t}), expected)


def test_three_modalities_gates_are_a_per_feature_softmax():
    dims = {"c": 2, "a": 3, "b": 4}
    fusion = build_fusion("gmu", dims, 5).double()
    emb = {m: torch.randn(6, d, dtype=torch.float64) for m, d in dims.items()}
    logits = torch.cat([emb["a"], emb["b"], emb["c"]], dim=1) @ fusion.gate.weight.T + fusion.gate.bias
    e = torch.exp(logits)
    gates = [e[:, 5 * i : 5 * (i + 1)] / (e[:, :5] + e[:, 5:10] + e[:, 10:]) for i in range(3)]
    expected = sum(
        g * torch.tanh(emb[m] @ fusion.hidden[m].weight.T + fusion.hidden[m].bias)
        for g, m in zip(gates, "abc", strict=True)
    )
    torch.testing.assert_close(fusion(emb), expected)
    torch.testing.assert_close(fusion.gates(emb).sum(dim=1), torch.ones(6, 5, dtype=torch.float64))
