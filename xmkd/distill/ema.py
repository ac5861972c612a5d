"""EMA (momentum) teachers: the update, its cosine momentum schedule, and a Lightning callback.

The LightningModule declares its teacher pairs with ``ema_pairs() -> list[(student, teacher)]``;
the callback freezes the teachers (no grad, eval mode) and, after every real optimiser step,
sets teacher <- m * teacher + (1 - m) * student with m following a cosine from ``base_momentum``
to ``final_momentum`` over the estimated number of optimiser steps. Parameters shared between
pairs (XKD-MATS: one teacher transformer for both modalities) are updated once per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor, nn


def cosine_momentum(step: int, total_steps: int, base: float = 0.997, final: float = 1.0) -> float:
    """final - (final - base) * (cos(pi * step / total) + 1) / 2, held at ``final`` after ``total``."""
    if total_steps <= 0:
        return final
    progress = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def collect_ema_tensors(pairs: Iterable[tuple[nn.Module, nn.Module]]) -> tuple[list[Tensor], list[Tensor]]:
    """Aligned (teacher, student) floating-point parameters and buffers, each teacher tensor once."""
    teacher_out: list[Tensor] = []
    student_out: list[Tensor] = []
    seen: set[int] = set()
    for student, teacher in pairs:
        s_named = list(student.named_parameters()) + list(student.named_buffers())
        t_named = list(teacher.named_parameters()) + list(teacher.named_buffers())
        if [n for n, _ in s_named] != [n for n, _ in t_named]:
            raise ValueError(
                f"EMA pair {type(student).__name__}/{type(teacher).__name__} differ in structure"
            )
        for (_, s), (_, t) in zip(s_named, t_named):
            if id(t) in seen or not t.is_floating_point():
                continue
            if s.shape != t.shape:
                raise ValueError(f"EMA pair tensor shapes differ: {tuple(s.shape)} vs {tuple(t.shape)}")
            seen.add(id(t))
            teacher_out.append(t)
            student_out.append(s)
    return teacher_out, student_out


@torch.no_grad()
def ema_update_tensors_(teacher: Sequence[Tensor], student: Sequence[Tensor], momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, with one foreach kernel per group."""
    if teacher:
        torch._foreach_lerp_(list(teacher), [s.detach() for s in student], 1.0 - momentum)


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """EMA of ``student``'s parameters (and floating buffers) into ``teacher`` of the same structure."""
    t, s = collect_ema_tensors([(student, teacher)])
    ema_update_tensors_(t, s, momentum)


def freeze_(module: nn.Module) -> nn.Module:
    """No gradients, eval mode: how a teacher lives."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class EMATeacherCallback(pl.Callback):
    """Updates the module's EMA teachers after each real optimiser step and logs the momentum."""

    def __init__(
        self, base_momentum: float = 0.997, final_momentum: float = 1.0, log_name: str = "ema/momentum"
    ) -> None:
        super().__init__()
        if not 0.0 <= base_momentum <= final_momentum <= 1.0:
            raise ValueError(
                f"need 0 <= base_momentum <= final_momentum <= 1, got {base_momentum}, {final_momentum}"
            )
        self.base_momentum = base_momentum
        self.final_momentum = final_momentum
        self.log_name = log_name
        self.total_steps = 0
        self._last_step = 0
        self._tensors: tuple[list[Tensor], list[Tensor]] | None = None

    @staticmethod
    def _pairs(pl_module: pl.LightningModule) -> list[tuple[nn.Module, nn.Module]]:
        if not hasattr(pl_module, "ema_pairs"):
            raise TypeError(f"{type(pl_module).__name__} has no ema_pairs() for EMATeacherCallback")
        return list(pl_module.ema_pairs())

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for _, teacher in self._pairs(pl_module):
            freeze_(teacher)
        self.total_steps = int(trainer.estimated_stepping_batches)
        self._last_step = trainer.global_step
        self._tensors = None  # built lazily, after the strategy has placed the module

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning puts the whole module in train mode at each epoch; teachers stay in eval.
        for _, teacher in self._pairs(pl_module):
            teacher.eval()

    def momentum_at(self, step: int) -> float:
        return cosine_momentum(step, self.total_steps, self.base_momentum, self.final_momentum)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:  # gradient accumulation: no optimiser step happened
            return
        self._last_step = step
        if self._tensors is None:
            self._tensors = collect_ema_tensors(self._pairs(pl_module))
        momentum = self.momentum_at(step - 1)
        ema_update_tensors_(*self._tensors, momentum)
        pl_module.log(self.log_name, momentum, on_step=True, on_epoch=False)
