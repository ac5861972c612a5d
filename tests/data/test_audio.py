"""LogMelSpectrogram against an independent numpy implementation, plus XKD's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmkd.data.audio import LogMelSpectrogram, mel_filterbank, xkd_num_frames


def numpy_log_mel(
    x: np.ndarray, sr=16000, n_fft=1024, hop=143, n_mels=80, fmax=8000.0, eps=1e-6
) -> np.ndarray:
    """Loop-style reference: reflect pad, periodic Hann, rfft, power, HTK triangles, log."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    frames = [padded[s : s + n_fft] * window for s in range(0, len(padded) - n_fft + 1, hop)]
    power = np.abs(np.fft.rfft(np.stack(frames), axis=1)) ** 2  # (frames, n_fft//2+1)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = inv(np.linspace(mel(0.0), mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if lo < f <= c:
                fb[m, k] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[m, k] = (hi - f) / (hi - c)
    return np.log(fb @ power.T + eps)


def test_matches_numpy_reference():
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    ours = LogMelSpectrogram(normalize=False)(torch.from_numpy(x)).double().numpy()
    ref = numpy_log_mel(x)
    assert ours.shape == ref.shape == (80, 1 + 8000 // 143)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=0)


def test_filterbank_triangles():
    fb = mel_filterbank(513, 0.0, 8000.0, 80, 16000)
    assert fb.shape == (513, 80) and (fb >= 0).all() and fb.max() <= 1.0 + 1e-6
    peaks = fb.argmax(0)
    assert torch.all(peaks[1:] >= peaks[:-1])  # centres increase with the band index


def test_xkd_shape_normalisation_and_batching():
    spec = LogMelSpectrogram()
    x = torch.randn(3, 64000) * 0.1
    out = spec(x)
    assert out.shape == (3, 80, 448) == (3, 80, xkd_num_frames(4.0))
    raw = LogMelSpectrogram(normalize=False)(x)
    torch.testing.assert_close(out, (raw + 5.3688) / 4.4100)
    torch.testing.assert_close(spec(x[1]), out[1], atol=1e-5, rtol=1e-5)


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match="waveform"):
        LogMelSpectrogram()(torch.zeros(1, 2, 100))


def test_buffers_follow_the_module():
    spec = LogMelSpectrogram().to(torch.float64)  # buffers move like a model's would
    assert spec.window.dtype == torch.float64 and spec(torch.zeros(2000)).shape == (80, 14)
