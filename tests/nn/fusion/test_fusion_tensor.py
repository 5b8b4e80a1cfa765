import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from dynmm.nn.fusion import build_fusion

DIMS = {"video": 2, "text": 4, "audio": 3}


def embeddings(dims, batch=5):
    return {m: torch.randn(batch, d, dtype=torch.float64) for m, d in dims.items()}


def kron_of_appended(emb, row):
    """[a;1] ⊗ [t;1] ⊗ [v;1] for one sample, modalities in sorted order, with numpy."""
    vec = np.ones(1)
    for m in sorted(emb):
        vec = np.kron(vec, np.append(emb[m][row].numpy(), 1.0))
    return vec


def test_tfn_matches_kron_of_appended_vectors():
    fusion = build_fusion("tfn", DIMS, 3).double()
    emb = embeddings(DIMS)
    w, b = fusion.proj.weight.detach().numpy(), fusion.proj.bias.detach().numpy()
    assert w.shape == (3, 3 * 5 * 4)
    expected = np.stack([w @ kron_of_appended(emb, i) + b for i in range(5)])
    np.testing.assert_allclose(fusion(emb).detach().numpy(), expected, atol=1e-10)


def test_tfn_keeps_unimodal_terms():
    # The appended 1s put every raw feature in the product: the last entries are [z_video; 1] alone.
    fusion = build_fusion("tfn", {"audio": 2, "video": 3}, 1).double()
    emb = embeddings({"audio": 2, "video": 3})
    t = fusion.outer_product(emb)
    torch.testing.assert_close(t[:, -4:-1], emb["video"])
    torch.testing.assert_close(t[:, [3, 7]], emb["audio"])
    assert torch.all(t[:, -1] == 1)


def test_tfn_outer_product_is_counted_by_flop_counter():
    fusion = build_fusion("tfn", {"audio": 2, "video": 3}, 1)
    emb = {"audio": torch.randn(1, 2), "video": torch.randn(1, 3)}
    with FlopCounterMode(display=False) as counter:
        fusion(emb)
    linear_only = 2 * 12 * 1
    assert counter.get_total_flops() == linear_only + 2 * 3 * 4


def full_weight_from_factors(fusion):
    """Rebuild the TFN weight tensor (prod(d_m + 1), out) as sum_r w_r * outer product of factor slices."""
    total = 0
    for r in range(fusion.rank):
        t = None
        for m in fusion.modalities:
            f = fusion.factors[m][r]  # (d_m + 1, out)
            t = f if t is None else (t[:, None, :] * f[None, :, :]).reshape(-1, f.shape[1])
        total = total + fusion.fusion_weights[0, r] * t
    return total


def test_lmf_is_a_tfn_with_a_low_rank_weight():
    lmf = build_fusion("lmf", DIMS, 3, rank=5).double()
    emb = embeddings(DIMS)
    weight = full_weight_from_factors(lmf)
    assert weight.shape == (3 * 5 * 4, 3)
    tfn = build_fusion("tfn", DIMS, 3).double()
    with torch.no_grad():
        tfn.proj.weight.copy_(weight.T)
        tfn.proj.bias.copy_(lmf.bias[0])
    torch.testing.assert_close(lmf(emb), tfn(emb), rtol=1e-10, atol=1e-10)
    kron = torch.from_numpy(np.stack([kron_of_appended(emb, i) for i in range(5)]))
    torch.testing.assert_close(lmf(emb), kron @ weight + lmf.bias, rtol=1e-10, atol=1e-10)


def test_lmf_factors_are_registered_parameters():
    lmf = build_fusion("lmf", DIMS, 3, rank=2)
    names = dict(lmf.named_parameters())
    assert set(names) == {"factors.audio", "factors.text", "factors.video", "fusion_weights", "bias"}
    assert names["factors.text"].shape == (2, 5, 3)
    assert sum(p.numel() for p in lmf.parameters()) == 2 * (4 + 5 + 3) * 3 + 2 + 3
    assert "factors.audio" in lmf.state_dict()
