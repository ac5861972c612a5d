"""The whole XKD training item: clips per second per CPU core, and CPU cores per GPU.

One item as the ViT-B recipe (``experiments/xkd/xkd_vitb_k400.yaml``) makes it, on a Kinetics-like
clip written at benchmark time with PyAV (10 s, 340 px high, 16:9, 30 fps h264 with x264's default
GOP as ffmpeg's re-encode of a Kinetics cut leaves it, stereo 44.1 kHz AAC):

- decode: 32 frames at 8 fps (4 s) from a random start (``read_clip``, FFmpeg threads off, as in a
  DataLoader worker) and 4 s of audio at 16 kHz mono (``read_audio``);
- video views, either per clip in the worker (``augment_on: sample``, :class:`XKDVideoViews`: the
  global 32x112x112 view and the local 8x96x96 view(s), jitter, grey, blur, normalisation; floats
  travel to the GPU) or per batch (``augment_on: batch``: the worker only draws the parameters, and
  :class:`XKDBatchViews` transforms the collated uint8 clips; timed here on the CPU per batch and
  divided by the batch, the upper bound of what it costs on the training device);
- audio: the log-mel (80 x 448) and the local 112-frame crop, which xmkd runs on the training device
  (the module's front end); timed on one CPU core for scale;
- collate: stacking the item into its batch (what a worker writes into shared memory).

Every stage runs on one thread, the stages interleaved per item, median per stage over the items.

What the GPU consumes is an assumption, stated in the output: the ViT-B step's matmul FLOPs per clip
(forward + backward, counted on meta tensors by ``benchmarks/xkd_throughput.count_flops`` in this
run) at an assumed fraction of an assumed bf16 peak (default: H100 SXM, 989 TFLOP/s dense per
NVIDIA's datasheet, at the 0.5 utilisation PERFORMANCE.md targets); no GPU step is timed here.
Cores per GPU = the GPU's clips/s / one core's clips/s.

    python benchmarks/data.py [--items 24] [--batch 8] [--local-views 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xmkd.data.datasets.batch_transforms import AUGMENT_KEY, RAW_VIDEO_KEY, XKDBatchViews
from xmkd.data.datasets.transforms import XKDVideoViews
from xmkd.data.io.video_io import read_audio, read_clip
from xmkd.data.synthetic.media import smooth_noise
from xmkd.models.audio import LogMelSpectrogram, spectrogram_local_views

#: ViT-B recipe sizes (experiments/xkd/xkd_vitb_k400.yaml).
NUM_FRAMES, FPS, SIZE, LOCAL_FRAMES, LOCAL_SIZE = 32, 8.0, 112, 8, 96
AUDIO_SECONDS, AUDIO_RATE, AUDIO_FRAMES, AUDIO_LOCAL_FRAMES = 4.0, 16000, 448, 112
#: Assumed GPU (see the module docstring): H100 SXM bf16 dense peak, and PERFORMANCE.md's utilisation target.
DEFAULT_PEAK_TFLOPS, DEFAULT_UTILISATION = 989.0, 0.5


def write_kinetics_like(path: Path, seconds: float = 10.0, height: int = 340, fps: int = 30) -> Path:
    """A 16:9 h264 (x264 defaults: preset medium, crf 23, keyint 250) + stereo 44.1 kHz AAC mp4.

    Textured, moving content with sensor-like noise, so the bit rate (and the decode cost) is that
    of a real clip rather than of a flat synthetic frame.
    """
    width = round(height * 16 / 9) // 2 * 2
    rng = np.random.default_rng(0)
    texture = smooth_noise(rng, 2 * width, 24)
    frames = int(seconds * fps)
    with av.open(str(path), mode="w", format="mp4") as container:
        vs = container.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        aus = container.add_stream("aac", rate=44100)
        aus.layout = "stereo"
        for i in range(frames):
            shift = (3 * i) % width
            luma = texture[:height, shift : shift + width]
            img = np.stack([luma, np.roll(luma, 7, 0), np.roll(luma, 13, 1)], axis=-1) * 200
            img += rng.normal(0, 6, img.shape)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))
        t = np.arange(int(seconds * 44100)) / 44100
        wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)
        stereo = np.stack([wave, np.roll(wave, 100)]).astype(np.float32)
        for start in range(0, stereo.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(
                stereo[:, start : start + 1024], format="fltp", layout="stereo"
            )
            chunk.sample_rate, chunk.pts = 44100, start
            container.mux(aus.encode(chunk))
        container.mux(aus.encode(None))
    return path


def gpu_clips_per_s(flop_per_clip: float, peak_tflops: float, utilisation: float) -> float:
    """Clips/s a GPU consumes at ``utilisation`` of ``peak_tflops`` for ``flop_per_clip``."""
    return peak_tflops * 1e12 * utilisation / flop_per_clip


def cores_per_gpu(gpu_rate: float, per_core_rate: float) -> float:
    """CPU cores one GPU needs so that the loader keeps up (``gpu_rate / per_core_rate``)."""
    return gpu_rate / per_core_rate


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def _audio_views(mel: LogMelSpectrogram, wave: torch.Tensor) -> torch.Tensor:
    """The module's audio front end for one item: the 80 x 448 log-mel and its local 112-frame crop."""
    spec = mel(wave[None])[..., :AUDIO_FRAMES]
    return spectrogram_local_views(spec, 1, AUDIO_LOCAL_FRAMES)


def recipe_view_sizes(local_views: int = 1) -> dict[str, int]:
    """The ViT-B recipe's video view sizes, as ``XKDVideoViews`` / ``XKDBatchViews`` take them."""
    return dict(
        num_frames=NUM_FRAMES,
        size=SIZE,
        local_frames=LOCAL_FRAMES,
        local_size=LOCAL_SIZE,
        num_local_views=local_views,
    )


def bench_item(
    path: Path, items: int, batch: int, local_views: int = 1, seed: int = 0, clip_seconds: float = 10.0
) -> dict[str, Any]:
    """Median seconds per item of each stage, interleaved item by item on one thread."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    kwargs = recipe_view_sizes(local_views)
    per_clip, batched = XKDVideoViews(**kwargs), XKDBatchViews(**kwargs)
    mel = LogMelSpectrogram()
    times: dict[str, list[float]] = {}
    sample_items: list[dict[str, Any]] = []
    batch_items: list[dict[str, Any]] = []
    bytes_per_item: dict[str, int] = {}
    latest = clip_seconds - NUM_FRAMES / FPS - 0.1
    for _ in range(items):
        start = rng.uniform(0.0, latest)
        stage: dict[str, float] = {}
        stage["decode_video"], clip = _timed(read_clip, path, start, NUM_FRAMES, FPS, threads=False)
        stage["decode_audio"], wave = _timed(read_audio, path, start, AUDIO_SECONDS, AUDIO_RATE)
        stage["views_per_clip"], views = _timed(per_clip, clip)
        stage["views_draw"], raw = _timed(batched.sample, clip)
        stage["audio_logmel"], _ = _timed(_audio_views, mel, wave)
        for key, value in stage.items():
            times.setdefault(key, []).append(value)
        sample_items.append({**views, "audio": wave})
        batch_items.append({**raw, "audio": wave})
        if len(batch_items) == batch:
            # one batch's worth: the collate of both paths and the batched views, per item
            t, sb = _timed(default_collate, sample_items)
            times.setdefault("collate_per_clip", []).append(t / batch)
            t, bb = _timed(default_collate, batch_items)
            times.setdefault("collate_batched", []).append(t / batch)
            t, _ = _timed(batched.apply, bb[RAW_VIDEO_KEY], bb[AUGMENT_KEY])
            times.setdefault("views_batch_apply", []).append(t / batch)
            for name, b in (("per_clip", sb), ("batched", bb)):
                bytes_per_item[name] = (
                    sum(v.numel() * v.element_size() for v in b.values() if isinstance(v, torch.Tensor))
                    // batch
                )
            sample_items, batch_items = [], []
    med = {k: statistics.median(v) for k, v in times.items()}
    decode = med["decode_video"] + med["decode_audio"]
    paths = {
        # augment_on: sample, the recipe's: everything in the worker, floats to the GPU
        "sample": decode + med["views_per_clip"] + med["collate_per_clip"],
        # augment_on: batch with the views on the GPU: the worker decodes, draws, collates uint8
        "batch_gpu_views": decode + med["views_draw"] + med["collate_batched"],
        # augment_on: batch with the views on the CPU (a CPU-only run): all of it on the host
        "batch_cpu_views": decode + med["views_draw"] + med["collate_batched"] + med["views_batch_apply"],
    }
    return {
        "stage_s_median": med,
        "stage_s_min": {k: min(v) for k, v in times.items()},
        "item_s": paths,
        "clips_per_s_per_core": {k: 1.0 / v for k, v in paths.items()},
        "bytes_to_gpu_per_item": bytes_per_item,
    }


def time_views_on_device(
    path: Path, device: str, batch: int, repeats: int = 5, local_views: int = 1, seed: int = 0
) -> dict[str, float]:
    """Seconds per clip of ``XKDBatchViews.apply`` on ``device`` for a collated batch of ``batch`` clips.

    What ``augment_on: batch`` costs on the training device: the uint8 clips (one decoded clip of
    ``path``, rolled per item so that the items differ) and their parameters are moved there first,
    then ``apply`` runs ``repeats`` times after one warm-up, each timed to the device's completion
    (``torch.cuda.synchronize``). ``resize``/``jitter`` ``auto``: the batched matmul resize and colour
    map off the CPU, the per-clip loops on it.
    """
    torch.manual_seed(seed)
    views = XKDBatchViews(**recipe_view_sizes(local_views))
    clip = read_clip(path, 0.0, NUM_FRAMES, FPS, threads=False)
    items = default_collate([views.sample(clip.roll(i, dims=2)) for i in range(batch)])
    dev = torch.device(device)
    clips = items[RAW_VIDEO_KEY].to(dev)
    params = {k: v.to(dev) for k, v in items[AUGMENT_KEY].items()}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    times = []
    for i in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        views.apply(clips, params, probe=False)
        sync()
        if i > 0:  # the first call allocates the scratch buffers (and, on a GPU, warms the kernels)
            times.append(time.perf_counter() - t0)
    return {"s_per_clip_median": statistics.median(times) / batch, "s_per_clip_min": min(times) / batch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=24, help="items timed (default 24)")
    parser.add_argument("--batch", type=int, default=8, help="items per collated batch (default 8)")
    parser.add_argument("--local-views", type=int, default=1, help="local video views (the recipe's: 1)")
    parser.add_argument("--gpu-peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS)
    parser.add_argument("--gpu-utilisation", type=float, default=DEFAULT_UTILISATION)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument(
        "--views-device",
        default=None,
        help="also time the batched views on this device (e.g. cuda), per clip, against the step's share",
    )
    parser.add_argument("--views-batch", type=int, default=32, help="clips per batch for --views-device")
    args = parser.parse_args(argv)
    if args.items < args.batch:
        parser.error("--items must be at least --batch")
    torch.set_num_threads(1)  # one core: what a DataLoader worker gets

    from xkd_throughput import count_flops  # benchmarks/ on sys.path

    flop_per_clip = count_flops("base", 2) / 2  # the recipe's step: one local view
    gpu_rate = gpu_clips_per_s(flop_per_clip, args.gpu_peak_tflops, args.gpu_utilisation)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = write_kinetics_like(Path(tmp) / "kinetics_like.mp4")
        encode_s = time.perf_counter() - t0
        size_kb = path.stat().st_size / 1024
        res = bench_item(path, args.items, args.batch, args.local_views, args.seed)
        if args.views_device:
            res["views_on_device"] = {
                "device": args.views_device,
                "batch": args.views_batch,
                **time_views_on_device(
                    path, args.views_device, args.views_batch, local_views=args.local_views
                ),
            }
    res.update(
        clip={"seconds": 10.0, "height": 340, "fps": 30, "kbytes": size_kb, "encode_s": encode_s},
        items=args.items,
        batch=args.batch,
        local_views=args.local_views,
        threads=1,
        machine=platform.processor() or platform.machine(),
        gpu_assumption={
            "peak_tflops_bf16": args.gpu_peak_tflops,
            "utilisation": args.gpu_utilisation,
            "gflop_per_clip": flop_per_clip / 1e9,
            "clips_per_s": gpu_rate,
            "source": "ViT-B XKD step, matmul FLOPs of forward + backward per clip (count_flops, meta "
            "tensors); peak: H100 SXM bf16 dense per NVIDIA's datasheet; utilisation: PERFORMANCE.md's target",
        },
        cores_per_gpu={k: cores_per_gpu(gpu_rate, v) for k, v in res["clips_per_s_per_core"].items()},
    )
    med = res["stage_s_median"]
    print(
        f"Kinetics-like clip: 10 s, 340p h264 + AAC, {size_kb:.0f} kB; {args.items} items, 1 thread, "
        f"{1 + args.local_views} video views"
    )
    print(f"{'stage':<22} {'ms / item (median)':>20}")
    for key, value in med.items():
        print(f"{key:<22} {1000 * value:>20.1f}")
    print(
        f"GPU assumption: {flop_per_clip / 1e9:.0f} GFLOP per clip (ViT-B step, fwd + bwd) at "
        f"{args.gpu_utilisation:.2f} of {args.gpu_peak_tflops:.0f} TFLOP/s bf16 = {gpu_rate:.0f} clips/s"
    )
    print(f"{'item path':<18} {'clips/s/core':>13} {'MB to GPU/clip':>15} {'cores per GPU':>14}")
    for key in res["item_s"]:
        nbytes = res["bytes_to_gpu_per_item"]["per_clip" if key == "sample" else "batched"]
        if key == "batch_cpu_views":
            nbytes = res["bytes_to_gpu_per_item"]["per_clip"]  # the views, made on the host
        print(
            f"{key:<18} {res['clips_per_s_per_core'][key]:>13.2f} {nbytes / 1e6:>15.1f} "
            f"{res['cores_per_gpu'][key]:>14.0f}"
        )
    if "views_on_device" in res:
        on_dev = res["views_on_device"]
        per_clip = on_dev["s_per_clip_median"]
        print(
            f"views on {on_dev['device']} (batch {on_dev['batch']}): {1000 * per_clip:.2f} ms per clip, "
            f"{per_clip * gpu_rate:.1%} of the assumed step's time per clip"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
