"""Colour conversion and resizing of decoded frames (one kept swscale context), and decoder threads."""

from __future__ import annotations

import threading
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch

from tests.data.media import frame_index_of, index_frame, write_video
from xmkd.data.io import video_io
from xmkd.data.io.video_io import frames_to_rgb, packed_plane_view, read_audio, read_av_clip, read_clip
from xmkd.errors import MissingAudioError

UCF_MP3 = "ucf101/videos/v_ApplyEyeMakeup_g01_c01.avi"
DEMO = "video/demo.mp4"


def decoded(path, n: int) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return [f for _, f in zip(range(n), c.decode(video=0))]


@pytest.mark.realdata
@pytest.mark.parametrize("rel", [UCF_MP3, DEMO])
def test_frames_to_rgb_equals_pyav_to_ndarray(realdata, rel):
    """Same pixels as PyAV's own conversion, frame after frame on one kept context."""
    frames = decoded(realdata(rel), 6)
    out = frames_to_rgb(frames)
    assert out.shape == (6, frames[0].height, frames[0].width, 3) and out.dtype == np.uint8
    for got, frame in zip(out, frames):
        np.testing.assert_array_equal(got, frame.to_ndarray(format="rgb24"))
    grey = frames_to_rgb(frames[:2], format="gray")
    assert grey.shape == (2, frames[0].height, frames[0].width, 1)
    np.testing.assert_array_equal(grey[1, ..., 0], frames[1].to_ndarray(format="gray"))


@pytest.mark.realdata
def test_frames_to_rgb_resizes_in_the_same_pass(realdata):
    """A resize while converting matches converting then resizing (OpenCV bilinear) up to filter rounding."""
    frames = decoded(realdata(DEMO), 3)
    small = frames_to_rgb(frames, size=(128, 170))
    assert small.shape == (3, 128, 170, 3)
    for got, frame in zip(small, frames):
        ref = cv2.resize(frame.to_ndarray(format="rgb24"), (170, 128), interpolation=cv2.INTER_AREA)
        assert np.abs(got.astype(np.int16) - ref).mean() < 3.0
    # same as PyAV's one-off call with the same arguments
    one_off = frames[2].to_ndarray(format="rgb24", width=170, height=128, interpolation="BILINEAR")
    np.testing.assert_array_equal(small[2], one_off)


def test_frames_to_rgb_rejects_empty_input_and_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        frames_to_rgb([])
    frames = decoded(write_video(tmp_path / "a.mp4", num_frames=2, fps=8, size=32, audio=False), 1)
    with pytest.raises(ValueError, match="size must be positive"):
        frames_to_rgb(frames, size=(0, 16))


def test_one_swscale_context_per_thread():
    mine = video_io._reformatter()
    assert video_io._reformatter() is mine  # kept from call to call
    other: list[object] = []
    t = threading.Thread(target=lambda: other.append(video_io._reformatter()))
    t.start()
    t.join()
    assert other[0] is not mine  # a context is never shared between threads


def test_read_clip_resizes_and_keeps_frame_order(tmp_path):
    path = write_video(tmp_path / "a.mp4", num_frames=40, fps=16, size=64, audio=False)
    full = read_clip(path, 1.0, 8, threads=False)
    small = read_clip(path, 1.0, 8, threads=False, size=(48, 40))
    assert small.shape == (8, 48, 40, 3) and small.dtype == torch.uint8
    # the index pattern survives the resize: the same frames, in the same order
    assert [frame_index_of(f) for f in small.numpy()] == list(range(16, 24))
    ref = frames_to_rgb(decoded(path, 24)[16:24], size=(48, 40))
    np.testing.assert_array_equal(small.numpy(), ref)
    assert full.shape == (8, 64, 64, 3)


def test_looped_and_repeated_frames_are_converted_once_and_placed_in_clip_order(tmp_path, monkeypatch):
    path = write_video(tmp_path / "a.mp4", num_frames=10, fps=10, size=64, audio=False)
    converted: list[int] = []
    real = video_io._ClipAssembler._convert

    def counting(self, frame, slot):
        converted.append(frame.pts)
        return real(self, frame, slot)

    monkeypatch.setattr(video_io._ClipAssembler, "_convert", counting)
    clip = read_clip(path, 0.6, 8, fps=20)  # 0.6..0.95 s at 20 fps: frames 6,6,7,7,8,8,9,9
    assert [frame_index_of(f) for f in clip.numpy()] == [6, 6, 7, 7, 8, 8, 9, 9]
    assert len(converted) == 4 and len(set(converted)) == 4
    converted.clear()
    looped = read_clip(path, 0.7, 7)  # frames 7, 8, 9 then looped
    assert [frame_index_of(f) for f in looped.numpy()] == [7, 8, 9, 7, 8, 9, 7]
    assert len(converted) == 3 and len(set(converted)) == 3


@pytest.mark.parametrize("threads", [False, True])
def test_decoder_threads_setting(tmp_path, threads):
    path = write_video(tmp_path / "a.mp4", num_frames=4, fps=8, size=32, audio=False)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        video_io._set_threads(stream, threads)
        if threads:
            assert stream.thread_type.name == "AUTO"
        else:
            assert stream.thread_count == 1


# ------------------------------------------------------------------------- video and audio, one open
@pytest.mark.realdata
@pytest.mark.parametrize("rel", [UCF_MP3, "av/v_GGSY1Qvo990.mp4"])
@pytest.mark.parametrize("start", [0.0, 0.1, 0.75, 3.0])
def test_read_av_clip_equals_the_two_separate_reads(realdata, rel, start):
    """Frames and samples from one container are those of read_clip and read_audio, also for a clip
    within the audio pre-roll (where a fresh container is read without a seek but this one rewinds)."""
    path = realdata(rel)
    frames, audio = read_av_clip(path, start, 16, 2.0, fps=8, sample_rate=16000, threads=False)
    assert torch.equal(frames, read_clip(path, start, 16, fps=8, threads=False))
    assert torch.equal(audio, read_audio(path, start, 2.0, 16000))
    assert audio.shape == (32000,) and audio.std() > 0.01


def test_read_av_clip_without_audio_says_so(tmp_path):
    path = write_video(tmp_path / "a.mp4", num_frames=8, fps=8, size=32, audio=False)
    with pytest.raises(MissingAudioError, match=r"a\.mp4"):
        read_av_clip(path, 0.0, 4, 1.0)


# ------------------------------------------------------------------ frames skipped before the clip
def write_bframes(path, pts: list[int], rate: int = 16) -> None:
    """h264 with libx264's default B-frames (pyramid: some B-frames are references, most are not),
    one keyframe, frame ``i`` showing index ``i`` at ``pts[i]`` (units of 1 / rate)."""
    with av.open(str(path), mode="w") as c:
        v = c.add_stream("libx264", rate=rate)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        v.options = {
            "preset": "fast",
            "bframes": "3",
            "b-pyramid": "normal",
            "x264-params": "keyint=1000:scenecut=0",
        }
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 64, 64), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, rate)
            c.mux(v.encode(frame))
        c.mux(v.encode(None))


def count_decoded(monkeypatch) -> list[int]:
    """Frames that _decode_range gets from the decoder, per call."""
    counts: list[int] = []
    real = video_io._decode_skipping

    def counting(*args):
        counts.append(0)
        for frame in real(*args):
            counts[-1] += frame is not None
            yield frame

    monkeypatch.setattr(video_io, "_decode_skipping", counting)
    return counts


def test_frames_nothing_refers_to_are_not_decoded_before_the_clip(tmp_path, monkeypatch):
    path = tmp_path / "b.mp4"
    write_bframes(path, list(range(80)))
    counts = count_decoded(monkeypatch)
    clip = read_clip(path, 60 / 16, 8, threads=False)
    assert [frame_index_of(f) for f in clip.numpy()] == list(range(60, 68))
    skipped = counts[-1]
    monkeypatch.setattr(video_io, "_SKIP_GUARD_FRAMES", 10**6)  # nothing is that far before the clip
    assert torch.equal(read_clip(path, 60 / 16, 8, threads=False), clip)  # no skipping: same frames
    assert skipped < counts[-1] - 10  # B-frames among the 60 frames before the clip were not decoded


@pytest.mark.parametrize("gap_after", [16, 17, 18, 19])
def test_a_gap_before_the_clip_still_gets_the_covering_frame(tmp_path, monkeypatch, gap_after):
    """Variable rate: nothing between pts ``gap_after`` and 40, so the frame covering the clip's start
    lies among the frames that would be skipped; it is decoded all the same."""
    pts = [i if i <= gap_after else i + 40 - gap_after - 1 for i in range(70)]
    path = tmp_path / "gap.mp4"
    write_bframes(path, pts)
    counts = count_decoded(monkeypatch)
    clip = read_clip(path, 39 / 16, 4, threads=False)
    assert len(counts) == 2  # decoded again, without skipping
    assert [frame_index_of(f) for f in clip.numpy()] == [
        gap_after,
        gap_after + 1,
        gap_after + 2,
        gap_after + 3,
    ]


def test_one_thread_decoder_without_b_frames_stops_before_the_frame_after_the_clip(tmp_path, monkeypatch):
    path = write_video(tmp_path / "p.mp4", num_frames=40, fps=16, size=32, audio=False, gop=8)
    counts = count_decoded(monkeypatch)
    clip = read_clip(path, 10 / 16, 8, threads=False)
    assert [frame_index_of(f) for f in clip.numpy()] == list(range(10, 18))
    assert counts == [10]  # keyframe 8 .. frame 17: frame 18 is demuxed, not decoded
    # the clip that ends on the last frame still sees the end of the stream (no looping, no error)
    tail = read_clip(path, 32 / 16, 8, threads=False)
    assert [frame_index_of(f) for f in tail.numpy()] == list(range(32, 40))
    looped = read_clip(path, 36 / 16, 8, threads=False)
    assert [frame_index_of(f) for f in looped.numpy()] == [36, 37, 38, 39, 36, 37, 38, 39]


@pytest.mark.parametrize("fmt", ["rgb24", "gray"])
def test_padded_rows_are_cut_from_the_plane_view(fmt):
    """Widths whose rows swscale pads (33 px: 99 bytes in a longer line): the view skips the padding."""
    rng = np.random.default_rng(0)
    frames = [av.VideoFrame.from_ndarray(rng.integers(0, 256, (17, 33, 3), dtype=np.uint8), format="rgb24")]
    frames = [f.reformat(format="yuv420p") for f in frames]
    converted = frames[0].reformat(format=fmt)
    assert converted.planes[0].line_size > 33 * (3 if fmt == "rgb24" else 1)  # there is padding
    want = frames[0].to_ndarray(format=fmt).reshape(17, 33, -1)
    np.testing.assert_array_equal(packed_plane_view(converted), want)
    np.testing.assert_array_equal(frames_to_rgb(frames, format=fmt)[0], want)
    with pytest.raises(ValueError, match="packed"):
        packed_plane_view(frames[0])
