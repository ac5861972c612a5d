"""Model sizes are checked against the data at setup, naming both values (not an index error mid-step)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from tests.modules.test_classifier import export_tiny_encoder, video_batch
from tests.modules.test_detection import HEAD, collate, fake_videos
from tests.modules.test_xkd import TINY, TinyClips
from xmkd.errors import ConfigError
from xmkd.modules.classifier import VideoClassifier
from xmkd.modules.data_checks import check_against_data, data_attribute
from xmkd.modules.detection import SingleStreamDetector, TwoStreamTeacher
from xmkd.modules.xkd import XKDPretrainer

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeData(pl.LightningDataModule):
    """A datamodule that states its sizes like the xmkd ones (``num_classes`` unknown before setup)."""

    def __init__(self, loader: DataLoader, **sizes) -> None:
        super().__init__()
        self.loader, self.sizes, self.ready = loader, sizes, False

    def setup(self, stage: str) -> None:
        self.ready = True

    def __getattr__(self, name: str):
        sizes = self.__dict__.get("sizes", {})
        if name in sizes:
            if name == "num_classes" and not self.__dict__.get("ready"):
                raise RuntimeError("class_names are known after setup()")
            return sizes[name]
        raise AttributeError(name)

    def train_dataloader(self) -> DataLoader:
        return self.loader

    def predict_dataloader(self) -> DataLoader:
        return self.loader


def fit(model: pl.LightningModule, data: pl.LightningDataModule) -> None:
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)


def detection_loader() -> DataLoader:
    return DataLoader(fake_videos(), batch_size=3, collate_fn=collate)


def test_detector_num_classes_must_match_the_data() -> None:
    model = SingleStreamDetector(input_dim=6, **{**HEAD, "num_classes": 3})
    with pytest.raises(ConfigError, match=r"num_classes=3 but the data \(FakeData\) has num_classes=4"):
        fit(model, FakeData(detection_loader(), num_classes=4, feature_dims={"rgb": 6}))


def test_detector_input_widths_must_match_the_features() -> None:
    model = TwoStreamTeacher(aux_modality="flow", rgb_dim=6, aux_dim=7, **HEAD)
    with pytest.raises(ConfigError, match=r"aux_dim=7 .* feature width of flow=5"):
        fit(model, FakeData(detection_loader(), num_classes=4, feature_dims={"rgb": 6, "flow": 5}))
    fit(SingleStreamDetector(input_dim=6, **HEAD), FakeData(detection_loader(), num_classes=4))  # agrees


def test_classifier_num_classes_must_match_the_data(tmp_path: Path) -> None:
    model = VideoClassifier(str(export_tiny_encoder(tmp_path)), num_classes=3, mode="linear")
    loader = DataLoader([video_batch(4, classes=3)], batch_size=None)
    with pytest.raises(ConfigError, match=r"num_classes=3 but the data \(FakeData\) has num_classes=5"):
        fit(model, FakeData(loader, num_classes=5))


def test_xkd_clip_size_must_match_the_data() -> None:
    torch.manual_seed(0)
    model = XKDPretrainer(**TINY)
    with pytest.raises(ConfigError, match=r"num_frames=4 but the data .* num_frames=8"):
        fit(model, FakeData(DataLoader(TinyClips(), batch_size=2), num_frames=8, crop_size=32))
    with pytest.raises(ConfigError, match=r"img_size=32 .* crop_size=64"):
        fit(model, FakeData(DataLoader(TinyClips(), batch_size=2), num_frames=4, crop_size=64))


def test_unknown_values_are_not_checked() -> None:
    assert data_attribute(None, "num_classes") is None
    assert data_attribute(FakeData(None, num_classes=3), "num_classes") is None  # before setup
    check_against_data(object(), None, [("num_classes", 3, "num_classes", None)])
