"""AV digit clips for AdaMML: T segments of one digit, each an MNIST image and a spoken FSDD recording.

A clip's label is its digit. Every segment shows a different MNIST image of that digit and plays a different
FSDD recording of it (any speaker; different items within a clip wherever the pool is large enough). Per
segment, independently, one modality may be made uninformative, so that a per-segment policy has something to
learn: the image is blank (no digit) or occluded by a grey square over most of the digit's ink (>= 20x20 px);
the speech is removed, leaving white noise as loud as the speech was, or silence. By default a segment never
loses both modalities.
Which segment lost what is kept in `flags`, one (clips, segments) bool tensor per fact, so that an analysis can
check whether a policy skips the uninformative segments.

Audio per segment is a *whole* recording cropped or zero-padded to `clip_samples` (default 4,000 samples =
0.5 s at 8 kHz), not a chunk of one longer recording: FSDD recordings are short (median 0.42 s), so an eighth
of one (~50 ms) would not say the digit, while 0.5 s holds the whole word for most recordings (a linear
classifier on these log-mels reaches ~95 % on the FSDD test recordings). The log-mel uses a 20 ms hop (160
samples; avdigits uses 10 ms): half the frames, which halves the audio tensors (the largest part of the data)
without losing accuracy. Every segment carries a white-noise floor `audio_snr_db` below the speech power of
its recording (informative or not), and every image Gaussian pixel noise of std `image_noise_std`, so that an
uninformative segment is not recognisable by being exactly zero.

Splits: test clips use MNIST test images and FSDD recordings with index 0-4 (the FSDD test convention), valid
clips a fixed seeded fifth of the bundled MNIST training images and recordings 5-9, train clips the other
MNIST training images and recordings 10-49, so valid, like test, holds images and recordings train never shows.

Shapes: `image` (T, 1, 28, 28) and `audio` (T, 1, n_mels, frames) per clip, the (B, T, C, H, W) layout the
AdaMML policy reads. specs.py has no kind for a sequence of images; they are declared kind "image" (generic
code that flattens an image then sees T·C·H·W features, which is right; "sequence" means (time, features)).
Everything is a deterministic function of (seed, options), with one random stream per purpose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from dynmm.data.audio import log_mel_spectrogram, num_frames
from dynmm.data.avdigits import FSDD_FILE, FSDD_TEST_MAX_INDEX, MNIST_FILE, N_FFT, SAMPLE_RATE, TASK
from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.options import build_options, check_option_types
from dynmm.data.paths import data_file
from dynmm.errors import ConfigError, DataError
from dynmm.specs import ModalitySpec

HOP_LENGTH = 160
"""20 ms at 8 kHz: see the module docstring."""
FSDD_VALID_MAX_INDEX = 9
"""Recordings with index 5-9 go to valid, 10-49 to train (0-4 are the FSDD test set)."""
VALID_IMAGE_SHARE = 0.2
"""Share of the bundled MNIST training images (a fixed seeded subset) that only valid clips use."""
OCCLUDER_SIDE = (20, 24)
"""Smallest and largest side (pixels) of the square that occludes an image; MNIST digits fit in 20x20."""
OCCLUDER_SHIFT = 2
"""Largest offset (pixels, per axis) of the occluder's centre from the centre of the digit's bounding box."""
OCCLUDER_GREY = (0.5, 1.0)
"""Range of the occluder's uniform grey level."""
_CHUNK = 512
"""Segments per noise draw and torch.stft call: bounds peak memory."""

# Independent random streams, one per purpose, so that changing one option does not reshuffle the others.
(
    _LABELS,
    _VALID_IMAGES,
    _IMAGES,
    _RECORDINGS,
    _IMAGE_BAD,
    _AUDIO_BAD,
    _IMAGE_KIND,
    _AUDIO_KIND,
    _OCCLUDER,
    _IMAGE_NOISE,
    _AUDIO_NOISE,
    _DEGRADED_CLIPS,
) = range(1, 13)
_SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True)
class AVClipsOptions:
    """How the AV digit clips are built; every field is an accepted keyword of load_avclips.

    bad_image_prob / bad_audio_prob: probability that a segment's image / audio is uninformative.
    image_occluded_share: share of uninformative images that are occluded (the others are blank).
    audio_noise_share: share of uninformative audio that is white noise (the others are silence).
    allow_both_bad: whether one segment may lose both modalities; if not (default), the two probabilities
    must sum to at most 1 and are still the exact per-segment probabilities.
    image_noise_std: Gaussian pixel noise on every image. audio_snr_db: noise floor under every segment,
    relative to the speech power of its recording (inf: none).
    degraded_clip_fraction: share of clips in which one modality (image or audio, even odds) fails for long
    stretches, as a covered camera or a loud room would: it is uninformative on each segment with probability
    `degraded_bad_prob`, and the other modality on none. The other clips follow the per-segment probabilities.
    Without degraded clips every clip has enough good images to be recognised from images alone; with them,
    which modality is worth running differs from clip to clip.
    """

    segments: int = 8
    train_size: int = 3_000
    valid_size: int = 500
    test_size: int = 1_000
    bad_image_prob: float = 0.35
    bad_audio_prob: float = 0.35
    image_occluded_share: float = 0.5
    audio_noise_share: float = 0.5
    allow_both_bad: bool = False
    image_noise_std: float = 0.1
    audio_snr_db: float = 20.0
    degraded_clip_fraction: float = 0.0
    degraded_bad_prob: float = 0.85
    clip_samples: int = 4_000
    n_mels: int = 40

    def __post_init__(self) -> None:
        check_option_types(self, "avclips")
        for name in ("segments", "train_size", "valid_size", "test_size", "n_mels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"avclips option {name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "bad_image_prob",
            "bad_audio_prob",
            "image_occluded_share",
            "audio_noise_share",
            "degraded_clip_fraction",
            "degraded_bad_prob",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"avclips option {name} must be in [0, 1], got {getattr(self, name)}")
        if not self.allow_both_bad and self.bad_image_prob + self.bad_audio_prob > 1.0:
            raise ConfigError(
                f"avclips options bad_image_prob + bad_audio_prob = {self.bad_image_prob + self.bad_audio_prob} "
                "exceed 1, impossible with at most one uninformative modality per segment (set allow_both_bad)"
            )
        if not self.image_noise_std >= 0:
            raise ConfigError(f"avclips option image_noise_std must be >= 0, got {self.image_noise_std}")
        if math.isnan(self.audio_snr_db) or self.audio_snr_db == -math.inf:
            raise ConfigError(f"avclips option audio_snr_db must be a number or inf, got {self.audio_snr_db}")
        if self.clip_samples < N_FFT:
            raise ConfigError(
                f"avclips option clip_samples must be >= {N_FFT} (one STFT window), got {self.clip_samples}"
            )
        if self.n_mels > N_FFT // 2 + 1:
            raise ConfigError(f"avclips option n_mels must be <= {N_FFT // 2 + 1} (STFT bins), got {self.n_mels}")


def avclips_options(**options: object) -> AVClipsOptions:
    """Options with defaults filled in; unknown names are a ConfigError that lists the accepted ones."""
    return build_options(AVClipsOptions, "avclips", options)


@lru_cache(maxsize=1)
def _mnist(path: str) -> dict[str, np.ndarray]:
    """Images and labels of the bundled MNIST subset, read once and shared (read-only) by every load."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


@lru_cache(maxsize=2)
def _fsdd(path: str, clip_samples: int) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
    """Every FSDD recording cropped/zero-padded to clip_samples (int16), its speech power (in [-1, 1] units,
    over the kept speech samples), digit and repetition index."""
    with np.load(path, allow_pickle=False) as npz:
        audio, offsets, digit, index = (npz[k] for k in ("audio", "offsets", "digit", "index"))
        if int(npz["sample_rate"]) != SAMPLE_RATE:
            raise DataError(f"{path}: expected {SAMPLE_RATE} Hz recordings, got {int(npz['sample_rate'])}")
    clips = np.zeros((len(offsets) - 1, clip_samples), np.int16)
    power = np.empty(len(offsets) - 1)
    stops = np.minimum(offsets[1:], offsets[:-1] + clip_samples)
    for i, (start, stop) in enumerate(zip(offsets[:-1], stops, strict=True)):
        clips[i, : stop - start] = audio[start:stop]
        power[i] = np.square(audio[start:stop] / 32768.0).mean()
    return torch.from_numpy(clips), torch.from_numpy(power), digit, index


def _rng(seed: int, *purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, *purpose])


def _torch_generator(seed: int, *purpose: int) -> torch.Generator:
    """A torch generator seeded from the purpose's stream: torch.randn is several times faster than numpy's."""
    return torch.Generator().manual_seed(int(_rng(seed, *purpose).integers(2**63)))


def _draw(pool: np.ndarray, clips: int, segments: int, rng: np.random.Generator) -> np.ndarray:
    """(clips, segments) items of `pool`, each clip a fresh random order of the pool (distinct items while
    segments <= len(pool), then the clip's order repeats)."""
    order = np.argsort(rng.random((clips, len(pool))), axis=1)
    return pool[np.tile(order, -(-segments // len(pool)))[:, :segments]]


def _per_digit(digits: np.ndarray, pool: np.ndarray, pool_digit: np.ndarray, segments: int, rng) -> np.ndarray:
    """For every clip, `segments` items of `pool` whose digit is the clip's digit."""
    out = np.empty((len(digits), segments), np.int64)
    for d in range(10):
        rows = np.flatnonzero(digits == d)
        candidates = pool[pool_digit[pool] == d]
        if len(candidates) == 0:
            raise DataError(f"avclips: no bundled item of digit {d} for this split")
        out[rows] = _draw(candidates, len(rows), segments, rng)
    return out


def _bad_segments(shape: tuple[int, int], opts: AVClipsOptions, seed: int, sid: int) -> tuple[np.ndarray, np.ndarray]:
    """Which segments lose their image / audio: P = bad_image_prob / bad_audio_prob each; unless
    allow_both_bad, audio is only dropped from segments that keep their image, with P / (1 - bad_image_prob)."""
    image_bad = _rng(seed, _IMAGE_BAD, sid).random(shape) < opts.bad_image_prob
    u = _rng(seed, _AUDIO_BAD, sid).random(shape)
    if opts.allow_both_bad:
        audio_bad = u < opts.bad_audio_prob
    else:
        keep = 1.0 - opts.bad_image_prob
        audio_bad = ~image_bad & (u < (opts.bad_audio_prob / keep if keep > 0 else 0.0))
    if opts.degraded_clip_fraction > 0:  # its own stream: clips that are not degraded keep their draws
        rng = _rng(seed, _DEGRADED_CLIPS, sid)
        degraded = (rng.random(shape[0]) < opts.degraded_clip_fraction)[:, None]
        image_fails = (rng.random(shape[0]) < 0.5)[:, None]
        fails = rng.random(shape) < opts.degraded_bad_prob
        image_bad = np.where(degraded, image_fails & fails, image_bad)
        audio_bad = np.where(degraded, ~image_fails & fails, audio_bad)
    return image_bad, audio_bad


def _ink_centre(images: np.ndarray, axis: int) -> np.ndarray:
    """Middle of the first and last inked row (axis=2) or column (axis=1) of each (28, 28) image; 14 if blank."""
    any_ink = np.count_nonzero(images, axis=axis) > 0
    first = np.argmax(any_ink, axis=1)
    last = any_ink.shape[1] - 1 - np.argmax(any_ink[:, ::-1], axis=1)
    return np.where(any_ink.any(axis=1), (first + last + 1) // 2, 14)


def _occlude(images: np.ndarray, rng: np.random.Generator) -> None:
    """Cover each (28, 28) image, in place, with a grey square over most of the digit: centred near the
    centre of the digit's bounding box, which MNIST does not always put at the image centre."""
    n = len(images)
    side = rng.integers(OCCLUDER_SIDE[0], OCCLUDER_SIDE[1] + 1, n)
    shift = rng.integers(-OCCLUDER_SHIFT, OCCLUDER_SHIFT + 1, (2, n))
    centre = [_ink_centre(images, axis) + shift[k] for k, axis in enumerate((2, 1))]
    top, left = (np.clip(c - side // 2, 0, 28 - side) for c in centre)
    grey = rng.uniform(*OCCLUDER_GREY, n).astype(np.float32)
    r = np.arange(28)
    rows = (r >= top[:, None]) & (r < (top + side)[:, None])
    cols = (r >= left[:, None]) & (r < (left + side)[:, None])
    box = rows[:, :, None] & cols[:, None, :]
    images[:] = np.where(box, grey[:, None, None], images)


def _images(
    source: np.ndarray, bad: np.ndarray, occluded: np.ndarray, opts: AVClipsOptions, seed: int, sid: int
) -> Tensor:
    """(clips, T, 1, 28, 28) images in [0, 1]: blank or occluded where flagged, then pixel noise everywhere."""
    images = source.astype(np.float32) / 255.0
    images[bad & ~occluded] = 0.0
    if occluded.any():
        boxed = images[occluded]
        _occlude(boxed, _rng(seed, _OCCLUDER, sid))
        images[occluded] = boxed
    out = torch.from_numpy(images).unsqueeze(2)
    if opts.image_noise_std > 0:
        generator = _torch_generator(seed, _IMAGE_NOISE, sid)
        for part in out.view(-1, 28 * 28).split(_CHUNK):
            noise = torch.randn(part.shape, generator=generator)
            part.add_(noise.mul_(opts.image_noise_std)).clamp_(0.0, 1.0)
    return out


def _audio(
    recording: np.ndarray, bad: np.ndarray, noise: np.ndarray, opts: AVClipsOptions, path: str, seed: int, sid: int
) -> Tensor:
    """(clips, T, 1, n_mels, frames) log-mels: the recording (speech removed where bad) plus white noise at the
    speech power (where noise) plus the noise floor, drawn and transformed in chunks to bound memory."""
    clips, power, _, _ = _fsdd(path, opts.clip_samples)
    rec, speech = torch.from_numpy(recording.ravel()), torch.from_numpy(~bad.ravel())
    variance = power[rec] * (10.0 ** (-opts.audio_snr_db / 10.0) + torch.from_numpy(noise.ravel()))
    std = variance.sqrt().float()
    generator = _torch_generator(seed, _AUDIO_NOISE, sid)
    out = torch.empty(len(rec), opts.n_mels, num_frames(opts.clip_samples, HOP_LENGTH))
    for start in range(0, len(rec), _CHUNK):
        part = slice(start, start + _CHUNK)
        waves = clips[rec[part]].float().div_(32768.0).mul_(speech[part, None])
        waves.add_(torch.randn(waves.shape, generator=generator).mul_(std[part, None]))
        out[part] = log_mel_spectrogram(waves, SAMPLE_RATE, N_FFT, HOP_LENGTH, opts.n_mels)
    return out.view(*recording.shape, 1, *out.shape[1:])


def _mel_statistics(audio: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std (clamped to >= 1e-6) per mel bin of (clips, T, 1, n_mels, frames) log-mels, shaped to
    broadcast; accumulated in float64 over chunks of segments so that no full-size temporary is made."""
    total = torch.zeros(audio.shape[-2], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in audio.reshape(-1, *audio.shape[-2:]).split(_CHUNK):
        part64 = part.double()
        total += part64.sum(dim=(0, 2))
        squares += part64.square().sum(dim=(0, 2))
    n = audio.numel() // audio.shape[-2]
    mean = total / n
    var = (squares - n * mean.square()) / max(n - 1, 1)
    shape = (1, 1, 1, -1, 1)
    return mean.float().view(shape), var.clamp_min(0).sqrt().float().clamp_min(1e-6).view(shape)


def _pools(
    seed: int, n_train: int, n_test: int, fsdd_index: np.ndarray
) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Split -> (MNIST image set, "train" or "test"; its rows the split may use; FSDD recordings it may use)."""
    perm = _rng(seed, _VALID_IMAGES).permutation(n_train)
    n_valid = round(VALID_IMAGE_SHARE * n_train)
    valid_recordings = (fsdd_index > FSDD_TEST_MAX_INDEX) & (fsdd_index <= FSDD_VALID_MAX_INDEX)
    return {
        "train": ("train", np.sort(perm[n_valid:]), np.flatnonzero(fsdd_index > FSDD_VALID_MAX_INDEX)),
        "valid": ("train", np.sort(perm[:n_valid]), np.flatnonzero(valid_recordings)),
        "test": ("test", np.arange(n_test), np.flatnonzero(fsdd_index <= FSDD_TEST_MAX_INDEX)),
    }


def load_avclips(seed: int = 0, **options: object) -> dict[str, MultimodalDataset]:
    """Train/valid/test AV digit clips: inputs `image` (T, 1, 28, 28) in [0, 1] and `audio`
    (T, 1, n_mels, frames), the log-mel standardised per mel bin with train statistics; target = digit (int64).

    flags, each (clips, T) bool: `image_bad` (= `image_blank` | `image_occluded`), `audio_bad`
    (= `audio_silent` | `audio_noise`). meta, each (clips, T) int64: `mnist_index` (row of x_train, or of x_test
    for the test split), `fsdd_index` (the recording the segment plays, or would have played if bad).
    Options: see AVClipsOptions.
    """
    opts = avclips_options(**options)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"avclips seed must be an int >= 0, got {seed!r}")
    mnist = _mnist(str(data_file(*MNIST_FILE)))
    fsdd_path = str(data_file(*FSDD_FILE))
    _, _, fsdd_digit, fsdd_index = _fsdd(fsdd_path, opts.clip_samples)
    pools = _pools(seed, len(mnist["y_train"]), len(mnist["y_test"]), fsdd_index)
    sizes = {"train": opts.train_size, "valid": opts.valid_size, "test": opts.test_size}

    out: dict[str, MultimodalDataset] = {}
    for split, sid in _SPLIT_IDS.items():
        image_set, image_pool, recording_pool = pools[split]
        n, t = sizes[split], opts.segments
        digits = _rng(seed, _LABELS, sid).permutation(np.arange(n) % 10)
        labels = mnist[f"y_{image_set}"]
        image_rows = _per_digit(digits, image_pool, labels, t, _rng(seed, _IMAGES, sid))
        recording = _per_digit(digits, recording_pool, fsdd_digit, t, _rng(seed, _RECORDINGS, sid))
        image_bad, audio_bad = _bad_segments((n, t), opts, seed, sid)
        occluded = image_bad & (_rng(seed, _IMAGE_KIND, sid).random((n, t)) < opts.image_occluded_share)
        noise = audio_bad & (_rng(seed, _AUDIO_KIND, sid).random((n, t)) < opts.audio_noise_share)
        out[split] = MultimodalDataset(
            {
                "image": _images(mnist[f"x_{image_set}"][image_rows], image_bad, occluded, opts, seed, sid),
                "audio": _audio(recording, audio_bad, noise, opts, fsdd_path, seed, sid),
            },
            torch.from_numpy(digits.astype(np.int64)),
            flags={
                name: torch.from_numpy(flag)
                for name, flag in (
                    ("image_bad", image_bad),
                    ("image_blank", image_bad & ~occluded),
                    ("image_occluded", occluded),
                    ("audio_bad", audio_bad),
                    ("audio_silent", audio_bad & ~noise),
                    ("audio_noise", noise),
                )
            },
            meta={"mnist_index": torch.from_numpy(image_rows), "fsdd_index": torch.from_numpy(recording)},
        )

    mean, std = _mel_statistics(out["train"].inputs["audio"])
    for ds in out.values():
        ds.inputs["audio"].sub_(mean).div_(std)
    return out


def avclips_info(seed: int = 0, **options: object) -> DatasetInfo:
    """Shapes and split sizes from the options alone (no data are built)."""
    opts = avclips_options(**options)
    t, frames = opts.segments, num_frames(opts.clip_samples, HOP_LENGTH)
    modalities = {
        "image": ModalitySpec("image", (t, 1, 28, 28), "image"),
        "audio": ModalitySpec("audio", (t, 1, opts.n_mels, frames), "image"),
    }
    sizes = {"train": opts.train_size, "valid": opts.valid_size, "test": opts.test_size}
    return DatasetInfo("avclips", modalities, TASK, sizes)
