"""Synthetic audio-visual dataset: real h264/AAC files, annotation formats, folds, determinism, sync."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from xmkd.data.io.video_io import probe, read_audio, read_clip
from xmkd.data.synthetic import av as synthetic_av
from xmkd.data.synthetic.av import (
    class_name,
    ensure_synthetic_av,
    event_times,
    fold_of_group,
    make_synthetic_av,
    trajectory,
)
from xmkd.errors import ConfigError

TINY = {"classes": 3, "clips_per_class": 4, "duration": 2.0, "size": 32, "fps": 8.0, "clips_per_group": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "av"
    info = make_synthetic_av(root, workers=1, seed=3, **TINY)
    return root, info


def test_files_are_real_h264_aac(tiny):
    root, info = tiny
    assert len(info["clips"]) == 12
    for clip in info["clips"][:3]:
        path = root / clip["path"]
        meta = probe(path)
        assert (meta.codec, meta.width, meta.height, meta.num_frames) == ("h264", 32, 32, 16)
        assert meta.fps == pytest.approx(8.0) and meta.has_audio and meta.audio_sample_rate == 16000
        assert read_clip(path, 0.0, 16).shape == (16, 32, 32, 3)
        name = f"{clip['youtube_id']}_{clip['time_start']:06d}_{clip['time_end']:06d}.mp4"
        assert path.name == name and path.parent.name == clip["class"]


def test_annotation_files(tiny):
    root, info = tiny
    with open(root / "kinetics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["label", "youtube_id", "time_start", "time_end", "split"]
    assert len(rows) == 12 and {r["split"] for r in rows} <= {"train", "val"}
    for r in rows:
        assert (
            root
            / "videos"
            / r["label"]
            / f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}.mp4"
        ).exists()
    class_ind = (root / "splits" / "classInd.txt").read_text().splitlines()
    assert (
        class_ind
        == [f"{i + 1} {class_name(i)}" for i in range(3)]
        == [f"{i + 1} {n}" for i, n in enumerate(info["classes"])]
    )
    group_of = {c["path"].removeprefix("videos/"): (c["label"], c["group"]) for c in info["clips"]}
    for k in (1, 2, 3):
        train = [line.split() for line in (root / "splits" / f"trainlist0{k}.txt").read_text().splitlines()]
        test = (root / "splits" / f"testlist0{k}.txt").read_text().splitlines()
        assert all(int(idx) == group_of[f][0] + 1 for f, idx in train)
        assert sorted([f for f, _ in train] + test) == sorted(group_of)  # every clip once per fold
        assert {group_of[f] for f, _ in train}.isdisjoint({group_of[f] for f in test})  # groups kept together
        assert test, f"fold {k} has an empty test set"
    assert info["counts"]["train"] == [9, 9, 9] and info["counts"]["test"] == [3, 3, 3]


def test_fold_of_group_like_ucf101():
    assert [fold_of_group(g, 25) for g in range(25)] == [0] * 7 + [1] * 7 + [2] * 7 + [None] * 4
    assert [fold_of_group(g, 8) for g in range(8)] == [0, 0, 1, 1, 2, 2, None, None]


def test_deterministic_by_seed(tiny, tmp_path):
    """Byte-identical files whether written inline in this (long-lived) process or by fresh workers."""
    root, info = tiny
    again = make_synthetic_av(tmp_path / "again", workers=2, seed=3, **TINY)
    assert again["clips"] == info["clips"]
    for clip in info["clips"]:
        a, b = root / clip["path"], tmp_path / "again" / clip["path"]
        assert a.read_bytes() == b.read_bytes(), clip["path"]
    other = make_synthetic_av(
        tmp_path / "other", workers=1, seed=4, **{**TINY, "classes": 1, "clips_per_class": 1}
    )
    assert other["clips"][0]["youtube_id"] != info["clips"][0]["youtube_id"]


def test_sound_events_line_up_with_turns(tiny):
    root, info = tiny
    checked = 0
    for clip in info["clips"]:
        wav = read_audio(root / clip["path"], 0.0, TINY["duration"]).numpy()
        for e in clip["events_s"]:
            s = int(e * 16000)
            if s < 800 or s + 800 > len(wav):
                continue
            before, after = (
                np.sqrt(np.mean(wav[s - 800 : s - 80] ** 2)),
                np.sqrt(np.mean(wav[s + 80 : s + 800] ** 2)),
            )
            assert after > 2 * before, (clip["path"], e)
            checked += 1
    assert checked >= 5


def test_event_times_are_direction_changes():
    phase0, cps, dur = 0.3, 0.7, 4.0
    events = event_times(phase0, cps, dur)
    t = np.linspace(0, dur, 4001)
    x, _ = trajectory("HorizontalBounce", phase0 + cps * t)
    v = np.sign(np.diff(x))
    turns = t[1:-1][v[1:] != v[:-1]]
    np.testing.assert_allclose(turns, events, atol=2e-3)


def test_classes_differ_in_motion_and_pitch():
    specs = [synthetic_av.class_spec(i, 10) for i in range(10)]
    keys = {(s["family"], s["cycles_per_s"]) for s in specs}
    assert len(keys) == 10 and len({s["pitch_hz"] for s in specs}) == 10


def test_ensure_skips_or_regenerates(tiny, tmp_path):
    params = {**TINY, "classes": 1, "clips_per_class": 2, "seed": 5}
    root = ensure_synthetic_av(tmp_path / "e", workers=1, **params)
    marker = root / "dataset.json"
    mtime = marker.stat().st_mtime_ns
    assert ensure_synthetic_av(root, workers=1, **params) == root and marker.stat().st_mtime_ns == mtime
    ensure_synthetic_av(root, workers=1, **{**params, "clips_per_class": 3})
    assert len(json.loads(marker.read_text())["clips"]) == 3
    assert len(list((root / "videos").rglob("*.mp4"))) == 3


def test_bad_params_and_existing_dataset(tiny):
    root, _ = tiny
    with pytest.raises(ConfigError, match="already holds"):
        make_synthetic_av(root, **TINY)
    with pytest.raises(ConfigError, match="sample_rate"):
        make_synthetic_av(root.parent / "x", sample_rate=8000)


@pytest.mark.parametrize("label", [0, 4, 9])
def test_light_pulse_at_the_class_rate(label):
    params = synthetic_av.asdict(
        synthetic_av.SyntheticAVParams(classes=10, size=32, fps=16.0, duration=4.0, light_pulse=True)
    )
    frames, audio, events = synthetic_av.render_clip(
        {"params": params, "label": label, "group": 0, "index": 1}
    )
    brightness = frames.reshape(len(frames), -1).mean(1)
    spectrum = np.abs(np.fft.rfft(brightness - brightness.mean()))
    peak_hz = np.fft.rfftfreq(len(brightness), 1 / params["fps"])[np.argmax(spectrum)]
    assert abs(peak_hz - synthetic_av.class_spec(label, 10)["pulse_hz"]) <= 0.25  # FFT resolution over 4 s
    # the pulse dims the scene by 40-60 % at its troughs, far more than the blob and distractor move it
    assert brightness.min() < 0.75 * brightness.max()
    # everything else is drawn as without the pulse: same sound, same events, same scene at full light
    plain = synthetic_av.render_clip(
        {"params": {**params, "light_pulse": False}, "label": label, "group": 0, "index": 1}
    )
    np.testing.assert_array_equal(audio, plain[1])
    assert events == plain[2]
    brightest = int(np.argmax(brightness))
    assert np.abs(frames[brightest].astype(float) - plain[0][brightest]).mean() < 8


def test_pulse_rates_differ_by_class_and_stay_under_nyquist_at_8_fps():
    rates = [synthetic_av.class_spec(i, 10)["pulse_hz"] for i in range(10)]
    assert len(set(rates)) == 10 and min(rates) > 0 and max(rates) < 8.0 / 2


def test_heldout_clips_are_tested_in_every_fold_and_never_trained(tmp_path):
    base = {**TINY, "classes": 2, "clips_per_class": 6, "clips_per_group": 2}
    plain = synthetic_av.plan_clips(synthetic_av.SyntheticAVParams(seed=5, **base))
    more = synthetic_av.plan_clips(synthetic_av.SyntheticAVParams(seed=5, heldout_per_class=3, **base))
    assert more[: len(plain)] == plain  # adding held-out clips changes none of the others
    heldout = more[len(plain) :]
    assert len(heldout) == 6 and all(c["test_fold"] == synthetic_av.HELDOUT for c in heldout)
    assert {c["group"] for c in heldout}.isdisjoint({c["group"] for c in plain})  # scenes of their own
    info = make_synthetic_av(tmp_path / "h", workers=1, seed=5, heldout_per_class=3, **base)
    root = tmp_path / "h"
    names = {c["path"].removeprefix("videos/") for c in heldout}
    for k in (1, 2, 3):
        train = {
            line.split()[0] for line in (root / "splits" / f"trainlist0{k}.txt").read_text().splitlines()
        }
        test = set((root / "splits" / f"testlist0{k}.txt").read_text().splitlines())
        assert names <= test and names.isdisjoint(train)
    with open(root / "kinetics.csv") as f:
        val = {r["youtube_id"] for r in csv.DictReader(f) if r["split"] == "val"}
    assert {c["youtube_id"] for c in heldout} <= val
    assert info["counts"]["heldout_per_class"] == 3 and info["counts"]["test"][1] == info["counts"]["test"][0]
