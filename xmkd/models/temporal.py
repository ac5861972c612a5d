"""Temporal action-detection heads over pre-extracted feature sequences (PDAN, MS-TCN).

Both heads take ``features`` (B, T, D) and ``mask`` (B, T) bool (True = valid step) and return
``(logits (B, T, C), embeddings (B, T, E))``; the embeddings are the output of the last block of
the last stage, the per-step representation the Augmented-RGB distillation terms read.

Padding changes nothing: every stage zeroes the padded steps after its input projection and after
each block, so a padded step looks exactly like the zero padding beyond the sequence ends that the
released PDAN / MS-TCN code uses. The outputs at valid steps are therefore the same whether a
video is alone in its batch or padded next to a longer one.

The layout is (B, T, C) throughout (the released code is (B, C, T)): the 1x1 convolutions become
plain GEMMs on (B*T, C) and the dilated attention reads its three keys as shifted slices of one
padded tensor, with no unfold, no T x T matrix and no copies of the (B, C, T, 3) windows.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HeadKind = Literal["pdan", "mstcn"]
StageActivation = Literal["softmax", "sigmoid"]


def masked_bce(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Multi-label BCE summed over classes and valid steps, divided by the number of valid steps.

    This is the PDAN / Augmented-RGB detection loss (METHODS.md B): padded steps contribute nothing
    and a batch of short videos is not down-weighted by the padding of a long one.
    """
    per_step = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none").sum(-1)
    valid = mask.to(per_step.dtype)
    return (per_step * valid).sum() / valid.sum().clamp_min(1.0)


def _shift(x: Tensor, offset: int) -> Tensor:
    """``y[:, t] = x[:, t + offset]`` with zeros outside [0, T) — the zero padding of the released code."""
    if offset == 0:
        return x
    t = x.shape[1]
    if abs(offset) >= t:
        return torch.zeros_like(x)
    if offset > 0:
        return F.pad(x[:, offset:], (0, 0, 0, offset))
    return F.pad(x[:, :offset], (0, 0, -offset, 0))


def dilated_attention_reference(qkv: Tensor, rel: Tensor, dilation: int) -> Tensor:
    """Plain-autograd DAL on projected ``qkv`` (B, T, 3C) and ``rel`` (3, C); the test oracle."""
    q, k, v = qkv.chunk(3, dim=-1)
    d = dilation
    keys = (_shift(k, -d), k, _shift(k, d))
    values = (_shift(v, -d), v, _shift(v, d))
    weights = torch.softmax(torch.stack([q * key for key in keys], dim=0), dim=0)
    return sum(weights[j] * (values[j] + rel[j]) for j in range(3))


class _DilatedAttentionFn(torch.autograd.Function):
    """DAL with a hand-written backward: the same math as ``dilated_attention_reference`` in about
    half the memory passes (no stacked logits, no padded copies of k and v, gradients written straight
    into one (B, T, 3C) buffer). The three positions are t - d ("m"), t ("0") and t + d ("p"); outside
    [0, T) keys and values are zero, as with the released code's zero padding."""

    @staticmethod
    def forward(ctx, qkv: Tensor, rel: Tensor, d: int) -> Tensor:
        q, k, v = qkv.chunk(3, dim=-1)
        t = qkv.shape[1]
        w0 = q * k
        wm = torch.zeros_like(w0)
        wp = torch.zeros_like(w0)
        if d < t:
            torch.mul(q[:, d:], k[:, :-d], out=wm[:, d:])
            torch.mul(q[:, :-d], k[:, d:], out=wp[:, :-d])
        peak = torch.maximum(torch.maximum(wm, w0), wp)
        wm.sub_(peak).exp_()
        w0.sub_(peak).exp_()
        wp.sub_(peak).exp_()
        denom = torch.add(wm, w0, out=peak).add_(wp)
        wm.div_(denom)
        w0.div_(denom)
        wp.div_(denom)
        out = (v + rel[1]).mul_(w0)
        out.addcmul_(wm, rel[0]).addcmul_(wp, rel[2])
        if d < t:
            out[:, d:].addcmul_(wm[:, d:], v[:, :-d])
            out[:, :-d].addcmul_(wp[:, :-d], v[:, d:])
        ctx.save_for_backward(qkv, rel, wm, w0, wp, out)
        ctx.d = d
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        qkv, rel, wm, w0, wp, out = ctx.saved_tensors
        d = ctx.d
        q, k, v = qkv.chunk(3, dim=-1)
        t = qkv.shape[1]
        c = q.shape[-1]
        grad = grad.contiguous()
        gm, g0, gp = wm * grad, w0 * grad, wp * grad
        grel = torch.stack([gm.sum((0, 1)), g0.sum((0, 1)), gp.sum((0, 1))])
        dqkv = torch.empty_like(qkv)
        dq, dk, dv = dqkv[..., :c], dqkv[..., c : 2 * c], dqkv[..., 2 * c :]
        dv.copy_(g0)
        # softmax backward: da_j = w_j g (vr_j - out), vr_j the value (plus rel) seen at position j
        da0 = (v + rel[1]).sub_(out).mul_(g0)
        dam = (rel[0] - out).mul_(gm)
        dap = (rel[2] - out).mul_(gp)
        torch.mul(da0, k, out=dq)
        torch.mul(da0, q, out=dk)
        if d < t:
            dv[:, :-d].add_(gm[:, d:])
            dv[:, d:].add_(gp[:, :-d])
            dam[:, d:].addcmul_(gm[:, d:], v[:, :-d])
            dap[:, :-d].addcmul_(gp[:, :-d], v[:, d:])
            dq[:, d:].addcmul_(dam[:, d:], k[:, :-d])
            dq[:, :-d].addcmul_(dap[:, :-d], k[:, d:])
            dk[:, :-d].addcmul_(dam[:, d:], q[:, d:])
            dk[:, d:].addcmul_(dap[:, :-d], q[:, :-d])
        return dqkv, grel, None


def dilated_attention(qkv: Tensor, rel: Tensor, dilation: int) -> Tensor:
    """PDAN's DAL on projected ``qkv`` (B, T, 3C) with relative terms ``rel`` (3, C) -> (B, T, C)."""
    return _DilatedAttentionFn.apply(qkv, rel, dilation)


class DilatedAttention(nn.Module):
    """PDAN's dilated attention layer (DAL): local attention over the positions {t-d, t, t+d}.

    As in the released PDAN code, attention is per channel: for each channel c the logits are
    ``q_c(t) * k_c(t+j d)`` for j in {-1, 0, 1}, a softmax over the three positions weights the values
    ``v_c(t+j d) + r_c(j)`` (``r`` a learned relative-position term added to the values), and
    queries, keys and values are bias-free 1x1 projections so that zero padding gives zero keys.
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.channels = channels
        self.dilation = dilation
        self.qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.rel = nn.Parameter(torch.randn(3, channels))
        # Released code: kaiming normal (fan_out, relu) on the three projections, N(0, 1) on rel_t.
        for w in self.qkv.weight.data.chunk(3, dim=0):
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return dilated_attention(self.qkv(x), self.rel, self.dilation)


class PDANBlock(nn.Module):
    """Residual block: ReLU(DAL(x)) -> 1x1 conv -> dropout, added to x, padded steps zeroed."""

    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.attention = DilatedAttention(channels, dilation)
        self.proj = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        out = self.dropout(self.proj(F.relu(self.attention(x))))
        return (x + out) * valid


class DilatedResidualLayer(nn.Module):
    """MS-TCN layer: dilated 3-tap conv -> ReLU -> 1x1 conv -> dropout, residual, padded steps zeroed."""

    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.proj = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        out = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        out = self.dropout(self.proj(out))
        return (x + out) * valid


class TemporalStage(nn.Module):
    """One stage: 1x1 conv in -> blocks with dilation 2^i -> 1x1 conv to classes."""

    def __init__(
        self, kind: HeadKind, in_dim: int, channels: int, num_blocks: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, channels)
        block = PDANBlock if kind == "pdan" else DilatedResidualLayer
        self.blocks = nn.ModuleList([block(channels, 2**i, dropout) for i in range(num_blocks)])
        self.out = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        h = self.inp(x) * valid
        for block in self.blocks:
            h = block(h, valid)
        return self.out(h) * valid, h


class TemporalDetectionHead(nn.Module):
    """Multi-stage temporal detection head; ``kind`` picks PDAN (dilated attention) or MS-TCN blocks.

    Later stages refine the previous stage's scores: their input is the softmax over classes (as in
    the released PDAN and MS-TCN code) or the sigmoid (``stage_activation="sigmoid"``, closer to the
    multi-label setting) of the previous logits, padded steps zeroed.
    """

    def __init__(
        self,
        kind: HeadKind = "pdan",
        in_dim: int = 1024,
        num_classes: int = 157,
        channels: int = 512,
        num_blocks: int = 5,
        num_stages: int = 1,
        dropout: float = 0.5,
        stage_activation: StageActivation = "softmax",
    ) -> None:
        super().__init__()
        if kind not in ("pdan", "mstcn"):
            raise ValueError(f"head kind must be 'pdan' or 'mstcn', got {kind!r}")
        if num_stages < 1 or num_blocks < 1:
            raise ValueError(f"need num_stages >= 1 and num_blocks >= 1, got {num_stages}, {num_blocks}")
        self.kind = kind
        self.num_classes = num_classes
        self.embedding_dim = channels
        self.stage_activation = stage_activation
        self.stages = nn.ModuleList(
            [
                TemporalStage(
                    kind, in_dim if s == 0 else num_classes, channels, num_blocks, num_classes, dropout
                )
                for s in range(num_stages)
            ]
        )

    def forward_stages(self, features: Tensor, mask: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """All stages' logits (each (B, T, C)) and the last stage's embeddings (B, T, E)."""
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        valid = mask.unsqueeze(-1).to(features.dtype)
        all_logits: list[Tensor] = []
        x = features
        for s, stage in enumerate(self.stages):
            if s > 0:
                prev = all_logits[-1]
                x = (prev.softmax(-1) if self.stage_activation == "softmax" else prev.sigmoid()) * valid
            logits, embeddings = stage(x, valid)
            all_logits.append(logits)
        return all_logits, embeddings

    def forward(self, features: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        all_logits, embeddings = self.forward_stages(features, mask)
        return all_logits[-1], embeddings


def build_head(
    kind: HeadKind,
    in_dim: int,
    num_classes: int,
    channels: int = 512,
    num_blocks: int = 5,
    num_stages: int = 1,
    dropout: float = 0.5,
    stage_activation: StageActivation = "softmax",
) -> TemporalDetectionHead:
    """The head a config names; defaults are PDAN's (1 stage, 5 blocks, 512 channels)."""
    return TemporalDetectionHead(
        kind, in_dim, num_classes, channels, num_blocks, num_stages, dropout, stage_activation
    )
