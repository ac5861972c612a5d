"""``xmkd data shard``: write a trimmed dataset as litdata shards (encoded clips + labels + manifest).

Reads the dataset with the DataModule's own readers (``--dataset``, ``--root``, ``--splits``,
``--annotation``...), then :func:`xmkd.data.datasets.shards.write_shards`. Train with the result through
``data.shards=<out>`` (see :mod:`xmkd.data.datasets.shards`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from xmkd.data.datasets.shards import DEFAULT_CHUNK_BYTES, MANIFEST, write_shards
from xmkd.data.datasets.trimmed import TrimmedVideoDataModule


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="synthetic", help="ucf101 | hmdb51 | kinetics | csv | synthetic")
    parser.add_argument("--root", default=None, help="the folder of the videos (synthetic: data/synth-av)")
    parser.add_argument("--splits", default=None, help="folder of the split files (UCF101/HMDB51)")
    parser.add_argument("--annotation", default=None, help="training CSV (kinetics, csv)")
    parser.add_argument("--test-annotation", default=None, help="test CSV (kinetics, csv)")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--classes", default=None, help="Kinetics class subset: a file of names")
    parser.add_argument("--out", required=True, help="the shard folder to write (must not exist or be empty)")
    parser.add_argument("--split", nargs="+", default=["train", "test"], choices=["train", "test"])
    parser.add_argument("--chunk-bytes", default=DEFAULT_CHUNK_BYTES, help="chunk size, e.g. 64MB")
    parser.add_argument("--missing", default="error", choices=["error", "skip"])
    parser.add_argument("--on-bad-input", default="error", choices=["error", "skip"])
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="reading processes")


def run(args: argparse.Namespace) -> int:
    dm = TrimmedVideoDataModule(
        dataset=args.dataset,
        root=args.root,
        splits=args.splits,
        annotation=args.annotation,
        test_annotation=args.test_annotation,
        fold=args.fold,
        classes=args.classes,
    )
    if args.dataset == "synthetic" and not (Path(dm.root) / "dataset.json").is_file():
        dm.prepare_data()  # no synthetic set there yet: generate the default one
    records = {split: dm.records(split) for split in args.split}
    source = {
        k: getattr(args, k) for k in ("root", "splits", "annotation", "test_annotation", "fold", "classes")
    }
    source["root"] = dm.root
    manifest = write_shards(
        records,
        dm.class_names,
        args.out,
        dataset=args.dataset,
        source=source,
        chunk_bytes=args.chunk_bytes,
        missing=args.missing,
        on_bad_input=args.on_bad_input,
        num_workers=max(0, args.workers),
    )
    for split, entry in manifest.splits.items():
        print(
            f"{split}: {entry['items']} of {entry['listed']} videos, {entry['bytes'] / 2**20:.1f} MiB in "
            f"{entry['chunks']} chunks -> {manifest.root / split}"
            + (
                f" ({len(entry['missing'])} missing, {len(entry['failures'])} unreadable: see manifest)"
                if entry["missing"] or entry["failures"]
                else ""
            )
        )
    print(f"manifest: {manifest.root / MANIFEST}; train with data.shards={manifest.root}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xmkd.data.tools.shard ...`` (the same as ``xmkd data shard ...``)."""
    parser = argparse.ArgumentParser(prog="xmkd data shard", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["add_arguments", "main", "run"]
