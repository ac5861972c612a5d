"""Frozen clip encoders for feature extraction: loading them from local files, and making one.

:func:`load_encoder` reads an exported xmkd ViT (``.pt`` + ``.json``; feature = mean of the patch
tokens after the final norm) or a torchvision ``r3d_18`` state dict (built with ``weights=None``,
never downloaded; feature = the 512-d pooled output before ``fc``) into a :class:`ClipEncoder`,
which also knows how to normalise its input windows. :func:`train_mae_encoder` trains a ViT with
the XKD/MAE masked reconstruction objective and exports it in the same format.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from xmkd.errors import ConfigError
from xmkd.models.masking import random_masking
from xmkd.models.vit import (
    EncoderConfig,
    MAEDecoder,
    ViTEncoder,
    build_encoder,
    load_exported_encoder,
    masked_mse,
    normalized_patch_target,
    save_exported_encoder,
)

Modality = Literal["rgb", "flow"]
EncoderKind = Literal["auto", "xkd", "r3d_18"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
    "train_mae_encoder",
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
        x = x.permute(0, 4, 1, 2, 3).float()
        if modality == "flow":
            return x / 127.5 - 1.0  # = dequantised flow / bound, in [-1, 1]
        x = x / 255.0
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1, 1)
        return (x - mean) / std


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
            raise ConfigError(
                "encoder", f"{p}: not a loadable weights file ({type(e).__name__}: {e})"
            ) from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            raise ConfigError("encoder", f"{p}: does not match torchvision r3d_18 ({e})") from None
        model.fc = nn.Identity()
        return ClipEncoder(
            model.eval(), "r3d_18", 3, frames, (size, size), 512, KINETICS_MEAN, KINETICS_STD, str(p)
        )
    raise ConfigError("encoder_kind", f"expected auto, xkd or r3d_18, got {kind!r}")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ------------------------------------------------------------------------------------ MAE training
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


def train_mae_encoder(
    clips: Tensor,
    config: EncoderConfig,
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 1e-3,
    mask_ratio: float = 0.85,
    decoder_dim: int = 64,
    decoder_depth: int = 1,
    weight_decay: float = 0.05,
    seed: int = 0,
    device: str = "auto",
    export_path: str | os.PathLike | None = None,
    progress: str | None = None,
) -> tuple[ViTEncoder, list[float]]:
    """Train a ViT encoder with masked reconstruction (XKD's L_rec: MAE, per-patch normalised
    targets, MSE on masked patches) on ``clips`` (K, C, T, H, W) normalised float, for ``steps``
    AdamW steps with cosine lr. Works for any ``config.in_chans`` (2 for flow). Returns the encoder
    (eval mode, CPU) and the loss per step; ``export_path`` writes it as ``.pt`` + ``.json``
    (:func:`xmkd.models.vit.save_exported_encoder`), loadable by :func:`load_encoder`.

    Only the reconstruction half of XKD: there is no second modality to distil across here.
    ``progress``: a label; prints ``<label>: step k/steps, loss x`` to stderr about ten times.
    """
    if clips.ndim != 5 or clips.shape[1] != config.in_chans:
        raise ConfigError("clips", f"expected (K, {config.in_chans}, T, H, W), got {tuple(clips.shape)}")
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoder = build_encoder(config).to(dev)
    decoder = MAEDecoder(
        config.num_patches,
        config.dim,
        config.patch_dim,
        decoder_dim,
        decoder_depth,
        max(1, decoder_dim // 32),
    ).to(dev)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    losses: list[float] = []
    encoder.train()
    decoder.train()
    for _ in range(steps):
        pick = torch.randint(0, clips.shape[0], (batch_size,), generator=gen)
        x = clips[pick].to(dev)
        mask = random_masking(x.shape[0], config.num_patches, mask_ratio, device=x.device)
        tokens = encoder(x, mask.keep_indices)
        pred = decoder(tokens, mask.restore_indices)
        loss = masked_mse(pred, normalized_patch_target(encoder.patchify(x)), mask.mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        step = len(losses)
        if progress and (step % max(1, steps // 10) == 0 or step == steps):
            print(f"{progress}: step {step}/{steps}, loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
    encoder = encoder.cpu().eval()
    if export_path is not None:
        save_exported_encoder(encoder, export_path)
    return encoder, losses
