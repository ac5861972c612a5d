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


#: The row names the detection pipelines share in ``results.json``'s ``table``: the RGB-only
#: baseline, the auxiliary-only one (flow or pose), the two-stream teacher; students keep their own.
DETECTION_ROW_NAMES = {"rgb": "rgb", "aux": "aux", "flow": "aux", "pose": "aux", "teacher": "teacher"}


def detection_table_row(
    name: str, label: str, seed_ids: Sequence[int], maps: Sequence[float], metric: str
) -> dict[str, object]:
    """One row of ``table`` in the ``results.json`` of both detection pipelines (``distill-detection``
    and ``distill-detection-raw``), their one shared schema::

        {"name": "rgb" | "aux" | "teacher" | <student row>, "label": str, "metric": str,
         "map_mean": float, "map_std": float | None (sample std over seeds), "seeds": [mAP per seed],
         "seed_ids": [seed]}

    ``name`` is normalised (a flow-only or pose-only row is ``aux``); mAPs are fractions in [0, 1].
    """
    if len(seed_ids) != len(maps):
        raise ValueError(f"{len(seed_ids)} seeds but {len(maps)} mAPs for row {name!r}")
    mean, std = mean_std(maps)
    return {
        "name": DETECTION_ROW_NAMES.get(name, name),
        "label": label,
        "metric": metric,
        "map_mean": mean,
        "map_std": std,
        "seeds": [float(m) for m in maps],
        "seed_ids": [int(s) for s in seed_ids],
    }


__all__ = ["DETECTION_ROW_NAMES", "RECIPE_THREADS", "detection_table_row", "mean_std", "parse_seeds", "pm"]
