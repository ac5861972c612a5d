"""Raw synthetic untrimmed videos: motion design, readable Charades files, flow carries the class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmkd.data.io.flow import compute_flow
from xmkd.data.io.video_io import decode_video, probe
from xmkd.data.readers.untrimmed import Segment, read_charades_csv
from xmkd.data.synthetic.raw_untrimmed import (
    MOTIONS,
    RawUntrimmedParams,
    ensure_synthetic_raw_untrimmed,
    make_synthetic_raw_untrimmed,
    motion_offset,
    plan_video,
    render_video,
    video_segments,
)
from xmkd.errors import ConfigError

SMALL = {"videos": 3, "classes": 4, "size": 48, "fps": 8.0, "min_duration_s": 3.0, "max_duration_s": 4.0,
         "objects": 1, "min_action_s": 1.0, "max_action_s": 1.5, "mean_gap_s": 0.5, "noise": 2.0}  # fmt: skip


def test_motion_offsets_start_at_zero_and_go_their_way():
    tau = np.array([0.0, 0.5, 1.0])
    for label, name in enumerate(MOTIONS):
        dx, dy, dth = motion_offset(label, tau, 64, 0.3)
        assert dx[0] == pytest.approx(0) and dy[0] == pytest.approx(0) and dth[0] == 0, name
    assert motion_offset(0, tau, 64, 0.3)[0][-1] == pytest.approx(0.3 * 64)  # right: +x at speed * size
    assert motion_offset(1, tau, 64, 0.3)[0][-1] < 0  # left
    assert motion_offset(2, tau, 64, 0.3)[1][-1] < 0  # up: image y points down
    assert motion_offset(3, tau, 64, 0.3)[1][-1] > 0  # down
    dx, dy, _ = motion_offset(MOTIONS.index("Circle"), np.array([1.5]), 64, 0.3)
    assert abs(dx[0]) < 1e-9 and abs(dy[0]) < 1e-9  # one full turn per 1.5 s
    assert motion_offset(MOTIONS.index("Spin"), tau, 64, 0.3)[2][-1] > 0


def test_appearance_is_random_per_video_not_per_class():
    p = RawUntrimmedParams(**SMALL)
    a, b = render_video(p, plan_video(p, 0)), render_video(p, plan_video(p, 1))
    assert a.dtype == np.uint8 and a.shape[1:] == (48, 48, 3)
    assert np.abs(a[0].astype(float).mean((0, 1)) - b[0].astype(float).mean((0, 1))).max() > 5
    again = render_video(p, plan_video(p, 0))
    np.testing.assert_array_equal(a, again)  # deterministic


def test_world_files_are_readable_and_flow_follows_the_class(tmp_path):
    root = tmp_path / "raw"
    info = make_synthetic_raw_untrimmed(root, workers=1, **SMALL, label_jitter_s=0.0, label_omission=0.0)
    ann = read_charades_csv(
        [root / "Charades_v1_train.csv", root / "Charades_v1_test.csv"], root / "Charades_v1_classes.txt"
    )
    assert len(ann.videos) == 3 and ann.num_classes == 4 and ann.class_names[0] == "Move right"
    assert info["counts"]["segments"] == sum(len(v.segments) for v in ann.videos) > 0
    checked = 0
    for v in ann.videos:
        path = root / "videos" / f"{v.video_id}.mp4"
        assert probe(path).duration_s == pytest.approx(v.duration_s, abs=0.01)
        decoded = decode_video(path, grey=True)
        flow = compute_flow(decoded.frames)
        for seg in v.segments:  # one object: a segment's flow is that object's motion
            lo, hi = int(np.ceil(seg.start_s * 8)) + 1, int(seg.end_s * 8) - 1
            if hi - lo < 2:
                continue
            f = flow[lo:hi]
            moving = np.linalg.norm(f, axis=-1) > 0.5
            if moving.sum() < 20:
                continue
            mx, my = f[..., 0][moving].mean(), f[..., 1][moving].mean()
            expected = {0: mx > 0.3, 1: mx < -0.3, 2: my < -0.3, 3: my > 0.3}[seg.label]
            assert expected, (v.video_id, seg, mx, my)
            checked += 1
    assert checked >= 3


def test_training_annotations_are_noisy_and_test_annotations_exact(tmp_path):
    root = tmp_path / "raw"
    params = {**SMALL, "videos": 12, "max_duration_s": 8.0, "objects": 2}
    make_synthetic_raw_untrimmed(root, workers=1, **params)
    ann = read_charades_csv(
        [root / "Charades_v1_train.csv", root / "Charades_v1_test.csv"], root / "Charades_v1_classes.txt"
    )
    exact = json.loads((root / "annotations_exact.json").read_text())
    p = RawUntrimmedParams(**params)
    written = true = 0
    for v in ann.videos:
        truth = [Segment(*a) for a in exact[v.video_id]["actions"]]
        assert truth == video_segments(plan_video(p, int(v.video_id[3:])))
        if v.subset == "testing":
            assert v.segments == truth
        else:
            written, true = written + len(v.segments), true + len(truth)
            assert v.segments != truth or not truth
    assert 0 < written < true  # some actions left out


def test_ensure_reuses_and_refuses_other_parameters(tmp_path):
    root = tmp_path / "raw"
    small = {**SMALL, "videos": 2}
    ensure_synthetic_raw_untrimmed(root, workers=1, **small)
    stamp = (root / "videos" / "RAW0000.mp4").stat().st_mtime_ns
    ensure_synthetic_raw_untrimmed(root, workers=1, **small)
    assert (root / "videos" / "RAW0000.mp4").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="other parameters"):
        ensure_synthetic_raw_untrimmed(root, workers=1, **{**small, "seed": 1})
    with pytest.raises(ConfigError, match="classes"):
        RawUntrimmedParams(classes=99).validate()
