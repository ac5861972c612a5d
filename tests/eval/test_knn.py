"""The weighted kNN classifier against a direct loop, and its video-level top-1."""

from __future__ import annotations

import numpy as np
import pytest

from xmkd.eval.knn import knn_scores, knn_top1
from xmkd.eval.svm import FeatureSet


def loop_knn(train, labels, test, num_classes, k, temperature):
    """One test row at a time: sort every cosine similarity, sum exp(s / T) of the k best per class."""
    out = np.zeros((len(test), num_classes))
    for i, q in enumerate(test):
        sims = [float(np.dot(q, t) / (np.linalg.norm(q) * np.linalg.norm(t))) for t in train]
        for j in sorted(range(len(train)), key=lambda j: -sims[j])[:k]:
            out[i, labels[j]] += np.exp(sims[j] / temperature)
    return out


def test_knn_scores_equal_a_direct_loop() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(40, 6)), rng.normal(size=(7, 6))
    labels = rng.integers(0, 4, size=40)
    got = knn_scores(train, labels, test, 4, k=5, temperature=0.07, chunk=3)  # chunks of 3 rows
    np.testing.assert_allclose(got, loop_knn(train, labels, test, 4, 5, 0.07), rtol=1e-10)


def test_knn_hand_worked_case() -> None:
    """Two neighbours (k = 2) at cos 1 (class 0) and cos 0 (class 1): votes e^(1/T) and e^0."""
    train = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    scores = knn_scores(train, np.array([0, 1, 0]), np.array([[3.0, 0.0]]), 2, k=2, temperature=0.5)
    np.testing.assert_allclose(scores, [[np.exp(2.0), 1.0]])


def test_knn_top1_is_video_level_and_k_is_capped() -> None:
    train = FeatureSet(np.array([[1.0, 0], [0, 1.0]]), np.array([0, 1]), np.array([10, 11]))
    # video 1: two views, one near class 0 (cos 1), one ambiguous leaning to class 1; views average
    test = FeatureSet(
        np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), np.array([0, 0, 1]), np.array([1, 1, 2])
    )
    assert knn_top1(train, test, 2, k=20) == 1.0  # k = 20 > 2 training clips: capped, no error
    wrong = FeatureSet(test.features, np.array([1, 1, 0]), test.groups)
    assert knn_top1(train, wrong, 2) == 0.0


def test_knn_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must be"):
        knn_scores(np.ones((2, 2)), np.zeros(2), np.ones((1, 2)), 2, k=0)
    with pytest.raises(ValueError, match="training features"):
        knn_scores(np.ones((2, 2)), np.zeros(3), np.ones((1, 2)), 2)
