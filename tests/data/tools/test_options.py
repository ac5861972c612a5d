"""``--set KEY=VALUE`` parsing of the data tools (``xmkd.data.tools.options``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from xmkd.data.tools.options import parse_knobs
from xmkd.errors import ConfigError


@dataclass
class Knobs:
    videos: int = 3
    noise: float = 0.5
    pose: bool = False


def test_values_take_the_field_types() -> None:
    got = parse_knobs(["videos=7", "noise=1.5", "pose=yes"], Knobs)
    assert got == {"videos": 7, "noise": 1.5, "pose": True}
    assert type(got["videos"]) is int and parse_knobs(["pose=0"], Knobs) == {"pose": False}


@pytest.mark.parametrize("item", ["videos", "colour=3", "=1"])
def test_an_unknown_key_or_a_missing_value_names_the_known_keys(item: str) -> None:
    with pytest.raises(ConfigError, match=r"--set.*\['noise', 'pose', 'videos'\]"):
        parse_knobs([item], Knobs)
