"""Log-mel spectrograms with XKD's parameters, batched and device-agnostic.

XKD (METHODS.md part A): 16 kHz mono, STFT n_fft 1024 / win 1024 / hop 143, 80 mel bins over
0-8 kHz, power 2, ``log(x + eps)``, normalised with mean -5.3688 and std 4.4100, so 4 s of audio
(64,000 samples) becomes an 80 x 448 spectrogram.

Implementation choices (documented because they change the numbers):
- ``torch.stft`` with a periodic Hann window, ``center=True`` and reflect padding (torchaudio's
  ``MelSpectrogram`` defaults), which is what gives ``1 + N // hop`` = 448 frames for 4 s.
- The mel filterbank is the HTK mel scale (``mel = 2595 log10(1 + f / 700)``) with triangular
  filters and no area normalisation, exactly torchaudio's ``melscale_fbanks`` default
  (``mel_scale="htk"``, ``norm=None``); it is built once here so torchaudio is not a dependency.
"""

from __future__ import annotations

import math

import torch
from torch import nn

XKD_AUDIO_MEAN = -5.3688
XKD_AUDIO_STD = 4.4100


def hz_to_mel_htk(freq: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def mel_to_hz_htk(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-mel filterbank ``(n_freqs, n_mels)``, as torchaudio's ``melscale_fbanks``."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(
        float(hz_to_mel_htk(f_min)), float(hz_to_mel_htk(f_max)), n_mels + 2, dtype=torch.float64
    )
    f_pts = mel_to_hz_htk(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0).to(torch.float32)


class LogMelSpectrogram(nn.Module):
    """Waveform ``(B, N)`` or ``(N,)`` -> normalised log-mel ``(B, n_mels, frames)`` (or unbatched).

    Runs on whatever device the module (its filterbank and window buffers) is on; the input is
    moved there. ``normalize=False`` returns the raw ``log(mel + eps)``.

    ``eps`` (default 1e-6) is an interpretation: XKD states ``log(x + eps)`` without the value.
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
        eps: float = 1e-6,
        mean: float = XKD_AUDIO_MEAN,
        std: float = XKD_AUDIO_STD,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.power, self.eps, self.mean, self.std, self.normalize = power, eps, mean, std, normalize
        f_max = f_max if f_max is not None else sample_rate / 2
        self.register_buffer("window", torch.hann_window(win_length, periodic=True), persistent=False)
        fb = mel_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)
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
