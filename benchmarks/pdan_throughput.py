"""PDAN head training throughput (videos/s): xmkd's head vs a re-implementation of the released code.

Config (PERFORMANCE.md): 1 stage, 5 blocks, 512 channels, D = 1024, 157 classes, batch 32, masked
BCE, Adam step, fp32, ``torch.set_num_threads(2)``. The reference is rebuilt here in the released
code's (B, C, T) layout — Conv1d 1x1 projections, ``unfold`` + ``cat`` of the three dilated keys
and values, einsum — so both are measured in the same run on the same machine; the figures that
matter are the ratios (and xmkd vs the published 4.8 videos/s at T = 256), next to the matmul peak.

    python benchmarks/pdan_throughput.py [--lengths 128 256 512] [--steps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from xmkd.models.temporal import TemporalDetectionHead, masked_bce

REFERENCE_VIDEOS_PER_S = {128: 15.0, 256: 4.8}  # PERFORMANCE.md, the authors' PDAN code


class RefDAL(nn.Module):
    """The released PDAN DAL, (B, C, T) layout, unfold/cat windows."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.d = dilation
        self.rel_t = nn.Parameter(torch.randn(channels, 1, 3))
        self.key_conv = nn.Conv1d(channels, channels, 1, bias=False)
        self.query_conv = nn.Conv1d(channels, channels, 1, bias=False)
        self.value_conv = nn.Conv1d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        d = self.d
        padded = F.pad(x, [d, d])
        q = self.query_conv(x)
        k = self.key_conv(padded).unfold(2, 2 * d + 1, 1)
        v = self.value_conv(padded).unfold(2, 2 * d + 1, 1)
        k = torch.cat([k[..., 0:1], k[..., d : d + 1], k[..., 2 * d : 2 * d + 1]], dim=3)
        v = torch.cat([v[..., 0:1], v[..., d : d + 1], v[..., 2 * d : 2 * d + 1]], dim=3) + self.rel_t
        k = k.contiguous().view(b, 1, c, t, -1)
        v = v.contiguous().view(b, 1, c, t, -1)
        out = F.softmax(q.view(b, 1, c, t, 1) * k, dim=-1)
        return torch.einsum("bnctk,bnctk -> bnct", out, v).view(b, -1, t)


class RefBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.att = RefDAL(channels, dilation)
        self.conv = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (x + self.dropout(self.conv(F.relu(self.att(x))))) * mask[:, 0:1, :]


class RefPDAN(nn.Module):
    def __init__(self, dim: int, channels: int, blocks: int, classes: int) -> None:
        super().__init__()
        self.inp = nn.Conv1d(dim, channels, 1)
        self.blocks = nn.ModuleList([RefBlock(channels, 2**i) for i in range(blocks)])
        self.out = nn.Conv1d(channels, classes, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for blk in self.blocks:
            h = blk(h, mask)
        return self.out(h) * mask[:, 0:1, :]


def matmul_gflops(reps: int = 5) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * 2048**3 / statistics.median(times) / 1e9


def head_flops_per_video(t: int, dim: int, ch: int, blocks: int, classes: int) -> float:
    """Forward GEMM FLOPs per video; a training step is ~3x minus the unneeded input gradient."""
    fwd = 2 * t * (dim * ch + blocks * 4 * ch * ch + ch * classes)
    return 3 * fwd - 2 * t * dim * ch


def time_interleaved(steps_by_name: dict, steps: int) -> dict[str, float]:
    """Median seconds per step of each candidate, steps interleaved so that load from other
    processes on a shared machine hits all candidates alike."""
    for step in steps_by_name.values():
        step()  # warm-up: allocator, Adam state
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, layout: str):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if layout == "btc":
            logits, _ = model(x, mask)
            loss = masked_bce(logits, y, mask)
        else:
            logits = model(x.transpose(1, 2), mask.unsqueeze(1).float()).transpose(1, 2)
            loss = masked_bce(logits, y, mask)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-reference", action="store_true", help="skip timing the reference re-implementation")
    p.add_argument("--json", type=str, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dim, ch, blocks, classes = 1024, 512, 5, 157
    peak = matmul_gflops()
    print(f"matmul peak (2048^2 fp32): {peak:.0f} GFLOP/s, threads={args.threads}")
    rows = []
    for t in args.lengths:
        x = torch.randn(args.batch, t, dim)
        y = (torch.rand(args.batch, t, classes) < 0.04).float()
        mask = torch.ones(args.batch, t, dtype=torch.bool)
        ours = TemporalDetectionHead("pdan", dim, classes, ch, blocks, 1, 0.5)
        candidates = {"xmkd": make_step(ours, x, y, mask, "btc")}
        if not args.no_reference:
            candidates["reference"] = make_step(RefPDAN(dim, ch, blocks, classes), x, y, mask, "bct")
        secs = time_interleaved(candidates, args.steps)
        flops = head_flops_per_video(t, dim, ch, blocks, classes) * args.batch
        row = {"T": t, "xmkd_videos_per_s": args.batch / secs["xmkd"]}
        row["xmkd_utilisation"] = flops / secs["xmkd"] / 1e9 / peak
        if "reference" in secs:
            row["reference_reimpl_videos_per_s"] = args.batch / secs["reference"]
            row["speedup_vs_reimpl"] = secs["reference"] / secs["xmkd"]
        if t in REFERENCE_VIDEOS_PER_S:
            row["speedup_vs_published"] = row["xmkd_videos_per_s"] / REFERENCE_VIDEOS_PER_S[t]
        rows.append(row)
        print(
            " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_peak_gflops": peak, "batch": args.batch, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
