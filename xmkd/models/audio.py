"""The audio front end: log-mel spectrograms with XKD's parameters, batched and device-agnostic, and
the audio views XKD trains on (waveform crops, volume jitter, spectrogram crops), all on the batch's
device, so a LightningModule turns a batch's waveform into model inputs without the data layer.

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


# ------------------------------------------------------------------------------ audio views
def volume_jitter(
    waveform: torch.Tensor, jitter: float = 0.2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Scale each waveform by a gain drawn uniformly from ``[1 - jitter, 1 + jitter]``.

    ``(N,)`` gets one gain, ``(B, N)`` one gain per row (XKD's audio volume jitter of +-0.2).
    """
    shape = (1,) if waveform.dim() == 1 else (waveform.shape[0], 1)
    u = torch.rand(shape, generator=generator, device=waveform.device if generator is None else "cpu")
    gain = (1 - jitter + 2 * jitter * u).to(device=waveform.device, dtype=waveform.dtype)
    return waveform * gain


def spectrogram_local_views(
    spec: torch.Tensor,
    num_views: int,
    crop_frames: int = 112,
    scale: tuple[float, float] = (0.6, 1.5),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random resized crops along time of a batch of spectrograms, on the spectrogram's device.

    ``spec (B, F, T)`` -> ``(B, num_views, F, crop_frames)``. For each sample and view a segment
    of ``w = crop_frames * U(scale)`` frames (clipped to ``[1, T]``) starts at a random frame and
    is linearly resized to ``crop_frames`` (1 s of XKD audio is 112 frames). Interpretation: XKD
    names a "random resized crop" for the 1 s audio local view without its range; the time-stretch
    range (0.6, 1.5) relative to the output follows BYOL-A's random resize crop.
    Linear interpolation matches ``F.interpolate(mode="linear", align_corners=False)``.
    """
    if spec.dim() != 3:
        raise ValueError(f"expected spectrograms (B, F, T), got shape {tuple(spec.shape)}")
    b, _, t = spec.shape
    dev = spec.device
    u = torch.rand(2, b, num_views, generator=generator, device="cpu" if generator is not None else dev).to(
        dev
    )
    width = (crop_frames * (scale[0] + (scale[1] - scale[0]) * u[0])).floor().clamp(1, t)
    start = ((t - width + 1) * u[1]).floor().clamp(max=t - width)
    return crop_resize_time(spec, start.long(), width.long(), crop_frames)


def crop_resize_time(
    spec: torch.Tensor, start: torch.Tensor, width: torch.Tensor, out_frames: int
) -> torch.Tensor:
    """``spec (B, F, T)``, ``start``/``width`` ``(B, V)`` frames -> ``(B, V, F, out_frames)``.

    Segment ``spec[b, :, start:start + width]`` linearly resized to ``out_frames``, vectorised
    with two gathers (same sampling as ``F.interpolate(mode="linear", align_corners=False)``).
    """
    b, f, t = spec.shape
    v = start.shape[1]
    step = (width.to(spec.dtype) / out_frames)[..., None]
    j = torch.arange(out_frames, device=spec.device, dtype=spec.dtype)
    src = ((j + 0.5) * step - 0.5).clamp(min=0)  # (B, V, out) in segment coordinates
    lo = src.floor()
    frac = (src - lo)[:, :, None, :]
    last = width[..., None] - 1
    lo_i = torch.minimum(lo.long(), last)
    hi_i = torch.minimum(lo_i + 1, last)
    src_spec = spec[:, None].expand(b, v, f, t)

    def gather(idx: torch.Tensor) -> torch.Tensor:
        return torch.gather(src_spec, 3, (start[..., None] + idx)[:, :, None, :].expand(b, v, f, out_frames))

    return gather(lo_i) * (1 - frac) + gather(hi_i) * frac


# --------------------------------------------------------------------------- the release's audio views


def random_waveform_crops(
    waveform: torch.Tensor, num_views: int, length: int, step: int = 100
) -> torch.Tensor:
    """``waveform (B, N)`` -> ``(B, num_views, length)`` crops, each at its own random start.

    The release's audio local view: an independent crop of the raw waveform (1 s of the 4 s clip)
    whose start is a random multiple of ``step`` samples (100) in ``[0, N - length]``.
    """
    if waveform.dim() != 2:
        raise ValueError(f"expected waveforms (B, N), got shape {tuple(waveform.shape)}")
    b, n = waveform.shape
    if length > n:
        raise ValueError(f"a {length}-sample crop does not fit a {n}-sample waveform")
    starts = torch.randint(0, (n - length) // step + 1, (b, num_views), device=waveform.device) * step
    idx = starts[..., None] + torch.arange(length, device=waveform.device)
    return torch.gather(waveform[:, None].expand(b, num_views, n), 2, idx)


def bicubic_crop_matrix(
    start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int
) -> torch.Tensor:
    """``(K, out_size, in_size)`` matrices: row r of ``x @ M.T`` resamples ``x[start:start + length]``
    to ``out_size`` points as ``F.interpolate(mode="bicubic", align_corners=True)`` of that crop.

    Source point of output j: ``start + j (length - 1) / (out_size - 1)``; Keys' cubic (a = -0.75)
    over the four neighbours, indices clamped to the crop (PyTorch's border handling).
    """
    a = -0.75
    dtype = torch.float64
    start, length = start.to(dtype)[:, None], length.to(dtype)[:, None]
    j = torch.arange(out_size, device=start.device, dtype=dtype)[None]
    scale = (length - 1) / (out_size - 1) if out_size > 1 else torch.zeros_like(length)
    real = j * scale
    base = real.floor()
    t = real - base
    mats = torch.zeros(start.shape[0], out_size, in_size, device=start.device, dtype=dtype)
    for k, d in enumerate((1 + t, t, 1 - t, 2 - t)):
        near = ((a + 2) * d - (a + 3)) * d * d + 1  # |d| <= 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # 1 < |d| < 2
        weight = near if k in (1, 2) else far
        idx = start + torch.minimum(torch.clamp(base + (k - 1), min=0), length - 1)
        mats.scatter_add_(2, idx.long()[..., None], weight[..., None])
    return mats


def sample_spectrogram_crops(
    n: int,
    size: tuple[int, int],
    canvas_scale: tuple[float, float] = (1.0, 1.5),
    freq_scale: tuple[float, float] = (0.6, 1.5),
    time_scale: tuple[float, float] = (0.6, 1.5),
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, ...]:
    """``n`` crop boxes ``(top, left, height, width)`` on the canvas of BYOL-A's random resize crop.

    As the release's ``RandomResizeCrop.get_params``: the canvas is ``int(size * canvas_scale)``
    per axis; height ``int(U(freq_scale) * F)`` and width ``int(U(time_scale) * T)``, clipped to
    ``[1, canvas]``; the corner uniform over the canvas positions where the box fits.
    """
    (f, t), (cf, ct) = size, canvas_size(size, canvas_scale)
    u = torch.rand(4, n, device=device, dtype=torch.float64)
    h = (freq_scale[0] + (freq_scale[1] - freq_scale[0]) * u[0]).mul(f).floor().clamp(1, cf)
    w = (time_scale[0] + (time_scale[1] - time_scale[0]) * u[1]).mul(t).floor().clamp(1, ct)
    top = (u[2] * (cf - h + 1)).floor().clamp(max=cf - h)
    left = (u[3] * (ct - w + 1)).floor().clamp(max=ct - w)
    return top.long(), left.long(), h.long(), w.long()


def canvas_size(size: tuple[int, int], canvas_scale: tuple[float, float]) -> tuple[int, int]:
    return int(size[0] * canvas_scale[0]), int(size[1] * canvas_scale[1])


def spectrogram_resized_crop(
    spec: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
    canvas_scale: tuple[float, float] = (1.0, 1.5),
) -> torch.Tensor:
    """BYOL-A's random resize crop of ``spec (K, F, T)`` with given boxes, all views at once.

    Each spectrogram is centred on a zero canvas (``canvas_size``; zero is the normalised
    log-mel's mean), the box is cut from the canvas and resized back to ``(F, T)`` bicubically
    (``align_corners=True``), as the release does view by view; here as ``R @ canvas @ C.T`` with
    per-view bicubic matrices (:func:`bicubic_crop_matrix`), one batched product for the batch.
    """
    if spec.dim() != 3:
        raise ValueError(f"expected spectrograms (K, F, T), got shape {tuple(spec.shape)}")
    k, f, t = spec.shape
    cf, ct = canvas_size((f, t), canvas_scale)
    canvas = spec.new_zeros(k, cf, ct)
    y, x = (cf - f) // 2, (ct - t) // 2
    canvas[:, y : y + f, x : x + t] = spec
    rows = bicubic_crop_matrix(top, height, cf, f).to(spec.dtype)
    cols = bicubic_crop_matrix(left, width, ct, t).to(spec.dtype)
    return rows @ canvas @ cols.transpose(1, 2)


def release_audio_local_views(
    spec: torch.Tensor,
    canvas_scale: tuple[float, float] = (1.0, 1.5),
    freq_scale: tuple[float, float] = (0.6, 1.5),
    time_scale: tuple[float, float] = (0.6, 1.5),
) -> torch.Tensor:
    """The release's random resize crop of each local spectrogram ``(K, F, T)``, boxes drawn here."""
    boxes = sample_spectrogram_crops(
        spec.shape[0], tuple(spec.shape[-2:]), canvas_scale, freq_scale, time_scale, spec.device
    )
    return spectrogram_resized_crop(spec, *boxes, canvas_scale=canvas_scale)
