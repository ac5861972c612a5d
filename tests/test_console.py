"""Console noise: harmless messages are filtered in one place (xmkd.console); causes are fixed elsewhere."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger

from tests.modules.test_xkd import SAMPLES, TINY
from xmkd.console import RepeatedBannerFilter, quiet_harmless_messages
from xmkd.modules.xkd import XKDPretrainer


def test_harmless_warnings_and_tips_are_dropped_others_kept(caplog) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_harmless_messages()
        quiet_harmless_messages()  # idempotent
        warnings.warn(
            "Found 126 module(s) in eval mode at the start of training. This may lead ...", stacklevel=1
        )
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", stacklevel=1)
        warnings.warn("Trainer(log_every_n_steps=5) is larger than the number of batches", stacklevel=1)
    assert [str(w.message)[:7] for w in seen] == ["Trainer"]
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert len([f for f in logger.filters if type(f).__name__ == "LightningTipFilter"]) == 1
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        logger.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        logger.info("Restoring states from the checkpoint path at last.ckpt")
    assert [r.getMessage() for r in caplog.records] == [
        "Restoring states from the checkpoint path at last.ckpt"
    ]


def test_start_up_banners_show_once_per_process() -> None:
    banner = RepeatedBannerFilter()

    def shown(message: str) -> bool:
        return banner.filter(logging.LogRecord("x", logging.INFO, "f", 1, message, None, None))

    assert shown("GPU available: False, used: False") and not shown("GPU available: False, used: False")
    assert shown("Seed set to 0") and shown("Seed set to 1") and not shown("Seed set to 0")
    assert shown("`Trainer.fit` stopped: `max_epochs=2` reached.") and shown(
        "`Trainer.fit` stopped: `max_epochs=2` reached."
    )


class RecordingWandb(WandbLogger):
    def __init__(self, save_dir: Path) -> None:
        super().__init__(save_dir=str(save_dir), offline=True)
        self.calls: list[tuple[str, list]] = []

    def log_image(self, key: str, images: list, step: int | None = None, **kwargs) -> None:
        self.calls.append((key, images))


def test_reconstructions_go_to_wandb_one_size_per_key(tmp_path: Path) -> None:
    """wandb warns "Images sizes do not match" for unequal images under one key."""
    torch.manual_seed(0)
    model = XKDPretrainer(**TINY)
    logger = RecordingWandb(tmp_path)
    model.trainer = pl.Trainer(
        logger=logger, accelerator="cpu", enable_progress_bar=False, default_root_dir=tmp_path
    )
    video = torch.randn(1, 3, 4, 32, 32)
    spec = model.audio_spectrogram(torch.randn(1, SAMPLES) * 0.1)
    with torch.no_grad():
        model._log_reconstructions(video, spec)
    assert [key for key, _ in logger.calls] == ["reconstructions/video", "reconstructions/audio"]
    assert all(len(images) == 1 for _, images in logger.calls)
