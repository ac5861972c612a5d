"""Clip samplers: where, inside a trimmed video, each clip starts (pytorchvideo's clip samplers as
small objects; :class:`~xmkd.data.datasets.trimmed.TrimmedVideoDataset` takes one)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from xmkd.errors import ConfigError

__all__ = ["ClipSampler", "RandomClipSampler", "UniformClipSampler"]


@runtime_checkable
class ClipSampler(Protocol):
    """Chooses where, inside a video of ``duration_s``, clip ``clip_index`` of ``num_clips`` starts."""

    num_clips: int

    def __call__(self, duration_s: float, clip_duration_s: float, clip_index: int) -> float: ...


class RandomClipSampler:
    """One uniformly random window per item (training); ``num_clips`` random windows per video.

    ``num_clips > 1`` repeats every video that many times per epoch, each with a fresh random
    window (e.g. the 25 augmented clips per video of the XKD linear-probe training set). Random
    numbers come from torch's global generator, which DataLoader seeds per worker.
    """

    def __init__(self, num_clips: int = 1) -> None:
        if num_clips < 1:
            raise ConfigError("num_clips", f"must be >= 1, got {num_clips}")
        self.num_clips = num_clips

    def __call__(self, duration_s: float, clip_duration_s: float, clip_index: int) -> float:
        latest = max(0.0, duration_s - clip_duration_s)
        return float(torch.rand(()).item()) * latest

    def __repr__(self) -> str:
        return f"RandomClipSampler(num_clips={self.num_clips})"


class UniformClipSampler:
    """``num_clips`` windows spaced evenly from the start to the end of the video (testing).

    Clip ``i`` of ``K`` starts at ``i / (K - 1) * (duration - clip_duration)``, so the first clip
    starts at 0 and the last ends at the end of the video (pytorchvideo's
    ``ConstantClipsPerVideoSampler``); ``K = 1`` takes the centre window
    (interpretation: the papers say "uniformly sampled clips" without the exact placement).
    A video shorter than the clip gives start 0 for every clip (the decoder loops the frames).
    """

    def __init__(self, num_clips: int = 3) -> None:
        if num_clips < 1:
            raise ConfigError("num_clips", f"must be >= 1, got {num_clips}")
        self.num_clips = num_clips

    def __call__(self, duration_s: float, clip_duration_s: float, clip_index: int) -> float:
        if not 0 <= clip_index < self.num_clips:
            raise IndexError(f"clip_index {clip_index} out of range for {self.num_clips} clips")
        latest = max(0.0, duration_s - clip_duration_s)
        if self.num_clips == 1:
            return latest / 2
        return latest * clip_index / (self.num_clips - 1)

    def __repr__(self) -> str:
        return f"UniformClipSampler(num_clips={self.num_clips})"
