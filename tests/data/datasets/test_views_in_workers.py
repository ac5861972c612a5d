"""``augment_on: batch`` on the CPU with DataLoader workers: the views made in the workers are the
bits the training process would make, and the decode cache is filled once, before the workers fork."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.data.datasets.test_trimmed import ucf_style_tree
from tests.data.media import write_garbage, write_video
from xmkd.data.datasets.batch_transforms import RAW_VIDEO_KEY
from xmkd.data.datasets.trimmed import CollateWithBatchViews, TrimmedVideoDataModule, TrimmedVideoDataset
from xmkd.data.readers.trimmed import ClipRecord


def _datamodule(root: Path, splits: Path, num_workers: int) -> TrimmedVideoDataModule:
    return TrimmedVideoDataModule(
        dataset="ucf101", root=str(root), splits=str(splits), num_frames=8, fps=8, audio_seconds=1.0,
        crop_size=16, local_crop_size=12, local_frames=4, linear_probe_view=True, augment_on="batch",
        test_clips=1, test_crops=1, batch_size=2, num_workers=num_workers, decode_cache_mb=64,
    )  # fmt: skip


def _epochs(dm: TrimmedVideoDataModule, epochs: int) -> list[dict[str, Any]]:
    loader = dm.train_dataloader()
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out += [dm.on_after_batch_transfer(batch, 0) for batch in loader]
    return out


@pytest.mark.timeout(300)
def test_views_made_in_a_worker_equal_those_made_after_the_transfer(tmp_path: Path) -> None:
    root, splits = ucf_style_tree(tmp_path)  # 4 training videos: 2 batches an epoch
    in_process, in_worker = _datamodule(root, splits, 0), _datamodule(root, splits, 1)
    for dm in (in_process, in_worker):
        dm.setup("fit")
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the training process's views on two threads, the worker's on one
    try:
        expected = _epochs(in_process, 2)
    finally:
        torch.set_num_threads(before)
    loader = in_worker.train_dataloader()
    assert isinstance(loader.collate_fn, CollateWithBatchViews)
    assert in_worker.train_set is not None and in_worker.train_set.decode_cache is not None
    assert len(in_worker.train_set.decode_cache) == len(in_worker.train_set.records)  # filled before forking
    got = _epochs(in_worker, 2)
    assert len(got) == len(expected) == 2 * 2
    for a, b in zip(expected, got):
        assert RAW_VIDEO_KEY not in b and set(a) == set(b)
        for key in ("video", "video_local", "video_probe", "audio", "label"):
            assert torch.equal(a[key], b[key]), key


def test_warm_cache_holds_what_lazy_filling_holds_and_leaves_bad_files_to_the_policy(tmp_path: Path) -> None:
    paths = [write_video(tmp_path / f"{n}.mp4", num_frames=16, fps=16, size=16) for n in "ab"]
    paths.append(write_garbage(tmp_path / "bad.mp4"))
    records = [ClipRecord(path=str(p), label=0, video_id=p.stem) for p in paths]
    common: dict[str, Any] = dict(
        num_frames=4, fps=8, with_audio=True, decode_cache_mb=16, on_bad_input="skip"
    )
    warm, lazy = TrimmedVideoDataset(records, **common), TrimmedVideoDataset(records, **common)
    assert warm.warm_cache() == 2  # the garbage file is not cached, and not fatal here
    for i in range(2):
        torch.manual_seed(i)
        a = warm[i]
        torch.manual_seed(i)
        b = lazy[i]
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    assert warm[2]["failures"][0]["path"] == str(paths[2])  # reported by name when an item reads it
    assert TrimmedVideoDataset(records[:1], num_frames=4, fps=8).warm_cache() == 0  # no cache: nothing to do
