"""The cue study behind the README's XKD video table (benchmarks/xkd_video_cues.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "xkd_video_cues.py"
_spec = importlib.util.spec_from_file_location("xkd_video_cues", _PATH)
cues = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cues)

pytestmark = pytest.mark.usefixtures("one_thread")


def _grey(n: int = 32, size: int = 16) -> np.ndarray:
    return np.full((n, size, size, 3), 128, np.uint8)


def _peak_hz(series: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(series - series.mean()))
    return float(np.fft.rfftfreq(len(series), 1 / cues.FPS)[np.argmax(spectrum)])


@pytest.mark.parametrize("label", [0, 5, 9])
def test_pulse_brightness_oscillates_at_the_class_rate(label):
    frames = cues.add_cue(_grey(), "pulse", label, 10, np.random.default_rng(0))
    brightness = frames.reshape(len(frames), -1).mean(1)
    assert abs(_peak_hz(brightness) - cues.pulse_rate_hz(label, 10)) <= 0.25  # 4 s: 0.25 Hz bins
    assert brightness.min() < 0.7 * brightness.max()  # depth 0.4-0.6


def test_blink_has_the_rate_everywhere_but_regions_out_of_step():
    frames = cues.add_cue(_grey(size=64), "blink", 9, 10, np.random.default_rng(1)).astype(float)[..., 0]
    corners = [frames[:, 0, 0], frames[:, -1, -1], frames[:, 0, -1], frames[:, -1, 0]]
    assert all(abs(_peak_hz(c) - 3.5) <= 0.25 for c in corners)
    correlations = np.corrcoef(np.stack(corners))[np.triu_indices(4, 1)]
    assert correlations.min() < 0.9  # a global pulse would correlate 1.0 everywhere


def test_grating_orientation_follows_the_class():
    horizontal = cues.add_cue(_grey(4, 64), "grating", 0, 10, np.random.default_rng(2)).astype(float)
    vertical = cues.add_cue(_grey(4, 64), "grating", 3, 10, np.random.default_rng(2)).astype(float)
    # class 0: stripes at 0 deg vary along x only; class 3: 90 deg, along y only
    assert horizontal[0].std(axis=0).mean() < 1 < horizontal[0].std(axis=1).mean()
    assert vertical[0].std(axis=1).mean() < 1 < vertical[0].std(axis=0).mean()


def test_motion_is_the_shipped_clip_and_unknown_cues_are_refused():
    frames = _grey()
    assert cues.add_cue(frames, "motion", 3, 10, np.random.default_rng(0)) is frames
    with pytest.raises(ValueError, match="unknown cue"):
        cues.add_cue(frames, "sparkle", 0, 10, np.random.default_rng(0))


def test_a_row_trains_and_probes_held_out_clips():
    clips = cues.make_clips(classes=3, clips_per_class=12, cue="pulse", workers=1)
    assert clips["video"].shape[1:] == (32, 64, 64, 3) and clips["is_val"].sum() == 9
    result = cues.run_row("smoke", {"cue": "pulse", "steps": 2}, clips, workers=0, probe_views=2)
    probes = ("trained_video", "trained_audio", "random_init_video", "random_init_audio")
    for key in probes + tuple(f"{p}_2_views" for p in probes):
        assert set(result[key]) == {"C=0.1", "C=1.0"} and all(0 <= v <= 1 for v in result[key].values())
    assert "loss/kd" in result["last_logs"] and np.isfinite(result["last_logs"]["loss/total"])


def test_augmented_views_are_k_random_views_of_every_clip():
    clips = cues.make_clips(classes=2, clips_per_class=12, cue="motion", workers=1)
    train_idx = ~clips["is_val"]
    dataset = cues.AugmentedClips(
        clips["video"][train_idx], clips["audio"][train_idx], clips["label"][train_idx]
    )
    video, audio, labels = cues.augmented_views(dataset, per_clip=2)
    n = len(dataset)
    assert video.shape == (2 * n, 3, 16, 64, 64) and audio.shape == (2 * n, 32000)
    np.testing.assert_array_equal(labels, np.tile(clips["label"][train_idx].numpy(), 2))
    assert not torch.equal(video[:n], video[n:])  # two different random views of each clip


def test_training_moves_the_student_away_from_its_initialisation():
    clips = cues.make_clips(classes=2, clips_per_class=12, cue="motion", workers=1)
    torch.manual_seed(0)
    model = cues.XKDPretrainer(**cues.recipe_kwargs())
    before = [p.detach().clone() for p in model.student["video"].parameters()]
    train_idx = ~clips["is_val"]
    dataset = cues.AugmentedClips(
        clips["video"][train_idx], clips["audio"][train_idx], clips["label"][train_idx]
    )
    cues.train(model, dataset, steps=2, supervised=True, workers=0)
    too_few = cues.AugmentedClips(clips["video"][:3], clips["audio"][:3], clips["label"][:3])
    with pytest.raises(ValueError, match="make no batch"):
        cues.train(model, too_few, steps=1, supervised=False, workers=0)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.student["video"].parameters()))
