"""The detection KD baselines that apply to XKD, as extra cross-modal terms of its loss.

XKD distils each modality's EMA teacher into the OTHER modality's student (METHODS.md A). These
terms do the same with the baselines of the Augmented-RGB table (``xmkd.distill.detection``), on
the clip embeddings the SVM protocol reads (mean of the patch tokens after the final norm; the
teachers' refined pooling): each student view of modality m (the masked global view and the local
views) against the teacher embedding of the other modality, averaged over views, then over the two
directions (video teacher -> audio student, audio teacher -> video student), as XKD's L_kd::

    loss_weights: {da: 1.0, kd: 0.0, rec: 5.0, fitnets: 1.0}    # FitNets in place of DINO KD

- ``fitnets``: a learnable linear regressor per direction, MSE to the teacher's embedding
  (``regressor: false``: MARS, the embeddings compared as they are; the widths are equal).
- ``sp``: similarity-preserving KD, the batch's B x B Gram matrices.
- ``rkd``: relational KD, distances and angles within the batch.

The others do not apply: ``logit_kd`` needs class logits, which self-supervised pretraining has
none of (DINO's prototype cross-entropy is XKD's own soft-logit KD, ``kd``); ``at`` (attention
transfer) and the paper's ``atomic`` / ``gcr`` / ``abs`` compare positions (time steps) of the
same sequence, and a video tubelet grid and an audio spectrogram patch grid have no common
positions; ``mars`` is ``fitnets`` without the regressor. ``crd`` would run (a symmetric InfoNCE
between the paired clips of the two modalities), but it is a different pretraining method, not a
distillation baseline: audio-visual contrastive learning, which needs many negatives per batch where
XKD is negative-free; it is left out.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from xmkd.distill.detection import relational_kd_loss, similarity_preserving_gram_loss

__all__ = ["XKD_BASELINES", "build_xkd_baselines", "cross_modal_mean"]

#: (student modality, teacher modality) pairs: each student learns from the other modality's teacher
DIRECTIONS: tuple[tuple[str, str], ...] = (("audio", "video"), ("video", "audio"))

StudentViews = Mapping[str, Sequence[Tensor]]
PairLoss = Callable[[str, Tensor, Tensor], Tensor]


def cross_modal_mean(student: StudentViews, teacher: Mapping[str, Tensor], pair_loss: PairLoss) -> Tensor:
    """Mean over the two directions of the mean over student views of ``pair_loss(student_modality,
    view (B, D), other modality's teacher embedding (B, D))``; the teacher side is detached."""
    per_direction = []
    for s_mod, t_mod in DIRECTIONS:
        views = student[s_mod]
        if not views:
            raise ValueError(f"no {s_mod} student views")
        target = teacher[t_mod].detach().float()
        per_direction.append(sum(pair_loss(s_mod, v.float(), target) for v in views) / len(views))
    return (per_direction[0] + per_direction[1]) / 2


class CrossModalFitNetsLoss(nn.Module):
    """``fitnets``: the student's embedding, through a learnable linear regressor of its own per
    direction, regresses the other modality's teacher embedding (MSE over the batch and the width);
    ``regressor: false`` compares them as they are (MARS)."""

    def __init__(self, dim: int, regressor: bool = True) -> None:
        super().__init__()
        self.regressors = nn.ModuleDict(
            {s: nn.Linear(dim, dim) if regressor else nn.Identity() for s, _ in DIRECTIONS}
        )

    def forward(self, student: StudentViews, teacher: Mapping[str, Tensor]) -> Tensor:
        return cross_modal_mean(student, teacher, lambda m, s, t: F.mse_loss(self.regressors[m](s), t))


class CrossModalSimilarityPreservingLoss(nn.Module):
    """``sp``: similarity-preserving KD between a student view's and the other teacher's B x B Gram
    matrices (``xmkd.distill.detection.similarity_preserving_gram_loss``)."""

    def forward(self, student: StudentViews, teacher: Mapping[str, Tensor]) -> Tensor:
        return cross_modal_mean(student, teacher, lambda m, s, t: similarity_preserving_gram_loss(s, t))


class CrossModalRelationalKDLoss(nn.Module):
    """``rkd``: relational KD (distance + angle, weights 1 and 2 as in the paper) within the batch
    (``xmkd.distill.detection.relational_kd_loss``)."""

    def __init__(self, distance_weight: float = 1.0, angle_weight: float = 2.0) -> None:
        super().__init__()
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, student: StudentViews, teacher: Mapping[str, Tensor]) -> Tensor:
        return cross_modal_mean(
            student,
            teacher,
            lambda m, s, t: relational_kd_loss(s, t, self.distance_weight, self.angle_weight),
        )


#: name -> factory(**options, plus ``dim`` where it takes one); the names of xmkd.distill.detection's
XKD_BASELINES: dict[str, Callable[..., nn.Module]] = {
    "fitnets": CrossModalFitNetsLoss,
    "sp": CrossModalSimilarityPreservingLoss,
    "rkd": CrossModalRelationalKDLoss,
}


def build_xkd_baselines(
    names: Sequence[str], dim: int, options: Mapping[str, Mapping[str, Any]] | None = None
) -> nn.ModuleDict:
    """Instantiate the named terms for encoders of width ``dim``; options for a term not named, or
    that the term does not take, raise ValueError naming the key."""
    options = dict(options or {})
    unknown = sorted(set(names) - set(XKD_BASELINES))
    if unknown:
        raise ValueError(f"unknown term(s) {unknown}; XKD's baselines: {sorted(XKD_BASELINES)}")
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(f"loss_options: options for term(s) {stray} that loss_weights does not name")
    terms = nn.ModuleDict()
    for name in names:
        factory = XKD_BASELINES[name]
        dims = {"dim": dim} if "dim" in inspect.signature(factory).parameters else {}
        try:
            terms[name] = factory(**dims, **dict(options.get(name, {})))
        except TypeError as e:
            raise ValueError(f"loss_options.{name}: {e}") from e
    return terms
