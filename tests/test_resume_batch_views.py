"""Exact resume with the batched XKD views (``augment_on: batch``), through a real Trainer.

As ``tests/test_resume.py`` (uninterrupted A, SIGTERM mid-epoch B, resumed C with a scrambled
global RNG: C ends bit-exactly where A ends), but the items carry raw uint8 clips and their drawn
augmentation parameters, and the datamodule's ``on_after_batch_transfer`` makes the views, as
``TrimmedVideoDataModule(augment_on="batch")`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import Dataset

from tests.test_resume import SAMPLES, XKD_TINY, assert_same_run, run_three_ways
from xmkd.data.datasets.batch_transforms import AUGMENT_KEY, RAW_VIDEO_KEY, XKDBatchViews
from xmkd.fault import ResumableDataLoader

pytestmark = pytest.mark.usefixtures("one_thread")


class RawAVClips(Dataset):
    """Decoded uint8 clips with audio; each item draws its view parameters (from the item's seed)."""

    def __init__(self, views: XKDBatchViews, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.video = torch.randint(0, 256, (n, 4, 40, 40, 3), dtype=torch.uint8, generator=g)
        self.audio = torch.randn(n, SAMPLES, generator=g) * 0.1
        self.label = torch.arange(n) % 3
        self.views = views

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.views(self.video[i]), "audio": self.audio[i], "label": self.label[i]}


class BatchViewsData(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.views = XKDBatchViews(num_frames=4, size=32, local_frames=2, local_size=16)
        self.data = RawAVClips(self.views)

    def train_dataloader(self) -> ResumableDataLoader:
        return ResumableDataLoader(self.data, batch_size=2, shuffle=True)

    def val_dataloader(self) -> ResumableDataLoader:
        return ResumableDataLoader(self.data, batch_size=4, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        batch.update(self.views.apply(batch.pop(RAW_VIDEO_KEY), batch.pop(AUGMENT_KEY)))
        return batch


@pytest.mark.timeout(300)
def test_xkd_with_batched_views_resumes_exactly(tmp_path: Path) -> None:
    from xmkd.modules.xkd import XKDPretrainer

    sd_a, sd_c, ta, tc = run_three_ways(
        tmp_path, lambda: XKDPretrainer(**XKD_TINY), lambda: (BatchViewsData(),)
    )
    assert "val/probe_top1" in ta.callback_metrics
    assert_same_run(sd_a, sd_c, ta, tc)
