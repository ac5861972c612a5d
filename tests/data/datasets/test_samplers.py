"""Clip samplers: where each clip of a trimmed video starts."""

from __future__ import annotations

import pytest
import torch

from xmkd.data.datasets.samplers import RandomClipSampler, UniformClipSampler
from xmkd.errors import ConfigError


def test_uniform_sampler_spans_the_video() -> None:
    s = UniformClipSampler(3)
    assert [s(10.0, 2.0, i) for i in range(3)] == [0.0, 4.0, 8.0]
    assert UniformClipSampler(1)(10.0, 2.0, 0) == 4.0  # centre window
    assert [s(1.0, 2.0, i) for i in range(3)] == [0.0, 0.0, 0.0]  # shorter than the clip
    with pytest.raises(IndexError):
        s(10.0, 2.0, 3)
    with pytest.raises(ConfigError, match="num_clips"):
        UniformClipSampler(0)


def test_random_sampler_stays_inside_and_varies() -> None:
    torch.manual_seed(0)
    s = RandomClipSampler()
    starts = [s(10.0, 2.0, 0) for _ in range(200)]
    assert min(starts) >= 0.0 and max(starts) <= 8.0
    assert max(starts) - min(starts) > 6.0  # covers most of [0, 8]
    assert s(1.0, 2.0, 0) == 0.0
