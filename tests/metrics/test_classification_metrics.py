from __future__ import annotations

import pytest
import torch

from xmkd.metrics.classification import VideoLevelAccuracy, encode_video_id, encode_video_ids, topk_correct


def hand_built():
    """Three videos, two clips each, 6 classes.

    video "a" (label 0): clip scores put class 0 second then first -> clip top-1: 0/1 right, mean
        of raw scores: class 0 = (4 + 9) / 2 = 6.5 > class 1 = (5 + 1) / 2 = 3 -> video right.
    video "b" (label 2): both clips rank class 3 first and 2 second -> clip top-1 wrong twice,
        top-5 right; video top-1 wrong.
    video "c" (label 5): clip 1 right (5 first); clip 2 ranks 5 last -> top-5 wrong;
        mean: class 5 = (9 - 1) / 2 = 4.0 > class 4 = (1 + 6.9) / 2 = 3.95 -> video right.
    Clip top-1: 2/6; clip top-5: 5/6 (c's clip 2 misses); video top-1: 2/3 (a, c); video top-5: 1.
    """
    s = torch.zeros(6, 6)
    s[0, [0, 1]] = torch.tensor([4.0, 5.0])  # a, clip 0: predicts 1
    s[1, [0, 1]] = torch.tensor([9.0, 1.0])  # a, clip 1: predicts 0
    s[2, [2, 3]] = torch.tensor([2.0, 3.0])  # b
    s[3, [2, 3]] = torch.tensor([2.0, 3.0])  # b
    s[4, [5, 4]] = torch.tensor([9.0, 1.0])  # c, clip 0: predicts 5
    s[5] = torch.tensor([5.0, 4.0, 3.0, 2.0, 6.9, -1.0])  # c, clip 1: class 5 last
    labels = torch.tensor([0, 0, 2, 2, 5, 5])
    ids = ["a", "a", "b", "b", "c", "c"]
    return s, labels, ids


def test_hand_built_clip_and_video_accuracy():
    s, labels, ids = hand_built()
    metric = VideoLevelAccuracy(aggregate="scores")
    metric.update(s[:3], labels[:3], ids[:3])  # split across updates, video b straddles them
    metric.update(s[3:], labels[3:], ids[3:])
    out = metric.compute()
    assert out["clip_top1"] == pytest.approx(2 / 6)
    assert out["clip_top5"] == pytest.approx(5 / 6)
    assert out["video_top1"] == pytest.approx(2 / 3)
    assert out["video_top5"] == pytest.approx(1.0)


def test_softmax_aggregation_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(12, 7, generator=g) * 3
    labels = torch.randint(0, 7, (4,), generator=g).repeat_interleave(3)
    ids = torch.arange(4).repeat_interleave(3)
    metric = VideoLevelAccuracy(aggregate="softmax")
    metric.update(s, labels, ids)
    out = metric.compute()
    probs = s.softmax(1).view(4, 3, 7).mean(1)
    assert out["video_top1"] == pytest.approx((probs.argmax(1) == labels[::3]).float().mean().item())


def test_merged_states_equal_single_process_and_repeats_deduplicated():
    s, labels, ids = hand_built()
    clip = torch.tensor([0, 1, 0, 1, 0, 1])
    single = VideoLevelAccuracy(aggregate="scores")
    single.update(s, labels, ids, clip)
    rank0, rank1 = VideoLevelAccuracy(aggregate="scores"), VideoLevelAccuracy(aggregate="scores")
    rank0.update(s[[0, 2, 4]], labels[[0, 2, 4]], [ids[i] for i in (0, 2, 4)], clip[[0, 2, 4]])
    # rank 1 also sees a padded repeat of clip 0 of video "a" (DistributedSampler padding)
    rank1.update(s[[1, 3, 5, 0]], labels[[1, 3, 5, 0]], [ids[i] for i in (1, 3, 5, 0)], clip[[1, 3, 5, 0]])
    rank0.merge_state(rank1)
    merged, expected = rank0.compute(), single.compute()
    for key in expected:
        assert merged[key] == pytest.approx(float(expected[key])), key


def test_video_ids_encoding_is_stable_and_checked():
    assert encode_video_id("AB12C") == encode_video_id("AB12C") != encode_video_id("AB12D")
    assert encode_video_id(17) == 17
    assert encode_video_ids(torch.tensor([3, 4])).tolist() == [3, 4]
    with pytest.raises(ValueError, match="integers or strings"):
        encode_video_ids(torch.tensor([1.0]))
    metric = VideoLevelAccuracy()
    with pytest.raises(ValueError, match="different labels"):
        metric.update(torch.randn(2, 3), torch.tensor([0, 1]), ["v", "v"])
        metric.compute()
    with pytest.raises(ValueError, match="video ids"):
        VideoLevelAccuracy().update(torch.randn(2, 3), torch.tensor([0, 1]), ["v"])


def test_topk_correct_caps_k():
    assert topk_correct(torch.tensor([[0.1, 0.9]]), torch.tensor([0]), 5).tolist() == [True]
