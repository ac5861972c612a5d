"""benchmarks/data.py (make bench-data): the Kinetics-like clip it writes and the per-item figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import av
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "data.py"
_spec = importlib.util.spec_from_file_location("bench_data", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_data"] = bench
_spec.loader.exec_module(bench)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cores_per_gpu_from_the_stated_assumption() -> None:
    # 989 TFLOP/s at 0.5 utilisation over 300 GFLOP a clip: 1648.3 clips/s; one core at 5 clips/s
    gpu = bench.gpu_clips_per_s(300e9, 989.0, 0.5)
    assert gpu == pytest.approx(989e12 * 0.5 / 300e9)
    assert bench.cores_per_gpu(gpu, 5.0) == pytest.approx(gpu / 5.0)


def test_item_stages_on_a_short_kinetics_like_clip(tmp_path: Path) -> None:
    path = bench.write_kinetics_like(tmp_path / "clip.mp4", seconds=5.0, height=96, fps=10)
    with av.open(str(path)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert (video.codec_context.name, video.height, video.width) == ("h264", 96, 170)
        assert (audio.codec_context.name, audio.sample_rate, audio.channels) == ("aac", 44100, 2)
    res = bench.bench_item(path, items=2, batch=2, clip_seconds=5.0)
    stages = res["stage_s_median"]
    assert set(stages) >= {"decode_video", "decode_audio", "views_per_clip", "views_draw", "audio_logmel"}
    assert set(stages) >= {"collate_per_clip", "collate_batched", "views_batch_apply"}
    assert all(v > 0 for v in stages.values())
    # the recipe's path = decode + per-clip views + their collate; its rate is one over that
    sample = (
        stages["decode_video"]
        + stages["decode_audio"]
        + stages["views_per_clip"]
        + stages["collate_per_clip"]
    )
    assert res["item_s"]["sample"] == pytest.approx(sample)
    assert res["clips_per_s_per_core"]["sample"] == pytest.approx(1 / sample)
    # uint8 clips of 96 x 170 travel for the batch path, float views for the per-clip one
    assert res["bytes_to_gpu_per_item"]["batched"] > 32 * 96 * 170 * 3
    assert res["bytes_to_gpu_per_item"]["per_clip"] > 4 * 3 * (32 * 112 * 112 + 8 * 96 * 96)


def test_batched_views_timed_on_a_device(tmp_path: Path) -> None:
    path = bench.write_kinetics_like(tmp_path / "clip.mp4", seconds=5.0, height=96, fps=10)
    res = bench.time_views_on_device(path, "cpu", batch=2, repeats=2)
    assert 0 < res["s_per_clip_min"] <= res["s_per_clip_median"]
