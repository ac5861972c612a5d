from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from xmkd.metrics.detection import (
    CharadesLocalizationMAP,
    EventMAP,
    PerFrameMAP,
    charades_localization_map,
    charades_localization_targets,
    charades_sample_indices,
    event_average_precision,
    event_map,
    interpolated_average_precision,
    per_frame_average_precision,
    per_frame_map,
    pkummd_event_average_precision,
    segments_from_frame_labels,
    segments_from_frame_scores,
)


def sklearn_ap(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    s, t = scores.double().numpy(), targets.numpy().astype(int)
    return np.array(
        [average_precision_score(t[:, c], s[:, c]) if t[:, c].any() else 0.0 for c in range(s.shape[1])]
    )


def random_case(n: int, c: int, seed: int, rate: float = 0.05, ties: int | None = None):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, generator=g)
    if ties is not None:  # few distinct values: heavy ties
        scores = torch.randint(0, ties, (n, c), generator=g).float() / ties
    targets = torch.rand(n, c, generator=g) < rate
    return scores, targets


@pytest.mark.parametrize("ties", [None, 3, 17, 1000])
@pytest.mark.parametrize("class_chunk", [1, 5, 64])
def test_per_frame_ap_equals_sklearn(ties, class_chunk):
    scores, targets = random_case(3000, 13, seed=1 if ties is None else ties, ties=ties)
    ap, valid = per_frame_average_precision(scores, targets, class_chunk=class_chunk)
    np.testing.assert_allclose(ap.numpy(), sklearn_ap(scores, targets), rtol=0, atol=1e-12)
    assert valid.all()


@pytest.mark.parametrize("num_threads", [1, 3])
def test_per_frame_ap_threads_do_not_change_values(num_threads):
    scores, targets = random_case(2000, 7, seed=5, rate=0.3)
    ap, _ = per_frame_average_precision(scores, targets, class_chunk=2, num_threads=num_threads)
    np.testing.assert_allclose(ap.numpy(), sklearn_ap(scores, targets), rtol=0, atol=1e-12)


def test_per_frame_ap_edge_values():
    # infinities, -0.0 vs +0.0 (equal scores), float64 input kept exact, a single positive
    scores = torch.tensor(
        [[-np.inf, 0.0], [-0.0, 1e-300], [0.0, 2e-300], [np.inf, 2e-300], [1.0, 3e-300], [0.0, -1.0]],
        dtype=torch.float64,
    )
    targets = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0], [1, 0], [0, 0]], dtype=torch.bool)
    ap, valid = per_frame_average_precision(scores, targets)
    finite = scores.clamp(-1e308, 1e308)  # sklearn rejects inf; same order
    np.testing.assert_allclose(ap.numpy(), sklearn_ap(finite, targets), rtol=0, atol=1e-12)
    assert valid.tolist() == [True, True]


def test_per_frame_map_excludes_classes_without_positives():
    scores, targets = random_case(500, 6, seed=3)
    targets[:, [1, 4]] = False
    result = per_frame_map(scores, targets)
    assert result.excluded_classes == 2
    assert result.valid.tolist() == [True, False, True, True, False, True]
    expected = sklearn_ap(scores, targets)[[0, 2, 3, 5]].mean()
    assert result.map == pytest.approx(expected, abs=1e-12)


def test_per_frame_ap_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        per_frame_average_precision(torch.tensor([[float("nan")], [0.0]]), torch.tensor([[1], [0]]))
    with pytest.raises(ValueError, match="binary"):
        per_frame_average_precision(torch.zeros(3, 2), torch.full((3, 2), 0.5))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        per_frame_average_precision(torch.zeros(3, 2), torch.zeros(3, 3))


def test_per_frame_map_metric_accumulates_and_honours_mask():
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        preds = torch.randn(2, 40, 5, generator=g)
        targets = torch.rand(2, 40, 5, generator=g) < 0.2
        mask = torch.ones(2, 40, dtype=torch.bool)
        mask[1, 25:] = False  # padding: its scores are garbage and must not count
        preds[1, 25:] = 100.0
        batches.append((preds, targets, mask))
    metric = PerFrameMAP()
    for b in batches:
        metric.update(*b)
    value = metric.compute()
    flat_s = torch.cat([p[m] for p, _, m in batches])
    flat_t = torch.cat([t[m] for _, t, m in batches])
    assert flat_s.shape[0] == 3 * (40 + 25)
    assert float(value) == pytest.approx(sklearn_ap(flat_s, flat_t).mean(), abs=1e-12)
    assert metric.result().ap.shape == (5,)


def test_per_frame_map_merged_states_equal_single_process():
    """DDP simulation: two ranks each see half the batches; merging their states (what the cat
    all-gather does) gives the single-process value."""
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(2, 30, 4, generator=g), torch.rand(2, 30, 4, generator=g) < 0.3) for _ in range(4)]
    single, rank0, rank1 = PerFrameMAP(), PerFrameMAP(), PerFrameMAP()
    for i, (p, t) in enumerate(data):
        single.update(p, t)
        (rank0 if i % 2 == 0 else rank1).update(p, t)
    rank0.merge_state(rank1)
    assert float(rank0.compute()) == pytest.approx(float(single.compute()), abs=1e-12)


# ---------------------------------------------------------------------------------------- Charades


def test_charades_sample_indices():
    assert charades_sample_indices(100).tolist() == np.floor(np.linspace(0, 99, 25)).astype(int).tolist()
    assert charades_sample_indices(10, rule="time").tolist() == [int(j / 25 * 10) for j in range(25)]
    assert charades_sample_indices(3).max() == 2  # shorter than 25 steps: indices repeat
    with pytest.raises(ValueError):
        charades_sample_indices(0)


def test_charades_targets_follow_official_inclusive_time_points():
    # duration 25 s -> time points 0, 1, ..., 24 s; action c3 from 2.0 to 4.0 s inclusive
    gt = charades_localization_targets([(3, 2.0, 4.0), (0, 24.0, 30.0)], duration=25.0, num_classes=5)
    assert gt[:, 3].nonzero().flatten().tolist() == [2, 3, 4]
    assert gt[:, 0].nonzero().flatten().tolist() == [24]


def _loop_charades_map(scores, targets, points=25):
    """Direct implementation: per video, per point j, the step floor(j * (T-1) / (points-1))."""
    rows_s, rows_t = [], []
    for s, t in zip(scores, targets):
        length = s.shape[0]
        for j in range(points):
            step = int(np.floor(j * (length - 1) / (points - 1))) if points > 1 else 0
            rows_s.append(s[step].numpy())
            rows_t.append(t[step].numpy())
    s, t = np.stack(rows_s), np.stack(rows_t).astype(int)
    aps = [average_precision_score(t[:, c], s[:, c]) for c in range(s.shape[1]) if t[:, c].any()]
    return float(np.mean(aps))


def test_charades_localization_map_matches_direct_loop_and_metric():
    g = torch.Generator().manual_seed(2)
    lengths = [7, 25, 60, 133, 26]
    scores = [torch.randn(n, 6, generator=g) for n in lengths]
    targets = [torch.rand(n, 6, generator=g) < 0.3 for n in lengths]
    expected = _loop_charades_map(scores, targets)
    assert charades_localization_map(scores, targets).map == pytest.approx(expected, abs=1e-9)
    # the Metric with padded batches and masks
    metric = CharadesLocalizationMAP()
    for group in ([0, 1], [2, 3, 4]):
        t_max = max(lengths[i] for i in group)
        p = torch.full((len(group), t_max, 6), 50.0)
        tt = torch.zeros(len(group), t_max, 6, dtype=torch.bool)
        mask = torch.zeros(len(group), t_max, dtype=torch.bool)
        for b, i in enumerate(group):
            p[b, : lengths[i]], tt[b, : lengths[i]], mask[b, : lengths[i]] = scores[i], targets[i], True
        metric.update(p, tt, mask)
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------------------------------- events


def test_segments_from_frame_scores_runs_and_mean_score():
    scores = torch.tensor([[0.1, 0.9], [0.6, 0.9], [0.8, 0.2], [0.2, 0.7], [0.7, 0.7]])
    seg = segments_from_frame_scores(scores, fps=2.0, threshold=0.5)
    # class 0: frames 1-2 -> [0.5, 1.5) mean 0.7; frame 4 -> [2.0, 2.5) 0.7
    # class 1: frames 0-1 -> [0.0, 1.0) 0.9; frames 3-4 -> [1.5, 2.5) 0.7
    expected = [[0, 0.5, 1.5, 0.7], [0, 2.0, 2.5, 0.7], [1, 0.0, 1.0, 0.9], [1, 1.5, 2.5, 0.7]]
    np.testing.assert_allclose(seg.numpy(), expected, atol=1e-6)
    assert segments_from_frame_scores(scores, 2.0, 0.5, min_frames=2)[:, 0].tolist() == [0, 1, 1]
    gt = segments_from_frame_labels(scores > 0.5, fps=2.0)
    np.testing.assert_allclose(gt.numpy(), np.array(expected)[:, :3])


def test_interpolated_ap_envelope():
    # precision 1, 0.5, 2/3 at recall 0.5, 0.5, 1: envelope 1 up to 0.5, 2/3 up to 1 -> 0.5 + 1/3
    assert interpolated_average_precision(
        np.array([1, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])
    ) == pytest.approx(0.5 + 1 / 3)


def test_event_map_hand_worked_example():
    """One class, two videos.

    video A: GT [0, 10], [20, 30]; predictions (score): [0, 9] (0.9) IoU 0.9, [1, 10] (0.8)
             IoU 0.9 with the same (already matched) GT -> false positive, [21, 29] (0.4) IoU 0.8.
    video B: GT [0, 4]; prediction [2, 6] (0.6): IoU 2/6 = 0.333.
    Ranked: 0.9 TP, 0.8 FP, 0.6 (B), 0.4 TP; 3 GT.
    IoU 0.3: 0.6 is a TP: tp 1,1,2,3 / rank 1..4 -> precision 1, .5, .667, .75; recall 1/3,1/3,2/3,1
             envelope: 1 on (0, 1/3], .75 on (1/3, 1] -> AP = 1/3 + 2/3 * 0.75 = 0.8333
    IoU 0.5: 0.6 is a FP: precision 1, .5, .333, .5; recall 1/3, 1/3, 1/3, 2/3
             envelope 1 on (0, 1/3], .5 on (1/3, 2/3] -> AP = 1/3 + 1/3 * 0.5 = 0.5
    IoU 0.95: nothing matches -> AP 0.
    Class 1 has no GT (excluded), a prediction of it is ignored.

    The PKU-MMD protocol gives the same class-0 APs here (checked by hand: removing 0.4, 0.6, 0.8,
    0.9 in turn adds .75 * 1/3 twice and 1 * 1/3 at IoU 0.3; .5 * 1/3 and 1 * 1/3 at IoU 0.5) but
    averages over both classes, class 1 counting 0.
    """
    preds = {
        "A": torch.tensor(
            [[0, 0.0, 9.0, 0.9], [0, 1.0, 10.0, 0.8], [0, 21.0, 29.0, 0.4], [1, 0.0, 5.0, 0.99]]
        ),
        "B": torch.tensor([[0, 2.0, 6.0, 0.6]]),
    }
    gts = {"A": torch.tensor([[0, 0.0, 10.0], [0, 20.0, 30.0]]), "B": torch.tensor([[0, 0.0, 4.0]])}
    result = event_map(preds, gts, iou_thresholds=(0.3, 0.5, 0.95), protocol="activitynet")
    assert result[0.3].map == pytest.approx(1 / 3 + 2 / 3 * 0.75)
    assert result[0.5].map == pytest.approx(1 / 3 + 1 / 3 * 0.5)
    assert result[0.95].map == pytest.approx(0.0)
    assert result[0.5].excluded_classes == 1
    # sequences aligned by position give the same
    seq = event_map(
        [preds["A"], preds["B"]], [gts["A"], gts["B"]], iou_thresholds=(0.5,), protocol="activitynet"
    )
    assert seq[0.5].map == pytest.approx(result[0.5].map)
    pku = event_map(preds, gts, iou_thresholds=(0.3, 0.5, 0.95))  # the default protocol
    assert pku[0.3].map == pytest.approx((1 / 3 + 2 / 3 * 0.75) / 2)
    assert pku[0.5].map == pytest.approx((1 / 3 + 1 / 3 * 0.5) / 2)
    assert pku[0.95].map == pytest.approx(0.0)
    assert pku[0.5].ap[1] == 0 and not pku[0.5].valid[1]


def test_pkummd_and_activitynet_ap_differ_where_the_protocols_do():
    """Score order TP, FP, TP with 2 GTs. ActivityNet: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1,
    envelope 1 then 2/3 -> 1/2 + 1/2 * 2/3 = 5/6. PKU-MMD: full list p = 2/3, r = 1; removing the
    0.7 TP: p = 1/2, r = 1/2, adds 2/3 * 1/2; the FP's removal evaluates nothing; removing the 0.9
    TP empties the list (p = 0, r = 0), adds 2/3 * 1/2 -> 2/3."""
    preds = [torch.tensor([[0.0, 10.0, 0.9], [40.0, 50.0, 0.8], [20.0, 30.0, 0.7]])]
    gts = [torch.tensor([[0.0, 10.0], [20.0, 30.0]])]
    assert event_average_precision(preds, gts, 0.5) == pytest.approx(5 / 6)
    assert pkummd_event_average_precision(preds, gts, 0.5) == pytest.approx(2 / 3)
    # a low-scored duplicate on a detected GT keeps it detected until removed: AP 1 in both
    dup = [torch.tensor([[0.0, 10.0, 0.9], [1.0, 10.0, 0.1]])]
    assert pkummd_event_average_precision(dup, [gts[0][:1]], 0.5) == pytest.approx(1.0)
    assert pkummd_event_average_precision(preds, [torch.zeros(0, 2)], 0.5) == 0.0
    assert pkummd_event_average_precision([torch.zeros(0, 3)], gts, 0.5) == 0.0


def pkummd_loop_ap(props: list, ratio: float, ground: list) -> float:
    """Direct loop transcription of the PKU-MMD protocol's per-class AP on lists of
    ``(start, end, score, video)`` proposals and ``(start, end, video)`` ground truths."""

    def overlap(p, g):
        if p[-1] != g[-1]:
            return 0.0
        span = max(p[1], g[1]) - min(p[0], g[0])
        return 0.0 if span == 0 else (min(p[1], g[1]) - max(p[0], g[0])) / span

    props = sorted(props, key=lambda x: x[2])
    best = []
    for p in props:
        chosen = -1
        for j, g in enumerate(ground):
            o = overlap(p, g)
            if o >= ratio and (chosen == -1 or o >= overlap(p, ground[chosen])):
                chosen = j
        best.append(chosen)
    count = [sum(b == j for b in best) for j in range(len(ground))]
    positive = sum(c > 0 for c in count)

    def pr(pos, n, g):
        return (0.0, 0.0) if n == 0 or g == 0 else (pos / n, pos / g)

    n = len(props)
    old_p, old_r = pr(positive, n, len(ground))
    score = 0.0
    for b in best:
        n -= 1
        if b == -1:
            continue
        count[b] -= 1
        if count[b] == 0:
            positive -= 1
        prec, rec = pr(positive, n, len(ground))
        old_p = max(old_p, prec)
        score += old_p * (old_r - rec)
        old_r = rec
    return score


def test_pkummd_ap_matches_loop_transcription_on_random_segments():
    rng = np.random.default_rng(0)
    for trial in range(30):
        preds, gts, props, ground = [], [], [], []
        for v in range(3):
            g_start = np.sort(rng.integers(0, 80, rng.integers(0, 4)))
            g = np.stack([g_start, g_start + rng.integers(2, 15, len(g_start))], 1).astype(float)
            p_start = rng.integers(0, 90, rng.integers(0, 6))
            p = np.stack(
                [p_start, p_start + rng.integers(1, 15, len(p_start)), rng.integers(0, 5, len(p_start)) / 4],
                1,
            ).astype(float)  # coarse scores: ties in the order happen
            preds.append(torch.from_numpy(p).reshape(-1, 3))
            gts.append(torch.from_numpy(g).reshape(-1, 2))
            props += [(*row, v) for row in p.tolist()]
            ground += [(*row, v) for row in g.tolist()]
        for ratio in (0.1, 0.3, 0.5):
            expected = pkummd_loop_ap(props, ratio, ground) if ground and props else 0.0
            got = pkummd_event_average_precision(preds, gts, ratio)
            assert got == pytest.approx(expected, abs=1e-12), (trial, ratio)


def _event_batches(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    lengths = [30, 17, 41, 25, 9]
    probs = [torch.rand(n, 4, generator=g) for n in lengths]
    labels = []
    for n in lengths:
        lab = torch.zeros(n, 4)
        for c in range(4):
            a = int(torch.randint(0, n - 3, (1,), generator=g))
            lab[a : a + int(torch.randint(2, 8, (1,), generator=g)), c] = 1
        labels.append(lab)
    batches = []
    for group in ([0, 1], [2, 3, 4]):
        t_max = max(lengths[i] for i in group)
        p = torch.full((len(group), t_max, 4), 0.99)  # padding scores would form segments if read
        y = torch.ones(len(group), t_max, 4)
        m = torch.zeros(len(group), t_max, dtype=torch.bool)
        for b, i in enumerate(group):
            p[b, : lengths[i]], y[b, : lengths[i]], m[b, : lengths[i]] = probs[i], labels[i], True
        batches.append((p, y, m))
    return probs, labels, batches


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric EventMAP was called before")
@pytest.mark.parametrize("protocol", ["pku-mmd", "activitynet"])
def test_event_map_metric_equals_event_map_on_each_videos_valid_steps(protocol: str):
    probs, labels, batches = _event_batches()
    thresholds = (0.1, 0.3, 0.5)
    pred_seg = [segments_from_frame_scores(p, 1.0, 0.5) for p in probs]
    gt_seg = [segments_from_frame_labels(y, 1.0) for y in labels]
    expected = event_map(pred_seg, gt_seg, thresholds, num_classes=4, protocol=protocol)
    metric = EventMAP(thresholds, protocol=protocol)
    for b in batches:
        metric.update(*b)
    values = metric.compute()
    assert values.tolist() == pytest.approx([expected[t].map for t in thresholds], abs=1e-12)
    assert metric.last_result[0.3].ap.tolist() == pytest.approx(expected[0.3].ap.tolist(), abs=1e-12)
    assert float(values.min()) > 0 and float(values.max()) < 1  # a non-trivial case
    # DDP simulation: each rank saw one batch; merging the cat states gives the single-process value
    rank0, rank1 = EventMAP(thresholds, protocol=protocol), EventMAP(thresholds, protocol=protocol)
    rank0.update(*batches[1])
    rank1.update(*batches[0])
    rank0.merge_state(rank1)
    merged = rank0.compute()
    assert merged.tolist() == pytest.approx(values.tolist(), abs=1e-12)
    metric.reset()
    with pytest.raises(ValueError, match="no videos"):
        metric.compute()


def test_event_ap_takes_highest_iou_unmatched_gt():
    # One prediction overlapping two GTs: it must take the better one (IoU 0.8), leaving the other
    # for the second prediction.
    preds = [torch.tensor([[0.0, 8.0, 0.9], [9.0, 16.0, 0.8]])]
    gts = [torch.tensor([[0.0, 10.0], [6.0, 16.0]])]
    # pred 1 IoU: with GT0 0.8, with GT1 2/16 -> GT0; pred 2 IoU with GT1 0.7 -> TP. AP 1.
    assert event_average_precision(preds, gts, 0.5) == pytest.approx(1.0)
