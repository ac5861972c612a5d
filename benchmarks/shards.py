"""Sharded (litdata chunks) vs per-file reading of a trimmed dataset: items per second, paired.

One epoch of the training split through the DataModule's own training loader, twice per round
(per-file: ``ResumableDataLoader`` over ``TrimmedVideoDataset``; sharded: ``StreamingDataLoader``
over ``ShardStream``, ``data.shards``), A and B interleaved over ``--repeats`` rounds, the
order alternating, with the same clips, transforms and workers. Two workloads:

- ``fetch``: what storage layout changes, without the decode: per file, open the video and
  read its header (``probe``); sharded, take the item's bytes from the stream and probe them in
  memory. This is the per-item filesystem cost that sharding removes.
- ``clip``: the whole sample of the XKD recipe (32 frames at 8 fps, 4 s of audio, the global
  and local views), i.e. what training waits for.

The ratio is per-file seconds / sharded seconds (> 1: shards faster). Only figures from one run
compare (PERFORMANCE.md); the machine's fp32 matmul peak of the same run is printed with them.
On a local disk with the files in the page cache an open costs microseconds, so the figures
here are a lower bound of what sharding gives on a network filesystem, where each open is a
metadata round trip.

    .venv/bin/python benchmarks/shards.py [--root DIR | --videos 120] [--repeats 3] [--workers 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from xmkd.data.datasets.shards import (
    ShardStream,
    read_manifest,
    read_shard_records,
    shard_loader,
    write_shards,
)
from xmkd.data.datasets.trimmed import RandomClipSampler, TrimmedVideoDataModule, TrimmedVideoDataset
from xmkd.data.io.video_io import probe
from xmkd.data.synthetic.av import ensure_synthetic_av
from xmkd.fault import ResumableDataLoader


def matmul_gflops(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    torch.mm(a, b)
    return 2 * n**3 / (time.perf_counter() - start) / 1e9


class _Probe(TrimmedVideoDataset):
    """``fetch``: each item only opens its video and reads the header (the decode left out)."""

    def load(
        self, record: Any, clip_index: int = 0, crop_index: int = 0, media: Any = None
    ) -> dict[str, Any]:
        info = probe(media if media is not None else record.path)
        return {"label": record.label, "frames": info.num_frames}


def epoch_seconds(make_loader: Callable[[], Any]) -> tuple[float, int]:
    loader = make_loader()
    start = time.perf_counter()
    items = sum(len(batch["label"]) for batch in loader)
    return time.perf_counter() - start, items


def loaders(
    workload: str, root: Path, shards: Path, args: argparse.Namespace
) -> dict[str, Callable[[], Any]]:
    if workload == "fetch":
        records = read_shard_records(read_manifest(shards), "train")
        return {
            "per_file": lambda: ResumableDataLoader(
                _Probe(records, RandomClipSampler(1)),
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=args.workers,
            ),
            "sharded": lambda: shard_loader(
                ShardStream(str(shards / "train"), _Probe([], RandomClipSampler(1)), seed=0),
                args.batch_size,
                args.workers,
            ),
        }

    def datamodule(sharded: bool) -> Callable[[], Any]:
        def make() -> Any:
            dm = TrimmedVideoDataModule(
                dataset="synthetic" if args.root is None else args.dataset,
                root=str(root),
                splits=args.splits,
                shards=str(shards) if sharded else None,
                batch_size=args.batch_size,
                num_workers=args.workers,
            )  # the XKD recipe: 32 frames at 8 fps, audio, global + local views (the defaults)
            dm.setup("fit")
            return dm.train_dataloader()

        return make

    return {"per_file": datamodule(False), "sharded": datamodule(True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="a trimmed dataset (default: a synthetic set made here)")
    parser.add_argument("--dataset", default="ucf101", help="with --root: its reader")
    parser.add_argument("--splits", default=None, help="with --root: its split files")
    parser.add_argument("--videos", type=int, default=120, help="size of the synthetic set (10 classes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", nargs="+", default=["fetch", "clip"], choices=["fetch", "clip"])
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            root = ensure_synthetic_av(
                Path(tmp) / "synth",
                workers=2,
                classes=10,
                clips_per_class=max(4, args.videos // 10),
                clips_per_group=1,
            )
        else:
            root = Path(args.root)
        source = TrimmedVideoDataModule(
            dataset="synthetic" if args.root is None else args.dataset, root=str(root), splits=args.splits
        )
        shards = Path(tmp) / "shards"
        start = time.perf_counter()
        manifest = write_shards(
            {s: source.records(s) for s in ("train", "test")},
            source.class_names,
            shards,
            num_workers=args.workers,
        )
        written = manifest.splits["train"]
        result: dict[str, Any] = {
            "videos": written["items"],
            "mib": round(written["bytes"] / 2**20, 1),
            "chunks": written["chunks"],
            "write_s": round(time.perf_counter() - start, 2),
            "workers": args.workers,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "matmul_peak_gflops": round(matmul_gflops(), 1),
        }
        print(
            f"{written['items']} videos, {result['mib']} MiB -> {written['chunks']} chunks in {result['write_s']} s; "
            f"workers {args.workers}, batch {args.batch_size}; matmul peak {result['matmul_peak_gflops']} GFLOP/s"
        )
        for workload in args.workloads:
            makers = loaders(workload, root, shards, args)
            times: dict[str, list[float]] = {name: [] for name in makers}
            for rep in range(args.repeats):
                order = list(makers) if rep % 2 == 0 else list(reversed(makers))
                for name in order:
                    seconds, items = epoch_seconds(makers[name])
                    times[name].append(seconds / items)
            per_file, sharded = statistics.median(times["per_file"]), statistics.median(times["sharded"])
            row = {
                name: {
                    "ms_per_item_median": round(1e3 * statistics.median(t), 3),
                    "ms_per_item_min": round(1e3 * min(t), 3),
                }
                for name, t in times.items()
            }
            row["ratio_median"] = round(per_file / sharded, 2)
            row["ratio_best"] = round(min(times["per_file"]) / min(times["sharded"]), 2)
            result[workload] = row
            print(
                f"{workload:5s} per-file {row['per_file']['ms_per_item_median']:8.2f} ms/item "
                f"(min {row['per_file']['ms_per_item_min']:.2f}), sharded {row['sharded']['ms_per_item_median']:8.2f} "
                f"(min {row['sharded']['ms_per_item_min']:.2f}); per-file/sharded {row['ratio_median']}x "
                f"(best {row['ratio_best']}x)"
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
