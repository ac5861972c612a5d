"""``xmkd data inspect`` for trimmed datasets: counts, decoded samples and failures as one JSON object."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import types
from pathlib import Path

from tests.data.media import (
    write_elementary_stream,
    write_garbage,
    write_streamed_avi,
    write_truncated,
    write_video,
)
from xmkd.data.readers.trimmed import ClipRecord
from xmkd.data.tools import inspect as tool

UCF_SPLITS = "ucf101/splits/ucfTrainTestlist"


def run_tool(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    parser = argparse.ArgumentParser()
    tool.add_arguments(parser)
    rc = tool.run(parser.parse_args(argv))
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else None), err


def test_ucf101_acceptance_on_real_files(realdata, tmp_path: Path, capsys) -> None:
    splits = realdata(UCF_SPLITS)
    root = tmp_path / "UCF-101"
    for name, cls in (
        ("v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup"),
        ("v_BaseballPitch_g01_c01.avi", "BaseballPitch"),
    ):
        (root / cls).mkdir(parents=True)
        shutil.move(realdata(f"ucf101/videos/{name}"), root / cls / name)
    rc, result, _ = run_tool(
        ["ucf101", "--root", str(root), "--splits", str(splits), "--fold", "1", "--decode", "2"], capsys
    )
    assert rc == 0
    assert result["num_classes"] == 101
    assert {k: (v["listed"], v["found"]) for k, v in result["splits"].items()} == {
        "train": (9537, 0),
        "test": (3783, 2),
    }
    assert result["failures"] == []
    decoded = {d["video_id"]: d for d in result["decoded"]}
    assert set(decoded) == {"v_ApplyEyeMakeup_g01_c01", "v_BaseballPitch_g01_c01"}
    apply, pitch = decoded["v_ApplyEyeMakeup_g01_c01"], decoded["v_BaseballPitch_g01_c01"]
    assert apply["in_time_order"] and pitch["in_time_order"]
    assert (apply["fps"], apply["has_audio"], apply["shape"]) == (25.0, True, [16, 240, 320, 3])
    assert (pitch["fps"], pitch["has_audio"]) == (29.97, False)


def test_hmdb51_split1_counts(realdata, tmp_path: Path, capsys) -> None:
    rc, result, _ = run_tool(
        ["hmdb51", "--root", str(tmp_path), "--splits", str(realdata("hmdb51/splits"))], capsys
    )
    assert rc == 0
    assert result["num_classes"] == 51
    assert {k: (v["listed"], v["found"]) for k, v in result["splits"].items()} == {
        "train": (3570, 0),
        "test": (1530, 0),
    }
    assert result["decoded"] == [] and len(result["splits"]["test"]["missing_examples"]) == 3


def kinetics_tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "k"
    write_video(root / "air_drumming" / "AAA_000004_000014.mp4", num_frames=20, fps=10, size=32)
    write_video(root / "abseiling" / "CCC_000001_000011.mp4", num_frames=20, fps=10, size=32, audio=False)
    write_garbage(root / "abseiling" / "DDD_000002_000012.mp4")
    csv_path = tmp_path / "k.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        '"air drumming",AAA,4,14,val,0\n"air drumming",BBB,0,10,val,0\n'
        "abseiling,CCC,1,11,train,0\nabseiling,DDD,2,12,train,0\n"
    )
    return root, csv_path


def test_kinetics_counts_decodes_and_reports_bad_file(tmp_path: Path, capsys) -> None:
    root, csv_path = kinetics_tree(tmp_path)
    rc, result, _ = run_tool(
        ["kinetics", "--root", str(root), "--csv", str(csv_path), "--decode", "5"], capsys
    )
    assert rc == 1  # one decoded file failed
    assert result["num_classes"] == 2
    assert result["splits"]["val"] == {
        "listed": 2,
        "found": 1,
        "missing_examples": [str(root / "air drumming" / "BBB_000000_000010.mp4")],
    }
    assert (result["splits"]["train"]["listed"], result["splits"]["train"]["found"]) == (2, 2)
    assert sorted(d["video_id"] for d in result["decoded"]) == ["AAA_000004_000014", "CCC_000001_000011"]
    for d in result["decoded"]:
        assert d["in_time_order"] and d["fps"] == 10.0 and d["frames_decoded"] == 16
    assert [d["has_audio"] for d in sorted(result["decoded"], key=lambda d: d["video_id"])] == [True, False]
    assert [f["path"] for f in result["failures"]] == [str(root / "abseiling" / "DDD_000002_000012.mp4")]


def test_kinetics_class_subset_and_unknown_class(tmp_path: Path, capsys) -> None:
    root, csv_path = kinetics_tree(tmp_path)
    rc, result, _ = run_tool(
        ["kinetics", "--root", str(root), "--csv", str(csv_path), "--classes", "air drumming"], capsys
    )
    assert rc == 0 and result["num_classes"] == 1 and list(result["splits"]) == ["val"]
    rc, result, err = run_tool(
        ["kinetics", "--root", str(root), "--csv", str(csv_path), "--classes", "air drums"], capsys
    )
    assert rc == 2 and result is None
    assert "k.csv: unknown class 'air drums'" in err


def test_csv_with_test_file(tmp_path: Path, capsys) -> None:
    write_video(tmp_path / "v" / "a.mp4", num_frames=8, fps=8, size=32, audio=False)
    (tmp_path / "train.csv").write_text("path,label\nv/a.mp4,run\nv/b.mp4,jump\n")
    (tmp_path / "test.csv").write_text("v/a.mp4,run,0,0.5\n")
    argv = [
        "csv",
        "--root",
        str(tmp_path),
        "--csv",
        str(tmp_path / "train.csv"),
        "--test-csv",
        str(tmp_path / "test.csv"),
    ]
    rc, result, _ = run_tool([*argv, "--decode", "2", "--frames", "4"], capsys)
    assert rc == 0
    assert result["splits"]["train"]["listed"] == 2 and result["splits"]["train"]["found"] == 1
    assert result["splits"]["test"]["found"] == 1
    assert [(d["split"], d["frames_decoded"]) for d in result["decoded"]] == [("train", 4), ("test", 4)]


def test_real_file_quirks_rate_count_and_the_true_cause_of_each_failure(tmp_path: Path, capsys) -> None:
    """A raw 29.97 fps stream named .mp4, an AVI without an index, and a 30%-truncated mp4 and AVI:
    inspect reports the timestamps' rate and the streams' frame counts, and calls each truncated
    file truncated (it used to pass the mp4, whose first frames decode, and to blame the raw
    stream's frame order)."""
    v = tmp_path / "v"
    write_elementary_stream(v / "raw.mp4", num_frames=120)
    write_streamed_avi(v / "streamed.avi", num_frames=100, fps=25)
    kw = {"keep_fraction": 0.3, "num_frames": 140, "fps": 10, "size": (160, 120)}
    write_truncated(v / "cut_mp4.mp4", faststart=True, **kw)
    write_truncated(v / "cut_avi.avi", codec="mpeg4", **kw)
    names = ["raw.mp4", "streamed.avi", "cut_mp4.mp4", "cut_avi.avi"]
    (tmp_path / "all.csv").write_text("".join(f"v/{n},{i}\n" for i, n in enumerate(names)))
    argv = ["csv", "--root", str(tmp_path), "--csv", str(tmp_path / "all.csv"), "--decode", "4"]
    rc, result, err = run_tool(argv, capsys)
    assert rc == 1, err
    decoded = {Path(d["path"]).name: d for d in result["decoded"]}
    assert sorted(decoded) == ["raw.mp4", "streamed.avi"]
    raw, avi = decoded["raw.mp4"], decoded["streamed.avi"]
    assert (raw["fps"], raw["fps_source"], raw["num_frames"], raw["in_time_order"]) == (
        29.97,
        "timestamps",
        120,
        True,
    )
    assert (avi["fps"], avi["num_frames"], avi["duration_s"]) == (25.0, 100, 4.0)
    reasons = {Path(f["path"]).name: f["reason"] for f in result["failures"]}
    assert sorted(reasons) == ["cut_avi.avi", "cut_mp4.mp4"]
    for reason in reasons.values():
        assert re.fullmatch(r"truncated: data ends at \d\.\d\d s of 14\.00 s", reason), reason


def test_kinetics_test_csv_without_labels(tmp_path: Path, capsys) -> None:
    """The official test CSV has no label column: inspect lists and decodes its clips."""
    write_video(tmp_path / "test" / "C_000004_000014.mp4", num_frames=8, fps=8, size=32, audio=False)
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\nC,4,14,test\nD,1,11,test\n")
    argv = [
        "kinetics",
        "--root",
        str(tmp_path / "test"),
        "--csv",
        str(tmp_path / "test.csv"),
        "--decode",
        "2",
    ]
    rc, result, err = run_tool(argv, capsys)
    assert rc == 0, err
    assert (result["labelled"], result["num_classes"]) == (False, 0)
    assert (result["splits"]["test"]["listed"], result["splits"]["test"]["found"]) == (2, 1)
    assert [d["video_id"] for d in result["decoded"]] == ["C_000004_000014"]


def test_malformed_annotation_exits_2_naming_file_and_line(tmp_path: Path, capsys) -> None:
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_bytes(b"1 Archery\r\n2\r\n")
    rc, result, err = run_tool(["ucf101", "--root", str(tmp_path), "--splits", str(splits)], capsys)
    assert rc == 2 and result is None
    assert f"{splits / 'classInd.txt'}:2: expected '<index> <ClassName>'" in err


def test_choose_for_decoding_alternates_splits_and_skips_missing() -> None:
    recs = [ClipRecord(f"{s}{i}", 0, f"{s}{i}", split=s) for s in ("train", "test") for i in range(3)]
    exists = [True, False, True, False, True, True]
    chosen = tool.choose_for_decoding(recs, exists, 3)
    assert [r.video_id for r in chosen] == ["train0", "test1", "train2"]
    assert len(tool.choose_for_decoding(recs, exists, 10)) == 4


def test_untrimmed_extension_contract(monkeypatch, capsys) -> None:
    fake = types.ModuleType("xmkd.data.tools.inspect_untrimmed")

    def register(subparsers) -> None:
        p = subparsers.add_parser("toyset")
        p.add_argument("--decode", type=int, default=0)
        p.set_defaults(inspect=lambda args: {"num_classes": 7, "splits": {}, "decoded": [], "failures": []})

    fake.register = register
    monkeypatch.setitem(sys.modules, "xmkd.data.tools.inspect_untrimmed", fake)
    rc, result, _ = run_tool(["toyset"], capsys)
    assert rc == 0 and result["num_classes"] == 7

    def register_printing(subparsers) -> None:  # the other accepted form: func(args) -> int
        p = subparsers.add_parser("printset")
        p.set_defaults(func=lambda args: print(json.dumps({"num_classes": 3})) or 0)

    fake.register = register_printing
    rc, result, _ = run_tool(["printset"], capsys)
    assert rc == 0 and result == {"num_classes": 3}


def test_through_the_xmkd_command(realdata, tmp_path: Path, capsys) -> None:
    from xmkd.cli import main

    splits = realdata(UCF_SPLITS)
    assert (
        main(["data", "inspect", "ucf101", "--root", str(tmp_path), "--splits", str(splits), "--fold", "2"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert (result["splits"]["train"]["listed"], result["splits"]["test"]["listed"]) == (9586, 3734)


def test_synth_reads_the_generated_set(tmp_path: Path, capsys) -> None:
    from xmkd.data.synthetic.av import ensure_synthetic_av

    root = ensure_synthetic_av(
        tmp_path / "synth", classes=2, clips_per_class=4, duration=1.0, size=32, fps=8, workers=1
    )
    rc, result, _ = run_tool(["synth", "--root", str(root), "--decode", "2", "--frames", "8"], capsys)
    assert rc == 0 and result["num_classes"] == 2 and result["failures"] == []
    counts = {k: (v["listed"], v["found"]) for k, v in result["splits"].items()}
    assert sum(listed for listed, _ in counts.values()) == 8
    assert all(listed == found for listed, found in counts.values())
    assert [
        (d["frames_decoded"], d["fps"], d["has_audio"], d["in_time_order"]) for d in result["decoded"]
    ] == [(8, 8.0, True, True)] * 2


def test_untrimmed_subcommands_dispatch(realdata, capsys) -> None:
    rc, result, _ = run_tool(["charades", "--annotations", str(realdata("charades/charades.json"))], capsys)
    assert rc == 0 and result["dataset"] == "charades"
