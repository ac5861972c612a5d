"""Sharded trimmed datasets: encoded clips + labels in litdata chunks, streamed with exact resume.

Kinetics-scale pretraining (240k videos, many nodes) cannot open one file per item on a shared
filesystem: the metadata server, not the decoder, becomes the bottleneck. ``xmkd data shard``
packs a trimmed dataset's files, byte for byte as they are on disk (the original compressed
video, never decoded frames), with their labels into a few large chunk files per split; training
streams the chunks and decodes each clip in memory with the same decoder, the same transforms
and the same per-item random seeds as per-file reading, so a sharded run sees the very same
samples.

Engine: litdata (``StreamingDataset`` / ``StreamingDataLoader``, Lightning AI's own), chosen over
WebDataset because it gives, out of the box, the two things exact training needs:

- exact mid-epoch resume: ``StreamingDataLoader.state_dict`` records how many samples were
  yielded and the epoch; Lightning saves it in the checkpoint (the loader is ``_Stateful``) and a
  resumed run replays the same shuffled order from the next batch. WebDataset's loaders have no
  state; their resume is approximate (a resampled or skipped-ahead stream).
- DDP sharding per item, not per tar file: each rank (and each DataLoader worker) gets a disjoint
  set of item intervals of the shuffled chunk order, so no item is read twice in an epoch across
  ranks. Under DDP litdata's ``drop_last`` (on by default there) gives every rank the same number
  of whole batches, leaving out fewer than ``world_size x batch_size`` items an epoch (per-file
  reading pads by repeating items, then drops each rank's partial batch); ``drop_last: False``
  reads every item exactly once, with ranks possibly one batch apart. WebDataset splits by shard
  file, so ranks get unequal item counts unless the shards divide evenly, and has no state.

Layout written by :func:`write_shards`::

    <out>/manifest.json          dataset, class names, per split: items, bytes, missing, failures
    <out>/<split>/index.json     litdata's chunk index
    <out>/<split>/chunk-*.bin    items {"index", "video" (the file's bytes), "record" (path, label,
                                 video_id, start/end as JSON), "label"}, in the split's order
    <out>/<split>/records.json   the split's records (what the evaluation set and counts need
                                 without reading the chunks)

Order and randomness. An item's stored ``index`` is its position in the split, i.e. the index a
per-file :class:`~xmkd.data.datasets.trimmed.TrimmedVideoDataset` of the same records gives it (one clip
per video); its augmentation runs under :func:`~xmkd.fault.item_seed` ``(seed, epoch, index)``,
exactly as :class:`~xmkd.fault.ResumableDataLoader` runs it. The epoch's order is litdata's:
chunks shuffled by ``(seed, epoch)``, items shuffled within windows of a chunk, so reads stay
sequential (an order of its own, not the per-file loader's global permutation).

Evaluation splits are read map-style (:class:`ShardReader` as the dataset's ``media``): every
clip and crop of every video in order, through the usual evaluation loader, one chunk after the
other. ``xmkd data shard`` (:mod:`xmkd.data.tools.shard`) writes shards from any trimmed dataset.

Bad input: at write time a listed file absent on disk follows ``missing`` and a file that does
not open as a video (probed in memory) follows ``on_bad_input``; both are named in the error
or listed in the manifest. While streaming, an item that fails to decode is fatal or, with
``on_bad_input: skip``, dropped from its batch (a replacement from another chunk would break
the sequential read), its failure travelling under ``failures``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# litdata asks PyPI for a newer release whenever a dataset is made (a 30 s timeout): never from a
# training node, which often has no route out. Set before the import, which reads it.
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")

import litdata
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming import Cache
from torch.utils.data import DataLoader, Dataset

from xmkd.data.datasets.bad_input import dropped_item
from xmkd.data.io.video_io import EncodedMedia, probe
from xmkd.data.readers.trimmed import ClipRecord, find_existing
from xmkd.errors import BadInputError, ConfigError, Failure, MediaError, MissingAudioError
from xmkd.fault import call_seeded, default_seed, item_seed
from xmkd.runs import atomic_write_text


class TrimmedVideoDataset(Protocol):
    """What the stream needs of :class:`xmkd.data.datasets.trimmed.TrimmedVideoDataset` (which imports this
    module; a protocol keeps the import one-way)."""

    missing_audio: Any
    on_bad_input: Any
    reports_failures: bool

    def load(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...


log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RECORDS = "records.json"
SHARD_FORMAT = "xmkd-shards"
SHARD_VERSION = 1
DEFAULT_CHUNK_BYTES = "64MB"  # litdata's advice: large enough for sequential reads, small enough to shuffle

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ShardManifest",
    "ShardReader",
    "ShardStream",
    "load_policy",
    "read_manifest",
    "read_shard_records",
    "shard_loader",
    "write_shards",
    "write_split",
]


# ----------------------------------------------------------------------------------------------
# manifest and records


@dataclass(frozen=True)
class ShardManifest:
    """What ``<out>/manifest.json`` says: the dataset, its class names and, per split, what was written."""

    root: Path
    dataset: str
    class_names: list[str]
    splits: dict[str, dict[str, Any]]

    def split_dir(self, split: str) -> Path:
        if split not in self.splits:
            raise ConfigError(
                "shards",
                f"{self.root / MANIFEST} has no {split!r} split (has {', '.join(self.splits) or 'none'})",
            )
        return self.root / split


def read_manifest(path: str | os.PathLike) -> ShardManifest:
    """The manifest of the shard folder ``path`` (or of ``path`` itself if it names the file)."""
    p = Path(path)
    file = p if p.name == MANIFEST else p / MANIFEST
    if not file.is_file():
        raise ConfigError(
            "shards", f"{file} not found: not a shard folder (write one with `xmkd data shard`)"
        )
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise BadInputError(file, f"unreadable shard manifest ({e})") from None
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found != SHARD_FORMAT:
        raise BadInputError(file, f"not an xmkd shard manifest (format {found!r})")
    if data.get("version") != SHARD_VERSION:
        raise BadInputError(
            file, f"shard format version {data.get('version')}, this xmkd reads {SHARD_VERSION}"
        )
    for key in ("dataset", "class_names", "splits"):
        if key not in data:
            raise BadInputError(file, f"manifest lacks {key!r}")
    return ShardManifest(file.parent, str(data["dataset"]), list(data["class_names"]), dict(data["splits"]))


def _record_row(r: ClipRecord) -> list[Any]:
    return [r.path, int(r.label), r.video_id, r.start_s, r.end_s, r.split]


def read_shard_records(manifest: ShardManifest, split: str) -> list[ClipRecord]:
    """The records of ``split`` in the order they were written (stored ``index`` = position)."""
    file = manifest.split_dir(split) / RECORDS
    try:
        rows = json.loads(file.read_text())
        return [_record_from_row(row) for row in rows]
    except (OSError, ValueError, TypeError) as e:
        raise BadInputError(file, f"unreadable shard records ({e})") from None


# ----------------------------------------------------------------------------------------------
# writing


class _EncodedFiles(Dataset):
    """Item i: the bytes of records[i] after a probe in memory, or the failure (read in DataLoader workers)."""

    def __init__(self, records: Sequence[ClipRecord]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, bytes | None, dict[str, str] | None]:
        record = self.records[i]
        try:
            try:
                data = Path(record.path).read_bytes()
            except OSError as e:
                raise MediaError(record.path, f"cannot read ({e.strerror or e})") from None
            probe(EncodedMedia(record.path, data))  # a file that does not open fails here, by name
        except BadInputError as e:
            return i, None, Failure.from_error(e).as_dict()
        return i, data, None


def _item(index: int, record: ClipRecord, data: bytes) -> dict[str, Any]:
    return {
        "index": index,
        # litdata guesses a field's type from its value: bytes that look like an mp4, or a string
        # naming an existing video file, become "video" fields it decodes itself (torchcodec) on
        # reading. So the bytes go as a uint8 array and the record as one JSON string.
        "video": np.frombuffer(data, dtype=np.uint8),
        "record": json.dumps(_record_row(record)),
        "label": int(record.label),
    }


def write_split(
    records: Sequence[ClipRecord],
    out_dir: str | os.PathLike,
    chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
    missing: str = "error",
    on_bad_input: str = "error",
    num_workers: int = 0,
) -> dict[str, Any]:
    """Write one split's files as chunks in ``out_dir``; returns its manifest entry.

    The files are read and probed in ``num_workers`` processes and written in the records' order,
    so the stored ``index`` of an item is its position among the written records.
    """
    for key, value in (("missing", missing), ("on_bad_input", on_bad_input)):
        if value not in ("error", "skip"):
            raise ConfigError(key, f"must be error | skip, got {value!r}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError("out", f"{out} exists and is not empty; shards are never written over")
    out.mkdir(parents=True, exist_ok=True)
    records = list(records)
    exists = find_existing([r.path for r in records])
    absent = [r.path for r, ok in zip(records, exists) if not ok]
    if absent and missing == "error":
        raise MediaError(
            absent[0],
            f"{len(absent)} of {len(records)} listed videos are missing on disk; first: {', '.join(absent[:5])} "
            "(--missing skip leaves them out)",
        )
    present = [r for r, ok in zip(records, exists) if ok]
    cache = Cache(str(out), chunk_bytes=chunk_bytes)
    loader = DataLoader(
        _EncodedFiles(present), batch_size=None, num_workers=num_workers, collate_fn=lambda x: x
    )
    written: list[ClipRecord] = []
    failures: list[dict[str, str]] = []
    total = 0
    for i, data, failure in loader:
        if failure is not None:
            if on_bad_input != "skip":
                raise MediaError(failure["path"], f"{failure['reason']} (--on-bad-input skip leaves it out)")
            log.warning("skipped %s: %s", failure["path"], failure["reason"])
            failures.append(failure)
            continue
        cache[len(written)] = _item(len(written), present[i], data)
        written.append(present[i])
        total += len(data)
    if not written:
        raise ConfigError(
            "records", f"nothing to write to {out}: all {len(records)} listed videos failed or are missing"
        )
    cache.done()
    cache.merge()
    atomic_write_text(out / RECORDS, json.dumps([_record_row(r) for r in written]))
    return {
        "items": len(written),
        "listed": len(records),
        "bytes": total,
        "chunks": sum(1 for f in out.iterdir() if f.suffix == ".bin"),
        "missing": absent,
        "failures": failures,
    }


def write_shards(
    splits: Mapping[str, Sequence[ClipRecord]],
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    dataset: str = "",
    source: Mapping[str, Any] | None = None,
    chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
    missing: str = "error",
    on_bad_input: str = "error",
    num_workers: int = 0,
) -> ShardManifest:
    """Write each split (name -> records) under ``out_dir/<split>`` and the manifest; empty splits are left out."""
    out = Path(out_dir)
    entries = {}
    for name, records in splits.items():
        if records:
            entries[name] = write_split(records, out / name, chunk_bytes, missing, on_bad_input, num_workers)
    if not entries:
        raise ConfigError("split", "no split has any videos listed")
    payload = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "engine": f"litdata {litdata.__version__}",
        "dataset": dataset,
        "source": dict(source or {}),
        "class_names": list(class_names),
        "splits": entries,
    }
    atomic_write_text(out / MANIFEST, json.dumps(payload, indent=2) + "\n")
    return read_manifest(out)


# ----------------------------------------------------------------------------------------------
# reading


def _as_bytes(field: Any) -> bytes:
    return field.tobytes() if isinstance(field, np.ndarray) else bytes(field)


def _record_of(item: Mapping[str, Any]) -> ClipRecord:
    return _record_from_row(json.loads(item["record"]))


def _record_from_row(row: Sequence[Any]) -> ClipRecord:
    path, label, video_id, start_s, end_s, split = row
    return ClipRecord(str(path), int(label), str(video_id), start_s, end_s, str(split))


def load_policy(clips: TrimmedVideoDataset, load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``load()`` under ``clips``' bad-input policy: the sample, or a dropped marker carrying the failure."""
    try:
        sample = load()
    except MissingAudioError as e:
        if not (clips.missing_audio == "skip" or clips.on_bad_input == "skip"):
            raise
        return dropped_item([Failure.from_error(e).as_dict()])
    except BadInputError as e:
        if clips.on_bad_input != "skip":
            raise
        return dropped_item([Failure.from_error(e).as_dict()])
    if clips.reports_failures:
        sample["failures"] = []
    return sample


class ShardStream(StreamingDataset):
    """A split's chunks as litdata's iterable stream, each item decoded like per-file reading.

    ``clips`` (a :class:`TrimmedVideoDataset` without records) holds the decoding and the
    transform: item ``index`` of epoch ``e`` is ``clips.load(record, media=its bytes)`` under the
    RNG seed ``item_seed(seed, e, index)``. litdata shuffles by ``(seed, epoch)`` and splits the
    items over ranks and workers; ``e`` is litdata's ``current_epoch - 1`` (it counts from 1).
    ``kwargs`` go to ``StreamingDataset`` (``drop_last``, ``cache_dir``, ``max_cache_size``...).
    """

    def __init__(
        self,
        split_dir: str,
        clips: TrimmedVideoDataset,
        seed: int | None = None,
        shuffle: bool = True,
        **kwargs: Any,
    ) -> None:
        seed = default_seed() if seed is None else int(seed)
        super().__init__(split_dir, shuffle=shuffle, seed=seed, **kwargs)
        self.clips = clips
        self.data_seed = seed

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        if not isinstance(item, Mapping):  # slices (lists of raw items) are not decoded
            return item
        record = _record_of(item)
        media = EncodedMedia(record.path, _as_bytes(item["video"]))
        seed = item_seed(self.data_seed, max(0, self.current_epoch - 1), int(item["index"]))
        return call_seeded(seed, load_policy, self.clips, lambda: self.clips.load(record, 0, 0, media))


class ShardReader:
    """A split's encoded videos by record, read at random from its chunks (evaluation).

    ``reader(record)`` is the :class:`EncodedMedia` of that record: what
    :class:`~xmkd.data.datasets.trimmed.TrimmedVideoDataset` decodes when given ``media=reader``. The
    evaluation visits every clip and crop of one video in a row, then the next video of the same
    chunk, so the reads are sequential and the last video's bytes are kept.
    """

    def __init__(self, split_dir: str | os.PathLike, records: Sequence[ClipRecord]) -> None:
        self.split_dir = str(split_dir)
        self._position = {r.path: i for i, r in enumerate(records)}
        self._reader: StreamingDataset | None = None
        self._last: tuple[int, EncodedMedia] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"], state["_last"] = None, None  # each DataLoader worker opens its own
        return state

    def __call__(self, record: ClipRecord) -> EncodedMedia:
        index = self._position.get(record.path)
        if index is None:
            raise MediaError(record.path, f"not in the shards at {self.split_dir}")
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        if self._reader is None:
            self._reader = StreamingDataset(self.split_dir)
        item = self._reader[index]
        if int(item["index"]) != index:
            raise MediaError(
                self.split_dir, f"shard item {index} holds index {item['index']}: chunks and records disagree"
            )
        media = EncodedMedia(record.path, _as_bytes(item["video"]))
        self._last = (index, media)
        return media


def shard_loader(
    stream: Any,
    batch_size: int,
    num_workers: int = 0,
    collate_fn: Callable[..., Any] | None = None,
    pin_memory: bool = False,
    epoch: int = 0,
) -> Any:
    """litdata's ``StreamingDataLoader`` over ``stream``; its next iteration is epoch ``epoch`` (0-based).

    Lightning saves and restores its ``state_dict`` (samples yielded, epoch) with the checkpoint;
    ``epoch`` aligns a fresh loader (a run resumed at an epoch boundary) with the trainer's epoch.
    """
    loader = StreamingDataLoader(
        stream, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory
    )
    loader.current_epoch = int(epoch)  # __iter__ adds 1: litdata counts epochs from 1
    return loader
