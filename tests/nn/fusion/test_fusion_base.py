"""The contract every registered fusion keeps, checked on all of them at once."""

import pytest
import torch

from dynmm.errors import InputError
from dynmm.nn.fusion import FUSIONS, build_fusion

MULTI = sorted(n for n in FUSIONS if n != "unimodal")
DIMS2 = {"text": 4, "audio": 3}
DIMS3 = {"video": 2, "text": 4, "audio": 3}


def embeddings(dims: dict[str, int], batch: int = 5) -> dict[str, torch.Tensor]:
    return {m: torch.randn(batch, d) for m, d in dims.items()}


@pytest.mark.parametrize("name", MULTI)
@pytest.mark.parametrize("dims", [DIMS2, DIMS3], ids=["2mod", "3mod"])
def test_output_shape(name, dims):
    fusion = build_fusion(name, dims, 6)
    assert fusion.modalities == sorted(dims)
    assert fusion(embeddings(dims)).shape == (5, 6)


def test_unimodal_shape():
    assert build_fusion("unimodal", {"text": 4}, 6)(embeddings({"text": 4})).shape == (5, 6)


@pytest.mark.parametrize("name", MULTI)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    fusion = build_fusion(name, DIMS3, 6)
    out = fusion(embeddings(DIMS3))
    (out * torch.randn_like(out)).sum().backward()
    params = dict(fusion.named_parameters())
    assert params
    for pname, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", MULTI)
def test_key_order_and_extra_keys_do_not_matter(name):
    fusion = build_fusion(name, DIMS3, 6).eval()
    emb = embeddings(DIMS3)
    reordered = {m: emb[m] for m in reversed(sorted(emb))}
    reordered["depth"] = torch.randn(5, 9)
    torch.testing.assert_close(fusion(emb), fusion(reordered))


@pytest.mark.parametrize("name", MULTI)
def test_missing_modality_is_named(name):
    fusion = build_fusion(name, DIMS3, 6)
    emb = embeddings(DIMS3)
    del emb["video"]
    with pytest.raises(InputError, match="missing embedding for modality 'video'"):
        fusion(emb)


@pytest.mark.parametrize("name", MULTI)
def test_wrong_embedding_size_is_named(name):
    fusion = build_fusion(name, DIMS3, 6)
    emb = embeddings(DIMS3)
    emb["text"] = torch.randn(5, 5)
    with pytest.raises(InputError, match=r"modality 'text' must have shape \(batch, 4\), got \(5, 5\)"):
        fusion(emb)


def test_wrong_rank_and_batch_mismatch():
    fusion = build_fusion("concat", DIMS2, 6)
    with pytest.raises(InputError, match="'audio'.*got \\(5, 1, 3\\)"):
        fusion({"text": torch.randn(5, 4), "audio": torch.randn(5, 1, 3)})
    with pytest.raises(InputError, match="batch sizes differ: 'audio' has 5 rows, 'text' has 4"):
        fusion({"text": torch.randn(4, 4), "audio": torch.randn(5, 3)})
    with pytest.raises(InputError, match="'text'.*got list"):
        fusion({"text": [1.0] * 4, "audio": torch.randn(5, 3)})
