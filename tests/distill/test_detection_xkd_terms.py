"""XKD's ingredients as detection terms (``mmd``, ``dino``) against plain loops over the valid steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmkd.distill.detection import DISTILL_LOSSES, build_distill_losses
from xmkd.distill.detection_xkd_terms import StepDINOLoss, StepMMDLoss, step_dino_loss, step_mmd_loss
from xmkd.distill.mmd import DEFAULT_GAMMAS


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def toy(seed: int = 0, b: int = 3, t: int = 6, e: int = 4, e_t: int | None = None):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, t, e, generator=g)
    te = torch.randn(b, t, e if e_t is None else e_t, generator=g) * 2.0 + 0.5
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    return s, te, mask


def loop_rows(x: torch.Tensor, mask: torch.Tensor) -> list[np.ndarray]:
    return [x[i, j].numpy() for i in range(x.shape[0]) for j in range(x.shape[1]) if mask[i, j]]


def loop_mmd2(xs: list[np.ndarray], ys: list[np.ndarray], gammas=DEFAULT_GAMMAS) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> float:
        d2 = float(((a - b) ** 2).sum())
        return sum(math.exp(-g * d2) for g in gammas)

    def mean_k(p: list[np.ndarray], q: list[np.ndarray]) -> float:
        return sum(k(a, b) for a in p for b in q) / (len(p) * len(q))

    return mean_k(xs, xs) + mean_k(ys, ys) - 2 * mean_k(xs, ys)


@pytest.mark.parametrize("normalize", [True, False])
def test_step_mmd_matches_a_loop_over_the_valid_steps(normalize: bool) -> None:
    s, t, mask = toy(0)
    t = t / 4  # unnormalised distances small enough that more than the widest kernel has a say
    xs, ys = loop_rows(s, mask), loop_rows(t, mask)
    if normalize:
        xs = [x / np.linalg.norm(x) for x in xs]
        ys = [y / np.linalg.norm(y) for y in ys]
    got = step_mmd_loss(s, t, mask, normalize=normalize).item()
    assert got == pytest.approx(loop_mmd2(xs, ys), rel=1e-4, abs=1e-6)  # mmd2 computes in float32
    assert got > 1e-3  # different distributions: a clearly positive MMD


def test_step_mmd_subset_and_projector() -> None:
    s, t, mask = toy(1, e_t=5)
    index = torch.tensor([0, 3, 7, 2])
    proj = torch.nn.Linear(4, 5)
    with torch.no_grad():
        xs = [proj(torch.from_numpy(r)).numpy() for r in np.asarray(loop_rows(s, mask))[index.numpy()]]
    ys = list(np.asarray(loop_rows(t, mask))[index.numpy()])
    xs = [x / np.linalg.norm(x) for x in xs]
    ys = [y / np.linalg.norm(y) for y in ys]
    got = step_mmd_loss(s, t, mask, index=index, student_proj=proj).item()
    assert got == pytest.approx(loop_mmd2(xs, ys), rel=1e-4, abs=1e-6)


def test_step_mmd_module_zero_for_the_same_distribution_and_draws_at_most_max_samples() -> None:
    s, t, mask = toy(2)
    loss = StepMMDLoss(student_dim=4, teacher_dim=4)
    assert loss.projector is None
    perm = s[:, torch.randperm(s.shape[1])]  # the same steps in another order: the same distribution
    full = torch.ones_like(mask)
    assert loss({"embedding": s}, {"embedding": perm}, full).item() == pytest.approx(0.0, abs=1e-5)
    small = StepMMDLoss(student_dim=4, teacher_dim=4, max_samples=3)
    torch.manual_seed(0)
    got = small({"embedding": s}, {"embedding": t}, mask)
    torch.manual_seed(0)
    index = torch.randperm(int(mask.sum()))[:3]
    assert got.item() == pytest.approx(step_mmd_loss(s, t, mask, index=index).item(), rel=1e-12)
    assert StepMMDLoss(student_dim=4, teacher_dim=6).projector.out_features == 6
    with pytest.raises(ValueError, match="mmd without a projector"):
        StepMMDLoss(student_dim=4, teacher_dim=6, projector=False)


def test_step_dino_matches_a_loop_over_the_valid_steps() -> None:
    s, t, mask = toy(3)
    center = torch.randn(1, 4) * 0.1
    total, n = 0.0, 0
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            if not mask[i, j]:
                continue
            q = np.exp((t[i, j] - center[0]).numpy() / 0.07)
            q /= q.sum()
            z = s[i, j].numpy() / 0.1
            log_p = z - z.max() - math.log(np.exp(z - z.max()).sum())
            total += -(q * log_p).sum()
            n += 1
    got = step_dino_loss(s, t, mask, center, 0.1, 0.07).item()
    assert got == pytest.approx(total / n, rel=1e-5)  # dino_cross_entropy computes in float32


def test_step_dino_module_shares_one_head_and_moves_its_centre_in_training_only() -> None:
    s, t, mask = toy(4, e=4, e_t=6)
    torch.manual_seed(0)
    loss = StepDINOLoss(student_dim=4, teacher_dim=6, hidden=8, bottleneck=4, out_dim=5, center_momentum=0.8)
    assert loss.projector is not None and loss.projector.out_features == 6
    s.requires_grad_(True)
    t.requires_grad_(True)
    with torch.no_grad():
        head_t = loss.head(t)
        head_s = loss.head(loss.projector(s))
    want = step_dino_loss(head_s, head_t, mask, torch.zeros(1, 5), 0.1, 0.07)
    got = loss({"embedding": s}, {"embedding": t}, mask)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # closed form of the centre's EMA: 0.8 * 0 + 0.2 * mean over the valid steps of the teacher's outputs
    torch.testing.assert_close(loss.center, 0.2 * head_t[mask].mean(0, keepdim=True))
    got.backward()
    assert t.grad is None and s.grad is not None and torch.isfinite(s.grad).all()
    assert loss.head.mlp[0].weight.grad is not None  # the head learns (from the student's side)
    before = loss.center.clone()
    loss.eval()
    loss({"embedding": s}, {"embedding": t}, mask)
    assert torch.equal(loss.center, before)


def test_step_dino_centre_ignores_a_batch_without_valid_steps() -> None:
    loss = StepDINOLoss(student_dim=4, teacher_dim=4, out_dim=5)
    loss.center.fill_(0.3)
    loss.update_center(torch.zeros(0, 5))
    assert torch.equal(loss.center, torch.full((1, 5), 0.3))
    s, t, _ = toy(5)
    none = torch.zeros(s.shape[:2], dtype=torch.bool)
    assert loss({"embedding": s}, {"embedding": t}, none).item() == 0.0


def test_registry_names_and_options() -> None:
    assert DISTILL_LOSSES["mmd"] is StepMMDLoss and DISTILL_LOSSES["dino"] is StepDINOLoss
    losses = build_distill_losses(
        {"mmd": 1.0, "dino": 0.5}, 8, 6, 6, {"mmd": {"normalize": False}, "dino": {"out_dim": 16}}
    )
    assert losses["mmd"].normalize is False and losses["mmd"].projector.in_features == 8
    assert losses["dino"].center.shape == (1, 16)
    with pytest.raises(ValueError, match=r"distill_options\.dino"):
        build_distill_losses({"dino": 1.0}, 4, 4, 4, {"dino": {"tau": 0.1}})
