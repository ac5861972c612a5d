"""DINO cross-entropy with a centred, sharpened teacher (Caron et al. 2021), used cross-modally by XKD.

q = softmax((t - c) / tau_t) (no gradient), loss = mean over the batch of -sum_k q_k log softmax(s / tau_s)_k.
The center c is an EMA of the teacher outputs' batch mean; the batch mean is all-reduced across
processes before the EMA so every rank keeps the same center.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def dino_cross_entropy(
    student_logits: Tensor, teacher_logits: Tensor, center: Tensor, tau_s: float, tau_t: float
) -> Tensor:
    """Batch-mean DINO cross-entropy between one student view and the teacher (float32 math)."""
    q = F.softmax((teacher_logits.detach().float() - center.float()) / tau_t, dim=-1)
    log_p = F.log_softmax(student_logits.float() / tau_s, dim=-1)
    return -(q * log_p).sum(dim=-1).mean()


def teacher_temperature_at(
    epoch: int, final: float, warmup: float | None = None, warmup_epochs: int = 0
) -> float:
    """DINO's teacher-temperature warm-up, per epoch, as the released XKD schedules it.

    Epochs ``0 .. warmup_epochs - 1`` follow ``linspace(warmup, final, warmup_epochs)`` (the last
    warm-up epoch already at ``final``); from then on ``final``. ``warmup`` None or
    ``warmup_epochs`` <= 0: a constant ``final``.
    """
    if warmup is None or warmup_epochs <= 0 or epoch >= warmup_epochs:
        return final
    if warmup_epochs == 1:
        return warmup
    return warmup + (final - warmup) * max(epoch, 0) / (warmup_epochs - 1)


def multi_view_dino_cross_entropy(
    student_views: Sequence[Tensor], teacher_logits: Tensor, center: Tensor, tau_s: float, tau_t: float
) -> Tensor:
    """Mean of :func:`dino_cross_entropy` over student views (all paired with the one teacher view)."""
    if not student_views:
        raise ValueError("no student views")
    losses = [dino_cross_entropy(s, teacher_logits, center, tau_s, tau_t) for s in student_views]
    return torch.stack(losses).mean()


class DINOCenter(nn.Module):
    """EMA center of teacher outputs; ``center`` is a buffer so it is checkpointed."""

    center: Tensor

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))

    @torch.no_grad()
    def update(self, teacher_logits: Tensor) -> None:
        """center <- m * center + (1 - m) * global batch mean of ``teacher_logits`` (B, dim)."""
        stats = torch.cat(
            [
                teacher_logits.detach().float().sum(dim=0),
                teacher_logits.new_tensor([teacher_logits.shape[0]]).float(),
            ]
        )
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)  # one collective for the sum and the count (uneven batches are fine)
        batch_mean = (stats[:-1] / stats[-1]).unsqueeze(0)
        self.center.mul_(self.momentum).add_(batch_mean.to(self.center.dtype), alpha=1.0 - self.momentum)
