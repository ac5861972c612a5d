"""Multi-view testing for trimmed classification: clip-level and video-level top-1 / top-5.

Each test video is seen as several clips (views); the video-level prediction is the average of its
clips' scores (or softmax probabilities). Video ids travel as int64 codes so that DDP can gather
them (strings cannot be all-gathered); :func:`encode_video_ids` gives a stable code per id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["VideoLevelAccuracy", "encode_video_id", "encode_video_ids", "topk_correct"]

Aggregate = Literal["scores", "softmax"]


def encode_video_id(video_id: str | int) -> int:
    """Stable int64 code of a video id, identical on every process and run (no Python ``hash``
    salt): ints map to themselves, strings to the first 8 bytes of their BLAKE2b digest."""
    if isinstance(video_id, int):
        return video_id
    digest = hashlib.blake2b(str(video_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def encode_video_ids(video_ids: Sequence[str | int] | Tensor) -> Tensor:
    """(B,) int64 codes for a batch of video ids (a list of str/int, or an int tensor)."""
    if isinstance(video_ids, Tensor):
        if video_ids.is_floating_point():
            raise ValueError(f"video ids must be integers or strings, got a {video_ids.dtype} tensor")
        return video_ids.long().reshape(-1)
    return torch.tensor([encode_video_id(v) for v in video_ids], dtype=torch.int64)


def topk_correct(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """(B,) bool: label among the ``k`` highest scores (k capped at the number of classes)."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(1)


class VideoLevelAccuracy(Metric):
    """Clip-level and video-level top-k accuracy under multi-view testing.

    ``update(scores (B, K), labels (B,), video_ids, clip_indices=None)``: ``video_ids`` a list of
    str/int or an int tensor. ``compute()`` returns ``{"clip_top1", "clip_top5", "video_top1",
    "video_top5"}`` (fractions in [0, 1]); ``top_k`` sets which k are reported.

    ``aggregate="scores"`` averages the raw scores (logits) of a video's clips, ``"softmax"`` their
    softmax probabilities (interpretation: papers differ; SlowFast/XKD code average softmax). When
    ``clip_indices`` are given, a repeated (video, clip) pair is counted once: DistributedSampler
    pads the last batch with repeats, which would otherwise weigh some clips twice. After
    ``compute()``, ``last_video_predictions`` holds (predicted class, label) per video (CPU tensors).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, aggregate: Aggregate = "softmax", top_k: Sequence[int] = (1, 5), **kwargs) -> None:
        super().__init__(**kwargs)
        if aggregate not in ("scores", "softmax"):
            raise ValueError(f"aggregate must be 'scores' or 'softmax', got {aggregate!r}")
        self.aggregate = aggregate
        self.top_k = tuple(top_k)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("video_codes", default=[], dist_reduce_fx="cat")
        self.add_state("clip_indices", default=[], dist_reduce_fx="cat")
        self.last_video_predictions: tuple[Tensor, Tensor] | None = None

    def update(
        self,
        scores: Tensor,
        labels: Tensor,
        video_ids: Sequence[str | int] | Tensor,
        clip_indices: Tensor | Sequence[int] | None = None,
    ) -> None:
        if scores.dim() != 2 or labels.shape != scores.shape[:1]:
            raise ValueError(
                f"scores must be (B, K) and labels (B,); got {tuple(scores.shape)}, {tuple(labels.shape)}"
            )
        codes = encode_video_ids(video_ids).to(scores.device)
        if codes.numel() != scores.shape[0]:
            raise ValueError(f"{codes.numel()} video ids for a batch of {scores.shape[0]}")
        if clip_indices is None:
            clips = torch.full_like(codes, -1)
        else:
            clips = torch.as_tensor(clip_indices, dtype=torch.int64, device=scores.device).reshape(-1)
        s = scores.detach().float()
        self.scores.append(s.softmax(1) if self.aggregate == "softmax" else s)
        self.labels.append(labels.detach().long())
        self.video_codes.append(codes)
        self.clip_indices.append(clips)

    def compute(self) -> dict[str, Tensor]:
        # len(), not truthiness: after a DDP sync torchmetrics has already concatenated each list
        # state into one tensor, whose truth value is ambiguous.
        if len(self.scores) == 0:
            raise ValueError(f"{type(self).__name__}: no clips were added with update()")
        scores, labels = dim_zero_cat(self.scores), dim_zero_cat(self.labels)
        codes, clips = dim_zero_cat(self.video_codes), dim_zero_cat(self.clip_indices)
        known = clips >= 0
        if bool(known.any()):  # drop repeated (video, clip) pairs, keeping the first
            order = torch.arange(clips.numel(), device=clips.device)
            pairs = torch.stack([codes, torch.where(known, clips, -(order + 1))], 1)
            _, inverse = torch.unique(pairs, dim=0, return_inverse=True)
            first = torch.full(
                (int(inverse.max()) + 1,), clips.numel(), dtype=torch.int64, device=clips.device
            )
            first.scatter_reduce_(0, inverse, order, reduce="amin")
            keep = torch.sort(first).values
            scores, labels, codes = scores[keep], labels[keep], codes[keep]
        video, inverse = torch.unique(codes, return_inverse=True)
        num_videos = video.numel()
        summed = torch.zeros(num_videos, scores.shape[1], dtype=torch.float64, device=scores.device)
        summed.index_add_(0, inverse, scores.double())
        counts = torch.bincount(inverse, minlength=num_videos)
        video_scores = summed / counts[:, None]
        video_labels = torch.full((num_videos,), -1, dtype=torch.int64, device=scores.device)
        video_labels.scatter_(0, inverse, labels)
        if bool((video_labels[inverse] != labels).any()):
            bad = int(video[inverse[video_labels[inverse] != labels][0]])
            raise ValueError(f"clips of one video (code {bad}) carry different labels")
        # kept for pictures (a confusion matrix) without a second pass; the same on every rank
        self.last_video_predictions = (video_scores.argmax(1).cpu(), video_labels.cpu())
        out: dict[str, Tensor] = {}
        for k in self.top_k:
            out[f"clip_top{k}"] = topk_correct(scores, labels, k).float().mean()
            out[f"video_top{k}"] = topk_correct(video_scores, video_labels, k).float().mean()
        return out
