"""Option parsing the ``xmkd data`` tools share."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from xmkd.errors import ConfigError

__all__ = ["parse_knobs"]


def parse_knobs(items: list[str], params: type) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> ``{KEY: value}``, each KEY a field of the dataclass ``params`` and
    each value converted to that field's type (bool: 1/true/yes; int; else float)."""
    types = {f.name: f.type for f in fields(params)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ConfigError("--set", f"expected KEY=VALUE with KEY one of {sorted(types)}, got {item!r}")
        kind = types[key]
        if kind in ("bool", bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif kind in ("int", int):
            out[key] = int(value)
        else:
            out[key] = float(value)
    return out
