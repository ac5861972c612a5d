"""Sliding-window feature extraction: step formula, real videos, resume, failures, encoders."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from xmkd.data.io.flow import write_flow_file
from xmkd.data.io.video_io import probe
from xmkd.errors import ConfigError
from xmkd.features.extract import (
    extract_features_folder,
    feature_times,
    load_encoder,
    num_feature_steps,
    step_times,
    window_frame_indices,
)
from xmkd.models.vit import EncoderConfig, build_encoder, save_exported_encoder


def write_counter_video(path: Path, frames: int, fps: float, size: int = 32) -> None:
    """Frame i is a flat grey of value 8 * i."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=int(fps))
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((size, size, 3), 8 * i, np.uint8), format="rgb24")
            c.mux(s.encode(f))
        c.mux(s.encode(None))


def tiny_vit(path: Path, in_chans: int = 3, frames: int = 4, size: int = 32) -> Path:
    torch.manual_seed(0)
    cfg = EncoderConfig("video", (frames, size, size), (2, 16, 16), in_chans, 32, 1, 2)
    return save_exported_encoder(build_encoder(cfg).eval(), path)


@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 31, 80])
@pytest.mark.parametrize(("window", "stride"), [(8, 8), (8, 4), (16, 8), (4, 6)])
def test_step_count_matches_enumeration(n, window, stride):
    # cover: one step per started stride block
    assert num_feature_steps(n, window, stride, "cover") == len(range(0, n, stride))
    # valid: starts s with s + window <= n (one padded window for a short video)
    starts = [s for s in range(0, n, stride) if s + window <= n]
    assert num_feature_steps(n, window, stride, "valid") == max(1, len(starts))


def test_windows_are_centred_on_their_step_and_clamped():
    idx = window_frame_indices(10, window=4, stride=2)
    assert idx.shape == (5, 4)
    # step t covers frames [2t, 2t + 2); its window is centred there: 2t - 1 .. 2t + 2
    np.testing.assert_array_equal(idx[2], [3, 4, 5, 6])
    np.testing.assert_array_equal(idx[0], [0, 0, 1, 2])  # clamped at the start
    np.testing.assert_array_equal(idx[-1], [7, 8, 9, 9])  # and at the end
    valid = window_frame_indices(10, window=4, stride=3, steps="valid")
    np.testing.assert_array_equal(valid, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])


def test_step_times():
    start, end = step_times(4, fps=8.0, stride=4, duration_s=1.8)
    np.testing.assert_allclose(start, [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(end, [0.5, 1.0, 1.5, 1.8])


@pytest.mark.realdata
def test_real_videos_rgb_features_resume_and_corrupt(realdata, tmp_path):
    demo = realdata("video/demo.mp4")
    ucf = realdata("ucf101/videos")
    videos = tmp_path / "videos"
    videos.mkdir()
    for p in [demo, *sorted(ucf.glob("*.avi"))]:
        os.link(p, videos / p.name)
    (videos / "aaa_corrupt.avi").write_bytes(b"RIFF" + os.urandom(3000))  # sorts first
    enc = tiny_vit(tmp_path / "enc" / "rgb.pt")
    out = tmp_path / "features"
    fps, window, stride = 6.0, 4, 3
    calls: list[str] = []

    def interrupt(vid: str) -> None:
        calls.append(vid)
        raise KeyboardInterrupt  # the run dies after its first finished video

    with pytest.raises(KeyboardInterrupt):
        extract_features_folder(videos, enc, "rgb", out, window=window, stride=stride, fps=fps,
                                batch_size=8, progress=False, on_video_done=interrupt)  # fmt: skip
    first = out / "rgb" / f"{calls[0]}.npy"
    assert first.is_file() and len(list((out / "rgb").glob("*.npy"))) == 1
    stamp = first.stat().st_mtime_ns
    report = extract_features_folder(videos, enc, "rgb", out, window=window, stride=stride, fps=fps,
                                     batch_size=8, progress=False)  # fmt: skip
    assert report.skipped == [calls[0]]  # not redone
    assert first.stat().st_mtime_ns == stamp
    assert [Path(f.path).name for f in report.failures] == ["aaa_corrupt.avi"]
    ids = {p.stem for p in videos.iterdir()} - {"aaa_corrupt"}
    assert set(report.done) | set(report.skipped) == ids
    index = json.loads((out / "rgb" / "index.json").read_text())
    assert index["window"] == window and index["stride"] == stride and index["fps"] == fps
    assert set(index["videos"]) == ids
    for vid in ids:
        feats = np.load(out / "rgb" / f"{vid}.npy")
        duration = probe(next(videos.glob(f"{vid}.*"))).duration_s
        n_frames = math.ceil(duration * fps - 1e-6)
        assert feats.shape == (math.ceil(n_frames / stride), 32)  # T = ceil(ceil(duration * fps) / S)
        assert feats.dtype == np.float32 and np.isfinite(feats).all()
        assert feats.std(axis=0).mean() > 0  # features change along the video
        start, end = feature_times(index, vid)
        assert len(start) == len(feats) and end[-1] == pytest.approx(duration)
    with pytest.raises(ConfigError, match="other settings"):
        extract_features_folder(videos, enc, "rgb", out, window=window, stride=2, fps=fps, progress=False)


def test_flow_features_from_flow_files_and_channel_check(tmp_path):
    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    rng = np.random.default_rng(0)
    for vid, n in (("a", 10), ("b", 5)):
        q = rng.integers(0, 256, (n, 40, 48, 2), dtype=np.uint8)
        write_flow_file(flow_dir / f"{vid}.npz", q, 8.0, 20.0, n / 8.0, "dis")
    enc2 = tiny_vit(tmp_path / "flow.pt", in_chans=2)
    report = extract_features_folder(flow_dir, enc2, "flow", tmp_path / "feat", stride=2, progress=False)
    assert sorted(report.done) == ["a", "b"]
    assert np.load(tmp_path / "feat" / "flow" / "a.npy").shape == (5, 32)
    assert np.load(tmp_path / "feat" / "flow" / "b.npy").shape == (3, 32)
    enc3 = tiny_vit(tmp_path / "rgb.pt", in_chans=3)
    with pytest.raises(ConfigError, match="2"):
        extract_features_folder(flow_dir, enc3, "flow", tmp_path / "feat2", progress=False)


def test_windows_see_the_right_frames(tmp_path):
    """A linear 'encoder' that returns the mean of its input: each feature must equal the mean of
    the frames of its window, computed independently from the flow values."""
    from xmkd.features.extract import ClipEncoder

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 3, 4))  # (B, T): per-frame means

    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    n = 9
    q = np.stack([np.full((8, 8, 2), 10 * i, np.uint8) for i in range(n)])
    write_flow_file(flow_dir / "v.npz", q, 4.0, 20.0, n / 4.0, "dis")
    enc = ClipEncoder(Mean(), "test", 2, 4, (8, 8), 4, None, None, "mean")
    extract_features_folder(flow_dir, enc, "flow", tmp_path / "f", window=4, stride=2, progress=False)
    feats = np.load(tmp_path / "f" / "flow" / "v.npy")
    idx = window_frame_indices(n, 4, 2)
    np.testing.assert_allclose(feats, (10.0 * idx) / 127.5 - 1.0, atol=1e-6)


@pytest.mark.slow
def test_r3d_18_from_a_local_weights_file(tmp_path):
    from torchvision.models.video import r3d_18

    torch.manual_seed(0)
    weights = tmp_path / "r3d18.pth"
    torch.save(r3d_18(weights=None).state_dict(), weights)
    enc = load_encoder(weights, frames=4, size=32)
    assert enc.kind == "r3d_18" and enc.dim == 512
    flow_like = tmp_path / "videos"
    flow_like.mkdir()
    write_counter_video(flow_like / "c.mp4", frames=12, fps=8, size=32)
    rep = extract_features_folder(
        flow_like, enc, "rgb", tmp_path / "f", stride=4, device="cpu", progress=False
    )
    assert rep.done == ["c"]
    assert np.load(tmp_path / "f" / "rgb" / "c.npy").shape == (3, 512)
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="r3d_18") as info:
        load_encoder(bad)
    assert len(str(info.value)) < 500  # the mismatch summarised, not every key listed


def test_files_that_are_not_encoders_are_named_as_such(tmp_path):
    lightning_ckpt = tmp_path / "det.pt"
    torch.save(
        {"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {}, "pytorch-lightning_version": "2"},
        lightning_ckpt,
    )
    with pytest.raises(ConfigError, match=r"det\.pt is a Lightning checkpoint, not an encoder: `xmkd export"):
        load_encoder(lightning_ckpt)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x07" * 64)
    with pytest.raises(ConfigError, match=r"garbage\.pt: not a loadable weights file") as info:
        load_encoder(garbage)
    assert "weights_only=False" not in str(info.value)  # no advice to unpickle an unknown file
    with pytest.raises(ConfigError, match=r"no garbage\.json beside it, so not an exported XKD encoder"):
        load_encoder(garbage, kind="xkd")
