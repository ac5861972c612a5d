"""ESC-50 reader (official CSV layout), audio clip dataset and DataModule on tiny wav files."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from xmkd.data.readers.esc50 import read_esc50
from xmkd.errors import AnnotationError

HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def _wav(path: Path, seconds: float, rate: int = 44100, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    data = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())


def make_esc50(root: Path, files_per_fold: int = 2, classes: int = 2, seconds: float = 1.0) -> Path:
    rows = []
    for fold in range(1, 6):
        for i in range(files_per_fold):
            target = i % classes
            name = f"{fold}-{100 + i}-A-{target}.wav"
            rows.append(f"{name},{fold},{target},class{target},False,{100 + i},A\n")
            _wav(root / "audio" / name, seconds, freq=300.0 + 200 * target)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "esc50.csv").write_text(HEADER + "".join(rows))
    return root


def test_reads_folds_labels_and_paths(tmp_path: Path) -> None:
    root = make_esc50(tmp_path / "ESC-50")
    ann = read_esc50(root, fold=3)
    assert ann.class_names == ["class0", "class1"]
    test = ann.split("test")
    assert len(test) == 2 and all(r.video_id.startswith("3-") for r in test)
    assert len(ann.split("train")) == 8
    assert test[1].label == 1 and test[1].path == str(root / "audio" / "3-101-A-1.wav")


def test_real_official_row_format(tmp_path: Path) -> None:
    # The first rows of the official ESC-50 meta/esc50.csv, as distributed.
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(
        HEADER
        + "1-100032-A-0.wav,1,0,dog,True,100032,A\n"
        + "1-100038-A-14.wav,1,14,chirping_birds,False,100038,A\n"
    )
    with pytest.raises(AnnotationError, match="never appear"):
        read_esc50(tmp_path, 1)  # targets 1..13 absent: a truncated CSV is an error


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a.wav,6,0,dog,True,1,A\n", "fold 6"),
        ("a.wav,1,x,dog,True,1,A\n", "integers"),
        ("a.wav,1,0,dog\n", "fields"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(HEADER + row)
    with pytest.raises(AnnotationError, match=message) as info:
        read_esc50(tmp_path)
    assert info.value.line == 2 and info.value.path.endswith("esc50.csv")


def test_inconsistent_category_and_bad_header(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    meta = tmp_path / "meta" / "esc50.csv"
    meta.write_text(HEADER + "a.wav,1,0,dog,True,1,A\nb.wav,1,0,cat,True,1,A\n")
    with pytest.raises(AnnotationError, match="'cat' here but 'dog'"):
        read_esc50(tmp_path)
    meta.write_text("file,fold\n")
    with pytest.raises(AnnotationError, match="lacks column"):
        read_esc50(tmp_path)
    with pytest.raises(AnnotationError, match="fold must be"):
        read_esc50(tmp_path, fold=0)
