import pytest
import torch

from dynmm.data.base import MultimodalDataset, collate
from dynmm.data.registry import BUNDLED, DATASETS, FORMATS, accepted_options, dataset_info, load_dataset
from dynmm.errors import ConfigError, DataError


def test_known_names() -> None:
    assert set(BUNDLED) == {"mosi", "avdigits", "avclips", "rgbd_synth"}
    assert set(FORMATS) == {"mmimdb", "affect", "avmnist", "nyuv2", "arrays"}
    assert set(DATASETS) == set(BUNDLED) | set(FORMATS)
    assert all("path" in accepted_options(name) for name in FORMATS)
    assert accepted_options("mosi") == ("split_column", "stats_split_column")
    assert {"seed", "train_size", "hard_image_fraction", "audio_snr_db"} <= set(accepted_options("avdigits"))
    assert {"seed", "train_size", "height", "hole_rate", "normalize"} <= set(accepted_options("rgbd_synth"))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'imdb'.*avdigits.*mosi"):
        load_dataset("imdb")
    with pytest.raises(ConfigError, match="known"):
        dataset_info("imdb")


def test_unknown_option_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"\['batch'\].*split_column"):
        load_dataset("mosi", batch=3)
    with pytest.raises(ConfigError, match=r"\['snr'\].*audio_snr_db"):
        dataset_info("avdigits", snr=3)


def test_load_and_info_agree() -> None:
    options = {"seed": 2, "train_size": 300, "valid_size": 50, "test_size": 60}
    for name, opts in (("mosi", {"split_column": "split_heldout"}), ("avdigits", options)):
        splits = load_dataset(name, **opts)
        info = dataset_info(name, **opts)
        assert info.name == name
        assert info.sizes == {k: len(v) for k, v in splits.items()}
        for key, spec in info.modalities.items():
            assert tuple(splits["train"].inputs[key].shape[1:]) == spec.shape


def test_collate_stacks_into_inputs_and_target() -> None:
    ds = MultimodalDataset({"a": torch.arange(12.0).view(6, 2), "b": torch.zeros(6, 3, 4)}, torch.arange(6))
    inputs, target = collate([ds[i] for i in (4, 1, 2)])
    assert set(inputs) == {"a", "b"} and inputs["b"].shape == (3, 3, 4)
    torch.testing.assert_close(inputs["a"], torch.tensor([[8.0, 9.0], [2.0, 3.0], [4.0, 5.0]]))
    torch.testing.assert_close(target, torch.tensor([4, 1, 2]))


def test_dataset_checks_row_counts_and_subsets() -> None:
    with pytest.raises(DataError, match="'b' has 5 rows but the target has 6"):
        MultimodalDataset({"a": torch.zeros(6, 2), "b": torch.zeros(5, 2)}, torch.zeros(6))
    ds = MultimodalDataset({"a": torch.arange(6.0)[:, None]}, torch.arange(6), flags={"f": torch.arange(6) > 3})
    sub = ds.subset([5, 0])
    assert sub.target.tolist() == [5, 0] and sub.flags["f"].tolist() == [True, False]
    assert sub.inputs["a"].dtype == torch.float32
