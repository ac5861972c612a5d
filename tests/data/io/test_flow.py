"""Optical flow: quantisation, accuracy on known motion, decoding counts, real videos, resume, failures."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from xmkd.data.io.flow import (
    compute_flow,
    compute_flow_folder,
    dequantize_flow,
    list_videos,
    quantize_flow,
    read_flow,
    read_flow_file,
)
from xmkd.data.io.video_io import decode_video, probe, resampled_frame_count
from xmkd.errors import ConfigError, FeatureError


def write_counter_video(path: Path, frames: int, fps: float, size: int = 32) -> None:
    """Frame i is a flat grey of value 8 * i (so a decoded frame says which one it is)."""
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "0", "preset": "ultrafast"}
        for i in range(frames):
            img = np.full((size, size, 3), 8 * i, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, 1 / rate
            c.mux(s.encode(f))
        c.mux(s.encode(None))


def textured_pair(dx: float, dy: float, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random texture and the same texture translated by (dx, dy) pixels (content moves)."""
    rng = np.random.default_rng(0)
    big = cv2.resize(rng.random((h // 4, w // 4)), (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    big = (255 * (big - big.min()) / (big.max() - big.min())).astype(np.float32)
    m0 = np.float32([[1, 0, -w / 2], [0, 1, -h / 2]])
    m1 = np.float32([[1, 0, -w / 2 + dx], [0, 1, -h / 2 + dy]])
    a = cv2.warpAffine(big, m0, (w, h), flags=cv2.INTER_CUBIC)
    b = cv2.warpAffine(big, m1, (w, h), flags=cv2.INTER_CUBIC)
    return np.clip(a, 0, 255).astype(np.uint8), np.clip(b, 0, 255).astype(np.uint8)


def test_quantisation_round_trip_and_clipping():
    v = np.array([-30.0, -20.0, -7.3, 0.0, 0.04, 5.5, 20.0, 44.0], dtype=np.float32)
    q = quantize_flow(v, bound=20)
    assert q.dtype == np.uint8 and q[0] == 0 and q[1] == 0 and q[-2] == 255 and q[-1] == 255
    back = dequantize_flow(q, bound=20).numpy()
    inside = np.abs(v) <= 20
    assert np.all(np.abs(back[inside] - v[inside]) <= 20 / 255 + 1e-6)  # half a step of 40 / 255
    assert back[0] == pytest.approx(-20) and back[-1] == pytest.approx(20)


@pytest.mark.parametrize("method", ["dis", "farneback"])
@pytest.mark.parametrize("shift", [(1.5, -0.7), (4.3, 2.1)])
def test_flow_recovers_a_known_translation(method, shift):
    a, b = textured_pair(*shift)
    flow = compute_flow(np.stack([a, b]), method=method)
    assert flow.shape == (2, 96, 128, 2)
    inner = flow[0, 16:-16, 16:-16]
    epe = np.hypot(inner[..., 0] - shift[0], inner[..., 1] - shift[1]).mean()
    assert epe < 0.3, epe
    np.testing.assert_array_equal(flow[1], flow[0])  # the last step repeats the one before


def test_decode_video_count_order_and_resampling(tmp_path):
    path = tmp_path / "count.mp4"
    write_counter_video(path, frames=30, fps=10)  # 3.0 s
    native = decode_video(path, grey=True)
    assert native.num_frames == 30 and native.duration_s == pytest.approx(3.0)
    values = native.frames[:, 16, 16, 0].astype(int)
    assert np.all(np.abs(values - 8 * np.arange(30)) <= 3)  # pts order, no duplicates
    half = decode_video(path, fps=4, size=16, grey=True)  # times 0, 0.25, ... 2.75: frames 0, 2, 5, 7, ...
    assert half.num_frames == resampled_frame_count(3.0, 4) == 12
    assert half.frames.shape[1:] == (16, 16, 1)
    expected = np.floor(np.arange(12) / 4 * 10 + 1e-9).astype(int)
    assert np.all(np.abs(half.frames[:, 8, 8, 0].astype(int) - 8 * expected) <= 3)


def test_resampled_frame_count_formula():
    assert resampled_frame_count(10.0, 8) == 80  # 0 .. 9.875
    assert resampled_frame_count(6.56, 8) == 53  # 6.5 < 6.56 is still inside
    assert resampled_frame_count(0.01, 8) == 1


@pytest.mark.realdata
def test_real_videos_flow_non_degenerate_corrupt_reported_and_resumable(realdata, tmp_path):
    demo = realdata("video/demo.mp4")
    ucf = realdata("ucf101/videos")
    videos = demo.parent.parent / "all"
    videos.mkdir()
    for p in [demo, *sorted(ucf.glob("*.avi"))]:
        os.link(p, videos / p.name)
    (videos / "broken.mp4").write_bytes(demo.read_bytes()[:4000])
    out = tmp_path / "flow"
    done: list[str] = []
    report = compute_flow_folder(
        videos, out, fps=8, size=64, workers=2, progress=False, on_video_done=done.append
    )
    assert [Path(f.path).name for f in report.failures] == ["broken.mp4"]
    assert "broken.mp4" in report.summary("flow")
    expected = {p.stem for p in videos.iterdir()} - {"broken"}
    assert set(report.done) == set(done) == expected
    for vid in expected:
        src = next(videos.glob(f"{vid}.*"))
        flow = read_flow(out / f"{vid}.npz")
        info = probe(src)
        assert flow.shape[0] == math.ceil(info.duration_s * 8 - 1e-6)
        assert flow.shape[1] == 2 and min(flow.shape[2:]) == 64
        mag = flow.norm(dim=1)
        per_step = mag.mean(dim=(1, 2))
        assert float(mag.mean()) > 0.05, (vid, float(mag.mean()))  # real motion, not all zeros
        assert float(per_step.std()) > 0.01  # motion changes over time
    # resume: nothing recomputed, files untouched
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    again = compute_flow_folder(videos, out, fps=8, size=64, workers=1, progress=False)
    assert again.done == [] and set(again.skipped) == expected and len(again.failures) == 1
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    with pytest.raises(ConfigError, match="other settings"):
        compute_flow_folder(videos, out, fps=12, size=64, workers=1, progress=False)


def test_cli_exit_code_and_interrupted_run_resumes(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_counter_video(videos / f"v{i}.mp4", frames=8 + i, fps=8)
    out = tmp_path / "flow"

    def stop(vid: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_flow_folder(videos, out, size=16, workers=1, progress=False, on_video_done=stop)
    assert len(list(out.glob("*.npz"))) == 1 and not list(out.glob(".*tmp*"))
    first = next(out.glob("*.npz"))
    stamp = first.stat().st_mtime_ns

    import argparse

    from xmkd.data.tools.compute_flow import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert (
        run(parser.parse_args(["--videos", str(videos), "--out", str(out), "--size", "16", "--no-progress"]))
        == 0
    )
    assert first.stat().st_mtime_ns == stamp and len(list(out.glob("*.npz"))) == 3
    assert "2 written, 1 already done, 0 failed" in capsys.readouterr().out
    (videos / "zero.mp4").write_bytes(b"")
    assert (
        run(parser.parse_args(["--videos", str(videos), "--out", str(out), "--size", "16", "--no-progress"]))
        == 1
    )
    assert "zero.mp4" in capsys.readouterr().err


def test_read_flow_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FeatureError, match=r"x\.npz"):
        read_flow(bad)
    np.savez(tmp_path / "y.npz", other=np.zeros(3))
    with pytest.raises(FeatureError, match=r"y\.npz.*missing"):
        read_flow_file(tmp_path / "y.npz")
    with pytest.raises(FeatureError, match="not found"):
        read_flow(tmp_path / "missing.npz")


def test_read_flow_values_match_written(tmp_path):
    from xmkd.data.io.flow import write_flow_file

    rng = np.random.default_rng(0)
    flow = rng.uniform(-25, 25, (3, 4, 5, 2)).astype(np.float32)
    write_flow_file(tmp_path / "f.npz", quantize_flow(flow), 8.0, 20.0, 0.375, "dis")
    t = read_flow(tmp_path / "f.npz")
    assert t.shape == (3, 2, 4, 5) and t.dtype == torch.float32
    expected = np.clip(flow, -20, 20).transpose(0, 3, 1, 2)
    assert np.abs(t.numpy() - expected).max() <= 20 / 255 + 1e-5


def test_list_videos_rejects_duplicate_ids(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "v.mp4").write_bytes(b"x")
    (tmp_path / "b" / "v.avi").write_bytes(b"x")
    with pytest.raises(ConfigError, match="share the id"):
        list_videos(tmp_path)


def test_folders_that_hold_nothing_to_do_are_refused(tmp_path):
    """A mistyped or wrong folder is an error naming it, not a run that writes nothing and succeeds."""
    from xmkd.data.io.flow import check_settings
    from xmkd.features.extract import list_inputs

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=rf"{tmp_path} holds no video files"):
        list_videos(tmp_path)
    with pytest.raises(ConfigError, match=r"holds no \.npz flow files \(write them with compute-flow\)"):
        list_inputs(tmp_path, "flow")
    with pytest.raises(ConfigError, match=r"notes\.txt exists and is not a folder"):
        check_settings(tmp_path / "notes.txt", "flow.json", {"fps": 8})


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_elementary_stream_is_decoded_at_its_timestamps_rate(tmp_path, codec):
    """A raw 29.97 fps stream named .mp4 (FFmpeg says 25 fps): flow must see every frame once, at
    even steps, labelled 29.97 fps; at 25 fps one frame in six was skipped and the gaps uneven."""
    from tests.data.media import frame_index_of, write_elementary_stream

    path = write_elementary_stream(tmp_path / "es.mp4", codec=codec, num_frames=60)
    video = decode_video(path)
    assert video.native_fps == pytest.approx(30000 / 1001) and video.fps == pytest.approx(30000 / 1001)
    assert [frame_index_of(f) for f in video.frames] == list(range(60))
