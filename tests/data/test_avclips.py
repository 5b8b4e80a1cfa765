import math

import numpy as np
import pytest
import torch

from dynmm.data.avclips import AVClipsOptions, avclips_info, load_avclips
from dynmm.data.paths import data_root
from dynmm.data.registry import DATASETS, accepted_options, dataset_info, load_dataset
from dynmm.errors import ConfigError

SMALL = {"train_size": 120, "valid_size": 40, "test_size": 60}
TINY = {"train_size": 10, "valid_size": 10, "test_size": 10}
CLEAN = {**SMALL, "image_noise_std": 0.0, "audio_snr_db": math.inf}
"""No pixel noise and no audio noise floor: uninformative segments can be checked exactly."""


@pytest.fixture(scope="module")
def fsdd() -> dict:
    with np.load(data_root() / "fsdd" / "fsdd.npz") as npz:
        return {k: npz[k] for k in ("digit", "index")}


@pytest.fixture(scope="module")
def mnist() -> dict:
    with np.load(data_root() / "mnist" / "mnist_subset.npz") as npz:
        return {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}


@pytest.fixture(scope="module")
def small() -> dict:
    return load_avclips(0, **SMALL)


@pytest.fixture(scope="module")
def clean() -> dict:
    return load_avclips(0, **CLEAN)


def _source_images(ds, split: str, mnist: dict) -> np.ndarray:
    pool = "test" if split == "test" else "train"
    return mnist[f"x_{pool}"][ds.meta["mnist_index"].numpy()].astype(np.float32) / 255.0


def test_shapes_sizes_and_dtypes(small: dict) -> None:
    assert {k: len(v) for k, v in small.items()} == {"train": 120, "valid": 40, "test": 60}
    for ds in small.values():
        n = len(ds)
        assert ds.inputs["image"].shape == (n, 8, 1, 28, 28) and ds.inputs["image"].dtype == torch.float32
        assert ds.inputs["audio"].shape == (n, 8, 1, 40, 26) and ds.inputs["audio"].dtype == torch.float32
        assert ds.target.dtype == torch.int64
        assert torch.bincount(ds.target, minlength=10).tolist() == [n // 10] * 10  # balanced digits
        assert ds.inputs["image"].min() >= 0 and ds.inputs["image"].max() <= 1
        assert all(torch.isfinite(x).all() for x in ds.inputs.values())
        assert all(f.shape == (n, 8) and f.dtype == torch.bool for f in ds.flags.values())
        assert all(m.shape == (n, 8) and m.dtype == torch.int64 for m in ds.meta.values())
    inputs, target = small["train"][0]
    assert inputs["image"].shape == (8, 1, 28, 28) and inputs["audio"].shape == (8, 1, 40, 26) and target.shape == ()
    info = avclips_info(**SMALL)
    assert info.name == "avclips" and info.sizes == {"train": 120, "valid": 40, "test": 60}
    assert {k: s.shape for k, s in info.modalities.items()} == {"image": (8, 1, 28, 28), "audio": (8, 1, 40, 26)}
    assert info.task.kind == "classification" and info.task.num_classes == 10
    custom = avclips_info(segments=3, n_mels=32, clip_samples=8000)
    assert custom.modalities["audio"].shape == (3, 1, 32, 51) and custom.modalities["image"].shape == (3, 1, 28, 28)


def test_audio_is_standardised_per_mel_bin_with_train_statistics(small: dict) -> None:
    audio = small["train"].inputs["audio"]
    torch.testing.assert_close(audio.mean(dim=(0, 1, 2, 4)), torch.zeros(40), atol=1e-4, rtol=0)
    torch.testing.assert_close(audio.std(dim=(0, 1, 2, 4)), torch.ones(40), atol=1e-3, rtol=0)


def test_every_segment_shows_and_says_the_clip_digit(small: dict, mnist: dict, fsdd: dict) -> None:
    for split, ds in small.items():
        pool = "test" if split == "test" else "train"
        digit = ds.target.numpy()[:, None]
        assert (mnist[f"y_{pool}"][ds.meta["mnist_index"].numpy()] == digit).all()
        assert (fsdd["digit"][ds.meta["fsdd_index"].numpy()] == digit).all()
        for key in ("mnist_index", "fsdd_index"):  # a different image and recording in every segment of a clip
            assert all(len(set(row)) == 8 for row in ds.meta[key].tolist())


def test_splits_use_their_own_pools(small: dict, fsdd: dict) -> None:
    index = {split: fsdd["index"][ds.meta["fsdd_index"].numpy()] for split, ds in small.items()}
    assert index["test"].max() <= 4
    assert index["valid"].min() >= 5 and index["valid"].max() <= 9
    assert index["train"].min() >= 10
    train_rows = set(small["train"].meta["mnist_index"].flatten().tolist())
    valid_rows = set(small["valid"].meta["mnist_index"].flatten().tolist())
    assert not train_rows & valid_rows


def test_images_are_the_sources_except_blank_and_occluded_segments(clean: dict, mnist: dict) -> None:
    for split, ds in clean.items():
        source = _source_images(ds, split, mnist)
        image = ds.inputs["image"][:, :, 0].numpy()
        bad, blank, occluded = (ds.flags[k].numpy() for k in ("image_bad", "image_blank", "image_occluded"))
        assert (bad == (blank | occluded)).all() and not (blank & occluded).any()
        assert blank.any() and occluded.any()
        np.testing.assert_array_equal(image[~bad], source[~bad])  # also: test clips use the MNIST test images
        assert (image[blank] == 0).all()
        coverage = []
        for shown, original in zip(image[occluded], source[occluded], strict=True):
            r, c = np.nonzero(shown != original)
            box = np.zeros((28, 28), bool)
            box[r.min() : r.max() + 1, c.min() : c.max() + 1] = True
            assert np.ptp(shown[box]) == 0 and 0.5 <= shown[box][0] <= 1.0  # one grey square
            assert box.sum() >= 20 * 20 - 28  # at least 20x20, less a few pixels that had the grey level
            coverage.append(original[box].sum() / original.sum())
        assert min(coverage) > 0.7 and np.mean(coverage) > 0.95  # most of the digit's ink


def test_pixel_noise_everywhere_but_no_digit_in_blank_images(small: dict, mnist: dict) -> None:
    ds = small["train"]
    source = _source_images(ds, "train", mnist)
    image = ds.inputs["image"][:, :, 0].numpy()
    good, blank = ~ds.flags["image_bad"].numpy(), ds.flags["image_blank"].numpy()
    error = image[good] - source[good]
    assert 0.02 < np.abs(error).mean() < 0.1  # noise std 0.1, clipped to [0, 1]
    assert image[blank].mean() < 0.05 and image[blank].max() > 0  # noise only: no zero images, no digit
    assert (image[good].mean(axis=(1, 2)) > image[blank].mean(axis=(1, 2)).max()).mean() > 0.9


def test_uninformative_audio_replaces_the_speech(clean: dict) -> None:
    ds = clean["train"]
    audio, rec = ds.inputs["audio"][:, :, 0], ds.meta["fsdd_index"]
    bad, silent, noise = ds.flags["audio_bad"], ds.flags["audio_silent"], ds.flags["audio_noise"]
    assert torch.equal(bad, silent | noise) and not (silent & noise).any() and silent.any() and noise.any()
    silence = audio[silent]
    assert (silence == silence[0]).all()  # digital silence is one constant spectrogram
    assert (audio[~silent] != silence[0]).any(dim=(1, 2)).all()
    checked_clean = checked_noise = 0
    for r in rec[noise].unique().tolist():
        clean_segments = audio[(rec == r) & ~bad]
        if len(clean_segments) >= 2:
            assert torch.equal(clean_segments[0], clean_segments[1])  # the same recording, no noise floor
            checked_clean += 1
        if len(clean_segments) >= 1:
            for noisy in audio[(rec == r) & noise]:
                assert (noisy - clean_segments[0]).abs().mean() > 0.3
                checked_noise += 1
    assert checked_clean > 0 and checked_noise > 0
    # white noise fills the whole clip, also after the speech, where clean clips of short recordings are silent
    tail = audio[..., -3:].mean(dim=(-1, -2))
    assert tail[noise].min() > silence[0, :, -3:].mean()


def test_noise_floor_under_every_segment(small: dict) -> None:
    ds = small["train"]
    audio, rec, bad = ds.inputs["audio"][:, :, 0], ds.meta["fsdd_index"], ds.flags["audio_bad"]
    silence = audio[ds.flags["audio_silent"]]
    assert (silence[1:] != silence[0]).any(dim=(1, 2)).all()  # fresh floor noise, not one constant
    r = next(r for r in rec.unique().tolist() if int(((rec == r) & ~bad).sum()) >= 2)
    pair = audio[(rec == r) & ~bad][:2]
    assert 0 < (pair[0] - pair[1]).abs().mean() < 0.3  # same recording, different floor noise


def test_at_most_one_uninformative_modality_per_segment(small: dict) -> None:
    flags = {k: torch.cat([ds.flags[k].flatten() for ds in small.values()]) for k in ("image_bad", "audio_bad")}
    assert not (flags["image_bad"] & flags["audio_bad"]).any()
    for key in flags:  # still the configured probabilities (0.35 each; 1,760 segments)
        assert abs(flags[key].float().mean().item() - 0.35) < 0.05
    both = load_avclips(0, **SMALL, bad_image_prob=0.5, bad_audio_prob=0.5, allow_both_bad=True)["train"].flags
    rate = {k: both[k].float().mean().item() for k in ("image_bad", "audio_bad")}
    assert abs(rate["image_bad"] - 0.5) < 0.06 and abs(rate["audio_bad"] - 0.5) < 0.06
    assert abs((both["image_bad"] & both["audio_bad"]).float().mean().item() - 0.25) < 0.06
    only_images = load_avclips(0, **TINY, bad_image_prob=1.0, bad_audio_prob=0.0)["test"].flags
    assert only_images["image_bad"].all() and not only_images["audio_bad"].any()
    none = load_avclips(0, **TINY, bad_image_prob=0.0, bad_audio_prob=0.0)["valid"].flags
    assert not any(flag.any() for flag in none.values())


def test_degraded_clips_lose_one_modality_for_long_stretches(small: dict) -> None:
    options = {**SMALL, "degraded_clip_fraction": 0.5, "degraded_bad_prob": 0.9}
    flags = load_avclips(0, **options)["test"].flags
    plain = small["test"].flags  # the same clips without degradation
    changed = ((flags["image_bad"] != plain["image_bad"]) | (flags["audio_bad"] != plain["audio_bad"])).any(dim=1)
    assert 15 < int(changed.sum()) < 45  # about half of the 60 clips (a few degraded clips may equal their draw)
    image, audio = flags["image_bad"][changed].sum(dim=1), flags["audio_bad"][changed].sum(dim=1)
    assert bool(((image == 0) | (audio == 0)).all())  # a degraded clip loses one modality only...
    assert float(torch.maximum(image, audio).float().mean()) > 0.75 * 8  # ...on most segments
    assert not bool((flags["image_bad"] & flags["audio_bad"]).any())


def test_same_seed_same_data_other_seed_other_data(small: dict) -> None:
    again = load_avclips(0, **SMALL)
    other = load_avclips(1, **SMALL)
    for split, ds in small.items():
        for group in ("inputs", "flags", "meta"):
            mine, theirs = getattr(ds, group), getattr(again[split], group)
            assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
        assert torch.equal(ds.target, again[split].target)
        assert not torch.equal(ds.target, other[split].target)
        assert not torch.equal(ds.meta["mnist_index"], other[split].meta["mnist_index"])
        assert not torch.equal(ds.flags["image_bad"], other[split].flags["image_bad"])
        assert not torch.equal(ds.inputs["audio"], other[split].inputs["audio"])


def test_one_option_does_not_reshuffle_the_others(small: dict) -> None:
    quieter = load_avclips(0, **SMALL, audio_snr_db=30.0, image_noise_std=0.05)
    for split, ds in small.items():
        assert torch.equal(ds.target, quieter[split].target)
        assert all(torch.equal(ds.meta[k], quieter[split].meta[k]) for k in ds.meta)
        assert all(torch.equal(ds.flags[k], quieter[split].flags[k]) for k in ds.flags)


def test_more_segments_than_recordings_repeat_only_after_the_pool(fsdd: dict) -> None:
    ds = load_avclips(0, segments=40, **TINY)["test"]
    assert ds.inputs["audio"].shape[1] == 40
    for row in ds.meta["fsdd_index"].tolist():  # 30 test recordings per digit: each once, then again
        assert len(set(row[:30])) == 30 and row[30:] == row[:10]


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="degraded_clip_fraction"):
        load_avclips(0, **TINY, degraded_clip_fraction=1.5)
    with pytest.raises(ConfigError, match="colour"):
        load_avclips(colour=True)
    with pytest.raises(ConfigError, match="segments must be >= 1"):
        AVClipsOptions(segments=0)
    with pytest.raises(ConfigError, match="test_size must be >= 1"):
        AVClipsOptions(test_size=0)
    with pytest.raises(ConfigError, match="bad_image_prob must be in"):
        AVClipsOptions(bad_image_prob=1.5)
    with pytest.raises(ConfigError, match="audio_noise_share must be in"):
        AVClipsOptions(audio_noise_share=-0.1)
    with pytest.raises(ConfigError, match="bad_image_prob \\+ bad_audio_prob.*allow_both_bad"):
        AVClipsOptions(bad_image_prob=0.6, bad_audio_prob=0.6)
    assert AVClipsOptions(bad_image_prob=0.6, bad_audio_prob=0.6, allow_both_bad=True).bad_audio_prob == 0.6
    with pytest.raises(ConfigError, match="image_noise_std must be >= 0"):
        AVClipsOptions(image_noise_std=-1.0)
    with pytest.raises(ConfigError, match="audio_snr_db"):
        AVClipsOptions(audio_snr_db=math.nan)
    with pytest.raises(ConfigError, match="clip_samples must be >= 256"):
        AVClipsOptions(clip_samples=100)
    with pytest.raises(ConfigError, match="n_mels must be <= 129"):
        AVClipsOptions(n_mels=200)
    with pytest.raises(ConfigError, match="segments must be int"):
        AVClipsOptions(segments=2.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="allow_both_bad must be bool"):
        AVClipsOptions(allow_both_bad=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed"):
        load_avclips(seed=0.5)  # type: ignore[arg-type]
    assert AVClipsOptions(audio_snr_db=10).audio_snr_db == 10.0


def test_registered() -> None:
    assert "avclips" in DATASETS
    assert {"seed", "segments", "bad_image_prob", "bad_audio_prob", "allow_both_bad"} <= set(
        accepted_options("avclips")
    )
    options = {"seed": 3, "segments": 4, "train_size": 20, "valid_size": 10, "test_size": 10}
    splits = load_dataset("avclips", **options)
    info = dataset_info("avclips", **options)
    assert info.sizes == {k: len(v) for k, v in splits.items()}
    for key, spec in info.modalities.items():
        assert tuple(splits["train"].inputs[key].shape[1:]) == spec.shape
    with pytest.raises(ConfigError, match=r"\['snr'\].*audio_snr_db"):
        dataset_info("avclips", snr=3)
