"""AdaMML evaluation against hand-computed references: keep rates per flag and segment, fallback count,
realized MAdds, baselines' costs, and policy modes restored after a baseline."""

import pytest
import torch

from dynmm.data.base import MultimodalDataset
from dynmm.methods.adamml.evaluate import baselines, collect, evaluate_adamml, policy_mode
from dynmm.methods.adamml.model import AdaMML
from dynmm.methods.adamml.policy import KEEP
from dynmm.specs import ModalitySpec, TaskSpec

T, N = 4, 20
SPECS = {
    "image": ModalitySpec("image", (T, 1, 8, 8), "image"),
    "audio": ModalitySpec("audio", (T, 1, 8, 10), "image"),
}
TASK = TaskSpec("classification", 3)


def model() -> AdaMML:
    torch.manual_seed(0)
    encoders = {"default": {"kind": "cnn", "channels": [4], "out_dim": 8}}
    policy = {"feature_dim": 4, "hidden": 8, "widths": [4], "strides": [1]}
    return AdaMML(SPECS, TASK.num_classes, encoders=encoders, policy=policy).eval()


def data() -> MultimodalDataset:
    g = torch.Generator().manual_seed(1)
    inputs = {m: torch.randn(N, *s.shape, generator=g) for m, s in SPECS.items()}
    flags = {"image_bad": torch.rand(N, T, generator=g) < 0.4, "odd_clip": torch.arange(N) % 2 == 1}
    return MultimodalDataset(inputs, torch.randint(0, TASK.num_classes, (N,), generator=g), flags)


SKIP_ALWAYS = torch.tensor([50.0, -50.0]) if KEEP == 1 else torch.tensor([-50.0, 50.0])


def scripted_logits(keep: torch.Tensor) -> torch.Tensor:
    """(B, T, 2) policy logits whose argmax is `keep`."""
    logits = torch.stack([~keep, keep], dim=-1).float()
    return logits if KEEP == 1 else logits.flip(-1)


def test_keep_rates_fallback_and_madds_match_a_direct_count():
    net, clips = model(), data()
    decided = clips.inputs["image"].mean(dim=(2, 3, 4)) > 0.1  # keeps ~20 % of image segments, never audio
    net.policy.forward = (
        lambda inputs: {  # a scripted policy: known decisions, through the real bookkeeping
            "image": scripted_logits(inputs["image"].mean(dim=(2, 3, 4)) > 0.1),
            "audio": scripted_logits(torch.zeros(inputs["audio"].shape[:2], dtype=torch.bool)),
        }
    )
    empty = decided.sum(dim=1) == 0
    image = decided.clone()
    image[:, 0] |= empty  # the fallback modality is the cheaper image net
    assert net.fallback == "image" and 0 < int(empty.sum()) < N and 0 < int(decided.sum()) < N * T

    results = evaluate_adamml(net, clips, TASK, batch_size=6)
    flag = clips.flags["image_bad"]
    assert results["fallback_clips"] == int(empty.sum())
    assert results["keep_rate"] == {"audio": 0.0, "image": pytest.approx(image.float().mean().item())}
    assert results["keep_rate_uninformative"]["image"] == pytest.approx(image[flag].float().mean().item())
    assert results["keep_rate_informative"]["image"] == pytest.approx(image[~flag].float().mean().item())
    assert results["keep_rate_per_segment"]["image"] == pytest.approx(image.float().mean(dim=0).tolist())
    assert results["keep_by_flag"]["image_bad"]["image"]["flagged"] == {
        "kept": int(image[flag].sum()),
        "segments": int(flag.sum()),
        "rate": pytest.approx(image[flag].float().mean().item()),
    }
    assert "odd_clip" not in results["keep_by_flag"]  # a flag per clip says nothing about segments
    madds = net.costs["policy"] + image.sum(dim=1).double() * net.costs["nets"]["image"] + net.costs["fusion"]
    assert results["madds_per_clip"] == pytest.approx(madds.mean().item())
    assert results["madds_fraction"] == pytest.approx(results["madds_per_clip"] / net.full_madds())
    record = collect(net, clips, batch_size=7)
    assert record.logits.shape == (N, TASK.num_classes) and record.keep["image"].equal(image)


def test_fallback_counts_clips_whose_policy_kept_nothing():
    net, clips = model(), data()
    with torch.no_grad():
        for head in net.policy.heads.values():
            head.bias.copy_(SKIP_ALWAYS)
    results = evaluate_adamml(net, clips, TASK)
    assert results["fallback_clips"] == N
    assert results["keep_rate"][net.fallback] == pytest.approx(1 / T) and results["keep_rate_per_segment"][
        net.fallback
    ] == [1.0] + [0.0] * (T - 1)
    with policy_mode(net, "all"):
        assert evaluate_adamml(net, clips, TASK)["fallback_clips"] is None  # no policy ran


def test_baselines_costs_and_modes_restored():
    net, clips = model(), data()
    warm = {k: v.clone() for k, v in net.state_dict().items()}
    net.set_policy_mode("learned", keep_rate=0.3)
    out = baselines(net, {"warmup": warm}, clips, TASK, {"image": 0.5, "audio": 0.25}, seeds=(0, 1))
    assert net.policy_mode == "learned" and net.keep_rate == {"audio": 0.3, "image": 0.3}
    full = net.full_madds()
    assert out["late_fusion"]["madds_per_clip"] == out["final_all"]["madds_per_clip"] == pytest.approx(full)
    assert out["late_fusion"]["accuracy"] == out["final_all"]["accuracy"]  # the same weights here
    assert out["image_alone"]["madds_per_clip"] == pytest.approx(T * net.costs["nets"]["image"] + net.costs["fusion"])
    random = out["random_policy"]
    assert random["seeds"] == [0, 1] and random["accuracy_std"] >= 0
    assert random["madds_per_clip"] < full  # keeps about 0.5 and 0.25 of the segments, no policy
