"""VideoClassifier: linear vs fine-tune wiring, one optimiser step, and video-level multi-view testing."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from tests.trainers import quiet_trainer
from xmkd.errors import ConfigError
from xmkd.models.vit import ViTEncoder, audio_encoder_config, save_exported_encoder, video_encoder_config
from xmkd.modules.classifier import VideoClassifier, resize_encoder_input


def export_tiny_encoder(directory: Path, modality: str = "video", seed: int = 0) -> Path:
    """A 2-block, 32-wide random encoder exported like ``XKDPretrainer.export_encoders`` does.

    Video input: 4 frames x 32 x 32 in 2x16x16 tubelets; audio: 80 mel bins x 32 frames in 16x16 patches.
    """
    torch.manual_seed(seed)
    if modality == "video":
        config = video_encoder_config("tiny", 4, 32, 2, 16, depth=2)
    else:
        config = audio_encoder_config("tiny", 80, 32, (16, 16), depth=2)
    config.dim, config.num_heads = 32, 2
    return save_exported_encoder(ViTEncoder(config), Path(directory) / f"student_{modality}.pt")


def video_batch(n: int = 4, classes: int = 3, size: int = 32) -> dict:
    return {
        "video": torch.randn(n, 3, 4, size, size),
        "label": torch.arange(n) % classes,
        "video_id": [f"v{i}" for i in range(n)],
        "clip_index": torch.zeros(n, dtype=torch.long),
        "crop_index": torch.zeros(n, dtype=torch.long),
    }


def test_linear_mode_freezes_the_encoder_in_eval_mode(tmp_path: Path) -> None:
    model = VideoClassifier(str(export_tiny_encoder(tmp_path)), num_classes=3, mode="linear", lr=0.01)
    model.train()
    assert not model.encoder.training and model.head.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    opt = torch.optim.AdamW([p for g in model.parameter_groups() for p in g["params"]], lr=0.01)
    loss = model.training_step(video_batch(), 0)
    loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert {id(p) for g in model.parameter_groups() for p in g["params"]} == {
        id(p) for p in model.head.parameters()
    }


def test_finetune_mode_trains_everything_with_layer_decay(tmp_path: Path) -> None:
    model = VideoClassifier(
        str(export_tiny_encoder(tmp_path)),
        num_classes=3,
        mode="finetune",
        lr=1e-3,
        layer_decay=0.5,
        drop_path=0.2,
    )
    assert model.encoder.blocks[-1].drop_path.p == pytest.approx(0.2)
    groups = model.parameter_groups()
    head = next(g for g in groups if any(p is model.head[1].weight for p in g["params"]))
    embed = next(g for g in groups if any(p is model.encoder.pos_embed for p in g["params"]))
    assert head["lr"] == pytest.approx(1e-3) and embed["lr"] == pytest.approx(1e-3 * 0.5**3)
    loss = model.training_step(video_batch(), 0)
    loss.backward()
    assert model.encoder.patch_embed.weight.grad is not None and torch.isfinite(loss)


def test_position_embeddings_are_interpolated_to_a_larger_input(tmp_path: Path) -> None:
    path = export_tiny_encoder(tmp_path)
    model = VideoClassifier(str(path), num_classes=3, input_size=[4, 64, 64])
    assert model.encoder.pos_embed.shape[1] == 1 + 2 * 4 * 4
    assert model.encoder.config.input_size == (4, 64, 64)
    model.eval()
    assert model(torch.randn(2, 3, 4, 64, 64)).shape == (2, 3)
    # same grid: nothing changes
    enc = model.encoder
    assert resize_encoder_input(enc, (4, 64, 64)) is enc


def test_audio_encoder_takes_waveforms(tmp_path: Path) -> None:
    model = VideoClassifier(str(export_tiny_encoder(tmp_path, "audio")), num_classes=3, mode="linear")
    batch = {
        "audio": torch.randn(2, 143 * 40),
        "label": torch.tensor([0, 2]),
        "video_id": ["a", "b"],
        "clip_index": torch.tensor([0, 0]),
    }
    assert model.inputs(batch).shape == (2, 80, 32)
    assert torch.isfinite(model.training_step(batch, 0))
    with pytest.raises(ConfigError, match="audio_frames"):
        model.inputs({**batch, "audio": torch.randn(2, 1000)})


def test_video_level_aggregation_over_clips_and_crops(tmp_path: Path) -> None:
    """Two videos x 2 clips x 2 crops with hand-set logits (aggregate=scores); crops of one clip
    share a clip index, so they must count as separate views.

    Video a (label 0): one view scores class 1 high, three score class 0 -> mean favours 0 (right).
    Video b (label 1): one view favours 1, three favour 2 -> mean favours 2 (wrong).
    """
    model = VideoClassifier(
        str(export_tiny_encoder(tmp_path)), num_classes=3, mode="linear", aggregate="scores"
    )
    logits = torch.tensor([
        [0.0, 5.0, 0.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0],  # video a
        [0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 3.0, 2.0], [0.0, 0.0, 2.0],  # video b
    ])  # fmt: skip
    model.forward = lambda x: logits  # type: ignore[method-assign]
    batch = {
        "video": torch.zeros(8, 1),
        "label": torch.tensor([0] * 4 + [1] * 4),
        "video_id": ["a"] * 4 + ["b"] * 4,
        "clip_index": torch.tensor([0, 0, 1, 1] * 2),
        "crop_index": torch.tensor([0, 1, 0, 1] * 2),
    }
    model._eval_step(batch, model.val_accuracy)
    out = model.val_accuracy.compute()
    # clip level: a has 3/4 right, b 1/4 right (the 3.0 view) -> 4/8
    assert out["clip_top1"].item() == pytest.approx(0.5)
    # video a mean [1.5, 1.25, 0] -> 0 right; video b mean [0, 1.25, 2] -> 2 wrong
    assert out["video_top1"].item() == pytest.approx(0.5)
    assert out["video_top5"].item() == pytest.approx(1.0)


def test_one_fit_epoch_logs_video_metrics(tmp_path: Path) -> None:
    model = VideoClassifier(
        str(export_tiny_encoder(tmp_path)), num_classes=3, mode="finetune", warmup_epochs=0.5
    )
    items = [{k: v[i] for k, v in video_batch(6).items()} for i in range(6)]
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, DataLoader(items, batch_size=3), DataLoader(items, batch_size=3))
    assert {"val/video_top1", "val/clip_top1", "val/video_top5", "val/clip_top5"} <= set(
        trainer.callback_metrics
    )
    assert VideoClassifier.checkpoint_monitor == ("val/video_top1", "max")


def test_missing_encoder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="encoder_path"):
        VideoClassifier(str(tmp_path / "nope.pt"), num_classes=3)


def _colour_clips(n: int, seed: int) -> list[dict]:
    """Clips whose class is the dominant colour channel (noise elsewhere): separable, never seen."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = i % 3
        video = torch.randn(3, 4, 32, 32, generator=g) * 0.5
        video[label] += 1.5
        items.append(
            {
                "video": video,
                "label": torch.tensor(label),
                "video_id": f"s{seed}v{i}",
                "clip_index": torch.tensor(0),
                "crop_index": torch.tensor(0),
            }
        )
    return items


@pytest.mark.usefixtures("one_thread")
def test_finetune_learns_a_separable_task_on_held_out_clips(tmp_path: Path) -> None:
    """Guards the whole fine-tuning path (mixup/cutmix targets, label smoothing, layer decay, warm-up
    and cosine): held-out top-1 must rise from the untrained 0.58 to at least 0.9."""
    pl.seed_everything(0, verbose=False)
    model = VideoClassifier(
        str(export_tiny_encoder(tmp_path)), num_classes=3, mode="finetune", lr=1e-3, layer_decay=0.75,
        warmup_epochs=1.0, mixup_alpha=0.6, cutmix_alpha=0.5, label_smoothing=0.1, head_dropout=0.1,
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=8, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=8, default_root_dir=tmp_path,  # its confusion figures go there
    )  # fmt: skip
    train = DataLoader(_colour_clips(48, seed=1), batch_size=8, shuffle=True)
    held_out = DataLoader(_colour_clips(24, seed=2), batch_size=8)
    before = trainer.validate(model, held_out, verbose=False)[0]["val/video_top1"]
    trainer.fit(model, train, held_out)
    after = float(trainer.callback_metrics["val/video_top1"])
    assert after >= 0.9 and after - before >= 0.3, (before, after)


class _NamedClips(pl.LightningDataModule):
    """Six clips of three classes, with the class names a trimmed datamodule gives."""

    class_names = ("walk", "jump", "clap")
    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.items = [{k: v[i] for k, v in video_batch(6).items()} for i in range(6)]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.items, batch_size=3)

    val_dataloader = test_dataloader = train_dataloader


def test_validation_and_test_write_a_named_confusion_matrix(tmp_path: Path, monkeypatch) -> None:
    """confusion_<stage>.png in the run's figures folder; its rows are the video-level predictions."""
    import xmkd.modules.classifier as classifier

    matrices = []
    real = classifier.confusion_figure
    names = []
    monkeypatch.setattr(
        classifier,
        "confusion_figure",
        lambda m, n, **k: matrices.append(m) or names.append(n) or real(m, n, **k),
    )
    model = VideoClassifier(str(export_tiny_encoder(tmp_path)), num_classes=3, mode="linear", lr=0.01)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=1, default_root_dir=tmp_path,
    )  # fmt: skip
    data = _NamedClips()
    trainer.fit(model, datamodule=data)
    fit_png = tmp_path / "figures" / "confusion_val.png"
    assert fit_png.is_file() and fit_png.stat().st_size > 1000
    fit_bytes = fit_png.read_bytes()
    trainer.validate(model, datamodule=data)  # evaluated into the same run: the fit's figure stays
    trainer.test(model, datamodule=data)
    assert len(matrices) == 3  # validation during fit, validate, test; the sanity check writes nothing
    assert fit_png.read_bytes() == fit_bytes
    step = trainer.global_step
    for stage, name in (("validate", "val"), ("test", "test")):
        png = tmp_path / "figures" / f"{stage}_epoch001_step{step:06d}_confusion_{name}.png"
        assert png.is_file() and png.stat().st_size > 1000
    assert matrices[-1].sum() == 6 and matrices[-1].sum(1).tolist() == [2, 2, 2]  # one row per true class
    top1 = trainer.callback_metrics["test/video_top1"].item()
    assert matrices[-1].trace() / 6 == pytest.approx(top1)
    assert names[-1] == ["walk", "jump", "clap"]  # the datamodule's names reach the figure
