"""Frozen clip encoders for feature extraction: loading them from local files, and making one.

:func:`load_encoder` reads an exported xmkd ViT (``.pt`` + ``.json``; feature = mean of the patch
tokens after the final norm) or a torchvision ``r3d_18`` state dict (built with ``weights=None``,
never downloaded; feature = the 512-d pooled output before ``fc``) into a :class:`ClipEncoder`,
which also knows how to normalise its input windows. :func:`sample_clips` cuts random windows from
decoded videos or flow, the input of MAE-only encoder training (``XKDPretrainer`` on video alone).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from xmkd.data.datasets.clip_arrays import normalize_clips
from xmkd.data.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from xmkd.errors import ConfigError
from xmkd.models.vit import (
    ViTEncoder,
    load_exported_encoder,
)

Modality = Literal["rgb", "flow"]
EncoderKind = Literal["auto", "xkd", "r3d_18"]
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video models
KINETICS_STD = (0.22803, 0.22145, 0.216989)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "ClipEncoder",
    "EncoderKind",
    "Modality",
    "load_encoder",
    "resolve_device",
    "sample_clips",
]


@dataclass
class ClipEncoder:
    """A frozen clip encoder: ``module(x)`` with x (B, C, T, H, W) normalised -> (B, D)."""

    module: nn.Module
    kind: str
    in_chans: int
    frames: int
    size: tuple[int, int]
    dim: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    path: str

    def prepare(self, x: Tensor, modality: Modality) -> Tensor:
        """uint8 windows (B, W, H, W, C) on any device -> normalised float (B, C, W, H, W)."""
        if modality == "flow":
            return normalize_clips(x, "flow")
        return normalize_clips(x, "rgb", self.mean, self.std)


class _PatchMean(nn.Module):
    def __init__(self, encoder: ViTEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder.patch_mean(x)


def load_encoder(
    path: str | os.PathLike, kind: EncoderKind = "auto", frames: int = 16, size: int = 112
) -> ClipEncoder:
    """Load a clip encoder from a local file (never downloads), in eval mode.

    ``kind="auto"``: an exported ViT when ``path`` has a ``.json`` sidecar, else ``r3d_18``.
    ``frames``/``size`` are the default window and input size for r3d_18 (a ViT brings its own).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("encoder", f"{p}: encoder weights not found")
    if kind == "auto":
        kind = "xkd" if p.with_suffix(".json").is_file() else "r3d_18"
    if kind == "xkd":
        if not p.with_suffix(".json").is_file():
            raise ConfigError(
                "encoder", f"{p}: no {p.with_suffix('.json').name} beside it, so not an exported XKD encoder"
            )
        enc = load_exported_encoder(p)
        cfg = enc.config
        if cfg.modality != "video":
            raise ConfigError("encoder", f"{p} is a {cfg.modality} encoder; a video encoder is needed")
        module: nn.Module = _PatchMean(enc)
        return ClipEncoder(
            module.eval(), "xkd", cfg.in_chans, cfg.input_size[0], tuple(cfg.input_size[1:]), cfg.dim,
            IMAGENET_MEAN, IMAGENET_STD, str(p),
        )  # fmt: skip
    if kind == "r3d_18":
        from torchvision.models.video import r3d_18

        model = r3d_18(weights=None)
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a file that is not a state dict
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ConfigError(
                "encoder", f"{p}: not a loadable weights file ({type(e).__name__}: {first_line})"
            ) from None
        if isinstance(state, dict) and ("pytorch-lightning_version" in state or "hyper_parameters" in state):
            raise ConfigError(
                "encoder",
                f"{p} is a Lightning checkpoint, not an encoder: `xmkd export --ckpt {p} --out DIR` writes the "
                "encoders of an XKD run; --encoder-kind r3d_18 takes a torchvision r3d_18 state dict",
            )
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            summary = " ".join(str(e).split())
            summary = summary if len(summary) <= 300 else summary[:300] + " ..."
            raise ConfigError("encoder", f"{p}: does not match torchvision r3d_18 ({summary})") from None
        model.fc = nn.Identity()
        return ClipEncoder(
            model.eval(), "r3d_18", 3, frames, (size, size), 512, KINETICS_MEAN, KINETICS_STD, str(p)
        )
    raise ConfigError("encoder_kind", f"expected auto, xkd or r3d_18, got {kind!r}")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ------------------------------------------------------------------------------- training windows
def sample_clips(
    inputs: Sequence[np.ndarray], num_frames: int, clips_per_video: int, rng: np.random.Generator
) -> np.ndarray:
    """Random ``num_frames`` windows (uint8, (K, num_frames, H, W, C)) from each (N, H, W, C) array."""
    out = []
    for frames in inputs:
        n = frames.shape[0]
        for _ in range(clips_per_video):
            s = int(rng.integers(0, max(1, n - num_frames + 1)))
            out.append(frames[np.clip(np.arange(s, s + num_frames), 0, n - 1)])
    return np.stack(out)
