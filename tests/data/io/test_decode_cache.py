"""The in-memory decode cache: pure helpers, the budget, and TrimmedVideoDataset reading through it
(tests/data/datasets/test_trimmed.py also runs its clip-selection tests through the cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data.datasets.test_trimmed import indices, record
from tests.data.media import write_garbage, write_video
from xmkd.data.datasets.trimmed import TrimmedVideoDataset, UniformClipSampler
from xmkd.data.io.decode_cache import DecodeCache, DecodedVideo, grid_frame_count, looped_indices
from xmkd.errors import ConfigError, MediaError, MissingAudioError


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cache-media")
    return {
        "a": write_video(d / "a.mp4", num_frames=32, fps=16, size=32),  # 2 s, 440 Hz tone
        "short": write_video(d / "short.mp4", num_frames=5, fps=16, size=32),
        "mute": write_video(d / "mute.mp4", num_frames=32, fps=16, size=32, audio=False),
        "bad": write_garbage(d / "bad.mp4"),
    }


def frames_counting(n: int) -> torch.Tensor:
    """(n, 1, 1, 3) uint8 frames whose pixel value is their index."""
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 1, 3).contiguous()


# ------------------------------------------------------------------------------------- pure parts


def test_grid_frame_count() -> None:
    assert grid_frame_count(0.0, 4.0, 8.0) == 32  # 0, 1/8, ..., 31/8 lie before 4 s
    assert grid_frame_count(0.0, 4.01, 8.0) == 33
    assert grid_frame_count(1.0, 1.5, 16.0) == 8
    assert grid_frame_count(2.0, 2.0, 8.0) == 1


def test_looped_indices() -> None:
    assert looped_indices(2, 4, 10).tolist() == [2, 3, 4, 5]
    assert looped_indices(3, 6, 5).tolist() == [3, 4, 3, 4, 3, 4]  # loops over the frames from the start
    with pytest.raises(ValueError, match="outside"):
        looped_indices(5, 2, 5)


def test_decoded_clip_snaps_to_the_grid_and_loops() -> None:
    video = DecodedVideo(begin_s=1.0, fps=4.0, frames=frames_counting(8))
    clip, start = video.clip(1.55, 3)  # 0.55 s in: nearest grid frame is 2 (0.5 s)
    assert clip[:, 0, 0, 0].tolist() == [2, 3, 4] and start == 1.5
    clip, start = video.clip(2.9, 4)  # frame 8 would be past the end: clamped to 7, then looped
    assert clip[:, 0, 0, 0].tolist() == [7, 7, 7, 7] and start == 2.75
    assert video.clip(0.0, 1)[0][0, 0, 0, 0] == 0  # before the range: the first frame


def test_decoded_audio_window_offsets_and_pads() -> None:
    audio = torch.arange(100, dtype=torch.float32)
    video = DecodedVideo(begin_s=2.0, fps=4.0, frames=frames_counting(2), audio=audio, sample_rate=10)
    assert video.audio_window(2.5, 3).tolist() == [5.0, 6.0, 7.0]
    assert video.audio_window(11.8, 4).tolist() == [98.0, 99.0, 0.0, 0.0]
    assert video.nbytes == 2 * 3 + 100 * 4
    with pytest.raises(ValueError, match="without audio"):
        DecodedVideo(0.0, 4.0, frames_counting(2)).audio_window(0.0, 1)


def test_cache_keeps_videos_until_the_budget_is_spent() -> None:
    one_mb = DecodedVideo(0.0, 1.0, torch.zeros(2**20, dtype=torch.uint8))
    calls: list[str] = []

    def decode(name: str):
        def run() -> DecodedVideo:
            calls.append(name)
            return one_mb

        return run

    cache = DecodeCache(budget_mb=2.5)
    assert cache.get("a", decode("a")) is one_mb and cache.get("b", decode("b")) is one_mb
    assert cache.get("a", decode("a")) is one_mb and calls == ["a", "b"]  # a hit decodes nothing
    assert cache.get("c", decode("c")) is one_mb  # does not fit: returned for this clip, not kept
    assert len(cache) == 2 and cache.used_bytes == 2 * 2**20 and cache.full
    assert cache.get("d", decode("d")) is None and calls == ["a", "b", "c"]  # full: decode per clip
    assert cache.get("b", decode("b")) is one_mb  # what it holds is still served
    with pytest.raises(ValueError, match="budget_mb"):
        DecodeCache(-1)


def test_cache_does_not_keep_a_failed_decode() -> None:
    cache = DecodeCache(budget_mb=1)

    def broken() -> DecodedVideo:
        raise MediaError("x.mp4", "corrupt")

    with pytest.raises(MediaError, match=r"x\.mp4"):
        cache.get("x.mp4", broken)
    assert len(cache) == 0 and not cache.full


# ------------------------------------------------------------------- through TrimmedVideoDataset


def test_cached_clips_match_decoding_per_clip(media) -> None:
    kw = dict(num_frames=8, fps=16, with_audio=True, audio_seconds=0.5)
    plain = TrimmedVideoDataset([record(media["a"])], UniformClipSampler(3), **kw)
    cached = TrimmedVideoDataset([record(media["a"])], UniformClipSampler(3), decode_cache_mb=16, **kw)
    for i in range(3):  # uniform starts 0, 0.75, 1.5 s lie on the 16 fps grid
        a, b = plain[i], cached[i]
        assert indices(b["video"]) == indices(a["video"])
        # AAC decoded from the start vs after a seek: same samples up to the codec's rounding
        assert torch.allclose(a["audio"], b["audio"], atol=2e-3)
    assert len(cached.decode_cache) == 1 and cached.decode_cache.used_bytes > 0


def test_cached_dataset_keeps_the_bad_input_policies(media) -> None:
    recs = [record(media["mute"], 1), record(media["bad"], 2), record(media["a"], 3)]
    kw = dict(sampler=UniformClipSampler(1), num_frames=4, fps=16, with_audio=True, decode_cache_mb=8)
    with pytest.raises(MissingAudioError, match=r"mute\.mp4"):
        TrimmedVideoDataset(recs, **kw)[0]
    silent = TrimmedVideoDataset(recs, missing_audio="silence", **kw)[0]
    assert silent["video_id"] == "mute" and not silent["audio"].any()
    skipping = TrimmedVideoDataset(recs, on_bad_input="skip", **kw)
    first = skipping[0]
    assert first["video_id"] == "a" and [f["path"] for f in first["failures"]] == [
        str(media["mute"]),
        str(media["bad"]),
    ]
    assert len(skipping.decode_cache) == 1  # only the good video is kept


def test_negative_budget_is_a_config_error(media) -> None:
    with pytest.raises(ConfigError, match="decode_cache_mb"):
        TrimmedVideoDataset([record(media["a"])], decode_cache_mb=-1)
