"""Clips held in one array file: encoder pretraining on windows cut from untrimmed video or flow.

``<name>.npy`` holds uint8 (K, T, H, W, C): C = 3 for RGB, 2 for optical flow quantised as
:mod:`xmkd.data.io.flow` stores it (flow / bound mapped to 0..255). :class:`ClipArrayDataModule` serves
them as video-only XKD batches, ``{"video": (B, C, T, H, W)}`` normalised float, which is what
``XKDPretrainer(modalities=[video])`` (MAE) trains on. :func:`normalize_clips` is the one
normalisation of such windows, shared with feature extraction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from xmkd.atomic import atomic_path
from xmkd.data.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from xmkd.errors import ConfigError

__all__ = ["ClipArrayDataModule", "ClipArrayDataset", "ClipModality", "normalize_clips", "write_clip_array"]

ClipModality = Literal["rgb", "flow"]
CHANNELS = {"rgb": 3, "flow": 2}


def normalize_clips(
    x: Tensor,
    modality: ClipModality,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Tensor:
    """uint8 windows (..., T, H, W, C) -> float (..., C, T, H, W): RGB to [0, 1] then ``(x - mean) /
    std``; flow to ``x / 127.5 - 1``, the dequantised flow over its bound, in [-1, 1]."""
    x = x.movedim(-1, -4).float()
    if modality == "flow":
        return x / 127.5 - 1.0
    shape = (-1, 1, 1, 1)
    m = torch.tensor(mean, device=x.device).view(shape)
    s = torch.tensor(std, device=x.device).view(shape)
    return (x / 255.0 - m) / s


def write_clip_array(path: str | os.PathLike, clips: np.ndarray) -> Path:
    """Write uint8 (K, T, H, W, C) clips to ``path`` (``.npy``) atomically; returns the path."""
    if clips.dtype != np.uint8 or clips.ndim != 5:
        raise ConfigError("clips", f"expected uint8 (K, T, H, W, C), got {clips.dtype} {clips.shape}")
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, clips)
    return path


def read_clip_array(path: str | os.PathLike, modality: ClipModality) -> np.ndarray:
    """The clips of ``path``, memory-mapped, checked for dtype, rank and channels (errors name the file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("data.clips", f"{p}: clip array not found")
    try:
        clips = np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError("data.clips", f"{p}: not a .npy array ({e})") from None
    want = CHANNELS[modality]
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != want or len(clips) == 0:
        raise ConfigError(
            "data.clips",
            f"{p}: expected uint8 (K, T, H, W, {want}) {modality} clips, got {clips.dtype} {clips.shape}",
        )
    return clips


class ClipArrayDataset(Dataset):
    """Item i: ``{"video": normalised (C, T, H, W)}`` of clip i."""

    def __init__(self, clips: np.ndarray, modality: ClipModality) -> None:
        self.clips = clips
        self.modality = modality

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"video": normalize_clips(torch.from_numpy(np.array(self.clips[index])), self.modality)}


class ClipArrayDataModule(pl.LightningDataModule):
    """Clips of one ``.npy`` (see the module docstring), shuffled each epoch, full batches only.

    Args:
        clips: the ``.npy`` file, uint8 (K, T, H, W, C).
        modality: ``rgb`` (3 channels, ImageNet mean/std) or ``flow`` (2 channels, [-1, 1]).
        batch_size, num_workers: the DataLoader's.
    """

    def __init__(
        self, clips: str, modality: ClipModality = "rgb", batch_size: int = 16, num_workers: int = 0
    ) -> None:
        super().__init__()
        if modality not in CHANNELS:
            raise ConfigError("data.modality", f"expected rgb or flow, got {modality!r}")
        self.save_hyperparameters()
        self._clips: np.ndarray | None = None

    @property
    def clips(self) -> np.ndarray:
        if self._clips is None:
            self._clips = read_clip_array(self.hparams.clips, self.hparams.modality)
            if len(self._clips) < self.hparams.batch_size:
                raise ConfigError(
                    "data.batch_size",
                    f"{self.hparams.clips} holds {len(self._clips)} clips, fewer than one batch "
                    f"({self.hparams.batch_size})",
                )
        return self._clips

    @property
    def num_frames(self) -> int:
        return int(self.clips.shape[1])

    @property
    def crop_size(self) -> int:
        return int(self.clips.shape[2])

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(
            ClipArrayDataset(self.clips, self.hparams.modality),
            batch_size=self.hparams.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )
