"""``xmkd data synth-untrimmed``: write a synthetic untrimmed feature world
(:mod:`xmkd.data.synthetic.untrimmed`: ``motion`` or ``evidence``)."""

from __future__ import annotations

import argparse
import json

from xmkd.data.synthetic.motion import MotionWorldParams
from xmkd.data.synthetic.untrimmed import DEFAULT_WORLD, WORLDS, make_synthetic_untrimmed
from xmkd.data.tools.options import parse_knobs

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``xmkd data synth-untrimmed --out DIR [--world motion|evidence] [--videos N] [--classes C] [--seed S]
    [--pose] [--set KEY=VALUE]``."""
    defaults = MotionWorldParams()
    parser.add_argument("--out", required=True, help="folder to create (must not exist)")
    parser.add_argument(
        "--world",
        default=DEFAULT_WORLD,
        choices=sorted(WORLDS),
        help=f"which world (default {DEFAULT_WORLD}; see xmkd.data.synthetic.untrimmed)",
    )
    parser.add_argument("--videos", type=int, default=defaults.videos, help="number of videos")
    parser.add_argument("--classes", type=int, default=defaults.classes, help="number of action classes")
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="random seed (the world is deterministic)"
    )
    parser.add_argument("--pose", action="store_true", help="also write pose/ features")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other knob of the world's parameters (MotionWorldParams, SyntheticUntrimmedParams), "
        "e.g. --set rgb_noise=1.5",
    )


def run(args: argparse.Namespace) -> int:
    params = {"videos": args.videos, "classes": args.classes, "seed": args.seed, "pose": args.pose}
    world = getattr(args, "world", DEFAULT_WORLD)
    params.update(parse_knobs(args.set, WORLDS[world][0]))
    info = make_synthetic_untrimmed(args.out, world, **params)
    print(json.dumps({"out": str(args.out), **info["counts"], "feature_dims": info["feature_dims"]}))
    return 0
