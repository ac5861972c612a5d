"""The synthetic untrimmed ``evidence`` world: deterministic, readable by the real readers, flow > RGB >
chance (the ``motion`` world: tests/data/synthetic/test_motion.py)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest

from xmkd.data.datasets.untrimmed import frame_labels
from xmkd.data.readers.untrimmed import read_charades_csv, read_pdan_json
from xmkd.data.synthetic.untrimmed import (
    SyntheticUntrimmedParams,
    ensure_synthetic_untrimmed,
    generate_world,
    make_synthetic_untrimmed,
    ridge_probe_map,
)
from xmkd.data.tools.synth_untrimmed import add_arguments, run
from xmkd.errors import ConfigError

SMALL = {"videos": 12, "classes": 4, "min_steps": 20, "max_steps": 40}


def test_deterministic_by_seed():
    a = generate_world(SyntheticUntrimmedParams(**SMALL, seed=3))
    b = generate_world(SyntheticUntrimmedParams(**SMALL, seed=3))
    c = generate_world(SyntheticUntrimmedParams(**SMALL, seed=4))
    for va, vb in zip(a, b):
        assert va.segments == vb.segments and va.subset == vb.subset
        for m in ("rgb", "flow"):
            np.testing.assert_array_equal(va.features[m], vb.features[m])
    assert any(not np.array_equal(va.features["rgb"], vc.features["rgb"]) for va, vc in zip(a, c))


def test_world_has_the_real_data_quirks():
    videos = generate_world(SyntheticUntrimmedParams(videos=100, empty_fraction=0.05))
    assert len(videos) == 100 and {v.subset for v in videos} == {"training", "testing"}
    assert all(60 <= v.labels.shape[0] <= 200 for v in videos)
    assert any(not v.segments for v in videos)  # videos without actions
    assert any(s.end_s > v.duration_s for v in videos for s in v.segments)  # segments past the end
    assert any((v.labels.sum(1) > 1).any() for v in videos)  # overlapping multi-label steps
    lengths = [s.end_s - s.start_s for v in videos for s in v.segments]
    assert max(lengths) > 3 * min(lengths)  # varied action lengths
    assert 0.02 < np.mean([v.labels.mean() for v in videos]) < 0.15


def test_written_files_read_back_identically(tmp_path):
    params = {**SMALL, "pose": True}
    info = make_synthetic_untrimmed(tmp_path / "w", "evidence", **params)
    root = tmp_path / "w"
    videos = generate_world(SyntheticUntrimmedParams(**params))
    csv_ann = read_charades_csv(
        [root / "Charades_v1_train.csv", root / "Charades_v1_test.csv"], root / "Charades_v1_classes.txt"
    )
    json_ann = read_pdan_json(root / "annotations.json", num_classes=4)
    by_csv = {v.video_id: v for v in csv_ann.videos}
    assert len(videos) == len(json_ann.videos) == len(csv_ann.videos) == params["videos"]
    for v, j in zip(videos, json_ann.videos):
        assert v.video_id == j.video_id and v.segments == j.segments == by_csv[v.video_id].segments
        assert v.subset == j.subset == by_csv[v.video_id].subset
        # the world's ground truth is what the dataset's labelling rule gives from the files
        np.testing.assert_array_equal(v.labels, frame_labels(j.segments, len(v.labels), j.duration_s, 4))
        for m in ("rgb", "flow", "pose"):
            np.testing.assert_array_equal(np.load(root / m / f"{v.video_id}.npy"), v.features[m])
    assert info["feature_dims"] == {"rgb": 64, "flow": 64, "pose": 32}
    assert json.loads((root / "dataset.json").read_text())["params"]["classes"] == 4
    assert not list(tmp_path.glob(".w.tmp-*"))


def test_ensure_reuses_and_refuses_other_params(tmp_path):
    root = tmp_path / "w"
    ensure_synthetic_untrimmed(root, "evidence", **SMALL)
    stamp = (root / "rgb" / "SYN00000.npy").stat().st_mtime_ns
    ensure_synthetic_untrimmed(root, "evidence", **SMALL)
    assert (root / "rgb" / "SYN00000.npy").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="other parameters"):
        ensure_synthetic_untrimmed(root, "evidence", **{**SMALL, "classes": 5})
    with pytest.raises(ConfigError, match="already exists"):
        make_synthetic_untrimmed(root, "evidence", **SMALL)
    with pytest.raises(ConfigError, match="min_steps"):
        generate_world(SyntheticUntrimmedParams(min_steps=50, max_steps=10))


def test_flow_carries_more_evidence_than_rgb_and_rgb_beats_chance():
    # the default world's signal levels, fewer videos: a ridge probe per frame and with context
    videos = generate_world(replace(SyntheticUntrimmedParams(), videos=80))
    chance = np.mean([v.labels.mean() for v in videos if v.subset == "testing"])
    rgb, flow = ridge_probe_map(videos, ["rgb"]), ridge_probe_map(videos, ["flow"])
    rgb_ctx, flow_ctx = (
        ridge_probe_map(videos, ["rgb"], context=4),
        ridge_probe_map(videos, ["flow"], context=4),
    )
    assert flow > rgb + 0.1 and flow_ctx > rgb_ctx + 0.15
    assert rgb > 2 * chance and rgb_ctx > 4 * chance  # RGB is weak, not useless


def test_cli_tool(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(tmp_path / "w"),
            "--videos",
            "6",
            "--classes",
            "3",
            "--set",
            "max_steps=30",
            "--set",
            "min_steps=20",
        ]
    )
    assert run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["videos"] == 6 and out["feature_dims"] == {"rgb": 64, "flow": 64}
    assert json.loads((tmp_path / "w" / "dataset.json").read_text())["params"]["max_steps"] == 30
    info = json.loads((tmp_path / "w" / "dataset.json").read_text())
    assert info["world"] == "motion"  # the default
    with pytest.raises(ConfigError, match="--set"):
        run(parser.parse_args(["--out", str(tmp_path / "x"), "--set", "nonsense=1"]))
    # --world evidence takes the evidence world's knobs
    run(
        parser.parse_args(
            ["--out", str(tmp_path / "e"), "--world", "evidence", "--videos", "4", "--set", "rgb_noise=2"]
        )
    )
    info = json.loads((tmp_path / "e" / "dataset.json").read_text())
    assert info["world"] == "evidence" and info["params"]["rgb_noise"] == 2.0
