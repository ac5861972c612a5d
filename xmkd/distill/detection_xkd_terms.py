"""XKD's ingredients as Augmented-RGB distillation terms: per-step MMD alignment and per-step DINO targets.

XKD (METHODS.md A) aligns the video and audio students' head outputs with a multi-kernel MMD and
distils each modality's teacher into the other modality's student with DINO's centred, sharpened
soft targets. Here the same two ingredients act between the RGB student and the frozen two-stream
teacher of the detection setting, one sample per valid time step (padding never enters):

- ``mmd`` (:class:`StepMMDLoss`): MMD^2 between the distribution of the student's per-step
  embeddings and the teacher's over the batch's valid steps: domain alignment of the two embedding
  spaces, with no pairing of student step t to teacher step t (the other terms do that).
- ``dino`` (:class:`StepDINOLoss`): one DINO projection head maps both per-step embeddings to
  ``out_dim`` prototypes; the teacher's step t gives soft targets q_t = softmax((h(t_t) - c) / tau_t)
  and the student's step t is trained by -sum q_t log softmax(h(s_t) / tau_s), mean over valid steps.

Both share the call signature of ``xmkd.distill.detection`` (``forward(student_out, teacher_out,
mask)``, ``teacher_keys``) and are registered there as ``mmd`` and ``dino``::

    distill: {atomic: 1.0, gcr: 1.0, abs: 1.0, mmd: 1.0, dino: 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from xmkd.distill.dino import dino_cross_entropy
from xmkd.distill.mmd import DEFAULT_GAMMAS, mmd2
from xmkd.models.heads import DINOHead

Outputs = Mapping[str, Tensor]

__all__ = ["StepDINOLoss", "StepMMDLoss", "step_dino_loss", "step_mmd_loss", "valid_steps"]


def valid_steps(h: Tensor, mask: Tensor, index: Tensor | None = None) -> Tensor:
    """The valid steps of (B, T, E) as rows (N, E), in (video, step) order; ``index`` picks a subset."""
    rows = h[mask]
    return rows if index is None else rows[index]


def _zero(ref: Tensor) -> Tensor:
    return ref.sum() * 0.0  # a zero that keeps the graph (DDP wants every parameter used)


def step_mmd_loss(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    normalize: bool = True,
    index: Tensor | None = None,
    student_proj: nn.Module | None = None,
) -> Tensor:
    """Multi-kernel MMD^2 (``xmkd.distill.mmd.mmd2``, biased, XKD's gammas) between the student's and the
    teacher's valid per-step embeddings (B, T, E), pooled over the batch.

    ``index`` keeps those rows of the (N, E) valid steps (the same rows on both sides); ``student_proj``
    maps the student's rows to the teacher's width first; ``normalize`` L2-normalises every row so the
    squared distances lie in [0, 4], where XKD's kernel bandwidths (gamma 1e-3 .. 1e3) all have a say,
    whatever the scale of either network's embeddings.
    """
    s = valid_steps(student, mask, index)
    t = valid_steps(teacher.detach(), mask, index)
    if len(s) == 0:
        return _zero(student)
    if student_proj is not None:
        s = student_proj(s)
    if normalize:
        s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    return mmd2(s, t, gammas)


def step_dino_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    center: Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.07,
) -> Tensor:
    """DINO cross-entropy per valid step: (B, T, K) head outputs of both sides, the teacher's centred by
    ``center`` (1, K) and sharpened at ``teacher_temperature``; mean over the batch's valid steps."""
    s = valid_steps(student_logits, mask)
    if len(s) == 0:
        return _zero(student_logits)
    t = valid_steps(teacher_logits, mask)
    return dino_cross_entropy(s, t, center, student_temperature, teacher_temperature)


def _sample_index(count: int, max_samples: int, device: torch.device) -> Tensor | None:
    """At most ``max_samples`` of ``count`` rows, drawn at random (None: keep them all)."""
    if max_samples <= 0 or count <= max_samples:
        return None
    return torch.randperm(count, device=device)[:max_samples]


def _adapter(student_dim: int, teacher_dim: int, projector: bool | None, term: str) -> nn.Module | None:
    """A linear map student -> teacher width: where the widths differ (``None``), always or never."""
    if projector is None:
        projector = student_dim != teacher_dim
    if not projector and student_dim != teacher_dim:
        raise ValueError(
            f"{term} without a projector needs equal widths, got student {student_dim} vs teacher {teacher_dim}"
        )
    return nn.Linear(student_dim, teacher_dim) if projector else None


class StepMMDLoss(nn.Module):
    """``mmd``: XKD's domain alignment between the student's and the teacher's per-step embeddings.

    Interpretation (knobs): ``normalize`` (True) L2-normalises each step (see :func:`step_mmd_loss`; XKD
    compares LayerNorm-ed head outputs, whose scale is fixed, whereas detection embeddings have any
    scale); ``max_samples`` (512) valid steps are drawn at random from the batch, the same on both
    sides, to bound the three N x N kernel matrices (a batch of 16 synthetic videos holds ~2000 steps);
    ``projector`` (None: only when the widths differ) is a learnable linear map of the student's steps
    to the teacher's width. ``gammas``: XKD's {1e-3, ..., 1e3}.
    """

    teacher_keys: tuple[str, ...] = ("embedding",)

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        gammas: Sequence[float] = DEFAULT_GAMMAS,
        normalize: bool = True,
        max_samples: int = 512,
        projector: bool | None = None,
    ) -> None:
        super().__init__()
        self.gammas, self.normalize, self.max_samples = tuple(gammas), normalize, max_samples
        self.projector = _adapter(student_dim, teacher_dim, projector, "mmd")

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        index = _sample_index(int(mask.sum()), self.max_samples, mask.device)
        return step_mmd_loss(
            student["embedding"],
            teacher["embedding"],
            mask,
            self.gammas,
            self.normalize,
            index,
            self.projector,
        )


class StepDINOLoss(nn.Module):
    """``dino``: XKD's DINO distillation, per time step, from the frozen teacher to the RGB student.

    A DINO head (``xmkd.models.heads.DINOHead``: MLP with LayerNorm + GELU, ``hidden`` -> ``bottleneck``,
    L2-normalised, weight-normalised Linear to ``out_dim`` prototypes, LayerNorm) maps each valid step
    of both sides; the teacher's outputs are centred by an EMA ``center`` (momentum
    ``center_momentum``, all-reduced under DDP, updated in training mode only, after the loss is
    taken) and sharpened at ``teacher_temperature``; see :func:`step_dino_loss`. Defaults: XKD's
    student temperature 0.1, its audio teacher's 0.07 and centre momentum 0.9.

    Interpretation: in XKD the teacher head is an EMA of the student head on the same encoder; the
    detection teacher is a separately trained, frozen network with no head of its own, so one head
    serves both sides and the teacher's side carries no gradient (stop-gradient), which centring and
    sharpening keep from collapsing to one prototype. ``projector`` (None: only when the widths
    differ) maps the student's steps to the teacher's width before the shared head.
    """

    teacher_keys: tuple[str, ...] = ("embedding",)
    center: Tensor

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        hidden: int = 256,
        bottleneck: int = 64,
        out_dim: int = 256,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        center_momentum: float = 0.9,
        projector: bool | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= center_momentum < 1.0:
            raise ValueError(f"dino center_momentum must be in [0, 1), got {center_momentum}")
        if min(student_temperature, teacher_temperature) <= 0:
            raise ValueError(
                f"dino temperatures must be > 0, got {student_temperature} / {teacher_temperature}"
            )
        self.projector = _adapter(student_dim, teacher_dim, projector, "dino")
        self.head = DINOHead(teacher_dim, hidden, bottleneck, out_dim)
        self.student_temperature, self.teacher_temperature = student_temperature, teacher_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: Outputs, teacher: Outputs, mask: Tensor) -> Tensor:
        s = student["embedding"]
        if self.projector is not None:
            s = self.projector(s)
        with torch.no_grad():
            t_logits = self.head(teacher["embedding"].detach())
        loss = step_dino_loss(
            self.head(s), t_logits, mask, self.center, self.student_temperature, self.teacher_temperature
        )
        if self.training and torch.is_grad_enabled():
            self.update_center(valid_steps(t_logits, mask))
        return loss

    @torch.no_grad()
    def update_center(self, rows: Tensor) -> None:
        """center <- m * center + (1 - m) * mean of ``rows`` (N, K) over all processes; unchanged
        when no process has a row (every rank takes part in the all-reduce, so none waits)."""
        stats = torch.cat([rows.float().sum(0), rows.new_tensor([len(rows)]).float()])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        count = stats[-1]
        mean = (stats[:-1] / count.clamp_min(1.0)).unsqueeze(0).to(self.center.dtype)
        moved = self.center * self.center_momentum + mean * (1.0 - self.center_momentum)
        self.center.copy_(torch.where(count > 0, moved, self.center))
