"""Both detection pipelines write one documented ``table`` schema into results.json (the old ``rows``
shapes stay for readers of each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmkd.pipelines import distill_detection as dd
from xmkd.pipelines import distill_detection_raw as raw
from xmkd.pipelines.seeds import detection_table_row

KEYS = {"name", "label", "metric", "map_mean", "map_std", "seeds", "seed_ids"}


def test_table_row_normalises_names_and_uses_the_sample_std() -> None:
    row = detection_table_row("flow", "flow only", [0, 1], [0.2, 0.4], "test per-frame mAP")
    assert set(row) == KEYS and row["name"] == "aux"
    assert row["map_mean"] == pytest.approx(0.3) and row["map_std"] == pytest.approx(0.1414, abs=1e-4)
    assert detection_table_row("teacher", "t", [3], [0.5], "m")["map_std"] is None
    with pytest.raises(ValueError, match="2 seeds but 1"):
        detection_table_row("rgb", "rgb", [0, 1], [0.5], "m")


def test_both_pipelines_write_the_same_table_schema(tmp_path: Path) -> None:
    per_seed = {
        0: {"map": 0.2, "map_25": 0.1, "run_dir": "a"},
        1: {"map": 0.4, "map_25": 0.3, "run_dir": "b"},
    }
    dd._write_outputs(
        tmp_path, ["rgb", "aux", "teacher"], {"rgb": per_seed, "aux": per_seed, "teacher": per_seed},
        None, {"seeds": [0, 1], "epochs": 1, "wall_time_s": 1.0}, True,
    )  # fmt: skip
    features = json.loads((tmp_path / "results.json").read_text())
    raw_table = raw.table_rows({"rgb": [0.2, 0.4], "flow": [0.2, 0.4], "teacher": [0.2, 0.4]})
    assert [set(r) for r in features["table"]] == [KEYS] * 3 == [set(r) for r in raw_table]
    assert (
        [r["name"] for r in features["table"]] == ["rgb", "aux", "teacher"] == [r["name"] for r in raw_table]
    )
    for a, b in zip(features["table"], raw_table):
        assert (a["map_mean"], a["map_std"], a["seeds"], a["seed_ids"]) == (
            b["map_mean"], b["map_std"], b["seeds"], b["seed_ids"],
        )  # fmt: skip
    assert features["rows"][0]["map_mean"] == pytest.approx(0.3)  # the old shape is still there
