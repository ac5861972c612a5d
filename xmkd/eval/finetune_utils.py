"""Fine-tuning helpers: layer-wise lr decay groups, mixup / cutmix with soft targets, soft-target CE.

These follow the BEiT / MAE / VideoMAE fine-tuning recipe that XKD uses (METHODS.md part A):

- Layer-wise lr decay: a ViT with ``L`` blocks has ``L + 2`` "layers": the embeddings (patch
  embedding, CLS token, position embeddings) are layer ``0``, block ``i`` is layer ``i + 1``, and
  everything after the blocks (final norm, head) is layer ``L + 1``. A parameter of layer ``l``
  trains with ``lr * decay ** (L + 1 - l)``: the head at the full lr, the embeddings at
  ``lr * decay ** (L + 1)``.
- Mixup / cutmix (timm's ``Mixup`` in batch mode): the batch is mixed with itself reversed; when
  both are enabled each batch uses cutmix with probability ``switch_prob``. Cutmix pastes one box
  (the same box on every frame of a clip) and recomputes ``lambda`` from the box's actual area
  after clipping to the frame, so the soft targets weigh each label by the pixels it really owns.
- Label smoothing is folded into the mixed targets (``off = smoothing / K``, ``on = 1 - smoothing
  + off``), and the loss is the cross-entropy against those soft targets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmkd.errors import ConfigError
from xmkd.optim import is_no_decay

__all__ = [
    "MixResult",
    "layer_decay_param_groups",
    "mix_batch",
    "rand_box",
    "smooth_one_hot",
    "soft_target_cross_entropy",
    "vit_layer_id",
]

_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDING_NAMES = ("patch_embed", "cls_token", "pos_embed")


def vit_layer_id(name: str, num_layers: int, encoder_prefix: str = "encoder.") -> int:
    """Layer index of a parameter for layer-wise lr decay (BEiT convention).

    Embeddings (``patch_embed``, ``cls_token``, ``pos_embed``) -> 0; ``blocks.i.*`` -> ``i + 1``;
    anything else (the encoder's final norm, the head) -> ``num_layers + 1``.
    """
    if name.startswith(encoder_prefix):
        inner = name[len(encoder_prefix) :]
        if inner.split(".")[0] in _EMBEDDING_NAMES:
            return 0
        match = _BLOCK_RE.search("." + inner)
        if match:
            return int(match.group(1)) + 1
    return num_layers + 1


def layer_decay_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float,
    num_layers: int,
    layer_id: Callable[[str, int], int] = vit_layer_id,
    extra_no_decay: Iterable[str] = ("pos_embed", "cls_token"),
) -> list[dict]:
    """AdamW parameter groups with ``lr * layer_decay ** (num_layers + 1 - layer_id(name))``.

    One group per (layer, decay / no-decay); biases, norms, 1-d tensors and the names in
    ``extra_no_decay`` get no weight decay. Frozen parameters are left out. Each group carries its
    ``lr`` (so ``LambdaLR`` schedules scale every group from its own base), its ``lr_scale`` and its
    ``layer_id`` (for tests and logging).
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ConfigError("layer_decay", f"must be in (0, 1], got {layer_decay}")
    extra = tuple(extra_no_decay)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, num_layers)
        no_decay = is_no_decay(name, p, extra)
        key = (lid, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - lid)
            groups[key] = {
                "params": [],
                "names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "layer_id": lid,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


# ------------------------------------------------------------------------------------ mixing


def smooth_one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """(B,) int -> (B, K) float: ``1 - smoothing + smoothing / K`` on the label, ``smoothing / K`` off."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


def rand_box(
    height: int, width: int, lam: float, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """A box ``(y0, y1, x0, x1)`` of area about ``(1 - lam) * H * W`` centred uniformly at random.

    The box is clipped to the frame (CutMix), so its area can be smaller than asked; callers
    recompute lambda from the returned box.
    """
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
    return y0, y1, x0, x1


@dataclass
class MixResult:
    """The mixed inputs, their soft targets (rows sum to one), lambda and which mix was applied."""

    inputs: Tensor
    targets: Tensor
    lam: float
    mode: Literal["mixup", "cutmix", "none"]


def mix_batch(
    inputs: Tensor,
    labels: Tensor,
    num_classes: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    switch_prob: float = 0.5,
    prob: float = 1.0,
    smoothing: float = 0.1,
    generator: torch.Generator | None = None,
) -> MixResult:
    """Mix a batch with its reverse (timm ``Mixup``, batch mode); the last two dims are spatial.

    ``inputs``: (B, C, T, H, W) video, (B, F, T) spectrogram, or anything with two trailing
    "spatial" dims. ``lam ~ Beta(alpha, alpha)``; mixup blends whole inputs, cutmix pastes a box of
    the reversed batch (on every frame) and sets ``lam = 1 - box_area / (H * W)``. Targets:
    ``lam * y + (1 - lam) * y_reversed`` with label smoothing. With probability ``1 - prob``, or
    when both alphas are 0, nothing is mixed (targets are just smoothed).
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ConfigError("mixup_alpha", f"alphas must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
    y = smooth_one_hot(labels, num_classes, smoothing)
    rand = lambda: float(torch.rand((), generator=generator))  # noqa: E731
    if (mixup_alpha == 0 and cutmix_alpha == 0) or rand() >= prob:
        return MixResult(inputs, y, 1.0, "none")
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or rand() < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    # Beta(alpha, alpha) as a ratio of Gammas drawn from ``generator`` (reproducible in tests).
    g1, g2 = _gamma(alpha, generator), _gamma(alpha, generator)
    lam = float(g1 / (g1 + g2))
    flipped = inputs.flip(0)
    if use_cutmix:
        h, w = inputs.shape[-2:]
        y0, y1, x0, x1 = rand_box(h, w, lam, generator)
        mixed = inputs.clone()
        mixed[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        mode: Literal["mixup", "cutmix", "none"] = "cutmix"
    else:
        mixed = inputs * lam + flipped * (1.0 - lam)
        mode = "mixup"
    targets = y * lam + y.flip(0) * (1.0 - lam)
    return MixResult(mixed, targets, lam, mode)


def _gamma(alpha: float, generator: torch.Generator | None) -> Tensor:
    """A Gamma(alpha, 1) draw (Marsaglia-Tsang) from ``generator`` (None: torch's global one)."""
    boost = 1.0
    if alpha < 1.0:
        boost = float(torch.rand((), generator=generator)) ** (1.0 / alpha)
        alpha += 1.0
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = float(torch.randn((), generator=generator))
        v = (1.0 + c * x) ** 3
        if v <= 0:
            continue
        u = float(torch.rand((), generator=generator))
        if math.log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * math.log(v):
            return torch.tensor([d * v * boost])


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of ``-sum_k targets_k log softmax(logits)_k``."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
