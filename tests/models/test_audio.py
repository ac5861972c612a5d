"""LogMelSpectrogram against independent numpy implementations (and librosa, when installed), plus
XKD's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmkd.models.audio import LogMelSpectrogram, mel_filterbank, xkd_num_frames


def slaney_mel(f):
    """Slaney's Auditory Toolbox scale, written from its definition: 3 mels per 200 Hz up to 1 kHz
    (15 mels), then 27 mels per factor of 6.4 in frequency."""
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000, 3 * f / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))


def slaney_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15, 200 * m / 3, 1000 * 6.4 ** ((m - 15) / 27))


def htk_mel(f):
    return 2595 * np.log10(1 + np.asarray(f, dtype=np.float64) / 700)


def htk_hz(m):
    return 700 * (10 ** (np.asarray(m) / 2595) - 1)


def loop_filterbank(sr=16000, n_fft=1024, n_mels=80, fmax=8000.0, scale="htk", area_norm=False) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangles by a loop over bins; ``area_norm``: each scaled to 2 / width."""
    mel, inv = (htk_mel, htk_hz) if scale == "htk" else (slaney_mel, slaney_hz)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = inv(np.linspace(mel(0.0), mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if lo < f <= c:
                fb[m, k] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[m, k] = (hi - f) / (hi - c)
        if area_norm:
            fb[m] *= 2.0 / (hi - lo)
    return fb


def numpy_log_mel(
    x: np.ndarray,
    sr=16000,
    n_fft=1024,
    hop=143,
    n_mels=80,
    fmax=8000.0,
    eps=1e-6,
    scale="htk",
    area_norm=False,
) -> np.ndarray:
    """Loop-style reference: reflect pad, periodic Hann, rfft, power, triangles, log."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    frames = [padded[s : s + n_fft] * window for s in range(0, len(padded) - n_fft + 1, hop)]
    power = np.abs(np.fft.rfft(np.stack(frames), axis=1)) ** 2  # (frames, n_fft//2+1)
    fb = loop_filterbank(sr, n_fft, n_mels, fmax, scale, area_norm)
    return np.log(fb @ power.T + eps)


def _test_signal() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize(("scale", "norm"), [("htk", "none"), ("slaney", "slaney")])
def test_matches_numpy_reference(scale: str, norm: str):
    x = _test_signal()
    mel = LogMelSpectrogram(normalize=False, eps=1e-6, mel_scale=scale, mel_norm=norm)
    ours = mel(torch.from_numpy(x)).double().numpy()
    ref = numpy_log_mel(x, scale=scale, area_norm=norm == "slaney")
    assert ours.shape == ref.shape == (80, 1 + 8000 // 143)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=0)


def test_htk_filterbank_is_torchaudios_documented_default():
    """torchaudio.functional.melscale_fbanks (mel_scale="htk", norm=None), as documented: HTK mel
    points m = 2595 log10(1 + f / 700) equally spaced, f_pts = 700 (10^(m / 2595) - 1), and
    fb[:, i] = max(0, min(-(f_pts[i] - f) / (f_pts[i+1] - f_pts[i]), (f_pts[i+2] - f) / (f_pts[i+2] - f_pts[i+1])))."""
    ref = loop_filterbank(scale="htk").T
    fb = mel_filterbank(513, 0.0, 8000.0, 80, 16000, mel_scale="htk", norm="none")
    assert fb.shape == (513, 80) and fb.max() <= 1.0 + 1e-6
    np.testing.assert_allclose(fb.double().numpy(), ref, atol=1e-6, rtol=0)


def test_slaney_filterbank_closed_form():
    """Slaney scale and area normalisation from their definitions (independent of librosa)."""
    ref = loop_filterbank(scale="slaney", area_norm=True).T
    fb = mel_filterbank(513, 0.0, 8000.0, 80, 16000)  # the default is the release's
    np.testing.assert_allclose(fb.double().numpy(), ref, rtol=1e-5, atol=1e-9)
    # Area normalisation: every triangle integrates to 1 over frequency (in Hz), up to the bins.
    df = 16000 / 1024
    assert np.allclose(fb.double().sum(0).numpy() * df, 1.0, atol=0.05)
    peaks = fb.argmax(0)
    assert torch.all(peaks[1:] >= peaks[:-1])  # centres increase with the band index


def test_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    for kw, ours in (
        ({}, mel_filterbank(513, 0.0, 8000.0, 80, 16000)),
        ({"htk": True, "norm": None}, mel_filterbank(513, 0.0, 8000.0, 80, 16000, "htk", "none")),
        ({"fmin": 60.0, "fmax": 7800.0}, mel_filterbank(513, 60.0, 7800.0, 64, 16000)),
    ):
        n_mels = ours.shape[1]
        ref = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=n_mels, **{"fmin": 0.0, "fmax": 8000.0, **kw})
        np.testing.assert_allclose(ours.T.numpy(), ref, rtol=1e-5, atol=1e-8)


def test_log_mel_matches_the_release_librosa_front_end():
    """The release's SpecAug: librosa.stft (centre, reflect pad as librosa 0.8), the default mel
    filterbank, log(mel + float32 eps), normalised with its constants."""
    librosa = pytest.importorskip("librosa")
    x = _test_signal()
    stft = librosa.stft(x.astype(np.float64), n_fft=1024, hop_length=143, pad_mode="reflect")
    fb = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80, fmin=0.0, fmax=None)
    ref = (np.log(fb @ (np.abs(stft) ** 2 + np.finfo(float).eps) + np.finfo(np.float32).eps) + 5.3688) / 4.41
    ours = LogMelSpectrogram()(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=0)


def test_slaney_and_htk_front_ends_differ_as_the_issue_measured():
    """The release's constants fit the Slaney front end; the HTK one is off by O(1) per bin."""
    x = torch.from_numpy(_test_signal())
    slaney = LogMelSpectrogram()(x)
    htk = LogMelSpectrogram(mel_scale="htk", mel_norm="none")(x)
    assert (slaney - htk).abs().max() > 1.0


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
