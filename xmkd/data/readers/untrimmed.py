"""Readers for untrimmed-video action detection annotations, read as they ship on disk.

Every reader returns one in-memory form, :class:`UntrimmedAnnotations` (a list of
:class:`UntrimmedVideo` plus class names), with all times in SECONDS and 0-based class ids.

Class ids: each format's files number classes from a base, 0 or 1, which readers subtract. The
defaults (:data:`CLASS_ID_BASE`) were checked against the official files and the authors'
loaders: Charades 0 (``c000``..``c156``; its PDAN JSON holds 0..156), TSU 0 (``tsu_cs.json`` holds
0..50), MultiTHUMOS 1 (its PDAN/super-events JSON holds 1..65 and their loaders subtract 1),
PKU-MMD 1 (``Label/*.txt`` hold 1..51). An id outside ``base..base + num_classes - 1`` is an error
naming the file, the video and the base, never a silent shift of every label by one column.

- Charades: ``Charades_v1_train.csv`` / ``Charades_v1_test.csv`` (columns id, subject, scene,
  quality, relevance, verified, script, objects, descriptions, actions, length; ``actions`` like
  ``c092 11.90 21.20;c147 0.00 12.60`` or empty) with ``Charades_v1_classes.txt``
  (``c000 Holding some clothes``) -> :func:`read_charades_csv`, :func:`read_charades_classes`.
- PDAN/TGM/super-events JSON ``{video_id: {subset, duration, actions: [[class, start, end]]}}``
  (Charades with ids from 0, MultiTHUMOS with ids from 1; times in seconds) ->
  :func:`read_pdan_json` (``class_id_base``).
- Toyota Smarthome Untrimmed: the same JSON layout with duration and action times in FRAMES
  (about 20 fps) -> :func:`read_tsu_json` divides by ``fps``. Labels at feature resolution depend
  only on ratios (time / duration), so the exact ``fps`` value changes the seconds reported, never
  the labels.
- PKU-MMD: one ``<video>.txt`` per video with lines ``label,start_frame,end_frame,confidence``
  (30 fps, labels 1..51) and the official split lists ``cross-subject.txt`` / ``cross-view.txt``
  -> :func:`read_pkummd`, :func:`read_pkummd_split`.

Segments that end after the video's duration, segments starting after it, zero-length segments and
videos without actions all occur in the real files (Charades: 19,623 segments end past the
duration, 5 start after it, 7 have zero length, 223 videos have none). Readers keep them as they
are and :meth:`UntrimmedAnnotations.counts` counts them; the labelling rule
(:func:`xmkd.data.datasets.untrimmed.frame_labels`) clips them.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from xmkd.errors import AnnotationError

CHARADES_CSV_COLUMNS = (
    "id",
    "subject",
    "scene",
    "quality",
    "relevance",
    "verified",
    "script",
    "objects",
    "descriptions",
    "actions",
    "length",
)
CHARADES_NUM_CLASSES = 157
MULTITHUMOS_NUM_CLASSES = 65
TSU_NUM_CLASSES = 51
TSU_FPS = 20.0
PKUMMD_NUM_CLASSES = 51
PKUMMD_FPS = 30.0
# The first class id in each dataset's official annotation files (see the module docstring).
CLASS_ID_BASE = {"charades": 0, "tsu": 0, "multithumos": 1, "pkummd": 1}


class Segment(NamedTuple):
    """One labelled action interval; ``label`` is 0-based, times in seconds (a tuple: cheap in bulk)."""

    label: int
    start_s: float
    end_s: float


@dataclass
class UntrimmedVideo:
    """One untrimmed video's annotation.

    ``fps`` is the frame rate the source file counted in (TSU 20, PKU-MMD 30), ``None`` where the
    source is already in seconds. ``duration_estimated`` is True where the source gives no
    duration and it was taken from the last action's end (PKU-MMD without skeleton files).
    """

    video_id: str
    subset: str
    duration_s: float
    fps: float | None
    segments: list[Segment] = field(default_factory=list)
    duration_estimated: bool = False


@dataclass
class UntrimmedAnnotations:
    """All videos of one annotation source, with the class names (index = class id)."""

    videos: list[UntrimmedVideo]
    class_names: list[str]
    source: str = ""
    class_id_base: int = 0  # the first class id in the source files (subtracted when reading)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, name: str | None) -> list[UntrimmedVideo]:
        """Videos of one subset (``None``: all)."""
        return [v for v in self.videos if name is None or v.subset == name]

    def counts(self) -> dict[str, object]:
        """How many videos/segments and how many of the quirks the labelling rule must handle."""
        segs = [(v, s) for v in self.videos for s in v.segments]
        return {
            "videos": len(self.videos),
            "videos_per_subset": dict(sorted(Counter(v.subset for v in self.videos).items())),
            "classes": self.num_classes,
            "segments": len(segs),
            "segments_per_subset": dict(
                sorted(Counter(v.subset for v, _ in segs).items()),
            ),
            "segments_past_end": sum(1 for v, s in segs if s.end_s > v.duration_s),
            "segments_outside": sum(1 for v, s in segs if s.start_s >= v.duration_s),
            "segments_zero_length": sum(1 for _, s in segs if s.end_s <= s.start_s),
            "videos_without_actions": sum(1 for v in self.videos if not v.segments),
            "durations_estimated": sum(1 for v in self.videos if v.duration_estimated),
        }


def default_class_names(num_classes: int, prefix: str = "class_") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(num_classes)]


def check_class_id_base(base: int, path: str | Path) -> int:
    """``base`` if it is 0 or 1 (the only numberings the datasets use), else an AnnotationError."""
    if type(base) is not int or base not in (0, 1):
        raise AnnotationError(path, f"class_id_base must be 0 or 1, got {base!r}")
    return base


def _check_label(
    label: int, num_classes: int, path: Path, where: str, line: int | None = None, base: int = 0
) -> None:
    """Refuse an id outside ``base..base + num_classes - 1``, saying which base was used and why
    the other one may be meant (an id one past the end under base 0, or 0 under base 1)."""
    if base <= label < base + num_classes:
        return
    hint = f"; class ids were read as counting from {base} (class_id_base: {base})"
    if base == 0 and label == num_classes:
        hint += "; files numbering classes from 1 (MultiTHUMOS, PKU-MMD) need class_id_base: 1"
    elif base == 1 and label == 0:
        hint += "; files numbering classes from 0 (Charades, TSU) need class_id_base: 0"
    raise AnnotationError(
        path,
        f"{where}: unknown class id {label} (expected {base}..{base + num_classes - 1}){hint}",
        line=line,
    )


def _check_times(start: float, end: float, path: Path, where: str, line: int | None = None) -> None:
    if not (math.isfinite(start) and math.isfinite(end)):
        raise AnnotationError(path, f"{where}: non-finite time ({start}, {end})", line=line)
    if start < 0:
        raise AnnotationError(path, f"{where}: negative start time {start}", line=line)


# ----------------------------------------------------------------------------------------- Charades
def read_charades_classes(path: str | Path) -> list[str]:
    """Read ``Charades_v1_classes.txt``: lines ``c000 Holding some clothes``, ids contiguous from 0."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(path, "class list not found")
    names: list[str] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        m = re.fullmatch(r"c(\d+)\s+(.+)", line)
        if m is None:
            raise AnnotationError(path, f"expected 'cNNN class name', got {line!r}", line=lineno)
        idx = int(m.group(1))
        if idx != len(names):
            raise AnnotationError(
                path, f"class ids must be contiguous from c000; got c{idx:03d}", line=lineno
            )
        names.append(m.group(2).strip())
    if not names:
        raise AnnotationError(path, "no classes in file")
    return names


def _subset_from_filename(path: Path) -> str:
    name = path.name.lower()
    if "test" in name:
        return "testing"
    if "train" in name:
        return "training"
    raise AnnotationError(
        path, "cannot tell the subset from the file name; pass subset='training' or 'testing'"
    )


def _parse_charades_actions(
    text: str, class_index: Mapping[str, int], path: Path, video_id: str, line: int
) -> list[Segment]:
    segments: list[Segment] = []
    for item in filter(None, (t.strip() for t in text.split(";"))):
        parts = item.split()
        if len(parts) != 3:
            raise AnnotationError(
                path, f"video {video_id}: action {item!r} is not 'cNNN start end'", line=line
            )
        cls, start_txt, end_txt = parts
        if cls not in class_index:
            raise AnnotationError(path, f"video {video_id}: unknown class id {cls!r}", line=line)
        try:
            start, end = float(start_txt), float(end_txt)
        except ValueError:
            raise AnnotationError(
                path, f"video {video_id}: bad times in action {item!r}", line=line
            ) from None
        _check_times(start, end, path, f"video {video_id}", line)
        segments.append(Segment(class_index[cls], start, end))
    return segments


def read_charades_csv(
    csv_paths: str | Path | Sequence[str | Path],
    classes_path: str | Path,
    subsets: Sequence[str] | None = None,
) -> UntrimmedAnnotations:
    """Read one or more Charades CSVs (``Charades_v1_train.csv``, ``Charades_v1_test.csv``).

    The subset of each file is ``subsets[i]`` or, by default, taken from its name ('train' ->
    ``training``, 'test' -> ``testing``, the PDAN JSON's names). An empty ``actions`` field is a
    video without actions (kept). ``length`` is the duration in seconds.
    """
    paths = [Path(csv_paths)] if isinstance(csv_paths, (str, Path)) else [Path(p) for p in csv_paths]
    class_names = read_charades_classes(classes_path)
    class_index = {f"c{i:03d}": i for i in range(len(class_names))}
    if subsets is not None and len(subsets) != len(paths):
        raise AnnotationError(paths[0], f"{len(paths)} CSV files but {len(subsets)} subsets given")
    videos: list[UntrimmedVideo] = []
    seen: dict[str, Path] = {}
    for i, path in enumerate(paths):
        subset = subsets[i] if subsets is not None else _subset_from_filename(path)
        if not path.is_file():
            raise AnnotationError(path, "annotation CSV not found")
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("id", "actions", "length") if c not in (reader.fieldnames or [])]
            if missing:
                raise AnnotationError(
                    path, f"missing column(s) {missing}; header is {reader.fieldnames}", line=1
                )
            for row in reader:
                line = reader.line_num
                if None in row:  # more fields than the header: an unquoted comma
                    raise AnnotationError(path, "more fields than the header (unquoted comma?)", line=line)
                video_id = (row["id"] or "").strip()
                if not video_id:
                    raise AnnotationError(path, "empty video id", line=line)
                if video_id in seen:
                    raise AnnotationError(
                        path, f"video {video_id} already listed in {seen[video_id]}", line=line
                    )
                seen[video_id] = path
                try:
                    duration = float(row["length"])
                except (TypeError, ValueError):
                    raise AnnotationError(
                        path, f"video {video_id}: bad length {row['length']!r}", line=line
                    ) from None
                if not (math.isfinite(duration) and duration > 0):
                    raise AnnotationError(
                        path, f"video {video_id}: length must be > 0, got {duration}", line=line
                    )
                segments = _parse_charades_actions(row["actions"] or "", class_index, path, video_id, line)
                videos.append(UntrimmedVideo(video_id, subset, duration, None, segments))
    return UntrimmedAnnotations(videos, class_names, source=", ".join(str(p) for p in paths))


# ---------------------------------------------------------------------------------- PDAN-style JSON
def _load_json(path: Path) -> object:
    if not path.is_file():
        raise AnnotationError(path, "annotation JSON not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnnotationError(path, f"invalid JSON: {e.msg}", line=e.lineno) from None
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not UTF-8 text: {e}") from None


_NUMBER = (int, float)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def read_pdan_json(
    path: str | Path,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    fps: float | None = None,
    class_id_base: int = 0,
) -> UntrimmedAnnotations:
    """Read the PDAN/TGM JSON ``{video_id: {subset, duration, actions: [[class, start, end]]}}``.

    Class ids are integers counting from ``class_id_base``: 0 for Charades and TSU, 1 for
    MultiTHUMOS (:data:`CLASS_ID_BASE`); they become 0-based. ``class_names`` (or ``num_classes``)
    fixes the class count and so which ids are unknown; with neither, the count is the largest
    id - base + 1 (a test set that never shows the last class would then be one class short; pass
    the count for real datasets). ``fps``: the source counts in frames at this rate (TSU);
    ``None``: seconds (Charades, MultiTHUMOS).
    """
    path = Path(path)
    base = check_class_id_base(class_id_base, path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(
            path, f"top level must be an object {{video_id: ...}}, got {type(data).__name__}"
        )
    if fps is not None and not fps > 0:
        raise AnnotationError(path, f"fps must be > 0, got {fps}")
    if class_names is not None:
        names = list(class_names)
        if num_classes is not None and num_classes != len(names):
            raise AnnotationError(path, f"num_classes={num_classes} but {len(names)} class names given")
    else:
        names = []
    scale = 1.0 / fps if fps is not None else 1.0
    raw_videos: list[tuple[str, str, float, list[tuple[int, float, float]]]] = []
    max_label = -1
    for video_id, entry in data.items():
        where = f"video {video_id}"
        if not isinstance(entry, dict):
            raise AnnotationError(path, f"{where}: entry must be an object")
        for key in ("subset", "duration", "actions"):
            if key not in entry:
                raise AnnotationError(path, f"{where}: missing key '{key}'")
        subset, duration, actions = entry["subset"], entry["duration"], entry["actions"]
        if not isinstance(subset, str):
            raise AnnotationError(path, f"{where}: subset must be a string, got {subset!r}")
        if not (_is_number(duration) and math.isfinite(duration) and duration > 0):
            raise AnnotationError(path, f"{where}: duration must be a positive number, got {duration!r}")
        if not isinstance(actions, list):
            raise AnnotationError(path, f"{where}: actions must be a list")
        segs: list[tuple[int, float, float]] = []
        for j, action in enumerate(actions):
            # exact type checks (not isinstance): bool is an int subclass and must be refused;
            # this loop runs 66,500 times on Charades, so it stays lean.
            if type(action) is not list or len(action) != 3 or not all(type(x) in _NUMBER for x in action):
                raise AnnotationError(
                    path, f"{where}: action {j} must be [class, start, end], got {action!r}"
                )
            label, start, end = action
            if type(label) is float:
                if not label.is_integer():
                    raise AnnotationError(path, f"{where}: action {j} class id {label!r} is not an integer")
                label = int(label)
            start, end = float(start), float(end)
            if not (0.0 <= start < math.inf and -math.inf < end < math.inf):
                _check_times(start, end, path, f"{where} action {j}")
            if label > max_label:
                max_label = label
            segs.append((label, start, end))
        raw_videos.append((str(video_id), subset, float(duration), segs))
    if not names:
        count = num_classes if num_classes is not None else max_label - base + 1
        if count <= 0:
            raise AnnotationError(path, "no actions and no class count given")
        names = default_class_names(count)
    videos: list[UntrimmedVideo] = []
    for video_id, subset, duration, segs in raw_videos:
        for label, _, _ in segs:
            _check_label(label, len(names), path, f"video {video_id}", base=base)
        videos.append(
            UntrimmedVideo(
                video_id,
                subset,
                duration * scale,
                fps,
                [Segment(label - base, s * scale, e * scale) for label, s, e in segs],
            )
        )
    return UntrimmedAnnotations(videos, names, source=str(path), class_id_base=base)


def read_tsu_json(
    path: str | Path,
    fps: float = TSU_FPS,
    num_classes: int | None = TSU_NUM_CLASSES,
    class_names: Sequence[str] | None = None,
    class_id_base: int = CLASS_ID_BASE["tsu"],
) -> UntrimmedAnnotations:
    """Toyota Smarthome Untrimmed PDAN-style JSON (``tsu_cs.json`` / ``tsu_cv.json``).

    Duration and action times are in frames; ``fps`` (about 20 for TSU) converts them to seconds.
    Class ids count from 0 (the official files hold 0..50).
    """
    return read_pdan_json(
        path,
        num_classes=None if class_names else num_classes,
        class_names=class_names,
        fps=fps,
        class_id_base=class_id_base,
    )


# -------------------------------------------------------------------------------------------- PKU-MMD
_SPLIT_HEADER = re.compile(r"^\s*(training|validataion|validation|testing|test)\s+videos\s*:\s*(.*)$", re.I)
_SPLIT_SUBSET = {
    "training": "training",
    "validataion": "testing",
    "validation": "testing",
    "testing": "testing",
    "test": "testing",
}


def read_pkummd_split(path: str | Path) -> dict[str, str]:
    """Read an official PKU-MMD split list (``cross-subject.txt``, ``cross-view.txt``).

    Layout: a ``Training videos:`` line followed by comma-separated ids (``0002-L, 0002-M, ...``),
    then a ``Validataion videos:`` line (the official spelling; ``Validation``/``Testing`` are also
    accepted) followed by ids. Returns ``{video_id: subset}``; interpretation: the validation list
    is the held-out evaluation set of the published cross-subject/cross-view protocols, so it maps
    to subset ``testing`` (matching the PDAN JSON names).
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(path, "split file not found")
    result: dict[str, str] = {}
    current: str | None = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = _SPLIT_HEADER.match(raw)
        rest = raw
        if m is not None:
            current = _SPLIT_SUBSET[m.group(1).lower()]
            rest = m.group(2)
        ids = [t.strip() for t in rest.split(",") if t.strip()]
        if ids and current is None:
            raise AnnotationError(path, "video ids before any 'Training videos:' header", line=lineno)
        for vid in ids:
            if not re.fullmatch(r"[\w.-]+", vid):
                raise AnnotationError(path, f"malformed video id {vid!r}", line=lineno)
            if vid in result:
                raise AnnotationError(path, f"video {vid} listed twice", line=lineno)
            assert current is not None
            result[vid] = current
    if not result:
        raise AnnotationError(path, "no videos listed (expected 'Training videos:' / 'Validataion videos:')")
    return result


def read_pkummd_label_file(
    path: str | Path,
    fps: float = PKUMMD_FPS,
    num_classes: int = PKUMMD_NUM_CLASSES,
    class_id_base: int = CLASS_ID_BASE["pkummd"],
) -> list[Segment]:
    """Read one PKU-MMD label file: lines ``label,start_frame,end_frame,confidence``.

    Labels count from ``class_id_base`` (1 in the official files: 1..51) and become 0-based;
    frames become seconds via ``fps``.
    The confidence column (1 or 2, annotation quality) is read but not kept; a line with only three
    fields (no confidence) is accepted.
    """
    path = Path(path)
    base = check_class_id_base(class_id_base, path)
    if not path.is_file():
        raise AnnotationError(path, "label file not found")
    segments: list[Segment] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (3, 4):
            raise AnnotationError(path, f"expected 'label,start,end,confidence', got {line!r}", line=lineno)
        try:
            label, start, end = int(parts[0]), float(parts[1]), float(parts[2])
            if len(parts) == 4:
                float(parts[3])
        except ValueError:
            raise AnnotationError(path, f"non-numeric field in {line!r}", line=lineno) from None
        _check_label(label, num_classes, path, "segment", lineno, base=base)
        _check_times(start, end, path, "segment", lineno)
        segments.append(Segment(label - base, start / fps, end / fps))
    return segments


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        data = f.read()
    return len([line for line in data.splitlines() if line.strip()])


def read_pkummd(
    label_dir: str | Path,
    split_file: str | Path,
    fps: float = PKUMMD_FPS,
    num_classes: int = PKUMMD_NUM_CLASSES,
    class_names: Sequence[str] | None = None,
    durations: Mapping[str, float] | None = None,
    skeleton_dir: str | Path | None = None,
    class_id_base: int = CLASS_ID_BASE["pkummd"],
) -> UntrimmedAnnotations:
    """Read PKU-MMD: the videos of ``split_file`` with labels from ``label_dir/<video>.txt``.

    PKU-MMD label files carry no video length. It comes from ``durations`` (``{video: frames}``),
    else from ``skeleton_dir/<video>.txt`` (one line per frame), else it is estimated as the last
    action's end and the video is flagged ``duration_estimated`` (counted; the dataset then needs
    an explicit ``feature_fps`` because fps = T / duration would be wrong).
    """
    label_dir = Path(label_dir)
    split = read_pkummd_split(split_file)
    names = list(class_names) if class_names is not None else default_class_names(num_classes, "action_")
    if len(names) != num_classes:
        raise AnnotationError(split_file, f"{len(names)} class names for {num_classes} classes")
    videos: list[UntrimmedVideo] = []
    for video_id, subset in split.items():
        label_path = label_dir / f"{video_id}.txt"
        if not label_path.is_file():
            raise AnnotationError(
                label_path, f"label file for video {video_id} (listed in {split_file}) not found"
            )
        segments = read_pkummd_label_file(
            label_path, fps=fps, num_classes=num_classes, class_id_base=class_id_base
        )
        estimated = False
        if durations is not None and video_id in durations:
            frames = float(durations[video_id])
        elif skeleton_dir is not None:
            skel = Path(skeleton_dir) / f"{video_id}.txt"
            if not skel.is_file():
                raise AnnotationError(
                    skel, f"skeleton file for video {video_id} not found (needed for its length)"
                )
            frames = float(_count_lines(skel))
        else:
            frames = max((s.end_s * fps for s in segments), default=0.0)
            estimated = True
        if not frames > 0:
            raise AnnotationError(
                label_path, f"video {video_id}: cannot tell its length (no frames, no actions)"
            )
        videos.append(
            UntrimmedVideo(video_id, subset, frames / fps, fps, segments, duration_estimated=estimated)
        )
    return UntrimmedAnnotations(
        videos, names, source=f"{label_dir} ({split_file})", class_id_base=class_id_base
    )


def read_class_names(path: str | Path) -> list[str]:
    """A plain class list, one name per line, or Charades-style ``c000 name`` lines."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(path, "class list not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if lines and all(re.match(r"c\d+\s", ln) for ln in lines):
        return read_charades_classes(path)
    if not lines:
        raise AnnotationError(path, "no classes in file")
    return lines


def merge_annotations(parts: Iterable[UntrimmedAnnotations]) -> UntrimmedAnnotations:
    """Join sources that share one class list (for example a train and a test file)."""
    parts = list(parts)
    names, base = parts[0].class_names, parts[0].class_id_base
    for p in parts[1:]:
        if p.class_names != names:
            raise AnnotationError(p.source, "class list differs from the first source's")
        if p.class_id_base != base:
            raise AnnotationError(
                p.source, f"class ids count from {p.class_id_base}, the first source's from {base}"
            )
    return UntrimmedAnnotations(
        [v for p in parts for v in p.videos], names, ", ".join(p.source for p in parts), base
    )


def frame_labels(
    segments: Sequence[Segment],
    num_steps: int,
    duration_s: float,
    num_classes: int,
    feature_fps: float | None = None,
) -> np.ndarray:
    """Multi-hot labels (T, C) float32 at feature resolution.

    fps = ``num_steps / duration_s`` (or ``feature_fps`` where the duration is unknown or the
    features have a known fixed rate); label[t, c] = 1 iff start < t / fps < end. The strict
    inequalities and the t / fps step times (not step centres) are the PDAN/TGM code's rule.
    """
    labels = np.zeros((num_steps, num_classes), dtype=np.float32)
    if num_steps == 0 or not segments:
        return labels
    fps = feature_fps if feature_fps is not None else num_steps / duration_s
    times = np.arange(num_steps, dtype=np.float64) / fps
    for seg in segments:
        # first step with time > start, first step with time >= end: positives are [lo, hi)
        lo = int(np.searchsorted(times, seg.start_s, side="right"))
        hi = int(np.searchsorted(times, seg.end_s, side="left"))
        if hi > lo:
            labels[lo:hi, seg.label] = 1.0
    return labels
