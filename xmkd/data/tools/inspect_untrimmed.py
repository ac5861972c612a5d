"""``xmkd data inspect charades|tsu|pkummd|multithumos``: one JSON summary of an untrimmed dataset.

What a researcher wants to know before training a detection head: how many videos per subset,
classes and segments, which class-id base the files were read with (0 or 1: Charades and TSU
number classes from 0, MultiTHUMOS and PKU-MMD from 1), how many segments the labelling rule clips (end past the duration) or
drops (start past the duration, zero length), how many videos have no action, and whether each
video has a feature file per modality with matching lengths. ``inspect_untrimmed`` returns the
summary as a dict; :func:`register` adds the subcommands to ``xmkd data inspect`` (whose parser
lives in :mod:`xmkd.data.tools.inspect`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmkd.data.datasets.untrimmed import feature_path, load_annotations, open_features, total_label_stats
from xmkd.data.readers.untrimmed import TSU_FPS, UntrimmedAnnotations
from xmkd.errors import BadInputError, ConfigError

DATASETS = ("charades", "tsu", "pkummd", "multithumos")


def _read(
    dataset: str,
    annotations: Sequence[str],
    classes_file: str | None,
    fps: float | None,
    split_file: str | None,
    num_classes: int | None,
    class_id_base: int | None = None,
) -> UntrimmedAnnotations:
    base = {"class_id_base": class_id_base}
    if dataset == "charades":
        if all(str(p).lower().endswith(".json") for p in annotations):
            return load_annotations("pdan_json", annotations, classes_file, num_classes or 157, **base)
        return load_annotations("charades_csv", annotations, classes_file, **base)
    if dataset == "multithumos":
        return load_annotations("multithumos", annotations, classes_file, num_classes, **base)
    if dataset == "tsu":
        return load_annotations("tsu", annotations, classes_file, num_classes, fps or TSU_FPS, **base)
    if dataset == "pkummd":
        return load_annotations("pkummd", annotations, classes_file, num_classes, fps, split_file, **base)
    raise ConfigError("dataset", f"expected one of {DATASETS}, got {dataset!r}")


def feature_summary(
    annotations: UntrimmedAnnotations, root: str | Path, modalities: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per modality: feature files found / missing / unreadable; videos whose modalities differ in T.

    Reads only the ``.npy`` headers (memory maps), so a full Charades feature folder takes seconds.
    """
    root = Path(root)
    if modalities is None:
        modalities = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not modalities:
        raise ConfigError("features", f"no modality folders (rgb/, flow/, ...) in {root}")
    per_modality: dict[str, dict[str, int]] = {
        m: {"found": 0, "missing": 0, "unreadable": 0} for m in modalities
    }
    mismatched: list[str] = []
    examples: list[str] = []
    dims: dict[str, set[int]] = {m: set() for m in modalities}
    for video in annotations.videos:
        lengths = {}
        for m in modalities:
            path = feature_path(root, m, video.video_id)
            if not path.is_file():
                per_modality[m]["missing"] += 1
                continue
            try:
                arr = open_features(path)
            except BadInputError as e:
                per_modality[m]["unreadable"] += 1
                if len(examples) < 5:
                    examples.append(str(e))
                continue
            per_modality[m]["found"] += 1
            lengths[m] = arr.shape[0]
            dims[m].add(int(arr.shape[1]))
        if len(set(lengths.values())) > 1:
            mismatched.append(video.video_id)
    return {
        "root": str(root),
        "modalities": per_modality,
        "feature_dims": {m: sorted(d) for m, d in dims.items()},
        "length_mismatched_videos": len(mismatched),
        "length_mismatched_examples": mismatched[:5],
        "unreadable_examples": examples,
    }


def inspect_untrimmed(
    dataset: str,
    annotations: str | Sequence[str],
    classes_file: str | None = None,
    features: str | Path | None = None,
    modalities: Sequence[str] | None = None,
    fps: float | None = None,
    split_file: str | None = None,
    num_classes: int | None = None,
    class_id_base: int | None = None,
) -> dict[str, Any]:
    """The summary ``xmkd data inspect <dataset>`` prints, as a dict.

    ``annotations``: Charades CSV(s) (with ``classes_file``) or its PDAN JSON; the TSU or
    MultiTHUMOS JSON; the PKU-MMD label folder (with ``split_file``). ``class_id_base``: the
    first class id in the files (``None``: the dataset's, reported as ``class_id_base``).
    """
    paths = [str(annotations)] if isinstance(annotations, (str, Path)) else [str(p) for p in annotations]
    ann = _read(dataset, paths, classes_file, fps, split_file, num_classes, class_id_base)
    counts = ann.counts()
    stats = total_label_stats(ann.videos)
    summary: dict[str, Any] = {
        "dataset": dataset,
        "annotations": paths,
        "videos": counts["videos"],
        "videos_per_subset": counts["videos_per_subset"],
        "classes": counts["classes"],
        "class_id_base": ann.class_id_base,
        "segments": counts["segments"],
        "segments_per_subset": counts["segments_per_subset"],
        "segments_clipped_to_duration": stats.clipped,
        "segments_outside_duration": stats.outside,
        "segments_zero_length": stats.zero_length,
        "videos_without_actions": stats.empty_videos,
        "durations_estimated": counts["durations_estimated"],
    }
    if features is not None:
        summary["features"] = feature_summary(ann, features, modalities)
    return summary


def _add_common(parser: argparse.ArgumentParser, dataset: str) -> None:
    what = {
        "charades": "Charades_v1_train.csv and/or Charades_v1_test.csv (with --classes), or the PDAN JSON",
        "tsu": "the TSU JSON (tsu_cs.json / tsu_cv.json; times in frames)",
        "pkummd": "the PKU-MMD label folder (<video>.txt files; with --split)",
        "multithumos": "the MultiTHUMOS PDAN-style JSON",
    }[dataset]
    parser.add_argument("--annotations", nargs="+", required=True, help=what)
    parser.add_argument(
        "--classes", default=None, help="class list (Charades_v1_classes.txt or one name per line)"
    )
    parser.add_argument("--features", default=None, help="feature root with <modality>/<video_id>.npy")
    parser.add_argument("--modalities", nargs="+", default=None, help="modality folders (default: all found)")
    parser.add_argument(
        "--num-classes", type=int, default=None, help="class count where the file does not fix it"
    )
    parser.add_argument(
        "--class-id-base",
        type=int,
        choices=(0, 1),
        default=None,
        help="first class id in the files (default: Charades and TSU 0, MultiTHUMOS and PKU-MMD 1)",
    )
    if dataset in ("tsu", "pkummd"):
        parser.add_argument(
            "--fps", type=float, default=None, help="annotation frame rate (default TSU 20, PKU-MMD 30)"
        )
    if dataset == "pkummd":
        parser.add_argument("--split", required=True, help="cross-subject.txt or cross-view.txt")


def run_inspect(args: argparse.Namespace) -> int:
    """Print one JSON summary; a bad file is reported by name on stderr with exit status 2."""
    try:
        summary = inspect_untrimmed(
            args.untrimmed_dataset,
            args.annotations,
            classes_file=args.classes,
            features=args.features,
            modalities=args.modalities,
            fps=getattr(args, "fps", None),
            split_file=getattr(args, "split", None),
            num_classes=args.num_classes,
            class_id_base=args.class_id_base,
        )
    except (BadInputError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``charades | tsu | pkummd | multithumos`` to ``xmkd data inspect``'s subparsers.

    Each sets ``func=run_inspect`` (``args.func(args) -> int``) and ``untrimmed_dataset``.
    """
    for dataset in DATASETS:
        parser = subparsers.add_parser(dataset, help=f"summarise {dataset} annotations (and features)")
        _add_common(parser, dataset)
        parser.set_defaults(func=run_inspect, untrimmed_dataset=dataset)
