"""`xmkd data inspect charades|tsu|pkummd|multithumos`: the JSON summary and its CLI wiring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from xmkd.data.synthetic.untrimmed import make_synthetic_untrimmed
from xmkd.data.tools.inspect_untrimmed import inspect_untrimmed, register


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    root = tmp_path / "w"
    make_synthetic_untrimmed(root, videos=8, classes=3, min_steps=20, max_steps=30)
    return root


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xmkd data inspect")
    register(parser.add_subparsers(dest="what", required=True))
    return parser.parse_args(argv)


def test_summary_counts_and_feature_problems(world):
    info = json.loads((world / "dataset.json").read_text())
    (world / "flow" / "SYN00001.npy").unlink()
    np.save(world / "flow" / "SYN00002.npy", np.zeros((7, 64), dtype=np.float32))  # T differs from rgb
    (world / "rgb" / "SYN00003.npy").write_bytes(b"garbage")
    s = inspect_untrimmed(
        "charades",
        [str(world / "Charades_v1_train.csv"), str(world / "Charades_v1_test.csv")],
        classes_file=str(world / "Charades_v1_classes.txt"),
        features=world,
    )
    assert s["videos"] == 8 and s["classes"] == 3 and s["segments"] == info["counts"]["segments"]
    assert s["videos_per_subset"] == {
        "testing": info["counts"]["testing"],
        "training": info["counts"]["training"],
    }
    assert (
        s["segments_clipped_to_duration"] + s["segments_outside_duration"]
        == info["counts"]["segments_past_end"]
    )
    f = s["features"]
    assert f["modalities"]["flow"] == {"found": 7, "missing": 1, "unreadable": 0}
    assert f["modalities"]["rgb"] == {"found": 7, "missing": 0, "unreadable": 1}
    assert f["length_mismatched_videos"] == 1 and f["length_mismatched_examples"] == ["SYN00002"]
    assert "SYN00003.npy" in f["unreadable_examples"][0]
    assert f["feature_dims"] == {"flow": [64], "rgb": [64]}


def test_cli_prints_one_json(world, capsys):
    args = cli(
        [
            "multithumos",
            "--annotations",
            str(world / "annotations.json"),
            "--features",
            str(world),
            "--num-classes",
            "3",
            "--class-id-base",  # the synthetic world numbers classes from 0, MultiTHUMOS from 1
            "0",
        ]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "multithumos" and out["classes"] == 3 and out["class_id_base"] == 0
    assert out["features"]["modalities"]["rgb"]["found"] == 8


def test_cli_names_bad_file(tmp_path, capsys):
    bad = tmp_path / "tsu.json"
    bad.write_text(json.dumps({"P1": {"subset": "training", "duration": 100, "actions": [[60, 1, 2]]}}))
    args = cli(["tsu", "--annotations", str(bad)])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "unknown class id 60" in err


def test_pkummd_subcommand(tmp_path, capsys):
    (tmp_path / "Label").mkdir()
    (tmp_path / "Label" / "0002-L.txt").write_text("41,56,142,1\n")
    (tmp_path / "Label" / "0291-L.txt").write_text("3,0,30,2\n")
    split = tmp_path / "cross-view.txt"
    split.write_text("Training videos: \n0002-L\nValidataion videos: \n0291-L\n")
    args = cli(["pkummd", "--annotations", str(tmp_path / "Label"), "--split", str(split)])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["videos_per_subset"] == {"testing": 1, "training": 1} and out["durations_estimated"] == 2


def test_multithumos_reads_ids_from_1_and_reports_the_base(tmp_path, capsys):
    path = tmp_path / "multithumos.json"
    path.write_text(json.dumps({
        "video_validation_0000051": {"subset": "training", "duration": 30.0, "actions": [[1, 1.0, 5.0], [65, 2.0, 9.0]]},
        "video_test_0000004": {"subset": "testing", "duration": 20.0, "actions": [[17, 0.5, 3.0]]},
    }))  # fmt: skip
    args = cli(["multithumos", "--annotations", str(path)])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["classes"], out["class_id_base"], out["segments"]) == (65, 1, 3)
    args = cli(["multithumos", "--annotations", str(path), "--class-id-base", "0"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert f"{path}: video video_validation_0000051: unknown class id 65 (expected 0..64)" in err
    assert "class_id_base: 1" in err


@pytest.mark.realdata
def test_real_charades_and_tsu(realdata):
    s = inspect_untrimmed("charades", str(realdata("charades/charades.json")))
    assert (s["videos"], s["classes"], s["segments"], s["class_id_base"]) == (9848, 157, 66500, 0)
    assert s["videos_per_subset"] == {"testing": 1863, "training": 7985}
    assert s["videos_without_actions"] == 223 and s["segments_outside_duration"] == 5
    assert s["segments_clipped_to_duration"] == 19618  # end past the duration, start inside it
    t = inspect_untrimmed("tsu", str(realdata("tsu/tsu_cs.json")))
    assert (t["videos"], t["classes"], t["segments"], t["class_id_base"]) == (536, 51, 41288, 0)
