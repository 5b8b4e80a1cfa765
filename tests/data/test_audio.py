import numpy as np
import pytest
import torch

from dynmm.data.audio import (
    fix_length,
    hz_to_mel,
    log_mel_spectrogram,
    mel_centres,
    mel_filterbank,
    mel_to_hz,
    num_frames,
    power_spectrogram,
)

SR = 8000


def sine(freq: float, seconds: float = 0.5, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return torch.sin(2 * torch.pi * freq * t).float()


def test_mel_scale_is_htk_and_invertible() -> None:
    assert float(hz_to_mel(700.0)) == pytest.approx(2595.0 * np.log10(2.0))
    assert float(hz_to_mel(1000.0)) == pytest.approx(999.99, abs=0.1)
    hz = torch.tensor([0.0, 123.0, 1000.0, 3999.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(hz)), hz)


def test_filterbank_rows_are_triangles_between_neighbouring_centres() -> None:
    n_fft, n_mels = 2048, 20  # fine frequency grid so that triangle corners are resolved
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, SR).double()
    freqs = torch.linspace(0, SR / 2, n_fft // 2 + 1, dtype=torch.float64)
    step = SR / n_fft
    corners = torch.cat([torch.tensor([0.0]), mel_centres(n_mels, SR), torch.tensor([SR / 2])])
    assert fb.shape == (n_mels, n_fft // 2 + 1)
    for m in range(n_mels):
        left, centre, right = corners[m], corners[m + 1], corners[m + 2]
        expected = np.interp(freqs.numpy(), [left, centre, right], [0.0, 1.0, 0.0], left=0.0, right=0.0)
        np.testing.assert_allclose(fb[m].numpy(), expected, atol=1e-6)
        support = freqs[fb[m] > 0]
        assert support.min() > left and support.max() < right
        # the peak is the grid bin nearest the centre, with height 1 minus the grid's miss of the centre
        peak = int(fb[m].argmax())
        assert abs(float(freqs[peak] - centre)) <= step / 2 + 1e-9
        assert float(fb[m, peak]) >= 1 - (step / 2) / float(centre - left)
    # adjacent triangles overlap so that they sum to 1 between the first and the last centre
    inside = (freqs >= corners[1]) & (freqs <= corners[-2])
    torch.testing.assert_close(fb.sum(0)[inside], torch.ones(int(inside.sum()), dtype=torch.float64), atol=1e-6, rtol=0)


def test_default_filterbank_has_no_empty_filter() -> None:
    fb = mel_filterbank(129, 40, SR)
    assert (fb.sum(1) > 0).all()


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_pure_tone_peaks_in_nearest_mel_bin(freq: float) -> None:
    n_fft = 1024
    mel = log_mel_spectrogram(sine(freq), SR, n_fft=n_fft, hop_length=256, n_mels=40)
    peak = int(mel[0, :, 2:-2].mean(-1).argmax())
    nearest = int((mel_centres(40, SR) - freq).abs().argmin())
    assert peak == nearest


def test_power_spectrogram_matches_numpy_fft_of_a_frame() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, generator=gen)
    n_fft, hop = 256, 80
    power = power_spectrogram(x[None], n_fft, hop)[0].numpy()
    padded = np.pad(x.numpy().astype(np.float64), n_fft // 2, mode="reflect")
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    for frame in (0, 5, 17):
        segment = padded[frame * hop : frame * hop + n_fft] * window
        expected = np.abs(np.fft.rfft(segment)) ** 2
        np.testing.assert_allclose(power[:, frame], expected, rtol=1e-3, atol=1e-3)


def test_log_mel_shapes_and_values() -> None:
    batch = torch.stack([sine(440.0, 1.0), torch.zeros(SR)])
    mel = log_mel_spectrogram(batch)
    assert mel.shape == (2, 40, num_frames(SR)) == (2, 40, 101)
    assert log_mel_spectrogram(sine(440.0, 1.0)).shape == (1, 40, 101)
    torch.testing.assert_close(mel[1], torch.full_like(mel[1], float(np.log(1e-6))))
    assert mel.dtype == torch.float32
    with pytest.raises(ValueError):
        log_mel_spectrogram(torch.zeros(1, 2, 100))


def test_fix_length_crops_and_pads() -> None:
    x = torch.arange(1, 11, dtype=torch.float32)
    torch.testing.assert_close(fix_length(x, 4), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    padded = fix_length(x[None], 13)
    assert padded.shape == (1, 13)
    torch.testing.assert_close(padded[0, :10], x)
    assert (padded[0, 10:] == 0).all()
    assert fix_length(x, 10) is x or torch.equal(fix_length(x, 10), x)
