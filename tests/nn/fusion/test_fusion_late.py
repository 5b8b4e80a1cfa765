import torch

from dynmm.nn.fusion import build_fusion

DIMS = {"video": 2, "text": 4, "audio": 3}


def head_outputs(fusion, emb):
    return {m: emb[m] @ fusion.heads[m].weight.T + fusion.heads[m].bias for m in DIMS}


def test_late_mean_averages_per_modality_predictions():
    fusion = build_fusion("late_mean", DIMS, 3)
    emb = {m: torch.randn(5, d) for m, d in DIMS.items()}
    preds = head_outputs(fusion, emb)
    expected = (preds["audio"] + preds["text"] + preds["video"]) / 3
    torch.testing.assert_close(fusion(emb), expected)


def test_late_weighted_is_a_softmax_weighted_sum():
    fusion = build_fusion("late_weighted", DIMS, 3)
    emb = {m: torch.randn(5, d) for m, d in DIMS.items()}
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.5, -1.0, 2.0]))  # audio, text, video
    preds = head_outputs(fusion, emb)
    e = torch.exp(torch.tensor([0.5, -1.0, 2.0]))
    w = e / e.sum()
    expected = w[0] * preds["audio"] + w[1] * preds["text"] + w[2] * preds["video"]
    torch.testing.assert_close(fusion(emb), expected)
    torch.testing.assert_close(fusion.weights().sum(), torch.tensor(1.0))


def test_late_weighted_starts_as_the_mean():
    weighted = build_fusion("late_weighted", DIMS, 3)
    mean = build_fusion("late_mean", DIMS, 3)
    mean.load_state_dict({k: v for k, v in weighted.state_dict().items() if k != "logits"})
    emb = {m: torch.randn(5, d) for m, d in DIMS.items()}
    assert torch.equal(weighted.logits, torch.zeros(3))
    torch.testing.assert_close(weighted(emb), mean(emb))
