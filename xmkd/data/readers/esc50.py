"""ESC-50 (environmental sounds): the official ``meta/esc50.csv`` reader. The audio clip dataset and
its DataModule are in :mod:`xmkd.data.datasets.audio_clips`.

The release holds ``meta/esc50.csv`` (``filename,fold,target,category,esc10,src_file,take``) and the
5 s, 44.1 kHz mono wav files under ``audio/``. Evaluation uses the 5 official folds: fold ``k`` is
the test set, the other four the training set. Records use the trimmed readers' form
(:class:`~xmkd.data.readers.trimmed.ClipRecord` / ``TrimmedAnnotations``), so the same SVM and
classifier code evaluates video and audio datasets; samples carry ``audio`` (16 kHz mono waveform),
``label``, ``video_id`` (the file stem), ``clip_index`` and ``crop_index`` (always 0).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from xmkd.data.readers.trimmed import ClipRecord, TrimmedAnnotations
from xmkd.errors import AnnotationError

__all__ = ["ESC50_FOLDS", "read_esc50"]

ESC50_FOLDS = (1, 2, 3, 4, 5)
_REQUIRED = ("filename", "fold", "target", "category")


def read_esc50(root: str | Path, fold: int = 1, meta: str | Path | None = None) -> TrimmedAnnotations:
    """Read ``<root>/meta/esc50.csv``: records of fold ``fold`` get split ``test``, the rest ``train``.

    Labels are the CSV's ``target`` (0-49); class names come from ``category`` and must agree for
    every row of a target. Audio paths are ``<root>/audio/<filename>``.
    """
    root = Path(root)
    meta = Path(meta) if meta is not None else root / "meta" / "esc50.csv"
    if fold not in ESC50_FOLDS:
        raise AnnotationError(meta, f"ESC-50 fold must be one of {ESC50_FOLDS}, got {fold}")
    if not meta.is_file():
        raise AnnotationError(meta, "ESC-50 metadata CSV not found (expected <root>/meta/esc50.csv)")
    try:
        lines = meta.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise AnnotationError(meta, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    reader = csv.reader(lines)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise AnnotationError(meta, f"header {','.join(header)!r} lacks column(s) {missing}", line=1)
    col = {name: i for i, name in enumerate(header)}
    names: dict[int, str] = {}
    rows: list[tuple[str, int, int]] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise AnnotationError(meta, f"expected {len(header)} fields, got {len(row)}", line=number)
        filename = row[col["filename"]].strip()
        if not filename:
            raise AnnotationError(meta, "empty filename", line=number)
        if filename in seen:
            raise AnnotationError(
                meta, f"{filename!r} listed twice (also line {seen[filename]})", line=number
            )
        seen[filename] = number
        try:
            row_fold, target = int(row[col["fold"]]), int(row[col["target"]])
        except ValueError:
            raise AnnotationError(meta, "fold and target must be integers", line=number) from None
        if row_fold not in ESC50_FOLDS:
            raise AnnotationError(meta, f"fold {row_fold} not in {ESC50_FOLDS}", line=number)
        if target < 0:
            raise AnnotationError(meta, f"negative target {target}", line=number)
        category = row[col["category"]].strip()
        if names.setdefault(target, category) != category:
            raise AnnotationError(
                meta, f"target {target} is {category!r} here but {names[target]!r} earlier", line=number
            )
        rows.append((filename, row_fold, target))
    if not rows:
        raise AnnotationError(meta, "no rows")
    num_classes = max(names) + 1
    gaps = [t for t in range(num_classes) if t not in names]
    if gaps:
        raise AnnotationError(meta, f"targets {gaps[:5]} never appear (targets must be 0..{num_classes - 1})")
    audio_dir = str(root / "audio")
    records = [
        ClipRecord(
            path=os.path.join(audio_dir, filename),
            label=target,
            video_id=os.path.splitext(filename)[0],
            split="test" if row_fold == fold else "train",
        )
        for filename, row_fold, target in rows
    ]
    return TrimmedAnnotations(records, [names[t] for t in range(num_classes)], str(meta), ("train", "test"))
