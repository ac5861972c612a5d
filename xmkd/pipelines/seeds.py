"""Reproducible figures for the pipelines: the pinned thread count, parsing ``--seeds`` and summarising a
figure over seeds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from xmkd.errors import ConfigError

#: Torch threads of the recipes' figures. The thread count changes the order of float reductions and so
#: the numbers (seen: the same seed at 1 and 2 threads gave different losses after 12 steps), so it is
#: fixed instead of following the machine's core count.
RECIPE_THREADS = 2


def parse_seeds(text: str) -> list[int]:
    """``3`` -> [0, 1, 2]; ``0,5,7`` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(t) for t in text.split(",") if t.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ConfigError("--seeds", f"expected a count (3) or a list (0,1,2), got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError("--seeds", f"need at least one seed and no repeats, got {text!r}")
    return seeds


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single seed, where it is undefined)."""
    mean = float(statistics.fmean(values))
    return mean, (float(statistics.stdev(values)) if len(values) > 1 else None)


def pm(mean: float, std: float | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` scaled (percent by default); the mean alone without a std."""
    return f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if std is not None else "")


__all__ = ["RECIPE_THREADS", "mean_std", "parse_seeds", "pm"]
