"""Readers for trimmed-video annotations: UCF101, HMDB51, Kinetics-style CSVs and a generic CSV.

Every reader returns the same in-memory form, :class:`TrimmedAnnotations`: a list of
:class:`ClipRecord` (one per listed video) plus the class names, whose index is the record's
``label``. The readers take the official files as they are distributed, quirks included:

- UCF101 lists (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``) have CRLF line
  endings; test lists carry no label, so the label comes from the class folder in the path.
  Folder names follow ``classInd.txt`` while some file names do not (``HandstandPushups/
  v_HandStandPushups_g01_c01.avi``): the folder is authoritative.
- HMDB51 ``<class>_test_splitN.txt`` lines end in a trailing space; the flag is 1 = train,
  2 = test, 0 = unused in that split. Classes are indexed in sorted name order (the order used by
  the common toolkits); ``class_list.txt`` found next to some copies is not official and is ignored.
- Kinetics CSVs (``label,youtube_id,time_start,time_end,split[,is_cc]``) quote labels with
  spaces; clip files are named ``<youtube_id>_<start:06d>_<end:06d>.mp4`` and live under a class
  folder (named as in the CSV, or with spaces replaced by underscores) or flat under the root.
  The official test CSV has no label column (``youtube_id,time_start,time_end,split``).

Unlabelled files (that test CSV, a generic CSV of paths only) are read as they are: their records
carry ``label = UNLABELLED`` (-1) and the annotations ``labelled = False``; they serve prediction
and feature extraction, and the data module refuses them, saying so, where labels are needed.

Video paths are resolved against ``root`` when reading, with one directory listing per folder
(not one ``stat`` per file), so that a record's ``path`` is where the file is if it exists at any
of the accepted places, and the canonical place otherwise. Malformed lines raise
:class:`~xmkd.errors.AnnotationError` naming the file and the 1-based line.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xmkd.errors import AnnotationError

__all__ = [
    "UNLABELLED",
    "ClipRecord",
    "TrimmedAnnotations",
    "find_existing",
    "kinetics_clip_name",
    "read_class_list",
    "read_csv_annotations",
    "read_hmdb51",
    "read_kinetics_csv",
    "read_ucf101",
    "read_ucf101_class_index",
    "synthetic_layout",
]

UCF101_FOLDS = (1, 2, 3)
HMDB51_FOLDS = (1, 2, 3)
_HMDB_SPLIT_RE = re.compile(r"^(?P<cls>.+)_test_split(?P<fold>\d+)\.txt$")
_HMDB_FLAGS = {"1": "train", "2": "test"}  # "0": not used in this split
_KINETICS_REQUIRED = ("youtube_id", "time_start", "time_end")  # and "label", except in the test CSV
# The label of a record read from an unlabelled file (the official Kinetics test CSV).
UNLABELLED = -1


@dataclass(frozen=True)
class ClipRecord:
    """One listed video.

    ``path`` is the video file (resolved against the dataset root; a ``str``, cheaper than
    ``Path`` for 240k records sent to every DataLoader worker); ``label`` indexes the class
    names of the annotations it came from (``UNLABELLED``, -1, for an unlabelled file); ``video_id`` is unique within a dataset (the file stem);
    ``start_s``/``end_s`` bound the part of the file that is the clip (``None`` = whole file: the
    trimmed datasets ship one file per clip); ``split`` is ``train``/``test``/``val``/... or ``""``.
    """

    path: str
    label: int
    video_id: str
    start_s: float | None = None
    end_s: float | None = None
    split: str = ""


@dataclass
class TrimmedAnnotations:
    """The records of a dataset and its class names (``class_names[record.label]``)."""

    records: list[ClipRecord]
    class_names: list[str]
    source: str = ""  # the file or folder read, for messages
    splits: tuple[str, ...] = field(default=())
    labelled: bool = True  # False: the file has no labels (records carry UNLABELLED)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> list[ClipRecord]:
        """Records of one split (``train``, ``test``, ``val``...)."""
        return [r for r in self.records if r.split == name]


# ----------------------------------------------------------------------------------------------
# small helpers


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, stripped line) for the non-blank lines of a text file.

    Strips CRLF/trailing spaces (UCF101 and HMDB51 quirks) and a UTF-8 byte-order mark.
    """
    if not path.is_file():
        raise AnnotationError(path, "annotation file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            yield number, line


class _DirIndex:
    """Answers "is this an existing file" with one cached listing per directory.

    A UCF101/Kinetics root holds 13k-650k files in a few hundred folders; listing each folder
    once (``scandir`` file types come with the listing) is much cheaper than a ``stat`` per
    candidate path, on network file systems above all. Works on plain strings: pathlib costs
    more than the listing for 240k Kinetics rows.
    """

    def __init__(self) -> None:
        self._listings: dict[str, frozenset[str]] = {}

    def exists(self, directory: str, name: str) -> bool:
        listing = self._listings.get(directory)
        if listing is None:
            listing = self._listings[directory] = _list_files(directory)
        return name in listing

    def first_existing(self, candidates: Sequence[tuple[str, str]]) -> str:
        """Path of the first (directory, name) candidate that exists, else of the first one."""
        for directory, name in candidates:
            if self.exists(directory, name):
                return os.path.join(directory, name)
        return os.path.join(*candidates[0])


def _list_files(directory: str) -> frozenset[str]:
    """Names of the files (or links to files) in ``directory``; empty when it cannot be listed."""
    try:
        with os.scandir(directory or ".") as entries:
            return frozenset(e.name for e in entries if e.is_file())
    except OSError:
        return frozenset()


def find_existing(paths: Sequence[str | os.PathLike]) -> list[bool]:
    """Whether each path is an existing file, with one directory listing per folder.

    Listing a folder once beats one ``stat`` per file for 10^4-10^5 videos on network storage.
    """
    index = _DirIndex()
    return [index.exists(*os.path.split(os.fspath(path))) for path in paths]


def _parse_int(text: str, path: Path, line: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AnnotationError(path, f"{what} must be an integer, got {text!r}", line=line) from None


def _parse_float(text: str, path: Path, line: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(path, f"{what} must be a number, got {text!r}", line=line) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise AnnotationError(path, f"{what} must be finite, got {text!r}", line=line)
    return value


def read_class_list(path: str | Path) -> list[str]:
    """Class names, one per line (e.g. a Kinetics-Sound subset); blank lines ignored."""
    path = Path(path)
    names = [line for _, line in _read_lines(path)]
    seen: set[str] = set()
    for number, name in enumerate(names, start=1):
        if name in seen:
            raise AnnotationError(path, f"class {name!r} listed twice", line=number)
        seen.add(name)
    if not names:
        raise AnnotationError(path, "no class names in file")
    return names


# ----------------------------------------------------------------------------------------------
# UCF101


def read_ucf101_class_index(path: str | Path) -> list[str]:
    """Parse ``classInd.txt`` (``"<1-based index> <ClassName>"`` per line) into class names."""
    path = Path(path)
    names: list[str] = []
    for number, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise AnnotationError(path, f"expected '<index> <ClassName>', got {line!r}", line=number)
        index = _parse_int(parts[0], path, number, "class index")
        if index != len(names) + 1:
            raise AnnotationError(
                path,
                f"class indices must run 1, 2, 3...; expected {len(names) + 1}, got {index}",
                line=number,
            )
        if parts[1] in names:
            raise AnnotationError(path, f"class {parts[1]!r} listed twice", line=number)
        names.append(parts[1])
    if not names:
        raise AnnotationError(path, "no classes in file")
    return names


def _ucf_candidates(root: str, folder: str, filename: str) -> list[tuple[str, str]]:
    # Canonical layout Class/file.avi (as extracted from UCF101.rar), else all files flat in root.
    return [(os.path.join(root, folder), filename), (root, filename)]


def _read_ucf101_list(
    path: Path, root: Path, class_names: list[str], split: str, index: _DirIndex
) -> list[ClipRecord]:
    class_to_label = {name: i for i, name in enumerate(class_names)}
    records: list[ClipRecord] = []
    for number, line in _read_lines(path):
        parts = line.split()
        if len(parts) not in (1, 2):
            raise AnnotationError(path, f"expected 'Class/file.avi [index]', got {line!r}", line=number)
        relative = parts[0]
        folder, _, filename = relative.rpartition("/")
        if not folder or not filename:
            raise AnnotationError(path, f"expected 'Class/file.avi', got {relative!r}", line=number)
        if folder not in class_to_label:
            raise AnnotationError(
                path, f"unknown class {folder!r} (not in classInd.txt) in {relative!r}", line=number
            )
        label = class_to_label[folder]
        if len(parts) == 2:
            given = _parse_int(parts[1], path, number, "class index")
            if not 1 <= given <= len(class_names):
                raise AnnotationError(
                    path, f"class index {given} out of range 1..{len(class_names)}", line=number
                )
            if given - 1 != label:
                raise AnnotationError(
                    path,
                    f"class index {given} ({class_names[given - 1]}) disagrees with folder {folder!r}",
                    line=number,
                )
        records.append(
            ClipRecord(
                path=index.first_existing(_ucf_candidates(str(root), folder, filename)),
                label=label,
                video_id=os.path.splitext(filename)[0],
                split=split,
            )
        )
    if not records:
        raise AnnotationError(path, "no videos listed")
    return records


def read_ucf101(splits_dir: str | Path, root: str | Path, fold: int = 1) -> TrimmedAnnotations:
    """Read the official UCF101 split files of one fold (1-3).

    ``splits_dir`` holds ``classInd.txt``, ``trainlist0N.txt`` and ``testlist0N.txt``; ``root``
    holds the videos as ``Class/v_Class_gXX_cYY.avi`` (or flat). Labels are 0-based
    (``classInd`` index - 1). Records carry ``split`` ``train`` or ``test``.
    """
    if fold not in UCF101_FOLDS:
        raise AnnotationError(splits_dir, f"UCF101 fold must be one of {UCF101_FOLDS}, got {fold}")
    splits_dir, root = Path(splits_dir), Path(root)
    class_names = read_ucf101_class_index(splits_dir / "classInd.txt")
    index = _DirIndex()
    records = _read_ucf101_list(splits_dir / f"trainlist0{fold}.txt", root, class_names, "train", index)
    records += _read_ucf101_list(splits_dir / f"testlist0{fold}.txt", root, class_names, "test", index)
    return TrimmedAnnotations(records, class_names, source=str(splits_dir), splits=("train", "test"))


# ----------------------------------------------------------------------------------------------
# HMDB51


def read_hmdb51(splits_dir: str | Path, root: str | Path, fold: int = 1) -> TrimmedAnnotations:
    """Read the official HMDB51 split files of one fold (1-3).

    ``splits_dir`` holds ``<class>_test_split<fold>.txt`` for every class (lines
    ``"<file>.avi <0|1|2>"``: 1 = train, 2 = test, 0 = unused); ``root`` holds the videos as
    ``<class>/<file>.avi`` (or flat). Classes are indexed in sorted name order.
    """
    if fold not in HMDB51_FOLDS:
        raise AnnotationError(splits_dir, f"HMDB51 fold must be one of {HMDB51_FOLDS}, got {fold}")
    splits_dir, root = Path(splits_dir), Path(root)
    if not splits_dir.is_dir():
        raise AnnotationError(splits_dir, "HMDB51 splits folder not found")
    files: dict[str, Path] = {}
    for entry in sorted(os.listdir(splits_dir)):
        match = _HMDB_SPLIT_RE.match(entry)
        if match and int(match["fold"]) == fold:
            files[match["cls"]] = splits_dir / entry
    if not files:
        raise AnnotationError(splits_dir, f"no '<class>_test_split{fold}.txt' files found")
    class_names = sorted(files)
    index = _DirIndex()
    records: list[ClipRecord] = []
    seen: dict[str, Path] = {}
    for label, name in enumerate(class_names):
        path = files[name]
        for number, line in _read_lines(path):
            parts = line.split()
            if len(parts) != 2:
                raise AnnotationError(path, f"expected '<file>.avi <0|1|2>', got {line!r}", line=number)
            filename, flag = parts
            if flag not in ("0", "1", "2"):
                raise AnnotationError(path, f"split flag must be 0, 1 or 2, got {flag!r}", line=number)
            if filename in seen:
                raise AnnotationError(path, f"{filename!r} is also listed in {seen[filename]}", line=number)
            seen[filename] = path
            if flag == "0":
                continue
            records.append(
                ClipRecord(
                    path=index.first_existing(
                        [(os.path.join(str(root), name), filename), (str(root), filename)]
                    ),
                    label=label,
                    video_id=os.path.splitext(filename)[0],
                    split=_HMDB_FLAGS[flag],
                )
            )
    return TrimmedAnnotations(records, class_names, source=str(splits_dir), splits=("train", "test"))


# ----------------------------------------------------------------------------------------------
# Kinetics-style CSV


def kinetics_clip_name(youtube_id: str, start: float, end: float, extension: str = ".mp4") -> str:
    """The file name the Kinetics download scripts give a clip: ``<id>_<start:06d>_<end:06d>.mp4``."""
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}{extension}"


def read_kinetics_csv(
    csv_path: str | Path,
    root: str | Path,
    classes: Sequence[str] | None = None,
    extension: str = ".mp4",
) -> TrimmedAnnotations:
    """Read a Kinetics annotation CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``).

    Without ``classes`` every label in the file is a class, indexed in sorted name order (the
    Kinetics convention). With ``classes`` (e.g. the 31/32 Kinetics-Sound classes, or the class
    list of the training CSV when reading the validation CSV) only rows of those classes are kept
    and labels index ``classes``; a listed class absent from the CSV is an error (a typo would
    otherwise silently shrink the dataset). Records carry the CSV ``split`` value (``""`` if the
    column is absent).

    The official test CSV has no ``label`` column: its records are ``UNLABELLED``, the clips are
    looked for flat under ``root``, and ``classes`` (if given) is kept as the class list without
    filtering anything (``labelled=False``).
    """
    csv_path, root = Path(csv_path), Path(root)
    rows = list(_kinetics_rows(csv_path))
    if rows and rows[0][1] is None:
        return _unlabelled_kinetics(csv_path, root, rows, classes, extension)
    present = {label for _, label, *_ in rows}
    if classes is None:
        class_names = sorted(present)
    else:
        class_names = list(classes)
        if len(set(class_names)) != len(class_names):
            raise AnnotationError(csv_path, "the class subset lists a class twice")
        for name in class_names:
            if name not in present:
                raise AnnotationError(csv_path, f"unknown class {name!r}: no row of {csv_path.name} has it")
    class_to_label = {name: i for i, name in enumerate(class_names)}
    index = _DirIndex()
    root_str = str(root)
    records: list[ClipRecord] = []
    for _, label_name, youtube_id, start, end, split in rows:
        if label_name not in class_to_label:
            continue
        filename = kinetics_clip_name(youtube_id, start, end, extension)
        candidates = [(os.path.join(root_str, label_name), filename)]
        if " " in label_name:
            candidates.append((os.path.join(root_str, label_name.replace(" ", "_")), filename))
        candidates.append((root_str, filename))
        records.append(
            ClipRecord(
                path=index.first_existing(candidates),
                label=class_to_label[label_name],
                video_id=filename[: -len(extension)] if extension else filename,
                split=split,
            )
        )
    splits = tuple(dict.fromkeys(r.split for r in records))
    return TrimmedAnnotations(records, class_names, source=str(csv_path), splits=splits)


def _unlabelled_kinetics(
    csv_path: Path,
    root: Path,
    rows: list[tuple[int, str | None, str, float, float, str]],
    classes: Sequence[str] | None,
    extension: str,
) -> TrimmedAnnotations:
    """Records of the official test CSV: no label, clips flat under ``root``."""
    index = _DirIndex()
    root_str = str(root)
    records = []
    for _, _, youtube_id, start, end, split in rows:
        filename = kinetics_clip_name(youtube_id, start, end, extension)
        records.append(
            ClipRecord(
                path=index.first_existing([(root_str, filename)]),
                label=UNLABELLED,
                video_id=filename[: -len(extension)] if extension else filename,
                split=split,
            )
        )
    splits = tuple(dict.fromkeys(r.split for r in records))
    names = list(classes) if classes is not None else []
    return TrimmedAnnotations(records, names, source=str(csv_path), splits=splits, labelled=False)


def _kinetics_rows(csv_path: Path) -> Iterator[tuple[int, str | None, str, float, float, str]]:
    lines = [line for _, line in _numbered_raw_lines(csv_path)]
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise AnnotationError(csv_path, "empty CSV") from None
    missing = [c for c in _KINETICS_REQUIRED if c not in header]
    if missing:
        raise AnnotationError(
            csv_path, f"header {','.join(header)!r} lacks column(s) {missing}; expected "
            "'label,youtube_id,time_start,time_end,split[,is_cc]' (the test CSV: no label)", line=1,
        )  # fmt: skip
    col = {name: header.index(name) for name in header}
    for number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise AnnotationError(
                csv_path, f"expected {len(header)} fields ({','.join(header)}), got {len(row)}", line=number
            )
        label = row[col["label"]].strip() if "label" in col else None
        youtube_id = row[col["youtube_id"]].strip()
        if label == "" or not youtube_id:
            raise AnnotationError(csv_path, "empty label or youtube_id", line=number)
        start = _parse_float(row[col["time_start"]], csv_path, number, "time_start")
        end = _parse_float(row[col["time_end"]], csv_path, number, "time_end")
        if end <= start or start < 0:
            raise AnnotationError(
                csv_path, f"time_end ({end}) must exceed time_start ({start}) >= 0", line=number
            )
        split = row[col["split"]].strip() if "split" in col else ""
        yield number, label, youtube_id, start, end, split


def _numbered_raw_lines(path: Path) -> Iterator[tuple[int, str]]:
    """All lines (blank ones included, so csv line numbers stay right), without line endings."""
    if not path.is_file():
        raise AnnotationError(path, "annotation file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    yield from enumerate(text.splitlines(), start=1)


# ----------------------------------------------------------------------------------------------
# generic CSV


#: Header names of the generic CSV's columns: ``path,label`` and the usual other spellings.
_CSV_PATH_HEADERS = frozenset({"path", "video", "file", "filename", "video_path", "clip"})
_CSV_LABEL_HEADERS = frozenset({"label", "class", "class_name", "category", "label_name"})


def read_csv_annotations(
    csv_path: str | Path,
    root: str | Path,
    class_names: Sequence[str] | None = None,
    split: str = "",
) -> TrimmedAnnotations:
    """Read a generic CSV ``path,label[,start_s,end_s]`` (header line optional; ``video``, ``file`` or
    ``filename`` for ``path`` and ``class`` or ``category`` for ``label`` are read as a header too).

    ``path`` is relative to ``root`` (or absolute). ``label`` is either a class index (when every
    label in the file is an integer) or a class name. With ``class_names`` given, indices must be in
    range and names must be among them (an unknown name is an error); without, names are indexed in
    sorted order and indices define ``max + 1`` classes named ``"0"``, ``"1"``... ``start_s`` and
    ``end_s`` (both or neither, seconds) bound the clip inside the file; empty cells mean the whole
    file. ``video_id`` is the path without extension (unique even when stems repeat across folders),
    suffixed with the start time when one file holds several clips.

    A file of paths only (one field per row, header ``path`` optional) is unlabelled: its records
    are ``UNLABELLED`` and ``class_names`` (if given) is kept as the class list.
    """
    csv_path, root = Path(csv_path), Path(root)
    rows: list[tuple[int, list[str]]] = []
    first, labelled_header = True, False
    for number, line in _numbered_raw_lines(csv_path):
        if not line.strip():
            continue
        row = [cell.strip() for cell in next(csv.reader([line]))]
        names = [c.lower() for c in row]
        if first and len(names) >= 2 and names[0] in _CSV_PATH_HEADERS and names[1] in _CSV_LABEL_HEADERS:
            first, labelled_header = False, True
            continue  # header
        if first and len(names) == 1 and names[0] in _CSV_PATH_HEADERS:
            first = False
            continue  # header of an unlabelled file
        first = False
        if len(row) not in ((2, 4) if labelled_header else (1, 2, 4)):
            raise AnnotationError(
                csv_path,
                f"expected 'path,label' or 'path,label,start_s,end_s' (or 'path' alone, unlabelled), "
                f"got {len(row)} fields",
                line=number,
            )
        if not row[0]:
            raise AnnotationError(csv_path, "empty path", line=number)
        if len(row) >= 2 and not row[1]:
            raise AnnotationError(csv_path, "empty label", line=number)
        rows.append((number, row))
    if not rows:
        raise AnnotationError(csv_path, "no rows")
    unlabelled = [number for number, row in rows if len(row) == 1]
    if unlabelled and len(unlabelled) < len(rows):
        raise AnnotationError(
            csv_path, "a path without a label in a file whose other rows have labels", line=unlabelled[0]
        )
    if unlabelled:
        return _unlabelled_csv(csv_path, root, rows, class_names, split)

    by_index = all(_is_int(row[1]) for _, row in rows)
    if by_index:
        indices = [int(row[1]) for _, row in rows]
        names = (
            list(class_names)
            if class_names is not None
            else [str(i) for i in range(max(max(indices), 0) + 1)]
        )
        for (number, _), idx in zip(rows, indices):
            if not 0 <= idx < len(names):
                raise AnnotationError(csv_path, f"label {idx} out of range 0..{len(names) - 1}", line=number)
    else:
        names = list(class_names) if class_names is not None else sorted({row[1] for _, row in rows})
        lookup = {name: i for i, name in enumerate(names)}
        indices = []
        for number, row in rows:
            if row[1] not in lookup:
                raise AnnotationError(csv_path, f"unknown class {row[1]!r}", line=number)
            indices.append(lookup[row[1]])

    records: list[ClipRecord] = []
    ids: dict[str, int] = {}
    for (number, row), label in zip(rows, indices):
        start = end = None
        if len(row) == 4 and (row[2] or row[3]):
            start = _parse_float(row[2], csv_path, number, "start_s")
            end = _parse_float(row[3], csv_path, number, "end_s")
            if not 0 <= start < end:
                raise AnnotationError(csv_path, f"need 0 <= start_s < end_s, got {start}, {end}", line=number)
        relative = Path(row[0])
        video_id = relative.with_suffix("").as_posix()
        if start is not None:
            video_id = f"{video_id}@{start:g}"
        if video_id in ids:
            raise AnnotationError(
                csv_path, f"{row[0]!r} listed twice (also line {ids[video_id]})", line=number
            )
        ids[video_id] = number
        records.append(
            ClipRecord(
                path=str(root / relative),
                label=label,
                video_id=video_id,
                start_s=start,
                end_s=end,
                split=split,
            )
        )
    return TrimmedAnnotations(records, names, source=str(csv_path), splits=(split,))


def _unlabelled_csv(
    csv_path: Path,
    root: Path,
    rows: list[tuple[int, list[str]]],
    class_names: Sequence[str] | None,
    split: str,
) -> TrimmedAnnotations:
    """Records of a CSV of paths only (prediction, feature extraction)."""
    records: list[ClipRecord] = []
    ids: dict[str, int] = {}
    for number, (relative,) in rows:
        video_id = Path(relative).with_suffix("").as_posix()
        if video_id in ids:
            raise AnnotationError(
                csv_path, f"{relative!r} listed twice (also line {ids[video_id]})", line=number
            )
        ids[video_id] = number
        records.append(ClipRecord(str(root / relative), UNLABELLED, video_id, split=split))
    names = list(class_names) if class_names is not None else []
    return TrimmedAnnotations(records, names, source=str(csv_path), splits=(split,), labelled=False)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# the synthetic audio-visual set (xmkd.data.synthetic.av)


def synthetic_layout(root: str | os.PathLike) -> tuple[Path, Path]:
    """(videos folder, UCF101-style splits folder) of a set written by ``ensure_synthetic_av``.

    The generator writes ``<root>/videos/<Class>/<file>.mp4`` and lists them, relative to
    ``videos/``, in ``<root>/splits/`` (classInd.txt, trainlist0N.txt, testlist0N.txt).
    """
    root = Path(root)
    return root / "videos", root / "splits"
