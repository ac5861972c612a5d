"""The SVM protocol's pure parts: per-video averaging, top-k, shard merging, and C chosen on train only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmkd.eval.svm import (
    FeatureSet,
    cv_select_c,
    extract_features,
    fit_linear_svm,
    merge_shards,
    svm_protocol,
    topk_accuracy,
    video_level_scores,
)


def test_video_level_scores_hand_built() -> None:
    # video 5: two clips, video 7: three clips
    scores = np.array([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    labels = np.array([0, 0, 2, 2, 2])
    groups = np.array([5, 5, 7, 7, 7])
    v_scores, v_labels, codes = video_level_scores(scores, labels, groups)
    np.testing.assert_allclose(v_scores, [[0.5, 1.5, 0.0], [1.0, 0.0, 1.0]])
    assert v_labels.tolist() == [0, 2] and codes.tolist() == [5, 7]
    # video 5 is predicted class 1 (wrong); video 7 ties 0 and 2 -> first index (0), wrong
    assert topk_accuracy(v_scores, v_labels, 1) == 0.0
    assert topk_accuracy(v_scores, v_labels, 2) == 1.0
    # clip level: clips 0, 2, 3 right
    assert topk_accuracy(scores, labels, 1) == pytest.approx(3 / 5)


def test_video_level_scores_rejects_mixed_labels() -> None:
    with pytest.raises(ValueError, match="different labels"):
        video_level_scores(np.zeros((2, 2)), np.array([0, 1]), np.array([3, 3]))


def test_merge_shards_keeps_each_index_once_in_order() -> None:
    # DistributedSampler over 5 items and 2 ranks: rank 0 gets 0, 2, 4; rank 1 gets 1, 3, 0 (padding)
    feats = torch.arange(5.0)[:, None] * torch.ones(1, 3)
    shard0 = {"index": torch.tensor([0, 2, 4]), "features": feats[[0, 2, 4]]}
    shard1 = {"index": torch.tensor([1, 3, 0]), "features": feats[[1, 3, 0]]}
    merged = merge_shards([shard0, shard1])
    assert merged["index"].tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(merged["features"], feats)


def test_extract_features_in_index_order_with_views() -> None:
    items = [
        {
            "x": torch.full((2,), float(i)),
            "label": i % 2,
            "video_id": f"v{i // 3}",
            "clip_index": i % 3,
            "crop_index": 1,
        }
        for i in range(7)
    ]
    got = extract_features(lambda b: b["x"] * 2, items, batch_size=3, num_crops=3)
    np.testing.assert_allclose(got.features[:, 0], 2 * np.arange(7))
    assert got.labels.tolist() == [i % 2 for i in range(7)]
    assert got.views.tolist() == [(i % 3) * 3 + 1 for i in range(7)]
    assert len(np.unique(got.groups)) == 3


def _blobs(rng: np.random.Generator, videos_per_class: int, clips: int, classes: int, noise: float):
    centres = rng.normal(size=(classes, 8)) * 3
    feats, labels, groups = [], [], []
    for c in range(classes):
        for v in range(videos_per_class):
            video_centre = centres[c] + rng.normal(size=8) * noise
            for _ in range(clips):
                feats.append(video_centre + rng.normal(size=8) * 0.3)
                labels.append(c)
                groups.append(c * 1000 + v)
    return FeatureSet(np.array(feats), np.array(labels), np.array(groups))


def test_cv_folds_never_split_a_video() -> None:
    train = _blobs(np.random.default_rng(0), videos_per_class=6, clips=4, classes=3, noise=0.5)
    seen: list[np.ndarray] = []

    def recording_fit(x, y, c):
        seen.append(x[:, -1].copy())  # last column carries the video code (normalize=none)
        return fit_linear_svm(x, y, c)

    train.features = np.concatenate([train.features, train.groups[:, None].astype(np.float32)], axis=1)
    cv_select_c(train, (0.1, 1.0), n_splits=3, normalize="none", fit_fn=recording_fit)
    assert len(seen) == 6
    for codes in seen:
        present, counts = np.unique(codes, return_counts=True)
        assert np.all(counts == 4), "a video's augmented clips straddle a CV boundary"
        assert 0 < len(present) < 18


class _ColumnModel:
    """A fake 'SVM' whose C decides which block of feature columns it reads as class scores."""

    def __init__(self, columns: slice, classes: np.ndarray) -> None:
        self.columns, self.classes_ = columns, classes

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return x[:, self.columns]


def test_c_is_chosen_on_training_data_never_on_test_labels() -> None:
    """C = 1 reads columns 0-2, C = 10 reads columns 3-5. Training data: the label is one-hot in
    columns 0-2 and noise in 3-5, so CV must choose C = 1. Test data: the reverse, so C = 10 is the
    test-optimal C; a protocol that peeked at test labels would choose it."""
    rng = np.random.default_rng(0)
    k, videos, clips = 3, 12, 4
    train_labels = np.repeat(np.arange(videos) % k, clips)
    test_labels = np.repeat(np.arange(9) % k, 3)

    def block(labels: np.ndarray, informative_first: bool) -> np.ndarray:
        onehot = np.eye(k)[labels] + rng.normal(size=(len(labels), k)) * 0.1
        noise = rng.normal(size=(len(labels), k))
        return np.concatenate([onehot, noise] if informative_first else [noise, onehot], axis=1)

    train = FeatureSet(block(train_labels, True), train_labels, np.repeat(np.arange(videos), clips))
    test = FeatureSet(block(test_labels, False), test_labels, np.repeat(np.arange(9) + 100, 3))
    received: list[tuple[np.ndarray, np.ndarray, float]] = []

    def fake_fit(x: np.ndarray, y: np.ndarray, c: float) -> _ColumnModel:
        received.append((x, y, c))
        return _ColumnModel(slice(0, k) if c == 1.0 else slice(k, 2 * k), np.arange(k))

    result = svm_protocol(train, test, k, c_grid=(1.0, 10.0), cv_folds=3, normalize="none", fit_fn=fake_fit)
    # the test-optimal C is 10 (independently computed), the CV choice is 1
    test_acc = {
        c: topk_accuracy(*video_level_scores(test.features[:, s], test.labels, test.groups)[:2])
        for c, s in ((1.0, slice(0, k)), (10.0, slice(k, 2 * k)))
    }
    assert test_acc[10.0] == 1.0 > test_acc[1.0]
    assert result.c == 1.0 and result.cv_scores[1.0] == 1.0 > result.cv_scores[10.0]
    assert result.video_top1 == test_acc[1.0]
    # the fit never saw a test row nor the test labels: every call got training rows only
    train_rows = {tuple(r) for r in train.features.round(6)}
    assert len(received) == 2 * 3 + 1
    for x, y, _ in received:
        assert {tuple(r) for r in x.round(6)} <= train_rows
        assert (len(y) == len(x) and len(x) < len(train)) or np.array_equal(y, train.labels)
    assert received[-1][2] == 1.0 and np.array_equal(received[-1][1], train.labels)


def test_real_svm_end_to_end_on_separable_blobs() -> None:
    rng = np.random.default_rng(1)
    train = _blobs(rng, videos_per_class=6, clips=4, classes=3, noise=0.3)
    test = _blobs(np.random.default_rng(1), videos_per_class=3, clips=3, classes=3, noise=0.3)
    test.groups = test.groups + 10**6
    result = svm_protocol(train, test, 3, c_grid=(0.01, 1.0), cv_folds=3)
    assert result.video_top1 == 1.0 and result.clip_top5 == 1.0
    assert result.num_test_videos == 9 and result.num_train_clips == 72


def test_cv_holds_out_whole_coarse_groups_when_given() -> None:
    train = _blobs(np.random.default_rng(2), videos_per_class=6, clips=2, classes=3, noise=0.5)
    scene = {int(g): int(g) % 1000 // 2 for g in np.unique(train.groups)}  # 3 scenes per class, 2 videos each
    train = train.with_cv_groups(scene)
    seen: list[np.ndarray] = []

    def recording_fit(x, y, c):
        seen.append(np.round(x[:, -1]).astype(int))
        return fit_linear_svm(x, y, c)

    train.features = np.concatenate([train.features, train.cv_groups[:, None].astype(np.float32)], axis=1)
    cv_select_c(train, (0.1, 1.0), n_splits=3, normalize="none", fit_fn=recording_fit)
    for scenes in seen[:3]:
        held_out = set(range(3)) - set(scenes.tolist())
        assert len(held_out) == 1, "each CV fold holds out exactly one whole scene group"


DDP_SCRIPT = """
import sys
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from xmkd.eval.svm import extract_features


def worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        items = [{"x": torch.full((2,), float(i)), "label": i % 3, "video_id": f"v{i}", "clip_index": 0}
                 for i in range(5)]
        got = extract_features(lambda b: b["x"] + 1, items, batch_size=2)
        np.save(f"{out_dir}/rank{rank}.npy", np.concatenate([got.features, got.labels[:, None]], axis=1))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(2, int(sys.argv[1]), sys.argv[2]), nprocs=2, join=True)
"""


@pytest.mark.slow
def test_extract_features_under_ddp_returns_every_item_once(tmp_path) -> None:
    import socket
    import subprocess
    import sys

    script = tmp_path / "ddp_extract.py"
    script.write_text(DDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([sys.executable, str(script), str(port), str(tmp_path)], check=True, timeout=240)
    for rank in range(2):
        arr = np.load(tmp_path / f"rank{rank}.npy")
        # 5 items over 2 ranks: DistributedSampler pads rank 1 with item 0; merged, each appears once
        np.testing.assert_allclose(arr[:, 0], np.arange(5) + 1)
        assert arr[:, 2].tolist() == [i % 3 for i in range(5)]
