import numpy as np
import pytest
import torch

from dynmm.errors import ConfigError
from dynmm.methods.mfas.feature_cache import FeatureCache, LiveFeatures, cache_key


def test_cached_features_are_standardised_with_train_statistics(cache):
    rows = torch.arange(cache.size("train"))
    train = cache.features("train", rows, ["image.relu2", "audio.output"])
    for value in train.values():
        torch.testing.assert_close(value.mean(0), torch.zeros(value.shape[1]), atol=1e-5, rtol=0)
    assert cache.dims()["audio.output"] == 3


def test_live_features_equal_cached_ones(backbones, splits, cache):
    live = LiveFeatures(backbones, splits, cache.standardizers)
    rows = torch.tensor([3, 0, 7, 5])
    keys = ["image.relu1", "image.output", "audio.relu2"]
    cached, recomputed = cache.features("valid", rows, keys), live.features("valid", rows, keys)
    for key in keys:
        torch.testing.assert_close(recomputed[key], cached[key], rtol=0, atol=1e-6)
    torch.testing.assert_close(live.target("valid", rows), cache.target("valid", rows))


def test_memmap_cache_is_written_once_and_reused(backbones, splits, cache, tmp_path):
    folder = tmp_path / "cache"
    written = FeatureCache(backbones, splits, folder)
    assert not written.reused and (folder / "complete.json").is_file()
    again = FeatureCache(backbones, splits, folder)
    assert again.reused and isinstance(again.arrays["test"]["audio.relu1"], np.memmap)
    rows = torch.tensor([1, 4])
    for key in ("image.embedding", "audio.relu1"):
        torch.testing.assert_close(again.features("test", rows, [key])[key], cache.features("test", rows, [key])[key])


def test_half_written_cache_is_recomputed(backbones, splits, tmp_path):
    folder = tmp_path / "cache"
    FeatureCache(backbones, splits, folder)
    (folder / "complete.json").unlink()
    assert not FeatureCache(backbones, splits, folder).reused


def test_cache_key_follows_the_weights(backbones, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"weights-1")
    b.write_bytes(b"weights-2")
    key = cache_key(backbones, [a, b], {"data": 1})
    assert key == cache_key(backbones, [a, b], {"data": 1})
    b.write_bytes(b"weights-3")
    assert key != cache_key(backbones, [a, b], {"data": 1})
    assert key != cache_key(backbones, [a, a], {"data": 2})


def test_missing_split_is_refused(backbones, splits):
    with pytest.raises(ConfigError, match="missing \\['test'\\]"):
        FeatureCache(backbones, {k: v for k, v in splits.items() if k != "test"})
