"""The xkd-to-detection chain: its comparisons (noise rule), the table, and one tiny end-to-end run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from tests.pipelines.test_pretrain_xkd import tiny_pipeline_overrides
from xmkd.errors import ConfigError
from xmkd.models.vit import load_exported_encoder
from xmkd.pipelines import xkd_to_detection as chain


def test_compare_pairs_seeds_and_applies_the_noise_rule():
    c = chain.compare([0.30, 0.34, 0.32], [0.20, 0.22, 0.21])
    assert c["per_seed"] == pytest.approx([0.10, 0.12, 0.11])
    assert c["mean"] == pytest.approx(0.11) and c["std"] == pytest.approx(0.01)
    # the larger of the two sample stds is 0.02 -> noise 0.04 < 0.11
    assert c["twice_larger_std"] == pytest.approx(0.04) and c["beyond_noise"] is True
    within = chain.compare([0.30, 0.40], [0.31, 0.33])
    assert within["beyond_noise"] is False  # 0.03 difference, seed std 0.0707
    worse = chain.compare([0.10, 0.11, 0.12], [0.30, 0.31, 0.32])
    assert worse["mean"] < 0 and worse["beyond_noise"] is True  # a clear loss is beyond the noise too
    one = chain.compare([0.5], [0.4])
    assert one["std"] is None and one["twice_larger_std"] is None and one["beyond_noise"] is None
    with pytest.raises(ValueError, match="as many values"):
        chain.compare([0.1, 0.2], [0.1])


def test_gap_closed_is_the_share_of_the_teacher_lead():
    assert chain.gap_closed(0.30, 0.20, 0.60) == pytest.approx(0.25)
    assert chain.gap_closed(0.10, 0.20, 0.60) == pytest.approx(-0.25)
    assert chain.gap_closed(0.30, 0.20, 0.20) is None  # the teacher does not lead: nothing to close


def test_comparisons_cover_the_question():
    per = {
        "random": {"rgb": [0.20, 0.21], "teacher": [0.6, 0.6], "student": [0.22, 0.23]},
        "mae": {"rgb": [0.25, 0.26], "teacher": [0.6, 0.6], "student": [0.27, 0.28]},
        "xkd": {"rgb": [0.25, 0.27], "teacher": [0.6, 0.6], "student": [0.35, 0.36]},
    }
    out = chain.comparisons(per)
    assert set(out) == {
        "gain on random", "gain on mae", "gain on xkd",
        "student: xkd - mae", "gain: xkd - mae", "student: xkd - random", "gain: xkd - random",
        "student: mae - random", "gain: mae - random",
    }  # fmt: skip
    assert out["student: xkd - mae"]["mean"] == pytest.approx(0.08)
    assert out["gain on xkd"]["per_seed"] == pytest.approx([0.10, 0.09])
    assert out["gain: xkd - mae"]["per_seed"] == pytest.approx([0.08, 0.07])


def test_format_table_has_one_line_per_encoder_and_every_comparison():
    per = {
        "random": {"rgb": [0.20, 0.22], "teacher": [0.60, 0.60], "student": [0.30, 0.32]},
        "mae": {"rgb": [0.25, 0.25], "teacher": [0.60, 0.62], "student": [0.25, 0.25]},
        "xkd": {"rgb": [0.30, 0.30], "teacher": [0.50, 0.50], "student": [0.20, 0.20]},
    }
    results = {
        "settings": {"seeds": [0, 1]},
        "encoders": {e: {"label": chain.ENCODER_LABELS[e], "svm_top1": s} for e, s in
                     (("random", 0.291), ("mae", None), ("xkd", 0.423))},
        "rows": {"flow": [0.7, 0.72], **per},
        "comparisons": chain.comparisons(per),
        "chance_map": 0.165,
    }  # fmt: skip
    table = chain.format_table(results)
    lines = table.splitlines()
    random_line = next(line for line in lines if line.startswith("| random init |"))
    assert "| 29.1 | 21.0 ± 1.4 | 60.0 ± 0.0 | 31.0 ± 1.4 | 10.0 ± 0.0 | 26 % |" in random_line
    assert any(line.startswith("| MAE only") and "| n/a |" in line for line in lines)
    xkd_line = next(line for line in lines if line.startswith("| XKD"))
    assert xkd_line.endswith("| 42.3 | 30.0 ± 0.0 | 50.0 ± 0.0 | 20.0 ± 0.0 | -10.0 ± 0.0 | -50 % |")
    assert "Flow only (shared flow encoder): 71.0 ± 1.4" in table and "chance" in table and "16.5" in table
    for name in results["comparisons"]:
        assert f"| {name} |" in table
    assert "| student: xkd - random | -11.0 ± 1.4 | beyond the noise (2 x larger seed std 2.8) |" in table


def test_pretraining_rows_are_mae_only_and_full_xkd():
    assert chain.PRETRAIN_WEIGHTS == {
        "mae": {"da": 0.0, "kd": 0.0, "rec": 5.0},
        "xkd": {"da": 1.0, "kd": 1.0, "rec": 5.0},
    }


def test_loss_weights_do_not_change_the_initial_weights():
    """Why one random-init row serves both pretraining runs: same seed, same modules, same init."""
    from tests.pipelines.test_pretrain_xkd import TINY
    from xmkd.modules.xkd import XKDPretrainer

    states = []
    for weights in chain.PRETRAIN_WEIGHTS.values():
        torch.manual_seed(0)
        states.append(XKDPretrainer(**{**TINY, "loss_weights": weights}).state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_weights_tag_follows_the_bytes(tmp_path: Path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights one")
    b.write_bytes(b"weights one")
    assert chain.weights_tag(a) == chain.weights_tag(b) and len(chain.weights_tag(a)) == 8
    b.write_bytes(b"weights two")
    assert chain.weights_tag(a) != chain.weights_tag(b)


def test_given_encoder_must_be_an_exported_rgb_video_encoder(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"missing\.pt: expected an exported video encoder"):
        chain._check_video_encoder(tmp_path / "missing.pt", "ckpt")
    from xmkd.models.vit import EncoderConfig, build_encoder, save_exported_encoder

    flow = save_exported_encoder(
        build_encoder(EncoderConfig("video", (4, 32, 32), (2, 16, 16), 2, 32, 1, 1)), tmp_path / "flow.pt"
    )
    with pytest.raises(ConfigError, match=r"flow\.pt takes 2 channels"):
        chain._check_video_encoder(flow, "ckpt")
    assert chain._check_video_encoder(_export_tiny_rgb_encoder(tmp_path / "rgb.pt"), "ckpt").is_file()


def _export_tiny_rgb_encoder(path: Path) -> Path:
    from xmkd.models.vit import EncoderConfig, build_encoder, save_exported_encoder

    torch.manual_seed(1)
    cfg = EncoderConfig("video", (4, 32, 32), (2, 16, 16), 3, 32, 1, 1)
    return save_exported_encoder(build_encoder(cfg).eval(), path)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_tiny_chain_runs_end_to_end_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture):
    """Two 2-step pretraining runs, a 6-video world, every encoder, one detection seed; a rerun reuses
    every stage; a given XKD encoder replaces that pretraining run."""
    out = tmp_path / "runs" / "chain"
    kwargs = dict(
        data=tmp_path / "world", pretrain_max_steps=2, svm_train_views=1,
        pretrain_overrides=tiny_pipeline_overrides(tmp_path), videos=6, classes=3, seeds=[0], epochs=2,
        flow_encoder_steps=3, flow_encoder_dim=32, flow_encoder_depth=1, channels=16, blocks=1, workers=1,
        progress=False,
    )  # fmt: skip
    results = chain.run_pipeline(out=out, **kwargs)
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
    assert list(results["encoders"]) == list(chain.ENCODERS)
    for name in ("mae", "xkd"):
        run = results["pretraining"][name]
        assert run["steps"] == 2 and run["loss_weights"] == chain.PRETRAIN_WEIGHTS[name]
        assert 0.0 <= results["encoders"][name]["svm_top1"] <= 1.0
    assert results["pretraining"]["mae"]["loss_weights"]["kd"] == 0.0
    # the random-init encoder is the exact init of the XKD run, which the trained one moved away from
    random = load_exported_encoder(results["encoders"]["random"]["path"])
    xkd = load_exported_encoder(results["encoders"]["xkd"]["path"])
    assert "xkd pretraining started from" in results["encoders"]["random"]["source"]
    assert not torch.equal(random.pos_embed, xkd.pos_embed)
    assert results["encoders"]["random"]["svm_top1"] is not None
    assert results["architecture_differences"] == {}
    # ... and the MAE-only run started from the very same weights, so one random-init row serves both
    mae_init = torch.load(out / "encoders" / "mae" / "random_init_video.pt", weights_only=True)
    assert all(torch.equal(v, random.state_dict()[k]) for k, v in mae_init.items())
    # each encoder read windows of its own input size (the tiny recipe's 4 x 32 x 32); flow is shared
    for name in chain.ENCODERS:
        root = Path(results["features"][name]["root"])
        assert root.name.startswith(f"{name}-{chain.weights_tag(Path(results['encoders'][name]['path']))}-")
        index = json.loads((root / "rgb" / "index.json").read_text())
        assert index["window"] == 4 and index["input_size"] == [4, 32, 32]
        assert len(list((root / "flow").glob("*.npy"))) == 6
        for row in chain.DETECTION_ROWS:
            (score,) = results["rows"][name][row]
            assert 0.0 < score <= 1.0
    assert len(results["table"]) == 1 + 3 * len(chain.DETECTION_ROWS)
    assert "student: xkd - mae" in results["comparisons"]
    table = (out / "table.md").read_text()
    assert "| XKD (audio-visual) |" in table and "| random init |" in table
    assert "one seed: no noise estimate" in table

    # a rerun reuses the pretraining runs, the flow, the features and the detection scores
    def no_training(*args, **kwargs):
        raise AssertionError("a finished detection unit was trained again")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(chain, "detection_row", no_training)
        again = chain.run_pipeline(out=out, **kwargs)
    assert again["rows"] == results["rows"]
    assert again["pretraining"] == results["pretraining"]
    assert again["flow"]["skipped"] == 6 and again["features"]["xkd"]["skipped"] == 6

    # other pretraining arguments on the same run folder are an error, not a stale encoder
    with pytest.raises(ConfigError, match=r"holds a xkd run with other arguments"):
        chain.run_pipeline(out=out, **{**kwargs, "pretrain_max_steps": 3})

    # a given XKD encoder: no XKD pretraining, the random init comes from the MAE-only run
    given = _export_tiny_rgb_encoder(tmp_path / "given" / "video.pt")
    other = tmp_path / "runs" / "given"
    with_ckpt = chain.run_pipeline(out=other, ckpt=given, **kwargs)
    assert set(with_ckpt["pretraining"]) == {"mae"}
    assert with_ckpt["encoders"]["xkd"]["source"] == f"given: {given}"
    assert with_ckpt["encoders"]["xkd"]["svm_top1"] is None
    assert "mae pretraining started from" in with_ckpt["encoders"]["random"]["source"]
    assert with_ckpt["architecture_differences"]["mae"]["dim"] == [192, 32]  # recorded, not hidden


def test_cli_arguments_reach_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen: dict = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(chain, "run_pipeline", fake)
    parser = argparse.ArgumentParser()
    chain.add_arguments(parser)
    args = parser.parse_args(["--ckpt", "enc.pt", "--seeds", "0,4", "--override", "a.b=1", "--threads", "0"])
    with pytest.raises(SystemExit):
        chain.run(args)
    assert seen["ckpt"] == Path("enc.pt") and seen["mae_ckpt"] is None and seen["seeds"] == [0, 4]
    assert seen["pretrain_overrides"] == ["a.b=1"] and seen["out"] == Path("runs/xkd-to-detection")
