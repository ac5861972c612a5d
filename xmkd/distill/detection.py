"""Distillation losses for Augmented-RGB temporal action detection (Dai, Das & Bremond, ICCV 2021).

Every loss reads per-step embeddings (B, T, E) or logits (B, T, C) together with the validity mask
(B, T) bool, and padding changes nothing: padded steps never enter a mean, a pool, a similarity
matrix or a softmax. Teacher tensors are treated as constants (detached here, so a caller cannot
leak gradients into the teacher by mistake).

Paper terms (METHODS.md B; the exact formulation is our interpretation, each choice a knob):
``atomic`` (segment-level InfoNCE), ``gcr`` (Global Contextual Relations), ``abs`` (Action Boundary
Saliency). Baselines of the paper's comparison table: ``logit_kd``, ``fitnets``, ``mars``, ``at``
(attention transfer), ``sp`` (similarity-preserving), ``crd``, ``rkd``. XKD's ingredients per time
step (``xmkd.distill.detection_xkd_terms``): ``mmd`` (domain alignment), ``dino`` (soft targets).

The math lives in pure functions (``*_loss``) tested against loop implementations; the
``nn.Module`` wrappers own the learnable parts (projectors, regressors), which therefore belong to
the student's optimiser, and share one call signature so a config can name terms and weights::

    distill: {atomic: 1.0, gcr: 1.0, abs: 1.0}
    loss = DISTILL_LOSSES["gcr"](student_dim=512, teacher_dim=512)(student_out, teacher_out, mask)

where ``student_out`` = {"logits", "embedding"} and ``teacher_out`` = {"logits", "embedding",
"aux_embedding"} (the teacher's fused embedding and its auxiliary — flow or pose — stream's).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmkd.distill.detection_xkd_terms import StepDINOLoss, StepMMDLoss

# --------------------------------------------------------------------------------------------------
# helpers


def masked_mean_pool(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of the valid steps of each video: (B, T, E), (B, T) -> (B, E)."""
    w = mask.to(h.dtype).unsqueeze(-1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1.0)


def segment_pool(h: Tensor, mask: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Average-pool valid steps in windows of ``window`` steps: -> (B, K, E) and (B, K) bool.

    A segment is valid when it holds at least one valid step; padding only ever adds invalid
    segments (or invalid steps to the last partial one), so it changes no valid segment.
    """
    b, t, e = h.shape
    k = -(-t // window)
    pad = k * window - t
    w = mask.to(h.dtype)
    if pad:
        h = F.pad(h, (0, 0, 0, pad))
        w = F.pad(w, (0, pad))
    w = w.view(b, k, window)
    sums = (h.view(b, k, window, e) * w.unsqueeze(-1)).sum(2)
    counts = w.sum(2)
    return sums / counts.clamp_min(1.0).unsqueeze(-1), counts > 0


def _masked_log_softmax(x: Tensor, valid: Tensor, dim: int) -> Tensor:
    return torch.log_softmax(x.masked_fill(~valid, float("-inf")), dim=dim)


def _info_nce(anchors: Tensor, candidates: Tensor, temperature: float) -> Tensor:
    """Mean cross-entropy where the positive of anchor i is candidate i (rows L2-normalised)."""
    logits = anchors @ candidates.t() / temperature
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


def _zero(ref: Tensor) -> Tensor:
    return ref.sum() * 0.0  # a zero that keeps the graph (DDP wants every parameter used)


# --------------------------------------------------------------------------------------------------
# paper terms


def atomic_contrastive_loss(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor,
    window: int = 8,
    temperature: float = 0.1,
    student_proj: nn.Module | None = None,
    teacher_proj: nn.Module | None = None,
) -> Tensor:
    """Atomic-level contrastive distillation (interpretation, METHODS.md B).

    Each video is cut into segments of ``window`` steps; student and teacher embeddings are
    average-pooled over the valid steps of each segment, projected (``*_proj``, identity when None),
    L2-normalised, and an InfoNCE loss with ``temperature`` pulls each student segment to the
    teacher's same segment against all other valid teacher segments of the batch.
    """
    s, valid = segment_pool(student, mask, window)
    t, _ = segment_pool(teacher.detach(), mask, window)
    s, t = s[valid], t[valid]
    if len(s) == 0:
        return _zero(student)
    if student_proj is not None:
        s = student_proj(s)
    if teacher_proj is not None:
        t = teacher_proj(t)
    return _info_nce(F.normalize(s, dim=-1), F.normalize(t, dim=-1), temperature)


def cosine_similarity_matrices(h: Tensor, mask: Tensor | None = None, center: bool = False) -> Tensor:
    """Per-video T x T cosine similarities of per-step embeddings: (B, T, E) -> (B, T, T).

    ``center`` subtracts each video's mean embedding over its valid steps (``mask``) first, so the
    similarities measure how steps differ within the video rather than what they all share.
    """
    if center:
        if mask is None:
            mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        h = h - masked_mean_pool(h, mask).unsqueeze(1)
    n = F.normalize(h, dim=-1)
    return n @ n.transpose(1, 2)


def global_contextual_relation_loss(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor,
    mode: Literal["mse", "kl"] = "mse",
    temperature: float = 0.1,
    center: bool = False,
) -> Tensor:
    """Global Contextual Relations (interpretation, METHODS.md B).

    Per video, the T x T cosine-similarity matrices of student and teacher over valid steps;
    ``mse``: mean squared difference over the valid pairs of each video; ``kl``: KL(teacher row ||
    student row) between row-softmaxes at ``temperature``, averaged over valid rows. Each video
    counts equally (mean over videos with at least one valid step). ``center`` (interpretation):
    the similarities of the embeddings minus their per-video mean (see
    :func:`cosine_similarity_matrices`); a shared offset otherwise makes every pair look alike.
    """
    ss = cosine_similarity_matrices(student, mask, center)
    ts = cosine_similarity_matrices(teacher.detach(), mask, center)
    m = mask.to(student.dtype)
    pair = m.unsqueeze(2) * m.unsqueeze(1)
    has = mask.any(1)
    if not bool(has.any()):
        return _zero(student)
    if mode == "mse":
        per_video = ((ss - ts) ** 2 * pair).sum((1, 2)) / pair.sum((1, 2)).clamp_min(1.0)
    elif mode == "kl":
        col = mask.unsqueeze(1).expand_as(ss)
        log_ps = _masked_log_softmax(ss / temperature, col, -1)
        log_pt = _masked_log_softmax(ts / temperature, col, -1)
        kl = (log_pt.exp() * (log_pt - log_ps)).masked_fill(~col, 0.0).sum(-1)  # (B, T) per row
        per_video = (kl * m).sum(1) / m.sum(1).clamp_min(1.0)
    else:
        raise ValueError(f"gcr mode must be 'mse' or 'kl', got {mode!r}")
    return per_video[has].mean()


def boundary_saliency(
    h: Tensor, mask: Tensor, normalize: bool = True, center: bool = False
) -> tuple[Tensor, Tensor]:
    """b_t = ||h_{t+1} - h_t||_2 (B, T-1) and its validity (both steps valid).

    ``normalize`` L2-normalises each step first (interpretation: makes the saliency independent
    of each network's feature scale, so student and teacher are comparable). ``center``
    (interpretation) subtracts the video's mean embedding before normalising, so a large shared
    offset does not shrink every step's change to nearly nothing.
    """
    if center:
        h = h - masked_mean_pool(h, mask).unsqueeze(1)
    if normalize:
        h = F.normalize(h, dim=-1)
    diff = h[:, 1:] - h[:, :-1]
    # sqrt of a clamped square keeps the gradient finite where two steps are identical
    b = (diff * diff).sum(-1).clamp_min(1e-12).sqrt()
    return b, mask[:, 1:] & mask[:, :-1]


def _standardize_over_time(b: Tensor, valid: Tensor) -> Tensor:
    """Per video, (b - mean) / std over the valid steps (0 where invalid or constant)."""
    m = valid.to(b.dtype)
    n = m.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (b * m).sum(-1, keepdim=True) / n
    var = (((b - mean) * m) ** 2).sum(-1, keepdim=True) / n
    return (b - mean) * m / var.clamp_min(1e-12).sqrt()


def action_boundary_saliency_loss(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor,
    temperature: float = 0.1,
    mode: Literal["kl", "l1", "profile"] = "kl",
    normalize: bool = True,
    center: bool = False,
) -> Tensor:
    """Action Boundary Saliency (interpretation, METHODS.md B).

    Saliency b_t over valid consecutive pairs (see :func:`boundary_saliency` for ``normalize`` and
    ``center``), a softmax over time at ``temperature`` per video, then KL(teacher || student)
    (``kl``) or the L1 distance between the two distributions (``l1``); or, without a softmax,
    the mean squared difference of the two saliency profiles standardised over each video's time
    (``profile``: 1 - their correlation, x2); mean over videos with at least two valid steps.
    """
    bs, valid = boundary_saliency(student, mask, normalize, center)
    bt, _ = boundary_saliency(teacher.detach(), mask, normalize, center)
    has = valid.any(1)
    if not bool(has.any()):
        return _zero(student)
    if mode == "profile":
        zs, zt = _standardize_over_time(bs, valid), _standardize_over_time(bt, valid)
        m = valid.to(bs.dtype)
        per_video = ((zs - zt) ** 2 * m).sum(-1) / m.sum(-1).clamp_min(1.0)
        return per_video[has].mean()
    log_ps = _masked_log_softmax(bs / temperature, valid, -1)
    log_pt = _masked_log_softmax(bt / temperature, valid, -1)
    if mode == "kl":
        per_video = (log_pt.exp() * (log_pt - log_ps)).masked_fill(~valid, 0.0).sum(-1)
    elif mode == "l1":
        per_video = (log_pt.exp() - log_ps.exp()).abs().masked_fill(~valid, 0.0).sum(-1)
    else:
        raise ValueError(f"abs mode must be 'kl', 'l1' or 'profile', got {mode!r}")
    return per_video[has].mean()


# --------------------------------------------------------------------------------------------------
# baselines


def logit_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 2.0,
    scale_t2: bool = True,
) -> Tensor:
    """Multi-label logit KD: BCE of the student's sigmoid(z/T) to the teacher's sigmoid(z/T) targets,
    summed over classes, mean over valid steps; times T^2 (Hinton's gradient scaling) when ``scale_t2``."""
    targets = torch.sigmoid(teacher_logits.detach() / temperature)
    per_step = F.binary_cross_entropy_with_logits(
        student_logits / temperature, targets, reduction="none"
    ).sum(-1)
    m = mask.to(per_step.dtype)
    loss = (per_step * m).sum() / m.sum().clamp_min(1.0)
    return loss * temperature**2 if scale_t2 else loss


def masked_mse(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the valid steps and the feature dimension."""
    m = mask.to(a.dtype).unsqueeze(-1)
    return (((a - b) ** 2) * m).sum() / (m.sum() * a.shape[-1]).clamp_min(1.0)


def temporal_attention_map(h: Tensor, mask: Tensor) -> Tensor:
    """Attention-transfer map over time: per-step energy |h_t|^2, L2-normalised over valid steps."""
    energy = (h * h).sum(-1) * mask.to(h.dtype)
    return F.normalize(energy, dim=-1)


def attention_transfer_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis) over time: squared L2 distance between the
    normalised temporal attention maps, summed over steps, mean over videos with a valid step."""
    d = temporal_attention_map(student, mask) - temporal_attention_map(teacher.detach(), mask)
    has = mask.any(1)
    if not bool(has.any()):
        return _zero(student)
    return (d * d).sum(-1)[has].mean()


def similarity_preserving_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori): B x B Gram matrices of valid-step mean-pooled
    embeddings, rows L2-normalised; ||G_s - G_t||_F^2 / B^2."""
    return similarity_preserving_gram_loss(
        masked_mean_pool(student, mask), masked_mean_pool(teacher.detach(), mask)
    )


def similarity_preserving_gram_loss(s: Tensor, t: Tensor) -> Tensor:
    """SP between row-paired samples (N, E_s) and (N, E_t): ||G_s - G_t||_F^2 / N^2 of the row-normalised
    N x N Gram matrices (any two widths compare)."""
    t = t.detach()
    gs = F.normalize(s @ s.t(), dim=1)
    gt = F.normalize(t @ t.t(), dim=1)
    return ((gs - gt) ** 2).sum() / len(s) ** 2


def crd_loss(s: Tensor, t: Tensor, temperature: float = 0.07, symmetric: bool = True) -> Tensor:
    """CRD with in-batch negatives (interpretation: InfoNCE over the batch replaces the paper's
    memory bank + NCE): row i of ``s`` matches row i of ``t`` (both (N, E), L2-normalised here);
    ``symmetric`` also contrasts teacher anchors against student candidates, as CRD does."""
    s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    loss = _info_nce(s, t, temperature)
    return (loss + _info_nce(t, s, temperature)) / 2 if symmetric else loss


def _pairwise_distances(e: Tensor) -> Tensor:
    sq = (e.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1)
    return sq.clamp_min(1e-12).sqrt() * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def rkd_distance_loss(s: Tensor, t: Tensor) -> Tensor:
    """Distance-wise RKD: pairwise distances normalised by their mean over distinct pairs, Huber."""
    n = len(s)
    off = ~torch.eye(n, dtype=torch.bool, device=s.device)
    ds, dt = _pairwise_distances(s), _pairwise_distances(t)
    ds = ds / ds[off].mean().clamp_min(1e-12)
    dt = dt / dt[off].mean().clamp_min(1e-12)
    return F.smooth_l1_loss(ds[off], dt[off])


def rkd_angle_loss(s: Tensor, t: Tensor) -> Tensor:
    """Angle-wise RKD: cos of the angle at j of (e_i - e_j, e_k - e_j) over all triplets, Huber."""

    def angles(e: Tensor) -> Tensor:
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=-1)  # [j, i] = e_i - e_j
        return diff @ diff.transpose(1, 2)  # [j, i, k]

    return F.smooth_l1_loss(angles(s), angles(t))


def relational_kd_loss(
    s: Tensor, t: Tensor, distance_weight: float = 1.0, angle_weight: float = 2.0
) -> Tensor:
    """RKD (Park et al.) on pooled embeddings (N, E); weights as in the paper (1, 2)."""
    if len(s) < 2:
        return _zero(s)
    loss = distance_weight * rkd_distance_loss(s, t.detach())
    return loss + angle_weight * rkd_angle_loss(s, t.detach()) if len(s) >= 3 else loss


# --------------------------------------------------------------------------------------------------
# modules: one signature, learnable parts inside

Outputs = Mapping[str, Tensor]


def projection_mlp(in_dim: int, out_dim: int = 128, hidden: int = 512) -> nn.Module:
    """Small 2-layer MLP projector (interpretation of "a small MLP": Linear-ReLU-Linear)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


class DistillationLoss(nn.Module):
    """Base: ``forward(student_out, teacher_out, mask) -> scalar``; subclasses read what they need."""

    #: teacher outputs the loss reads (so a teacher cache can keep only those)
    teacher_keys: tuple[str, ...] = ("embedding",)

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        raise NotImplementedError


class AtomicContrastiveLoss(DistillationLoss):
    """Atomic-level InfoNCE (see ``atomic_contrastive_loss``) with learnable 128-d projectors.

    ``window`` (8), ``temperature`` (0.1), ``proj_dim`` (128), ``hidden`` (512): interpretation.
    ``teacher_projector`` (interpretation): project the teacher's segments with a learnable MLP too
    (default) or compare the student's projection with the teacher's segments as they are (then
    ``proj_dim`` is the teacher's width), so the student cannot settle for a learnt subspace of the
    teacher that is easy for it.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        window: int = 8,
        temperature: float = 0.1,
        proj_dim: int = 128,
        hidden: int = 512,
        teacher_projector: bool = True,
    ) -> None:
        super().__init__()
        self.window, self.temperature = window, temperature
        out_dim = proj_dim if teacher_projector else teacher_dim
        self.student_proj = projection_mlp(student_dim, out_dim, hidden)
        self.teacher_proj = projection_mlp(teacher_dim, proj_dim, hidden) if teacher_projector else None

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        return atomic_contrastive_loss(
            student["embedding"],
            teacher["embedding"],
            mask,
            self.window,
            self.temperature,
            self.student_proj,
            self.teacher_proj,
        )


class GlobalContextualRelationLoss(DistillationLoss):
    """Global Contextual Relations (see ``global_contextual_relation_loss``).

    Defaults (interpretation, measured in the README's Augmented-RGB section): ``mode="kl"`` between
    row-softmaxes at ``temperature`` 0.1 of similarities of per-video ``center``-ed embeddings.
    METHODS.md's first formulation, ``mode="mse", center=False``, has similarities that all sit near
    their shared offset's (a squared-error loss of ~0.03 whose gradient is 1/100 of the detection
    loss's), and moved the student by less than the seed noise.
    """

    def __init__(
        self, mode: Literal["mse", "kl"] = "kl", temperature: float = 0.1, center: bool = True
    ) -> None:
        super().__init__()
        self.mode, self.temperature, self.center = mode, temperature, center

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        return global_contextual_relation_loss(
            student["embedding"], teacher["embedding"], mask, self.mode, self.temperature, self.center
        )


class ActionBoundarySaliencyLoss(DistillationLoss):
    """Action Boundary Saliency (see ``action_boundary_saliency_loss``).

    Default ``mode="profile"`` (interpretation, measured in the README's Augmented-RGB section):
    the student's saliency profile over time should follow the teacher's, standardised per video.
    METHODS.md's first formulation, a softmax over time at ``temperature`` 0.1 and
    KL(teacher || student) (``mode="kl"``; ``"l1"``), targets a few peaked steps per video that an
    RGB student can match on its training videos without seeing the motion; it gave no gain alone and
    cancelled the other terms' gains when combined. ``normalize`` and ``center``: see
    :func:`boundary_saliency`.

    ``source`` (interpretation): the per-step representation whose changes make the saliency:
    ``embedding`` (default; the heads' last-block embeddings) or ``probabilities`` (the per-class
    sigmoid scores, where a change is literally an action starting or ending; ``normalize`` and
    ``center`` then do not apply).
    """

    def __init__(
        self,
        temperature: float = 0.1,
        mode: Literal["kl", "l1", "profile"] = "profile",
        normalize: bool = True,
        center: bool = False,
        source: Literal["embedding", "probabilities"] = "embedding",
    ) -> None:
        super().__init__()
        if source not in ("embedding", "probabilities"):
            raise ValueError(f"abs source must be 'embedding' or 'probabilities', got {source!r}")
        self.temperature, self.mode, self.normalize, self.center = temperature, mode, normalize, center
        self.source = source
        self.teacher_keys = ("logits",) if source == "probabilities" else ("embedding",)

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        if self.source == "probabilities":
            s, t = student["logits"].sigmoid(), teacher["logits"].sigmoid()
            return action_boundary_saliency_loss(s, t, mask, self.temperature, self.mode, False, False)
        return action_boundary_saliency_loss(
            student["embedding"],
            teacher["embedding"],
            mask,
            self.temperature,
            self.mode,
            self.normalize,
            self.center,
        )


class LogitKDLoss(DistillationLoss):
    """Per-step sigmoid logit KD at ``temperature`` (see ``logit_kd_loss``)."""

    teacher_keys = ("logits",)

    def __init__(self, temperature: float = 2.0, scale_t2: bool = True) -> None:
        super().__init__()
        self.temperature, self.scale_t2 = temperature, scale_t2

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        return logit_kd_loss(student["logits"], teacher["logits"], mask, self.temperature, self.scale_t2)


class FitNetsLoss(DistillationLoss):
    """FitNets hint: a learnable linear regressor student -> teacher dims, MSE over valid steps."""

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.regressor = nn.Linear(student_dim, teacher_dim)

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        return masked_mse(self.regressor(student["embedding"]), teacher["embedding"].detach(), mask)


class MARSLoss(DistillationLoss):
    """MARS: the RGB stream regresses the auxiliary (flow / pose) stream's features, MSE.

    As in MARS the features are compared directly; a linear regressor is added only when the
    dimensions differ (``regressor=None``, auto) or always/never by ``regressor=True/False``.
    """

    teacher_keys = ("aux_embedding",)

    def __init__(self, student_dim: int, aux_dim: int, regressor: bool | None = None) -> None:
        super().__init__()
        if regressor is None:
            regressor = student_dim != aux_dim
        if not regressor and student_dim != aux_dim:
            raise ValueError(f"mars without a regressor needs equal dims, got {student_dim} vs {aux_dim}")
        self.regressor = nn.Linear(student_dim, aux_dim) if regressor else nn.Identity()

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        return masked_mse(self.regressor(student["embedding"]), teacher["aux_embedding"].detach(), mask)


class AttentionTransferLoss(DistillationLoss):
    """Attention transfer over time (see ``attention_transfer_loss``)."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        return attention_transfer_loss(student["embedding"], teacher["embedding"], mask)


class SimilarityPreservingLoss(DistillationLoss):
    """Similarity-preserving KD on pooled embeddings (see ``similarity_preserving_loss``)."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        return similarity_preserving_loss(student["embedding"], teacher["embedding"], mask)


class CRDLoss(DistillationLoss):
    """Contrastive representation distillation with in-batch negatives (interpretation).

    Linear embeddings of student and teacher to ``proj_dim`` (128), L2-normalised, symmetric
    InfoNCE at ``temperature`` (0.07, CRD's). ``level="video"``: one sample per video (valid-step
    mean pool), negatives = the other videos of the batch. ``level="step"``: samples are valid
    steps of the whole batch (negatives = all other steps, including neighbours in the same video),
    at most ``max_samples`` drawn at random to bound the N x N logits.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        proj_dim: int = 128,
        temperature: float = 0.07,
        level: Literal["video", "step"] = "video",
        max_samples: int = 1024,
        symmetric: bool = True,
    ) -> None:
        super().__init__()
        if level not in ("video", "step"):
            raise ValueError(f"crd level must be 'video' or 'step', got {level!r}")
        self.student_embed = nn.Linear(student_dim, proj_dim)
        self.teacher_embed = nn.Linear(teacher_dim, proj_dim)
        self.temperature, self.level, self.max_samples, self.symmetric = (
            temperature,
            level,
            max_samples,
            symmetric,
        )

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        s, t = student["embedding"], teacher["embedding"].detach()
        if self.level == "video":
            keep = mask.any(1)
            s, t = masked_mean_pool(s, mask)[keep], masked_mean_pool(t, mask)[keep]
        else:
            s, t = s[mask], t[mask]
            if len(s) > self.max_samples:
                idx = torch.randperm(len(s), device=s.device)[: self.max_samples]
                s, t = s[idx], t[idx]
        if len(s) < 2:
            return _zero(self.student_embed(s)) + _zero(self.teacher_embed(t))
        return crd_loss(self.student_embed(s), self.teacher_embed(t), self.temperature, self.symmetric)


class RelationalKDLoss(DistillationLoss):
    """Relational KD (distance + angle) on valid-step mean-pooled embeddings per video."""

    def __init__(self, distance_weight: float = 1.0, angle_weight: float = 2.0) -> None:
        super().__init__()
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        keep = mask.any(1)
        s = masked_mean_pool(student["embedding"], mask)[keep]
        t = masked_mean_pool(teacher["embedding"], mask)[keep]
        return relational_kd_loss(s, t, self.distance_weight, self.angle_weight)


#: name -> factory(**options, plus whichever of student_dim / teacher_dim / aux_dim it takes)
DISTILL_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "atomic": AtomicContrastiveLoss,
    "gcr": GlobalContextualRelationLoss,
    "abs": ActionBoundarySaliencyLoss,
    "logit_kd": LogitKDLoss,
    "fitnets": FitNetsLoss,
    "mars": MARSLoss,
    "at": AttentionTransferLoss,
    "sp": SimilarityPreservingLoss,
    "crd": CRDLoss,
    "rkd": RelationalKDLoss,
    # XKD's ingredients, per time step (xmkd.distill.detection_xkd_terms)
    "mmd": StepMMDLoss,
    "dino": StepDINOLoss,
}


def build_distill_losses(
    weights: Mapping[str, float],
    student_dim: int,
    teacher_dim: int,
    aux_dim: int,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> nn.ModuleDict:
    """Instantiate the named terms; unknown names or options raise ValueError naming the key."""
    options = dict(options or {})
    unknown = sorted(set(weights) - set(DISTILL_LOSSES))
    unknown_opts = sorted(set(options) - set(weights))
    if unknown:
        raise ValueError(f"distill: unknown term(s) {unknown}; known: {sorted(DISTILL_LOSSES)}")
    if unknown_opts:
        raise ValueError(f"distill_options: options for term(s) {unknown_opts} that 'distill' does not name")
    losses = nn.ModuleDict()
    for name in weights:
        factory = DISTILL_LOSSES[name]
        accepted = inspect.signature(factory).parameters
        dims = {"student_dim": student_dim, "teacher_dim": teacher_dim, "aux_dim": aux_dim}
        kwargs = {k: v for k, v in dims.items() if k in accepted}
        try:
            losses[name] = factory(**kwargs, **dict(options.get(name, {})))
        except TypeError as e:
            raise ValueError(f"distill_options.{name}: {e}") from e
    return losses
