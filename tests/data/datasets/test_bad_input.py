"""collate_with_failures and the BadInputReport callback: skipped files are counted, never lost."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tests.data.media import write_garbage, write_video
from tests.trainers import quiet_trainer
from xmkd.data.datasets.bad_input import BadInputReport, TooManyBadInputsError, collate_with_failures
from xmkd.data.datasets.trimmed import TrimmedVideoDataset, UniformClipSampler
from xmkd.data.readers.trimmed import ClipRecord


def test_collate_stacks_and_concatenates_failures() -> None:
    samples = [
        {"video": torch.zeros(3, 2), "label": 1, "video_id": "a", "failures": []},
        {"video": torch.ones(3, 2), "label": 2, "video_id": "b", "failures": [{"path": "x", "reason": "r1"}]},
        {"video": torch.ones(3, 2), "label": 3, "video_id": "c", "failures": [{"path": "y", "reason": "r2"}]},
    ]
    batch = collate_with_failures(samples)
    assert batch["video"].shape == (3, 3, 2)
    assert batch["label"].tolist() == [1, 2, 3]
    assert batch["video_id"] == ["a", "b", "c"]
    assert batch["failures"] == [{"path": "x", "reason": "r1"}, {"path": "y", "reason": "r2"}]
    untracked = collate_with_failures([{"label": 1}, {"label": 2}])
    assert "failures" not in untracked
    with pytest.raises(ValueError, match="empty batch"):
        collate_with_failures([])


def test_failures_survive_dataloader_workers(tmp_path: Path) -> None:
    good = [write_video(tmp_path / f"g{i}.mp4", num_frames=8, fps=8, size=16, audio=False) for i in range(3)]
    bad = write_garbage(tmp_path / "bad.mp4")
    recs = [ClipRecord(str(p), i, p.stem) for i, p in enumerate([good[0], bad, good[1], good[2]])]
    ds = TrimmedVideoDataset(recs, UniformClipSampler(1), num_frames=2, on_bad_input="skip")
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_with_failures)
    batches = list(loader)
    assert [b["video_id"] for b in batches] == [["g0", "g1"], ["g1", "g2"]]
    failures = [f for b in batches for f in b["failures"]]
    assert [f["path"] for f in failures] == [str(bad)]


class ListDataset(Dataset):
    """Items whose failures are given: the callback's input without decoding anything."""

    def __init__(self, failures_per_item: list[int]) -> None:
        self.failures = failures_per_item

    def __len__(self) -> int:
        return len(self.failures)

    def __getitem__(self, i: int) -> dict:
        return {
            "x": torch.full((2,), float(i)),
            "label": i % 2,
            "failures": [{"path": f"v{i}_{k}.mp4", "reason": "broken"} for k in range(self.failures[i])],
        }


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.layer(batch["x"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.training_step(batch, batch_idx))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(failures: list[int]) -> DataLoader:
    return DataLoader(ListDataset(failures), batch_size=4, collate_fn=collate_with_failures)


def trainer(tmp_path: Path, report: BadInputReport) -> pl.Trainer:
    return quiet_trainer(default_root_dir=tmp_path, max_epochs=1, num_sanity_val_steps=0, callbacks=[report])


def test_report_counts_prints_and_logs(tmp_path: Path, capsys) -> None:
    report = BadInputReport(max_fraction=0.5)
    t = trainer(tmp_path, report)
    train = [0] * 16
    train[3], train[9] = 1, 2  # 3 failures in 16 good items
    t.fit(Tiny(), loader(train), loader([0, 1, 0, 0]))
    assert report.totals == {"train": 3, "validate": 1}
    err = capsys.readouterr().err
    assert "3 bad input file(s) skipped" in err and "v9_1.mp4: broken" in err
    assert "1 bad input file(s) skipped" in err
    assert t.callback_metrics["bad_input/train"] == 3
    assert t.callback_metrics["bad_input/validate"] == 1


def test_report_fails_fast_above_max_fraction(tmp_path: Path) -> None:
    report = BadInputReport(max_fraction=0.2, min_items=8)
    t = trainer(tmp_path, report)
    # every item hides one bad file: fails after two batches, when min_items items were seen; the
    # denominator is the items (8), not the loads (16)
    with pytest.raises(TooManyBadInputsError, match=r"train: 8 of 8 items were bad") as info:
        t.fit(Tiny(), loader([1] * 100))
    assert "v0_0.mp4: broken" in str(info.value)


def test_report_checks_the_whole_epoch_at_its_end() -> None:
    report = BadInputReport(max_fraction=0.1, min_items=1000)

    class FakeTrainer:
        current_epoch = 0
        sanity_checking = True  # no self.log call

    report._add("train", collate_with_failures([ListDataset([1, 0, 0, 0])[i] for i in range(4)]))
    with pytest.raises(TooManyBadInputsError, match=r"1 of 4 items"):
        report.on_train_epoch_end(FakeTrainer(), None)  # type: ignore[arg-type]
    assert report.logs == {}  # reset for the next epoch


def test_report_ignores_batches_without_failures() -> None:
    report = BadInputReport()
    report.on_train_batch_end(None, None, None, (torch.zeros(2), torch.zeros(2)), 0)
    report.on_train_batch_end(None, None, None, {"label": torch.zeros(2)}, 0)
    assert report.logs == {}
    with pytest.raises(ValueError, match="max_fraction"):
        BadInputReport(max_fraction=1.5)
