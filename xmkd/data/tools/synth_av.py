"""``xmkd data synth-av``: write the synthetic audio-visual dataset (:mod:`xmkd.data.synthetic.av`)."""

from __future__ import annotations

import argparse
import json

from xmkd.data.synthetic.av import SyntheticAVParams, empty_splits, empty_splits_message, make_synthetic_av
from xmkd.errors import ConfigError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``xmkd data synth-av --out DIR [--classes N] [--clips-per-class M] [--seed S] ...``."""
    d = SyntheticAVParams()
    parser.add_argument("--out", required=True, help="folder to write (must not hold a dataset already)")
    parser.add_argument("--classes", type=int, default=d.classes, help="number of classes")
    parser.add_argument("--clips-per-class", type=int, default=d.clips_per_class, help="clips per class")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (content is deterministic)")
    parser.add_argument("--duration", type=float, default=d.duration, help="clip length in seconds")
    parser.add_argument("--size", type=int, default=d.size, help="frame width and height in pixels")
    parser.add_argument("--fps", type=float, default=d.fps, help="frames per second")
    parser.add_argument(
        "--sample-rate", type=int, default=d.sample_rate, help="audio rate: 16000, 22050, 44100 or 48000"
    )
    parser.add_argument(
        "--clips-per-group", type=int, default=d.clips_per_group, help="clips sharing a scene (fold unit)"
    )
    parser.add_argument(
        "--light-pulse", action="store_true", help="also pulse the scene's light at a class rate (0.5-3.5 Hz)"
    )
    parser.add_argument(
        "--heldout-per-class",
        type=int,
        default=d.heldout_per_class,
        help="extra clips per class in every fold's test list and no training list",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: min(4, CPUs))")
    parser.add_argument(
        "--allow-empty-splits",
        action="store_true",
        help="write the set even if fold 1's train or test list would be empty (else refused)",
    )


def run(args: argparse.Namespace) -> int:
    params = {
        "classes": args.classes,
        "clips_per_class": args.clips_per_class,
        "seed": args.seed,
        "duration": args.duration,
        "size": args.size,
        "fps": args.fps,
        "sample_rate": args.sample_rate,
        "clips_per_group": args.clips_per_group,
        "light_pulse": args.light_pulse,
        "heldout_per_class": args.heldout_per_class,
    }
    empty = empty_splits(SyntheticAVParams(**params))
    fold1 = [f for f in empty if f.endswith("01.txt")]
    if fold1 and not args.allow_empty_splits:
        # `xmkd data inspect` and every loader would reject such a set; refuse before rendering it
        raise ConfigError("clips_per_class", empty_splits_message(SyntheticAVParams(**params), empty))
    info = make_synthetic_av(args.out, workers=args.workers, **params)
    print(json.dumps({"out": str(args.out), "classes": len(info["classes"]), **info["counts"]}))
    return 0
