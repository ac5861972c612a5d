"""The helpers of benchmarks/decode.py (make bench-decode): the Kinetics-like clips, the frame check, timing."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np

from tests.data.media import frame_index_of, write_video
from xmkd.data.io.video_io import probe

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "decode.py"
_spec = importlib.util.spec_from_file_location("bench_decode", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_decode"] = bench
_spec.loader.exec_module(bench)


def test_kinetics_like_clip_is_h264_with_aac_at_the_asked_size_and_rate(tmp_path):
    src = write_video(tmp_path / "src.mp4", num_frames=12, fps=12, size=(48, 32))
    out = bench.make_kinetics_like(src, tmp_path / "k.mp4", seconds=1.0, height=64, fps=30)
    info = probe(out)
    assert (info.codec, info.height, info.width, info.fps, info.num_frames) == ("h264", 64, 96, 30.0, 30)
    assert info.has_audio and info.audio_sample_rate == 44100
    frames = bench.presentation_order(out)
    # the source's 12 frames, then again from the start
    assert [frame_index_of(f) for f in frames[:14]] == [*range(12), 0, 1]


def test_frame_mad_and_the_presentation_order_reference(tmp_path):
    path = write_video(tmp_path / "a.mp4", num_frames=10, fps=10, size=32, audio=False)
    ref = bench.presentation_order(path)
    assert [frame_index_of(f) for f in ref] == list(range(10))
    assert bench.frame_mad(ref[2:6], ref[2:6]) == 0.0
    assert bench.frame_mad(ref[2:6], ref[3:7]) > 10  # one frame off: far from rounding
    assert bench.frame_mad(ref[2:6], ref[2:5]) == float("inf")


def test_time_file_reports_every_reader_and_its_ratio(tmp_path):
    path = write_video(tmp_path / "a.mp4", num_frames=24, fps=12, size=32, audio=False)
    xmkd = bench.xmkd_reader({path: 12.0})
    shifted = lambda p, first, n: xmkd(p, first + 1, n)  # noqa: E731  a reader one frame off
    row = bench.time_file(path, {"xmkd": xmkd, "shifted": shifted}, 3, 4, random.Random(0))
    assert row["xmkd"]["max_frame_mad"] == 0.0 and row["shifted"]["max_frame_mad"] > 10
    assert row["shifted_ratio"] > 0 and row["shifted_cpu_ratio"] > 0
    assert np.isfinite(row["xmkd"]["median_ms"]) and row["xmkd"]["min_ms"] <= row["xmkd"]["median_ms"]
