"""Datasets by name: one entry per trimmed dataset and per untrimmed annotation format.

A trimmed dataset is a reader plus what the code around it needs to know: which inputs it takes
(split files, annotation CSVs, a class subset), its official folds, whether its files have video,
and the linear-evaluation defaults. The DataModule (:mod:`xmkd.data.datasets.trimmed`), ``xmkd data
inspect``, ``xmkd pipeline linear-eval`` and ``xmkd pipeline finetune`` look datasets up here,
so a new dataset is one reader and one :func:`register_trimmed` call::

    register_trimmed(TrimmedDataset(
        "something-something", lambda src: read_ssv2(src.annotation, src.root),
        "Something-Something v2 JSON", annotation=True))

Untrimmed annotation formats work the same way (:class:`UntrimmedFormat`, read by
:mod:`xmkd.data.datasets.untrimmed` and ``xmkd data inspect charades|tsu|...``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from xmkd.data.readers.esc50 import read_esc50
from xmkd.data.readers.trimmed import (
    ClipRecord,
    TrimmedAnnotations,
    read_class_list,
    read_csv_annotations,
    read_hmdb51,
    read_kinetics_csv,
    read_ucf101,
    synthetic_layout,
)
from xmkd.data.readers.untrimmed import (
    CLASS_ID_BASE,
    MULTITHUMOS_NUM_CLASSES,
    PKUMMD_FPS,
    TSU_FPS,
    UntrimmedAnnotations,
    merge_annotations,
    read_charades_csv,
    read_class_names,
    read_pdan_json,
    read_pkummd,
    read_tsu_json,
)
from xmkd.data.synthetic.av import ensure_synthetic_av
from xmkd.errors import ConfigError

SYNTHETIC_ROOT = "data/synth-av"

# ----------------------------------------------------------------------------------------------
# trimmed datasets


@dataclass(frozen=True)
class TrimmedSource:
    """Where a trimmed dataset lives: the options a user gives (DataModule keys, CLI flags)."""

    root: str
    splits: str | None = None
    annotation: str | None = None
    test_annotation: str | None = None
    fold: int = 1
    classes: Sequence[str] | str | None = None


@dataclass(frozen=True)
class TrimmedDataset:
    """One registered trimmed dataset.

    Args:
        name: the key in configs (``data.init_args.dataset``) and on the command line.
        read: source -> annotations whose records carry ``split``; ``train`` records train and
            every other record tests (see :func:`train_test`).
        help: one line for ``xmkd data inspect --help``.
        splits: takes a folder of split files (``--splits``); ``"optional"`` when it has a default.
        annotation: takes annotation CSVs (``annotation`` / ``test_annotation``, ``--csv``).
        classes: takes a class subset (``classes``, ``--classes``).
        folds: official folds; ``(1,)`` for a dataset with one train/test division.
        video: its files have a video stream (False: audio clips, linear evaluation only).
        prepare: ``(root, options) -> None`` writes a generated dataset on first use.
        default_root: the root when none is given (generated datasets).
        video_groups: ``(root, records) -> {video_id: group}``, coarser groups that linear
            evaluation's C-selection holds out whole, as the official splits do.
        linear_eval_train_clips / linear_eval_test_crops: linear-evaluation defaults.
        aliases: other names ``xmkd data inspect`` accepts.
    """

    name: str
    read: Callable[[TrimmedSource], TrimmedAnnotations]
    help: str
    splits: bool | Literal["optional"] = False
    annotation: bool = False
    classes: bool = False
    folds: tuple[int, ...] = (1,)
    video: bool = True
    prepare: Callable[[str, Mapping[str, Any]], Any] | None = None
    default_root: str | None = None
    video_groups: Callable[[str, Sequence[ClipRecord]], dict[str, int]] | None = None
    linear_eval_train_clips: int = 25
    linear_eval_test_crops: int = 3
    aliases: tuple[str, ...] = ()


TRIMMED_DATASETS: dict[str, TrimmedDataset] = {}


def register_trimmed(spec: TrimmedDataset) -> TrimmedDataset:
    """Add a dataset; a name already taken is an error (two readers for one name would be a bug)."""
    taken = {n for s in TRIMMED_DATASETS.values() for n in (s.name, *s.aliases)}
    clash = sorted(taken & {spec.name, *spec.aliases})
    if clash:
        raise ConfigError("dataset", f"{clash[0]!r} is already registered")
    TRIMMED_DATASETS[spec.name] = spec
    return spec


def trimmed_dataset(name: str, video: bool | None = None) -> TrimmedDataset:
    """The registered dataset ``name``; a clear error listing the registered ones otherwise
    (``video``: only those with / without a video stream qualify)."""
    spec = TRIMMED_DATASETS.get(name)
    if spec is None or (video is not None and spec.video != video):
        allowed = " | ".join(trimmed_names(video))
        raise ConfigError("dataset", f"must be one of {allowed}, got {name!r}")
    return spec


def trimmed_names(video: bool | None = None) -> tuple[str, ...]:
    """Registered names, in registration order (``video``: only those with / without video)."""
    return tuple(n for n, s in TRIMMED_DATASETS.items() if video is None or s.video == video)


def train_test(ann: TrimmedAnnotations) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """Records of split ``train`` train; every other record (``test``, ``val``...) tests."""
    return [r for r in ann.records if r.split == "train"], [r for r in ann.records if r.split != "train"]


def read_trimmed(name: str, source: TrimmedSource) -> TrimmedAnnotations:
    """Annotations of a registered dataset; names the option a dataset needs but did not get."""
    spec = trimmed_dataset(name)
    if spec.splits is True and source.splits is None:
        raise ConfigError("splits", f"{name} needs the folder of its split files")
    if spec.annotation and source.annotation is None:
        raise ConfigError("annotation", f"{name} needs the training annotation CSV")
    if source.classes is not None and not spec.classes:
        raise ConfigError("classes", f"class subsets do not apply to {name}")
    return spec.read(source)


def _relabel(records: Sequence[ClipRecord], split: str) -> list[ClipRecord]:
    """``records`` with split ``split`` where :func:`train_test` would otherwise misplace them."""
    out = []
    for r in records:
        misplaced = (r.split != "train") if split == "train" else (r.split == "train")
        out.append(dataclasses.replace(r, split=split) if misplaced else r)
    return out


def _class_subset(classes: Sequence[str] | str | None) -> list[str] | None:
    """A class list, a file of names (one a line) or comma-separated names."""
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        if os.path.isfile(classes):
            return read_class_list(classes)
        return [c.strip() for c in str(classes).split(",") if c.strip()]
    return list(classes)


def _read_official_lists(
    reader: Callable[..., TrimmedAnnotations],
) -> Callable[[TrimmedSource], TrimmedAnnotations]:
    return lambda src: reader(src.splits, src.root, fold=src.fold)


def synthetic_paths(root: str | os.PathLike) -> tuple[Path, Path]:
    """(the generated set's folder, its videos folder) from either of the two: configs name the
    set (``data/synth-av``), linear evaluation with explicit ``--splits`` names its videos."""
    videos, _ = synthetic_layout(root)
    if videos.is_dir():
        return Path(root), videos
    return Path(root).parent, Path(root)


def _read_synthetic(src: TrimmedSource) -> TrimmedAnnotations:
    folder, videos = synthetic_paths(src.root)
    return read_ucf101(src.splits or synthetic_layout(folder)[1], videos, fold=src.fold)


def _read_kinetics(src: TrimmedSource) -> TrimmedAnnotations:
    assert src.annotation is not None  # read_trimmed checks
    train = read_kinetics_csv(src.annotation, src.root, classes=_class_subset(src.classes))
    if src.test_annotation is None:  # one CSV: divided by its split column
        return train
    test = read_kinetics_csv(src.test_annotation, src.root, classes=train.class_names)
    records = _relabel(train.records, "train") + _relabel(test.records, "test")
    return TrimmedAnnotations(records, train.class_names, train.source, ("train", "test"))


def _read_csv(src: TrimmedSource) -> TrimmedAnnotations:
    assert src.annotation is not None  # read_trimmed checks
    train = read_csv_annotations(src.annotation, src.root, split="train")
    if src.test_annotation is None:
        return train
    test = read_csv_annotations(src.test_annotation, src.root, train.class_names, split="test")
    return TrimmedAnnotations(
        train.records + test.records, train.class_names, train.source, ("train", "test")
    )


_UCF_GROUP_RE = re.compile(r"_g(\d+)_c\d+$")


def ucf101_groups(root: str, records: Sequence[ClipRecord]) -> dict[str, int]:
    """UCF101's actor/scene group ``gXX`` of ``v_Class_gXX_cYY``."""
    out = {}
    for r in records:
        m = _UCF_GROUP_RE.search(r.video_id)
        if m:
            out[r.video_id] = int(m.group(1))
    return out


def synthetic_groups(root: str, records: Sequence[ClipRecord]) -> dict[str, int]:
    """The generator's scene group of each clip (``dataset.json`` of the set, see :func:`synthetic_paths`)."""
    info = synthetic_paths(root)[0] / "dataset.json"
    if not info.is_file():
        return {}
    return {Path(c["path"]).stem: int(c["group"]) for c in json.loads(info.read_text()).get("clips", [])}


register_trimmed(
    TrimmedDataset(
        "ucf101",
        _read_official_lists(read_ucf101),
        "UCF101: classInd.txt + trainlist0N/testlist0N.txt",
        splits=True,
        folds=(1, 2, 3),
        video_groups=ucf101_groups,
    )
)
register_trimmed(
    TrimmedDataset(
        "hmdb51",
        _read_official_lists(read_hmdb51),
        "HMDB51: <class>_test_splitN.txt",
        splits=True,
        folds=(1, 2, 3),
    )
)
register_trimmed(
    TrimmedDataset(
        "kinetics",
        _read_kinetics,
        "Kinetics CSV: label,youtube_id,time_start,time_end,split[,is_cc]",
        annotation=True,
        classes=True,
    )
)
register_trimmed(TrimmedDataset("csv", _read_csv, "generic CSV: path,label[,start_s,end_s]", annotation=True))
register_trimmed(
    TrimmedDataset(
        "synthetic",
        _read_synthetic,
        "the synthetic audio-visual set (UCF101-style lists)",
        splits="optional",
        folds=(1, 2, 3),
        prepare=lambda root, options: ensure_synthetic_av(root, **options),
        default_root=SYNTHETIC_ROOT,
        video_groups=synthetic_groups,
        linear_eval_train_clips=5,
        linear_eval_test_crops=1,
        aliases=("synth",),
    )
)
register_trimmed(
    TrimmedDataset(
        "esc50",
        lambda src: read_esc50(src.root, src.fold),
        "ESC-50: meta/esc50.csv + audio/*.wav",
        folds=(1, 2, 3, 4, 5),
        video=False,
        linear_eval_train_clips=100,
        linear_eval_test_crops=1,
    )
)


# ----------------------------------------------------------------------------------------------
# untrimmed annotation formats


@dataclass(frozen=True)
class UntrimmedSource:
    """The annotation options of :class:`~xmkd.data.datasets.untrimmed.UntrimmedVideoDataModule`."""

    paths: Sequence[str | Path]
    class_names: Sequence[str] | None = None  # from ``classes_file`` (not for charades_csv)
    classes_file: str | None = None
    num_classes: int | None = None
    annotation_fps: float | None = None
    split_file: str | None = None
    skeleton_dir: str | None = None
    class_id_base: int = 0


@dataclass(frozen=True)
class UntrimmedFormat:
    """One registered annotation format: its reader and the first class id its files use."""

    name: str
    read: Callable[[UntrimmedSource], UntrimmedAnnotations]
    class_id_base: int = 0
    help: str = ""


UNTRIMMED_FORMATS: dict[str, UntrimmedFormat] = {}


def register_untrimmed(spec: UntrimmedFormat) -> UntrimmedFormat:
    if spec.name in UNTRIMMED_FORMATS:
        raise ConfigError("format", f"{spec.name!r} is already registered")
    UNTRIMMED_FORMATS[spec.name] = spec
    return spec


def untrimmed_format(name: str) -> UntrimmedFormat:
    spec = UNTRIMMED_FORMATS.get(name)
    if spec is None:
        raise ConfigError("format", f"expected one of {', '.join(UNTRIMMED_FORMATS)}; got {name!r}")
    return spec


def _read_charades_csv(src: UntrimmedSource) -> UntrimmedAnnotations:
    if src.class_id_base != 0:
        raise ConfigError(
            "class_id_base", "charades_csv names classes c000.. after its class list; only 0 applies"
        )
    if src.classes_file is None:
        raise ConfigError("classes_file", "charades_csv needs Charades_v1_classes.txt")
    return read_charades_csv(list(src.paths), src.classes_file)


def _read_pdan(default_num_classes: int | None) -> Callable[[UntrimmedSource], UntrimmedAnnotations]:
    def read(src: UntrimmedSource) -> UntrimmedAnnotations:
        num_classes = src.num_classes if src.num_classes is not None else default_num_classes
        return merge_annotations(
            read_pdan_json(
                p,
                num_classes=None if src.class_names else num_classes,
                class_names=src.class_names,
                fps=src.annotation_fps,
                class_id_base=src.class_id_base,
            )
            for p in src.paths
        )

    return read


def _read_tsu(src: UntrimmedSource) -> UntrimmedAnnotations:
    return merge_annotations(
        read_tsu_json(
            p,
            fps=src.annotation_fps or TSU_FPS,
            num_classes=src.num_classes or 51,
            class_names=src.class_names,
            class_id_base=src.class_id_base,
        )
        for p in src.paths
    )


def _read_pkummd(src: UntrimmedSource) -> UntrimmedAnnotations:
    if src.split_file is None:
        raise ConfigError("split_file", "pkummd needs the split list (cross-subject.txt or cross-view.txt)")
    return read_pkummd(
        src.paths[0],
        src.split_file,
        fps=src.annotation_fps or PKUMMD_FPS,
        num_classes=src.num_classes or (len(src.class_names) if src.class_names else 51),
        class_names=src.class_names,
        skeleton_dir=src.skeleton_dir,
        class_id_base=src.class_id_base,
    )


register_untrimmed(
    UntrimmedFormat("charades_csv", _read_charades_csv, CLASS_ID_BASE["charades"], "Charades_v1_*.csv")
)
register_untrimmed(
    UntrimmedFormat("pdan_json", _read_pdan(None), CLASS_ID_BASE["charades"], "PDAN-style JSON (Charades)")
)
register_untrimmed(
    UntrimmedFormat(
        "multithumos",
        _read_pdan(MULTITHUMOS_NUM_CLASSES),
        CLASS_ID_BASE["multithumos"],
        "PDAN-style JSON, class ids 1..65",
    )
)
register_untrimmed(UntrimmedFormat("tsu", _read_tsu, CLASS_ID_BASE["tsu"], "TSU JSON (times in frames)"))
register_untrimmed(
    UntrimmedFormat("pkummd", _read_pkummd, CLASS_ID_BASE["pkummd"], "PKU-MMD label folder + split list")
)
register_untrimmed(
    UntrimmedFormat(
        "synthetic", _read_pdan(None), CLASS_ID_BASE["charades"], "the synthetic generator's JSON"
    )
)


def read_untrimmed(
    format: str,
    annotations: str | Sequence[str],
    classes_file: str | None = None,
    num_classes: int | None = None,
    annotation_fps: float | None = None,
    split_file: str | None = None,
    skeleton_dir: str | None = None,
    class_id_base: int | None = None,
) -> UntrimmedAnnotations:
    """Annotations of a registered format.

    ``annotations``: CSV file(s) for ``charades_csv``; the JSON for ``pdan_json``/``multithumos``/
    ``tsu``/``synthetic``; the label folder for ``pkummd``. ``class_id_base``: the first class id
    in the files (0 or 1); ``None`` takes the format's. The result's ``class_id_base`` says which
    was used.
    """
    spec = untrimmed_format(format)
    base = spec.class_id_base if class_id_base is None else class_id_base
    if base not in (0, 1) or type(base) is not int:
        raise ConfigError("class_id_base", f"must be 0 or 1 (or null for the format's default), got {base!r}")
    paths = [annotations] if isinstance(annotations, (str, Path)) else list(annotations)
    if not paths:
        raise ConfigError("annotations", "no annotation file given")
    names = read_class_names(classes_file) if classes_file and format != "charades_csv" else None
    source = UntrimmedSource(
        paths,
        names,
        classes_file,
        num_classes,
        annotation_fps,
        split_file,
        skeleton_dir,
        base,
    )
    return spec.read(source)


__all__ = [
    "SYNTHETIC_ROOT",
    "TRIMMED_DATASETS",
    "UNTRIMMED_FORMATS",
    "TrimmedDataset",
    "TrimmedSource",
    "UntrimmedFormat",
    "UntrimmedSource",
    "read_trimmed",
    "read_untrimmed",
    "register_trimmed",
    "register_untrimmed",
    "train_test",
    "trimmed_dataset",
    "trimmed_names",
    "untrimmed_format",
]
