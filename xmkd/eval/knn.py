"""Weighted k-nearest-neighbour classification of frozen features, as solo-learn and lightly report it.

Each test feature votes with its ``k`` most cosine-similar training features; a neighbour of
similarity ``s`` adds ``exp(s / T)`` to its class (k = 20, T = 0.07: solo-learn's
``WeightedKNNClassifier`` and lightly's ``knn_predict`` defaults). No parameter is fitted, so it
complements the linear probe: it asks whether classes are neighbourhoods of the feature space, not
whether a hyperplane separates them.

Examples:
    >>> scores = knn_scores(train_features, train_labels, test_features, num_classes=10)
    >>> top1 = knn_top1(train_set, test_set, num_classes=10)  # video level, views averaged
"""

from __future__ import annotations

import numpy as np

from xmkd.eval.svm import FeatureSet, topk_accuracy, video_level_scores

__all__ = ["KNN_K", "KNN_TEMPERATURE", "knn_scores", "knn_top1"]

KNN_K = 20
KNN_TEMPERATURE = 0.07


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_scores(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk: int = 1024,
) -> np.ndarray:
    """(N_test, num_classes) summed votes ``sum over the k nearest of exp(cos / T)`` per class.

    ``k`` is capped at the number of training features; test rows are processed ``chunk`` at a time
    so the similarity matrix stays small.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    train = _unit(train_features)
    labels = np.asarray(train_labels, dtype=np.int64)
    if len(train) == 0 or len(train) != len(labels):
        raise ValueError(f"{len(train)} training features for {len(labels)} labels")
    k = min(k, len(train))
    test = _unit(test_features)
    out = np.zeros((len(test), num_classes))
    rows = np.arange(min(chunk, len(test)))[:, None]
    for start in range(0, len(test), chunk):
        sim = test[start : start + chunk] @ train.T
        n = len(sim)
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        weights = np.exp(sim[rows[:n], nearest] / temperature)
        np.add.at(
            out[start : start + n], (np.broadcast_to(rows[:n], nearest.shape), labels[nearest]), weights
        )
    return out


def knn_top1(
    train: FeatureSet,
    test: FeatureSet,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> float:
    """Video-level top-1 of :func:`knn_scores`: every training clip is a neighbour candidate, a test
    video's views' votes are normalised per view and averaged (as the SVM protocol averages decision
    scores), the highest class wins."""
    scores = knn_scores(train.features, train.labels, test.features, num_classes, k, temperature)
    scores /= np.maximum(scores.sum(1, keepdims=True), 1e-300)  # each view one vote in total
    v_scores, v_labels, _ = video_level_scores(scores, test.labels, test.groups)
    return topk_accuracy(v_scores, v_labels, 1)
