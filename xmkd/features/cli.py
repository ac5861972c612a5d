"""``xmkd extract-features``: the command line of :func:`xmkd.features.extract.extract_features_folder`."""

from __future__ import annotations

import argparse
import sys

from xmkd.features.extract import extract_features_folder

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``xmkd extract-features --videos DIR --encoder PATH --modality rgb|flow --window W --stride S --out DIR``."""
    parser.add_argument(
        "--videos", required=True, help="videos (rgb, recursive) or compute-flow output (flow)"
    )
    parser.add_argument("--encoder", required=True, help="exported ViT (.pt + .json) or r3d_18 state dict")
    parser.add_argument("--encoder-kind", choices=["auto", "xkd", "r3d_18"], default="auto")
    parser.add_argument("--modality", choices=["rgb", "flow"], required=True)
    parser.add_argument("--window", type=int, default=None, help="frames per clip (default: the encoder's)")
    parser.add_argument("--stride", type=int, default=8, help="frames between feature steps")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of the windows (default: native)")
    parser.add_argument("--steps", choices=["cover", "valid"], default="cover", help="step rule (module doc)")
    parser.add_argument("--out", required=True, help="feature root: writes <out>/<modality>/<id>.npy")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32", help="bf16 autocast on CUDA")
    parser.add_argument("--workers", type=int, default=1, help="decoding worker processes (0: inline)")
    parser.add_argument("--overwrite", action="store_true", help="recompute every video (no resume)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    report = extract_features_folder(
        args.videos,
        args.encoder,
        args.modality,
        args.out,
        window=args.window,
        stride=args.stride,
        fps=args.fps,
        steps=args.steps,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        workers=args.workers,
        encoder_kind=args.encoder_kind,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(report.summary("extract-features"), file=sys.stderr if report.failures else sys.stdout)
    return 1 if report.failures else 0
