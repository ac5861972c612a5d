"""``xmkd data inspect <dataset> ...``: what a dataset on disk holds, as one JSON object.

Reads the annotations with the same readers the DataModules use, counts per split the videos
listed and the ones found on disk, decodes ``--decode N`` of the found videos (their first frames
and their last second, checking that frames come back in time order, that the file is not
truncated and that an audio track, if any, decodes) and prints::

    {"dataset": ..., "num_classes": int, "labelled": bool,
     "splits": {"train": {"listed": int, "found": int, "missing_examples": [path, ...]}, ...},
     "decoded": [{"video_id", "split", "path", "frames_decoded", "fps", "fps_source", "num_frames",
                  "has_audio", "in_time_order", "duration_s", "last_second_from_s", "shape"}, ...],
     "failures": [{"path", "reason"}, ...]}

Exit status: 0 when nothing failed, 1 when a decoded video failed, 2 when the annotations (or
options) are unusable (the error, naming the file and line, goes to stderr).

Examples::

    xmkd data inspect ucf101 --root UCF-101 --splits ucfTrainTestlist --fold 1 --decode 2
    xmkd data inspect hmdb51 --root hmdb51 --splits testTrainMulti_7030_splits --fold 1
    xmkd data inspect kinetics --root k400/val --csv kinetics-400_val.csv [--classes ks.txt]
    xmkd data inspect csv --root videos --csv train.csv [--test-csv test.csv]
    xmkd data inspect synth [--root data/synth-av]

Every video dataset in :mod:`xmkd.data.registry` gets a subcommand with the options its entry
takes (``--root``; ``--splits``/``--fold`` for split files; ``--csv``/``--test-csv`` for CSVs;
``--classes`` for class subsets).

Extension contract (untrimmed datasets live in ``xmkd.data.tools.inspect_untrimmed``): if that module
is importable, :func:`add_arguments` calls its ``register(subparsers)``, which adds one subparser
per dataset (``subparsers.add_parser(name, ...)``, with its own options) and sets on each either
``set_defaults(func=fn)`` with ``fn(args) -> int`` that prints the JSON object itself and returns
the exit status, or ``set_defaults(inspect=fn)`` with ``fn(args) -> dict`` returning the object for
:func:`run` to print (raising :class:`xmkd.errors.XmkdError` for unusable input). Use the same
top-level keys where they apply: ``num_classes``, ``splits``, ``decoded``, ``failures``.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xmkd.data.io.video_io import probe, read_audio, read_clip  # PyAV import only when decoding
from xmkd.data.readers.trimmed import ClipRecord, TrimmedAnnotations, find_existing
from xmkd.data.registry import TRIMMED_DATASETS, TrimmedDataset, TrimmedSource, read_trimmed
from xmkd.errors import BadInputError, ConfigError, Failure, MediaError, XmkdError

DEFAULT_DECODE_FRAMES = 16
MISSING_EXAMPLES = 3

Inspector = Callable[[argparse.Namespace], dict[str, Any]]


# ----------------------------------------------------------------------------------------------
# pure parts


def split_counts(records: Sequence[ClipRecord], exists: Sequence[bool]) -> dict[str, dict[str, Any]]:
    """Per split: how many videos are listed, how many exist, and the first few missing paths."""
    out: dict[str, dict[str, Any]] = {}
    for record, ok in zip(records, exists):
        entry = out.setdefault(record.split or "all", {"listed": 0, "found": 0, "missing_examples": []})
        entry["listed"] += 1
        if ok:
            entry["found"] += 1
        elif len(entry["missing_examples"]) < MISSING_EXAMPLES:
            entry["missing_examples"].append(record.path)
    return out


def choose_for_decoding(records: Sequence[ClipRecord], exists: Sequence[bool], n: int) -> list[ClipRecord]:
    """``n`` found records, taken in turn from each split (so train and test both get decoded)."""
    by_split: dict[str, list[ClipRecord]] = {}
    for record, ok in zip(records, exists):
        if ok:
            by_split.setdefault(record.split, []).append(record)
    queues = [list(reversed(v)) for v in by_split.values()]
    chosen: list[ClipRecord] = []
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return chosen


def decode_check(record: ClipRecord, num_frames: int = DEFAULT_DECODE_FRAMES) -> dict[str, Any]:
    """Decode the first ``num_frames`` frames and the last second at the native rate, and 1 s of
    audio (if any).

    The last second is read too because a truncated file decodes fine from its start: reading only
    the first frames passed a 30%-truncated mp4 as good. Raises :class:`~xmkd.errors.MediaError`
    when the file does not decode, is truncated, or its frames come back out of presentation order.
    """
    info = probe(record.path)
    start = record.start_s or 0.0
    end = min(record.end_s, info.duration_s) if record.end_s is not None else info.duration_s
    if info.data_end_s is not None and info.data_end_s < end:
        raise MediaError(
            record.path, f"truncated: data ends at {info.data_end_s:.2f} s of {info.duration_s:.2f} s"
        )
    n = max(1, min(num_frames, info.num_frames))
    clip, pts = read_clip(record.path, start, n, None, return_pts=True)
    _check_order(record.path, pts, "first frames")
    n_last = max(1, min(round(info.fps), info.num_frames))
    last_start = max(start, end - n_last / info.fps)
    _, last_pts = read_clip(record.path, last_start, n_last, None, return_pts=True)
    _check_order(record.path, last_pts, "last second")
    result: dict[str, Any] = {
        "video_id": record.video_id,
        "split": record.split,
        "path": record.path,
        "frames_decoded": int(clip.shape[0]),  # decoded by the check, not the clip's length (num_frames)
        "fps": round(info.fps, 3),
        "fps_source": "timestamps" if info.fps_from_timestamps else "container",
        "num_frames": info.num_frames,
        "has_audio": info.has_audio,
        "in_time_order": True,
        "duration_s": round(info.duration_s, 3),
        "last_second_from_s": round(last_start, 3),
        "shape": list(clip.shape),
    }
    if info.has_audio:
        audio = read_audio(record.path, start, min(1.0, info.duration_s))
        result["audio_samples_16k"] = int(audio.shape[0])
    return result


def _check_order(path: str, pts: Any, what: str) -> None:
    """Frames read at the native rate must come back in increasing pts (looped padding excluded)."""
    values = [float(p) for p in pts]
    # read_clip pads a clip that runs past the end by looping from its first frame: stop there
    head = values[: next((i for i in range(1, len(values)) if values[i] == values[0]), len(values))]
    if any(b <= a for a, b in itertools.pairwise(head)):
        raise MediaError(path, f"frames out of time order ({what}): pts {[round(v, 3) for v in head]}")


def inspect_annotations(ann: TrimmedAnnotations, dataset: str, decode: int, frames: int) -> dict[str, Any]:
    """The JSON object for a trimmed dataset already read."""
    exists = find_existing([r.path for r in ann.records])
    decoded: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for record in choose_for_decoding(ann.records, exists, decode):
        try:
            decoded.append(decode_check(record, frames))
        except BadInputError as e:
            failures.append(Failure.from_error(e).as_dict())
    return {
        "dataset": dataset,
        "source": ann.source,
        "num_classes": ann.num_classes,
        "labelled": ann.labelled,  # False: an unlabelled file (predict and feature extraction only)
        "splits": split_counts(ann.records, exists),
        "decoded": decoded,
        "failures": failures,
    }


# ----------------------------------------------------------------------------------------------
# per-dataset commands


def inspect_registered(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON object of the registered trimmed dataset ``args.registered``, read from the options
    its entry takes (:mod:`xmkd.data.registry`)."""
    if not Path(args.root).is_dir():  # else every listed video would just count as missing
        raise ConfigError("root", f"{args.root} is not a folder")
    source = TrimmedSource(
        args.root,
        getattr(args, "splits", None),
        getattr(args, "csv", None),
        getattr(args, "test_csv", None),
        getattr(args, "fold", 1),
        getattr(args, "classes", None),
    )
    ann = read_trimmed(args.registered, source)
    return inspect_annotations(ann, args.dataset, args.decode, args.frames)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decode", type=int, default=0, metavar="N", help="decode N found videos (default 0)"
    )
    parser.add_argument(
        "--frames", type=int, default=DEFAULT_DECODE_FRAMES, help="frames decoded per video (native rate)"
    )


def add_dataset_parser(sub: argparse._SubParsersAction, spec: TrimmedDataset) -> argparse.ArgumentParser:
    """The subcommand of one registered trimmed dataset: the options its entry takes."""
    p = sub.add_parser(spec.name, aliases=list(spec.aliases), help=spec.help)
    if spec.default_root is not None:
        p.add_argument(
            "--root", default=spec.default_root, help=f"the generated set (default {spec.default_root})"
        )
    else:
        p.add_argument("--root", required=True, help="folder of the videos (<Class>/<file> or flat)")
    if spec.splits:
        optional = spec.splits == "optional"
        help = "folder of the split files" + (" (default: the dataset's own)" if optional else "")
        p.add_argument("--splits", required=not optional, default=None, help=help)
    if len(spec.folds) > 1:
        p.add_argument("--fold", type=int, default=spec.folds[0], choices=spec.folds)
    if spec.annotation:
        p.add_argument("--csv", required=True, help="annotation CSV (training)")
        p.add_argument("--test-csv", dest="test_csv", help="test CSV (same classes)")
    if spec.classes:
        p.add_argument(
            "--classes", help="class subset: a file with one name per line, or comma-separated names"
        )
    _common(p)
    p.set_defaults(inspect=inspect_registered, registered=spec.name)
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One subparser per registered trimmed video dataset; ``xmkd.data.tools.inspect_untrimmed.register``
    adds the untrimmed ones."""
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for spec in TRIMMED_DATASETS.values():
        if spec.video:
            add_dataset_parser(sub, spec)

    try:
        untrimmed = importlib.import_module("xmkd.data.tools.inspect_untrimmed")
    except ModuleNotFoundError as e:
        if e.name != "xmkd.data.tools.inspect_untrimmed":
            raise  # the module exists but is broken: say so instead of hiding its datasets
    else:
        untrimmed.register(sub)


def run(args: argparse.Namespace) -> int:
    """Print the JSON object; 0 = all good, 1 = some decoded video failed, 2 = unusable input."""
    inspect: Inspector | None = getattr(args, "inspect", None)
    if inspect is None:  # an extension that prints its own JSON (see the contract above)
        return int(args.func(args))
    try:
        result = inspect(args)
    except XmkdError as e:
        print(f"xmkd data inspect {args.dataset}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 1 if result.get("failures") else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xmkd.data.tools.inspect ...`` (the same as ``xmkd data inspect ...``)."""
    parser = argparse.ArgumentParser(prog="xmkd data inspect", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "add_arguments",
    "choose_for_decoding",
    "decode_check",
    "inspect_annotations",
    "run",
    "split_counts",
]
