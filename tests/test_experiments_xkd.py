"""Every XKD experiment YAML: the paper recipe as written, and one real training step through the CLI.

The step runs each YAML through :func:`xmkd.runner.run_lightning_cli` (the parser users run), shrunk by
overrides to a tiny encoder and a tiny synthetic dataset generated in ``tmp_path``: the K400 YAMLs keep
their ``kinetics`` reader, pointed at the generated set's Kinetics-style CSV.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from xmkd.data.synthetic.av import ensure_synthetic_av
from xmkd.runner import run_lightning_cli

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "xkd"
YAMLS = sorted(EXPERIMENTS.glob("*.yaml"))
K400 = [p for p in YAMLS if p.stem.endswith("_k400")]

# 2 classes x 6 clips of 1.5 s (XKD drops clips under 1.1 s) at 32 px; one scene group per clip, so fold 1 tests 2 clips per class.
SYNTH = {"classes": 2, "clips_per_class": 6, "clips_per_group": 1, "duration": 1.5, "size": 32, "fps": 8.0}

TINY_MODEL = {
    "encoder_size": "tiny",
    "encoder_depth": 1,
    "num_frames": 4,
    "img_size": 32,
    "tubelet": 2,
    "patch_size": 16,
    "audio_frames": 32,
    "audio_local_frames": 16,
    "decoder_dim": 32,
    "decoder_depth": 1,
    "decoder_heads": 2,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "head_out_dim": 64,
    "probe_num_classes": 2,
    "recon_log_every_n_epochs": 0,
    "lr_warmup_from_zero": False,  # the release's warm-up takes its first step at lr 0: nothing would move
}
TINY_DATA = {
    "num_frames": 4,
    "fps": 8.0,
    "audio_seconds": 0.3,  # 4800 samples -> 34 spectrogram frames, cropped to 32
    "crop_size": 32,
    "local_crop_size": 16,
    "local_frames": 2,
    "batch_size": 2,
    "num_workers": 0,
    "pin_memory": False,
    "test_clips": 1,
    "test_crops": 1,
}
TINY_TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "num_nodes": 1,
    "strategy": "auto",
    "precision": "32-true",
    "max_steps": 1,
    "max_epochs": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "limit_val_batches": 0,
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_av(tmp_path_factory.mktemp("xkd-yaml") / "synth-av", workers=1, **SYNTH)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def shrink_overrides(path: Path, synth_root: Path, runs_dir: Path) -> list[str]:
    """CLI overrides that keep the YAML's structure but make one step cheap on the CPU."""
    argv = [f"--trainer.{k}={v}" for k, v in TINY_TRAINER.items()]
    argv += [f"--model.init_args.{k}={v}" for k, v in TINY_MODEL.items()]
    argv += [f"--data.init_args.{k}={v}" for k, v in TINY_DATA.items()]
    if load(path)["data"]["init_args"]["dataset"] == "kinetics":
        argv += [
            f"--data.init_args.root={synth_root / 'videos'}",
            f"--data.init_args.annotation={synth_root / 'kinetics.csv'}",
            "--data.init_args.test_annotation=null",  # the CSV's own split column: train vs val
        ]
    else:
        argv += [f"--data.init_args.root={synth_root}", f"--data.init_args.synthetic_options={SYNTH}"]
    return ["--runs_dir", str(runs_dir), *argv]


def test_there_are_the_four_xkd_experiments():
    assert {p.name for p in YAMLS} >= {
        "xkd_vitb_k400.yaml",
        "xkd_mas_vitb_k400.yaml",
        "xkd_mats_vitb_k400.yaml",
        "xkd_tiny_synthetic.yaml",
    }


@pytest.mark.parametrize("path", K400, ids=lambda p: p.stem)
def test_k400_yaml_is_the_paper_recipe(path: Path):
    cfg = load(path)
    trainer, model, data = cfg["trainer"], cfg["model"]["init_args"], cfg["data"]["init_args"]
    assert data["batch_size"] * trainer["devices"] * trainer["num_nodes"] == 256  # global batch
    assert trainer["max_epochs"] == 800 and trainer["precision"] == "bf16-mixed"
    assert "DDPStrategy" in trainer["strategy"]["class_path"]
    assert (model["lr"], model["warmup_epochs"], model["weight_decay"], model["clip_grad"]) == (
        1e-4,
        30,
        0.3,
        0.3,
    )
    assert tuple(model["betas"]) == (0.9, 0.95) and model["min_lr_factor"] == 0
    assert model["encoder_size"] == "base" and (model["video_mask_ratio"], model["audio_mask_ratio"]) == (
        0.85,
        0.8,
    )
    assert (model["num_frames"], model["img_size"], model["tubelet"], model["audio_frames"]) == (
        32,
        112,
        4,
        448,
    )
    assert model["loss_weights"] == {"da": 1.0, "kd": 1.0, "rec": 5.0}
    assert (model["head_hidden_dim"], model["head_bottleneck_dim"], model["head_out_dim"]) == (
        2048,
        256,
        8192,
    )
    assert data["dataset"] == "kinetics" and (data["num_frames"], data["fps"], data["audio_seconds"]) == (
        32,
        8,
        4,
    )
    assert data["min_duration_s"] == 1.1
    variant = path.stem.split("_")[1] if path.stem.count("_") == 3 else "xkd"
    assert model["variant"] == variant
    views = 3 if variant in ("mas", "mats") else 1
    assert model["num_local_views"] == data["num_local_views"] == views
    # the released configs: 1 audio local view in every variant; MAS warms its teacher temperatures
    assert model.get("num_audio_local_views", model["num_local_views"]) == 1
    assert model["decoder_heads"] == 12
    temps = (model["video_teacher_temperature"], model["audio_teacher_temperature"])
    warm = (model.get("video_warmup_teacher_temperature"), model.get("audio_warmup_teacher_temperature"))
    if variant == "mas":
        assert (
            temps == (0.11, 0.06)
            and warm == (0.09, 0.04)
            and model["teacher_temperature_warmup_epochs"] == 30
        )
    else:
        assert temps == (0.1, 0.07) and warm == (None, None)
    assert "/path/to/" in data["root"]  # a placeholder the user must override, never a real path


@pytest.mark.slow
@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_yaml_trains_one_step_through_the_cli(path: Path, synth_root: Path, tmp_path: Path):
    cli = run_lightning_cli(["fit", "--config", str(path), *shrink_overrides(path, synth_root, tmp_path)])
    assert cli.trainer.global_step == 1
    expected = load(path)["model"]["init_args"]
    hp = cli.model.hparams
    assert hp.variant == expected["variant"] and hp.num_local_views == expected["num_local_views"]
    # with augment_on: batch the views are made after the transfer to the device, as in training
    batch = cli.datamodule.on_after_batch_transfer(next(iter(cli.datamodule.train_dataloader())), 0)
    assert batch["video_local"].shape[1] == expected["num_local_views"]
    logged = cli.trainer.callback_metrics
    assert torch.isfinite(logged["loss/total"]) and {"loss/rec", "loss/kd", "loss/da"} <= set(logged)
    # An optimiser step happened: the student moved by a full AdamW step, its EMA teacher far less.
    student, teacher = (
        cli.model.student["video"].patch_embed.weight,
        cli.model.teacher["video"].patch_embed.weight,
    )
    assert not torch.allclose(student, teacher)
