"""The student-vs-teacher cost table of benchmarks/inference_cost.py (README, Deployment)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from xmkd.data.io.flow import dequantize_flow

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "inference_cost.py"
_spec = importlib.util.spec_from_file_location("inference_cost", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules["inference_cost"] = bench  # its dataclass looks its module up while being defined
_spec.loader.exec_module(bench)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = bench.Preset(fps=12.0, flow_size=48, size=32, window=4, stride=2, dim=16, depth=1, channels=8, blocks=2, classes=3)  # fmt: skip


def test_cost_table_totals_and_ratio() -> None:
    costs = {
        "rgb_features": 1.0,
        "flow": 4.0,
        "flow_features": 1.0,
        "student_head": 0.5,
        "teacher_heads": 1.0,
    }
    table = bench.cost_table(costs)
    assert "| optical flow (DIS) | - | 4 |" in table
    assert "| **total** | **1.5** | **7** |" in table
    assert "**4.7x**" in table and "ONNX" not in table
    table = bench.cost_table({**costs, "student_head_onnx": 0.00123})
    assert "0.5 (ONNX 0.00123)" in table and "(7.0x vs the ONNX student)" in table


def test_the_frames_move_and_every_stage_is_timed() -> None:
    frames = bench.moving_texture(12, TINY.flow_size, TINY.fps)
    flow = dequantize_flow(bench.flow_of(frames))
    # the view slides right by 0.2 frame widths a second, so the picture moves left
    assert float(flow[..., 0].mean()) < -0.1
    result = bench.measure(TINY, seconds=2.0, repeats=1, head_repeats=1, onnx=False)
    assert result["frames"] == 24 and result["steps"] == 12  # ceil(24 / stride 2)
    per_minute = result["per_minute_s"]
    assert set(per_minute) == {"rgb_features", "flow", "flow_features", "student_head", "teacher_heads"}
    assert all(v > 0 for v in per_minute.values())
