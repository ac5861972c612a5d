"""Trimmed-video clips: a map-style dataset and the LightningDataModule (clip samplers: :mod:`xmkd.data.datasets.samplers`).

One item of :class:`TrimmedVideoDataset` is one view of one listed video: for training one random
temporal window (:class:`RandomClipSampler`); for evaluation every combination of ``K`` uniformly
spaced windows (:class:`UniformClipSampler`) and the eval transform's spatial crops, so the
dataset length is ``videos x clips x crops`` and every item carries its ``video_id`` for
per-video score averaging. Samples are dicts (see CONTRIBUTING.md)::

    {"video": (C, T, H, W) float, "audio": (N,) float (16 kHz, if with_audio), "label": int,
     "video_id": str, "clip_index": int, "crop_index": int, ...transform keys (e.g. video_local),
     "failures": [{"path", "reason"}, ...] (when items may be skipped)}

Bad input: videos listed but absent on disk are handled up front (``missing``); a file that
fails to decode is fatal or skipped (``on_bad_input``): replaced by the next video for training,
dropped for evaluation (``skip_mode``), the skipped file travelling under ``failures`` (see
:mod:`xmkd.data.datasets.bad_input`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from xmkd.data.datasets import transforms as T
from xmkd.data.datasets.bad_input import DropEmptyBatchesLoader, SkipMode, collate_with_failures, dropped_item
from xmkd.data.datasets.batch_transforms import AUGMENT_KEY, RAW_VIDEO_KEY, XKDBatchViews, pad_clips
from xmkd.data.datasets.samplers import ClipSampler, RandomClipSampler, UniformClipSampler
from xmkd.data.datasets.shards import (
    ShardReader,
    ShardStream,
    read_manifest,
    read_shard_records,
    shard_loader,
)
from xmkd.data.io.decode_cache import DecodeCache, DecodedVideo, grid_frame_count
from xmkd.data.io.video_io import MediaSource, VideoInfo, probe, read_audio, read_av_clip, read_clip
from xmkd.data.readers.trimmed import UNLABELLED, ClipRecord, find_existing
from xmkd.data.registry import TrimmedSource, read_trimmed, train_test, trimmed_dataset
from xmkd.errors import BadInputError, BadInputPolicy, ConfigError, Failure, MediaError, MissingAudioError
from xmkd.fault import ResumableDataLoader

log = logging.getLogger(__name__)

MissingAudioPolicy = Literal["error", "silence", "skip"]
AUDIO_SAMPLE_RATE = 16000

__all__ = [
    "ClipSampler",
    "CollateWithBatchViews",
    "MissingAudioPolicy",
    "RandomClipSampler",
    "TrimmedVideoDataModule",
    "TrimmedVideoDataset",
    "UniformClipSampler",
    "collate_raw_clips",
    "find_existing",
    "loop_pad",
    "read_trimmed_annotations",
]


# ----------------------------------------------------------------------------------------------
# helpers


def loop_pad(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Repeat the frames of a short clip cyclically up to ``num_frames`` (first dimension is time)."""
    if frames.shape[0] == 0:
        raise ValueError("cannot pad an empty clip")
    if frames.shape[0] >= num_frames:
        return frames[:num_frames]
    index = torch.arange(num_frames) % frames.shape[0]
    return frames[index]


def _to_float_video(clip: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float (C, T, H, W) in [0, 1]: the sample format without a transform."""
    return clip.permute(3, 0, 1, 2).float().div_(255.0)


# ----------------------------------------------------------------------------------------------
# dataset


class TrimmedVideoDataset(Dataset):
    """Map-style dataset of clips from trimmed videos listed as :class:`ClipRecord`.

    Args:
        records: the videos (one split), e.g. ``read_ucf101(...).split("train")``.
        sampler: where clips start; its ``num_clips`` multiplies the length.
        transform: called on the uint8 ``(T, H, W, C)`` clip. It may return a tensor (the
            ``video``) or a dict with a ``video`` key and more (``video_local``...). With
            ``num_crops > 1`` it is called as ``transform(clip, crop_index=j)``. ``None``: the clip
            as float ``(C, T, H, W)`` in [0, 1].
        num_crops: spatial crops per clip produced by the (eval) transform; multiplies the length.
        num_frames, fps: frames per clip and the rate they are taken at (``None``: the video's own
            rate); a clip covers ``num_frames / fps`` seconds. Clips longer than the video loop.
        audio_seconds: length of the audio window, from the clip start (``None``: the clip's length).
        with_audio: decode the audio track (mono, 16 kHz) into ``audio``.
        missing_audio: a video without an audio track when ``with_audio``: ``error`` raises
            MissingAudioError (a bad input, so ``on_bad_input: skip`` skips it), ``silence`` gives
            zeros, ``skip`` always replaces the item by the next video and records the failure.
        missing: videos listed but absent on disk: ``error`` raises naming the first ones and the
            count; ``skip`` drops them up front (logged; listed in ``missing_paths``).
        on_bad_input: a file that fails to decode: ``error`` raises; ``skip`` records the failure
            under ``failures`` and, by ``skip_mode``, replaces the item by the same view of the
            next video or drops it.
        skip_mode: ``replace`` (training) or ``drop`` (evaluation: a replacement would count the
            next video twice in the metrics; the item becomes a dropped marker that
            :func:`~xmkd.data.datasets.bad_input.collate_with_failures` leaves out of its batch).
        min_duration_s: videos shorter than this are bad input (XKD drops clips under 1.1 s).
        max_tries: replacements tried for one item before giving up (a run of bad files that long
            means the data, not a file, is broken).
        decode_threads: FFmpeg threading; ``None`` = on in the main process, off in DataLoader
            workers (the workers already use the cores).
        decode_cache_mb: keep up to this many MB of whole decoded videos (frames on the ``fps``
            grid, and audio) per process, so a small dataset is decoded once instead of every epoch;
            clip starts then snap to that grid (see :mod:`xmkd.data.io.decode_cache`). 0: off.
        media: where a record's encoded video comes from when not from the file at ``record.path``
            (e.g. :class:`~xmkd.data.datasets.shards.ShardReader`); the files then need not be on this disk
            (``missing`` is not checked) and are decoded from memory exactly as from the file.
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        sampler: ClipSampler | None = None,
        transform: Callable[..., Any] | None = None,
        num_frames: int = 16,
        fps: float | None = None,
        audio_seconds: float | None = None,
        with_audio: bool = False,
        missing_audio: MissingAudioPolicy = "error",
        missing: BadInputPolicy = "error",
        on_bad_input: BadInputPolicy = "error",
        num_crops: int = 1,
        min_duration_s: float = 0.0,
        max_tries: int = 50,
        decode_threads: bool | None = None,
        audio_sample_rate: int = AUDIO_SAMPLE_RATE,
        decode_cache_mb: float = 0.0,
        skip_mode: SkipMode = "replace",
        media: Callable[[ClipRecord], MediaSource] | None = None,
    ) -> None:
        _check_choice("missing_audio", missing_audio, ("error", "silence", "skip"))
        _check_choice("missing", missing, ("error", "skip"))
        _check_choice("on_bad_input", on_bad_input, ("error", "skip"))
        _check_choice("skip_mode", skip_mode, ("replace", "drop"))
        if num_frames < 1:
            raise ConfigError("num_frames", f"must be >= 1, got {num_frames}")
        if fps is not None and not fps > 0:
            raise ConfigError("fps", f"must be > 0 or null, got {fps}")
        if audio_seconds is not None and not audio_seconds > 0:
            raise ConfigError("audio_seconds", f"must be > 0 or null, got {audio_seconds}")
        if num_crops < 1:
            raise ConfigError("num_crops", f"must be >= 1, got {num_crops}")
        if not decode_cache_mb >= 0:
            raise ConfigError("decode_cache_mb", f"must be >= 0 (0: no cache), got {decode_cache_mb}")
        self.sampler: ClipSampler = sampler if sampler is not None else RandomClipSampler()
        self.transform = transform
        self.num_frames = num_frames
        self.fps = fps
        self.audio_seconds = audio_seconds
        self.with_audio = with_audio
        self.missing_audio = missing_audio
        self.on_bad_input = on_bad_input
        self.skip_mode = skip_mode
        self.num_crops = num_crops
        self.min_duration_s = min_duration_s
        self.max_tries = max_tries
        self.decode_threads = decode_threads
        self.audio_sample_rate = audio_sample_rate
        self.reports_failures = on_bad_input == "skip" or (with_audio and missing_audio == "skip")
        self._info: dict[str, VideoInfo] = {}
        self.decode_cache = DecodeCache(decode_cache_mb) if decode_cache_mb > 0 else None

        self.media = media
        records = list(records)
        exists = [True] * len(records) if media is not None else find_existing([r.path for r in records])
        self.missing_paths: list[str] = [r.path for r, ok in zip(records, exists) if not ok]
        if self.missing_paths and missing == "error":
            raise MediaError(
                self.missing_paths[0],
                f"{len(self.missing_paths)} of {len(records)} listed videos are missing on disk; first: "
                + ", ".join(self.missing_paths[:5])
                + " (set missing: skip to drop them)",
            )
        if self.missing_paths:
            log.warning(
                "%d of %d listed videos are missing on disk and skipped; first: %s",
                len(self.missing_paths),
                len(records),
                ", ".join(self.missing_paths[:5]),
            )
        self.records: list[ClipRecord] = [r for r, ok in zip(records, exists) if ok]
        self.listed = len(records)

    # -- indexing -----------------------------------------------------------------------------

    @property
    def views_per_video(self) -> int:
        return self.sampler.num_clips * self.num_crops

    def __len__(self) -> int:
        return len(self.records) * self.views_per_video

    def locate(self, index: int) -> tuple[int, int, int]:
        """Item index -> (video index, clip index, crop index)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        video, view = divmod(index, self.views_per_video)
        clip, crop = divmod(view, self.num_crops)
        return video, clip, crop

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, clip, crop = self.locate(index)
        failures: list[dict[str, str]] = []
        tries = 1 if self.skip_mode == "drop" else min(self.max_tries, len(self.records))
        for attempt in range(tries):
            record = self.records[(video + attempt) % len(self.records)]
            try:
                sample = self.load(record, clip, crop)
            except MissingAudioError as e:
                if not (self.missing_audio == "skip" or self.on_bad_input == "skip"):
                    raise
                failures.append(Failure.from_error(e).as_dict())
            except BadInputError as e:
                if self.on_bad_input != "skip":
                    raise
                failures.append(Failure.from_error(e).as_dict())
            else:
                if self.reports_failures:
                    sample["failures"] = failures
                return sample
        if self.skip_mode == "drop":
            return dropped_item(failures)
        raise MediaError(
            failures[-1]["path"] if failures else self.records[video].path,
            f"{len(failures)} consecutive videos failed to load (max_tries={self.max_tries}); "
            f"first: {failures[0]['path']}: {failures[0]['reason']}"
            if failures
            else "no video could be loaded",
        )

    # -- loading ------------------------------------------------------------------------------

    def info(self, path: str, media: MediaSource | None = None) -> VideoInfo:
        """``probe(path)`` (or of ``media``, its bytes), cached (evaluation visits each video clips x crops times)."""
        found = self._info.get(path)
        if found is None:
            found = self._info[path] = probe(media if media is not None else path)
        return found

    @staticmethod
    def clip_bounds(record: ClipRecord, info: VideoInfo) -> tuple[float, float]:
        """(begin, end) in seconds of the part of the file the record lists."""
        begin = record.start_s or 0.0
        end = min(record.end_s, info.duration_s) if record.end_s is not None else info.duration_s
        return begin, end

    def clip_start(self, record: ClipRecord, info: VideoInfo, clip_index: int) -> tuple[float, float]:
        """(start of clip ``clip_index`` in the file in seconds, clip length in seconds)."""
        clip_duration = self.num_frames / (self.fps or info.fps)
        begin, end = self.clip_bounds(record, info)
        if end <= begin:
            raise MediaError(
                record.path,
                f"clip bounds {begin:.2f}-{end:.2f} s lie outside the video ({info.duration_s:.2f} s)",
            )
        start = begin + self.sampler(end - begin, clip_duration, clip_index)
        # Keep the start safely inside the decoded stream (durations in headers are approximate).
        return min(start, max(begin, end - 1.0 / info.fps)), clip_duration

    def load(
        self, record: ClipRecord, clip_index: int = 0, crop_index: int = 0, media: MediaSource | None = None
    ) -> dict[str, Any]:
        """The sample for one view of one video; raises BadInputError subclasses for bad files.

        ``media``: the video's encoded bytes when they come from elsewhere than ``record.path`` (a
        shard, :mod:`xmkd.data.datasets.shards`); decoded exactly as the file would be.
        """
        if media is None and self.media is not None:
            media = self.media(record)
        source = media if media is not None else record.path
        info = self.info(record.path, media)
        if info.duration_s < self.min_duration_s:
            raise MediaError(
                record.path,
                f"video lasts {info.duration_s:.2f} s, under min_duration_s={self.min_duration_s}",
            )
        start, clip_duration = self.clip_start(record, info, clip_index)
        decoded = (
            self.decode_cache.get(
                record.path, lambda: self._decode_whole(record, info, clip_duration, source)
            )
            if self.decode_cache is not None
            else None
        )
        audio: torch.Tensor | None = None
        if decoded is not None:
            frames, start = decoded.clip(start, self.num_frames)
        elif self.with_audio and info.has_audio:  # one open of the file for both modalities
            seconds = self._audio_seconds(clip_duration)
            frames, audio = read_av_clip(
                source,
                start,
                self.num_frames,
                seconds,
                self.fps,
                sample_rate=self.audio_sample_rate,
                threads=self._threads(),
            )
            frames = loop_pad(frames, self.num_frames)
        else:
            frames = read_clip(source, start, self.num_frames, self.fps, threads=self._threads())
            frames = loop_pad(frames, self.num_frames)  # read_clip loops already; this guards the shape
        sample: dict[str, Any] = {}
        if self.transform is None:
            sample["video"] = _to_float_video(frames)
        else:
            out = (
                self.transform(frames, crop_index=crop_index)
                if self.num_crops > 1
                else self.transform(frames)
            )
            if isinstance(out, Mapping):
                if "video" not in out and RAW_VIDEO_KEY not in out:  # batch views: the raw clip
                    raise ConfigError("transform", f"returned a dict without 'video' (keys {sorted(out)})")
                sample.update(out)
            else:
                sample["video"] = out
        if self.with_audio:
            seconds = self._audio_seconds(clip_duration)
            if decoded is not None and decoded.audio is not None:
                sample["audio"] = decoded.audio_window(start, round(seconds * self.audio_sample_rate))
            elif audio is not None:
                sample["audio"] = audio
            else:
                sample["audio"] = self._audio(record, info, start, seconds, source)
        sample.update(
            label=int(record.label),
            video_id=record.video_id,
            clip_index=int(clip_index),
            crop_index=int(crop_index),
        )
        return sample

    def warm_cache(self) -> int:
        """Decode every video into the decode cache now, in this process; returns the videos cached.

        DataLoader workers are forked per epoch (:class:`~xmkd.fault.ResumableDataLoader`), so a
        cache they fill dies with them and every epoch would decode the set again; a cache filled
        here before they fork is theirs from the start (copy-on-write: the frames are never
        written). An entry is a function of its video alone, so when the budget holds every video
        the clips are those of a cache filled lazily; past the budget the first videos in listed
        order are kept (lazily: the first ones the epoch's order reads). Files that fail to decode
        are left out here and reported by name, under the bad-input policy, when an item reads them.
        """
        cache = self.decode_cache
        if cache is None:
            return 0
        for record in self.records:
            if cache.full:
                break
            try:
                media = self.media(record) if self.media is not None else None
                info = self.info(record.path, media)
                if info.duration_s < self.min_duration_s:
                    continue  # load() refuses it before the cache
                clip_duration = self.num_frames / (self.fps or info.fps)
                source = media if media is not None else record.path
                decode = functools.partial(self._decode_whole, record, info, clip_duration, source)
                cache.get(record.path, decode)
            except BadInputError:
                continue
        return len(cache)

    def _audio_seconds(self, clip_duration: float) -> float:
        return self.audio_seconds or clip_duration

    def _threads(self) -> bool:
        return self.decode_threads if self.decode_threads is not None else get_worker_info() is None

    def _decode_whole(
        self, record: ClipRecord, info: VideoInfo, clip_duration: float, source: MediaSource
    ) -> DecodedVideo:
        """The record's whole range on the ``fps`` grid, with audio for a window from its last frame."""
        fps = self.fps or info.fps
        begin, end = self.clip_bounds(record, info)
        count = grid_frame_count(begin, end, fps)
        frames = read_clip(source, begin, count, fps, threads=self._threads())
        audio = None
        if self.with_audio:
            audio = self._audio(record, info, begin, count / fps + self._audio_seconds(clip_duration), source)
        return DecodedVideo(begin, fps, frames, audio, self.audio_sample_rate)

    def _audio(
        self, record: ClipRecord, info: VideoInfo, start: float, seconds: float, source: MediaSource
    ) -> torch.Tensor:
        num_samples = round(seconds * self.audio_sample_rate)
        if not info.has_audio:
            if self.missing_audio == "silence":
                return torch.zeros(num_samples)
            raise MissingAudioError(record.path, f"no audio stream (missing_audio={self.missing_audio})")
        audio = read_audio(source, start, seconds, self.audio_sample_rate)
        if audio.shape[0] != num_samples:  # read_audio pads already; guard the collate shape
            audio = torch.nn.functional.pad(audio[:num_samples], (0, max(0, num_samples - audio.shape[0])))
        return audio

    def __repr__(self) -> str:
        return (
            f"TrimmedVideoDataset({len(self.records)} videos, {len(self)} items, {self.sampler!r}, "
            f"crops={self.num_crops}, frames={self.num_frames}@{self.fps or 'native'} fps, audio={self.with_audio})"
        )


def collate_raw_clips(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`collate_with_failures`, the uint8 clips of ``augment_on: batch`` zero-padded to one size."""
    clips = [s[RAW_VIDEO_KEY] for s in samples if RAW_VIDEO_KEY in s]  # dropped items have none
    batch = collate_with_failures([{k: v for k, v in s.items() if k != RAW_VIDEO_KEY} for s in samples])
    if clips:
        batch[RAW_VIDEO_KEY] = pad_clips(clips)
    return batch


class CollateWithBatchViews:
    """:func:`collate_raw_clips`, then the batch's views made right there, in the DataLoader worker.

    For training on the CPU with ``num_workers > 0``: the views overlap the step instead of running
    between steps in the training process. The pixels are those of
    :meth:`TrimmedVideoDataModule.on_after_batch_transfer` on the CPU (the same parameters, the same
    ops; :meth:`XKDBatchViews.apply` gives the same bits on one thread as on several).
    """

    def __init__(self, views: XKDBatchViews) -> None:
        self.views = views

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = collate_raw_clips(samples)
        if RAW_VIDEO_KEY in batch:
            batch.update(self.views.apply(batch.pop(RAW_VIDEO_KEY), batch.pop(AUGMENT_KEY)))
        return batch


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"must be one of {' | '.join(allowed)}, got {value!r}")


# ----------------------------------------------------------------------------------------------
# DataModule

TrainTransformName = Literal["xkd", "finetune", "eval", "none"]
AugmentOn = Literal["sample", "batch"]
EvalTransformName = Literal["eval", "none"]


def read_trimmed_annotations(
    dataset: str,
    root: str | os.PathLike,
    splits: str | os.PathLike | None = None,
    annotation: str | os.PathLike | None = None,
    test_annotation: str | os.PathLike | None = None,
    fold: int = 1,
    classes: Sequence[str] | str | os.PathLike | None = None,
) -> tuple[list[str], list[ClipRecord], list[ClipRecord]]:
    """(class names, train records, test records) of a registered trimmed dataset.

    ``ucf101``/``hmdb51``/``synthetic`` read official-style split files from ``splits`` (the
    synthetic set ships UCF101-style lists). ``kinetics`` and ``csv`` read ``annotation`` for
    training and ``test_annotation`` for testing (with the training class list, so indices agree);
    a Kinetics CSV given alone is divided by its ``split`` column (``train`` vs the rest).
    ``classes`` (Kinetics only): a class subset, as a list or a file with one name per line.
    See :mod:`xmkd.data.registry` for the list and how to add one.
    """
    source = TrimmedSource(str(root), splits, annotation, test_annotation, fold, classes)
    ann = read_trimmed(dataset, source)
    train, test = train_test(ann)
    return ann.class_names, train, test


class TrimmedVideoDataModule(pl.LightningDataModule):
    """Trimmed-video clips for XKD pretraining, linear probes and fine-tuning.

    Train split -> ``train_dataloader`` (one random clip per video and epoch, or
    ``train_clips_per_video``; shuffled; last partial batch dropped). Test split ->
    ``val_dataloader`` and ``test_dataloader`` (``test_clips`` uniform clips x ``test_crops``
    crops per video, each sample carrying its ``video_id`` for per-video averaging).

    Args:
        dataset: a registered name (:mod:`xmkd.data.registry`): ``ucf101 | hmdb51 | kinetics |
            csv | synthetic`` or one added with ``register_trimmed``.
        root: the videos (for ``synthetic``: the generated set, default ``data/synth-av``, written
            on first use by ``prepare_data`` and read through the UCF101 reader from its lists).
        splits: folder of the split files (UCF101 ``ucfTrainTestlist``, HMDB51
            ``testTrainMulti_7030_splits``); for ``synthetic`` default ``<root>/splits``.
        annotation, test_annotation: Kinetics / generic CSVs for training and testing.
        fold: official fold (1-3) of UCF101/HMDB51.
        classes: Kinetics class subset (e.g. Kinetics-Sound): names, or a file of names.
        num_frames, fps: frames per clip and sampling rate (``None``: native); XKD: 32 at 8 fps.
        audio_seconds: audio window (``None``: the clip length); ``with_audio``: decode it.
        train_transform: ``xkd`` (global + local views), ``finetune`` (RandAugment recipe),
            ``eval`` (centre crop, e.g. for linear-probe features) or ``none``.
        eval_transform: ``eval`` (short side resize + ``test_crops`` crops) or ``none``.
        crop_size, local_crop_size, local_frames, num_local_views, eval_short_side: view sizes.
        color_jitter_p: probability of the ``xkd`` views' colour jitter (1: the released code
            jitters every view; 0.8 is DINO's and what xmkd used before).
        linear_probe_view: with ``train_transform: xkd``, also return ``video_probe``, the linear
            evaluation's view of the same clip (random resized crop + flip), for the pretrainer's
            online probe (``probe_view: linear``).
        randaug_num_ops / randaug_magnitude / erase_p: ``train_transform: finetune``'s RandAugment
            (0 ops: none) and random-erasing probability (the fine-tuning recipe's 4 / 7 / 0.25).
        augment_on: where ``train_transform: xkd`` makes its views. ``sample``: per clip in the
            dataset (:class:`~xmkd.data.datasets.transforms.XKDVideoViews`; the views travel as floats).
            ``batch``: the dataset draws each clip's random parameters (still a function of
            (seed, epoch, item), so resume stays exact) and returns the decoded uint8 clip; the
            pixels are transformed once per batch in :meth:`on_after_batch_transfer`, on the
            training device (:class:`~xmkd.data.datasets.batch_transforms.XKDBatchViews`: the same
            distribution, up to the per-clip path's uint8 rounding of the resized crop); when that
            device is the CPU and ``num_workers > 0``, in the workers right after collation
            (:class:`CollateWithBatchViews`: the same pixels, made while the step runs). Clips of
            several sizes are zero-padded to the batch's largest (never read).
        batch_size: per device; ``eval_batch_size`` defaults to it.
        missing, missing_audio, on_bad_input, min_duration_s, decode_cache_mb: see
            :class:`TrimmedVideoDataset` (``decode_cache_mb`` is per process and per split; with
            ``num_workers > 0`` each split's cache is filled in the training process before the first
            workers fork (:meth:`TrimmedVideoDataset.warm_cache`), so the workers share it).
        synthetic_options: keyword arguments for ``ensure_synthetic_av`` (sizes of the generated set).
        shards: a folder written by ``xmkd data shard``: the videos, labels and class names come from
            its chunks instead of ``root`` (the annotation options are not read). Training streams
            them (litdata; exact mid-epoch resume, per-item DDP split), evaluation reads them in
            order; the clips, transforms and per-item seeds are those of per-file reading (see
            :mod:`xmkd.data.datasets.shards`). Needs ``train_clips_per_video: 1``.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        root: str | None = None,
        splits: str | None = None,
        annotation: str | None = None,
        test_annotation: str | None = None,
        fold: int = 1,
        classes: list[str] | str | None = None,
        num_frames: int = 32,
        fps: float | None = 8.0,
        audio_seconds: float | None = None,
        with_audio: bool = True,
        train_transform: TrainTransformName = "xkd",
        eval_transform: EvalTransformName = "eval",
        crop_size: int = 112,
        local_crop_size: int = 96,
        local_frames: int = 8,
        num_local_views: int = 1,
        color_jitter_p: float = 1.0,
        linear_probe_view: bool = False,
        augment_on: AugmentOn = "sample",
        randaug_num_ops: int = 4,
        randaug_magnitude: int = 7,
        erase_p: float = 0.25,
        eval_short_side: int | None = None,
        train_clips_per_video: int = 1,
        test_clips: int = 3,
        test_crops: int = 3,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = False,
        missing: BadInputPolicy = "error",
        missing_audio: MissingAudioPolicy = "error",
        on_bad_input: BadInputPolicy = "error",
        min_duration_s: float = 0.0,
        decode_cache_mb: float = 0.0,
        synthetic_options: dict[str, Any] | None = None,
        shards: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        spec = trimmed_dataset(dataset, video=True)  # audio-only sets (ESC-50) have their own DataModule
        _check_choice("train_transform", train_transform, ("xkd", "finetune", "eval", "none"))
        _check_choice("eval_transform", eval_transform, ("eval", "none"))
        if root is None and spec.default_root is None and shards is None:
            raise ConfigError("root", f"{dataset} needs the folder holding the videos")
        _check_choice("augment_on", augment_on, ("sample", "batch"))
        if randaug_num_ops < 0 or not 0 <= randaug_magnitude <= 30:
            raise ConfigError(
                "randaug_num_ops",
                f"need ops >= 0 and magnitude in [0, 30], got {randaug_num_ops} / {randaug_magnitude}",
            )
        if not 0.0 <= erase_p <= 1.0:
            raise ConfigError("erase_p", f"must be a probability, got {erase_p}")
        if augment_on == "batch" and train_transform != "xkd":
            raise ConfigError(
                "augment_on", f"batch augmentation exists for train_transform: xkd, not {train_transform!r}"
            )
        if linear_probe_view and train_transform != "xkd":
            raise ConfigError(
                "linear_probe_view",
                f"the probe view comes with train_transform: xkd, not {train_transform!r}",
            )
        if test_crops not in (1, 3) and eval_transform == "eval":
            raise ConfigError("test_crops", f"the eval transform takes 1 or 3 crops, got {test_crops}")
        self.dataset = dataset
        self.spec = spec
        self.root = root if root is not None else spec.default_root
        self.splits = splits
        self.annotation, self.test_annotation = annotation, test_annotation
        self.fold, self.classes = fold, classes
        self.num_frames, self.fps = num_frames, fps
        self.audio_seconds, self.with_audio = audio_seconds, with_audio
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.crop_size, self.local_crop_size = crop_size, local_crop_size
        self.local_frames, self.num_local_views = local_frames, num_local_views
        self.color_jitter_p = color_jitter_p
        self.linear_probe_view = linear_probe_view
        self.augment_on = augment_on
        self.randaug = (randaug_num_ops, randaug_magnitude)
        self.erase_p = erase_p
        self.eval_short_side = eval_short_side
        self.train_clips_per_video, self.test_clips, self.test_crops = (
            train_clips_per_video,
            test_clips,
            test_crops,
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.missing, self.missing_audio, self.on_bad_input = missing, missing_audio, on_bad_input
        self.min_duration_s = min_duration_s
        self.decode_cache_mb = decode_cache_mb
        self.synthetic_options = dict(synthetic_options or {})
        self.shards = shards
        self._class_names: list[str] | None = None
        self._records: tuple[list[ClipRecord], list[ClipRecord]] | None = None
        self.train_set: TrimmedVideoDataset | None = None
        self.eval_set: TrimmedVideoDataset | None = None
        self._warmed: set[int] = set()  # datasets whose decode cache was filled before the workers forked
        self.last_views_s: float | None = None  # host seconds of the last batch's views (augment_on: batch)

    # -- data --------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.spec.prepare is not None and self.shards is None:
            self.spec.prepare(self.root, self.synthetic_options)

    def _read(self) -> tuple[list[ClipRecord], list[ClipRecord]]:
        if self._records is None and self.shards is not None:
            manifest = read_manifest(self.shards)
            records = tuple(
                read_shard_records(manifest, s) if s in manifest.splits else [] for s in ("train", "test")
            )
            self._class_names, self._records = manifest.class_names, records
        if self._records is None:
            root, splits = self.root, self.splits
            if self.spec.prepare is None and not os.path.isdir(
                root
            ):  # else every video would be reported missing, one by one
                raise ConfigError(
                    "root",
                    f"dataset root {root} is not an existing folder (expected the {self.dataset} videos)",
                )
            names, train, test = read_trimmed_annotations(
                self.dataset,
                root,
                splits,
                self.annotation,
                self.test_annotation,
                self.fold,
                self.classes,
            )
            self._class_names, self._records = names, (train, test)
        return self._records

    def _dataset(self, train: bool) -> TrimmedVideoDataset:
        records = self._read()[0 if train else 1]
        if not records:
            key = "annotation" if train else "test_annotation"
            raise ConfigError(key, f"no {'training' if train else 'test'} videos listed for {self.dataset}")
        common: dict[str, Any] = dict(
            num_frames=self.num_frames,
            fps=self.fps,
            audio_seconds=self.audio_seconds,
            with_audio=self.with_audio,
            missing_audio=self.missing_audio,
            missing=self.missing,
            on_bad_input=self.on_bad_input,
            min_duration_s=self.min_duration_s,
            decode_cache_mb=self.decode_cache_mb,
        )
        if train:
            sampler: ClipSampler = RandomClipSampler(self.train_clips_per_video)
            transform, crops = self._train_transform(), 1
        else:
            sampler, (transform, crops) = UniformClipSampler(self.test_clips), self._eval_transform()
            # a replacement would count the next video twice in the metrics
            common.update(num_crops=crops, skip_mode="drop")
        if self.shards is not None:
            return self._sharded_dataset(train, records, sampler, transform, common)
        dataset = TrimmedVideoDataset(records, sampler, transform, **common)
        self._check_not_empty(dataset, "train" if train else "test")
        return dataset

    def _sharded_dataset(
        self,
        train: bool,
        records: list[ClipRecord],
        sampler: ClipSampler,
        transform: Callable[..., Any] | None,
        common: dict[str, Any],
    ) -> Any:
        """``shards``: the training split as a stream, the test split map-style from the chunks."""
        split_dir = str(read_manifest(str(self.shards)).split_dir("train" if train else "test"))
        if not train:
            return TrimmedVideoDataset(
                records, sampler, transform, media=ShardReader(split_dir, records), **common
            )
        if self.train_clips_per_video != 1:
            raise ConfigError(
                "train_clips_per_video",
                f"a shard stream gives one clip per video and epoch, got {self.train_clips_per_video}; set 1",
            )
        # the clips' decoding and transform, without records: the stream supplies them
        return ShardStream(split_dir, TrimmedVideoDataset([], sampler, transform, **common))

    def _check_not_empty(self, dataset: TrimmedVideoDataset, split: str) -> None:
        """Name the split that ``missing: skip`` emptied (else a sampler fails with num_samples=0)."""
        if len(dataset) > 0:
            return
        raise ConfigError(
            "missing",
            f"the {split} split of {self.dataset} is empty: all {dataset.listed} listed videos are "
            f"missing on disk and missing: skip dropped them (first: {', '.join(dataset.missing_paths[:3])}); "
            f"check root ({self.root})",
        )

    def _train_transform(self) -> Callable[..., Any] | None:
        if self.train_transform == "xkd":
            views_class = XKDBatchViews if self.augment_on == "batch" else T.XKDVideoViews
            return views_class(
                num_frames=self.num_frames,
                size=self.crop_size,
                local_frames=self.local_frames,
                local_size=self.local_crop_size,
                num_local_views=self.num_local_views,
                color_jitter_p=self.color_jitter_p,
                probe_view=self.linear_probe_view,
            )
        if self.train_transform == "finetune":
            num_ops, magnitude = self.randaug
            return T.VideoTrainTransform(
                size=self.crop_size,
                randaug_num_ops=num_ops,
                randaug_magnitude=magnitude,
                erase_p=self.erase_p,
            )
        if self.train_transform == "eval":
            return T.VideoEvalTransform(size=self.crop_size, short_side=self.eval_short_side, num_crops=1)
        return None

    def _eval_transform(self) -> tuple[Callable[..., Any] | None, int]:
        if self.eval_transform == "eval":
            transform = T.VideoEvalTransform(
                size=self.crop_size, short_side=self.eval_short_side, num_crops=self.test_crops
            )
            return transform, self.test_crops
        return None, 1

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._require_labels(train=True)
            if self.train_set is None:
                self.train_set = self._dataset(train=True)
        if stage in (None, "fit", "validate", "test", "predict"):
            if stage != "predict":
                self._require_labels(train=False)
            if self.eval_set is None:
                self.eval_set = self._dataset(train=False)

    def _require_labels(self, train: bool) -> None:
        """Refuse an unlabelled file (the official Kinetics test CSV) where labels are needed.

        Unlabelled files are read (their records are ``UNLABELLED``) so that they serve
        ``predict`` and feature extraction; training, validation and testing need labels.
        """
        records = self._read()[0 if train else 1]
        if not any(r.label == UNLABELLED for r in records):
            return
        key = "annotation" if train or self.test_annotation is None else "test_annotation"
        source = self.annotation if key == "annotation" else self.test_annotation
        what = "training" if train else "validation and testing"
        raise ConfigError(
            key,
            f"{source} has no labels (e.g. the official Kinetics test CSV, "
            f"youtube_id,time_start,time_end,split): {what} need them; an unlabelled file serves "
            "predict and feature extraction only",
        )

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            raise RuntimeError("class_names are known after setup() (the annotations are read there)")
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- loaders -----------------------------------------------------------------------------

    def records(self, split: Literal["train", "test"]) -> list[ClipRecord]:
        """The listed videos of ``split`` (annotations read, files not opened)."""
        return list(self._read()[0 if split == "train" else 1])

    def _loader(self, dataset: TrimmedVideoDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        collate = collate_raw_clips if train and self.augment_on == "batch" else collate_with_failures
        if train and self.shards is not None:
            # a run resumed at an epoch boundary starts the stream at the trainer's epoch
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            return shard_loader(dataset, self.batch_size, self.num_workers, collate, self.pin_memory, epoch)
        # resumable: the order and augmentation of an epoch are f(seed, epoch); see xmkd.fault.
        # Evaluation drops bad items, so a batch may come out short or (held back) empty.
        loader_class = ResumableDataLoader if train else DropEmptyBatchesLoader
        if self.num_workers > 0 and id(dataset) not in self._warmed:
            dataset.warm_cache()  # before the workers fork: they share it instead of decoding per epoch
            self._warmed.add(id(dataset))
        collate: Callable[..., Any] = collate_with_failures
        if train and self.augment_on == "batch":
            collate = collate_raw_clips
            if self.num_workers > 0 and self._training_device().type == "cpu":
                assert isinstance(dataset.transform, XKDBatchViews)
                collate = CollateWithBatchViews(dataset.transform)
        return loader_class(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
        )

    def _training_device(self) -> torch.device:
        """Where the training step runs (the CPU before a Trainer is attached)."""
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``augment_on: batch``: the views of the batch's uint8 clips, made on the training device."""
        self.last_views_s = None  # this batch's figure only
        if isinstance(batch, dict) and RAW_VIDEO_KEY in batch:
            # a shard stream keeps its decoding (and transform) in ``clips``
            transform = getattr(getattr(self.train_set, "clips", self.train_set), "transform", None)
            if not isinstance(transform, XKDBatchViews):
                raise RuntimeError("a batch of raw clips, but the training set has no XKDBatchViews")
            start = time.perf_counter()
            views = transform.apply(
                batch.pop(RAW_VIDEO_KEY), batch.pop(AUGMENT_KEY), probe=self._probe_view_read()
            )
            # host seconds (on a GPU the kernels run on after this returns): part of the data wait
            self.last_views_s = time.perf_counter() - start
            batch.update(views)
        return batch

    def _probe_view_read(self) -> bool:
        """Whether this batch's probe view is read: always, except in a fit loop whose module says
        it is not (``reads_probe_view``: the online probe is off). Its parameters are drawn all the
        same, so leaving its pixels out changes no other view."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training:
            return True
        return bool(getattr(trainer.lightning_module, "reads_probe_view", True))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split's clips (labelled or not; ``label`` is -1 for an unlabelled file)."""
        return self._loader(self.eval_set, train=False)
