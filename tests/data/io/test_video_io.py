"""Decoding: frame choice and order, real-file quirks, audio lengths, and every bad-input case."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from tests.data.media import (
    frame_index_of,
    strip_avi_index,
    write_audio_only,
    write_elementary_stream,
    write_garbage,
    write_one_frame_video,
    write_stereo,
    write_streamed_avi,
    write_truncated,
    write_video,
    write_video_only,
    write_wav,
    write_zero_byte,
)
from xmkd.data.io.video_io import probe, read_audio, read_clip, select_frames
from xmkd.errors import MediaError, MissingAudioError

UCF_MP3 = "ucf101/videos/v_ApplyEyeMakeup_g01_c01.avi"
UCF_2997 = "ucf101/videos/v_BaseballPitch_g01_c01.avi"
AV_AAC = "av/v_GGSY1Qvo990.mp4"
WAV = "audio/mmaction2_test.wav"
DEMO = "video/demo.mp4"


def indices(clip: torch.Tensor) -> list[int]:
    return [frame_index_of(f) for f in clip.numpy()]


def native_chunks(path, fps: float, total: int, size: int) -> list[int]:
    """Frame indices of a whole video read at its native rate in consecutive chunks."""
    return [i for s in range(0, total, size) for i in indices(read_clip(path, s / fps, min(size, total - s)))]


def full_sorted_decode(path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Independent reference: decode every frame, sort by pts (seconds from the first frame)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(s)]
        tb = float(s.time_base)
    frames.sort(key=lambda x: x[0])
    pts = np.array([p for p, _ in frames], dtype=np.float64)
    return (pts - pts[0]) * tb, [a for _, a in frames]


# ----------------------------------------------------------------------------- frame selection rule
def test_select_frames_covers_target_whatever_the_input_order():
    pts = [1, 3, 2, 5, 4, 7, 6]  # decoder order of a packed-B-frame AVI
    targets = np.array([0.5, 1.0, 2.5, 3.0, 6.9, 7.0, 100.0])
    chosen = [pts[i] for i in select_frames(pts, targets)]
    # before the first frame -> first frame; otherwise the last pts <= target
    assert chosen == [1, 1, 2, 3, 6, 7, 7]


# ----------------------------------------------------------------------------- synthetic files
def test_native_rate_returns_consecutive_frames(tmp_path):
    path = write_video(tmp_path / "a.mp4", num_frames=40, fps=16, size=64, audio=False)
    clip = read_clip(path, 0.0, 8)
    assert clip.shape == (8, 64, 64, 3) and clip.dtype == torch.uint8
    assert indices(clip) == list(range(8))
    assert indices(read_clip(path, 1.0, 8)) == list(range(16, 24))


def test_resampled_rate_picks_covering_frames(tmp_path):
    path = write_video(tmp_path / "a.mp4", num_frames=64, fps=16, size=64, audio=False)
    # 8 fps out of 16: every second frame; 6 fps: frame floor(16 * t)
    assert indices(read_clip(path, 0.5, 6, fps=8)) == [8, 10, 12, 14, 16, 18]
    expect = [int(np.floor(16 * (0.25 + i / 6) + 1e-9)) for i in range(6)]
    assert indices(read_clip(path, 0.25, 6, fps=6)) == expect


def test_seek_with_many_keyframes_matches_full_decode(tmp_path):
    path = write_video(tmp_path / "g.mp4", num_frames=120, fps=24, size=64, audio=False, gop=12)
    for start in (0.0, 1.3, 2.51, 4.0):
        clip, pts = read_clip(path, start, 10, return_pts=True)
        first = int(np.floor(start * 24 + 0.01))
        assert indices(clip) == list(range(first, first + 10)), start
        assert torch.all(pts[1:] > pts[:-1])


def test_fractional_fps_2997(tmp_path):
    path = write_video(tmp_path / "ntsc.mp4", num_frames=60, fps=Fraction(30000, 1001), size=64, audio=False)
    info = probe(path)
    assert info.fps == pytest.approx(29.97, abs=1e-3)
    assert info.num_frames == 60
    assert indices(read_clip(path, 1.001, 5)) == [30, 31, 32, 33, 34]


def test_short_video_is_padded_by_looping(tmp_path):
    path = write_video(tmp_path / "short.mp4", num_frames=10, fps=10, size=64, audio=False)
    assert indices(read_clip(path, 0.6, 8)) == [6, 7, 8, 9, 6, 7, 8, 9]


def test_one_frame_video(tmp_path):
    path = write_one_frame_video(tmp_path / "one.mp4")
    assert probe(path).num_frames == 1
    assert indices(read_clip(path, 0.0, 4)) == [0, 0, 0, 0]


def test_probe_synthetic(tmp_path):
    path = write_video(
        tmp_path / "p.mp4", num_frames=32, fps=16, size=(80, 48), audio=True, sample_rate=22050
    )
    info = probe(path)
    assert (info.width, info.height, info.codec, info.num_frames) == (80, 48, "h264", 32)
    assert info.fps == pytest.approx(16) and info.duration_s == pytest.approx(2.0, abs=0.07)
    assert info.has_audio and info.audio_sample_rate == 22050
    assert not probe(write_video_only(tmp_path / "v.mp4")).has_audio


def test_audio_from_synthetic_aac_is_the_tone(tmp_path):
    path = write_video(
        tmp_path / "t.mp4", num_frames=32, fps=16, audio=True, sample_rate=22050, audio_freq=500
    )
    wav = read_audio(path, 0.5, 1.0, sample_rate=16000)
    assert wav.shape == (16000,) and wav.dtype == torch.float32
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert np.argmax(spectrum) == pytest.approx(500, abs=2)  # 1 Hz bins over 1 s
    assert wav.abs().max() == pytest.approx(0.5, abs=0.08)


def test_audio_past_the_end_is_zero_padded(tmp_path):
    path = write_wav(tmp_path / "t.wav", duration_s=1.0, sample_rate=16000)
    wav = read_audio(path, 0.5, 1.0)
    assert wav.shape == (16000,)
    assert wav[:7000].abs().max() > 0.4 and wav[8100:].abs().max() == 0


def test_wav_stereo_is_downmixed(tmp_path):
    path = write_wav(tmp_path / "s.wav", duration_s=0.5, sample_rate=8000, channels=2, freq=300)
    wav = read_audio(path, 0.0, 0.5, sample_rate=16000)
    assert wav.shape == (8000,) and wav.abs().max() > 0.2


@pytest.mark.parametrize("suffix", [".flac", ".wav"])
def test_stereo_is_mixed_to_mono_as_the_channel_mean(tmp_path, suffix):
    """FFmpeg's mono downmix adds each channel at 1/sqrt(2): 0.8 and 0.4 in phase gave 0.85, and a
    loud speech FLAC went past full scale. The mean of the channels peaks at (0.8 + 0.4) / 2."""
    path = write_stereo(tmp_path / f"s{suffix}", left=0.8, right=0.4, freq=300)
    wav = read_audio(path, 0.0, 1.0)
    assert wav.abs().max() == pytest.approx(0.6, abs=0.005)
    t = np.arange(16000) / 16000
    np.testing.assert_allclose(wav.numpy(), 0.6 * np.sin(2 * np.pi * 300 * t), atol=0.01)


# ----------------------------------------------------------------------------- bad input
BAD_CASES = {
    "missing": lambda d: d / "nope.mp4",
    "zero_bytes": lambda d: write_zero_byte(d / "empty.mp4"),
    "garbage": lambda d: write_garbage(d / "garbage.mp4"),
    "truncated_moov_lost": lambda d: write_truncated(d / "trunc.mp4", 0.5),
    "truncated_faststart": lambda d: write_truncated(d / "trunc_fs.mp4", 0.3, faststart=True),
    "audio_only": lambda d: write_audio_only(d / "audio_only.mp4"),
    "directory": lambda d: (d / "dir.mp4").mkdir() or d / "dir.mp4",
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_video_raises_media_error_naming_the_file(tmp_path, case):
    path = BAD_CASES[case](tmp_path)
    calls = [lambda: read_clip(path, 0.0, 32)]
    if case != "truncated_faststart":  # its header is whole: probe reads it; the clip runs past the data
        calls.append(lambda: probe(path))
    for call in calls:
        with pytest.raises(MediaError) as err:
            call()
        assert str(path) in str(err.value) and err.value.reason


@pytest.mark.parametrize("case", ["missing", "zero_bytes", "garbage", "truncated_moov_lost"])
def test_bad_audio_raises_media_error(tmp_path, case):
    path = BAD_CASES[case](tmp_path)
    with pytest.raises(MediaError, match=str(path)):
        read_audio(path, 0.0, 1.0)


def test_no_audio_stream_raises_missing_audio(tmp_path):
    path = write_video_only(tmp_path / "v.mp4")
    with pytest.raises(MissingAudioError, match="no audio stream"):
        read_audio(path, 0.0, 1.0)


def test_start_beyond_end(tmp_path):
    path = write_video(tmp_path / "a.mp4", num_frames=16, fps=16, audio=True)
    with pytest.raises(MediaError, match="past the end"):
        read_clip(path, 5.0, 4)
    with pytest.raises(MediaError, match="past the end"):
        read_audio(path, 5.0, 1.0)
    with pytest.raises(MediaError, match="negative"):
        read_clip(path, -1.0, 4)


# ----------------------------------------------------------------------------- real files
@pytest.mark.realdata
def test_real_ucf_avi_out_of_order_frames_come_back_sorted(realdata):
    path = realdata(UCF_MP3)
    info = probe(path)
    assert (info.fps, info.num_frames, info.codec, info.width, info.height) == (25.0, 164, "mpeg4", 320, 240)
    assert info.has_audio and info.audio_sample_rate == 44100
    # the container really does deliver frames out of pts order
    with av.open(str(path)) as c:
        raw = [f.pts for _, f in zip(range(12), c.decode(video=0))]
    assert raw != sorted(raw)
    ref_t, ref = full_sorted_decode(path)
    for start in (0.0, 2.0, 5.0):
        clip, pts = read_clip(path, start, 16, return_pts=True)
        assert clip.shape == (16, 240, 320, 3)
        assert torch.all(pts[1:] > pts[:-1])
        first = round(start * 25)
        np.testing.assert_allclose(pts.numpy(), ref_t[first : first + 16], atol=1e-9)
        for i in (0, 7, 15):
            assert torch.equal(clip[i], torch.from_numpy(ref[first + i]))


@pytest.mark.realdata
@pytest.mark.parametrize("hold", [0, 1])
def test_a_reorder_buffer_too_small_for_the_decoder_still_gives_sorted_frames(realdata, monkeypatch, hold):
    """The out-of-order AVI read through a reorder buffer smaller than its decoder needs: the frame
    that comes too late is noticed, the range decoded again holding every frame, and every pixel
    is the full sorted decode's."""
    import xmkd.data.io.video_io as video_io

    path = realdata(UCF_MP3)
    _, ref = full_sorted_decode(path)
    passes: list[float] = []
    real = video_io._decode_range

    def small_buffer(*args, **kwargs):
        if len(args) <= 7 and kwargs.get("hold") is None:
            kwargs["hold"] = hold  # the first pass only; a second pass asks for its own
        passes.append(kwargs.get("hold", args[7] if len(args) > 7 else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(video_io, "_decode_range", small_buffer)
    for start in (0.0, 2.0, 5.0):
        clip = read_clip(path, start, 16, threads=False)
        first = round(start * 25)
        np.testing.assert_array_equal(clip.numpy(), np.stack(ref[first : first + 16]))
    if hold == 0:  # the decoder reorders by one frame: nothing held is too little, one is enough
        assert math.inf in passes  # a range went through again, holding every frame
    else:
        assert passes == [hold] * 3


@pytest.mark.realdata
def test_real_ucf_2997_without_audio(realdata):
    path = realdata(UCF_2997)
    info = probe(path)
    assert info.fps == pytest.approx(29.97, abs=1e-3) and info.num_frames == 107 and not info.has_audio
    ref_t, ref = full_sorted_decode(path)
    clip, pts = read_clip(path, 1.5, 16, fps=8, return_pts=True)
    want = [int(np.searchsorted(ref_t, 1.5 + i / 8 + 1e-4, side="right") - 1) for i in range(16)]
    np.testing.assert_allclose(pts.numpy(), ref_t[want], atol=1e-9)
    assert torch.equal(clip[5], torch.from_numpy(ref[want[5]]))
    with pytest.raises(MissingAudioError):
        read_audio(path, 0.0, 1.0)


@pytest.mark.realdata
def test_real_mp4_with_aac(realdata):
    path = realdata(AV_AAC)
    info = probe(path)
    assert info.codec == "h264" and info.fps == pytest.approx(19.62, abs=0.01)
    assert (
        info.has_audio and info.audio_sample_rate == 44100 and info.duration_s == pytest.approx(18.0, abs=0.2)
    )
    ref_t, ref = full_sorted_decode(path)
    clip, pts = read_clip(path, 10.0, 16, return_pts=True)
    first = int(np.searchsorted(ref_t, 10.0 + 1e-4, side="right") - 1)
    np.testing.assert_allclose(pts.numpy(), ref_t[first : first + 16], atol=1e-9)
    assert torch.equal(clip[-1], torch.from_numpy(ref[first + 15]))
    wav = read_audio(path, 3.0, 4.0)
    assert wav.shape == (64000,) and wav.std() > 0.01


@pytest.mark.realdata
def test_real_mp3_in_avi_and_wav(realdata):
    avi = read_audio(realdata(UCF_MP3), 1.0, 4.0)
    assert avi.shape == (64000,) and avi.std() > 0.01 and torch.isfinite(avi).all()
    wav = read_audio(realdata(WAV), 1.0, 4.0)
    assert wav.shape == (64000,) and wav.std() > 0.01
    tail = read_audio(realdata(WAV), 5.0, 4.0)  # 6.6 s file: 1.6 s of sound then zeros
    assert tail.shape == (64000,) and tail[:20000].std() > 0.01 and tail[-30000:].abs().max() == 0


@pytest.mark.realdata
def test_real_demo_mp4_without_audio(realdata):
    path = realdata(DEMO)
    info = probe(path)
    assert (info.fps, info.num_frames, info.width, info.height) == (28.0, 280, 340, 256)
    clip, pts = read_clip(path, 9.8, 16, return_pts=True)  # runs past the end: looped
    assert clip.shape == (16, 256, 340, 3)
    assert pts[0] == pytest.approx(9.786, abs=1e-3)
    with pytest.raises(MediaError, match="past the end"):
        read_clip(path, 10.5, 4)


@pytest.mark.realdata
@pytest.mark.parametrize("rel", [UCF_MP3, AV_AAC, WAV])
def test_seeked_audio_matches_a_read_from_the_start(realdata, rel):
    """A clip read after a seek is sample-for-sample the same as the slice of a read from 0 s
    (the resampler restarts on the stream's output-sample grid, and decoders get a pre-roll)."""
    path = realdata(rel)
    full = read_audio(path, 0.0, 6.0)
    for start in (1.0, 2.5, 3.3):
        part = read_audio(path, start, 2.0)
        s = round(start * 16000)
        torch.testing.assert_close(part, full[s : s + 32000], atol=1e-5, rtol=0)


def test_seeked_audio_synthetic_22k(tmp_path):
    path = write_video(
        tmp_path / "a.mp4", num_frames=64, fps=16, audio=True, sample_rate=22050, audio_freq=3000
    )
    full = read_audio(path, 0.0, 3.0)
    torch.testing.assert_close(read_audio(path, 1.7, 1.0), full[27200:43200], atol=1e-5, rtol=0)


def test_avi_mpeg4_with_pcm_audio(tmp_path):
    path = write_video(tmp_path / "a.avi", num_frames=30, fps=25, size=64, audio=True, codec="mpeg4")
    info = probe(path)
    assert (info.codec, info.num_frames, info.has_audio) == ("mpeg4", 30, True)
    assert indices(read_clip(path, 0.4, 8)) == list(range(10, 18))
    assert read_audio(path, 0.0, 1.0).abs().max() > 0.4


# ----------------------------------------------------------------------------- elementary streams
@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_elementary_stream_rate_and_count_come_from_the_stream(tmp_path, codec):
    """A raw stream under an .mp4 name reports FFmpeg's fallback 25 fps while its timestamps (or,
    for H.264, its packet durations) run at 29.97: native reads must step by 1/29.97 s."""
    path = write_elementary_stream(tmp_path / "es.mp4", codec=codec, num_frames=120)
    with av.open(str(path)) as container:
        assert float(container.streams.video[0].average_rate) == 25  # the rate that misleads
    info = probe(path)
    assert info.fps == pytest.approx(30000 / 1001) and info.fps_from_timestamps
    assert info.num_frames == 120 and info.duration_s == pytest.approx(120 * 1001 / 30000, abs=1e-3)
    assert indices(read_clip(path, 0.0, 12)) == list(range(12))  # no frame skipped, none repeated
    assert indices(read_clip(path, 2.0, 8)) == list(range(59, 67))  # floor(2.0 * 29.97) = 59
    assert native_chunks(path, info.fps, 120, 16) == list(range(120))  # chunks reach the last frame


def test_stream_without_timestamps_is_read_from_the_start_said_once(tmp_path, caplog):
    """Raw H.264 cannot be seeked (no timestamps): read from the start, with one warning."""
    import xmkd.data.io.video_io as video_io

    video_io._from_start_logged = False
    a = write_elementary_stream(tmp_path / "a.mp4", codec="libx264", num_frames=40)
    b = write_elementary_stream(tmp_path / "b.mp4", codec="libx264", num_frames=40)
    with caplog.at_level("DEBUG", logger="xmkd.data.io.video_io"):
        for path in (a, a, b):
            assert indices(read_clip(path, 1.0, 4)) == [29, 30, 31, 32]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "decoding from the start" in warnings[0].getMessage()
    assert str(a) in warnings[0].getMessage()


# ----------------------------------------------------------------------------- AVIs without an index
def test_avi_without_index_counts_its_frames_and_reads_every_clip(tmp_path):
    """A streamed AVI has no idx1 and a placeholder length (2**30 frames, i.e. 82.8 s at 25 fps):
    the frame count and duration must come from the stream, and clips anywhere in it must read."""
    path = write_streamed_avi(tmp_path / "streamed.avi", num_frames=100, fps=25)
    assert b"idx1" not in path.read_bytes()
    info = probe(path)
    assert (info.num_frames, info.fps, info.duration_s) == (100, 25.0, pytest.approx(4.0))
    assert info.data_end_s is None
    assert native_chunks(path, 25, 100, 16) == list(range(100))
    assert read_audio(path, 3.0, 0.5).abs().max() > 0.4
    with pytest.raises(MediaError, match=r"past the end of the video \(data ends at 4\.00 s\)"):
        read_clip(path, 5.0, 4)


def test_avi_with_idx1_stripped_reads_every_frame(tmp_path):
    path = strip_avi_index(write_video(tmp_path / "a.avi", num_frames=60, fps=25, codec="mpeg4", gop=12))
    info = probe(path)
    assert (info.num_frames, info.duration_s) == (60, pytest.approx(2.4))
    assert native_chunks(path, 25, 60, 12) == list(range(60))


# ----------------------------------------------------------------------------- truncated files
def test_truncated_mp4_reports_where_its_data_ends(tmp_path):
    """30% of a faststart mp4: the index survives and promises 14 s; a clip in the missing tail is
    'truncated', not 'past the end'; clips in the part that survives still read."""
    path = write_truncated(
        tmp_path / "t.mp4", keep_fraction=0.3, faststart=True, num_frames=140, fps=10, size=(160, 120)
    )
    assert indices(read_clip(path, 1.0, 4)) == [10, 11, 12, 13]
    with pytest.raises(MediaError, match=r"truncated: data ends at \d+\.\d\d s of 14\.00 s") as err:
        read_clip(path, 8.0, 4)
    info = probe(path)
    assert info.duration_s == pytest.approx(14.0) and 2.0 < info.data_end_s < 10.0
    assert f"data ends at {info.data_end_s:.2f} s" in err.value.reason
    assert info.num_frames == round(info.data_end_s * 10)
    with pytest.raises(MediaError, match=rf"truncated: data ends at {info.data_end_s:.2f} s of 14\.00 s"):
        read_clip(path, info.data_end_s - 0.2, 4)


def test_truncated_avi_reports_where_its_data_ends(tmp_path):
    path = write_truncated(
        tmp_path / "t.avi", keep_fraction=0.3, num_frames=140, fps=10, size=(160, 120), codec="mpeg4"
    )
    with pytest.raises(MediaError, match=r"truncated: data ends at \d+\.\d\d s of 14\.00 s"):
        read_clip(path, 8.0, 4)
    info = probe(path)
    assert info.duration_s == pytest.approx(14.0) and 2.0 < info.data_end_s < 10.0
    with pytest.raises(MediaError, match="truncated"):
        read_clip(path, info.data_end_s - 0.2, 8)  # runs into the missing part: no silent looping


def test_seek_landing_past_the_data_falls_back_to_decoding_from_the_start(tmp_path, monkeypatch, caplog):
    """Where a damaged index sends the seek to the end of the file (nothing decodes after it), the
    clip is decoded from the start instead, and the log says so once."""
    import xmkd.data.io.video_io as video_io

    path = write_video(tmp_path / "a.avi", num_frames=60, fps=25, codec="mpeg4", audio=False, gop=12)
    real = video_io._decode_range

    def seek_to_eof(container, stream, timing, targets, seek, **kwargs):
        if seek:  # what _decode_range says when nothing decodes after the seek
            return "the seek landed past the data"
        return real(container, stream, timing, targets, seek, **kwargs)

    monkeypatch.setattr(video_io, "_decode_range", seek_to_eof)
    monkeypatch.setattr(video_io, "_from_start_logged", False)
    with caplog.at_level("WARNING", logger="xmkd.data.io.video_io"):
        assert indices(read_clip(path, 1.0, 8)) == list(range(25, 33))
        assert indices(read_clip(path, 2.0, 4)) == list(range(50, 54))
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(messages) == 1 and "the seek landed past the data; decoding from the start" in messages[0]
