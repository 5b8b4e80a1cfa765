import numpy as np
import pytest
import torch

from dynmm.data.avdigits import AVDigitsOptions, avdigits_info, load_avdigits, pair_recordings
from dynmm.data.paths import data_root
from dynmm.errors import ConfigError

SMALL = {"train_size": 500, "valid_size": 200, "test_size": 300}


@pytest.fixture(scope="module")
def fsdd() -> dict:
    with np.load(data_root() / "fsdd" / "fsdd.npz") as npz:
        return {k: npz[k] for k in ("digit", "index")}


@pytest.fixture(scope="module")
def mnist_labels() -> dict:
    with np.load(data_root() / "mnist" / "mnist_subset.npz") as npz:
        return {"train": npz["y_train"], "test": npz["y_test"]}


@pytest.fixture(scope="module")
def small() -> dict:
    return load_avdigits(0, **SMALL)


def test_shapes_sizes_and_dtypes(small: dict) -> None:
    assert {k: len(v) for k, v in small.items()} == {"train": 500, "valid": 200, "test": 300}
    for ds in small.values():
        assert ds.inputs["image"].shape[1:] == (1, 28, 28)
        assert ds.inputs["audio"].shape[1:] == (1, 40, 101)
        assert ds.target.dtype == torch.int64 and set(ds.target.unique().tolist()) == set(range(10))
        assert ds.inputs["image"].min() >= 0 and ds.inputs["image"].max() <= 1
        assert all(torch.isfinite(x).all() for x in ds.inputs.values())
    inputs, target = small["train"][0]
    assert set(inputs) == {"image", "audio"} and inputs["image"].shape == (1, 28, 28) and target.shape == ()
    info = avdigits_info(**SMALL)
    assert info.sizes == {"train": 500, "valid": 200, "test": 300}
    assert {k: s.shape for k, s in info.modalities.items()} == {"image": (1, 28, 28), "audio": (1, 40, 101)}
    assert info.task.num_classes == 10


def test_audio_is_standardised_per_mel_bin_with_train_statistics(small: dict) -> None:
    audio = small["train"].inputs["audio"]
    torch.testing.assert_close(audio.mean(dim=(0, 1, 3)), torch.zeros(40), atol=1e-4, rtol=0)
    torch.testing.assert_close(audio.std(dim=(0, 1, 3)), torch.ones(40), atol=1e-3, rtol=0)


def test_paired_recordings_say_the_image_digit(small: dict, fsdd: dict, mnist_labels: dict) -> None:
    for split, ds in small.items():
        pool = "test" if split == "test" else "train"
        rec = ds.meta["fsdd_index"].numpy()
        assert (fsdd["digit"][rec] == ds.target.numpy()).all()
        assert (mnist_labels[pool][ds.meta["mnist_index"].numpy()] == ds.target.numpy()).all()
        if split == "test":
            assert fsdd["index"][rec].max() <= 4
        else:
            assert fsdd["index"][rec].min() >= 5


def test_pairing_rule_is_the_bundle_rule(fsdd: dict, mnist_labels: dict) -> None:
    labels = mnist_labels["train"]
    pairs = pair_recordings(labels, fsdd["digit"], fsdd["index"], "train", seed=3)
    # digit 0 is shuffled first: its pool order is the first permutation drawn from default_rng(seed)
    pool0 = np.flatnonzero((fsdd["index"] >= 5) & (fsdd["digit"] == 0))
    expected0 = pool0[np.random.default_rng(3).permutation(len(pool0))]
    zeros = pairs[labels == 0]
    assert len(pool0) == 270
    np.testing.assert_array_equal(zeros[:270], expected0)
    np.testing.assert_array_equal(zeros[270:540], expected0)  # reused cyclically in file order
    for digit in range(10):
        first = pairs[labels == digit][:270]
        assert len(set(first.tolist())) == 270  # each eligible recording once before any repeats
    test_pairs = pair_recordings(mnist_labels["test"], fsdd["digit"], fsdd["index"], "test", seed=3)
    assert len(np.unique(test_pairs)) == 300 and fsdd["index"][test_pairs].max() <= 4


def test_same_seed_same_data_other_seed_other_pairing(small: dict) -> None:
    again = load_avdigits(0, **SMALL)
    other = load_avdigits(1, **SMALL)
    for split in small:
        for key in ("image", "audio"):
            assert torch.equal(small[split].inputs[key], again[split].inputs[key])
        assert torch.equal(small[split].target, again[split].target)
        for key in ("image_hard", "audio_noisy"):
            assert torch.equal(small[split].flags[key], again[split].flags[key])
    # the full test set keeps its rows for every seed, so the pairing itself must differ
    clean = {"train_size": 100, "valid_size": 10, "hard_image_fraction": 0.0, "noisy_audio_fraction": 0.0}
    a, b = load_avdigits(0, **clean), load_avdigits(1, **clean)
    assert torch.equal(a["test"].meta["mnist_index"], b["test"].meta["mnist_index"])
    assert (a["test"].meta["fsdd_index"] != b["test"].meta["fsdd_index"]).float().mean() > 0.9
    assert not torch.equal(small["train"].meta["mnist_index"], other["train"].meta["mnist_index"])


def test_valid_is_fixed_and_disjoint_from_train(small: dict) -> None:
    bigger = load_avdigits(0, train_size=800, valid_size=200, test_size=10, noisy_audio_fraction=0.0)
    train, valid = set(small["train"].meta["mnist_index"].tolist()), set(small["valid"].meta["mnist_index"].tolist())
    assert not train & valid
    assert torch.equal(bigger["valid"].meta["mnist_index"], small["valid"].meta["mnist_index"])
    assert train <= set(bigger["train"].meta["mnist_index"].tolist())


def test_corruption_fractions_and_independence() -> None:
    data = load_avdigits(0, train_size=1000, valid_size=100, test_size=400, hard_image_fraction=0.3)
    for ds in data.values():
        n = len(ds)
        assert int(ds.flags["image_hard"].sum()) == round(0.3 * n)
        assert int(ds.flags["audio_noisy"].sum()) == round(0.5 * n)
    both = (data["train"].flags["image_hard"] & data["train"].flags["audio_noisy"]).float().mean()
    assert 0.15 - 0.04 < float(both) < 0.15 + 0.04


def test_hard_images_are_degraded_and_easy_ones_untouched(small: dict) -> None:
    with np.load(data_root() / "mnist" / "mnist_subset.npz") as npz:
        x_train = npz["x_train"]
    ds = small["train"]
    original = torch.from_numpy(x_train[ds.meta["mnist_index"].numpy()].astype(np.float32) / 255.0).unsqueeze(1)
    hard = ds.flags["image_hard"]
    assert torch.equal(ds.inputs["image"][~hard], original[~hard])
    error = (ds.inputs["image"][hard] - original[hard]).square().mean(dim=(1, 2, 3))
    assert (error > 0.02).all()


def test_noisy_audio_differs_and_clean_audio_is_shared(small: dict) -> None:
    ds = small["train"]
    rec, noisy, audio = ds.meta["fsdd_index"], ds.flags["audio_noisy"], ds.inputs["audio"]
    checked_clean = checked_noisy = 0
    for r in rec.unique().tolist():
        rows = torch.nonzero(rec == r).flatten()
        clean_rows, noisy_rows = rows[~noisy[rows]], rows[noisy[rows]]
        if len(clean_rows) >= 2:
            assert torch.equal(audio[clean_rows[0]], audio[clean_rows[1]])
            checked_clean += 1
        if len(noisy_rows) >= 1 and len(clean_rows) >= 1:
            assert (audio[noisy_rows[0]] - audio[clean_rows[0]]).abs().mean() > 0.3
            checked_noisy += 1
    assert checked_clean > 0 and checked_noisy > 0
    # white noise fills the padding after the speech, where clean clips are silent
    tail = audio[..., -10:].mean(dim=(1, 2, 3))
    assert tail[noisy].min() > tail[~noisy].max()


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="colour"):
        load_avdigits(colour=True)
    with pytest.raises(ConfigError, match="exceeds"):
        load_avdigits(train_size=19_000, valid_size=2_000)
    with pytest.raises(ConfigError, match="hard_image_fraction"):
        AVDigitsOptions(hard_image_fraction=1.5)
    with pytest.raises(ConfigError, match="train_size must be int"):
        AVDigitsOptions(train_size="100")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed"):
        load_avdigits(seed=0.5)  # type: ignore[arg-type]
    assert AVDigitsOptions(audio_snr_db=-5).audio_snr_db == -5.0
