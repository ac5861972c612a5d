"""The tables the pipelines print and write: one place for their layout.

A pipeline collects its figures into a results dict (``results.json``) and renders them through these
functions, so every table reads the same in a terminal, a log file and a markdown page.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["key_value_table", "markdown_lines", "percent"]


def percent(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage (``0.25`` -> ``25.0%``); ``n/a`` for a figure that was not measured."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def key_value_table(rows: Sequence[tuple[str, str]], title: str) -> str:
    """Two-column plain-text table under ``title`` (readable in a log file as well as a terminal)."""
    if not rows:
        raise ValueError(f"table {title!r} has no rows")
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([title, line, *(f"{k.ljust(width)} | {v}" for k, v in rows), line])


def markdown_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table: the header, the separator, one line per row."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells, the header {len(header)}: {list(row)}")
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
