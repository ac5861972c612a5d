"""``xmkd pipeline distill-detection``: the pure helpers against hand-worked values, and a tiny end-to-end
run (2 rows + the teacher a student needs, 1 seed, 1 epoch, a 16-video world) checking the files."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from xmkd.errors import ConfigError
from xmkd.pipelines import distill_detection as dd


def test_rows_keep_table_order_and_students_pull_in_the_teacher():
    assert dd.parse_rows("gcr,rgb") == ["rgb", "teacher", "gcr"]
    assert dd.parse_rows("aux") == ["aux"]
    assert dd.parse_rows("all") == list(dd.ROWS)
    # rgb, rgb 10x, aux, teacher, full student, 3 single terms, 7 baselines, mmd, dino, student + both
    assert len(dd.ROWS) == 18
    with pytest.raises(ConfigError, match="unknown row"):
        dd.parse_rows("rgb,fitnet")


def test_every_student_row_names_registered_terms_and_a_shipped_yaml():
    from xmkd.distill.detection import DISTILL_LOSSES

    for row in dd.ROWS.values():
        assert (dd.EXPERIMENTS / row.config).is_file(), row.config
        if row.is_student:
            assert set(row.distill) <= set(DISTILL_LOSSES), row.name
    assert dd.parse_rows("student+xkd") == ["teacher", "student+xkd"]
    assert {"mmd", "dino"} <= set(dd.ROWS["student+xkd"].distill)


def test_seeds_count_or_list():
    assert dd.parse_seeds("3") == [0, 1, 2]
    assert dd.parse_seeds("4,7") == [4, 7]
    for bad in ("x", "1,1", "0"):
        with pytest.raises(ConfigError, match="--seeds"):
            dd.parse_seeds(bad)


def test_carve_validation_moves_only_training_videos():
    entries = {f"v{i}": {"subset": "training", "duration": 1.0, "actions": []} for i in range(10)}
    entries |= {f"t{i}": {"subset": "testing", "duration": 1.0, "actions": []} for i in range(3)}
    carved = dd.carve_validation(entries, 0.2, seed=0)
    subsets = [e["subset"] for e in carved.values()]
    assert subsets.count("validation") == 2 and subsets.count("training") == 8
    assert all(carved[f"t{i}"]["subset"] == "testing" for i in range(3))
    assert carved == dd.carve_validation(entries, 0.2, seed=0)  # deterministic
    assert entries["v0"]["subset"] == "training"  # input untouched
    with pytest.raises(ConfigError, match="val-fraction"):
        dd.carve_validation(entries, 1.0)


def test_summary_mean_and_sample_std():
    row = dd.ROWS["student"]
    per_seed = {
        0: {"map": 0.2, "map_25": 0.1},
        1: {"map": 0.4, "map_25": 0.3},
        2: {"map": 0.3, "map_25": 0.2},
    }
    e = dd.summarize_row(row, per_seed)
    assert e["name"] == "student" and e["seeds"] == [0.2, 0.4, 0.3]
    assert e["map_mean"] == pytest.approx(0.3) and e["map_std"] == pytest.approx(0.1)  # sqrt(0.02 / 2)
    assert e["map_25_mean"] == pytest.approx(0.2) and e["map_25_std"] == pytest.approx(0.1)
    assert dd.summarize_row(row, {0: {"map": 0.5, "map_25": 0.5}})["map_std"] is None
    table = dd.markdown_table([dd.summarize_row(dd.ROWS["rgb"], {0: {"map": 0.25, "map_25": 0.2}}), e])
    assert "| 30.0 ± 10.0 |" in table and "+5.0" in table


def test_inference_parameters_leave_out_training_only_parts():
    class Student(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(3, 2)  # 8
            self.distill_losses = torch.nn.ModuleDict({"fitnets": torch.nn.Linear(2, 5)})  # 15

    assert dd.inference_parameters(Student()) == 8
    assert dd.inference_parameters(torch.nn.Linear(4, 4)) == 20


@pytest.mark.slow
def test_pipeline_tiny_run_writes_results_and_table(tmp_path: Path):
    parser = argparse.ArgumentParser()
    dd.add_arguments(parser)
    args = parser.parse_args(
        ["--rows", "rgb,gcr", "--seeds", "1", "--epochs", "1", "--runs-dir", str(tmp_path / "runs"),
         "--feature-root", str(tmp_path / "world"), "--synthetic-videos", "16"]
    )  # fmt: skip
    assert dd.run(args) == 0
    out = tmp_path / "runs" / "distill-detection"
    results = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in results["rows"]]
    assert names == ["rgb", "teacher", "gcr"]
    for r in results["rows"]:
        assert len(r["seeds"]) == 1 and r["map_std"] is None
        assert math.isclose(r["map_mean"], r["seeds"][0]) and 0.0 <= r["map_mean"] <= 1.0
        assert 0.0 <= r["map_25_mean"] <= 1.0
        run_dir = Path(r["runs"][0])
        assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "config.yaml").is_file()
        assert json.loads((run_dir / "results.json").read_text())["test"]["map"] == pytest.approx(
            r["map_mean"]
        )
    cost = results["inference_cost"]
    assert cost["student_row"] == "gcr" and cost["videos"] == results["data"]["test_videos"]
    assert 0 < cost["student_params"] < cost["teacher_params"] and cost["student_ms"] > 0
    table = (out / "table.md").read_text()
    assert "| RGB only |" in table and "parameters" in table
    # the student distilled from this seed's teacher
    student_cfg = (Path(results["rows"][2]["runs"][0]) / "config.yaml").read_text()
    assert "teacher-seed0" in student_cfg
    assert results["complete"] is True
    # --resume reuses every finished run: no new run folder, the same scores, the cost re-measured
    args.resume = True
    assert dd.run(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["seeds"] for r in again["rows"]] == [r["seeds"] for r in results["rows"]]
    assert (
        not list(out.glob("*/version_1"))
        and again["inference_cost"]["student_params"] == cost["student_params"]
    )


def entry(name: str, mean: float, std: float | None = 0.01) -> dict:
    return {"name": name, "map_mean": mean, "map_std": std}


def test_gap_closed_preconditions_and_the_students_verdict():
    assert dd.gap_closed(0.35, 0.25, 0.5) == pytest.approx(0.4)
    assert dd.gap_closed(0.3, 0.5, 0.5) is None  # no gap to close
    rows = [entry("rgb", 0.25), entry("rgb10x", 0.45), entry("aux", 0.6), entry("teacher", 0.5)]
    checks = {c["name"]: c for c in dd.preconditions(rows)}
    assert checks["a"]["value"] == pytest.approx(0.9) and checks["a"]["holds"]  # 0.45 / 0.5 >= 0.8
    assert checks["b"]["value"] == pytest.approx(0.5) and checks["b"]["holds"]  # 0.25 / 0.5 <= 0.6
    assert checks["c"]["value"] == pytest.approx(0.25) and "-10.0" in checks["c"]["what"]  # behind flow
    weak = {
        c["name"]: c
        for c in dd.preconditions([entry("rgb", 0.4), entry("rgb10x", 0.39), entry("teacher", 0.5)])
    }
    assert not weak["a"]["holds"] and not weak["b"]["holds"]
    # the target: >= 30 % of the gap and a gain above twice the larger seed std
    ok = dd.student_verdict([*rows, entry("student", 0.34, 0.02)])
    assert ok["gap_closed"] == pytest.approx(0.36) and ok["noise"] == pytest.approx(0.04) and ok["holds"]
    noisy = dd.student_verdict([*rows, entry("student", 0.34, 0.05)])  # gain 0.09 < 2 x 0.05
    assert not noisy["holds"]
    short = dd.student_verdict([*rows, entry("student", 0.3, 0.001)])  # 20 % of the gap
    assert not short["holds"]
    assert dd.student_verdict([*rows, entry("student", 0.34, None)]) is None  # one seed: no std
    table = dd.markdown_table(
        [{**e, "label": e["name"], "seeds": [e["map_mean"]], "map_25_mean": 0.0, "map_25_std": None}
         for e in [*rows, entry("student", 0.34, 0.02)]]
    )  # fmt: skip
    assert "| 36 % |" in table and "(a) information is in RGB" in table and ": met." in table


def test_the_grown_world_keeps_the_test_videos(tmp_path: Path):
    parser = argparse.ArgumentParser()
    dd.add_arguments(parser)
    args = parser.parse_args(
        [
            "--runs-dir",
            str(tmp_path / "runs"),
            "--feature-root",
            str(tmp_path / "world"),
            "--synthetic-videos",
            "10",
        ]
    )
    base, grown = dd.prepare_world(args, 1), dd.prepare_world(args, 3)
    assert grown.feature_root == tmp_path / "world-3x"
    info = json.loads((base.feature_root / "dataset.json").read_text())
    assert grown.options == {"extra_training_videos": 2 * info["counts"]["training"]}
    a = json.loads(base.annotations.read_text())
    b = json.loads(grown.annotations.read_text())
    assert {v for v, e in a.items() if e["subset"] == "testing"} == {
        v for v, e in b.items() if e["subset"] == "testing"
    }
    assert sum(e["subset"] != "testing" for e in b.values()) == 3 * sum(
        e["subset"] != "testing" for e in a.values()
    )
    args.world = "evidence"
    args.feature_root = str(tmp_path / "evidence")
    with pytest.raises(ConfigError, match="needs --world motion"):
        dd.prepare_world(args, 10)
