"""Per-frame AP benchmark: xmkd vs sklearn per class vs a torchnet-style APMeter.

Charades-sized input by default (1,863 videos x 100 steps = 186,300 frames, 157 classes, ~4 %
positives, random scores). Each implementation runs ``--repeats`` times, interleaved so that load
on a shared machine hits all alike; the report gives medians, ratios from this one run, and the
largest absolute AP difference to sklearn. ``--json OUT`` writes the figures.

    python benchmarks/metrics.py [--frames 186300] [--classes 157] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from xmkd.metrics.detection import per_frame_average_precision


def sklearn_per_class(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """The direct loop: sklearn's average_precision_score on each class column."""
    s, t = scores.numpy(), targets.numpy()
    return np.array([average_precision_score(t[:, c], s[:, c]) for c in range(s.shape[1])])


def apmeter(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """torchnet ``APMeter.value()`` (as PDAN/MS-TCT use it): sort each class by score, precision at
    each rank = cumulative true positives / rank, AP = mean precision over the positives."""
    _, order = torch.sort(scores.T.contiguous(), dim=1, descending=True)
    truth = targets.T.gather(1, order).double()
    tp = truth.cumsum(1)
    rank = torch.arange(1, scores.shape[0] + 1, dtype=torch.float64)
    return ((tp / rank * truth).sum(1) / truth.sum(1).clamp(min=1)).numpy()


def xmkd_ap(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    return per_frame_average_precision(scores, targets)[0].numpy()


def matmul_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    start = time.perf_counter()
    torch.mm(a, b)
    return 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=186_300)
    parser.add_argument("--classes", type=int, default=157)
    parser.add_argument("--positive-rate", type=float, default=0.04)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-sklearn", action="store_true", help="sklearn takes several seconds per run")
    parser.add_argument("--json", type=str, default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(args.frames, args.classes, generator=g)
    targets = torch.rand(args.frames, args.classes, generator=g) < args.positive_rate
    impls: dict[str, Callable[[torch.Tensor, torch.Tensor], np.ndarray]] = {
        "xmkd": xmkd_ap,
        "apmeter": apmeter,
    }
    if not args.skip_sklearn:
        impls["sklearn_per_class"] = sklearn_per_class

    times: dict[str, list[float]] = {name: [] for name in impls}
    values: dict[str, np.ndarray] = {}
    peak = matmul_gflops()
    for _ in range(args.repeats):
        for name, fn in impls.items():
            start = time.perf_counter()
            values[name] = fn(scores, targets)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    reference = values.get("sklearn_per_class", values["apmeter"])
    report = {
        "frames": args.frames,
        "classes": args.classes,
        "positive_rate": args.positive_rate,
        "threads": args.threads,
        "repeats": args.repeats,
        "matmul_gflops": round(peak, 1),
        "median_s": {k: round(v, 4) for k, v in median.items()},
        "speedup_vs": {k: round(v / median["xmkd"], 2) for k, v in median.items() if k != "xmkd"},
        "max_abs_diff_vs_reference": {
            k: float(np.abs(v - reference).max()) for k, v in values.items() if v is not reference
        },
        "reference": "sklearn_per_class" if "sklearn_per_class" in values else "apmeter",
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
