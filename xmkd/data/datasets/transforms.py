"""Clip-consistent video augmentations (the audio views XKD trains on live in :mod:`xmkd.models.audio`).

Video transforms accept a uint8 clip ``(T, H, W, C)`` as decoded by :func:`read_clip`, or a float
clip ``(C, T, H, W)`` in [0, 1], and return a float, normalised ``(C, T, H, W)`` tensor. The clip is
wrapped as a ``tv_tensors.Video`` ``(T, C, H, W)`` so that every torchvision v2 random transform
draws its parameters once per call: the same crop, flip, jitter, RandAugment ops and erased box for
every frame of the clip. Geometric transforms run on uint8 before the float conversion, so the
expensive resize touches the small output rather than a float copy of the full-size clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tchw(video: torch.Tensor) -> tv_tensors.Video:
    """uint8 ``(T, H, W, C)`` or float ``(C, T, H, W)`` -> a ``Video`` ``(T, C, H, W)`` view."""
    if video.dim() != 4:
        raise ValueError(f"expected a 4-d clip, got shape {tuple(video.shape)}")
    if video.dtype == torch.uint8 and video.shape[-1] in (1, 3):
        return tv_tensors.Video(video.permute(0, 3, 1, 2))
    if video.is_floating_point() and video.shape[0] in (1, 3):
        return tv_tensors.Video(video.permute(1, 0, 2, 3))
    raise ValueError(
        f"expected uint8 (T, H, W, C) or float (C, T, H, W) with C in (1, 3); got {video.dtype} {tuple(video.shape)}"
    )


def _finish(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(T, C, H, W) uint8/float -> normalised float (C, T, H, W)."""
    clip = TF.to_dtype(clip.as_subclass(torch.Tensor), torch.float32, scale=True)
    m = torch.tensor(mean, dtype=clip.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=clip.dtype).view(1, -1, 1, 1)
    return ((clip - m) / s).permute(1, 0, 2, 3).contiguous()


class ClipColorJitter:
    """Colour jitter for a float ``(T, C, H, W)`` clip in [0, 1], one draw per clip.

    Same factors and random op order as ``v2.ColorJitter`` (brightness, contrast against each
    frame's mean grey, saturation against grey), but hue is shifted by rotating chroma in YIQ
    space, a 3x3 linear map, instead of torchvision's RGB->HSV->RGB round trip, which costs
    ~300 ms on a 32-frame 112 px clip on one core (this path: a few ms). ``hue_mode="hsv"`` uses
    torchvision's exact hue op. The YIQ rotation is the classic approximation of an HSV hue shift
    (it keeps luma exactly; saturated colours differ slightly).
    """

    def __init__(
        self,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.2,
        hue_mode: str = "yiq",
    ) -> None:
        if hue_mode not in ("yiq", "hsv"):
            raise ValueError(f"hue_mode must be 'yiq' or 'hsv', got {hue_mode!r}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.hue_mode = hue_mode

    @staticmethod
    def _factor(amount: float) -> float:
        return float(torch.empty(1).uniform_(max(0.0, 1 - amount), 1 + amount))

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        x = clip.as_subclass(torch.Tensor)
        if not x.is_floating_point():
            raise ValueError("ClipColorJitter expects a float clip in [0, 1]")
        x = x.clone()  # the ops below work in place: memory traffic dominates at these sizes
        amounts = (self.brightness, self.contrast, self.saturation, self.hue)
        for op in torch.randperm(4).tolist():
            if amounts[op] <= 0:
                continue
            if op == 3:
                f = float(torch.empty(1).uniform_(-self.hue, self.hue))
            else:
                f = self._factor(amounts[op])
            x = self.apply_op(x, op, f, self.hue_mode)
        return tv_tensors.wrap(x, like=clip) if isinstance(clip, tv_tensors.TVTensor) else x

    @staticmethod
    def apply_op(x: torch.Tensor, op: int, factor: float, hue_mode: str = "yiq") -> torch.Tensor:
        """Op ``op`` (0 brightness, 1 contrast, 2 saturation, 3 hue) with ``factor`` on a float clip.

        Works in place on ``x`` (hue returns a new tensor); :class:`xmkd.data.datasets.batch_transforms.
        XKDBatchViews` applies the same ops with per-clip parameters. Saturation blends with the grey
        of the brightness-scaled clip, ``f x + (1 - f) f grey(x)`` (``x.mul_(f)`` runs before the
        grey is taken), not torchvision's ``f x + (1 - f) grey(x)``: as the shipped recipe trains.
        """
        f = factor
        if op == 0:
            return x.mul_(f).clamp_(0, 1)
        if op == 1:
            mean = luma(x).mean(dim=(-3, -2, -1), keepdim=True)
            return x.mul_(f).add_((1 - f) * mean).clamp_(0, 1)
        if op == 2:
            return x.mul_(f).add_(luma(x), alpha=1 - f).clamp_(0, 1)
        if op == 3:
            return TF.adjust_hue(x, f) if hue_mode == "hsv" else yiq_hue_shift(x, f)
        raise ValueError(f"op must be 0-3, got {op}")


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)

#: torchvision's ``rgb_to_grayscale`` weights.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def luma(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` -> ``(..., 1, H, W)``: ``TF.rgb_to_grayscale`` of a float image, the same ops
    in the same order, without its dispatch (a few us a call, hundreds of calls a batch)."""
    if x.shape[-3] == 1:
        return x.clone()  # already grey, as torchvision returns it
    r, g, b = x.unbind(-3)
    return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(-3)


def yiq_hue_matrix(hue: float) -> torch.Tensor:
    """The float32 RGB map ``YIQ^-1 R(2 pi hue) YIQ`` of :func:`yiq_hue_shift`."""
    theta = torch.tensor(2 * torch.pi * hue)  # float32, as its cos and sin
    c, s = theta.cos().item(), theta.sin().item()
    return _YIQ_TO_RGB @ torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]) @ _RGB_TO_YIQ


def yiq_hue_shift(x: torch.Tensor, hue: float) -> torch.Tensor:
    """Shift hue by ``hue`` turns (in [-0.5, 0.5]) of a float ``(..., 3, H, W)`` image in [0, 1]."""
    m = yiq_hue_matrix(hue).to(dtype=x.dtype).tolist()
    # three explicit linear combinations: ~2x faster than einsum/conv for a 3x3 colour map
    out = torch.empty_like(x)
    r, g, b = x.unbind(-3)
    for i, plane in enumerate(out.unbind(-3)):
        torch.mul(r, m[i][0], out=plane).add_(g, alpha=m[i][1]).add_(b, alpha=m[i][2])
    return out.clamp_(0, 1)


@dataclass(eq=False)
class XKDViewSpec:
    """The arguments of XKD's video views, shared by the per-clip :class:`XKDVideoViews` and the
    per-batch :class:`~xmkd.data.datasets.batch_transforms.XKDBatchViews` (see ``XKDVideoViews`` for what
    each one means); checked once here."""

    num_frames: int = 32
    size: int = 112
    local_frames: int = 8
    local_size: int = 96
    num_local_views: int = 1
    global_scale: tuple[float, float] = (0.2, 1.0)
    local_scale: tuple[float, float] = (0.08, 0.4)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.2)
    color_jitter_p: float = 1.0
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_kernel: int = 9
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    local_temporal: str = "window"
    local_color_jitter: bool = True
    hue_mode: str = "yiq"
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    probe_view: bool = False

    def __post_init__(self) -> None:
        if self.local_temporal not in ("window", "uniform"):
            raise ValueError(f"local_temporal must be 'window' or 'uniform', got {self.local_temporal!r}")
        if self.local_frames > self.num_frames:
            raise ValueError(f"local_frames ({self.local_frames}) > num_frames ({self.num_frames})")
        self.mean, self.std = tuple(self.mean), tuple(self.std)


@dataclass(eq=False, repr=False)
class XKDVideoViews(XKDViewSpec):
    """XKD's global and local video views of one clip.

    Global view: random resized crop (scale ``global_scale`` = [0.2, 1]) to ``size`` (112), colour
    jitter (0.4, 0.4, 0.4, 0.2) with probability ``color_jitter_p`` (1: the released code applies
    it to every view; DINO-style recipes use 0.8), horizontal flip.
    Local views (``num_local_views`` of them): ``local_frames`` (8) consecutive frames at a random
    position in the clip, random resized crop (``local_scale`` = [0.08, 0.4]) to ``local_size``
    (96), grayscale p=0.2, Gaussian blur p=0.5.

    Interpretations (knobs): local frames are a contiguous window (XKD's audio local view is a
    1 s crop, and 8 frames at 8 fps are 1 s) unless ``local_temporal="uniform"``; local views also
    get the flip and colour jitter, as DINO-style local crops do (``local_color_jitter``); blur
    sigma (0.1, 2.0) and ``blur_kernel`` 9 (~10% of 96 px, as DINO's 23 for 224); normalisation
    with ImageNet mean/std; ``hue_mode="yiq"`` is the fast hue shift of :class:`ClipColorJitter`
    (``"hsv"`` for torchvision's exact, ~50x slower one).

    ``probe_view=True`` also returns ``video_probe`` (3, T, size, size): the same frames as the
    linear evaluation augments them (:func:`linear_eval_transform`: random resized crop, flip, no
    colour operations), for an online linear probe that should see what the linear evaluation sees
    rather than the pretraining's colour-jittered views.

    Returns ``{"video": (3, T, size, size), "video_local": (L, 3, local_frames, local_size,
    local_size)}`` (+ ``video_probe``), all float and normalised.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        to_float = v2.ToDtype(torch.float32, scale=True)
        jitter = v2.RandomApply(
            [ClipColorJitter(*self.color_jitter, hue_mode=self.hue_mode)], p=self.color_jitter_p
        )
        # Geometry on uint8 first (cheap, and the resize shrinks the clip), colour on float.
        self.global_view = v2.Compose(
            [
                v2.RandomResizedCrop(self.size, scale=self.global_scale, antialias=True),
                v2.RandomHorizontalFlip(),
                to_float,
                jitter,
            ]
        )
        local = [
            v2.RandomResizedCrop(self.local_size, scale=self.local_scale, antialias=True),
            v2.RandomHorizontalFlip(),
            to_float,
        ]
        if self.local_color_jitter:
            local.append(jitter)
        local += [
            v2.RandomGrayscale(p=self.grayscale_p),
            v2.RandomApply([v2.GaussianBlur(self.blur_kernel, sigma=self.blur_sigma)], p=self.blur_p),
        ]
        self.local_view = v2.Compose(local)
        self.probe_transform = (
            linear_eval_transform(self.size, self.mean, self.std) if self.probe_view else None
        )

    def _local_indices(self, t: int) -> torch.Tensor:
        if self.local_temporal == "uniform":
            return torch.linspace(0, t - 1, self.local_frames).round().long()
        start = int(torch.randint(0, t - self.local_frames + 1, (1,)))
        return torch.arange(start, start + self.local_frames)

    def __call__(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        clip = to_tchw(video)
        if clip.shape[0] != self.num_frames:
            raise ValueError(f"expected a clip of {self.num_frames} frames, got {clip.shape[0]}")
        out = {"video": _finish(self.global_view(clip), self.mean, self.std)}
        locals_ = [
            _finish(
                self.local_view(tv_tensors.wrap(clip[self._local_indices(clip.shape[0])], like=clip)),
                self.mean,
                self.std,
            )
            for _ in range(self.num_local_views)
        ]
        out["video_local"] = torch.stack(locals_)
        if self.probe_transform is not None:
            out["video_probe"] = self.probe_transform(video)
        return out


class VideoTrainTransform:
    """Fine-tuning train transform: random resized crop, h-flip, RandAugment, random erasing.

    Defaults follow the XKD/VideoMAE fine-tuning recipe: RandAugment magnitude 7 with 4 ops
    (torchvision's implementation, one op draw per clip), random erasing p=0.25 filled with normal
    noise after normalisation (VideoMAE's "pixel" mode, same box on every frame). The crop scale
    (0.08, 1) and aspect ratio (3/4, 4/3) are VideoMAE's; an interpretation where XKD is silent.
    """

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        randaug_magnitude: int = 7,
        randaug_num_ops: int = 4,
        erase_p: float = 0.25,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        ops: list[v2.Transform] = [
            v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        if randaug_num_ops > 0:
            ops.append(v2.RandAugment(num_ops=randaug_num_ops, magnitude=randaug_magnitude))
        self.geometric = v2.Compose(ops)
        self.erase = v2.RandomErasing(p=erase_p, value="random") if erase_p > 0 else None

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        clip = _finish(self.geometric(to_tchw(video)), self.mean, self.std)  # (C, T, H, W)
        if self.erase is not None:
            # v2 erases the last two dims of a (T, C, H, W) video with one box for all frames
            clip = self.erase(tv_tensors.Video(clip.permute(1, 0, 2, 3))).as_subclass(torch.Tensor)
            clip = clip.permute(1, 0, 2, 3).contiguous()
        return clip


#: The linear evaluation's crop scale: its "augmented clips" are random resized crops of at least a
#: quarter of the frame (interpretation: the paper says only "augmented").
LINEAR_EVAL_CROP_SCALE = (0.25, 1.0)


def linear_eval_transform(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> VideoTrainTransform:
    """The linear evaluation's training augmentation: random resized crop + flip, nothing else.

    RandAugment and random erasing belong to the fine-tuning recipe; a frozen encoder is probed on
    clips augmented only geometrically, as MAE's linear probing does.
    """
    return VideoTrainTransform(
        size=size, scale=LINEAR_EVAL_CROP_SCALE, randaug_num_ops=0, erase_p=0.0, mean=mean, std=std
    )


class VideoEvalTransform:
    """Eval transform: resize the short side to ``short_side`` then take one of ``num_crops`` crops.

    ``num_crops=1``: the centre crop. ``num_crops=3``: crop index 0, 1, 2 = left, centre, right
    for landscape clips (top, centre, bottom for portrait), the usual 3-crop multi-view testing.
    ``short_side`` defaults to ``size`` (so the 3 crops cover the whole long side).
    """

    def __init__(
        self,
        size: int = 112,
        short_side: int | None = None,
        num_crops: int = 1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        self.size, self.short_side, self.num_crops = size, short_side or size, num_crops
        self.mean, self.std = tuple(mean), tuple(std)

    def _resized(self, video: torch.Tensor) -> torch.Tensor:
        return TF.resize(to_tchw(video).as_subclass(torch.Tensor), [self.short_side], antialias=True)

    def _crop(self, clip: torch.Tensor, crop_index: int) -> torch.Tensor:
        h, w = clip.shape[-2:]
        s = self.size
        if self.num_crops == 1 or crop_index == 1:
            top, left = (h - s) // 2, (w - s) // 2
        elif crop_index in (0, 2):
            frac = crop_index / 2
            top, left = (
                ((h - s) // 2, round((w - s) * frac)) if w >= h else (round((h - s) * frac), (w - s) // 2)
            )
        else:
            raise ValueError(f"crop_index must be in [0, {self.num_crops}), got {crop_index}")
        return _finish(clip[..., top : top + s, left : left + s], self.mean, self.std)

    def __call__(self, video: torch.Tensor, crop_index: int | None = None) -> torch.Tensor:
        """One view ``(C, T, size, size)``; ``crop_index`` None means the centre crop."""
        return self._crop(self._resized(video), 1 if crop_index is None else crop_index)

    def views(self, video: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """All ``num_crops`` views with their crop index, resizing the clip once."""
        clip = self._resized(video)
        indices = [1] if self.num_crops == 1 else [0, 1, 2]
        return [(i, self._crop(clip, i)) for i in indices]


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LINEAR_EVAL_CROP_SCALE",
    "ClipColorJitter",
    "VideoEvalTransform",
    "VideoTrainTransform",
    "XKDVideoViews",
    "linear_eval_transform",
    "to_tchw",
    "yiq_hue_shift",
]
