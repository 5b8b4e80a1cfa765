import numpy as np
import pytest
import torch

from dynmm.data.mosi import load_mosi, mosi_info
from dynmm.data.paths import ENV_VAR, data_root
from dynmm.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def mosi() -> dict:
    return load_mosi()


def test_split_sizes_and_shapes(mosi: dict) -> None:
    assert {k: len(v) for k, v in mosi.items()} == {"train": 1245, "valid": 202, "test": 752}
    for ds in mosi.values():
        assert {k: tuple(v.shape[1:]) for k, v in ds.inputs.items()} == {
            "text": (100,),
            "audio": (73,),
            "video": (100,),
        }
        assert all(v.dtype == torch.float32 for v in ds.inputs.values())
        assert ds.target.dtype == torch.float32 and ds.target.shape == (len(ds),)
        assert ds.target.min() >= -3 and ds.target.max() <= 3
    inputs, target = mosi["test"][3]
    assert set(inputs) == {"text", "audio", "video"} and target.shape == ()


def test_train_is_z_scored_with_train_statistics(mosi: dict) -> None:
    for key, x in mosi["train"].inputs.items():
        assert x.mean(0).abs().max() < 1e-4, key
        std = x.std(0, unbiased=False)
        varying = std > 1e-3  # some video features are constant (zero) on train
        assert varying.sum() >= 60, key
        torch.testing.assert_close(std[varying], torch.ones(int(varying.sum())), atol=1e-3, rtol=0)
    # test rows are transformed with the train statistics, not their own (caveat: their scale differs)
    raw = np.load(data_root() / "mosi" / "mosi_utterance.npz")
    train = raw["split"] == "train"
    mean, std = raw["audio"][train].mean(0), raw["audio"][train].std(0)
    expected = (raw["audio"][raw["split"] == "test"] - mean) / std
    np.testing.assert_allclose(mosi["test"].inputs["audio"].numpy(), expected, rtol=1e-4, atol=1e-4)
    assert mosi["test"].inputs["text"].mean(0).abs().max() > 0.1


@pytest.mark.parametrize("column", ["split", "split_heldout"])
def test_features_constant_on_train_do_not_blow_up(column: str) -> None:
    # split_heldout video has features that are zero on train but not on valid/test
    for ds in load_mosi(column).values():
        for key, x in ds.inputs.items():
            assert torch.isfinite(x).all() and x.abs().max() < 100, (column, key)


def test_heldout_split() -> None:
    held = load_mosi("split_heldout")
    assert {k: len(v) for k, v in held.items()} == {"train": 481, "valid": 97, "test": 174}
    for x in held["train"].inputs.values():
        assert x.mean(0).abs().max() < 1e-4
    assert mosi_info("split_heldout").sizes == {"train": 481, "valid": 97, "test": 174}


def test_info_matches_loaded_data(mosi: dict) -> None:
    info = mosi_info()
    assert info.sizes == {k: len(v) for k, v in mosi.items()}
    assert {k: s.shape for k, s in info.modalities.items()} == {"text": (100,), "audio": (73,), "video": (100,)}
    assert info.task.kind == "regression" and info.task.output_dim == 1


def test_unknown_split_column() -> None:
    with pytest.raises(ConfigError, match="split_column"):
        load_mosi("origin_split")


def test_missing_file_names_the_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path / "mosi" / "mosi_utterance.npz")):
        load_mosi()


def test_missing_folder_names_the_env_var(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=ENV_VAR):
        data_root()
