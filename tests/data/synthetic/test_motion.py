"""The motion world: deterministic, labels exactly where parts move, noisy training annotations,
motion implicit in RGB and explicit in flow, readable by the real readers, growable for precondition (a)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from xmkd.data.datasets.untrimmed import frame_labels
from xmkd.data.readers.untrimmed import read_charades_csv, read_pdan_json
from xmkd.data.synthetic.motion import (
    MOTIONS,
    MotionWorldParams,
    generate_motion_world,
    idle_velocity,
    motion_velocity,
)
from xmkd.data.synthetic.untrimmed import ensure_synthetic_untrimmed, make_synthetic_untrimmed
from xmkd.errors import ConfigError

SMALL = MotionWorldParams(videos=16, min_steps=40, max_steps=80)


def test_deterministic_by_seed_and_each_video_its_own_stream():
    a, b = generate_motion_world(SMALL), generate_motion_world(SMALL)
    c = generate_motion_world(replace(SMALL, seed=1))
    for va, vb in zip(a, b):
        assert va.segments == vb.segments and va.true_segments == vb.true_segments
        for m in ("rgb", "flow"):
            np.testing.assert_array_equal(va.features[m], vb.features[m])
    assert any(not np.array_equal(va.features["rgb"], vc.features["rgb"]) for va, vc in zip(a, c))
    # more videos: the first ones are unchanged
    more = generate_motion_world(replace(SMALL, videos=20))
    for va, vm in zip(a, more):
        assert va.true_segments == vm.true_segments
        np.testing.assert_array_equal(va.features["flow"], vm.features["flow"])


def test_motions_are_defined_by_how_a_part_moves():
    rng = np.random.default_rng(0)
    slide = motion_velocity("slide", 20, 0.3, rng)
    assert np.allclose(slide, slide[0]) and np.linalg.norm(slide[0]) == pytest.approx(0.3)
    swing = motion_velocity("swing", 40, 0.3, rng)
    cross = np.abs(swing[:, 0] * swing[0, 1] - swing[:, 1] * swing[0, 0]).max()
    assert cross < 1e-9 and (swing @ swing[0] < 0).any()  # one axis, both ways
    circle = motion_velocity("circle", 24, 0.3, rng)
    assert np.allclose(np.linalg.norm(circle, axis=1), 0.3)
    a, b = circle[:-1], circle[1:]
    turn = np.degrees(np.abs(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], (a * b).sum(1))))
    assert np.all((turn > 29) & (turn < 46))  # a period of 8-12 steps: 30-45 degrees per step
    shake = motion_velocity("shake", 400, 0.3, rng)
    assert abs(np.corrcoef(shake[:-1, 0], shake[1:, 0])[0, 1]) < 0.15  # a fresh draw every step
    wander = idle_velocity(4000, 0.1, rng)
    assert (
        wander.std() == pytest.approx(0.1, rel=0.15)
        and np.corrcoef(wander[:-1, 0], wander[1:, 0])[0, 1] > 0.6
    )
    with pytest.raises(ValueError, match="unknown motion"):
        motion_velocity("jump", 3, 0.3, rng)
    assert len(MOTIONS) == 4


def test_test_labels_are_exact_training_labels_are_noisy():
    videos = generate_motion_world(replace(SMALL, videos=60))
    test = [v for v in videos if v.subset == "testing"]
    train = [v for v in videos if v.subset == "training"]
    assert test and all(v.segments == v.true_segments for v in test)
    written = sum(len(v.segments) for v in train)
    true = sum(len(v.true_segments) for v in train)
    assert 0.65 * true < written < 0.95 * true  # about 20 % of the actions left out
    moved = [
        (a.start_s, a.end_s) != (b.start_s, b.end_s)
        for v in train
        for a in v.segments
        for b in v.true_segments
        if a.label == b.label and abs(a.start_s - b.start_s) < 3
    ]
    assert any(moved)  # boundaries jittered
    assert all(s.start_s > 0 for v in videos for s in v.segments)  # step 0 is never positive
    assert any(s.end_s > v.duration_s for v in videos for s in v.true_segments)  # some run past the end


def test_a_segment_is_positive_exactly_where_its_part_performs_the_motion():
    """The labels are what the dataset's rule gives from the written segments, and a true segment's
    positive steps are exactly the steps of its motion: a slide's constant velocity covers exactly
    them (the step before is still the part's idle wander)."""
    p = replace(SMALL, videos=30)
    videos = generate_motion_world(p)
    checked = 0
    for v in videos:
        t_len = len(v.labels)
        np.testing.assert_array_equal(v.labels, frame_labels(v.segments, t_len, v.duration_s, p.classes))
        if v.subset == "testing":
            exact = frame_labels(v.true_segments, t_len, v.duration_s, p.classes)
            np.testing.assert_array_equal(v.labels, exact)
        for seg in v.true_segments:
            if seg.label % len(MOTIONS) != MOTIONS.index("slide"):
                continue
            steps = np.flatnonzero(frame_labels([seg], t_len, v.duration_s, p.classes)[:, seg.label])
            velocity = v.latents["velocity"][:, seg.label // len(MOTIONS)]
            np.testing.assert_allclose(velocity[steps], np.broadcast_to(velocity[steps[0]], (len(steps), 2)))
            assert not np.allclose(velocity[steps[0] - 1], velocity[steps[0]])
            if steps[-1] + 1 < t_len:
                assert not np.allclose(velocity[steps[-1] + 1], velocity[steps[-1]])
            checked += 1
    assert checked >= 5


def test_velocities_are_explicit_in_flow_and_implicit_in_rgb():
    """A linear map of one step's flow recovers the parts' velocities; one of RGB does not (there
    they pass through a random tanh network together with the positions)."""
    videos = generate_motion_world(replace(SMALL, videos=80, min_steps=60, max_steps=120))

    def r2(modality: str) -> float:
        data = {s: ([], []) for s in ("training", "testing")}
        for v in videos:
            data[v.subset][0].append(v.features[modality])
            data[v.subset][1].append(v.latents["velocity"].reshape(len(v.labels), -1))
        (x, y), (xt, yt) = [tuple(np.concatenate(a) for a in data[s]) for s in ("training", "testing")]
        x, xt = np.hstack([x, np.ones((len(x), 1))]), np.hstack([xt, np.ones((len(xt), 1))])
        w = np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ y)
        return float(1 - ((xt @ w - yt) ** 2).sum() / ((yt - yt.mean(0)) ** 2).sum())

    flow, rgb = r2("flow"), r2("rgb")
    assert flow > 0.8 and rgb < 0.5, (flow, rgb)


def test_written_world_reads_back_and_keeps_the_exact_annotations(tmp_path):
    info = make_synthetic_untrimmed(
        tmp_path / "w", "motion", videos=10, min_steps=30, max_steps=50, pose=True
    )
    root = tmp_path / "w"
    videos = generate_motion_world(MotionWorldParams(videos=10, min_steps=30, max_steps=50, pose=True))
    json_ann = read_pdan_json(root / "annotations.json", num_classes=12)
    csv_ann = read_charades_csv(
        [root / "Charades_v1_train.csv", root / "Charades_v1_test.csv"], root / "Charades_v1_classes.txt"
    )
    exact = json.loads((root / "annotations_exact.json").read_text())
    by_csv = {v.video_id: v for v in csv_ann.videos}
    assert len(videos) == len(json_ann.videos) == len(csv_ann.videos) == 10
    for v, j in zip(videos, json_ann.videos):
        assert v.video_id == j.video_id and v.segments == j.segments == by_csv[v.video_id].segments
        assert [list(a) for a in exact[v.video_id]["actions"]] == [
            [s.label, s.start_s, s.end_s] for s in v.true_segments
        ]
        for m in ("rgb", "flow", "pose"):
            np.testing.assert_array_equal(np.load(root / m / f"{v.video_id}.npy"), v.features[m])
    assert info["world"] == "motion" and info["feature_dims"] == {"rgb": 64, "flow": 64, "pose": 32}


def test_extra_training_videos_keep_the_test_split(tmp_path):
    base = generate_motion_world(SMALL)
    grown = generate_motion_world(replace(SMALL, extra_training_videos=20))
    assert len(grown) == len(base) + 20
    assert [v.subset for v in grown[: len(base)]] == [v.subset for v in base]
    assert all(v.subset == "training" for v in grown[len(base) :])
    for a, b in zip(base, grown):
        np.testing.assert_array_equal(a.features["rgb"], b.features["rgb"])


def test_ensure_refuses_another_world_or_unknown_knobs(tmp_path):
    root = tmp_path / "w"
    ensure_synthetic_untrimmed(root, "motion", videos=6, min_steps=20, max_steps=30)
    with pytest.raises(ConfigError, match="'motion' synthetic world, not 'evidence'"):
        ensure_synthetic_untrimmed(root, "evidence", videos=6, min_steps=20, max_steps=30)
    with pytest.raises(ConfigError, match="no parameter"):
        ensure_synthetic_untrimmed(tmp_path / "x", "motion", rgb_rotation=0.5)
    with pytest.raises(ConfigError, match="unknown synthetic world"):
        ensure_synthetic_untrimmed(tmp_path / "x", "other")
    with pytest.raises(ConfigError, match="label_omission"):
        generate_motion_world(MotionWorldParams(label_omission=1.5))
