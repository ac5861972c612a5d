"""Sliding-window clip features from raw videos (RGB) or stored flow (flow), for the untrimmed readers.

``xmkd extract-features --videos DIR --encoder PATH --modality rgb|flow --window W --stride S --out DIR``
(:mod:`xmkd.features.cli`) writes ``<out>/<modality>/<video_id>.npy`` (T, D) float32, the layout of
:mod:`xmkd.data.datasets.untrimmed`, and ``<out>/<modality>/index.json`` (settings + per-video counts + the
step -> time rule). For ``--modality flow`` the ``--videos`` folder is the output of
``xmkd compute-flow`` (``<video_id>.npz``).

Step count (tested): a video of ``duration`` seconds read at ``fps`` has ``N = ceil(duration * fps)``
frames (:func:`xmkd.data.io.flow.resampled_frame_count`). With window ``W`` and stride ``S`` frames:

- ``steps="cover"`` (default): ``T = ceil(N / S)``. Step ``t`` stands for the frames
  ``[t S, (t + 1) S)``, i.e. the time ``[t S / fps, (t + 1) S / fps)`` clipped to the duration, and
  its window is the ``W`` frames centred on that interval, ``t S + S // 2 - W // 2 + k`` for
  ``k < W``, with indices clamped to ``[0, N - 1]`` (edge frames repeated). Every step of the video
  is covered and ``T / duration`` ~ ``fps / S``, which is what the PDAN/TGM labelling rule
  (fps = T / duration, label at ``t / fps``) assumes of Charades I3D features (one per 8 frames).
  Interpretation: centring (rather than starting) the window on its step is our choice.
- ``steps="valid"``: ``T = max(1, floor((N - W) / S) + 1)``, window ``t`` = frames
  ``[t S, t S + W)`` (a video shorter than ``W`` gives one edge-padded window).

Encoders (:func:`xmkd.features.encoders.load_encoder`): an exported xmkd ViT (``.pt`` + ``.json``, as written by
``XKDPretrainer.export_encoders``; an MAE-only flow encoder is ``XKDPretrainer`` on video alone with
``video_in_chans: 2``, see ``experiments/mae_flow_encoder.yaml``): ``in_chans`` 3 for RGB, 2 for flow;
feature = mean of the patch tokens after the final norm. Or ``torchvision.models.video.r3d_18``
built with ``weights=None`` and loaded from a local state-dict file (never a download); feature =
the 512-d pooled output before ``fc``. Inputs: RGB frames resized (short side) and centre-cropped
to the encoder's size, scaled to [0, 1] and normalised (ImageNet mean/std for the ViT as in XKD
pretraining, Kinetics mean/std for r3d_18); flow crops resized the same way as images (vectors
not rescaled, as I3D/TSN treat flow images) and mapped to ``flow / bound`` in [-1, 1].

Batches of windows run on the accelerator when there is one (``device="auto"``); a DataLoader
decodes the next videos in worker processes meanwhile. Finished videos (their ``.npy`` exists) are
skipped on a rerun (resume); a bad video is reported by name and the batch continues.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from xmkd.atomic import atomic_path, atomic_write_text
from xmkd.data.io.flow import (
    FLOW_SUFFIX,
    BatchReport,
    list_videos,
    progress_bar,
    read_flow_file,
    remove_stale_temporaries,
)
from xmkd.data.io.video_io import decode_video, probe, resampled_frame_count
from xmkd.errors import BadInputError, ConfigError, Failure
from xmkd.features.encoders import (  # the encoder names are re-exported from here too
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipEncoder,
    EncoderKind,
    Modality,
    load_encoder,
    resolve_device,
    sample_clips,
)

StepRule = Literal["cover", "valid"]
INDEX_NAME = "index.json"
#: how often (seconds) the index is rewritten during a long run; always written at the end.
INDEX_FLUSH_S = 10.0


# ------------------------------------------------------------------------------------ window maths
def num_feature_steps(num_frames: int, window: int, stride: int, steps: StepRule = "cover") -> int:
    """T for ``num_frames`` frames: ``ceil(N / S)`` (cover) or ``max(1, floor((N - W) / S) + 1)`` (valid)."""
    if window < 1 or stride < 1:
        raise ConfigError("window" if window < 1 else "stride", "must be >= 1")
    if num_frames < 1:
        return 0
    if steps == "cover":
        return math.ceil(num_frames / stride)
    if steps == "valid":
        return max(1, (num_frames - window) // stride + 1)
    raise ConfigError("steps", f"expected 'cover' or 'valid', got {steps!r}")


def window_frame_indices(num_frames: int, window: int, stride: int, steps: StepRule = "cover") -> np.ndarray:
    """Frame indices (T, W) of every window, clamped to the video (see the module docstring)."""
    t = np.arange(num_feature_steps(num_frames, window, stride, steps))
    first = t * stride + (stride // 2 - window // 2 if steps == "cover" else 0)
    return np.clip(first[:, None] + np.arange(window)[None, :], 0, num_frames - 1)


def step_times(num_steps: int, fps: float, stride: int, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(start_s, end_s) of each step's interval ``[t S / fps, (t + 1) S / fps)`` clipped to the duration."""
    t = np.arange(num_steps, dtype=np.float64)
    return np.minimum(t * stride / fps, duration_s), np.minimum((t + 1) * stride / fps, duration_s)


def feature_times(index: dict[str, Any], video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(start_s, end_s) per feature step of ``video_id`` from a loaded ``index.json``."""
    entry = index["videos"][video_id]
    return step_times(entry["num_steps"], entry["fps"], index["stride"], entry["duration_s"])


# ------------------------------------------------------------------------------------ inputs
def centre_crop_resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, h, w, C): centre crop to the target aspect, then area/linear resize."""
    n, h, w, c = frames.shape
    th, tw = size
    scale = min(h / th, w / tw)
    ch, cw = round(th * scale), round(tw * scale)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = frames[:, y0 : y0 + ch, x0 : x0 + cw]
    if (ch, cw) == (th, tw):
        return np.ascontiguousarray(crop)
    interp = cv2.INTER_AREA if ch > th else cv2.INTER_LINEAR
    out = np.empty((n, th, tw, c), dtype=np.uint8)
    for i in range(n):
        r = cv2.resize(crop[i], (tw, th), interpolation=interp)
        out[i] = r.reshape(th, tw, c)
    return out


def load_input(
    path: Path, modality: Modality, size: tuple[int, int], fps: float | None
) -> tuple[np.ndarray, float, float]:
    """Frames (N, h, w, C) uint8 at the encoder size, their fps, and the video duration.

    RGB: decoded with the short side at the encoder size, then centre-cropped. Flow: the stored
    quantised flow (its fps is fixed by ``compute-flow``: a different ``fps`` is an error).
    """
    if modality == "rgb":
        d = decode_video(path, fps, max(size))  # short side >= the crop, then centre crop
        return centre_crop_resize(d.frames, size), d.fps, d.duration_s
    f = read_flow_file(path)
    if fps is not None and abs(fps - f.fps) > 1e-6:
        raise BadInputError(path, f"flow was computed at {f.fps} fps, not the requested {fps}")
    return centre_crop_resize(f.flow, size), f.fps, f.duration_s


class _VideoInputs(Dataset):
    """Decodes one video per item (in DataLoader workers); a bad file comes back as its failure."""

    def __init__(
        self, items: list[tuple[str, Path]], modality: Modality, size: tuple[int, int], fps: float | None
    ):
        self.items, self.modality, self.size, self.fps = items, modality, size, fps

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        vid, path = self.items[i]
        try:
            frames, fps, duration = load_input(path, self.modality, self.size, self.fps)
        except BadInputError as e:
            return {"video_id": vid, "path": str(path), "failure": e.reason}
        return {
            "video_id": vid,
            "path": str(path),
            "frames": torch.from_numpy(frames),
            "fps": fps,
            "duration": duration,
        }


def _identity(item: Any) -> Any:
    return item


@torch.inference_mode()
def encode_windows(
    encoder: ClipEncoder,
    frames: Tensor,
    indices: np.ndarray,
    modality: Modality,
    batch_size: int,
    device: torch.device,
    precision: str = "32",
) -> np.ndarray:
    """Features (T, D) float32 of the windows ``frames[indices[t]]``, ``batch_size`` at a time."""
    frames = frames.to(device, non_blocking=True)
    idx = torch.from_numpy(indices).to(device)
    outs = []
    autocast = precision == "bf16" and device.type == "cuda"
    for s in range(0, len(idx), batch_size):
        x = encoder.prepare(frames[idx[s : s + batch_size]], modality)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            outs.append(encoder.module(x).float().cpu())
    return torch.cat(outs).numpy().astype(np.float32, copy=False)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def list_inputs(videos: str | os.PathLike, modality: Modality) -> dict[str, Path]:
    """Inputs by id: video files (rgb, recursive) or ``<id>.npz`` flow files (flow)."""
    if modality == "rgb":
        return list_videos(videos)
    if modality == "flow":
        root = Path(videos)
        if not root.is_dir():
            raise ConfigError("videos", f"{root} is not a folder (for flow: the compute-flow output)")
        found = {p.stem: p for p in sorted(root.glob(f"*{FLOW_SUFFIX}")) if not p.name.startswith(".")}
        if not found:
            raise ConfigError(
                "videos", f"{root} holds no {FLOW_SUFFIX} flow files (write them with compute-flow)"
            )
        return found
    raise ConfigError("modality", f"expected 'rgb' or 'flow', got {modality!r}")


def extract_features_folder(
    videos: str | os.PathLike,
    encoder: ClipEncoder | str | os.PathLike,
    modality: Modality,
    out: str | os.PathLike,
    window: int | None = None,
    stride: int = 8,
    fps: float | None = None,
    steps: StepRule = "cover",
    batch_size: int = 32,
    device: str = "auto",
    precision: str = "32",
    workers: int = 0,
    encoder_kind: EncoderKind = "auto",
    progress: bool = True,
    overwrite: bool = False,
    on_video_done: Callable[[str], None] | None = None,
) -> BatchReport:
    """Features for every video (or flow file) under ``videos`` into ``out/<modality>/``.

    ``window`` defaults to the encoder's frame count. ``fps``: frame rate the windows are cut at
    (RGB; ``None`` = each video's native rate; flow: the rate it was computed at). Resumable:
    videos whose ``.npy`` exists are skipped; ``index.json`` records the settings, and a resume
    with other settings raises :class:`ConfigError` (``overwrite`` starts over).
    ``on_video_done(video_id)`` is called after each written file.
    """
    if not isinstance(encoder, ClipEncoder):
        encoder = load_encoder(encoder, encoder_kind)
    want_chans = 3 if modality == "rgb" else 2
    if encoder.in_chans != want_chans:
        raise ConfigError(
            "encoder", f"{encoder.path} takes {encoder.in_chans} channels; {modality} needs {want_chans}"
        )
    window = window or encoder.frames
    if encoder.kind == "xkd" and window % encoder.module.encoder.config.patch_size[0]:
        tub = encoder.module.encoder.config.patch_size[0]
        raise ConfigError("window", f"{window} frames is not a multiple of the encoder's tubelet {tub}")
    num_feature_steps(1, window, stride, steps)  # validates window, stride, steps
    dev = resolve_device(device)
    encoder.module.to(dev)
    inputs = list_inputs(videos, modality)
    folder = Path(out) / modality
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    settings = {
        "modality": modality, "encoder": encoder.path, "encoder_kind": encoder.kind,
        "feature_dim": encoder.dim, "window": window, "stride": stride, "fps": fps, "steps": steps,
        "input_size": [encoder.frames, *encoder.size],
    }  # fmt: skip
    index_path = folder / INDEX_NAME
    entries: dict[str, dict[str, Any]] = {}
    if index_path.is_file() and not overwrite:
        old = json.loads(index_path.read_text())
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            raise ConfigError(
                next(iter(diff)),
                f"{folder} holds features made with other settings {diff} (have, wanted); use --overwrite",
            )
        entries = old.get("videos", {})
    report = BatchReport()
    todo: list[tuple[str, Path]] = []
    for vid, path in inputs.items():
        target = folder / f"{vid}.npy"
        if target.is_file() and not overwrite:
            report.skipped.append(vid)
            if vid not in entries:  # finished before an index flush: rebuild its entry
                entries[vid] = _entry_from_disk(path, target, modality, stride, fps, window, steps)
        else:
            todo.append((vid, path))

    def write_index() -> None:
        note = (
            "frame i is at i / fps; step t covers [t*stride/fps, (t+1)*stride/fps) clipped to duration_s; "
            + (
                "its window is frames t*stride + stride//2 - window//2 + k, k < window, clamped to [0, num_frames-1]"
                if steps == "cover"
                else "its window is frames [t*stride, t*stride + window), clamped to [0, num_frames-1]"
            )
        )
        _write_json_atomic(
            index_path, {**settings, "time_mapping": note, "videos": dict(sorted(entries.items()))}
        )

    loader = DataLoader(
        _VideoInputs(todo, modality, encoder.size, fps),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=2 if workers else None,
    )
    last_flush = time.monotonic()
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(f"{modality} features", total=len(todo))
            for item in loader:
                vid = item["video_id"]
                bar.advance(task)
                if "failure" in item:
                    report.failures.append(Failure(item["path"], item["failure"]))
                    continue
                frames: Tensor = item["frames"]
                n = frames.shape[0]
                indices = window_frame_indices(n, window, stride, steps)
                feats = encode_windows(encoder, frames, indices, modality, batch_size, dev, precision)
                if not np.isfinite(feats).all():
                    report.failures.append(Failure(item["path"], "encoder produced NaN/Inf features"))
                    continue
                _save_npy_atomic(folder / f"{vid}.npy", feats)
                entries[vid] = {
                    "source": item["path"], "fps": item["fps"], "duration_s": item["duration"],
                    "num_frames": int(n), "num_steps": len(feats),
                }  # fmt: skip
                report.done.append(vid)
                if time.monotonic() - last_flush > INDEX_FLUSH_S:
                    write_index()
                    last_flush = time.monotonic()
                if on_video_done is not None:
                    on_video_done(vid)
    finally:
        write_index()
    return report


def _entry_from_disk(
    source: Path,
    target: Path,
    modality: Modality,
    stride: int,
    fps: float | None,
    window: int,
    steps: StepRule,
) -> dict[str, Any]:
    """Index entry of a video finished by an earlier run that did not get to write its index."""
    feats = np.load(target, mmap_mode="r")
    if modality == "flow":
        f = read_flow_file(source)
        rate, duration, n = f.fps, f.duration_s, f.flow.shape[0]
    else:
        info = probe(source)
        rate, duration = fps or info.fps, info.duration_s
        n = resampled_frame_count(duration, rate)
    return {
        "source": str(source),
        "fps": rate,
        "duration_s": duration,
        "num_frames": int(n),
        "num_steps": int(feats.shape[0]),
    }


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClipEncoder",
    "centre_crop_resize",
    "encode_windows",
    "extract_features_folder",
    "feature_times",
    "list_inputs",
    "load_encoder",
    "load_input",
    "num_feature_steps",
    "sample_clips",
    "step_times",
    "window_frame_indices",
]
