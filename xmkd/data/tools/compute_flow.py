"""``xmkd compute-flow``: dense optical flow for a folder of videos (:func:`xmkd.data.io.flow.compute_flow_folder`)."""

from __future__ import annotations

import argparse
import sys

from xmkd.data.io.flow import DEFAULT_BOUND, DIS_PRESETS, compute_flow_folder

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``xmkd compute-flow --videos DIR --out DIR [--fps F] [--size S] [--method dis|farneback]``."""
    parser.add_argument(
        "--videos", required=True, help="folder of videos (searched recursively); id = file stem"
    )
    parser.add_argument("--out", required=True, help="output folder: <out>/<video_id>.npz")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of the flow (default: native)")
    parser.add_argument(
        "--size", type=int, default=128, help="short side in pixels (aspect kept); 0 keeps the video's size"
    )
    parser.add_argument("--method", choices=["dis", "farneback"], default="dis", help="OpenCV flow method")
    parser.add_argument("--dis-preset", choices=sorted(DIS_PRESETS), default="fast", help="DIS preset")
    parser.add_argument(
        "--bound", type=float, default=DEFAULT_BOUND, help="clip bound in pixels (TSN/I3D: 20)"
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: min(4, CPUs))")
    parser.add_argument("--overwrite", action="store_true", help="recompute every video (no resume)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    report = compute_flow_folder(
        args.videos,
        args.out,
        fps=args.fps,
        size=args.size or None,
        method=args.method,
        dis_preset=args.dis_preset,
        bound=args.bound,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(report.summary("compute-flow"), file=sys.stderr if report.failures else sys.stdout)
    return 1 if report.failures else 0
