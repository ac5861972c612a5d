"""Log-mel spectrograms with XKD's parameters, batched and device-agnostic.

XKD (METHODS.md part A): 16 kHz mono, STFT n_fft 1024 / win 1024 / hop 143, 80 mel bins over
0-8 kHz, power 2, ``log(x + eps)``, normalised with mean -5.3688 and std 4.4100, so 4 s of audio
(64,000 samples) becomes an 80 x 448 spectrogram.

Implementation choices (documented because they change the numbers):
- ``torch.stft`` with a periodic Hann window, ``center=True`` and reflect padding (librosa 0.8's
  ``stft``, which the released code calls, and torchaudio's ``MelSpectrogram``), which is what
  gives ``1 + N // hop`` = 448 frames for 4 s.
- The mel filterbank is, by default, librosa's ``filters.mel`` default, which the release uses and
  for which its normalisation constants were computed: the Slaney mel scale (linear below 1 kHz,
  logarithmic above) with Slaney area normalisation (each triangle scaled by 2 / its width in
  Hz). ``mel_scale="htk"``, ``mel_norm="none"`` is torchaudio's ``melscale_fbanks`` default (HTK
  scale ``mel = 2595 log10(1 + f / 700)``, unnormalised triangles). Built here, so neither
  librosa nor torchaudio is a dependency.
- ``eps`` defaults to the release's ``torch.finfo(torch.float32).eps`` (it also adds float64's
  eps to the power before the filterbank, which moves nothing in float32).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

XKD_AUDIO_MEAN = -5.3688
XKD_AUDIO_STD = 4.4100


MelScale = Literal["slaney", "htk"]
MelNorm = Literal["slaney", "none"]

#: the release's ``log(mel + eps)`` eps: ``torch.finfo().eps`` of float32
XKD_LOG_EPS = float(torch.finfo(torch.float32).eps)

# Slaney's scale: linear (3 mels per 200 Hz) up to 1 kHz, then log with 27 mels per factor 6.4.
_SLANEY_F_SP = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel_htk(freq: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def mel_to_hz_htk(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def hz_to_mel_slaney(freq: torch.Tensor | float) -> torch.Tensor:
    f = torch.as_tensor(freq, dtype=torch.float64)
    log_part = (
        _SLANEY_MIN_LOG_MEL
        + torch.log(f.clamp_min(_SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    )
    return torch.where(f >= _SLANEY_MIN_LOG_HZ, log_part, f / _SLANEY_F_SP)


def mel_to_hz_slaney(mel: torch.Tensor) -> torch.Tensor:
    m = torch.as_tensor(mel, dtype=torch.float64)
    log_part = _SLANEY_MIN_LOG_HZ * torch.exp(
        _SLANEY_LOGSTEP * (m.clamp_min(_SLANEY_MIN_LOG_MEL) - _SLANEY_MIN_LOG_MEL)
    )
    return torch.where(m >= _SLANEY_MIN_LOG_MEL, log_part, _SLANEY_F_SP * m)


def mel_filterbank(
    n_freqs: int,
    f_min: float,
    f_max: float,
    n_mels: int,
    sample_rate: int,
    mel_scale: MelScale = "slaney",
    norm: MelNorm = "slaney",
) -> torch.Tensor:
    """Triangular mel filterbank ``(n_freqs, n_mels)``.

    ``mel_scale="slaney", norm="slaney"``: librosa's ``filters.mel`` default (transposed);
    ``"htk", "none"``: torchaudio's ``melscale_fbanks`` default. Centres are equally spaced on
    the mel scale between ``f_min`` and ``f_max``; each triangle rises from the previous centre and
    falls to the next; ``norm="slaney"`` divides it by half its width in Hz (constant energy per
    channel).
    """
    if mel_scale not in ("slaney", "htk"):
        raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {mel_scale!r}")
    if norm not in ("slaney", "none"):
        raise ValueError(f"mel norm must be 'slaney' or 'none', got {norm!r}")
    to_mel, to_hz = (
        (hz_to_mel_slaney, mel_to_hz_slaney) if mel_scale == "slaney" else (hz_to_mel_htk, mel_to_hz_htk)
    )
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(float(to_mel(f_min)), float(to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    f_pts = to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2:] - f_pts[:-2]))
    return fb.to(torch.float32)


class LogMelSpectrogram(nn.Module):
    """Waveform ``(B, N)`` or ``(N,)`` -> normalised log-mel ``(B, n_mels, frames)`` (or unbatched).

    Runs on whatever device the module (its filterbank and window buffers) is on; the input is
    moved there. ``normalize=False`` returns the raw ``log(mel + eps)``.

    ``mel_scale`` / ``mel_norm``: the filterbank (:func:`mel_filterbank`; default librosa's, as
    the release). ``eps``: the log's floor (default the release's float32 eps).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int = 1024,
        hop_length: int = 143,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        power: float = 2.0,
        eps: float = XKD_LOG_EPS,
        mean: float = XKD_AUDIO_MEAN,
        std: float = XKD_AUDIO_STD,
        normalize: bool = True,
        mel_scale: MelScale = "slaney",
        mel_norm: MelNorm = "slaney",
    ) -> None:
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.power, self.eps, self.mean, self.std, self.normalize = power, eps, mean, std, normalize
        f_max = f_max if f_max is not None else sample_rate / 2
        self.register_buffer("window", torch.hann_window(win_length, periodic=True), persistent=False)
        fb = mel_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, mel_scale, mel_norm)
        self.register_buffer("filterbank", fb.T.contiguous(), persistent=False)  # (n_mels, n_freqs)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` input samples (centred STFT)."""
        return 1 + num_samples // self.hop_length

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        unbatched = waveform.dim() == 1
        x = waveform.unsqueeze(0) if unbatched else waveform
        if x.dim() != 2:
            raise ValueError(f"expected a waveform (N,) or (B, N), got shape {tuple(waveform.shape)}")
        x = x.to(device=self.window.device, dtype=self.window.dtype)
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        # |z|^2 through ``abs`` (hypot) on purpose: re^2 + im^2 is 3x faster on a CPU but rounds
        # differently, and XKD's loss (teacher temperature 0.07, MMD kernels exp(-1000 d^2)) turns
        # that 1e-7 into 1e-4 relative differences of the head gradients within three steps.
        mag = spec.abs()
        power = mag.square() if self.power == 2.0 else mag.pow(self.power)
        mel = torch.matmul(self.filterbank, power)  # (B, n_mels, frames), a fresh tensor
        out = torch.log(mel.add_(self.eps))  # in place where autograd allows it
        if self.normalize:
            out = out.sub_(self.mean).div_(self.std)
        return out.squeeze(0) if unbatched else out


def xkd_num_frames(duration_s: float, sample_rate: int = 16000, hop_length: int = 143) -> int:
    """Spectrogram frames for ``duration_s`` seconds with XKD's STFT (4 s -> 448)."""
    return 1 + math.floor(round(duration_s * sample_rate) / hop_length)
