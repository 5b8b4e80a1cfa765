"""Log-mel spectrograms with torch.stft only, so that audio features need no extra audio library."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

LOG_EPS = 1e-6


def hz_to_mel(hz: Tensor | float) -> Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: Tensor | float) -> Tensor:
    """Inverse of hz_to_mel."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def _mel_points(n_mels: int, f_min: float, f_max: float) -> Tensor:
    """n_mels + 2 frequencies (Hz) equally spaced on the mel scale: the triangles' corners."""
    return mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2))


def mel_centres(n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Centre frequencies (Hz) of the filters of mel_filterbank with the same arguments."""
    return _mel_points(n_mels, f_min, sample_rate / 2 if f_max is None else f_max)[1:-1]


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """Triangular HTK-mel filters, shape (n_mels, n_freqs), for the n_freqs = n_fft // 2 + 1 STFT bins.

    Filter m rises linearly from centre m-1 to 1 at centre m and falls to 0 at centre m+1 (unnormalised, as
    in HTK), so `filterbank @ power` gives the mel power spectrum.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    points = _mel_points(n_mels, f_min, f_max)
    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)
    left, centre, right = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (freqs - left) / (centre - left)
    falling = (right - freqs) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


@lru_cache(maxsize=16)
def _cached_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float | None) -> Tensor:
    return mel_filterbank(n_freqs, n_mels, sample_rate, f_min, f_max)


def power_spectrogram(waveform: Tensor, n_fft: int = 256, hop_length: int = 80) -> Tensor:
    """|STFT|^2 with a periodic Hann window and centred, reflect-padded frames: (B, n_fft // 2 + 1, T)."""
    window = torch.hann_window(n_fft, dtype=waveform.dtype, device=waveform.device)
    spec = torch.stft(
        waveform,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return spec.real.square() + spec.imag.square()


def log_mel_spectrogram(
    waveform: Tensor,
    sample_rate: int = 8000,
    n_fft: int = 256,
    hop_length: int = 80,
    n_mels: int = 40,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> Tensor:
    """log(mel power + 1e-6) of a (B, samples) or (samples,) float waveform: (B, n_mels, frames).

    frames = 1 + samples // hop_length (centred frames); a 1-D input is treated as a batch of one.
    """
    wave = waveform.float()
    if wave.dim() == 1:
        wave = wave.unsqueeze(0)
    if wave.dim() != 2:
        raise ValueError(f"waveform must be (samples,) or (batch, samples), got {tuple(waveform.shape)}")
    power = power_spectrogram(wave, n_fft, hop_length)
    fb = _cached_filterbank(n_fft // 2 + 1, n_mels, sample_rate, float(f_min), f_max).to(power.device)
    return torch.log(torch.matmul(fb, power) + LOG_EPS)


def num_frames(samples: int, hop_length: int = 80) -> int:
    """Frames log_mel_spectrogram yields for a clip of `samples` samples."""
    return 1 + samples // hop_length


def fix_length(waveform: Tensor, length: int = 8000) -> Tensor:
    """Crop the end or zero-pad the end of the last axis to exactly `length` samples (fixed-size clips)."""
    current = waveform.shape[-1]
    if current >= length:
        return waveform[..., :length]
    return torch.nn.functional.pad(waveform, (0, length - current))


def snr_noise_std(signal: Tensor, snr_db: float) -> Tensor:
    """Std of white noise that gives `snr_db` against the mean power of each row of `signal`."""
    power = signal.float().square().mean(dim=-1)
    return torch.sqrt(power / 10.0 ** (snr_db / 10.0))
