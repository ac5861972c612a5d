"""Augmented-RGB distillation losses vs loop / numpy implementations, and their invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmkd.distill.detection import (
    DISTILL_LOSSES,
    action_boundary_saliency_loss,
    atomic_contrastive_loss,
    attention_transfer_loss,
    build_distill_losses,
    crd_loss,
    global_contextual_relation_loss,
    logit_kd_loss,
    relational_kd_loss,
    similarity_preserving_loss,
)


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def toy(seed: int = 0, b: int = 3, t: int = 7, e: int = 4):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, t, e, generator=g)
    te = torch.randn(b, t, e, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 3:] = False
    return s, te, mask


def valid_rows(x: torch.Tensor, mask: torch.Tensor) -> list[np.ndarray]:
    return [x[i][mask[i]].numpy() for i in range(len(x))]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def pad_with_garbage(x: torch.Tensor, mask: torch.Tensor, extra: int = 5):
    """Append ``extra`` padded steps holding large garbage and mark them invalid."""
    b, _, e = x.shape
    xp = torch.cat([x, 1e3 * torch.randn(b, extra, e)], 1)
    xp[:, : x.shape[1]][~mask] = 1e3  # also scribble over the existing padding
    return xp, torch.cat([mask, torch.zeros(b, extra, dtype=torch.bool)], 1)


# -- paper terms -----------------------------------------------------------------------------------


def atomic_ref(s, t, mask, w, tau) -> float:
    ss, ts = [], []
    for i in range(len(s)):
        for start in range(0, s.shape[1], w):
            m = mask[i, start : start + w].numpy()
            if m.any():
                ss.append(s[i, start : start + w].numpy()[m].mean(0))
                ts.append(t[i, start : start + w].numpy()[m].mean(0))
    ss, ts = unit(np.array(ss)), unit(np.array(ts))
    losses = []
    for a in range(len(ss)):
        logits = np.array([ss[a] @ ts[b] / tau for b in range(len(ts))])
        losses.append(-(logits[a] - math.log(np.exp(logits).sum())))
    return float(np.mean(losses))


def test_atomic_matches_loop() -> None:
    s, t, mask = toy()
    got = atomic_contrastive_loss(s, t, mask, window=3, temperature=0.1)
    assert got.item() == pytest.approx(atomic_ref(s, t, mask, 3, 0.1), rel=1e-9)


def gcr_ref(s, t, mask, mode, tau, center=False) -> float:
    per = []
    for a, b in zip(valid_rows(s, mask), valid_rows(t, mask)):
        if center:
            a, b = a - a.mean(0), b - b.mean(0)
        sa, sb = unit(a) @ unit(a).T, unit(b) @ unit(b).T
        if mode == "mse":
            per.append(((sa - sb) ** 2).mean())
        else:
            rows = []
            for r in range(len(sa)):
                ps, pt = softmax(sa[r] / tau), softmax(sb[r] / tau)
                rows.append((pt * np.log(pt / ps)).sum())
            per.append(np.mean(rows))
    return float(np.mean(per))


@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_gcr_matches_loop_and_invariances(mode: str) -> None:
    s, t, mask = toy(1)
    got = global_contextual_relation_loss(s, t, mask, mode, 0.5)
    assert got.item() == pytest.approx(gcr_ref(s, t, mask, mode, 0.5), rel=1e-9)
    assert global_contextual_relation_loss(s, s.clone(), mask, mode).item() == pytest.approx(0.0, abs=1e-12)
    # scaling the embeddings of a step changes no cosine: still zero
    assert global_contextual_relation_loss(s * 3.0, s, mask, mode).item() == pytest.approx(0.0, abs=1e-12)
    sp, mp = pad_with_garbage(s, mask)
    tp, _ = pad_with_garbage(t, mask)
    assert global_contextual_relation_loss(sp, tp, mp, mode, 0.5).item() == pytest.approx(
        got.item(), rel=1e-9
    )


def abs_ref(s, t, mask, tau, mode) -> float:
    per = []
    for a, b in zip(valid_rows(s, mask), valid_rows(t, mask)):
        ba = np.linalg.norm(np.diff(unit(a), axis=0), axis=1)
        bb = np.linalg.norm(np.diff(unit(b), axis=0), axis=1)
        if mode == "profile":
            za, zb = (ba - ba.mean()) / ba.std(), (bb - bb.mean()) / bb.std()
            per.append(((za - zb) ** 2).mean())
            continue
        ps, pt = softmax(ba / tau), softmax(bb / tau)
        per.append((pt * np.log(pt / ps)).sum() if mode == "kl" else np.abs(pt - ps).sum())
    return float(np.mean(per))


@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_centred_gcr_matches_loop_and_ignores_a_shared_offset(mode: str) -> None:
    s, t, mask = toy(4)
    got = global_contextual_relation_loss(s, t, mask, mode, 0.5, center=True)
    assert got.item() == pytest.approx(gcr_ref(s, t, mask, mode, 0.5, center=True), rel=1e-9)
    # a large offset shared by every step of a video: the centred relations do not see it ...
    offset = 50 * torch.randn(s.shape[0], 1, s.shape[2])
    shifted = global_contextual_relation_loss(s + offset, t, mask, mode, 0.5, center=True)
    assert shifted.item() == pytest.approx(got.item(), rel=1e-9)
    # ... the plain ones do: every pair of steps then looks alike
    plain = global_contextual_relation_loss(s + offset, t, mask, mode, 0.5)
    assert plain.item() != pytest.approx(gcr_ref(s, t, mask, mode, 0.5), rel=1e-3)
    sp, mp = pad_with_garbage(s, mask)
    tp, _ = pad_with_garbage(t, mask)
    padded = global_contextual_relation_loss(sp, tp, mp, mode, 0.5, center=True)
    assert padded.item() == pytest.approx(got.item(), rel=1e-9)


@pytest.mark.parametrize("mode", ["kl", "l1", "profile"])
def test_abs_matches_loop_and_invariances(mode: str) -> None:
    s, t, mask = toy(2)
    got = action_boundary_saliency_loss(s, t, mask, 0.3, mode)
    assert got.item() == pytest.approx(abs_ref(s, t, mask, 0.3, mode), rel=1e-9)
    assert action_boundary_saliency_loss(s, s.clone(), mask, 0.3, mode).item() == pytest.approx(
        0.0, abs=1e-12
    )
    sp, mp = pad_with_garbage(s, mask)
    tp, _ = pad_with_garbage(t, mask)
    assert action_boundary_saliency_loss(sp, tp, mp, 0.3, mode).item() == pytest.approx(got.item(), rel=1e-9)


def test_abs_profile_follows_the_shape_of_the_saliency_not_its_scale() -> None:
    """``profile`` compares saliency over time after standardising it per video: a student whose
    changes are the teacher's, only twice as large and offset, matches exactly."""
    g = torch.Generator().manual_seed(5)
    t = torch.randn(2, 9, 3, generator=g)
    mask = torch.ones(2, 9, dtype=torch.bool)
    s = torch.cat([t, torch.zeros(2, 9, 1)], -1)  # same changes, another width
    assert action_boundary_saliency_loss(s, t, mask, mode="profile", normalize=False).item() == pytest.approx(
        0.0, abs=1e-9
    )
    loud = s * 2.0 + 7.0  # every change twice as large
    assert action_boundary_saliency_loss(
        loud, t, mask, mode="profile", normalize=False
    ).item() == pytest.approx(0.0, abs=1e-9)
    # by hand: teacher 0,0,1,1,1 changes once (saliency 0,1,0,0); student 1,1,0,2,2 (0,1,2,0)
    teacher = torch.tensor([[[0.0], [0.0], [1.0], [1.0], [1.0]]])
    student = torch.tensor([[[1.0], [1.0], [0.0], [2.0], [2.0]]])
    bt, bs = np.array([0.0, 1.0, 0.0, 0.0]), np.array([0.0, 1.0, 2.0, 0.0])
    zt, zs = (bt - bt.mean()) / bt.std(), (bs - bs.mean()) / bs.std()
    m = torch.ones(1, 5, dtype=torch.bool)
    got = action_boundary_saliency_loss(student, teacher, m, mode="profile", normalize=False).item()
    assert got == pytest.approx(((zs - zt) ** 2).mean(), rel=1e-5)  # zero changes are 1e-6 (finite grads)


def test_abs_on_probabilities_reads_the_logits() -> None:
    s, t, mask = toy(6)
    loss = DISTILL_LOSSES["abs"](source="probabilities", mode="kl", temperature=0.3)
    assert loss.teacher_keys == ("logits",)
    got = loss({"logits": s, "embedding": None}, {"logits": t}, mask)
    want = action_boundary_saliency_loss(s.sigmoid(), t.sigmoid(), mask, 0.3, "kl", normalize=False)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_abs_gradient_finite_for_constant_sequences() -> None:
    s = torch.ones(1, 4, 3, requires_grad=True)
    action_boundary_saliency_loss(s, torch.randn(1, 4, 3), torch.ones(1, 4, dtype=torch.bool)).backward()
    assert torch.isfinite(s.grad).all()


# -- baselines -------------------------------------------------------------------------------------


def test_logit_kd_matches_loop() -> None:
    zs, zt, mask = toy(3, e=2)
    T = 2.0
    total, n = 0.0, 0
    for b in range(zs.shape[0]):
        for t in range(zs.shape[1]):
            if mask[b, t]:
                n += 1
                for c in range(2):
                    p = 1 / (1 + math.exp(-float(zs[b, t, c]) / T))
                    q = 1 / (1 + math.exp(-float(zt[b, t, c]) / T))
                    total -= q * math.log(p) + (1 - q) * math.log(1 - p)
    assert logit_kd_loss(zs, zt, mask, T).item() == pytest.approx(total / n * T * T, rel=1e-9)
    assert logit_kd_loss(zs, zt, mask, T, scale_t2=False).item() == pytest.approx(total / n, rel=1e-9)


def test_fitnets_and_mars_match_loop() -> None:
    s, t, mask = toy(4)
    fit = DISTILL_LOSSES["fitnets"](student_dim=4, teacher_dim=4)
    reg = fit.regressor
    rows = np.concatenate(
        [((reg(torch.from_numpy(a)) - torch.from_numpy(b)) ** 2).mean(1).detach().numpy()
         for a, b in zip(valid_rows(s, mask), valid_rows(t, mask))]
    )  # fmt: skip
    got = fit({"embedding": s}, {"embedding": t}, mask)
    assert got.item() == pytest.approx(rows.mean(), rel=1e-9)
    mars = DISTILL_LOSSES["mars"](student_dim=4, aux_dim=4)
    direct = np.concatenate(
        [((a - b) ** 2).mean(1) for a, b in zip(valid_rows(s, mask), valid_rows(t, mask))]
    )
    assert mars({"embedding": s}, {"aux_embedding": t}, mask).item() == pytest.approx(direct.mean(), rel=1e-9)
    assert isinstance(DISTILL_LOSSES["mars"](student_dim=4, aux_dim=6).regressor, torch.nn.Linear)


def test_attention_transfer_matches_loop() -> None:
    s, t, mask = toy(5)
    per = []
    for a, b in zip(valid_rows(s, mask), valid_rows(t, mask)):
        ea, eb = (a**2).sum(1), (b**2).sum(1)
        per.append(((ea / np.linalg.norm(ea) - eb / np.linalg.norm(eb)) ** 2).sum())
    got = attention_transfer_loss(s, t, mask)
    assert got.item() == pytest.approx(np.mean(per), rel=1e-9)
    sp, mp = pad_with_garbage(s, mask)
    tp, _ = pad_with_garbage(t, mask)
    assert attention_transfer_loss(sp, tp, mp).item() == pytest.approx(got.item(), rel=1e-9)


def pooled(x, mask) -> np.ndarray:
    return np.array([r.mean(0) for r in valid_rows(x, mask)])


def test_similarity_preserving_matches_numpy() -> None:
    s, t, mask = toy(6)
    ps, pt = pooled(s, mask), pooled(t, mask)
    gs, gt = ps @ ps.T, pt @ pt.T
    gs, gt = gs / np.linalg.norm(gs, axis=1, keepdims=True), gt / np.linalg.norm(gt, axis=1, keepdims=True)
    expected = ((gs - gt) ** 2).sum() / 9
    got = similarity_preserving_loss(s, t, mask)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    sp, mp = pad_with_garbage(s, mask)
    tp, _ = pad_with_garbage(t, mask)
    assert similarity_preserving_loss(sp, tp, mp).item() == pytest.approx(got.item(), rel=1e-9)


def test_crd_matches_loop() -> None:
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    us, ut = unit(s.numpy()), unit(t.numpy())

    def nce(a, b):
        return np.mean([-(a[i] @ b[i] / 0.07 - math.log(np.exp(a[i] @ b.T / 0.07).sum())) for i in range(4)])

    assert crd_loss(s, t, 0.07, symmetric=False).item() == pytest.approx(nce(us, ut), rel=1e-9)
    assert crd_loss(s, t, 0.07).item() == pytest.approx((nce(us, ut) + nce(ut, us)) / 2, rel=1e-9)


@pytest.mark.parametrize("level", ["video", "step"])
def test_crd_module_padding_invariant(level: str) -> None:
    s, t, mask = toy(8)
    crd = DISTILL_LOSSES["crd"](student_dim=4, teacher_dim=4, level=level)
    got = crd({"embedding": s}, {"embedding": t}, mask)
    sp, mp = pad_with_garbage(s, mask)
    tp, _ = pad_with_garbage(t, mask)
    assert crd({"embedding": sp}, {"embedding": tp}, mp).item() == pytest.approx(got.item(), rel=1e-9)


def huber(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b)
    return float(np.where(d < 1, 0.5 * d**2, d - 0.5).mean())


def test_rkd_matches_loop() -> None:
    g = torch.Generator().manual_seed(9)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)

    def dist(e):
        pairs = [np.linalg.norm(e[i] - e[j]) for i in range(4) for j in range(4) if i != j]
        return np.array(pairs) / np.mean(pairs)

    def ang(e):
        out = []
        for j in range(4):
            for i in range(4):
                for k in range(4):
                    a, b = e[i] - e[j], e[k] - e[j]
                    na, nb = np.linalg.norm(a), np.linalg.norm(b)
                    out.append(0.0 if na == 0 or nb == 0 else a @ b / na / nb)
        return np.array(out)

    sn, tn = s.numpy(), t.numpy()
    expected = huber(dist(sn), dist(tn)) + 2 * huber(ang(sn), ang(tn))
    assert relational_kd_loss(s, t).item() == pytest.approx(expected, rel=1e-6)


# -- every term through the registry: padding invariance, zero for identical where it must be ----------


@pytest.mark.parametrize("name", sorted(DISTILL_LOSSES))
def test_registry_terms_padding_invariant(name: str) -> None:
    torch.manual_seed(0)
    s, t, mask = toy(10)
    # eval: a stateful term (dino's centre) moves only in training, so both calls see the same state
    loss = build_distill_losses({name: 1.0}, student_dim=4, teacher_dim=4, aux_dim=4)[name].eval()
    outs = ({"embedding": s, "logits": s}, {"embedding": t, "logits": t, "aux_embedding": t})
    got = loss(*outs, mask)
    assert torch.isfinite(got)
    sp, mp = pad_with_garbage(s, mask)
    tp, _ = pad_with_garbage(t, mask)
    padded = loss({"embedding": sp, "logits": sp}, {"embedding": tp, "logits": tp, "aux_embedding": tp}, mp)
    assert padded.item() == pytest.approx(got.item(), rel=1e-7)


@pytest.mark.parametrize("name", ["gcr", "abs", "at", "sp", "rkd", "mars"])
def test_parameter_free_terms_zero_for_identical(name: str) -> None:
    s, _, mask = toy(11)
    loss = build_distill_losses({name: 1.0}, student_dim=4, teacher_dim=4, aux_dim=4)[name]
    got = loss({"embedding": s}, {"embedding": s.clone(), "aux_embedding": s.clone()}, mask)
    assert got.item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", sorted(DISTILL_LOSSES))
def test_teacher_side_gets_no_gradient_and_student_does(name: str) -> None:
    s, t, mask = toy(12)  # fresh leaves per term: a term that detached the student would show
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = build_distill_losses({name: 1.0}, student_dim=4, teacher_dim=4, aux_dim=4)[name]
    loss({"embedding": s, "logits": s}, {"embedding": t, "logits": t, "aux_embedding": t}, mask).backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_builder_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ValueError, match="unknown term"):
        build_distill_losses({"nope": 1.0}, 4, 4, 4)
    with pytest.raises(ValueError, match=r"distill_options\.gcr"):
        build_distill_losses({"gcr": 1.0}, 4, 4, 4, {"gcr": {"tempreature": 1.0}})
    with pytest.raises(ValueError, match="does not name"):
        build_distill_losses({"gcr": 1.0}, 4, 4, 4, {"abs": {}})
    losses = build_distill_losses({"gcr": 1.0, "atomic": 0.5}, 4, 6, 4, {"gcr": {"mode": "kl"}})
    assert losses["gcr"].mode == "kl" and losses["atomic"].teacher_proj[0].in_features == 6


def test_atomic_without_a_teacher_projector_compares_with_the_teacher_as_it_is() -> None:
    s, t, mask = toy(14)
    loss = DISTILL_LOSSES["atomic"](student_dim=4, teacher_dim=6, window=2, teacher_projector=False)
    assert loss.teacher_proj is None and loss.student_proj[-1].out_features == 6
    t6 = torch.randn(*t.shape[:2], 6)
    got = loss({"embedding": s}, {"embedding": t6}, mask)
    want = atomic_contrastive_loss(s, t6, mask, 2, 0.1, loss.student_proj, None)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_atomic_projectors_learn() -> None:
    """Gradients reach the learnable projectors (they belong in the student's optimiser)."""
    s, t, mask = toy(13)
    loss = DISTILL_LOSSES["atomic"](student_dim=4, teacher_dim=4, window=2)
    loss({"embedding": s}, {"embedding": t}, mask).backward()
    assert all(p.grad is not None for p in loss.parameters())
