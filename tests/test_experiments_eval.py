"""Every shipped evaluation config builds and runs: one fit step (fast_dev_run) for the Lightning
recipes, the whole SVM protocol for the SVM recipes, each shrunk to a tiny encoder and tiny data
(marked slow: about 5-10 s each on 2 shared cores, mostly LightningCLI start-up and decoding)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from tests.data.test_readers_esc50 import make_esc50
from tests.modules.test_classifier import export_tiny_encoder

EVAL = Path(__file__).resolve().parents[1] / "experiments" / "eval"
FIT_CONFIGS = sorted(p for p in EVAL.glob("*.yaml") if "class_path" in p.read_text())
SVM_CONFIGS = sorted(p for p in EVAL.glob("svm_*.yaml"))
SYNTH = {"classes": 3, "clips_per_class": 7, "duration": 1.0, "size": 32, "fps": 8.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from xmkd.data.synthetic.av import ensure_synthetic_av

    root = tmp_path_factory.mktemp("eval-configs")
    ensure_synthetic_av(root / "synth", workers=1, **SYNTH)
    return {
        "root": root,
        "synth": root / "synth",
        "video": export_tiny_encoder(root / "enc"),
        "audio": export_tiny_encoder(root / "enc", "audio"),
        "esc50": make_esc50(root / "ESC-50", files_per_fold=4, classes=2),
    }


def test_every_config_is_covered() -> None:
    names = {p.name for p in EVAL.glob("*.yaml")}
    assert {
        "finetune_vitb_ucf101.yaml",
        "finetune_vitb_hmdb51.yaml",
        "linear_vitb_k400.yaml",
        "svm_vitb_ucf101.yaml",
        "svm_vitb_hmdb51.yaml",
        "svm_vitb_esc50.yaml",
    } <= names
    assert set(names) == {p.name for p in FIT_CONFIGS} | {p.name for p in SVM_CONFIGS}


def test_tiny_recipes_and_linear_eval_read_the_same_synthetic_set() -> None:
    # They share data/synth-av-xkd, which is regenerated whenever its parameters differ: any
    # mismatch would rewrite the folder back and forth between make targets.
    from xmkd.pipelines.linear_eval import SYNTHETIC_DATA, SYNTHETIC_OPTIONS

    configs = [EVAL.parent / "xkd" / "xkd_tiny_synthetic.yaml", *EVAL.glob("finetune_tiny_synthetic*.yaml")]
    assert len(configs) == 3  # svm_tiny_synthetic.yaml runs linear-eval, which takes SYNTHETIC_OPTIONS
    for config in configs:
        data = yaml.safe_load(config.read_text())["data"]["init_args"]
        assert (data["root"], data["synthetic_options"]) == (SYNTHETIC_DATA, SYNTHETIC_OPTIONS), config.name


def test_paper_recipes_carry_the_paper_numbers() -> None:
    ucf = yaml.safe_load((EVAL / "finetune_vitb_ucf101.yaml").read_text())["model"]["init_args"]
    hmdb = yaml.safe_load((EVAL / "finetune_vitb_hmdb51.yaml").read_text())["model"]["init_args"]
    k400 = yaml.safe_load((EVAL / "linear_vitb_k400.yaml").read_text())
    assert (ucf["lr"], ucf["layer_decay"], ucf["mixup_alpha"], ucf["cutmix_alpha"], ucf["warmup_epochs"]) == (
        5e-4,
        0.45,
        0.6,
        0.5,
        5.0,
    )
    assert (
        hmdb["lr"],
        hmdb["layer_decay"],
        hmdb["mixup_alpha"],
        hmdb["cutmix_alpha"],
        hmdb["warmup_epochs"],
    ) == (1e-4, 0.75, 1.0, 1.0, 20.0)
    assert (
        ucf["input_size"] == [32, 224, 224] and ucf["head_dropout"] == 0.5 and ucf["label_smoothing"] == 0.1
    )
    m, d = k400["model"]["init_args"], k400["data"]["init_args"]
    assert (m["mode"], m["lr"], m["warmup_epochs"], k400["trainer"]["max_epochs"]) == (
        "linear",
        0.01,
        10.0,
        100,
    )
    assert d["batch_size"] * k400["trainer"]["devices"] == 256
    esc = yaml.safe_load((EVAL / "svm_vitb_esc50.yaml").read_text())
    assert (esc["train_clips"], esc["test_clips"]) == (100, 3)
    assert yaml.safe_load((EVAL / "svm_vitb_ucf101.yaml").read_text())["train_clips"] == 25


@pytest.mark.slow
@pytest.mark.parametrize("config", FIT_CONFIGS, ids=lambda p: p.stem)
def test_fit_config_runs_one_step(config: Path, tiny: dict[str, Path]) -> None:
    from xmkd.runner import run_lightning_cli

    cfg = yaml.safe_load(config.read_text())
    upscale = cfg["model"]["init_args"].get("input_size") is not None
    size = 64 if upscale else 32  # the paper recipes fine-tune above the encoder's size: exercise that
    argv = [
        "fit", "--config", str(config), "--runs_dir", str(tiny["root"] / "runs"),
        "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
        "--trainer.precision=32-true", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        f"--model.init_args.encoder_path={tiny['video']}", "--model.init_args.num_classes=3",
        "--data.init_args.dataset=synthetic", f"--data.init_args.root={tiny['synth']}",
        "--data.init_args.splits=null", "--data.init_args.annotation=null", "--data.init_args.test_annotation=null",
        f"--data.init_args.synthetic_options={SYNTH}", "--data.init_args.num_frames=4",
        f"--data.init_args.crop_size={size}", "--data.init_args.test_clips=2", "--data.init_args.test_crops=1",
        "--data.init_args.batch_size=2", "--data.init_args.eval_batch_size=2", "--data.init_args.num_workers=0",
    ]  # fmt: skip
    if upscale:
        argv.append("--model.init_args.input_size=[4, 64, 64]")
    cli = run_lightning_cli(argv)
    assert cli.trainer.global_step == 1
    assert "val/video_top1" in cli.trainer.callback_metrics
    assert cli.model.encoder.config.input_size == (4, size, size)


@pytest.mark.slow
@pytest.mark.parametrize("config", SVM_CONFIGS, ids=lambda p: p.stem)
def test_svm_config_runs_the_protocol(config: Path, tiny: dict[str, Path]) -> None:
    from xmkd.pipelines import linear_eval as le

    parser = argparse.ArgumentParser()
    le.add_arguments(parser)
    args = le.apply_config(parser.parse_args(["--config", str(config)]), vars(le._defaults()))
    esc = args.dataset == "esc50"
    args.ckpt = str(tiny["audio"] if esc else tiny["video"])
    args.data = str(tiny["esc50"] if esc else tiny["synth"] / "videos")
    args.splits = None if esc else str(tiny["synth"] / "splits")
    args.dataset = "esc50" if esc else "synthetic"
    args.folds, args.train_clips, args.test_clips, args.test_crops = [1], 2, 2, 1
    args.cv_folds, args.num_workers, args.batch_size, args.c_grid = 2, 0, 8, [0.01, 1.0]
    figures = tiny["root"] / "linear-eval-figures" / config.stem
    result = le.evaluate_encoder(le.resolve_defaults(args), Path(args.ckpt), figure_dir=figures)
    fold = result["folds"][0]
    assert 0.0 <= fold["video_top1"] <= 1.0 and fold["c"] in (0.01, 1.0)
    assert 0.0 <= fold["knn_top1"] <= 1.0 and result["mean"]["knn_top1"] == fold["knn_top1"]
    png = figures / "embedding_tsne.png"
    assert result["figures"]["embedding"] == str(png) and png.stat().st_size > 1000
    assert fold["num_test_videos"] == (4 if esc else 9)  # ESC-50 fold 1: 4 files; synthetic: 3 per class
    assert result["modality"] == ("audio" if esc else "video")
    assert fold["num_train_clips"] == 2 * (16 if esc else 12)


@pytest.mark.slow
def test_finetune_pipeline_scores_last_epoch_per_fold(tiny: dict[str, Path]) -> None:
    from xmkd.pipelines import finetune as ft

    args = argparse.Namespace(
        recipe="hmdb51", dataset="synthetic", data=str(tiny["synth"]), splits=None, config=None, folds=[1, 2],
        max_epochs=1,
    )  # fmt: skip
    extra = [
        f"--data.init_args.synthetic_options={SYNTH}", "--data.init_args.test_clips=1",
        "--data.init_args.batch_size=4", "--data.init_args.num_workers=0", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.limit_train_batches=1",
        "--model.init_args.num_classes=3",  # the tiny set's (checked against the data at setup)
    ]  # fmt: skip
    out = tiny["root"] / "runs" / "finetune-hmdb51"
    result = ft.finetune_all_folds(tiny["video"], args, out, extra)
    assert [f["fold"] for f in result["folds"]] == [1, 2]
    assert all(0.0 <= f["video_top1"] <= 1.0 and Path(f["run_dir"]).is_dir() for f in result["folds"])
    assert set(result["mean"]) == {"video_top1", "clip_top1", "video_top5", "clip_top5"}
    assert result["encoder"] == str(tiny["video"])
    assert result["config"].endswith("finetune_tiny_synthetic_hmdb51.yaml")
