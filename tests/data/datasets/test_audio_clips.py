"""The audio clip dataset and the ESC-50 DataModule (``xmkd.data.datasets.audio_clips``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data.test_readers_esc50 import make_esc50
from xmkd.data.datasets.audio_clips import AudioClipDataset, ESC50DataModule
from xmkd.data.readers.esc50 import read_esc50
from xmkd.errors import MediaError

HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def test_audio_dataset_uniform_clips_and_missing_files(tmp_path: Path) -> None:
    root = make_esc50(tmp_path / "e", seconds=1.0)
    records = read_esc50(root, 1).split("test")
    ds = AudioClipDataset(records, clip_seconds=0.5, clips_per_file=3, random=False)
    assert len(ds) == 6
    assert ds.start_of(1.0, 0) == 0.0 and ds.start_of(1.0, 2) == pytest.approx(0.5)
    s = ds[5]
    assert s["audio"].shape == (8000,) and s["label"] == 1 and s["clip_index"] == 2
    assert s["audio"].abs().max() > 0.1
    (root / "audio" / records[0].path.split("/")[-1]).unlink()
    with pytest.raises(MediaError, match="not found"):
        AudioClipDataset(records, clip_seconds=0.5)[0]
    skipping = AudioClipDataset(records, clip_seconds=0.5, on_bad_input="skip")
    assert skipping[0]["video_id"] == records[1].video_id and len(skipping[0]["failures"]) == 1


def test_real_wav_reads(realdata) -> None:
    wav = realdata("audio/mmaction2_test.wav")
    from xmkd.data.datasets.audio_clips import audio_duration
    from xmkd.data.readers.trimmed import ClipRecord

    assert audio_duration(wav) == pytest.approx(6.6, abs=0.1)
    ds = AudioClipDataset([ClipRecord(str(wav), 0, "x")], clip_seconds=2.0, clips_per_file=3, random=False)
    assert ds[2]["audio"].shape == (32000,)


def test_datamodule_batches(tmp_path: Path) -> None:
    root = make_esc50(tmp_path / "e")
    dm = ESC50DataModule(
        str(root), fold=2, clip_seconds=0.5, train_clips_per_video=2, batch_size=4, num_workers=0
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (4, 8000) and dm.num_classes == 2
    assert len(dm.eval_set) == 6
    assert isinstance(batch["label"], torch.Tensor)
