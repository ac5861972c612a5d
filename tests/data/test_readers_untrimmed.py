"""Readers of untrimmed-video annotations, on small files in the official layouts and the real JSONs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmkd.data.readers.untrimmed import (
    Segment,
    merge_annotations,
    read_charades_classes,
    read_charades_csv,
    read_class_names,
    read_pdan_json,
    read_pkummd,
    read_pkummd_label_file,
    read_pkummd_split,
    read_tsu_json,
)
from xmkd.errors import AnnotationError, ConfigError

CHARADES_HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
# rows in the exact style of Charades_v1_train.csv: quoted fields with commas, empty quality,
# empty actions, times with two decimals
CHARADES_ROWS = (
    '46GP8,HR43,Kitchen,6,7,Yes,"A person cooking on a stove, then looking out a window.",food;stove;window,'
    '"A person cooks food on a stove before looking out of a window.",c002 11.90 21.20;c001 0.00 12.60,24.83\n'
    'N11GT,0KZ7,Stairs,,,Yes,"One person opens the door, walks in.",door;stairs,'
    '"A person walks, runs and sits.",,30.50\n'
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def charades_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    classes = write(
        tmp_path / "Charades_v1_classes.txt",
        "c000 Holding some clothes\nc001 Putting clothes somewhere\nc002 Taking a laptop\n",
    )
    train = write(tmp_path / "Charades_v1_train.csv", CHARADES_HEADER + CHARADES_ROWS)
    test = write(
        tmp_path / "Charades_v1_test.csv",
        CHARADES_HEADER + 'YSKX3,HR43,Bedroom,7,7,Yes,"x, y",bed,"z",c000 1.00 40.00,31.00\n',
    )
    return train, test, classes


def test_charades_csv_official_layout(charades_files):
    train, test, classes = charades_files
    ann = read_charades_csv([train, test], classes)
    assert ann.class_names == ["Holding some clothes", "Putting clothes somewhere", "Taking a laptop"]
    by_id = {v.video_id: v for v in ann.videos}
    assert by_id["46GP8"].segments == [Segment(2, 11.9, 21.2), Segment(1, 0.0, 12.6)]
    assert by_id["46GP8"].duration_s == pytest.approx(24.83)
    assert by_id["46GP8"].subset == "training" and by_id["YSKX3"].subset == "testing"
    assert by_id["N11GT"].segments == []  # empty actions field: a video without actions, kept
    counts = ann.counts()
    assert counts["videos_per_subset"] == {"testing": 1, "training": 2}
    assert counts["videos_without_actions"] == 1
    assert counts["segments_past_end"] == 1  # YSKX3: 40.00 > 31.00


def test_charades_unknown_class_names_it(tmp_path, charades_files):
    _, _, classes = charades_files
    bad = write(
        tmp_path / "Charades_v1_train.csv", CHARADES_HEADER + CHARADES_ROWS.replace("c001 0.00", "c157 0.00")
    )
    with pytest.raises(AnnotationError, match=r"Charades_v1_train\.csv:2: .*unknown class id 'c157'"):
        read_charades_csv(bad, classes)


@pytest.mark.parametrize(
    ("actions", "reason"),
    [("c001 1.00", "not 'cNNN start end'"), ("c001 a 2.0", "bad times"), ("c001 -1.0 2.0", "negative start")],
)
def test_charades_malformed_action_names_line(tmp_path, charades_files, actions, reason):
    _, _, classes = charades_files
    row = f"ABCDE,S,Kitchen,1,1,Yes,s,o,d,c000 0.00 1.00;{actions},10.00\n"
    bad = write(tmp_path / "Charades_v1_train.csv", CHARADES_HEADER + CHARADES_ROWS + row)
    with pytest.raises(AnnotationError, match=reason) as err:
        read_charades_csv(bad, classes)
    assert err.value.line == 4 and err.value.path.endswith("Charades_v1_train.csv")


def test_charades_bad_header_and_unquoted_comma(tmp_path, charades_files):
    _, _, classes = charades_files
    with pytest.raises(AnnotationError, match="missing column"):
        read_charades_csv(write(tmp_path / "train.csv", "vid,length\nA,1.0\n"), classes)
    extra = CHARADES_HEADER + "ABCDE,S,Kitchen,1,1,Yes,a, b,o,d,,10.00\n"
    with pytest.raises(AnnotationError, match="unquoted comma"):
        read_charades_csv(write(tmp_path / "Charades_v1_test.csv", extra), classes)


def test_charades_classes_file_errors(tmp_path):
    with pytest.raises(AnnotationError, match="contiguous"):
        read_charades_classes(write(tmp_path / "c.txt", "c000 a\nc002 b\n"))
    with pytest.raises(AnnotationError, match="expected 'cNNN class name'") as err:
        read_charades_classes(write(tmp_path / "c.txt", "c000 a\nHolding\n"))
    assert err.value.line == 2
    assert read_class_names(write(tmp_path / "plain.txt", "walk\nrun\n\n")) == ["walk", "run"]


def pdan(tmp_path: Path, content: object, name: str = "ann.json") -> Path:
    return write(tmp_path / name, json.dumps(content))


def test_pdan_json_reads_seconds_and_keeps_quirks(tmp_path):
    path = pdan(
        tmp_path,
        {
            "A": {"subset": "training", "duration": 10.0, "actions": [[0, 1.0, 12.0], [2, 11.0, 13.0]]},
            "B": {"subset": "testing", "duration": 5.5, "actions": []},
            "C": {"subset": "testing", "duration": 4.0, "actions": [[1, 2.0, 2.0]]},
        },
    )
    ann = read_pdan_json(path, num_classes=3)
    assert [v.video_id for v in ann.videos] == ["A", "B", "C"]
    assert ann.videos[0].segments[0] == Segment(0, 1.0, 12.0) and ann.videos[0].fps is None
    c = ann.counts()
    assert (c["segments_past_end"], c["segments_outside"], c["segments_zero_length"]) == (2, 1, 1)
    assert c["videos_without_actions"] == 1
    assert read_pdan_json(path).num_classes == 3  # largest id + 1 without a count


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"subset": "training", "duration": 10.0, "actions": [[3, 1.0, 2.0]]}, "video V: unknown class id 3"),
        ({"subset": "training", "duration": 10.0, "actions": [[-1, 1.0, 2.0]]}, "unknown class id -1"),
        ({"subset": "training", "duration": 10.0, "actions": [[1, 1.0]]}, "must be \\[class, start, end\\]"),
        ({"subset": "training", "duration": 10.0, "actions": [[True, 1.0, 2.0]]}, "must be \\[class"),
        ({"subset": "training", "duration": 10.0, "actions": [[1.5, 1.0, 2.0]]}, "not an integer"),
        ({"subset": "training", "actions": []}, "missing key 'duration'"),
        ({"subset": "training", "duration": 0, "actions": []}, "duration must be a positive"),
    ],
)
def test_pdan_json_bad_entries_name_video(tmp_path, entry, reason):
    path = pdan(tmp_path, {"V": entry})
    with pytest.raises(AnnotationError, match=reason) as err:
        read_pdan_json(path, num_classes=3)
    assert err.value.path == str(path)


def test_pdan_json_syntax_error_gives_line(tmp_path):
    path = write(tmp_path / "bad.json", '{\n "A": {"subset": "training",\n "duration": 1.0,, }\n}')
    with pytest.raises(AnnotationError, match="invalid JSON") as err:
        read_pdan_json(path)
    assert err.value.line == 3


def test_tsu_frames_become_seconds(tmp_path):
    path = pdan(
        tmp_path,
        {"P02T01C06": {"subset": "testing", "duration": 2000, "actions": [[50, 20, 400], [0, 0, 2100]]}},
    )
    ann = read_tsu_json(path, fps=20.0)
    video = ann.videos[0]
    assert ann.num_classes == 51 and video.fps == 20.0
    assert video.duration_s == pytest.approx(100.0)
    assert video.segments == [Segment(50, 1.0, 20.0), Segment(0, 0.0, 105.0)]
    with pytest.raises(AnnotationError, match="unknown class id 51"):
        read_tsu_json(pdan(tmp_path, {"X": {"subset": "testing", "duration": 10, "actions": [[51, 0, 1]]}}))


# PKU-MMD: the official split list layout (cross-subject.txt), with its "Validataion" spelling
PKU_SPLIT = "Training videos: \n0002-L, 0002-M, 0002-R\nValidataion videos: \n0291-L, 0291-M\n"


@pytest.fixture()
def pku(tmp_path: Path) -> tuple[Path, Path]:
    labels = tmp_path / "Label"
    for vid, lines in {
        "0002-L": "41,56,142,1\n17,170,270,2\n",
        "0002-M": "41,56,142,1\n",
        "0002-R": "1,10,20,1\n51,900,960,1\n",
        "0291-L": "3,0,30,2\n\n",
        "0291-M": "3,0,30,2\n",
        "0999-L": "3,0,30,2\n",  # not in the split: ignored
    }.items():
        write(labels / f"{vid}.txt", lines)
    return labels, write(tmp_path / "Split" / "cross-subject.txt", PKU_SPLIT)


def test_pkummd_split_layout(pku):
    _, split = pku
    assert read_pkummd_split(split) == {
        "0002-L": "training",
        "0002-M": "training",
        "0002-R": "training",
        "0291-L": "testing",
        "0291-M": "testing",
    }


def test_pkummd_labels_1_based_frames_at_30fps(pku, tmp_path):
    labels, split = pku
    skeletons = tmp_path / "Data"
    for vid in ("0002-L", "0002-M", "0002-R", "0291-L", "0291-M"):
        write(skeletons / f"{vid}.txt", "0.1 0.2\n" * 3000)  # one line per frame
    ann = read_pkummd(labels, split, skeleton_dir=skeletons)
    by_id = {v.video_id: v for v in ann.videos}
    assert ann.num_classes == 51
    assert by_id["0002-L"].segments[0] == Segment(40, pytest.approx(56 / 30), pytest.approx(142 / 30))
    assert by_id["0002-R"].segments[1].label == 50
    assert by_id["0002-L"].duration_s == pytest.approx(100.0) and not by_id["0002-L"].duration_estimated
    assert "0999-L" not in by_id
    # without lengths the duration is the last action's end, flagged and counted
    est = read_pkummd(labels, split)
    assert est.counts()["durations_estimated"] == 5
    assert {v.video_id: v for v in est.videos}["0002-R"].duration_s == pytest.approx(32.0)
    given = read_pkummd(labels, split, durations={vid: 600 for vid in by_id})
    assert given.videos[0].duration_s == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("52,1,2,1\n", "unknown class id 52"),
        ("0,1,2,1\n", "unknown class id 0"),
        ("3;1;2;1\n", "expected 'label"),
    ],
)
def test_pkummd_bad_label_lines(pku, content, reason):
    labels, split = pku
    write(labels / "0002-M.txt", "41,56,142,1\n" + content)
    with pytest.raises(AnnotationError, match=reason) as err:
        read_pkummd(labels, split)
    assert err.value.path.endswith("0002-M.txt") and err.value.line == 2


def test_pkummd_missing_label_file_and_bad_split(pku, tmp_path):
    labels, split = pku
    (labels / "0291-M.txt").unlink()
    with pytest.raises(AnnotationError, match=r"0291-M.txt: label file for video 0291-M"):
        read_pkummd(labels, split)
    with pytest.raises(AnnotationError, match="before any 'Training videos:'"):
        read_pkummd_split(write(tmp_path / "s.txt", "0002-L, 0002-M\n"))
    with pytest.raises(AnnotationError, match="listed twice"):
        read_pkummd_split(
            write(tmp_path / "s.txt", "Training videos: \n0002-L\nValidataion videos: \n0002-L\n")
        )


def test_merge_refuses_different_class_lists(tmp_path):
    a = read_pdan_json(
        pdan(tmp_path, {"A": {"subset": "training", "duration": 1.0, "actions": []}}), num_classes=2
    )
    b = read_pdan_json(
        pdan(tmp_path, {"B": {"subset": "testing", "duration": 1.0, "actions": []}}, "b.json"), num_classes=3
    )
    with pytest.raises(AnnotationError, match="class list differs"):
        merge_annotations([a, b])


@pytest.mark.realdata
def test_real_charades_json_counts(realdata):
    ann = read_pdan_json(realdata("charades/charades.json"), num_classes=157)
    c = ann.counts()
    assert c["videos"] == 9848
    assert c["videos_per_subset"] == {"testing": 1863, "training": 7985}
    assert c["classes"] == 157 and c["segments"] == 66500
    # the real file's quirks, which the labelling rule must handle
    assert c["videos_without_actions"] == 223
    assert c["segments_past_end"] == 19623 and c["segments_outside"] == 5 and c["segments_zero_length"] == 7
    assert {s.label for v in ann.videos for s in v.segments} == set(range(157))


@pytest.mark.realdata
def test_real_tsu_json_counts(realdata):
    ann = read_tsu_json(realdata("tsu/tsu_cs.json"))
    c = ann.counts()
    assert c["videos"] == 536 and c["videos_per_subset"] == {"testing": 185, "training": 351}
    assert c["classes"] == 51 and c["segments"] == 41288
    assert c["segments_past_end"] == 0
    first = next(v for v in ann.videos if v.video_id == "P11T15C01")
    assert first.duration_s == pytest.approx(22760 / 20) and first.segments[0] == Segment(
        27, 77 / 20, 987 / 20
    )


# ------------------------------------------------------------------------------------ class-id base
def multithumos_json(tmp_path: Path) -> Path:
    """The MultiTHUMOS layout: PDAN/super-events JSON, times in seconds, class ids 1..65."""
    data = {
        "video_validation_0000051": {"subset": "training", "duration": 30.0, "actions": [[1, 1.0, 5.0], [65, 2.0, 9.0]]},
        "video_test_0000004": {"subset": "testing", "duration": 20.0, "actions": [[17, 0.5, 3.0]]},
    }  # fmt: skip
    return write(tmp_path / "multithumos.json", json.dumps(data))


def test_multithumos_json_numbers_classes_from_1(tmp_path):
    """Its loaders subtract 1 (PDAN, super-events): id 1 is column 0, id 65 column 64. Read as
    0-based it was refused ('unknown class id 65'), and num_classes: 66 shifted every label."""
    from xmkd.data.datasets.untrimmed import load_annotations

    path = multithumos_json(tmp_path)
    ann = load_annotations("multithumos", [str(path)])
    assert (ann.num_classes, ann.class_id_base) == (65, 1)
    segments = {v.video_id: v.segments for v in ann.videos}
    assert segments["video_validation_0000051"] == [Segment(0, 1.0, 5.0), Segment(64, 2.0, 9.0)]
    assert segments["video_test_0000004"] == [Segment(16, 0.5, 3.0)]
    assert read_pdan_json(path, num_classes=65, class_id_base=1).videos[0].segments[1].label == 64
    # the same file read as 0-based: a clear error naming the file, the video and the base
    with pytest.raises(AnnotationError, match=r"multithumos\.json: video video_validation_0000051: unknown class id 65 "
                       r"\(expected 0\.\.64\); class ids were read as counting from 0.*class_id_base: 1"):  # fmt: skip
        load_annotations("pdan_json", [str(path)], num_classes=65)


def test_each_format_has_its_class_id_base_and_refuses_ids_that_do_not_fit(tmp_path):
    from xmkd.data.datasets.untrimmed import FORMAT_CLASS_ID_BASE, load_annotations

    assert FORMAT_CLASS_ID_BASE == {
        "charades_csv": 0, "pdan_json": 0, "multithumos": 1, "tsu": 0, "pkummd": 1, "synthetic": 0,
    }  # fmt: skip
    zero = write(
        tmp_path / "zero.json",
        json.dumps({"V": {"subset": "training", "duration": 9, "actions": [[0, 1, 2]]}}),
    )
    with pytest.raises(
        AnnotationError,
        match=r"zero\.json: video V: unknown class id 0 \(expected 1\.\.65\).*class_id_base: 0",
    ):
        load_annotations("multithumos", [str(zero)])
    assert load_annotations("multithumos", [str(zero)], class_id_base=0).class_id_base == 0
    assert load_annotations("tsu", [str(zero)]).videos[0].segments[0].label == 0
    with pytest.raises(ConfigError, match="class_id_base"):
        load_annotations("pdan_json", [str(zero)], class_id_base=2)
    with pytest.raises(AnnotationError, match=r"unknown class id 51 \(expected 0\.\.50\)"):
        read_tsu_json(
            write(
                tmp_path / "t.json",
                json.dumps({"X": {"subset": "testing", "duration": 10, "actions": [[51, 0, 1]]}}),
            )
        )


def test_pkummd_base_can_be_given(tmp_path):
    label = write(tmp_path / "L" / "0002-L.txt", "0,1,30,1\n50,31,60,1\n")
    assert [s.label for s in read_pkummd_label_file(label, class_id_base=0)] == [0, 50]
    with pytest.raises(
        AnnotationError,
        match=r"0002-L\.txt:1: segment: unknown class id 0 \(expected 1\.\.51\).*class_id_base: 0",
    ):
        read_pkummd_label_file(label)


@pytest.mark.realdata
def test_real_files_fit_their_default_base(realdata):
    """The shipped Charades and TSU JSONs hold ids from 0 (0..156, 0..50): base 0 reads every id."""
    from xmkd.data.datasets.untrimmed import load_annotations

    charades = load_annotations("pdan_json", [str(realdata("charades/charades.json"))], num_classes=157)
    tsu = load_annotations("tsu", [str(realdata("tsu/tsu_cs.json"))])
    for ann, n in ((charades, 157), (tsu, 51)):
        labels = {s.label for v in ann.videos for s in v.segments}
        assert ann.class_id_base == 0 and labels == set(range(n))
