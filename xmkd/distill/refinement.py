"""XKD feature refinement for the teachers: cross-modal reweighting of last-block CLS attention.

For each modality the teacher's last block gives CLS->patch attention per head, (B, H, N). Each
head's map is reweighted by how much the OTHER modality's same head attends on average, averaged
over heads into one map per clip, and the patch tokens are scaled by that map before mean-pooling;
the pooled vector is rescaled to the norm of the plain patch mean so that refinement changes the
direction of the feature, not its energy.

Interpretation (knob ``head_weighting``), since the paper text was not available to us:
- ``"mean"`` (default, as in the released code): a_h * mean(other_h) / mean(a_h), i.e. each head's
  map keeps its shape and is weighted by the other modality's mean attention of that head,
  normalised by its own mean attention.
- ``"softmax"``: softmax over patches of a_h * mean(other_h), i.e. the weighted map is renormalised
  into a distribution per head.
Both need the two teachers to have the same number of heads.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

HeadWeighting = Literal["mean", "softmax"]


def cross_modal_attention(
    attn_self: Tensor, attn_other: Tensor, head_weighting: HeadWeighting = "mean", eps: float = 1e-12
) -> Tensor:
    """Reweight ``attn_self`` (B, H, N) by ``attn_other`` (B, H, M) per head and average heads -> (B, N)."""
    if attn_self.shape[:2] != attn_other.shape[:2]:
        raise ValueError(
            f"feature refinement needs the same batch and head count, got {tuple(attn_self.shape[:2])} "
            f"and {tuple(attn_other.shape[:2])}"
        )
    other_mean = attn_other.mean(dim=-1, keepdim=True)
    if head_weighting == "mean":
        per_head = attn_self * other_mean / attn_self.mean(dim=-1, keepdim=True).clamp_min(eps)
    elif head_weighting == "softmax":
        per_head = (attn_self * other_mean).softmax(dim=-1)
    else:
        raise ValueError(f"head_weighting must be 'mean' or 'softmax', got {head_weighting!r}")
    return per_head.mean(dim=1)


def attention_weighted_pool(
    patch_tokens: Tensor, attention: Tensor, keep_norm: bool = True, eps: float = 1e-12
) -> Tensor:
    """Mean of ``patch_tokens`` (B, N, D) scaled by ``attention`` (B, N); norm of the plain mean kept."""
    pooled = (patch_tokens * attention.unsqueeze(-1).to(patch_tokens.dtype)).mean(dim=1)
    if keep_norm:
        plain = patch_tokens.mean(dim=1)
        pooled = pooled * (
            plain.norm(dim=-1, keepdim=True) / pooled.norm(dim=-1, keepdim=True).clamp_min(eps)
        )
    return pooled


def refine_pair(
    video_tokens: Tensor,
    video_attn: Tensor,
    audio_tokens: Tensor,
    audio_attn: Tensor,
    head_weighting: HeadWeighting = "mean",
    keep_norm: bool = True,
) -> tuple[Tensor, Tensor]:
    """Refined pooled features (video (B, D), audio (B, D)) from patch tokens and CLS attention."""
    with torch.autocast(device_type=video_tokens.device.type, enabled=False):
        va = cross_modal_attention(video_attn.float(), audio_attn.float(), head_weighting)
        aa = cross_modal_attention(audio_attn.float(), video_attn.float(), head_weighting)
        return (
            attention_weighted_pool(video_tokens.float(), va, keep_norm),
            attention_weighted_pool(audio_tokens.float(), aa, keep_norm),
        )
