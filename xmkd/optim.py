"""Optimisation helpers: weight-decay parameter groups, warm-up + cosine schedule, per-tensor clipping.

Per-tensor clipping follows DINO/XKD (each gradient tensor is scaled to norm <= max_norm on its own),
but with foreach kernels and no host synchronisation: the reference calls ``.item()`` once per
parameter tensor, which stalls a GPU ~300 times a step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn


def is_no_decay(name: str, param: Tensor, extra_no_decay: Sequence[str] = ()) -> bool:
    """Biases, norm weights and any 1-d tensor (and names containing ``extra_no_decay``) get no decay."""
    return param.ndim <= 1 or name.endswith(".bias") or any(key in name for key in extra_no_decay)


def param_groups_weight_decay(
    named_params: nn.Module | Iterable[tuple[str, Tensor]],
    weight_decay: float,
    extra_no_decay: Sequence[str] = (),
    **group_options,
) -> list[dict]:
    """Two groups over trainable parameters: with ``weight_decay`` and without (biases, norms).

    ``group_options`` (e.g. ``lr``) are copied into both groups. Frozen parameters are left out, and a
    parameter shared by several modules appears once. Empty groups are dropped.
    """
    items = named_params.named_parameters() if isinstance(named_params, nn.Module) else named_params
    decay: list[Tensor] = []
    no_decay: list[Tensor] = []
    seen: set[int] = set()
    for name, p in items:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if is_no_decay(name, p, extra_no_decay) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, **group_options},
        {"params": no_decay, "weight_decay": 0.0, **group_options},
    ]
    return [g for g in groups if g["params"]]


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, min_factor: float = 0.0, from_zero: bool = False
) -> float:
    """Multiplier of the base lr: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_factor``.

    Warm-up starts at 1 / warmup_steps (not 0) so the first step already moves, unless
    ``from_zero``: then it is DINO's / the released XKD's ``linspace(0, 1, warmup_steps)``, step 0
    at lr 0 and step ``warmup_steps - 1`` at the full lr. After ``total_steps`` the factor stays at
    ``min_factor``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        if from_zero:
            return step / (warmup_steps - 1) if warmup_steps > 1 else 0.0
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_lambda(
    warmup_steps: int, total_steps: int, min_factor: float = 0.0, from_zero: bool = False
) -> Callable[[int], float]:
    """For ``torch.optim.lr_scheduler.LambdaLR`` stepped once per optimiser step."""

    def factor(step: int) -> float:
        return warmup_cosine_factor(step, warmup_steps, total_steps, min_factor, from_zero)

    return factor


@torch.no_grad()
def clip_grad_per_tensor_(parameters: Iterable[Tensor], max_norm: float, eps: float = 1e-6) -> Tensor | None:
    """Scale each gradient tensor by min(1, max_norm / (||g|| + eps)); returns the pre-clip norms.

    All on device, foreach kernels per (device, dtype) group; returns a 1-d tensor of norms (or None
    if no parameter has a gradient) for optional logging without a sync.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for p in parameters:
        if p.grad is not None:
            groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    all_norms: list[Tensor] = []
    for grads in groups.values():
        norms = torch.stack(torch._foreach_norm(grads))
        scale = (max_norm / (norms + eps)).clamp_(max=1.0)
        torch._foreach_mul_(grads, list(scale.unbind()))
        all_norms.append(norms.float())
    if not all_norms:
        return None
    return torch.cat([n.to(all_norms[0].device) for n in all_norms])


def build_adamw(
    param_groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.95)
) -> torch.optim.AdamW:
    """AdamW, fused when every parameter is on CUDA or CPU in a float dtype (one kernel per step)."""
    params = [p for g in param_groups for p in g["params"]]
    fused = bool(params) and all(p.device.type in ("cuda", "cpu") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas, fused=fused)
