"""EMA (momentum) teachers: the update, its cosine momentum schedule, and a Lightning callback.

The LightningModule declares its teacher pairs with ``ema_pairs() -> list[(student, teacher)]``;
the callback freezes the teachers (no grad, eval mode) and, after every real optimiser step,
sets teacher <- m * teacher + (1 - m) * student with m following a cosine from ``base_momentum``
to ``final_momentum`` over the estimated number of optimiser steps. A teacher tensor shared between
pairs (XKD-MATS: one teacher transformer for both modalities, EMA of one shared student
transformer) is updated per pair by default (``shared_updates="per_pair"``), as the released XKD
does (its ``update_teacher`` runs the video and then the audio update over the same blocks): k
updates towards the same student tensor in one go, ``m^k`` (0.994 for 0.997 and two modalities).
``shared_updates="once"`` updates it once per step with ``m``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn


def cosine_momentum(step: int, total_steps: int, base: float = 0.997, final: float = 1.0) -> float:
    """final - (final - base) * (cos(pi * step / total) + 1) / 2, held at ``final`` after ``total``."""
    if total_steps <= 0:
        return final
    progress = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def collect_ema_tensors(
    pairs: Iterable[tuple[nn.Module, nn.Module]], counts: dict[int, int] | None = None
) -> tuple[list[Tensor], list[Tensor]]:
    """Aligned (teacher, student) floating-point parameters and buffers, each teacher tensor once.

    ``counts``, if given, is filled with ``id(teacher tensor) -> number of pairs holding it`` (2 for
    the shared blocks of an XKD-MATS teacher), for :func:`group_by_update_count`.
    """
    teacher_out: list[Tensor] = []
    student_out: list[Tensor] = []
    seen: set[int] = set()
    student_of: dict[int, Tensor] = {}
    for student, teacher in pairs:
        s_named = list(student.named_parameters()) + list(student.named_buffers())
        t_named = list(teacher.named_parameters()) + list(teacher.named_buffers())
        if [n for n, _ in s_named] != [n for n, _ in t_named]:
            raise ValueError(
                f"EMA pair {type(student).__name__}/{type(teacher).__name__} differ in structure"
            )
        for (_, s), (_, t) in zip(s_named, t_named):
            if not t.is_floating_point():
                continue
            if counts is not None:
                counts[id(t)] = counts.get(id(t), 0) + 1
            if id(t) in seen:
                if counts is not None and student_of[id(t)] is not s:
                    raise ValueError(
                        "a teacher tensor shared between EMA pairs follows different student tensors; "
                        "per-pair updates of it are not one EMA (use shared_updates='once')"
                    )
                continue
            student_of[id(t)] = s
            if s.shape != t.shape:
                raise ValueError(f"EMA pair tensor shapes differ: {tuple(s.shape)} vs {tuple(t.shape)}")
            seen.add(id(t))
            teacher_out.append(t)
            student_out.append(s)
    return teacher_out, student_out


def group_by_update_count(
    teacher: Sequence[Tensor], student: Sequence[Tensor], counts: dict[int, int]
) -> dict[int, tuple[list[Tensor], list[Tensor]]]:
    """Split aligned tensors by how many pairs hold each teacher tensor (``counts`` by id)."""
    groups: dict[int, tuple[list[Tensor], list[Tensor]]] = {}
    for t, s in zip(teacher, student):
        ts, ss = groups.setdefault(counts.get(id(t), 1), ([], []))
        ts.append(t)
        ss.append(s)
    return groups


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
        self,
        base_momentum: float = 0.997,
        final_momentum: float = 1.0,
        log_name: str = "ema/momentum",
        shared_updates: Literal["per_pair", "once"] = "per_pair",
    ) -> None:
        super().__init__()
        if shared_updates not in ("per_pair", "once"):
            raise ValueError(f"shared_updates must be 'per_pair' or 'once', got {shared_updates!r}")
        self.shared_updates = shared_updates
        if not 0.0 <= base_momentum <= final_momentum <= 1.0:
            raise ValueError(
                f"need 0 <= base_momentum <= final_momentum <= 1, got {base_momentum}, {final_momentum}"
            )
        self.base_momentum = base_momentum
        self.final_momentum = final_momentum
        self.log_name = log_name
        self.total_steps = 0
        self._last_step = 0
        # update count k -> (teacher, student) tensors updated with momentum m^k
        self._tensors: dict[int, tuple[list[Tensor], list[Tensor]]] | None = None

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

    def tensor_groups(
        self, pairs: Sequence[tuple[nn.Module, nn.Module]]
    ) -> dict[int, tuple[list[Tensor], list[Tensor]]]:
        """Teacher/student tensors keyed by how many updates per step they get (1, or k if shared)."""
        if self.shared_updates == "once":
            return {1: collect_ema_tensors(pairs)}
        counts: dict[int, int] = {}
        teacher, student = collect_ema_tensors(pairs, counts)
        return group_by_update_count(teacher, student, counts)

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
            self._tensors = self.tensor_groups(self._pairs(pl_module))
        momentum = self.momentum_at(step - 1)
        for k, (teacher, student) in self._tensors.items():
            ema_update_tensors_(teacher, student, momentum**k)
        pl_module.log(self.log_name, momentum, on_step=True, on_epoch=False)
