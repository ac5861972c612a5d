"""The raw-video chain: a tiny end-to-end run (slow) and the table format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmkd.pipelines.distill_detection_raw import format_table, run_pipeline


def test_format_table_lists_every_row_with_mean_and_std():
    results = {
        "chance_map": 0.2,
        "rows": {"rgb": {"mean": 0.3, "std": 0.01, "per_seed": [0.29, 0.31]},
                 "student": {"mean": 0.4, "std": 0.0, "per_seed": [0.4, 0.4]}},
    }  # fmt: skip
    table = format_table(results)
    assert "| RGB only | 30.0 ± 1.0 | 2 |" in table
    assert "Augmented-RGB student" in table and "40.0 ± 0.0" in table and "chance" in table


@pytest.mark.slow
def test_tiny_chain_runs_end_to_end_and_resumes(tmp_path):
    kwargs = dict(
        out=tmp_path / "runs", data=tmp_path / "data", videos=6, classes=3, seeds=1, epochs=2,
        encoder_steps=3, encoder_dim=32, encoder_depth=1, channels=16, blocks=1, workers=1, progress=False,
    )  # fmt: skip
    results = run_pipeline(**kwargs)
    saved = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert set(saved["rows"]) == {"rgb", "flow", "teacher", "student"}
    for r in saved["rows"].values():
        assert 0.0 < r["mean"] <= 1.0 and np.isfinite(r["mean"])
    assert (tmp_path / "runs" / "table.md").read_text().count("\n|") >= 5
    assert results["flow"]["written"] == 6 and results["features"]["rgb"]["done"] == 6
    # a rerun reuses the world, the flow and the features
    again = run_pipeline(**kwargs)
    assert again["flow"] == {"written": 0, "skipped": 6}
    assert again["features"]["rgb"]["skipped"] == 6 and again["features"]["flow"]["skipped"] == 6
