"""The linear-SVM evaluation protocol for frozen encoders (METHODS.md part A, "Linear").

1. Features: the frozen encoder's clip feature (mean of the patch tokens after the final norm) for
   ``K`` augmented clips of every training video (25; ESC50: 100) and every view of the
   multi-view test set (3 clips x 3 crops; ESC50: 3 clips). :func:`extract_features` batches them on
   the accelerator; under ``torch.distributed`` each rank extracts its shard and the shards are
   all-gathered with their dataset indices, so every item appears exactly once, in index order.
2. ``C``: chosen over a grid by cross-validation on the TRAINING features only, grouped by video
   (the ``K`` augmented clips of one video never straddle a train/held-out boundary), scoring the
   held-out videos by their averaged decision scores. The reference code picks ``C`` on test
   accuracy; this one never shows test labels to the selection or the fit.
3. Fit ``LinearSVC`` on all training features with the chosen ``C``; the test score of a video is
   the mean of its views' decision scores; report clip-level and video-level top-1 / top-5.

Everything after feature extraction is a pure function over numpy arrays.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from xmkd.data.datasets.bad_input import collate_with_failures
from xmkd.data.registry import trimmed_dataset
from xmkd.errors import ConfigError
from xmkd.metrics.classification import encode_video_id, encode_video_ids

__all__ = [
    "DEFAULT_C_GRID",
    "FeatureScaler",
    "FeatureSet",
    "IndexedDataset",
    "SVMResult",
    "cv_group_map",
    "cv_select_c",
    "extract_features",
    "fit_linear_svm",
    "merge_shards",
    "svm_protocol",
    "topk_accuracy",
    "video_level_scores",
]

#: Interpretation: the paper does not list its C grid; a log grid over six decades.
DEFAULT_C_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
Normalization = Literal["standard", "l2", "none"]


# ---------------------------------------------------------------------------------- features


@dataclass
class FeatureSet:
    """Clip features with their labels, video codes (the CV groups) and view indices.

    ``groups`` are int64 video codes (``encode_video_ids``); ``views`` tell the clips of one video
    apart (``clip_index * num_crops + crop_index``; for training clips the augmentation number).
    """

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    views: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cv_groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        if self.views.size == 0:
            self.views = np.zeros(len(self.labels), np.int64)
        if self.cv_groups is not None:
            self.cv_groups = np.asarray(self.cv_groups, dtype=np.int64)
        n = len(self.labels)
        if (
            self.features.ndim != 2
            or len(self.features) != n
            or len(self.groups) != n
            or len(self.views) != n
        ):
            raise ValueError(
                f"FeatureSet: features {self.features.shape}, labels {self.labels.shape}, groups "
                f"{self.groups.shape}, views {self.views.shape} disagree"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> FeatureSet:
        cv = self.cv_groups[mask] if self.cv_groups is not None else None
        return FeatureSet(self.features[mask], self.labels[mask], self.groups[mask], self.views[mask], cv)

    def with_cv_groups(self, group_of_video: dict[int, int]) -> FeatureSet:
        """Coarser CV groups (e.g. UCF101's gXX actor groups) from a video code -> group map."""
        cv = np.array([group_of_video.get(int(g), int(g)) for g in self.groups], dtype=np.int64)
        return FeatureSet(self.features, self.labels, self.groups, self.views, cv)

    def of_videos(self, codes: Iterable[int]) -> FeatureSet:
        """The clips of the given videos (by code); e.g. one fold's train or test split."""
        return self.subset(np.isin(self.groups, np.fromiter(codes, dtype=np.int64)))


class IndexedDataset(Dataset):
    """Adds the item's dataset ``index`` to each (dict) sample, so gathered shards can be merged."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        sample["index"] = index
        return sample


def merge_shards(shards: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate per-rank shards (each with an ``index`` key) and keep each index once, sorted.

    ``DistributedSampler`` pads the last shard with repeats of the first items, so the same index
    can come from two ranks; the first occurrence is kept.
    """
    if not shards:
        raise ValueError("merge_shards: no shards")
    merged = {k: torch.cat([s[k].cpu() for s in shards]) for k in shards[0]}
    index = merged["index"]
    unique, inverse = torch.unique(index, return_inverse=True)
    first = torch.full((unique.numel(),), index.numel(), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(index.numel()), reduce="amin")
    return {k: v[first] for k, v in merged.items()}  # unique is sorted, so is ``first``'s order


class FeatureFn(Protocol):
    def __call__(self, batch: dict[str, Any]) -> Tensor: ...


def _move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def extract_features(
    feature_fn: FeatureFn,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    collate_fn: Callable[..., Any] | None = None,
    num_crops: int = 1,
) -> FeatureSet:
    """Run ``feature_fn`` (a batch dict on ``device`` -> (B, D) features) over every item of ``dataset``.

    Items are dicts with ``label``, ``video_id`` and ``clip_index`` (``crop_index`` optional). Under
    an initialised ``torch.distributed`` process group each rank extracts a ``DistributedSampler``
    shard and the shards are all-gathered and merged by index (:func:`merge_shards`), so every rank
    returns the same complete, index-ordered set.
    """
    device = torch.device(device)
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    indexed = IndexedDataset(dataset)
    sampler = DistributedSampler(indexed, shuffle=False) if distributed else None
    loader = DataLoader(
        indexed,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn or collate_with_failures,
        pin_memory=device.type == "cuda",
    )
    parts: dict[str, list[Tensor]] = {"index": [], "features": [], "labels": [], "groups": [], "views": []}
    for batch in loader:
        feats = feature_fn(_move(batch, device)).float()
        crops = batch.get("crop_index")
        clip = torch.as_tensor(batch["clip_index"]).long()
        views = clip * num_crops + (torch.as_tensor(crops).long() if crops is not None else 0)
        parts["index"].append(torch.as_tensor(batch["index"]).long().to(device))
        parts["features"].append(feats)
        parts["labels"].append(torch.as_tensor(batch["label"]).long().to(device))
        parts["groups"].append(encode_video_ids(batch["video_id"]).to(device))
        parts["views"].append(views.to(device))
    if not parts["index"]:
        raise ConfigError("dataset", "no items to extract features from")
    local = {k: torch.cat(v) for k, v in parts.items()}
    if distributed:
        gathered: list[dict[str, Tensor] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, {k: v.cpu() for k, v in local.items()})
        merged = merge_shards([g for g in gathered if g is not None])
    else:
        merged = merge_shards([local])
    return FeatureSet(
        merged["features"].numpy(),
        merged["labels"].numpy(),
        merged["groups"].numpy(),
        merged["views"].numpy(),
    )


# ---------------------------------------------------------------------------------- fitting


class FeatureScaler:
    """Feature normalisation fitted on training features only.

    ``standard``: per-dimension zero mean, unit variance (statistics of the training set);
    ``l2``: each feature scaled to unit norm; ``none``. Interpretation: the paper does not say how
    features are normalised before the SVM; standardisation makes one C grid fit every encoder.
    """

    def __init__(self, mode: Normalization = "standard") -> None:
        if mode not in ("standard", "l2", "none"):
            raise ConfigError("normalize", f"must be standard | l2 | none, got {mode!r}")
        self.mode = mode
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, features: np.ndarray) -> FeatureScaler:
        if self.mode == "standard":
            self.mean = features.mean(0, dtype=np.float64).astype(np.float32)
            self.std = np.maximum(features.std(0, dtype=np.float64), 1e-6).astype(np.float32)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        if self.mode == "standard":
            if self.mean is None or self.std is None:
                raise RuntimeError("FeatureScaler.transform before fit")
            return (features - self.mean) / self.std
        if self.mode == "l2":
            return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        return features


class FitFn(Protocol):
    def __call__(self, features: np.ndarray, labels: np.ndarray, c: float) -> Any: ...


def fit_linear_svm(
    features: np.ndarray, labels: np.ndarray, c: float, max_iter: int = 5000, seed: int = 0
) -> Any:
    """scikit-learn ``LinearSVC`` (squared hinge, one-vs-rest) with ``C = c``; convergence warnings muted."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    model = LinearSVC(C=c, max_iter=max_iter, random_state=seed, dual="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, labels)
    return model


def decision_scores(model: Any, features: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) decision scores; classes absent from the fit get -inf (never predicted)."""
    raw = np.asarray(model.decision_function(features), dtype=np.float64)
    classes = np.asarray(model.classes_)
    if raw.ndim == 1:  # binary LinearSVC returns the positive class's margin only
        raw = np.stack([-raw, raw], axis=1)
    out = np.full((len(features), num_classes), -np.inf)
    out[:, classes] = raw
    return out


def video_level_scores(
    scores: np.ndarray, labels: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average the clip scores of each video: (video scores (V, K), video labels (V,), codes (V,))."""
    codes, inverse = np.unique(groups, return_inverse=True)
    summed = np.zeros((len(codes), scores.shape[1]))
    np.add.at(summed, inverse, scores)
    counts = np.bincount(inverse, minlength=len(codes))
    video_labels = np.full(len(codes), -1, np.int64)
    video_labels[inverse] = labels
    if np.any(video_labels[inverse] != labels):
        raise ValueError("clips of one video carry different labels")
    return summed / counts[:, None], video_labels, codes


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (ties broken by index)."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def cv_select_c(
    train: FeatureSet,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    n_splits: int = 3,
    normalize: Normalization = "standard",
    fit_fn: FitFn = fit_linear_svm,
    num_classes: int | None = None,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """Choose ``C`` by grouped, class-stratified K-fold cross-validation on the training set.

    Folds split videos (``groups``), never clips of one video; with ``train.cv_groups`` they split
    those coarser groups (UCF101 holds out whole actor groups ``gXX``: clips of one group share actor
    and scene, and a CV that mixes them rewards memorising the scene, choosing too large a C). Each held-out fold is scored by
    video-level top-1 of averaged decision scores (the protocol's test metric). Returns the C with
    the best mean score (the smallest such C on ties: the most regularised) and every C's mean.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not c_grid:
        raise ConfigError("c_grid", "needs at least one value")
    if len(c_grid) == 1:
        return float(c_grid[0]), {float(c_grid[0]): float("nan")}
    num_classes = num_classes or int(train.labels.max()) + 1
    num_videos = len(np.unique(train.groups))
    if num_videos < n_splits:
        raise ConfigError(
            "cv_folds", f"{n_splits} folds need at least as many training videos, got {num_videos}"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    cv_groups = train.cv_groups if train.cv_groups is not None else train.groups
    if len(np.unique(cv_groups)) < n_splits:
        cv_groups = train.groups  # too few coarse groups for the folds: fall back to videos
    folds = list(splitter.split(train.features, train.labels, cv_groups))
    means: dict[float, float] = {}
    for c in c_grid:
        accs = []
        for fit_idx, held_idx in folds:
            fit_part, held = train.subset(fit_idx), train.subset(held_idx)
            scaler = FeatureScaler(normalize).fit(fit_part.features)
            model = fit_fn(scaler.transform(fit_part.features), fit_part.labels, float(c))
            scores = decision_scores(model, scaler.transform(held.features), num_classes)
            v_scores, v_labels, _ = video_level_scores(scores, held.labels, held.groups)
            accs.append(topk_accuracy(v_scores, v_labels, 1))
        means[float(c)] = float(np.mean(accs))
    best = max(means.values())
    chosen = min(c for c, m in means.items() if m == best)
    return chosen, means


@dataclass
class SVMResult:
    c: float
    cv_scores: dict[float, float]
    clip_top1: float
    clip_top5: float
    video_top1: float
    video_top5: float
    num_train_clips: int
    num_test_clips: int
    num_test_videos: int

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["cv_scores"] = {str(k): v for k, v in self.cv_scores.items()}
        return d


def svm_protocol(
    train: FeatureSet,
    test: FeatureSet,
    num_classes: int,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    cv_folds: int = 3,
    normalize: Normalization = "standard",
    fit_fn: FitFn = fit_linear_svm,
    seed: int = 0,
) -> SVMResult:
    """Select C on ``train`` (grouped CV), fit on all of ``train``, score ``test`` per clip and per video.

    ``test.labels`` are read only after the final model has predicted, to count correct answers.
    """
    c, cv_scores = cv_select_c(train, c_grid, cv_folds, normalize, fit_fn, num_classes, seed)
    scaler = FeatureScaler(normalize).fit(train.features)
    model = fit_fn(scaler.transform(train.features), train.labels, c)
    scores = decision_scores(model, scaler.transform(test.features), num_classes)
    v_scores, v_labels, _ = video_level_scores(scores, test.labels, test.groups)
    return SVMResult(
        c=c,
        cv_scores=cv_scores,
        clip_top1=topk_accuracy(scores, test.labels, 1),
        clip_top5=topk_accuracy(scores, test.labels, 5),
        video_top1=topk_accuracy(v_scores, v_labels, 1),
        video_top5=topk_accuracy(v_scores, v_labels, 5),
        num_train_clips=len(train),
        num_test_clips=len(test),
        num_test_videos=len(v_labels),
    )


def cv_group_map(dataset: str, data_root: str, records: list) -> dict[int, int]:
    """Video code -> CV group, so C-selection folds hold out whole groups as the official splits do.

    The groups are the registered dataset's ``video_groups`` (UCF101: the actor/scene group ``gXX``
    of ``v_Class_gXX_cYY``; synthetic: the generator's scene group, from ``<data_root>/dataset.json``);
    other datasets: none (each video its own group).
    """
    groups = trimmed_dataset(dataset).video_groups
    if groups is None:
        return {}
    return {encode_video_id(video_id): group for video_id, group in groups(data_root, records).items()}
