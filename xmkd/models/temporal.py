"""Temporal action-detection heads over pre-extracted feature sequences (PDAN, MS-TCN).

Both heads take ``features`` (B, T, D) and ``mask`` (B, T) bool (True = valid step) and return
``(logits (B, T, C), embeddings (B, T, E))``; the embeddings are the output of the last block of
the last stage, the per-step representation the Augmented-RGB distillation terms read.

Equivalence with the released code (dairui01/PDAN ``PDAN.py``; MS-TCN's ``model.py`` has the same
structure), precisely:

- Unpadded input (``mask`` all true, or ``None``): a single stage computes exactly what the release
  computes from the same weights (``xmkd.models.convert.convert_pdan_release_state_dict`` maps them;
  ``tests/models/test_convert.py`` checks the forward against a transcription of the release's).
  Multi-stage heads too with ``stage_activation="release"`` (see :class:`TemporalDetectionHead`).
- Padded input differs, deliberately. The release does not mask the output of a stage's input
  projection (``conv_1x1(x)``): at a padded step, whose features are zero, it holds the projection's
  bias, and the first block's dilated attention reads those steps as keys and values of the last
  valid steps (within its dilation). A video's scores then depend on how long the other videos of
  its batch are. xmkd zeroes the padded steps after the input projection (and, as the release does,
  after each block), so a padded step looks exactly like the zero padding beyond the sequence end,
  and the outputs at valid steps are the same whether a video is alone in its batch or padded next
  to a longer one. This is not a knob: the release's behaviour is a dependence on batch composition,
  not a modelling choice (a video alone in its batch, as in the release's evaluation with batch
  size 1, gets the same scores from both).

The layout is (B, T, C) throughout (the released code is (B, C, T)): the 1x1 convolutions become
plain GEMMs on (B*T, C) (query, key and value in one GEMM) and the dilated attention reads its three
keys as shifted slices of the projected tensor, with no unfold, no T x T matrix and no copies of the
(B, C, T, 3) windows. Everything between the GEMMs (DAL + ReLU, dropout + residual + mask) is a
custom autograd function that works window by window in cache (:mod:`xmkd.models.pdan_kernels`)
and saves only its inputs (plus 16-bit dropout draws): a training step is then mostly GEMM time.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the CPU kernels (and their references) live in models/pdan_kernels.py; re-exported here
from xmkd.models.pdan_kernels import (  # noqa: F401
    CPU_WINDOW_ELEMENTS,
    _dropout_threshold,
    dilated_attention,
    dilated_attention_exportable,
    dilated_attention_reference,
    is_exporting,
    residual_dropout,
)

HeadKind = Literal["pdan", "mstcn"]
StageActivation = Literal["release", "logits", "softmax", "sigmoid"]
#: What each release feeds its later stages: PDAN the raw (masked) logits, MS-TCN their softmax.
RELEASE_STAGE_ACTIVATION: dict[str, str] = {"pdan": "logits", "mstcn": "softmax"}


def masked_bce(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Multi-label BCE summed over classes and valid steps, divided by the number of valid steps.

    This is the PDAN / Augmented-RGB detection loss (METHODS.md B): padded steps contribute nothing
    and a batch of short videos is not down-weighted by the padding of a long one.
    """
    per_step = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none").sum(-1)
    valid = mask.to(per_step.dtype)
    return (per_step * valid).sum() / valid.sum().clamp_min(1.0)


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

    def forward(self, x: Tensor, relu: bool = False) -> Tensor:
        """DAL(x), or ReLU(DAL(x)) fused when ``relu`` (as a PDAN block uses it)."""
        return dilated_attention(self.qkv(x), self.rel, self.dilation, relu=relu)


class PDANBlock(nn.Module):
    """Residual block: ReLU(DAL(x)) -> 1x1 conv -> dropout, added to x, padded steps zeroed."""

    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.attention = DilatedAttention(channels, dilation)
        self.proj = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        out = self.proj(self.attention(x, relu=True))
        return residual_dropout(x, out, valid, self.dropout.p, self.training)


class DilatedResidualLayer(nn.Module):
    """MS-TCN layer: dilated 3-tap conv -> ReLU -> 1x1 conv -> dropout, residual, padded steps zeroed."""

    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.proj = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        out = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return residual_dropout(x, self.proj(out), valid, self.dropout.p, self.training)


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


def stage_input(logits: Tensor, activation: str) -> Tensor:
    """What a later stage reads of the previous stage's logits (B, T, C); see TemporalDetectionHead."""
    if activation == "logits":
        return logits
    if activation == "softmax":
        return logits.softmax(-1)
    if activation == "sigmoid":
        return logits.sigmoid()
    raise ValueError(f"unknown stage activation {activation!r}")


class TemporalDetectionHead(nn.Module):
    """Multi-stage temporal detection head; ``kind`` picks PDAN (dilated attention) or MS-TCN blocks.

    Later stages refine the previous stage's scores; ``stage_activation`` says what they read of the
    previous stage's logits (padded steps zeroed in every case):

    - ``"release"`` (default): what the release of ``kind`` does, i.e. ``"logits"`` for PDAN and
      ``"softmax"`` for MS-TCN. Default because METHODS.md asks for the release's behaviour; PDAN
      runs 1 stage by default, so it matters only for multi-stage configs.
    - ``"logits"``: the raw logits. The released PDAN feeds ``out * mask`` to each later stage, where
      ``out`` is the previous stage's ``conv_out`` output (``PDAN.forward``), with no activation.
    - ``"softmax"``: the softmax over classes, as the released MS-TCN (``F.softmax(out, dim=1)``); a
      single-label choice (action segmentation), kept for MS-TCN replications.
    - ``"sigmoid"``: per-class probabilities; our option, matching the multi-label BCE.

    ``self.stage_activation`` holds the resolved choice (never ``"release"``).
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
        stage_activation: StageActivation = "release",
    ) -> None:
        super().__init__()
        if kind not in ("pdan", "mstcn"):
            raise ValueError(f"head kind must be 'pdan' or 'mstcn', got {kind!r}")
        if num_stages < 1 or num_blocks < 1:
            raise ValueError(f"need num_stages >= 1 and num_blocks >= 1, got {num_stages}, {num_blocks}")
        self.kind = kind
        self.num_classes = num_classes
        self.embedding_dim = channels
        if stage_activation not in ("release", "logits", "softmax", "sigmoid"):
            raise ValueError(
                f"stage_activation must be release | logits | softmax | sigmoid, got {stage_activation!r}"
            )
        self.stage_activation = (
            RELEASE_STAGE_ACTIVATION[kind] if stage_activation == "release" else stage_activation
        )
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
                x = stage_input(all_logits[-1], self.stage_activation) * valid
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
    stage_activation: StageActivation = "release",
) -> TemporalDetectionHead:
    """The head a config names; defaults are PDAN's (1 stage, 5 blocks, 512 channels)."""
    return TemporalDetectionHead(
        kind, in_dim, num_classes, channels, num_blocks, num_stages, dropout, stage_activation
    )
