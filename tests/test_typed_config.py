"""xmkd.typed_config: YAML option files checked against a dataclass's field types."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from xmkd.errors import ConfigError
from xmkd.typed_config import check_value, load_options


@dataclass
class Options:
    name: str = "x"
    rate: float = 1.0
    count: int | None = None
    grid: list[float] | None = None
    mode: Literal["a", "b"] = "a"
    flag: bool = False


@pytest.mark.parametrize(
    ("value", "annotation", "ok"),
    [
        (3, float, True),
        (True, int, False),
        (True, float, False),
        (2.5, int, False),
        (None, int | None, True),
        ([1, 2.5], list[float], True),
        ([1, "2"], list[float], False),
        ("b", Literal["a", "b"], True),
        ("c", Literal["a", "b"], False),
    ],
)
def test_check_value(value, annotation, ok: bool) -> None:
    assert check_value(value, annotation) is ok


def test_load_options_reads_typed_keys(tmp_path: Path) -> None:
    path = tmp_path / "o.yaml"
    path.write_text("name: y\nrate: 2\ncount: 3\ngrid: [0.1, 1]\nmode: b\n")
    assert load_options(path, Options) == {"name": "y", "rate": 2, "count": 3, "grid": [0.1, 1], "mode": "b"}


@pytest.mark.parametrize(
    ("text", "key", "what"),
    [
        ("rat: 2\n", "rat", "unknown option"),
        ("rate: fast\n", "rate", "expected float, got 'fast'"),
        ("mode: c\n", "mode", "expected Literal\\['a', 'b'\\], got 'c'"),
        ("grid: 0.1\n", "grid", "got 0.1"),
    ],
)
def test_bad_keys_are_named_with_the_file(tmp_path: Path, text: str, key: str, what: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"'{key}'.*{what}") as err:
        load_options(path, Options)
    assert str(path) in str(err.value)


def test_a_missing_or_non_mapping_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_options(tmp_path / "none.yaml", Options)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_options(tmp_path / "list.yaml", Options)
