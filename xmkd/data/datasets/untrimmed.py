"""Untrimmed feature sequences for temporal action detection: labels, feature folders, datasets.

Data flow: an annotation reader (:mod:`xmkd.data.readers.untrimmed`) gives videos with segments in
seconds; pre-extracted features live in ``<feature_root>/<modality>/<video_id>.npy`` with shape
(T, D) or (T, 1, 1, D) (the I3D extractors' layout); :class:`UntrimmedFeatureDataset` turns one
video into ``{"features": {modality: (T, D)}, "labels": (T, C), "mask": (T,), "video_id",
"duration"}``, and :func:`collate_untrimmed` pads a batch with a validity mask.

Labels follow the PDAN/TGM/super-events rule: with T feature steps over a video of
``duration`` seconds, fps = T / duration and label[t, c] = 1 iff start < t / fps < end, strictly.
Segments ending after the duration are thereby clipped to it, segments starting after it give no
positive step, and zero-length segments give none: all kept, and counted (:func:`label_stats`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xmkd.data.datasets.bad_input import (
    DROPPED_ITEM,
    DropEmptyBatchesLoader,
    SkipMode,
    dropped_item,
    split_dropped,
)
from xmkd.data.readers.untrimmed import UntrimmedAnnotations, UntrimmedVideo, frame_labels
from xmkd.data.registry import UNTRIMMED_FORMATS, read_untrimmed, untrimmed_format
from xmkd.data.synthetic.untrimmed import ensure_synthetic_untrimmed
from xmkd.errors import BadInputPolicy, ConfigError, Failure, FeatureError
from xmkd.fault import ResumableDataLoader

log = logging.getLogger(__name__)

AlignPolicy = Literal["resample", "error"]
# The first class id in each built-in format's files when ``class_id_base`` is not given:
# ``pdan_json`` is the Charades JSON (0..156), ``multithumos`` the same layout numbered 1..65. The
# formats themselves are registered in :mod:`xmkd.data.registry`.
FORMAT_CLASS_ID_BASE = {name: spec.class_id_base for name, spec in UNTRIMMED_FORMATS.items()}


# -------------------------------------------------------------------------------------------- labels
@dataclass
class LabelStats:
    """What the labelling rule did to one video's (or many videos') segments."""

    segments: int = 0
    clipped: int = 0  # end after the duration: cut at the duration
    outside: int = 0  # start at or after the duration: no positive step
    zero_length: int = 0  # end <= start
    empty_videos: int = 0  # no segments at all

    def add(self, other: LabelStats) -> None:
        for key in self.__dataclass_fields__:
            setattr(self, key, getattr(self, key) + getattr(other, key))


def label_stats(video: UntrimmedVideo) -> LabelStats:
    segs = video.segments
    return LabelStats(
        segments=len(segs),
        clipped=sum(1 for s in segs if s.end_s > video.duration_s and s.start_s < video.duration_s),
        outside=sum(1 for s in segs if s.start_s >= video.duration_s),
        zero_length=sum(1 for s in segs if s.end_s <= s.start_s),
        empty_videos=int(not segs),
    )


# ------------------------------------------------------------------------------------------ features
def feature_path(root: str | Path, modality: str, video_id: str) -> Path:
    return Path(root) / modality / f"{video_id}.npy"


def open_features(path: str | Path, mmap: bool = True) -> np.ndarray:
    """Open a (T, D) or (T, 1, 1, D) ``.npy`` feature file as a (T, D) array, memory-mapped.

    Memory-mapping means a training crop reads only its rows. Raises :class:`FeatureError` for a
    missing or unreadable file or a wrong shape; values are checked by :func:`check_finite`.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureError(path, "feature file not found")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FeatureError(path, f"not a readable .npy file ({e})") from None
    if arr.ndim == 4 and arr.shape[1] == 1 and arr.shape[2] == 1:
        arr = arr.reshape(arr.shape[0], arr.shape[3])
    if arr.ndim != 2:
        raise FeatureError(path, f"expected shape (T, D) or (T, 1, 1, D), got {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FeatureError(path, f"empty feature array {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise FeatureError(path, f"expected floating-point features, got {arr.dtype}")
    return arr


class NonFiniteFeatureError(FeatureError):
    """NaN or Inf in a feature file (its own class so that ``nonfinite`` can have its own policy)."""


def check_finite(values: np.ndarray, path: str | Path) -> None:
    if not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))
        step = int(bad[0, 0])
        kind = "NaN" if np.isnan(values).any() else "Inf"
        raise NonFiniteFeatureError(path, f"{kind} in features ({len(bad)} value(s), first at step {step})")


def resample_positions(source_len: int, target_len: int) -> np.ndarray:
    """Source positions of ``target_len`` steps spread over ``source_len`` steps, centre-aligned.

    Interpretation: both sequences cover the same video, step i of an N-step sequence covering
    [i, i + 1) * duration / N; target step centres are mapped onto the source's centres, i.e. the
    ``align_corners=False`` convention of ``torch.nn.functional.interpolate``.
    """
    scale = source_len / target_len
    pos = (np.arange(target_len, dtype=np.float64) + 0.5) * scale - 0.5
    return np.clip(pos, 0.0, source_len - 1)


def gather_resampled(source: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of rows of ``source`` (T, D) at fractional ``positions``; reads only the
    rows needed (works on a memory map)."""
    if len(positions) == 0:
        return np.zeros((0, source.shape[1]), dtype=np.float32)
    lo_all = np.floor(positions).astype(np.int64)
    first, last = int(lo_all[0]), min(int(np.ceil(positions[-1])), source.shape[0] - 1)
    window = np.asarray(source[first : last + 1], dtype=np.float32)
    lo = lo_all - first
    hi = np.minimum(lo + 1, window.shape[0] - 1)
    w = (positions - lo_all).astype(np.float32)[:, None]
    return window[lo] * (1.0 - w) + window[hi] * w


# ------------------------------------------------------------------------------------------- dataset
class UntrimmedFeatureDataset(Dataset):
    """One untrimmed video's feature sequence(s) with multi-hot labels per step.

    Args:
        annotations: from a reader in :mod:`xmkd.data.readers.untrimmed`.
        feature_root: folder with ``<modality>/<video_id>.npy``.
        modalities: feature folders to load, e.g. ``("rgb", "flow")``. The reference grid (T, and
            so the labels) is ``rgb`` where loaded, else the first modality.
        subset: annotation subset (``training`` / ``testing``); ``None`` = all videos.
        max_len: training crop length in steps (``None``: whole sequences).
        train: random crop of ``max_len`` steps; otherwise the whole sequence.
        align: modalities whose T differs from the reference: ``resample`` = linear interpolation
            to the reference length (:func:`resample_positions`), ``error`` = FeatureError.
        on_bad_input: ``error`` raises; ``skip`` records a ``failures`` entry and, by
            ``skip_mode``, replaces a bad video by the next good one (``replace``, training) or
            drops it (``drop``, evaluation: a replacement would count the next video twice).
        missing: feature files absent on disk, checked up front for every video and modality:
            ``error`` raises naming the first and the count, ``skip`` drops those videos (logged;
            listed in ``missing_paths``); ``None`` checks nothing up front (a missing file is then
            bad input when loaded).
        nonfinite: policy for NaN/Inf features only (``None``: same as ``on_bad_input``). NaN/Inf is
            detected in the steps read (the crop while training).
        feature_fps: fixed feature rate in steps per second for the labelling rule; ``None`` uses
            T / duration (the PDAN rule). Needed where durations are estimated (PKU-MMD without
            skeleton lengths).
        mmap: memory-map feature files (a crop reads only its rows).
        generator: optional torch.Generator for the crops (default: torch's global RNG, which
            Lightning seeds per worker).
    """

    def __init__(
        self,
        annotations: UntrimmedAnnotations,
        feature_root: str | Path,
        modalities: Sequence[str] = ("rgb",),
        subset: str | None = "training",
        max_len: int | None = None,
        train: bool = False,
        align: AlignPolicy = "resample",
        on_bad_input: BadInputPolicy = "error",
        nonfinite: BadInputPolicy | None = None,
        feature_fps: float | None = None,
        mmap: bool = True,
        generator: torch.Generator | None = None,
        missing: BadInputPolicy | None = None,
        skip_mode: SkipMode = "replace",
    ) -> None:
        if not modalities:
            raise ConfigError("modalities", "at least one modality is needed")
        if align not in ("resample", "error"):
            raise ConfigError("align", f"expected 'resample' or 'error', got {align!r}")
        if on_bad_input not in ("error", "skip"):
            raise ConfigError("on_bad_input", f"expected 'error' or 'skip', got {on_bad_input!r}")
        if nonfinite not in (None, "error", "skip"):
            raise ConfigError("nonfinite", f"expected 'error', 'skip' or null, got {nonfinite!r}")
        if missing not in (None, "error", "skip"):
            raise ConfigError("missing", f"expected 'error', 'skip' or null, got {missing!r}")
        if skip_mode not in ("replace", "drop"):
            raise ConfigError("skip_mode", f"expected 'replace' or 'drop', got {skip_mode!r}")
        if max_len is not None and max_len < 1:
            raise ConfigError("max_len", f"must be >= 1, got {max_len}")
        self.videos = annotations.subset(subset)
        if not self.videos:
            raise ConfigError("subset", f"no videos in subset {subset!r} of {annotations.source}")
        self.listed = len(self.videos)
        self.missing_paths: list[str] = []
        if missing is not None:
            self.videos = self._drop_missing(
                self.videos, Path(feature_root), list(modalities), missing, subset
            )
        if feature_fps is None and any(v.duration_estimated for v in self.videos):
            raise ConfigError(
                "feature_fps",
                "some durations are estimated from the last action (PKU-MMD without lengths); "
                "give feature_fps (feature steps per second) or the true lengths",
            )
        self.num_classes = annotations.num_classes
        self.feature_root = Path(feature_root)
        self.modalities = list(modalities)
        self.reference = "rgb" if "rgb" in self.modalities else self.modalities[0]
        self.max_len = max_len
        self.train = train
        self.align = align
        self.on_bad_input = on_bad_input
        self.nonfinite = nonfinite or on_bad_input
        self.feature_fps = feature_fps
        self.mmap = mmap
        self.generator = generator
        self.skip_mode = skip_mode

    def _drop_missing(
        self,
        videos: list[UntrimmedVideo],
        root: Path,
        modalities: list[str],
        policy: BadInputPolicy,
        subset: str | None,
    ) -> list[UntrimmedVideo]:
        """The videos whose feature files all exist (one directory listing per modality)."""
        for m in modalities:
            if not (root / m).is_dir():  # a whole modality absent: say so, not "N files missing"
                raise ConfigError("modalities", f"no folder {root / m} for the modality {m!r}")
        listings = {m: _npy_names(root / m) for m in modalities}
        kept: list[UntrimmedVideo] = []
        for video in videos:
            absent = [m for m in modalities if f"{video.video_id}.npy" not in listings[m]]
            if absent:
                self.missing_paths += [str(feature_path(root, m, video.video_id)) for m in absent]
            else:
                kept.append(video)
        if not self.missing_paths:
            return kept
        dropped = len(videos) - len(kept)
        first = ", ".join(self.missing_paths[:5])
        if policy == "error":
            raise FeatureError(
                self.missing_paths[0],
                f"{len(self.missing_paths)} feature file(s) missing, for {dropped} of the {len(videos)} videos "
                f"of subset {subset!r}; first: {first} (set missing: skip to drop them)",
            )
        if not kept:
            raise ConfigError(
                "missing",
                f"subset {subset!r} is empty: the feature files of all {len(videos)} of its videos are "
                f"missing under {root} and missing: skip dropped them (first: {first})",
            )
        log.warning(
            "%d of %d videos of subset %r have missing feature files and are skipped; first: %s",
            dropped,
            len(videos),
            subset,
            first,
        )
        return kept

    def __len__(self) -> int:
        return len(self.videos)

    def _crop(self, length: int) -> tuple[int, int]:
        if not self.train or self.max_len is None or length <= self.max_len:
            return 0, length
        start = int(torch.randint(0, length - self.max_len + 1, (1,), generator=self.generator))
        return start, start + self.max_len

    def load(self, index: int) -> dict[str, Any]:
        """The sample of video ``index``; raises BadInputError for bad files (no skipping)."""
        video = self.videos[index]
        arrays = {
            m: open_features(feature_path(self.feature_root, m, video.video_id), self.mmap)
            for m in self.modalities
        }
        ref_len = arrays[self.reference].shape[0]
        start, stop = self._crop(ref_len)
        features: dict[str, torch.Tensor] = {}
        for m, arr in arrays.items():
            path = feature_path(self.feature_root, m, video.video_id)
            if arr.shape[0] == ref_len:
                values = np.array(arr[start:stop], dtype=np.float32)  # a copy: memory maps are read-only
            elif self.align == "error":
                raise FeatureError(
                    path,
                    f"{arr.shape[0]} steps but {self.reference} has {ref_len} (align='error'; "
                    "use align='resample' to interpolate)",
                )
            else:
                values = gather_resampled(arr, resample_positions(arr.shape[0], ref_len)[start:stop])
            check_finite(values, path)
            features[m] = torch.from_numpy(np.ascontiguousarray(values))
        labels = frame_labels(video.segments, ref_len, video.duration_s, self.num_classes, self.feature_fps)
        return {
            "features": features,
            "labels": torch.from_numpy(labels[start:stop]),
            "mask": torch.ones(stop - start, dtype=torch.bool),
            "video_id": video.video_id,
            "duration": float(video.duration_s),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.on_bad_input == "error" and self.nonfinite == "error":
            return self.load(index)
        failures: list[dict[str, str]] = []
        for offset in range(1 if self.skip_mode == "drop" else len(self.videos)):
            try:
                sample = self.load((index + offset) % len(self.videos))
            except FeatureError as e:
                policy = self.nonfinite if isinstance(e, NonFiniteFeatureError) else self.on_bad_input
                if policy == "error":
                    raise
                failures.append(Failure.from_error(e).as_dict())
                continue
            sample["failures"] = failures
            return sample
        if self.skip_mode == "drop":
            return dropped_item(failures)
        raise FeatureError(self.feature_root, f"every video failed to load; first: {failures[0]}")


def _npy_names(folder: Path) -> frozenset[str]:
    """Names of the files in ``folder`` (empty when it cannot be listed)."""
    try:
        return frozenset(entry.name for entry in folder.iterdir())
    except OSError:
        return frozenset()


def collate_untrimmed(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pad to the longest sequence in the batch: zeros in features/labels, False in the mask.

    Dropped items (``skip_mode="drop"``) are left out and counted under ``dropped``, as in
    :func:`xmkd.data.datasets.bad_input.collate_with_failures`.
    """
    samples, failures, dropped, tracked = split_dropped(samples)
    if not samples:
        return {DROPPED_ITEM: True, "failures": failures, "dropped": dropped}
    lengths = [int(s["mask"].shape[0]) for s in samples]
    batch_len, b = max(lengths), len(samples)
    modalities = list(samples[0]["features"])
    features = {
        m: torch.zeros(b, batch_len, samples[0]["features"][m].shape[1], dtype=torch.float32)
        for m in modalities
    }
    labels = torch.zeros(b, batch_len, samples[0]["labels"].shape[1], dtype=torch.float32)
    mask = torch.zeros(b, batch_len, dtype=torch.bool)
    for i, (s, n) in enumerate(zip(samples, lengths)):
        for m in modalities:
            features[m][i, :n] = s["features"][m]
        labels[i, :n] = s["labels"]
        mask[i, :n] = s["mask"]
    batch: dict[str, Any] = {
        "features": features,
        "labels": labels,
        "mask": mask,
        "video_id": [s["video_id"] for s in samples],
        "duration": torch.tensor([s["duration"] for s in samples], dtype=torch.float64),
    }
    if tracked:
        batch["failures"] = failures
    if dropped:
        batch["dropped"] = dropped
    return batch


# --------------------------------------------------------------------------------------- datamodule
#: Read annotations of a registered format (what the data module and ``xmkd data inspect`` use);
#: see :func:`xmkd.data.registry.read_untrimmed`.
load_annotations = read_untrimmed


class UntrimmedVideoDataModule(L.LightningDataModule):
    """Feature sequences of an untrimmed-video detection dataset, for LightningCLI/YAML.

    Args:
        format: ``charades_csv | pdan_json | multithumos | tsu | pkummd | synthetic``
            (``multithumos``: the PDAN-style JSON with class ids 1..65).
        annotations: annotation path(s): Charades CSVs (train and test), a PDAN-style JSON, or the
            PKU-MMD label folder. For ``synthetic``: default ``<feature_root>/annotations.json``.
        classes_file: Charades_v1_classes.txt (required for charades_csv) or a names list.
        num_classes: class count for JSON formats (default: largest id - base + 1 for
            ``pdan_json``, so give 157 for Charades; MultiTHUMOS 65; TSU 51; PKU-MMD 51).
        class_id_base: the first class id in the annotation files, 0 or 1 (``null``: the format's,
            :data:`FORMAT_CLASS_ID_BASE`: 1 for ``multithumos`` and ``pkummd``, else 0).
        annotation_fps: frames per second of frame-based annotations (TSU 20, PKU-MMD 30).
        split_file: PKU-MMD cross-subject.txt / cross-view.txt.
        skeleton_dir: PKU-MMD skeleton folder, used only for video lengths.
        feature_root: ``<root>/<modality>/<video_id>.npy``; ``synthetic`` default
            ``data/synth-untrimmed-<synthetic_world>``, generated by :meth:`prepare_data` when missing.
        modalities: feature folders to load.
        train_subset / eval_subset: annotation subsets for training and validation/test.
        max_len: training crop length in feature steps.
        batch_size: per-device batch size.
        num_workers: DataLoader workers.
        align / on_bad_input / nonfinite / feature_fps / missing: see
            :class:`UntrimmedFeatureDataset`; bad videos are replaced in training and dropped in
            validation, test and predict.
        synthetic_world: which generated world (``motion``, the default, or ``evidence``; see
            :mod:`xmkd.data.synthetic.untrimmed`); ``synthetic_options``: any other of its knobs.
        synthetic_videos / synthetic_classes / synthetic_seed / synthetic_pose: parameters of the
            generated world (:func:`xmkd.data.synthetic.untrimmed.make_synthetic_untrimmed`).
    """

    def __init__(
        self,
        format: str = "synthetic",
        annotations: list[str] | None = None,
        classes_file: str | None = None,
        num_classes: int | None = None,
        annotation_fps: float | None = None,
        split_file: str | None = None,
        skeleton_dir: str | None = None,
        feature_root: str | None = None,
        modalities: list[str] | None = None,
        train_subset: str = "training",
        eval_subset: str = "testing",
        max_len: int | None = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        align: AlignPolicy = "resample",
        on_bad_input: BadInputPolicy = "error",
        nonfinite: BadInputPolicy | None = None,
        feature_fps: float | None = None,
        synthetic_videos: int = 200,
        synthetic_classes: int = 12,
        synthetic_seed: int = 0,
        synthetic_pose: bool = False,
        synthetic_world: str = "motion",
        synthetic_options: dict[str, Any] | None = None,
        class_id_base: int | None = None,
        missing: BadInputPolicy = "error",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        untrimmed_format(format)  # an unknown name fails here, naming the registered ones
        if format != "synthetic" and feature_root is None:
            raise ConfigError("feature_root", f"format {format!r} needs the feature folder")
        if format != "synthetic" and not annotations:
            raise ConfigError("annotations", f"format {format!r} needs annotation path(s)")
        self.format = format
        self.feature_root = Path(feature_root or f"data/synth-untrimmed-{synthetic_world}")
        self.modalities = list(modalities or ["rgb", "flow"])
        self._annotations: UntrimmedAnnotations | None = None
        self.train_set: UntrimmedFeatureDataset | None = None
        self.eval_set: UntrimmedFeatureDataset | None = None

    def prepare_data(self) -> None:
        if self.format == "synthetic":
            hp = self.hparams
            ensure_synthetic_untrimmed(
                self.feature_root,
                hp.synthetic_world,
                videos=hp.synthetic_videos,
                classes=hp.synthetic_classes,
                seed=hp.synthetic_seed,
                pose=hp.synthetic_pose,
                **(hp.synthetic_options or {}),
            )

    @property
    def annotations(self) -> UntrimmedAnnotations:
        if self._annotations is None:
            hp = self.hparams
            paths = hp.annotations or [str(self.feature_root / "annotations.json")]
            classes_file = hp.classes_file
            if self.format == "synthetic" and classes_file is None:
                classes_file = str(self.feature_root / "Charades_v1_classes.txt")
            self._annotations = read_untrimmed(
                self.format,
                paths,
                classes_file,
                hp.num_classes,
                hp.annotation_fps,
                hp.split_file,
                hp.skeleton_dir,
                hp.class_id_base,
            )
        return self._annotations

    @property
    def num_classes(self) -> int:
        return self.annotations.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.annotations.class_names)

    @property
    def feature_dims(self) -> dict[str, int]:
        """Feature width per modality, read from the first video's files (headers only)."""
        video = self.annotations.videos[0]
        return {
            m: int(open_features(feature_path(self.feature_root, m, video.video_id)).shape[1])
            for m in self.modalities
        }

    def _dataset(self, subset: str, train: bool) -> UntrimmedFeatureDataset:
        hp = self.hparams
        return UntrimmedFeatureDataset(
            self.annotations,
            self.feature_root,
            self.modalities,
            subset=subset,
            max_len=hp.max_len,
            train=train,
            align=hp.align,
            on_bad_input=hp.on_bad_input,
            nonfinite=hp.nonfinite,
            feature_fps=hp.feature_fps,
            missing=hp.missing,
            skip_mode="replace" if train else "drop",
        )

    def setup(self, stage: str | None = None) -> None:
        if not self.feature_root.is_dir():
            raise ConfigError(
                "feature_root",
                f"{self.feature_root} is not an existing folder (expected <feature_root>/<modality>/)",
            )
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._dataset(self.hparams.train_subset, train=True)
        if self.eval_set is None:
            self.eval_set = self._dataset(self.hparams.eval_subset, train=False)

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a DataLoader")
        # resumable: the order and augmentation of an epoch are f(seed, epoch); see xmkd.fault.
        # Evaluation drops bad videos, so a batch may come out short or (held back) empty.
        loader_class = ResumableDataLoader if shuffle else DropEmptyBatchesLoader
        return loader_class(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_untrimmed,
            persistent_workers=self.hparams.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, shuffle=False)


def total_label_stats(videos: Sequence[UntrimmedVideo]) -> LabelStats:
    """:func:`label_stats` summed over videos."""
    total = LabelStats()
    for v in videos:
        total.add(label_stats(v))
    return total


__all__ = [
    "LabelStats",
    "NonFiniteFeatureError",
    "UntrimmedFeatureDataset",
    "UntrimmedVideoDataModule",
    "check_finite",
    "collate_untrimmed",
    "feature_path",
    "frame_labels",
    "gather_resampled",
    "label_stats",
    "load_annotations",
    "open_features",
    "resample_positions",
    "total_label_stats",
]
