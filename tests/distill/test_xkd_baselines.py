"""The detection KD baselines as XKD terms: cross-modal, averaged over views, against plain loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmkd.distill.detection import relational_kd_loss, similarity_preserving_loss
from xmkd.distill.xkd_baselines import XKD_BASELINES, build_xkd_baselines, cross_modal_mean


def clips(seed: int = 0, b: int = 5, d: int = 6, views: int = 2):
    g = torch.Generator().manual_seed(seed)
    student = {m: [torch.randn(b, d, generator=g) for _ in range(views)] for m in ("video", "audio")}
    teacher = {m: torch.randn(b, d, generator=g) * 1.5 for m in ("video", "audio")}
    return student, teacher


def test_cross_modal_mean_pairs_each_student_with_the_other_teacher() -> None:
    student, teacher = clips(0, views=3)
    calls = []

    def pair(m: str, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append((m, t))
        return s.sum() * 0 + float(len(calls))  # the k-th call returns k

    got = cross_modal_mean(student, teacher, pair)
    # audio students (calls 1-3) read the video teacher, video students (4-6) the audio teacher
    assert [m for m, _ in calls] == ["audio"] * 3 + ["video"] * 3
    assert all(torch.equal(t, teacher["video"]) for _, t in calls[:3])
    assert all(torch.equal(t, teacher["audio"]) for _, t in calls[3:])
    assert got.item() == pytest.approx(((1 + 2 + 3) / 3 + (4 + 5 + 6) / 3) / 2)


def test_fitnets_without_a_regressor_is_the_mean_squared_error_of_each_direction() -> None:
    student, teacher = clips(1)
    loss = build_xkd_baselines(["fitnets"], 6, {"fitnets": {"regressor": False}})["fitnets"]
    want = []
    for s_mod, t_mod in (("audio", "video"), ("video", "audio")):
        t = teacher[t_mod].numpy()
        want.append(np.mean([((v.numpy() - t) ** 2).mean() for v in student[s_mod]]))
    assert loss(student, teacher).item() == pytest.approx(np.mean(want), rel=1e-6)


def test_fitnets_regressors_learn_and_the_teachers_get_no_gradient() -> None:
    student, teacher = clips(2)
    for views in student.values():
        for v in views:
            v.requires_grad_(True)
    for t in teacher.values():
        t.requires_grad_(True)
    loss = build_xkd_baselines(["fitnets"], 6)["fitnets"]
    with torch.no_grad():
        reg = loss.regressors
        want = (
            sum(((reg["audio"](v) - teacher["video"]) ** 2).mean() for v in student["audio"]) / 2
            + sum(((reg["video"](v) - teacher["audio"]) ** 2).mean() for v in student["video"]) / 2
        ) / 2
    got = loss(student, teacher)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    assert all(p.grad is not None for p in loss.parameters())
    assert all(t.grad is None for t in teacher.values())
    assert all(v.grad is not None for views in student.values() for v in views)


@pytest.mark.parametrize("name", ["sp", "rkd"])
def test_relational_terms_are_the_detection_baselines_on_clip_embeddings(name: str) -> None:
    student, teacher = clips(3)
    loss = build_xkd_baselines([name], 6)[name]

    def one(s: torch.Tensor, t: torch.Tensor) -> float:
        if name == "rkd":
            return relational_kd_loss(s, t).item()
        # a clip embedding is a one-step sequence for the detection term
        one_step = torch.ones(len(s), 1, dtype=torch.bool)
        return similarity_preserving_loss(s.unsqueeze(1), t.unsqueeze(1), one_step).item()

    want = (
        np.mean([one(v, teacher["video"]) for v in student["audio"]])
        + np.mean([one(v, teacher["audio"]) for v in student["video"]])
    ) / 2
    assert loss(student, teacher).item() == pytest.approx(want, rel=1e-6)
    same = {m: [teacher[m].clone()] for m in ("video", "audio")}
    swapped = {"video": teacher["audio"], "audio": teacher["video"]}
    assert loss(same, swapped).item() == pytest.approx(0.0, abs=1e-6)  # each student is its teacher


def test_builder_names_the_bad_key() -> None:
    assert set(XKD_BASELINES) == {"fitnets", "sp", "rkd"}
    with pytest.raises(ValueError, match="unknown term"):
        build_xkd_baselines(["at"], 6)
    with pytest.raises(ValueError, match=r"loss_options\.rkd"):
        build_xkd_baselines(["rkd"], 6, {"rkd": {"angle": 1.0}})
    with pytest.raises(ValueError, match="does not name"):
        build_xkd_baselines(["sp"], 6, {"rkd": {}})
