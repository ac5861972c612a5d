"""XKD's video views for a whole batch: parameters drawn per clip, pixels transformed per batch.

:class:`~xmkd.data.datasets.transforms.XKDVideoViews` augments one clip at a time in the dataset (about 60
small tensor ops per clip and view, and a float copy of every view through the collate).
:class:`XKDBatchViews` splits that work in two:

1. :meth:`XKDBatchViews.draw` (in the dataset, per item): the clip's random parameters, a few
   numbers (crop boxes, flips, jitter switches, op orders and factors, grayscale, blur sigmas,
   local window starts), drawn from torch's global generator. Under
   :class:`~xmkd.fault.ResumableDataLoader` every item runs under its own (seed, epoch, index)
   seed, so the augmentation stays a function of (seed, epoch, item), whatever the batch, the
   workers or a mid-epoch resume, exactly as the per-clip path's.
2. :meth:`XKDBatchViews.apply` (once per batch, after the transfer to the device, see
   ``TrimmedVideoDataModule.on_after_batch_transfer``): the decoded uint8 clips
   ``(B, T, H, W, C)`` become the normalised views with batched ops over per-sample parameters.

The distribution is that of ``XKDVideoViews``: torchvision's random-resized-crop sampling (scale,
log-uniform aspect ratio 3/4-4/3, ten tries, centre-crop fallback), the antialiased bilinear resize,
flip p 0.5, ``ClipColorJitter`` (``color_jitter_p``, 1 as released, random op order, its ops via ``ClipColorJitter.apply_op``),
grayscale p 0.2, Gaussian blur p 0.5 with sigma ~ U(0.1, 2) (kernel 9, reflect padding), ImageNet
normalisation. The parameters come from other random draws than the per-clip path's, so a seed gives
other views; the distribution is the same (tests compare it with torchvision's sampling).

On the CPU (the default ``resize`` / ``jitter`` ``auto``) every pixel is the per-clip path's for the
same parameters, up to float summation order (the blur is separable here): the crop is resized by
ATen's antialiased kernel on the uint8 crop, clip by clip (cheap), and the colour jitter runs the
per-clip ops clip by clip, in place (faster on a CPU than a batched form, whose per-position colour
map touches every pixel for every op; the jittered views are cache-sized there). Grayscale, blur
(two batched matmuls with per-sample banded matrices) and the normalisation, which writes the
``(B, C, T, H, W)`` output in one pass, are batched. Off the CPU, the crop and resize is one batched
matmul with per-sample resampling matrices of the same antialiased-bilinear weights
(:func:`resample_matrix`, not rounded to uint8: within half a grey level before the jitter) and the
jitter a batched per-pixel colour map per op position (:func:`apply_color_jitter`): no per-clip
launches.

Clips of different sizes are padded to the batch's largest (:func:`pad_clips`); each crop box lies
inside its own clip, so padding is never read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from xmkd.data.datasets.transforms import (
    _RGB_TO_YIQ,
    GRAY_WEIGHTS,
    LINEAR_EVAL_CROP_SCALE,
    ClipColorJitter,
    XKDViewSpec,
    luma,
)

__all__ = [
    "AUGMENT_KEY",
    "RAW_VIDEO_KEY",
    "XKDBatchViews",
    "apply_color_jitter",
    "color_jitter_params",
    "crop_resize",
    "gaussian_blur",
    "hue_matrices",
    "pad_clips",
    "resample_matrix",
    "resized_crop_box",
    "sample_color_jitter",
    "sample_resized_crop_boxes",
]

#: Batch keys of the batch path: the decoded uint8 clips and their augmentation parameters.
RAW_VIDEO_KEY = "video_raw"
AUGMENT_KEY = "augment"

# ------------------------------------------------------------------------------------ parameters


#: Uniform draws one random-resized-crop box consumes: ten tries of (area, log-ratio), then (top, left).
CROP_DRAWS = 22
#: Uniform draws of one colour jitter: on/off, the op order (argsort of four), four factors.
JITTER_DRAWS = 9


def resized_crop_box(
    u: Iterator[float], height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of ``v2.RandomResizedCrop``'s sampling from :data:`CROP_DRAWS` uniforms.

    Up to ten draws of an area fraction ``U(scale)`` and a log-uniform aspect ratio; the first box
    that fits is placed uniformly; if none fits, the centre crop of the largest box within ``ratio``.
    Python's ``round`` (half to even), as torchvision.
    """
    area = height * width
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    draws = [next(u) for _ in range(CROP_DRAWS)]
    for k in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * draws[2 * k])
        aspect = math.exp(lr0 + (lr1 - lr0) * draws[2 * k + 1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(draws[20] * (height - h + 1)), height - h)
            left = min(int(draws[21] * (width - w + 1)), width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def color_jitter_params(
    u: Iterator[float], amounts: tuple[float, float, float, float], p: float
) -> tuple[bool, list[int], list[float]]:
    """(on, op order, factors) of ``RandomApply([ClipColorJitter], p)`` from :data:`JITTER_DRAWS` uniforms.

    Ops: 0 brightness, 1 contrast, 2 saturation (factors ``U(max(0, 1 - a), 1 + a)``), 3 hue
    (shift ``U(-a, a)`` turns); an op whose amount is 0 gets the identity (1, or 0 for hue).
    """
    on = next(u) < p
    keys = [next(u) for _ in range(4)]
    order = sorted(range(4), key=keys.__getitem__)  # a uniformly random permutation
    factors = []
    for i, a in enumerate(amounts):
        v = next(u)
        if i == 3:
            factors.append(-a + 2 * a * v)
        else:
            factors.append(max(0.0, 1 - a) + (1 + a - max(0.0, 1 - a)) * v if a > 0 else 1.0)
    return on, order, factors


def _uniforms(n: int, k: int, generator: torch.Generator | None) -> list[list[float]]:
    """``n`` rows of ``k`` uniforms in [0, 1) from torch's generator (one call, as Python floats)."""
    return torch.rand(n, k, generator=generator, dtype=torch.float64).tolist()


def sample_resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """``n`` boxes of :func:`resized_crop_box`, ``(n, 4)`` int64 (top, left, height, width)."""
    rows = _uniforms(n, CROP_DRAWS, generator)
    return torch.tensor([resized_crop_box(iter(r), height, width, scale, ratio) for r in rows]).view(n, 4)


def sample_color_jitter(
    n: int,
    amounts: tuple[float, float, float, float],
    p: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(on (n,) bool, op order (n, 4) int64, factors (n, 4)) of :func:`color_jitter_params`."""
    params = [color_jitter_params(iter(r), amounts, p) for r in _uniforms(n, JITTER_DRAWS, generator)]
    on, order, factors = zip(*params) if params else ((), (), ())
    return (
        torch.tensor(on, dtype=torch.bool),
        torch.tensor(order).view(n, 4),
        torch.tensor(factors).view(n, 4),
    )


# ------------------------------------------------------------------------------------ geometry


def resample_matrix(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """``(N, out_size, in_size)`` weights of an antialiased bilinear resize of ``[start, start+length)``.

    The weights of ATen's ``_upsample_bilinear2d_aa`` (``F.interpolate(..., mode="bilinear",
    antialias=True, align_corners=False)``): a triangle filter of support ``max(scale, 1)`` around
    each output pixel's centre, clipped to the segment and normalised, so a row of the matrix times
    the input row is the resized segment; nothing outside the segment is read.
    """
    dev = start.device
    scale = length.double() / out_size  # (N,)
    support = torch.where(scale >= 1, scale, 1.0)
    invscale = torch.where(scale >= 1, 1.0 / scale, 1.0)
    centre = scale[:, None] * (torch.arange(out_size, device=dev, dtype=torch.float64) + 0.5)
    lo = (centre - support[:, None] + 0.5).floor().clamp(min=0)  # C++ truncation of a value >= -0.5
    hi = torch.minimum((centre + support[:, None] + 0.5).floor(), length.double()[:, None])
    j = torch.arange(in_size, device=dev, dtype=torch.float64) - start.double()[:, None]  # segment coords
    j = j[:, None, :]  # (N, 1, in)
    w = (1 - ((j - centre[..., None] + 0.5) * invscale[:, None, None]).abs()).clamp(min=0)
    w = torch.where((j >= lo[..., None]) & (j < hi[..., None]), w, 0.0)
    return (w / w.sum(-1, keepdim=True).clamp_min(1e-300)).float()


def crop_resize(
    clips: Tensor,
    boxes: Tensor,
    size: int,
    flip: Tensor | None = None,
    method: str = "auto",
    out: Tensor | None = None,
    work: Tensor | None = None,
) -> Tensor:
    """Crop ``boxes`` (N, 4) of ``clips`` (N, t, C, H, W), resize to ``size``, flip -> float [0, 1].

    ``method``: ``loop`` (ATen's antialiased bilinear kernel per clip on the uint8 crop, rounded to
    uint8: exactly what ``v2.RandomResizedCrop`` computes), ``matmul`` (per-sample resampling
    matrices, batched, not rounded), ``auto`` (loop on the CPU, matmul elsewhere).
    Returns ``(N, t, C, size, size)`` float32 in [0, 1], in ``out`` if given (``loop`` uses ``work``,
    ``(N, t, size, size, C)`` uint8, as its scratch if given).
    """
    n = clips.shape[0]
    if method == "auto":
        method = "loop" if clips.device.type == "cpu" else "matmul"
    boxes = boxes.to(clips.device)
    if method == "loop":
        # ATen's uint8 kernel is fastest on channels-last frames (the decoded layout); the planar
        # float layout the colour ops want comes from one conversion pass over the whole batch.
        t, c = clips.shape[1:3]
        if work is None:
            work = torch.empty(n, t, size, size, c, dtype=clips.dtype, device=clips.device)
        flips = [False] * n if flip is None else flip.tolist()
        for i, (top, left, h, w) in enumerate(boxes.tolist()):
            view = TF.resize(clips[i, ..., top : top + h, left : left + w], [size, size], antialias=True)
            work[i] = (view.flip(-1) if flips[i] else view).permute(0, 2, 3, 1)
        if out is None:
            out = torch.empty(n, t, c, size, size, device=clips.device)
        return out.copy_(work.permute(0, 1, 4, 2, 3)).mul_(1.0 / 255)  # TF.to_dtype(scale=True)'s arithmetic
    if method != "matmul":
        raise ValueError(f"method must be auto | loop | matmul, got {method!r}")
    h, w = clips.shape[-2:]
    ry = resample_matrix(boxes[:, 0], boxes[:, 2], h, size)  # (N, S, H)
    rx = resample_matrix(boxes[:, 1], boxes[:, 3], w, size)  # (N, S, W)
    if flip is not None:
        rx = torch.where(flip.to(rx.device)[:, None, None], rx.flip(1), rx)
    x = clips.float() if clips.dtype == torch.uint8 else clips
    scale = 1 / 255 if clips.dtype == torch.uint8 else 1.0
    rows = torch.matmul(ry[:, None, None], x)  # (N, t, C, S, W)
    resized = torch.matmul(rows, (rx * scale).transpose(1, 2)[:, None, None])  # (N, t, C, S, S)
    return resized.clamp_(0, 1) if out is None else out.copy_(resized).clamp_(0, 1)


def pad_clips(clips: Sequence[Tensor]) -> Tensor:
    """Stack uint8 clips ``(T, H, W, C)`` of possibly different H, W, zero-padded to the largest."""
    hmax = max(c.shape[1] for c in clips)
    wmax = max(c.shape[2] for c in clips)
    if all(c.shape[1] == hmax and c.shape[2] == wmax for c in clips):
        return torch.stack(list(clips))
    out = clips[0].new_zeros(len(clips), clips[0].shape[0], hmax, wmax, clips[0].shape[3])
    for i, c in enumerate(clips):
        out[i, :, : c.shape[1], : c.shape[2]] = c
    return out


# ------------------------------------------------------------------------------------ colour


def hue_matrices(shift: Tensor) -> Tensor:
    """``(N, 3, 3)`` RGB maps of :func:`~xmkd.data.datasets.transforms.yiq_hue_shift` for shifts (N,) in turns."""
    theta = 2 * math.pi * shift.double()
    rot = torch.zeros(shift.shape[0], 3, 3, dtype=torch.float64, device=shift.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1] = rot[:, 2, 2] = theta.cos()
    rot[:, 1, 2] = -theta.sin()
    rot[:, 2, 1] = theta.sin()
    yiq = _RGB_TO_YIQ.to(device=shift.device, dtype=torch.float64)
    return (torch.linalg.inv(yiq) @ rot @ yiq).float()


def _colour_map(x: Tensor, m: Tensor, bias: Tensor | None) -> Tensor:
    """``clamp(m x + bias, 0, 1)`` of ``x (N, t, 3, h, w)`` with per-sample ``m (N, 3, 3)``, a new tensor."""
    out = torch.empty_like(x)
    r, g, b = x.unbind(2)
    for i in range(3):
        plane = out[:, :, i]
        torch.mul(r, m[:, i, 0].view(-1, 1, 1, 1), out=plane)
        plane.addcmul_(g, m[:, i, 1].view(-1, 1, 1, 1)).addcmul_(b, m[:, i, 2].view(-1, 1, 1, 1))
    if bias is not None:
        out.add_(bias)
    return out.clamp_(0, 1)


def apply_color_jitter(
    x: Tensor, apply: Tensor, order: Tensor, factors: Tensor, method: str = "auto"
) -> Tensor:
    """``ClipColorJitter`` on a batch ``x (N, t, 3, h, w)`` in [0, 1] with per-sample parameters.

    ``factors`` as :func:`sample_color_jitter`. ``method``: ``loop`` runs
    :meth:`ClipColorJitter.apply_op <xmkd.data.datasets.transforms.ClipColorJitter.apply_op>` clip by clip,
    in place (on a CPU the fastest: each op touches only what it changes, in cache); ``batched``
    writes every op as a per-pixel affine colour map followed by the clamp (brightness f I,
    contrast f I plus (1 - f) times the frame's mean grey, saturation f I + (1 - f) f 1 w^T as the
    per-clip op computes it, hue the YIQ rotation) and applies position k of every sample's op order
    as one batched map, the identity where the jitter is off (no per-sample launches: for a GPU);
    ``auto``: loop on the CPU. May work in place; returns the result.
    """
    if method == "auto":
        method = "loop" if x.device.type == "cpu" else "batched"
    if method == "loop":
        for i, on, ops, fs in zip(range(x.shape[0]), apply.tolist(), order.tolist(), factors.tolist()):
            if on:
                clip = y = x[i]
                for op in ops:
                    y = ClipColorJitter.apply_op(y, op, fs[op])  # in place, but hue returns a new clip
                if y is not clip:
                    clip.copy_(y)
        return x
    if method != "batched":
        raise ValueError(f"method must be auto | loop | batched, got {method!r}")
    n = x.shape[0]
    dev = x.device
    apply, order, factors = apply.to(dev), order.to(dev), factors.to(dev)
    eye = torch.eye(3, device=dev).expand(n, 3, 3)
    w = torch.tensor(GRAY_WEIGHTS, device=dev)
    for k in range(4):
        op = torch.where(apply, order[:, k], -1)
        f = factors.gather(1, order[:, k : k + 1])[:, 0]
        fm = f.view(-1, 1, 1)
        scaled = fm * eye
        saturation = scaled + ((1 - fm) * fm) * w.view(1, 1, 3)
        hue = hue_matrices(torch.where(op == 3, f, 0.0))
        m = torch.where(((op == 0) | (op == 1)).view(-1, 1, 1), scaled, eye)
        m = torch.where((op == 2).view(-1, 1, 1), saturation, m)
        m = torch.where((op == 3).view(-1, 1, 1), hue, m)
        # contrast: blend with each frame's mean grey (computed for every sample: no host sync)
        mean = luma(x).mean(dim=(-3, -2, -1))  # (N, t)
        bias = torch.where((op == 1)[:, None], (1 - f)[:, None] * mean, 0.0)[..., None, None, None]
        x = _colour_map(x, m, bias)
    return x


def blur_matrix(sigma: Tensor, size: int, kernel_size: int = 9) -> Tensor:
    """``(N, size, size)``: row j holds the Gaussian taps of output pixel j over reflect-padded input.

    torchvision's ``gaussian_blur`` kernel (``softmax(-(x / sigma)^2)`` over ``linspace(-lim, lim)``,
    ``lim = (k - 1) / (2 sqrt 2)``) with reflect padding folded in, so ``B @ row`` is the 1-d blur.
    """
    dev = sigma.device
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    grid = torch.linspace(-lim, lim, kernel_size, device=dev)
    k1d = torch.softmax(-(grid[None] / sigma.float()[:, None]).pow(2), dim=1)  # (N, k)
    pad = kernel_size // 2
    if size <= pad:
        raise ValueError(f"reflect padding of {pad} needs more than {pad} pixels, got {size}")
    src = torch.arange(size, device=dev)[:, None] + torch.arange(kernel_size, device=dev) - pad  # (size, k)
    src = src.abs()
    src = torch.where(src >= size, 2 * (size - 1) - src, src)  # reflect (edge pixel not repeated)
    out = torch.zeros(sigma.shape[0], size, size, device=dev)
    return out.scatter_add_(2, src.expand(sigma.shape[0], -1, -1), k1d[:, None, :].expand(-1, size, -1))


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int = 9) -> Tensor:
    """Blur each sample of ``x (N, t, C, h, w)`` with its own ``sigma (N,)`` (kernel 9, reflect padding).

    torchvision's ``v2.GaussianBlur`` for each clip, applied separably as two batched matmuls with
    :func:`blur_matrix` (the same taps; the sums in another order).
    """
    n, t, c, h, w = x.shape
    bw = blur_matrix(sigma, w, kernel_size)  # (N, w, w)
    bh = blur_matrix(sigma, h, kernel_size)  # (N, h, h)
    rows = torch.bmm(x.reshape(n, t * c * h, w), bw.transpose(1, 2)).view(n, t * c, h, w)
    return torch.matmul(bh[:, None], rows).view(n, t, c, h, w)


def _normalise_cthw(x: Tensor, mean: Tensor, std: Tensor, out: Tensor) -> Tensor:
    """``out (N, C, t, h, w) <- (x (N, t, C, h, w) - mean) / std`` (``out`` contiguous, written in order)."""
    torch.sub(x.transpose(1, 2), mean.view(1, -1, 1, 1, 1), out=out)
    return out.div_(std.view(1, -1, 1, 1, 1))


def _where_samples(select: Tensor, fn: Any, x: Tensor) -> Tensor:
    """``x`` with ``fn`` applied to the samples where ``select`` (N,) is True (``fn`` gets only those)."""
    if not bool(select.any()):
        return x
    if bool(select.all()):
        return fn(x)
    idx = select.nonzero()[:, 0]
    # in place: the views are this transform's own tensors (whole samples: index_select/index_copy_)
    return x.index_copy_(0, idx, fn(x.index_select(0, idx)))


# ------------------------------------------------------------------------------------ the views


@dataclass(eq=False, repr=False)
class XKDBatchViews(XKDViewSpec):
    """The views of :class:`~xmkd.data.datasets.transforms.XKDVideoViews`, drawn per clip, applied per batch.

    Same arguments and defaults as ``XKDVideoViews`` (``hue_mode`` must be ``yiq``). In the
    dataset, ``views.sample(clip)`` (or ``views(clip)``) returns ``{"video_raw": clip, "augment":
    params}``; after collation (:func:`pad_clips` for clips of several sizes)
    ``views.apply(batch["video_raw"], batch["augment"])`` returns ``video`` ``(B, 3, T, size,
    size)``, ``video_local`` ``(B, L, 3, local_frames, local_size, local_size)`` and, with
    ``probe_view``, ``video_probe`` ``(B, 3, T, size, size)``: float, normalised, contiguous.

    ``resize``: ``auto | loop | matmul`` (see :func:`crop_resize`); ``jitter``: ``auto | loop |
    batched`` (see :func:`apply_color_jitter`); ``auto`` picks the per-clip loops on the CPU.

    Examples:
        >>> views = XKDBatchViews(num_frames=8, size=16, local_frames=4, local_size=8)
        >>> items = [views.sample(torch.zeros(8, 24, 32, 3, dtype=torch.uint8)) for _ in range(2)]
        >>> batch = torch.utils.data.default_collate(items)
        >>> out = views.apply(batch["video_raw"], batch["augment"])
        >>> tuple(out["video"].shape), tuple(out["video_local"].shape)
        ((2, 3, 8, 16, 16), (2, 1, 3, 4, 8, 8))
    """

    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    resize: str = "auto"
    jitter: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()  # the checks shared with XKDVideoViews
        if self.hue_mode != "yiq":
            raise ValueError(
                f"the batched views shift hue in YIQ only (hue_mode 'yiq'), got {self.hue_mode!r}"
            )
        if self.resize not in ("auto", "loop", "matmul"):
            raise ValueError(f"resize must be auto | loop | matmul, got {self.resize!r}")
        if self.jitter not in ("auto", "loop", "batched"):
            raise ValueError(f"jitter must be auto | loop | batched, got {self.jitter!r}")
        self.global_scale, self.local_scale, self.ratio = (
            tuple(self.global_scale),
            tuple(self.local_scale),
            tuple(self.ratio),
        )
        self.color_jitter, self.blur_sigma = tuple(self.color_jitter), tuple(self.blur_sigma)
        self._scratch: dict[str, Tensor] = {}

    # -- per clip (dataset) -----------------------------------------------------------------------

    def draw(
        self, n: int, num_frames: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Parameters of ``n`` clips of ``num_frames x height x width``, each a tensor ``(n, ...)``.

        One ``torch.rand`` call from ``generator`` (None: torch's global one, which
        :class:`~xmkd.fault.ResumableDataLoader` seeds per item), then plain Python arithmetic:
        a few dozen numbers per clip, so a tensor op per number would cost more than the pixels.
        """
        return {
            key: torch.tensor(values)
            for key, values in self._columns(n, num_frames, height, width, generator).items()
        }

    def _columns(
        self, n: int, num_frames: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> dict[str, list[Any]]:
        """:meth:`draw`'s parameters as Python values, one list (over the clips) per key."""
        if num_frames != self.num_frames:
            raise ValueError(f"expected a clip of {self.num_frames} frames, got {num_frames}")
        nl, lt = self.num_local_views, self.local_frames
        per_local = 1 + CROP_DRAWS + 1 + JITTER_DRAWS + 3
        k = CROP_DRAWS + 1 + JITTER_DRAWS + nl * per_local + (CROP_DRAWS + 1) * self.probe_view
        cols: dict[str, list[Any]] = {}

        def put(key: str, value: Any) -> None:
            cols.setdefault(key, []).append(value)

        for row in _uniforms(n, k, generator):
            u = iter(row)
            put("global_box", resized_crop_box(u, height, width, self.global_scale, self.ratio))
            put("global_flip", next(u) < 0.5)
            on, order, factors = color_jitter_params(u, self.color_jitter, self.color_jitter_p)
            put("global_jitter", on)
            put("global_order", order)
            put("global_factors", factors)
            local: dict[str, list[Any]] = {}
            for _ in range(nl):
                start = min(int(next(u) * (num_frames - lt + 1)), num_frames - lt)
                local.setdefault("local_start", []).append(start)
                local.setdefault("local_box", []).append(
                    resized_crop_box(u, height, width, self.local_scale, self.ratio)
                )
                local.setdefault("local_flip", []).append(next(u) < 0.5)
                on, order, factors = color_jitter_params(u, self.color_jitter, self.color_jitter_p)
                local.setdefault("local_jitter", []).append(on and self.local_color_jitter)
                local.setdefault("local_order", []).append(order)
                local.setdefault("local_factors", []).append(factors)
                local.setdefault("local_gray", []).append(next(u) < self.grayscale_p)
                blur = next(u) < self.blur_p
                sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * next(u)
                local.setdefault("local_blur_sigma", []).append(sigma if blur else 0.0)  # 0: no blur
            for key, values in local.items():
                put(key, values)
            if self.probe_view:
                put("probe_box", resized_crop_box(u, height, width, LINEAR_EVAL_CROP_SCALE, self.ratio))
                put("probe_flip", next(u) < 0.5)
        if self.local_temporal != "window":
            del cols["local_start"]
        return cols

    def sample(self, clip: Tensor) -> dict[str, Any]:
        """What the dataset returns for a uint8 clip ``(T, H, W, C)``: the clip and its parameters."""
        if clip.dtype != torch.uint8 or clip.dim() != 4 or clip.shape[-1] not in (1, 3):
            raise ValueError(f"expected a uint8 clip (T, H, W, C), got {clip.dtype} {tuple(clip.shape)}")
        # one small tensor per parameter, made from its Python value: per item, as a dataset runs
        cols = self._columns(1, *clip.shape[:3])
        return {RAW_VIDEO_KEY: clip, AUGMENT_KEY: {k: torch.tensor(v[0]) for k, v in cols.items()}}

    __call__ = sample

    # -- per batch (after the transfer) -----------------------------------------------------------

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A scratch tensor kept from batch to batch (intermediates only, never returned): tens of MB
        allocated afresh per batch cost page faults, in the training step too, as the allocator hands
        the memory back to the system and takes it again."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
            buf = self._scratch[name] = torch.empty(shape, dtype=dtype, device=device)
        return buf

    def _crop_resize(self, name: str, clips: Tensor, boxes: Tensor, size: int, flip: Tensor) -> Tensor:
        n, t, c = clips.shape[:3]
        out = self._buffer(f"{name}_float", (n, t, c, size, size), torch.float32, clips.device)
        work = None
        if self.resize == "loop" or (self.resize == "auto" and clips.device.type == "cpu"):
            work = self._buffer(f"{name}_uint8", (n, t, size, size, c), clips.dtype, clips.device)
        return crop_resize(clips, boxes, size, flip, self.resize, out=out, work=work)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scratch": {}}  # DataLoader workers get the settings, not the buffers

    def _finish(
        self,
        x: Tensor,
        jitter: tuple[Tensor, Tensor, Tensor] | None,
        gray: Tensor | None,
        sigma: Tensor | None,
    ) -> Tensor:
        """Colour jitter, grayscale, blur and normalisation of float views ``(N, t, C, h, w)``."""
        if jitter is not None:
            x = apply_color_jitter(x, *jitter, method=self.jitter)
        if gray is not None:
            x = _where_samples(gray, lambda v: luma(v).expand(-1, -1, 3, -1, -1), x)
        if sigma is not None:
            x = _where_samples(sigma > 0, lambda v: gaussian_blur(v, sigma[sigma > 0], self.blur_kernel), x)
        out = torch.empty(x.shape[0], x.shape[2], x.shape[1], *x.shape[3:], device=x.device)
        mean = torch.tensor(self.mean, device=x.device)
        std = torch.tensor(self.std, device=x.device)
        return _normalise_cthw(x, mean, std, out)

    def apply(self, clips: Tensor, params: Mapping[str, Tensor], probe: bool = True) -> dict[str, Tensor]:
        """The views of a uint8 batch ``(B, T, H, W, C)`` with per-sample ``params`` (see :meth:`draw`).

        ``probe=False`` leaves out ``video_probe`` where ``probe_view`` makes one (nobody reads it:
        the other views are the same, their parameters being drawn independently of it)."""
        if clips.dtype != torch.uint8 or clips.dim() != 5:
            raise ValueError(f"expected uint8 clips (B, T, H, W, C), got {clips.dtype} {tuple(clips.shape)}")
        b, t = clips.shape[:2]
        if t != self.num_frames:
            raise ValueError(f"expected clips of {self.num_frames} frames, got {t}")
        dev = clips.device
        p = {k: v.to(dev) for k, v in params.items()}
        x = clips.permute(0, 1, 4, 2, 3)  # (B, T, C, H, W), a view
        out: dict[str, Tensor] = {}

        views = self._crop_resize("global", x, p["global_box"], self.size, p["global_flip"])
        jitter = (p["global_jitter"], p["global_order"], p["global_factors"])
        out["video"] = self._finish(views, jitter, None, None)

        nl, lt = self.num_local_views, self.local_frames
        if self.local_temporal == "window":
            frames = p["local_start"].reshape(b * nl, 1) + torch.arange(lt, device=dev)
        else:
            frames = torch.linspace(0, t - 1, lt, device=dev).round().long().expand(b * nl, lt)
        owner = torch.arange(b, device=dev).repeat_interleave(nl)  # rows are (sample, view), sample-major
        # whole frames by index_select (advanced indexing copies a uint8 tensor byte by byte)
        rows = (owner[:, None] * t + frames).reshape(-1)
        frame_shape = clips.shape[2:]  # (H, W, C)
        windows = clips.reshape(b * t, *frame_shape).index_select(0, rows).view(b * nl, -1, *frame_shape)
        windows = windows.permute(0, 1, 4, 2, 3)  # (B * L, local_frames, C, H, W)
        local = self._crop_resize(
            "local", windows, p["local_box"].reshape(b * nl, 4), self.local_size, p["local_flip"].reshape(-1)
        )
        local_jitter = None
        if self.local_color_jitter:
            local_jitter = (
                p["local_jitter"].reshape(-1),
                p["local_order"].reshape(-1, 4),
                p["local_factors"].reshape(-1, 4),
            )
        local = self._finish(
            local, local_jitter, p["local_gray"].reshape(-1), p["local_blur_sigma"].reshape(-1)
        )
        # sample-major (b, view) rows -> (B, L, C, t, h, w)
        out["video_local"] = local.view(b, nl, *local.shape[1:])

        if self.probe_view and probe:
            probe_views = self._crop_resize("probe", x, p["probe_box"], self.size, p["probe_flip"])
            out["video_probe"] = self._finish(probe_views, None, None, None)
        return out

    def __repr__(self) -> str:
        return (
            f"XKDBatchViews(frames={self.num_frames}, size={self.size}, local={self.num_local_views}x"
            f"{self.local_frames}x{self.local_size}, probe_view={self.probe_view})"
        )
