"""The figure builders of xmkd.viz: the PNG is written and not empty, and the axes say what they show."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from xmkd.viz import (
    confusion_figure,
    confusion_matrix,
    embedding_figure,
    loss_curves_figure,
    read_metrics_csv,
    save_figure,
    timeline_figure,
    tsne_points,
)


def written_png(fig, path: Path) -> None:
    image = save_figure(fig, path)
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.ndim == 3 and image.shape[2] == 3


def test_timeline_has_class_names_and_seconds(tmp_path: Path) -> None:
    labels = np.zeros((40, 3))
    labels[5:20, 1] = 1
    fig = timeline_figure(
        labels, {"student": np.random.rand(40, 3)}, class_names=["run", "jump", "sit"], max_classes=2,
        seconds_per_step=0.25,
    )  # fmt: skip
    assert fig.axes[0].get_ylabel() == "jump"
    assert "seconds" in fig.axes[-1].get_xlabel()
    line = fig.axes[0].get_lines()[0]
    assert line.get_xdata()[-1] == pytest.approx(39 * 0.25)  # step 39 at 9.75 s
    written_png(fig, tmp_path / "timeline.png")
    steps = timeline_figure(labels, {"student": np.random.rand(40, 3)}, max_classes=1)
    assert steps.axes[-1].get_xlabel() == "time step" and steps.axes[0].get_ylabel() == "class 1"


def test_confusion_matrix_counts_and_figure_ticks(tmp_path: Path) -> None:
    m = confusion_matrix(np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 2]), 3)
    np.testing.assert_array_equal(m, [[1, 0, 0], [0, 1, 0], [1, 1, 1]])
    fig = confusion_figure(m, ["a", "b", "c"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    np.testing.assert_allclose(ax.get_images()[0].get_array()[2], [1 / 3, 1 / 3, 1 / 3])  # rows sum to 1
    written_png(fig, tmp_path / "confusion_val.png")
    with pytest.raises(ValueError, match="predictions for"):
        confusion_matrix(np.zeros(2), np.zeros(3), 2)


def test_tsne_embedding_legend_names_every_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = rng.normal(size=(60, 8)) + 5 * np.eye(8)[labels]
    points, index = tsne_points(features, max_points=45, seed=0)
    assert points.shape == (45, 2) and len(np.unique(index)) == 45
    again, _ = tsne_points(features, max_points=45, seed=0)
    np.testing.assert_array_equal(points, again)  # fixed seed: the same map
    fig = embedding_figure(
        {"pretrained": points, "random init": points[::-1]}, labels[index], ["low", "mid", "high"]
    )
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["low", "mid", "high"]
    assert [ax.get_title() for ax in fig.axes] == ["pretrained", "random init"]
    written_png(fig, tmp_path / "embedding.png")
    with pytest.raises(ValueError, match="3 points"):
        embedding_figure({"x": points[:3]}, labels, None)


def test_loss_curves_from_metrics_csv(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "step", "train/loss", "train/loss_epoch", "val/top1"])
        w.writeheader()
        for step in range(6):
            w.writerow({"epoch": step // 3, "step": step, "train/loss": 2.0 - 0.1 * step})
            if step % 3 == 2:
                w.writerow({"epoch": step // 3, "step": step, "train/loss_epoch": 1.5, "val/top1": step / 10})
    series = read_metrics_csv(path)
    assert [v for _, _, v in series["train/loss"]] == pytest.approx([2.0, 1.9, 1.8, 1.7, 1.6, 1.5])
    fig = loss_curves_figure(series)
    train_ax, val_ax = fig.axes
    assert [line.get_label() for line in train_ax.get_lines()] == ["train/loss"]  # not the epoch mean
    assert train_ax.get_xlabel() == "step" and val_ax.get_xlabel() == "epoch"
    np.testing.assert_allclose(val_ax.get_lines()[0].get_xdata(), [0, 1])
    np.testing.assert_allclose(val_ax.get_lines()[0].get_ydata(), [0.2, 0.5])
    written_png(fig, tmp_path / "loss_curves.png")


def test_unwritable_figure_only_warns(tmp_path: Path) -> None:
    blocker = tmp_path / "figures"
    blocker.write_text("a file where the folder should be")
    fig = confusion_figure(np.eye(2, dtype=int))
    with pytest.warns(UserWarning, match="could not write the figure"):
        save_figure(fig, blocker / "confusion_val.png")


def test_loss_curves_callback_draws_the_run_metrics_at_fit_end(tmp_path: Path, monkeypatch) -> None:
    """LossCurvesPlot flushes the CSV logger, reads metrics.csv and writes figures/loss_curves.png
    with every step's training loss (also the rows still buffered when the fit ends)."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.demos.boring_classes import BoringModel

    import xmkd.callbacks as callbacks
    import xmkd.viz as viz
    from xmkd.callbacks import LossCurvesPlot, RunCSVLogger

    class Logged(BoringModel):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            self.log("train/loss", out["loss"])
            return out

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", self(batch).sum())

    figures = []
    real = viz.loss_curves_figure
    monkeypatch.setattr(
        callbacks, "loss_curves_figure", lambda s, t="": figures.append(fig := real(s, t)) or fig
    )
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=5, limit_val_batches=2, log_every_n_steps=1, accelerator="cpu",
        logger=RunCSVLogger(tmp_path), callbacks=[LossCurvesPlot(tmp_path)], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Logged())
    png = tmp_path / "figures" / "loss_curves.png"
    assert png.is_file() and png.stat().st_size > 1000
    train_ax, val_ax = figures[0].axes
    (line,) = train_ax.get_lines()
    assert line.get_label() == "train/loss" and len(line.get_xdata()) == 10  # 2 epochs x 5 steps
    assert [v.get_label() for v in val_ax.get_lines()] == ["val/loss"]
    np.testing.assert_allclose(val_ax.get_lines()[0].get_xdata(), [0, 1])
