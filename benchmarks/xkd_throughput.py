"""XKD training throughput (clips/s) and model FLOP utilisation, against PERFORMANCE.md.

One full optimiser step as in training: log-mel of the waveform, masked student passes, local views,
teachers with feature refinement, all losses, backward, per-tensor clipping (0.3), fused AdamW and the
EMA teacher update; inputs at the paper's sizes (32x112x112 video, 8x96x96 local view, 4 s audio).
Workloads (PERFORMANCE.md): ViT-B video + audio, 1 local view, batch 2 and 1; ViT-Tiny encoders (192
wide, 12 deep) with the 8192-d heads, batch 4. Each in eager mode and under ``torch.compile``; on a
GPU also with bf16 autocast.

Model FLOPs are the matmul FLOPs (mm/addmm/bmm/attention) of forward + backward counted once with
``torch.utils.flop_counter.FlopCounterMode`` on meta tensors (free, so no step is spent counting); utilisation = FLOPs / median step time / the matmul peak
(``torch.mm`` 2048x2048 fp32 on the CPU; on a GPU 8192x8192 in the step's dtype) measured in the same
run. Machines are noisy and shared: the ratios to the reference figures are what to read.

    python benchmarks/xkd_throughput.py [--workloads tiny-b4 base-b2 base-b1] [--modes eager compile]
        [--steps 3] [--threads 2] [--json out.json]
    python benchmarks/xkd_throughput.py --flops-only     # GFLOP/step of each workload, in seconds
    XKD_RELEASE=path/to/XKD python benchmarks/xkd_throughput.py --workloads base-b2 --modes eager

With ``XKD_RELEASE`` (a checkout of the authors' code; ``benchmarks/xkd_release.py``) each CPU fp32
eager workload also times the release's own step in the same run, A and B interleaved step by step,
and reports release s/step, xmkd s/step and their ratio (the figure PERFORMANCE.md asks for).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from xkd_release import build_release_step, release_root

from xmkd.distill.ema import collect_ema_tensors, ema_update_tensors_
from xmkd.modules.xkd import XKDPretrainer
from xmkd.optim import build_adamw, clip_grad_per_tensor_

# PERFORMANCE.md: the authors' XKD code on this kind of machine (2 cores, fp32, 2 threads).
REFERENCE = {
    "base-b2": {"clips_per_s": 0.50, "utilisation": 0.64, "gflop_per_step": 593.0},
    "base-b1": {"clips_per_s": 0.43, "utilisation": 0.55},
    "tiny-b4": {"clips_per_s": 5.2, "utilisation": 0.51},
}
TARGET_CLIPS_PER_S = {"base-b2": 0.60, "base-b1": 0.55, "tiny-b4": 7.0}
# base-b32: the recipe's per-device batch (global 256 = 32 x 8 GPUs), for a GPU; no reference figure.
# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s, no sparsity), for MFU.
BF16_SPEC_PEAK = {
    "H100 80GB HBM3": 989.4e12,
    "H100 PCIe": 756.5e12,
    "H200": 989.4e12,
    "A100": 312e12,
    "L40S": 362e12,
}
WORKLOADS = {"base-b2": ("base", 2), "base-b1": ("base", 1), "tiny-b4": ("tiny", 4), "base-b32": ("base", 32)}


@dataclass
class Result:
    workload: str
    mode: str
    batch: int
    step_s: float
    clips_per_s: float
    gflop_per_step: float
    utilisation: float
    first_step_s: float  # includes compilation under torch.compile
    peak_mem_gib: float | None = None  # GPU only: peak allocated memory of the timed steps
    mfu: float | None = None  # GPU only: model FLOPs / step time / the card's data-sheet peak (dtype's)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """Median FLOP/s of a square ``torch.mm`` (2048 on the CPU, 8192 on a GPU)."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 2):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(batch: int, device: torch.device, local_views: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "video": torch.randn(batch, 3, 32, 112, 112, generator=g).to(device),
        "video_local": torch.randn(batch, local_views, 3, 8, 96, 96, generator=g).to(device),
        "audio": (0.1 * torch.randn(batch, 64000, generator=g)).to(device),
    }


def build(size: str, device: torch.device) -> tuple[XKDPretrainer, torch.optim.Optimizer, tuple]:
    """The paper model (heads 2048/256/8192, decoders 384x4) at ``size``, its AdamW and EMA tensors."""
    model = XKDPretrainer(encoder_size=size, recon_log_every_n_epochs=0).to(device)
    model.train()
    optimizer = build_adamw(model.optimizer_param_groups(), 1e-4)  # no probes: probe_num_classes 0
    return model, optimizer, collect_ema_tensors(model.ema_pairs())


def make_step(
    model: XKDPretrainer, optimizer: torch.optim.Optimizer, ema: tuple, compile_: bool, bf16: bool
) -> tuple[Callable[[dict], torch.Tensor], Callable[[dict], torch.Tensor]]:
    """(full optimiser step, forward loss) for a batch dict."""

    def loss_fn(batch: dict) -> torch.Tensor:
        video, video_local, spec, spec_local = model._batch_views(batch)
        with torch.autocast(device_type=video.device.type, dtype=torch.bfloat16, enabled=bf16):
            return model.compute_losses(video, video_local, spec, spec_local)["loss"]

    # dynamic=False: each workload has one batch size; with dynamic shapes (what dynamo switches to
    # when a second workload reuses the compiled code with another batch) the audio local views'
    # torch.rand over a symbolic batch size fails to trace.
    forward = torch.compile(loss_fn, dynamic=False) if compile_ else loss_fn
    clipped = model.clipped_parameters()

    def step(batch: dict) -> torch.Tensor:
        loss = forward(batch)
        loss.backward()
        clip_grad_per_tensor_(clipped, model.hparams.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update_tensors_(*ema, 0.997)
        return loss.detach()

    return step, forward


class _MetaSafeAutocast(torch.autocast):
    """``torch.autocast`` that accepts meta tensors' device type (the xmkd code disables autocast
    around float32 islands with ``device_type=x.device.type``, which autocast rejects for "meta")."""

    def __init__(self, device_type: str, *args: Any, **kwargs: Any) -> None:
        super().__init__("cpu" if device_type == "meta" else device_type, *args, **kwargs)


def count_flops(size: str, batch_size: int, local_views: int = 1) -> float:
    """Matmul FLOPs of one forward + backward, counted on meta tensors (no compute, no memory).

    The spectrogram is fed directly (its STFT is not a matmul and its mel matmul is negligible);
    everything from the masked students to the losses and the backward is the training step's.
    """
    original = torch.autocast
    torch.autocast = _MetaSafeAutocast  # type: ignore[misc]
    try:
        with torch.device("meta"):
            model = XKDPretrainer(encoder_size=size, recon_log_every_n_epochs=0)
            video = torch.randn(batch_size, 3, 32, 112, 112)
            video_local = torch.randn(batch_size, local_views, 3, 8, 96, 96)
            spec = torch.randn(batch_size, 80, 448)
        model._aux["melspec"] = model.melspec(torch.device("cpu"))  # only its normalisation std is read
        counter = FlopCounterMode(display=False)
        with counter:
            spec_local = model.audio_local_views(spec)
            model.compute_losses(video, video_local, spec, spec_local)["loss"].backward()
    finally:
        torch.autocast = original  # type: ignore[misc]
    return float(counter.get_total_flops())


def bench(
    workload: str,
    mode: str,
    device: torch.device,
    steps: int,
    peak: dict[torch.dtype, float],
    flops_cache: dict[tuple[str, int], float],
) -> Result:
    size, batch_size = WORKLOADS[workload]
    torch.manual_seed(0)
    compile_, bf16 = "compile" in mode, "bf16" in mode
    torch._dynamo.reset()  # each workload compiles afresh, as a training run would
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, optimizer, ema = build(size, device)
    batch = make_batch(batch_size, device)
    flops = flops_cache.setdefault((size, batch_size), count_flops(size, batch_size))
    step = make_step(model, optimizer, ema, compile_, bf16)[0]
    _sync(device)
    t = time.perf_counter()
    step(batch)  # warm-up (and compilation)
    _sync(device)
    first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        step(batch)
        _sync(device)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    dtype = torch.bfloat16 if bf16 else torch.float32
    spec = spec_peak_flops(device) if bf16 else None
    return Result(
        workload=workload,
        mode=mode,
        batch=batch_size,
        step_s=step_s,
        clips_per_s=batch_size / step_s,
        gflop_per_step=flops / 1e9,
        utilisation=flops / step_s / peak[dtype],
        first_step_s=first,
        peak_mem_gib=peak_mem,
        mfu=flops / step_s / spec if spec else None,
    )


def spec_peak_flops(device: torch.device) -> float | None:
    """The card's data-sheet dense bf16 peak, matched on its name; None on a CPU or an unknown card."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    matches = [peak for key, peak in BF16_SPEC_PEAK.items() if key in name]
    return max(matches, key=float) if matches else None


def bench_against_release(
    workload: str, release: Path, steps: int, peak: float, flops_cache: dict[tuple[str, int], float]
) -> dict[str, Any]:
    """xmkd's eager fp32 CPU step and the release's, interleaved step by step (median of ``steps``)."""
    size, batch_size = WORKLOADS[workload]
    torch.manual_seed(0)
    model, optimizer, ema = build(size, torch.device("cpu"))
    batch = make_batch(batch_size, torch.device("cpu"))
    ours = make_step(model, optimizer, ema, compile_=False, bf16=False)[0]
    reference, _ = build_release_step(release, size, batch_size)
    flops = flops_cache.setdefault((size, batch_size), count_flops(size, batch_size))
    ours(batch)  # warm-up both (allocator, first-touch of the optimiser states)
    reference()
    times: dict[str, list[float]] = {"xmkd": [], "release": []}
    for _ in range(steps):
        for name, run in (("xmkd", lambda: ours(batch)), ("release", reference)):
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "workload": workload,
        "mode": "eager",
        "batch": batch_size,
        "release_step_s": med["release"],
        "xmkd_step_s": med["xmkd"],
        "release_min_s": min(times["release"]),
        "xmkd_min_s": min(times["xmkd"]),
        "speedup_vs_release": med["release"] / med["xmkd"],
        "gflop_per_step": flops / 1e9,
        "xmkd_utilisation": flops / med["xmkd"] / peak,
        "release_utilisation": flops / med["release"] / peak,
    }


def compare(result: Result) -> dict[str, float | None]:
    ref = REFERENCE.get(result.workload, {})
    out: dict[str, float | None] = {
        "clips_per_s_vs_reference": result.clips_per_s / ref["clips_per_s"] if ref else None,
        "clips_per_s_vs_target": (
            result.clips_per_s / TARGET_CLIPS_PER_S[result.workload]
            if result.workload in TARGET_CLIPS_PER_S
            else None
        ),
        "utilisation_vs_reference": result.utilisation / ref["utilisation"] if "utilisation" in ref else None,
    }
    if "gflop_per_step" in ref:
        out["gflop_vs_reference"] = result.gflop_per_step / ref["gflop_per_step"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads", nargs="+", default=["tiny-b4", "base-b2", "base-b1"], choices=list(WORKLOADS)
    )
    parser.add_argument(
        "--modes", nargs="+", default=None, help="eager compile [eager-bf16 compile-bf16 on GPU]"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps per workload (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (PERFORMANCE.md: 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument(
        "--release",
        default=None,
        help="checkout of the authors' XKD code to time in the same run (default: $XKD_RELEASE)",
    )
    parser.add_argument(
        "--flops-only",
        action="store_true",
        help="only count each workload's GFLOP/step (meta tensors, seconds)",
    )
    args = parser.parse_args(argv)
    flops_cache: dict[tuple[str, int], float] = {}
    if args.flops_only:
        counts = {}
        for workload in args.workloads:
            size, batch_size = WORKLOADS[workload]
            counts[workload] = flops_cache.setdefault((size, batch_size), count_flops(size, batch_size)) / 1e9
            ref = REFERENCE.get(workload, {}).get("gflop_per_step")
            print(
                f"{workload}: {counts[workload]:.1f} GFLOP/step" + (f" (reference {ref:.0f})" if ref else "")
            )
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"gflop_per_step": counts, "reference": REFERENCE}, f, indent=2)
        return 0

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modes = args.modes or (
        ["eager", "compile", "eager-bf16", "compile-bf16"] if device.type == "cuda" else ["eager", "compile"]
    )
    peak = {torch.float32: matmul_peak_flops(device, torch.float32)}
    if any("bf16" in m for m in modes):
        peak[torch.bfloat16] = matmul_peak_flops(device, torch.bfloat16)
    print(f"matmul peak: {peak[torch.float32] / 1e9:.1f} GFLOP/s fp32 ({device}, {args.threads} threads)")

    results: list[dict[str, Any]] = []

    def save() -> None:
        # Rewritten after every workload, so a run stopped part-way keeps what it measured.
        if not args.json:
            return
        payload = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": args.threads,
            "matmul_peak_gflops": {str(k).removeprefix("torch."): v / 1e9 for k, v in peak.items()},
            "reference": REFERENCE,
            "target_clips_per_s": TARGET_CLIPS_PER_S,
            "results": results,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)

    header = (
        f"{'workload':<9} {'mode':<13} {'B':>2} {'s/step':>8} {'clips/s':>8} {'GFLOP':>7} {'util':>6} "
        f"{'1st s':>7} {'x ref':>6} {'x target':>8} {'util x ref':>10}"
    )
    print(header)
    print("-" * len(header))

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    release = release_root(args.release)
    if release is not None and device.type == "cpu" and "eager" in modes:
        print(f"the release's step from {release}, interleaved with xmkd's ({args.steps} steps each)")
        for workload in args.workloads:
            c = bench_against_release(workload, release, args.steps, peak[torch.float32], flops_cache)
            results.append(c)
            print(
                f"{workload:<9} release {c['release_step_s']:.2f} s/step (min {c['release_min_s']:.2f}, "
                f"util {c['release_utilisation']:.2f}) | xmkd {c['xmkd_step_s']:.2f} s/step "
                f"(min {c['xmkd_min_s']:.2f}, util {c['xmkd_utilisation']:.2f}) | "
                f"xmkd {c['speedup_vs_release']:.2f}x the release",
                flush=True,
            )
            save()
        modes = [m for m in modes if m != "eager"]
    elif release is None:
        print("XKD_RELEASE not set: utilisation against the matmul peak only (no same-run reference)")

    for workload in args.workloads:
        for mode in modes:
            r = bench(workload, mode, device, args.steps, peak, flops_cache)
            c = compare(r)
            results.append({**r.as_dict(), **c})
            print(
                f"{r.workload:<9} {r.mode:<13} {r.batch:>2} {r.step_s:>8.2f} {r.clips_per_s:>8.3f} "
                f"{r.gflop_per_step:>7.1f} {r.utilisation:>6.2f} {r.first_step_s:>7.1f} "
                f"{fmt(c['clips_per_s_vs_reference']):>6} {fmt(c['clips_per_s_vs_target']):>8} "
                f"{fmt(c['utilisation_vs_reference']):>10}"
                + (f"  peak mem {r.peak_mem_gib:.1f} GiB" if r.peak_mem_gib is not None else "")
                + (f"  MFU {r.mfu:.2f} of the data-sheet bf16 peak" if r.mfu is not None else ""),
                flush=True,
            )
            save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
