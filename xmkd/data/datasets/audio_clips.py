"""Audio clips as samples: :class:`AudioClipDataset` (windows of the listed audio files, 16 kHz mono)
and :class:`ESC50DataModule` (ESC-50's official folds, read by :func:`xmkd.data.readers.esc50.read_esc50`).

Samples carry ``audio`` (16 kHz mono waveform), ``label``, ``video_id`` (the file stem),
``clip_index`` and ``crop_index`` (always 0), like the trimmed video datasets', so the same SVM and
classifier code evaluates video and audio datasets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from xmkd.data.datasets.bad_input import collate_with_failures
from xmkd.data.io.video_io import read_audio
from xmkd.data.readers.esc50 import read_esc50
from xmkd.data.readers.trimmed import ClipRecord
from xmkd.errors import BadInputError, BadInputPolicy, ConfigError, Failure, MediaError

__all__ = ["AudioClipDataset", "ESC50DataModule", "audio_duration"]


def audio_duration(path: str | Path) -> float:
    """Duration in seconds of the first audio stream (header, else the container)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1e6
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(path, f"cannot open audio: {e}") from None
    raise MediaError(path, "audio duration unknown")


class AudioClipDataset(Dataset):
    """``clips_per_file`` audio windows of ``clip_seconds`` per listed file (16 kHz mono waveforms).

    ``random=True``: each item a uniformly random window (training; ``clips_per_file`` augmented
    clips per file and epoch, e.g. ESC-50's 100 for the SVM); ``False``: windows spaced evenly from
    start to end (testing, 3 clips). ``on_bad_input``: ``skip`` replaces an unreadable file by the
    next one and records the failure under ``failures``.
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        clip_seconds: float = 2.0,
        clips_per_file: int = 1,
        random: bool = True,
        sample_rate: int = 16000,
        volume_jitter: float = 0.0,
        on_bad_input: BadInputPolicy = "error",
    ) -> None:
        if clips_per_file < 1:
            raise ConfigError("clips_per_file", f"must be >= 1, got {clips_per_file}")
        if on_bad_input not in ("error", "skip"):
            raise ConfigError("on_bad_input", f"must be error | skip, got {on_bad_input!r}")
        self.records = list(records)
        if not self.records:
            raise ConfigError("records", "no audio files listed")
        self.clip_seconds, self.clips_per_file, self.random = clip_seconds, clips_per_file, random
        self.sample_rate, self.volume_jitter, self.on_bad_input = sample_rate, volume_jitter, on_bad_input
        self._durations: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.records) * self.clips_per_file

    def start_of(self, duration: float, clip_index: int) -> float:
        latest = max(0.0, duration - self.clip_seconds)
        if self.random:
            return float(torch.rand(())) * latest
        if self.clips_per_file == 1:
            return latest / 2
        return latest * clip_index / (self.clips_per_file - 1)

    def load(self, record: ClipRecord, clip_index: int) -> dict[str, Any]:
        if record.path not in self._durations:
            if not os.path.isfile(record.path):
                raise MediaError(record.path, "audio file not found")
            self._durations[record.path] = audio_duration(record.path)
        start = self.start_of(self._durations[record.path], clip_index)
        audio = read_audio(record.path, start, self.clip_seconds, self.sample_rate)
        if self.volume_jitter > 0:
            audio = audio * (1.0 + self.volume_jitter * (2 * float(torch.rand(())) - 1))
        return {
            "audio": audio,
            "label": int(record.label),
            "video_id": record.video_id,
            "clip_index": int(clip_index),
            "crop_index": 0,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        file_index, clip_index = divmod(index, self.clips_per_file)
        failures: list[dict[str, str]] = []
        for attempt in range(min(50, len(self.records))):
            record = self.records[(file_index + attempt) % len(self.records)]
            try:
                sample = self.load(record, clip_index)
            except BadInputError as e:
                if self.on_bad_input != "skip":
                    raise
                failures.append(Failure.from_error(e).as_dict())
                continue
            if self.on_bad_input == "skip":
                sample["failures"] = failures
            return sample
        raise MediaError(failures[-1]["path"], f"{len(failures)} consecutive audio files failed to load")


class ESC50DataModule(pl.LightningDataModule):
    """ESC-50 for audio-encoder evaluation: fold ``fold`` is the test (and validation) split.

    Args:
        root: the ESC-50 release folder (``meta/esc50.csv``, ``audio/``).
        fold: 1-5. clip_seconds: window length (interpretation: XKD does not state it for ESC-50;
            2 s matches the audio encoder of the tiny recipes, use the pretraining length).
        train_clips_per_video: random windows per file and epoch; test_clips: evenly spaced windows.
        volume_jitter: training gain jitter (+-; 0 disables).
    """

    def __init__(
        self,
        root: str,
        fold: int = 1,
        clip_seconds: float = 2.0,
        train_clips_per_video: int = 1,
        test_clips: int = 3,
        volume_jitter: float = 0.0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        on_bad_input: BadInputPolicy = "error",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root, self.fold = root, fold
        self.train_set: AudioClipDataset | None = None
        self.eval_set: AudioClipDataset | None = None
        self._class_names: list[str] | None = None

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        ann = read_esc50(self.root, self.fold)
        self._class_names = ann.class_names
        common = dict(clip_seconds=hp.clip_seconds, on_bad_input=hp.on_bad_input)
        self.train_set = AudioClipDataset(
            ann.split("train"), clips_per_file=hp.train_clips_per_video, random=True,
            volume_jitter=hp.volume_jitter, **common,
        )  # fmt: skip
        self.eval_set = AudioClipDataset(
            ann.split("test"), clips_per_file=hp.test_clips, random=False, **common
        )

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            raise RuntimeError("class_names are known after setup()")
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        hp = self.hparams
        return DataLoader(
            dataset,
            batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
            shuffle=train,
            drop_last=train,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            collate_fn=collate_with_failures,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, False)

    def predict_dataloader(self) -> DataLoader:
        """The test fold's windows, as for testing (``xmkd predict`` with an audio classifier)."""
        return self._loader(self.eval_set, False)
