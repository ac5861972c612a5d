"""Keep whole decoded videos in memory, so that small datasets are decoded once, not every epoch.

On a 2-core machine, decoding a 4 s synthetic clip (h264 frames plus AAC audio, resampled) costs
about 40 ms of CPU while its XKD augmentations cost about 8 ms, so without a cache the DataLoader
workers take as much CPU as the tiny model's training step. :class:`DecodeCache` decodes a video's
whole clip range once, on the dataset's frame grid (``begin + i / fps``) and with its audio, and
cuts every later clip from memory. Each DataLoader worker holds its own cache, up to ``budget_mb``;
past the budget, videos are decoded per clip as without a cache.

The one difference from decoding per clip: a clip's start is snapped to the nearest frame of that
grid (at most half a frame period, 62 ms at 8 fps), and its audio window starts at the snapped time,
so the two modalities stay aligned. And a file is decoded over its whole range at once, so a file
damaged anywhere in that range is bad input as a whole (the dataset's ``on_bad_input`` applies).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["DecodeCache", "DecodedVideo", "grid_frame_count", "looped_indices"]


@dataclass(frozen=True)
class DecodedVideo:
    """A video's clip range decoded once.

    ``frames`` (N, H, W, 3) uint8: frame ``i`` shows time ``begin_s + i / fps``. ``audio`` (M,)
    float32 from ``begin_s`` (zeros past the end of the track), or None without audio.
    """

    begin_s: float
    fps: float
    frames: torch.Tensor
    audio: torch.Tensor | None = None
    sample_rate: int = 16000

    @property
    def nbytes(self) -> int:
        audio = 0 if self.audio is None else self.audio.numel() * self.audio.element_size()
        return self.frames.numel() * self.frames.element_size() + audio

    def first_frame(self, start_s: float) -> int:
        """Index of the grid frame nearest to ``start_s`` (clamped to the decoded frames)."""
        return min(max(round((start_s - self.begin_s) * self.fps), 0), len(self.frames) - 1)

    def clip(self, start_s: float, num_frames: int) -> tuple[torch.Tensor, float]:
        """(``num_frames`` frames from the grid frame nearest ``start_s``, that frame's time in s).

        A clip running past the decoded frames loops over the frames from its start, as
        :func:`xmkd.data.io.video_io.read_clip` does.
        """
        first = self.first_frame(start_s)
        # index_select copies whole frames; ``frames[indices]`` goes byte by byte (12x slower here)
        indices = looped_indices(first, num_frames, len(self.frames))
        return self.frames.index_select(0, indices), self.begin_s + first / self.fps

    def audio_window(self, start_s: float, num_samples: int) -> torch.Tensor:
        """``num_samples`` samples from ``start_s`` (zeros past what was decoded)."""
        if self.audio is None:
            raise ValueError("this video was cached without audio")
        offset = max(0, round((start_s - self.begin_s) * self.sample_rate))
        out = self.audio[offset : offset + num_samples]
        return (
            torch.nn.functional.pad(out, (0, num_samples - out.shape[0]))
            if out.shape[0] < num_samples
            else out
        )


def grid_frame_count(begin_s: float, end_s: float, fps: float) -> int:
    """Frames of the grid ``begin_s + i / fps`` that fall before ``end_s`` (at least 1)."""
    return max(1, math.ceil((end_s - begin_s) * fps - 1e-6))


def looped_indices(first: int, num_frames: int, available: int) -> torch.Tensor:
    """``first, first + 1, ...`` for ``num_frames`` frames, looping over ``first..available-1``."""
    if not 0 <= first < available:
        raise ValueError(f"first frame {first} outside the {available} available")
    return first + torch.arange(num_frames) % (available - first)


class DecodeCache:
    """Path -> :class:`DecodedVideo`, filled on first use, holding at most ``budget_mb`` MB.

    Nothing is evicted: the first video that does not fit is returned uncached, and from then on
    :meth:`get` returns None for new videos, so the caller decodes just the clip it needs. A video
    that fails to decode is not cached (the error goes to the caller, whose bad-input policy applies).
    """

    def __init__(self, budget_mb: float) -> None:
        if budget_mb < 0:
            raise ValueError(f"budget_mb must be >= 0, got {budget_mb}")
        self.budget_bytes = int(budget_mb * 2**20)
        self.used_bytes = 0
        self._videos: dict[str, DecodedVideo] = {}
        self.full = budget_mb == 0

    def __len__(self) -> int:
        return len(self._videos)

    def get(self, path: str, decode: Callable[[], DecodedVideo]) -> DecodedVideo | None:
        """The cached video; else ``decode()``'s result (kept if it fits); None once the budget is spent."""
        found = self._videos.get(path)
        if found is not None or self.full:
            return found
        video = decode()
        if self.used_bytes + video.nbytes > self.budget_bytes:
            self.full = True  # keep the videos cached so far; decode the rest per clip
            return video
        self._videos[path] = video
        self.used_bytes += video.nbytes
        return video
