"""Clip arrays (``xmkd.data.datasets.clip_arrays``) and the MAE-only encoder recipe that trains on them
(``experiments/encoders/mae_flow_tiny.yaml``: ``XKDPretrainer`` on video alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xmkd.data.datasets.clip_arrays import (
    ClipArrayDataModule,
    normalize_clips,
    read_clip_array,
    write_clip_array,
)
from xmkd.data.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from xmkd.errors import ConfigError
from xmkd.export import export_checkpoint
from xmkd.features.encoders import load_encoder
from xmkd.runner import run_lightning_cli
from xmkd.runs import last_checkpoint
from xmkd.viz import read_metrics_csv

REPO = Path(__file__).resolve().parents[3]
MAE_FLOW = REPO / "experiments" / "encoders" / "mae_flow_tiny.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rgb_normalisation_is_imagenet_mean_std_channels_first() -> None:
    x = torch.randint(0, 256, (2, 4, 5, 6, 3), dtype=torch.uint8)
    out = normalize_clips(x, "rgb")
    assert out.shape == (2, 3, 4, 5, 6) and out.dtype == torch.float32
    for c in range(3):
        want = (x[..., c].float() / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(out[:, c], want)


def test_flow_normalisation_maps_the_quantised_range_to_minus_one_one() -> None:
    x = torch.tensor([0, 127, 255], dtype=torch.uint8).view(1, 1, 3, 1).expand(1, 1, 3, 2).contiguous()
    out = normalize_clips(x[None], "flow")  # (1, 1, 1, 3, 2) -> (1, 2, 1, 1, 3)
    assert out.shape == (1, 2, 1, 1, 3)
    torch.testing.assert_close(out[0, 0, 0, 0], torch.tensor([-1.0, 127 / 127.5 - 1.0, 1.0]))


def test_write_then_read_round_trips_and_memory_maps(tmp_path: Path) -> None:
    clips = np.random.default_rng(0).integers(0, 256, (5, 4, 8, 8, 2), dtype=np.uint8)
    path = write_clip_array(tmp_path / "c.npy", clips)
    back = read_clip_array(path, "flow")
    assert isinstance(back, np.memmap)
    np.testing.assert_array_equal(back, clips)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary behind


@pytest.mark.parametrize(
    ("array", "modality", "match"),
    [
        (np.zeros((2, 4, 8, 8, 3), np.float32), "rgb", "float32"),
        (np.zeros((2, 4, 8, 8, 3), np.uint8), "flow", r"\(K, T, H, W, 2\) flow"),
        (np.zeros((4, 8, 8, 3), np.uint8), "rgb", "uint8"),
    ],
)
def test_a_bad_clip_file_is_named(tmp_path: Path, array: np.ndarray, modality: str, match: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ConfigError, match=match) as err:
        read_clip_array(path, modality)
    assert str(path) in str(err.value) and "data.clips" in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        read_clip_array(tmp_path / "missing.npy", "rgb")
    with pytest.raises(ConfigError, match="uint8"):
        write_clip_array(tmp_path / "w.npy", np.zeros((2, 4, 8, 8, 3), np.float32))


def test_datamodule_serves_full_normalised_batches(tmp_path: Path) -> None:
    clips = np.random.default_rng(0).integers(0, 256, (10, 4, 16, 16, 3), dtype=np.uint8)
    dm = ClipArrayDataModule(str(write_clip_array(tmp_path / "c.npy", clips)), "rgb", batch_size=4)
    assert (dm.num_frames, dm.crop_size) == (4, 16)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and all(b["video"].shape == (4, 3, 4, 16, 16) for b in batches)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        _ = ClipArrayDataModule(str(tmp_path / "c.npy"), "rgb", batch_size=11).clips


def structured_flow_clips(n: int = 64) -> np.ndarray:
    """Smooth flow fields with a random global direction, quantised as compute-flow stores them."""
    g = np.random.default_rng(0)
    direction = g.normal(size=(n, 1, 1, 1, 2))
    ramp = np.linspace(-1, 1, 32).reshape(1, 1, 1, 32, 1)
    flow = np.clip(direction * (0.5 + 0.5 * ramp) + 0.05 * g.normal(size=(n, 4, 32, 32, 2)), -1, 1)
    return np.round((flow + 1.0) * 127.5).astype(np.uint8)


def mae_flow_argv(clips: Path, runs: Path, steps: int) -> list[str]:
    """The shipped recipe at test size: the 4 x 32 x 32 windows and width 32 of a CPU test."""
    return [
        "fit", "--config", str(MAE_FLOW), "--runs_dir", str(runs),
        f"--data.init_args.clips={clips}", f"--trainer.max_steps={steps}", "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--model.init_args.num_frames=4", "--model.init_args.img_size=32", "--model.init_args.encoder_dim=32",
        "--model.init_args.encoder_depth=1", "--model.init_args.encoder_heads=2",
        "--model.init_args.decoder_dim=32", "--model.init_args.lr=3e-3",
    ]  # fmt: skip


def test_the_mae_flow_recipe_learns_and_exports_a_flow_encoder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    clips = write_clip_array(tmp_path / "flow.npy", structured_flow_clips())
    cli = run_lightning_cli(mae_flow_argv(clips, tmp_path / "runs", 30))
    model = cli.model
    assert model.modalities == ("video",) and set(model.student) == {"video"}
    assert cli.trainer.global_step == 30
    losses = [v for _, _, v in read_metrics_csv(cli.run_dir / "metrics.csv")["loss/rec_video"]]
    assert len(losses) == 30 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert "loss/kd" not in cli.trainer.callback_metrics  # no cross-modal term was computed
    assert (cli.run_dir / "config.yaml").is_file()  # a run folder with its resolved config

    out = tmp_path / "encoders"
    export_checkpoint(last_checkpoint(cli.run_dir), out)
    assert sorted(p.name for p in out.glob("*.pt")) == ["student_video.pt", "teacher_video.pt"]
    loaded = load_encoder(out / "student_video.pt")
    assert loaded.kind == "xkd" and loaded.in_chans == 2 and loaded.dim == 32
    x = torch.randn(2, 2, 4, 32, 32)
    torch.testing.assert_close(loaded.module(x), model.student["video"].cpu().eval().patch_mean(x))


def test_chained_runs_in_one_process_log_to_their_own_wandb_runs(tmp_path: Path, monkeypatch) -> None:
    """Lightning's W&B logger joins any W&B run already open in the process: a pipeline's second
    run would log into the first's. The runner closes the earlier run first."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    clips = write_clip_array(tmp_path / "flow.npy", structured_flow_clips(16))
    dirs = [run_lightning_cli(mae_flow_argv(clips, tmp_path / "runs", 1)).run_dir for _ in range(2)]
    try:
        for run_dir in dirs:
            own_id = (run_dir / "wandb_id.txt").read_text().strip()
            found = [p.name for p in (run_dir / "wandb").glob("offline-run-*")]
            assert found and all(name.endswith(own_id) for name in found), (run_dir, found)
    finally:
        import wandb

        wandb.finish()
