"""``xmkd data synth-untrimmed-raw``: write the raw untrimmed mp4 world with Charades CSVs
(:mod:`xmkd.data.synthetic.raw_untrimmed`)."""

from __future__ import annotations

import argparse
import json

from xmkd.data.synthetic.raw_untrimmed import MOTIONS, RawUntrimmedParams, make_synthetic_raw_untrimmed
from xmkd.data.tools.options import parse_knobs

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``xmkd data synth-untrimmed-raw --out DIR [--videos N] [--classes C] [--seed S] [--set KEY=VALUE]``."""
    d = RawUntrimmedParams()
    parser.add_argument("--out", required=True, help="folder to write (must not hold a dataset already)")
    parser.add_argument("--videos", type=int, default=d.videos, help="number of videos")
    parser.add_argument(
        "--classes", type=int, default=d.classes, help=f"motion classes (at most {len(MOTIONS)})"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (content is deterministic)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: min(4, CPUs))")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other knob of RawUntrimmedParams, e.g. --set size=96")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    params = {
        "videos": args.videos,
        "classes": args.classes,
        "seed": args.seed,
        **parse_knobs(args.set, RawUntrimmedParams),
    }
    info = make_synthetic_raw_untrimmed(args.out, workers=args.workers, **params)
    print(json.dumps({"out": str(args.out), **info["counts"]}))
    return 0
