"""The shared table layout of the pipelines."""

from __future__ import annotations

import pytest

from xmkd.pipelines.report import key_value_table, markdown_lines, percent


def test_percent_and_missing_figures() -> None:
    assert percent(0.25) == "25.0%"
    assert percent(1 / 3, digits=2) == "33.33%"
    assert percent(None) == "n/a"


def test_key_value_table_aligns_the_keys_under_a_title() -> None:
    table = key_value_table([("a", "1"), ("long key", "22")], "title")
    assert table.split("\n") == ["title", "-" * 13, "a        | 1", "long key | 22", "-" * 13]
    with pytest.raises(ValueError, match="'empty' has no rows"):
        key_value_table([], "empty")


def test_markdown_lines_keep_empty_cells_and_refuse_ragged_rows() -> None:
    assert markdown_lines(["x", "y"], [["1", ""]]) == ["| x | y |", "| --- | --- |", "| 1 |  |"]
    with pytest.raises(ValueError, match="a row has 1 cells, the header 2"):
        markdown_lines(["x", "y"], [["1"]])
