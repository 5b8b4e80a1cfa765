"""AV digits: an MNIST image and a spoken FSDD recording of the same digit, AV-MNIST-like.

Each modality is made unreliable on its own seeded part of the samples (a PCA-compressed, noisy image; a
recording drowned in white noise), independently, so that neither modality alone suffices for every sample
while both together mostly do. Which samples were corrupted is kept in `flags` for later analysis.
Everything is a deterministic function of (seed, options).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from dynmm.data.audio import fix_length, log_mel_spectrogram, num_frames
from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.options import build_options, check_option_types
from dynmm.data.paths import data_file
from dynmm.errors import ConfigError, DataError
from dynmm.specs import ModalitySpec, TaskSpec

MNIST_FILE = ("mnist", "mnist_subset.npz")
FSDD_FILE = ("fsdd", "fsdd.npz")
SAMPLE_RATE = 8000
HOP_LENGTH = 80
N_FFT = 256
FSDD_TEST_MAX_INDEX = 4
"""FSDD convention: recordings with index 0-4 are the test set, 5-49 the training set."""
TASK = TaskSpec("classification", num_classes=10)
_CHUNK = 1024
"""Waveforms per torch.stft call: bounds peak memory (a chunk's complex spectrogram is ~100 MB)."""

# Independent random streams, one per purpose, so that changing one option does not reshuffle the others.
_TRAIN_VALID, _TEST_SUBSET, _HARD_IMAGE, _NOISY_AUDIO, _IMAGE_NOISE, _AUDIO_NOISE = range(1, 7)
_SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True)
class AVDigitsOptions:
    """How the AV digits are built; every field is an accepted keyword of load_avdigits."""

    train_size: int = 10_000
    valid_size: int = 2_000
    test_size: int = 10_000
    hard_image_fraction: float = 0.5
    image_pca_components: int = 8
    image_noise_std: float = 0.5
    noisy_audio_fraction: float = 0.5
    audio_snr_db: float = -8.0
    clip_samples: int = SAMPLE_RATE
    n_mels: int = 40

    def __post_init__(self) -> None:
        check_option_types(self, "avdigits")
        for name in (
            "train_size",
            "valid_size",
            "test_size",
            "image_pca_components",
            "clip_samples",
            "n_mels",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"avdigits option {name} must be >= 1, got {getattr(self, name)}")
        for name in ("hard_image_fraction", "noisy_audio_fraction"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"avdigits option {name} must be in [0, 1], got {getattr(self, name)}")
        if self.image_noise_std < 0:
            raise ConfigError(f"avdigits option image_noise_std must be >= 0, got {self.image_noise_std}")
        if self.image_pca_components > 28 * 28:
            raise ConfigError(f"avdigits option image_pca_components must be <= 784, got {self.image_pca_components}")


def avdigits_options(**options: object) -> AVDigitsOptions:
    """Options with defaults filled in; unknown names are a ConfigError that lists the accepted ones."""
    return build_options(AVDigitsOptions, "avdigits", options)


def pair_recordings(
    mnist_labels: np.ndarray, fsdd_digit: np.ndarray, fsdd_index: np.ndarray, split: str, seed: int
) -> np.ndarray:
    """FSDD row for every MNIST image (file order): the bundle's deterministic pairing rule.

    split "train" draws from FSDD recordings with index 5-49, "test" from index 0-4. Per digit 0..9 in order,
    the eligible recordings are shuffled once with np.random.default_rng(seed); the k-th image of that digit
    gets shuffled recording k mod pool size, so the pairing of an image depends only on its index and seed.
    """
    rng = np.random.default_rng(seed)
    eligible = fsdd_index > FSDD_TEST_MAX_INDEX if split == "train" else fsdd_index <= FSDD_TEST_MAX_INDEX
    out = np.empty(len(mnist_labels), np.int64)
    for digit in range(10):
        pool = np.flatnonzero(eligible & (fsdd_digit == digit))
        pool = pool[rng.permutation(len(pool))]
        pos = np.flatnonzero(mnist_labels == digit)
        out[pos] = pool[np.arange(len(pos)) % len(pool)]
    return out


def _read_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cached arrays are shared between loads, so nobody may change them in place."""
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


@lru_cache(maxsize=1)
def _load_mnist(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return _read_only({k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")})


@lru_cache(maxsize=1)
def _load_fsdd(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        fsdd = _read_only({k: npz[k] for k in ("audio", "offsets", "digit", "index", "sample_rate")})
    if int(fsdd["sample_rate"]) != SAMPLE_RATE:
        raise DataError(f"{path}: expected {SAMPLE_RATE} Hz recordings, got {int(fsdd['sample_rate'])}")
    return fsdd


@lru_cache(maxsize=2)
def _recordings(path: str, clip_samples: int) -> tuple[Tensor, Tensor]:
    """Every recording as a fixed-length float clip in [-1, 1] and its mean power (over the speech only)."""
    fsdd = _load_fsdd(path)
    audio, offsets = fsdd["audio"], fsdd["offsets"]
    clips = torch.zeros(len(offsets) - 1, clip_samples)
    power = torch.empty(len(offsets) - 1)
    for i in range(len(offsets) - 1):
        wave = torch.from_numpy(audio[offsets[i] : offsets[i + 1]].astype(np.float32) / 32768.0)
        wave = fix_length(wave, clip_samples)[: offsets[i + 1] - offsets[i]]
        clips[i, : len(wave)] = wave
        power[i] = wave.square().mean()
    return clips, power


def _log_mels(waves: Tensor, n_mels: int) -> Tensor:
    """(N, samples) -> (N, n_mels, frames), in chunks to bound memory."""
    parts = [log_mel_spectrogram(chunk, SAMPLE_RATE, N_FFT, HOP_LENGTH, n_mels) for chunk in waves.split(_CHUNK)]
    return torch.cat(parts) if parts else torch.empty(0, n_mels, num_frames(waves.shape[-1], HOP_LENGTH))


@lru_cache(maxsize=2)
def _clean_log_mels(path: str, clip_samples: int, n_mels: int) -> Tensor:
    """Log-mels of all noise-free recordings, computed once and shared by every sample that reuses them."""
    clips, _ = _recordings(path, clip_samples)
    return _log_mels(clips, n_mels)


def _rng(seed: int, *purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, *purpose])


def _choose(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask with exactly round(fraction * n) seeded True entries."""
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[: round(fraction * n)]] = True
    return mask


def _fit_pca(images: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (784,) and top-k principal directions (k, 784) of flattened training images."""
    x = images.reshape(len(images), -1).astype(np.float64)
    mean = x.mean(0)
    centred = x - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return mean, vectors[:, ::-1][:, :k].T.copy()


def _degrade(images: np.ndarray, mean: np.ndarray, comps: np.ndarray, noise_std: float, rng) -> np.ndarray:
    """Keep only the top PCA components of each image, add Gaussian noise, clip to [0, 1]."""
    x = images.reshape(len(images), -1).astype(np.float64) - mean
    recon = (x @ comps.T) @ comps + mean
    noisy = recon + noise_std * rng.standard_normal(recon.shape)
    return np.clip(noisy, 0.0, 1.0).reshape(images.shape).astype(np.float32)


def _split_rows(seed: int, opts: AVDigitsOptions, n_train_pool: int, n_test_pool: int) -> dict[str, np.ndarray]:
    """MNIST rows of each split: valid is a fixed seeded tail of a permutation, train a prefix of the rest."""
    if opts.train_size + opts.valid_size > n_train_pool:
        raise ConfigError(
            f"avdigits train_size + valid_size = {opts.train_size + opts.valid_size} exceeds the "
            f"{n_train_pool} bundled MNIST training images"
        )
    if opts.test_size > n_test_pool:
        raise ConfigError(f"avdigits test_size {opts.test_size} exceeds the {n_test_pool} MNIST test images")
    perm = _rng(seed, _TRAIN_VALID).permutation(n_train_pool)
    test = np.arange(n_test_pool)
    if opts.test_size < n_test_pool:
        test = _rng(seed, _TEST_SUBSET).permutation(n_test_pool)[: opts.test_size]
    return {
        "train": np.sort(perm[: opts.train_size]),
        "valid": np.sort(perm[n_train_pool - opts.valid_size :]),
        "test": np.sort(test),
    }


def _noisy_log_mels(
    clips: Tensor, power: Tensor, recordings: np.ndarray, snr_db: float, n_mels: int, rng: np.random.Generator
) -> Tensor:
    """Log-mels of the given recordings with fresh white noise at `snr_db` against each recording's speech."""
    rec = torch.from_numpy(recordings)
    std = torch.sqrt(power[rec] / 10.0 ** (snr_db / 10.0))
    noise = torch.from_numpy(rng.standard_normal((len(rec), clips.shape[1]), np.float32))
    return _log_mels(clips[rec] + std[:, None] * noise, n_mels)


def load_avdigits(seed: int = 0, **options: object) -> dict[str, MultimodalDataset]:
    """Train/valid/test AV digits: inputs `image` (1, 28, 28) in [0, 1] and `audio` (1, n_mels, frames),
    the log-mel spectrogram standardised per mel bin with train statistics; target = digit (int64).

    flags: `image_hard`, `audio_noisy` (bool per sample); meta: `mnist_index`, `fsdd_index` (rows in the
    bundled files). Options: see AVDigitsOptions.
    """
    opts = avdigits_options(**options)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"avdigits seed must be an int >= 0, got {seed!r}")
    mnist = _load_mnist(str(data_file(*MNIST_FILE)))
    fsdd_path = str(data_file(*FSDD_FILE))
    fsdd = _load_fsdd(fsdd_path)
    clips, power = _recordings(fsdd_path, opts.clip_samples)
    clean_mels = _clean_log_mels(fsdd_path, opts.clip_samples, opts.n_mels)
    pairs = {
        pool: pair_recordings(mnist[f"y_{pool}"], fsdd["digit"], fsdd["index"], pool, seed)
        for pool in ("train", "test")
    }
    rows = _split_rows(seed, opts, len(mnist["y_train"]), len(mnist["y_test"]))
    pca_mean, pca_comps = _fit_pca(mnist["x_train"][rows["train"]] / 255.0, opts.image_pca_components)

    out: dict[str, MultimodalDataset] = {}
    for split, sid in _SPLIT_IDS.items():
        pool = "test" if split == "test" else "train"
        r = rows[split]
        recording = pairs[pool][r]
        hard = _choose(len(r), opts.hard_image_fraction, _rng(seed, _HARD_IMAGE, sid))
        noisy = _choose(len(r), opts.noisy_audio_fraction, _rng(seed, _NOISY_AUDIO, sid))

        images = mnist[f"x_{pool}"][r].astype(np.float32) / 255.0
        if hard.any():
            noise_rng = _rng(seed, _IMAGE_NOISE, sid)
            images[hard] = _degrade(images[hard], pca_mean, pca_comps, opts.image_noise_std, noise_rng)
        mels = clean_mels[torch.from_numpy(recording)]  # a copy: the cache stays clean
        if noisy.any():
            noise_rng = _rng(seed, _AUDIO_NOISE, sid)
            mels[torch.from_numpy(noisy)] = _noisy_log_mels(
                clips, power, recording[noisy], opts.audio_snr_db, opts.n_mels, noise_rng
            )
        out[split] = MultimodalDataset(
            {"image": torch.from_numpy(images).unsqueeze(1), "audio": mels.unsqueeze(1)},
            torch.from_numpy(mnist[f"y_{pool}"][r].astype(np.int64)),
            flags={"image_hard": torch.from_numpy(hard), "audio_noisy": torch.from_numpy(noisy)},
            meta={"mnist_index": torch.from_numpy(r.astype(np.int64)), "fsdd_index": torch.from_numpy(recording)},
        )

    train_audio = out["train"].inputs["audio"]
    mean = train_audio.mean(dim=(0, 1, 3), keepdim=True)
    std = train_audio.std(dim=(0, 1, 3), keepdim=True).clamp_min(1e-6)
    for ds in out.values():
        ds.inputs["audio"].sub_(mean).div_(std)
    return out


def avdigits_info(seed: int = 0, **options: object) -> DatasetInfo:
    """Shapes and split sizes from the options alone (no data are built)."""
    opts = avdigits_options(**options)
    frames = num_frames(opts.clip_samples, HOP_LENGTH)
    modalities = {
        "image": ModalitySpec("image", (1, 28, 28), "image"),
        "audio": ModalitySpec("audio", (1, opts.n_mels, frames), "image"),
    }
    sizes = {"train": opts.train_size, "valid": opts.valid_size, "test": opts.test_size}
    return DatasetInfo("avdigits", modalities, TASK, sizes)
