"""Trimmed-video annotation readers: the official files as shipped, and every malformed case."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xmkd.data.readers.trimmed import (
    UNLABELLED,
    ClipRecord,
    kinetics_clip_name,
    read_class_list,
    read_csv_annotations,
    read_hmdb51,
    read_kinetics_csv,
    read_ucf101,
    read_ucf101_class_index,
)
from xmkd.errors import AnnotationError

UCF_SPLITS = "ucf101/splits/ucfTrainTestlist"


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


# ---------------------------------------------------------------------------------------------
# UCF101, real files


@pytest.mark.parametrize(("fold", "train", "test"), [(1, 9537, 3783), (2, 9586, 3734), (3, 9624, 3696)])
def test_ucf101_official_folds(realdata, tmp_path: Path, fold: int, train: int, test: int) -> None:
    splits = realdata(UCF_SPLITS)
    assert b"\r\n" in (splits / "classInd.txt").read_bytes()  # the quirk this reader must survive
    ann = read_ucf101(splits, tmp_path / "videos", fold=fold)
    assert ann.num_classes == 101
    assert len(ann.split("train")) == train
    assert len(ann.split("test")) == test
    assert {r.label for r in ann.records} == set(range(101))
    assert len({r.video_id for r in ann.records}) == train + test
    assert not any(r.video_id.endswith("\r") or r.path.endswith("\r") for r in ann.records)


def test_ucf101_labels_come_from_folder(realdata, tmp_path: Path) -> None:
    ann = read_ucf101(realdata(UCF_SPLITS), tmp_path, fold=1)
    # File names spell the class differently from the folder and classInd.txt (HandStand vs Handstand).
    odd = [r for r in ann.split("test") if r.video_id == "v_HandStandPushups_g01_c01"]
    assert len(odd) == 1
    assert ann.class_names[odd[0].label] == "HandstandPushups"
    assert ann.class_names[0] == "ApplyEyeMakeup" and ann.class_names[100] == "YoYo"
    first_train = ann.split("train")[0]
    assert first_train == ClipRecord(
        path=str(tmp_path / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi"),
        label=0,
        video_id="v_ApplyEyeMakeup_g08_c01",
        split="train",
    )


def test_ucf101_resolves_class_folder_and_flat_layouts(realdata, tmp_path: Path) -> None:
    splits = realdata(UCF_SPLITS)
    nested = realdata("ucf101/videos/v_ApplyEyeMakeup_g01_c01.avi")  # copied into tmp, flat
    root = tmp_path / "root"
    (root / "ApplyEyeMakeup").mkdir(parents=True)
    os.link(nested, root / "ApplyEyeMakeup" / nested.name)
    os.link(realdata("ucf101/videos/v_BaseballPitch_g01_c01.avi"), root / "v_BaseballPitch_g01_c01.avi")
    ann = read_ucf101(splits, root, fold=1)
    by_id = {r.video_id: r for r in ann.records}
    assert by_id["v_ApplyEyeMakeup_g01_c01"].path == str(root / "ApplyEyeMakeup" / nested.name)
    assert by_id["v_BaseballPitch_g01_c01"].path == str(root / "v_BaseballPitch_g01_c01.avi")
    assert sum(os.path.exists(r.path) for r in ann.records) == 2


# ---------------------------------------------------------------------------------------------
# UCF101, hand-made malformed files in the official layout


def ucf_tree(tmp_path: Path, classind: str, train: str, test: str) -> Path:
    d = tmp_path / "ucfTrainTestlist"
    write(d / "classInd.txt", classind, "\r\n")
    write(d / "trainlist01.txt", train, "\r\n")
    write(d / "testlist01.txt", test, "\r\n")
    return d


GOOD_CLASSIND = "1 Archery\n2 YoYo\n"
GOOD_TRAIN = "Archery/v_Archery_g01_c01.avi 1\nYoYo/v_YoYo_g01_c01.avi 2\n"
GOOD_TEST = "YoYo/v_YoYo_g02_c01.avi\n"


def test_ucf101_tiny_good_tree(tmp_path: Path) -> None:
    ann = read_ucf101(ucf_tree(tmp_path, GOOD_CLASSIND, GOOD_TRAIN, GOOD_TEST), tmp_path)
    assert ann.class_names == ["Archery", "YoYo"]
    assert [(r.video_id, r.label, r.split) for r in ann.records] == [
        ("v_Archery_g01_c01", 0, "train"),
        ("v_YoYo_g01_c01", 1, "train"),
        ("v_YoYo_g02_c01", 1, "test"),
    ]


@pytest.mark.parametrize(
    ("classind", "train", "test", "bad_file", "line", "words"),
    [
        ("1 Archery\n2\n", GOOD_TRAIN, GOOD_TEST, "classInd.txt", 2, "<index> <ClassName>"),
        ("1 Archery\n3 YoYo\n", GOOD_TRAIN, GOOD_TEST, "classInd.txt", 2, "expected 2, got 3"),
        ("1 Archery\nx YoYo\n", GOOD_TRAIN, GOOD_TEST, "classInd.txt", 2, "integer"),
        ("1 Archery\n2 Archery\n", GOOD_TRAIN, GOOD_TEST, "classInd.txt", 2, "twice"),
        (GOOD_CLASSIND, "Archery/v_Archery_g01_c01.avi 1\nYoYo/v_YoYo_g01_c01.avi 7\n", GOOD_TEST,
         "trainlist01.txt", 2, "out of range"),
        (GOOD_CLASSIND, "Archery/v_Archery_g01_c01.avi 2\n", GOOD_TEST, "trainlist01.txt", 1, "disagrees"),
        (GOOD_CLASSIND, "Archery/v_Archery_g01_c01.avi one\n", GOOD_TEST, "trainlist01.txt", 1, "integer"),
        (GOOD_CLASSIND, "v_Archery_g01_c01.avi 1\n", GOOD_TEST, "trainlist01.txt", 1, "Class/file.avi"),
        (GOOD_CLASSIND, "Archery/a.avi 1 extra\n", GOOD_TEST, "trainlist01.txt", 1, "Class/file.avi"),
        (GOOD_CLASSIND, GOOD_TRAIN, "YoYo/v_YoYo_g02_c01.avi\nBowling/v_Bowling_g01_c01.avi\n",
         "testlist01.txt", 2, "unknown class 'Bowling'"),
        (GOOD_CLASSIND, GOOD_TRAIN, "\n\n", "testlist01.txt", None, "no videos"),
    ],
)  # fmt: skip
def test_ucf101_malformed(tmp_path, classind, train, test, bad_file, line, words) -> None:
    splits = ucf_tree(tmp_path, classind, train, test)
    with pytest.raises(AnnotationError) as info:
        read_ucf101(splits, tmp_path)
    assert info.value.path == str(splits / bad_file)
    assert info.value.line == line
    assert words in str(info.value)
    assert bad_file in str(info.value)


def test_ucf101_missing_list_and_bad_fold(tmp_path: Path) -> None:
    splits = ucf_tree(tmp_path, GOOD_CLASSIND, GOOD_TRAIN, GOOD_TEST)
    with pytest.raises(AnnotationError, match=r"trainlist02.txt: annotation file not found"):
        read_ucf101(splits, tmp_path, fold=2)
    with pytest.raises(AnnotationError, match="fold must be one of"):
        read_ucf101(splits, tmp_path, fold=4)
    with pytest.raises(AnnotationError, match=r"classInd.txt: annotation file not found"):
        read_ucf101_class_index(tmp_path / "classInd.txt")


# ---------------------------------------------------------------------------------------------
# HMDB51


def test_hmdb51_official_split1(realdata, tmp_path: Path) -> None:
    splits = realdata("hmdb51/splits")
    assert (splits / "brush_hair_test_split1.txt").read_text().splitlines()[0].endswith(" ")  # quirk
    ann = read_hmdb51(splits, tmp_path, fold=1)
    assert ann.num_classes == 51
    assert len(ann.split("train")) == 3570
    assert len(ann.split("test")) == 1530
    assert ann.class_names == sorted(ann.class_names)
    assert "climb" in ann.class_names and "climb_stairs" in ann.class_names  # prefix classes kept apart
    climb = ann.class_names.index("climb")
    assert all("climb_stairs" not in r.video_id or r.label != climb for r in ann.records)
    first = ann.split("train")[0]
    assert first.path == str(tmp_path / "brush_hair" / "April_09_brush_hair_u_nm_np1_ba_goo_0.avi")
    assert {len(ann.split(s)) for s in ("train", "test")} == {3570, 1530}


@pytest.mark.parametrize("fold", [2, 3])
def test_hmdb51_other_folds_balanced(realdata, tmp_path: Path, fold: int) -> None:
    ann = read_hmdb51(realdata("hmdb51/splits"), tmp_path, fold=fold)
    assert (ann.num_classes, len(ann.split("train")), len(ann.split("test"))) == (51, 3570, 1530)


def test_hmdb51_tiny_and_malformed(tmp_path: Path) -> None:
    d = tmp_path / "splits"
    write(d / "jump_test_split1.txt", "a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    write(d / "climb_stairs_test_split1.txt", "s.avi 2 \n")
    write(d / "class_list.txt", "bogus\n")
    ann = read_hmdb51(d, tmp_path / "videos")
    assert ann.class_names == ["climb_stairs", "jump"]
    assert [(r.video_id, r.label, r.split) for r in ann.records] == [
        ("s", 0, "test"),
        ("a", 1, "train"),
        ("b", 1, "test"),
    ]
    write(d / "jump_test_split1.txt", "a.avi 1 \nb.avi 3 \n")
    with pytest.raises(AnnotationError, match=r"jump_test_split1.txt:2: split flag must be 0, 1 or 2"):
        read_hmdb51(d, tmp_path)
    write(d / "jump_test_split1.txt", "a.avi\n")
    with pytest.raises(AnnotationError, match=r"jump_test_split1.txt:1: expected '<file>.avi <0\|1\|2>'"):
        read_hmdb51(d, tmp_path)
    write(d / "jump_test_split1.txt", "s.avi 1\n")
    with pytest.raises(AnnotationError, match=r"jump_test_split1.txt:1: 's.avi' is also listed in"):
        read_hmdb51(d, tmp_path)
    with pytest.raises(AnnotationError, match=r"no '<class>_test_split3.txt' files"):
        read_hmdb51(d, tmp_path, fold=3)
    with pytest.raises(AnnotationError, match="splits folder not found"):
        read_hmdb51(tmp_path / "nope", tmp_path)


# ---------------------------------------------------------------------------------------------
# Kinetics


def test_kinetics_real_val_csv(realdata, tmp_path: Path) -> None:
    csv_path = realdata("kinetics/kinetics-400_val.csv")
    ann = read_kinetics_csv(csv_path, tmp_path)
    assert ann.num_classes == 400
    assert len(ann.records) == 19906
    assert ann.splits == ("val",)
    assert ann.class_names == sorted(ann.class_names)
    assert "air drumming" in ann.class_names  # quoted label with a space, quotes stripped
    first = ann.records[0]
    assert first.video_id == "0wR5jVB-WPk_000417_000427"
    assert first.path == str(tmp_path / "abseiling" / "0wR5jVB-WPk_000417_000427.mp4")


def test_kinetics_class_subset_remaps_labels(realdata, tmp_path: Path) -> None:
    csv_path = realdata("kinetics/kinetics-400_val.csv")
    full = read_kinetics_csv(csv_path, tmp_path)
    subset = ["playing bagpipes", "air drumming"]
    ann = read_kinetics_csv(csv_path, tmp_path, classes=subset)
    assert ann.class_names == subset
    expected = [r for r in full.records if full.class_names[r.label] in subset]
    assert [r.video_id for r in ann.records] == [r.video_id for r in expected]
    assert [subset[r.label] for r in ann.records] == [full.class_names[r.label] for r in expected]
    with pytest.raises(AnnotationError, match=r"kinetics-400_val.csv: unknown class 'air drums'"):
        read_kinetics_csv(csv_path, tmp_path, classes=["air drums"])


def test_kinetics_path_layouts(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "k.csv",
        'label,youtube_id,time_start,time_end,split,is_cc\n"air drumming",AAA,4,14,train,0\n'
        '"air drumming",BBB,0,10,train,1\nabseiling,CCC,17.0,27.0,train,0\nabseiling,DDD,1,11,train,0\n',
    )
    root = tmp_path / "clips"
    for rel in (
        "air_drumming/AAA_000004_000014.mp4",
        "air drumming/BBB_000000_000010.mp4",
        "CCC_000017_000027.mp4",
    ):
        write(root / rel, "x")
    ann = read_kinetics_csv(csv_path, root)
    paths = [Path(r.path).relative_to(root).as_posix() for r in ann.records]
    assert paths == [
        "air_drumming/AAA_000004_000014.mp4",  # underscores in the folder name
        "air drumming/BBB_000000_000010.mp4",  # folder named as in the CSV
        "CCC_000017_000027.mp4",  # flat
        "abseiling/DDD_000001_000011.mp4",  # absent: the canonical place
    ]
    assert kinetics_clip_name("x", 3.0, 13.0) == "x_000003_000013.mp4"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("label,youtube_id,time_start\nabseiling,A,1\n", 1, "lacks column(s) ['time_end']"),
        ("label,youtube_id,time_start,time_end,split\nabseiling,A,1,11\n", 2, "expected 5 fields"),
        (
            "label,youtube_id,time_start,time_end,split\n\nabseiling,A,one,11,val\n",
            3,
            "time_start must be a number",
        ),
        ("label,youtube_id,time_start,time_end,split\nabseiling,A,11,1,val\n", 2, "must exceed"),
        ("label,youtube_id,time_start,time_end,split\n,A,1,11,val\n", 2, "empty label"),
        ("", None, "empty CSV"),
    ],
)
def test_kinetics_malformed(tmp_path: Path, text: str, line: int | None, words: str) -> None:
    csv_path = write(tmp_path / "k.csv", text)
    with pytest.raises(AnnotationError) as info:
        read_kinetics_csv(csv_path, tmp_path)
    assert (info.value.path, info.value.line) == (str(csv_path), line)
    assert words in str(info.value)


def test_class_list(tmp_path: Path) -> None:
    assert read_class_list(write(tmp_path / "c.txt", "a b\r\n\r\nc\r\n")) == ["a b", "c"]
    with pytest.raises(AnnotationError, match=r"c.txt:2: class 'a' listed twice"):
        read_class_list(write(tmp_path / "c.txt", "a\na\n"))


# ---------------------------------------------------------------------------------------------
# generic CSV


def test_generic_csv_names_header_and_times(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "a.csv", "path,label,start_s,end_s\nx/v1.mp4,run,,\nx/v2.mp4,jump,1.5,4\n", "\r\n"
    )
    ann = read_csv_annotations(csv_path, tmp_path, split="train")
    assert ann.class_names == ["jump", "run"]
    assert ann.records == [
        ClipRecord(str(tmp_path / "x/v1.mp4"), 1, "x/v1", None, None, "train"),
        ClipRecord(str(tmp_path / "x/v2.mp4"), 0, "x/v2@1.5", 1.5, 4.0, "train"),
    ]


def test_generic_csv_indices_without_header(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "a.csv", "v1.mp4,2\nv2.mp4,0\n")
    ann = read_csv_annotations(csv_path, tmp_path)
    assert ann.class_names == ["0", "1", "2"]
    assert [r.label for r in ann.records] == [2, 0]
    ann = read_csv_annotations(csv_path, tmp_path, class_names=["a", "b", "c", "d"])
    assert ann.num_classes == 4


@pytest.mark.parametrize(
    ("text", "class_names", "line", "words"),
    [
        ("v1.mp4,0\nv2.mp4,3\n", ["a", "b"], 2, "label 3 out of range 0..1"),
        ("v1.mp4,run\nv2.mp4,swim\n", ["run"], 2, "unknown class 'swim'"),
        ("path,label\nv1.mp4\n", None, 2, "expected 'path,label'"),
        ("v1.mp4,0,1\n", None, 1, "got 3 fields"),
        ("v1.mp4,0,5,2\n", None, 1, "start_s < end_s"),
        ("v1.mp4,0,a,2\n", None, 1, "start_s must be a number"),
        ("v1.mp4,0\nv1.mp4,1\n", None, 2, "listed twice"),
        (",0\n", None, 1, "empty path"),
        ("path,label\n", None, None, "no rows"),
    ],
)
def test_generic_csv_malformed(tmp_path: Path, text, class_names, line, words) -> None:
    csv_path = write(tmp_path / "a.csv", text)
    with pytest.raises(AnnotationError) as info:
        read_csv_annotations(csv_path, tmp_path, class_names=class_names)
    assert (info.value.path, info.value.line) == (str(csv_path), line)
    assert words in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "classInd.txt"
    path.write_bytes(b"1 Caf\xe9\n")
    with pytest.raises(AnnotationError, match="not UTF-8"):
        read_ucf101_class_index(path)


# ---------------------------------------------------------------------------------------------
# unlabelled files


def test_kinetics_test_csv_without_labels_is_read(realdata, tmp_path: Path) -> None:
    """The official test CSV is 'youtube_id,time_start,time_end,split': it used to be refused for
    lacking a label column; its clips are listed (flat under the root) with no label."""
    import csv as csv_module

    val = list(csv_module.reader(realdata("kinetics/kinetics-400_val.csv").read_text().splitlines()))
    header, rows = val[0], val[1:]
    keep = [header.index(c) for c in ("youtube_id", "time_start", "time_end", "split")]
    test_csv = tmp_path / "kinetics_test.csv"
    test_csv.write_text("\n".join(",".join(row[i] for i in keep) for row in [header, *rows]) + "\n")
    ann = read_kinetics_csv(test_csv, tmp_path / "test")
    assert not ann.labelled and ann.class_names == [] and len(ann.records) == 19906
    first = ann.records[0]
    assert (first.label, first.video_id) == (UNLABELLED, "0wR5jVB-WPk_000417_000427")
    assert first.path == str(tmp_path / "test" / "0wR5jVB-WPk_000417_000427.mp4")
    names = ["abseiling", "air drumming"]
    assert read_kinetics_csv(test_csv, tmp_path, classes=names).class_names == names  # kept, not a filter


def test_generic_csv_of_paths_only_is_unlabelled(tmp_path: Path) -> None:
    ann = read_csv_annotations(write(tmp_path / "p.csv", "path\nv/a.mp4\nv/b.mp4\n"), tmp_path, ["x", "y"])
    assert not ann.labelled and ann.class_names == ["x", "y"]
    assert [(r.label, r.video_id) for r in ann.records] == [(UNLABELLED, "v/a"), (UNLABELLED, "v/b")]
    with pytest.raises(AnnotationError, match=r"m\.csv:2: a path without a label"):
        read_csv_annotations(write(tmp_path / "m.csv", "v/a.mp4,run\nv/b.mp4\n"), tmp_path)
