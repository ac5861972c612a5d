"""Decode throughput: 16-frame clips per second at random start times.

Compares xmkd's ``read_clip`` (seek to the keyframe before the clip, decode only what is needed,
threaded or not) with a naive baseline that decodes the whole video to RGB and slices the clip,
on synthetic mp4 clips (generated into a temporary folder) and on the real shared clips when
present. Every figure in a table comes from the same run; the ratio is read_clip / naive.

    .venv/bin/python benchmarks/decode.py [--clips 20] [--frames 16] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from xmkd.data.synthetic_av import make_synthetic_av
from xmkd.data.video_io import probe, read_clip

REALDATA = Path(os.environ.get("XMKD_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
REAL_FILES = [
    "ucf101/videos/v_ApplyEyeMakeup_g01_c01.avi",
    "ucf101/videos/v_BaseballPitch_g01_c01.avi",
    "av/v_GGSY1Qvo990.mp4",
    "video/demo.mp4",
]


def naive_clip(path: Path, start_s: float, num_frames: int) -> np.ndarray:
    """Baseline: decode every frame to RGB, sort by pts, slice ``num_frames`` from ``start_s``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        tb = float(stream.time_base)
    frames.sort(key=lambda x: x[0])
    t0 = frames[0][0]
    times = np.array([(p - t0) * tb for p, _ in frames])
    first = max(0, int(np.searchsorted(times, start_s + 1e-6, side="right")) - 1)
    picked = [frames[min(first + i, len(frames) - 1)][1] for i in range(num_frames)]
    return np.stack(picked)


def bench_file(path: Path, clips: int, num_frames: int, rng: random.Random) -> dict[str, float]:
    info = probe(path)
    latest = max(0.0, info.duration_s - num_frames / info.fps - 0.1)
    starts = [rng.uniform(0, latest) for _ in range(clips)]
    methods = {
        "read_clip": lambda s: read_clip(path, s, num_frames, threads=False),
        "read_clip_threads": lambda s: read_clip(path, s, num_frames, threads=True),
        "naive_full_decode": lambda s: naive_clip(path, s, num_frames),
    }
    out: dict[str, float] = {"duration_s": info.duration_s, "fps": info.fps}
    for name, fn in methods.items():
        fn(starts[0])  # warm-up (file cache, codec init)
        t = time.perf_counter()
        for s in starts:
            fn(s)
        out[name] = clips / (time.perf_counter() - t)
    out["ratio"] = out["read_clip"] / out["naive_full_decode"]
    out["ratio_threads"] = out["read_clip_threads"] / out["naive_full_decode"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20, help="random clips per file")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # two 10 s synthetic clips: long enough that decoding everything is visibly wasteful
        info = make_synthetic_av(
            Path(tmp) / "synth", workers=1, classes=2, clips_per_class=1, duration=10.0, size=256, fps=25.0
        )
        for clip in info["clips"]:
            files[f"synthetic/{Path(clip['path']).name}"] = Path(tmp) / "synth" / clip["path"]
        for rel in REAL_FILES:
            if (REALDATA / rel).exists():
                files[rel] = REALDATA / rel
        results = {name: bench_file(path, args.clips, args.frames, rng) for name, path in files.items()}

    header = f"{'file':48s} {'dur s':>6s} {'read_clip':>10s} {'+threads':>9s} {'naive':>8s} {'ratio':>6s} {'ratio thr':>9s}"
    print(f"{args.frames}-frame clips per second, {args.clips} random starts per file")
    print(header)
    for name, r in results.items():
        print(
            f"{name:48s} {r['duration_s']:6.1f} {r['read_clip']:10.1f} {r['read_clip_threads']:9.1f} "
            f"{r['naive_full_decode']:8.1f} {r['ratio']:6.2f} {r['ratio_threads']:9.2f}"
        )
    geo = float(np.exp(np.mean([np.log(r["ratio"]) for r in results.values()])))
    print(f"geometric mean speed-up of read_clip over the naive full decode: {geo:.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"frames": args.frames, "clips": args.clips, "files": results, "geo_mean_ratio": geo},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
