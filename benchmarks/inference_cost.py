"""Inference cost per minute of video: the Augmented-RGB student (RGB only) vs the two-stream teacher.

    python benchmarks/inference_cost.py [--preset synthetic|paper] [--seconds 60] [--json OUT]

The point of distilling flow into an RGB student is that deployment skips optical flow. This times,
on the CPU, what each model needs for one minute of video (``--seconds`` shorter clips are scaled
to a minute; every stage is linear in the video's length):

- RGB features: frames resized to the encoder's input, sliding windows through a clip encoder
  (:func:`xmkd.features.extract.encode_windows`), shared by both models;
- teacher only: DIS optical flow between consecutive grey frames (:func:`xmkd.data.io.flow.compute_flow`,
  the chain's default preset), quantised as ``xmkd compute-flow`` stores it, and flow features from a
  2-channel encoder on the same windows;
- the detection heads on those features: the student's PDAN head in PyTorch and exported to ONNX
  (onnxruntime, when installed), and the teacher's two heads with logit fusion.

Decoding the video is the same for both models and is left out. The encoders are the tiny ViTs of the
synthetic raw chain (``xmkd.pipelines.distill_detection_raw.encoder_config``, random weights: the cost
does not depend on them), not I3D, so absolute extraction costs are small next to the paper's; flow is
computed at the preset's flow resolution. Presets:

- ``synthetic``: the raw chain's rates (12 fps, 64 x 64, window 8, stride 4, ViT 96-d x 3 blocks,
  heads of 64 channels x 3 blocks, 6 classes);
- ``paper``: Charades-like rates (24 fps, flow at 224 x 224 as I3D's flow stream reads it, encoder
  clips of 16 frames at 112 x 112 with stride 8, PDAN's 512 channels x 5 blocks, 157 classes).

The frames are a textured background translating under noise, so DIS does the work of real motion.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from xmkd.data.io.flow import compute_flow, quantize_flow
from xmkd.features.encoders import IMAGENET_MEAN, IMAGENET_STD, ClipEncoder, _PatchMean
from xmkd.features.extract import (
    centre_crop_resize,
    encode_windows,
    window_frame_indices,
)
from xmkd.models.vit import build_encoder
from xmkd.modules.detection import SingleStreamDetector, TwoStreamTeacher
from xmkd.pipelines.distill_detection_raw import encoder_config


@dataclass(frozen=True)
class Preset:
    fps: float
    flow_size: int  # frames are made (and flow computed) at this size
    size: int  # encoder input
    window: int
    stride: int
    dim: int
    depth: int
    channels: int
    blocks: int
    classes: int


PRESETS = {
    "synthetic": Preset(12.0, 64, 64, 8, 4, 96, 3, 64, 3, 6),
    "paper": Preset(24.0, 224, 112, 16, 8, 96, 3, 512, 5, 157),
}

STUDENT_ROWS = ("rgb_features", "student_head")
TEACHER_ROWS = ("rgb_features", "flow", "flow_features", "teacher_heads")
ROW_NAMES = {
    "rgb_features": "RGB features",
    "flow": "optical flow (DIS)",
    "flow_features": "flow features",
    "student_head": "detection head",
    "teacher_heads": "detection head",
}


def moving_texture(num_frames: int, size: int, fps: float, seed: int = 0) -> np.ndarray:
    """(N, size, size, 3) uint8: a smooth random texture translating at ~0.2 frame widths per second."""
    rng = np.random.default_rng(seed)
    big = cv2.resize(rng.random((size // 4, size // 4, 3)).astype(np.float32), (2 * size, 2 * size))
    big = (255 * (big - big.min()) / (big.max() - big.min())).astype(np.uint8)
    out = np.empty((num_frames, size, size, 3), np.uint8)
    for i in range(num_frames):
        shift = 0.2 * size * i / fps
        dx, dy = int(shift) % size, int(0.5 * shift) % size
        noise = rng.normal(0, 4, (size, size, 3))
        out[i] = np.clip(big[dy : dy + size, dx : dx + size] + noise, 0, 255)
    return out


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def clip_encoder(p: Preset, in_chans: int) -> ClipEncoder:
    torch.manual_seed(in_chans)
    cfg = encoder_config(in_chans, p.size, p.window, p.dim, p.depth)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else (None, None)
    module = _PatchMean(build_encoder(cfg)).eval()
    return ClipEncoder(module, "xkd", in_chans, p.window, (p.size, p.size), p.dim, mean, std, "random")


def features(encoder: ClipEncoder, frames: np.ndarray, p: Preset, modality: str) -> np.ndarray:
    """(T, D) window features of ``frames`` at the flow resolution, resized to the encoder's input."""
    small = torch.from_numpy(centre_crop_resize(frames, (p.size, p.size)))
    idx = window_frame_indices(len(frames), p.window, p.stride)
    return encode_windows(encoder, small, idx, modality, 16, torch.device("cpu"))


def flow_of(frames: np.ndarray) -> np.ndarray:
    """Stored (quantised) DIS flow of RGB frames, as ``xmkd compute-flow`` writes it."""
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    return quantize_flow(compute_flow(grey))


def head_runner(model: torch.nn.Module, batch: dict[str, Any]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.inference_mode():
            return model(batch)["logits"]

    return run


def onnx_runner(student: SingleStreamDetector, rgb: torch.Tensor, mask: torch.Tensor, tmp: Path):
    """A call of the exported student on onnxruntime, or None when the export extra is missing."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        return None
    from xmkd.export import check_exported, export_onnx

    path = export_onnx(student.head, tmp / "student.onnx", rgb.shape[-1])
    check_exported("onnx", path, student.head, rgb.shape[-1])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = {"features": rgb.numpy(), "mask": mask.numpy()}
    return lambda: session.run(["logits"], inputs)[0]


def measure(p: Preset, seconds: float, repeats: int, head_repeats: int, onnx: bool) -> dict[str, Any]:
    """Seconds per minute of video of every stage (see the module docstring)."""
    frames = moving_texture(round(seconds * p.fps), p.flow_size, p.fps)
    scale = 60.0 / seconds
    rgb_encoder, flow_encoder = clip_encoder(p, 3), clip_encoder(p, 2)
    t_rgb, rgb = timed(lambda: features(rgb_encoder, frames, p, "rgb"), repeats)
    t_flow, flow = timed(lambda: flow_of(frames), repeats)
    t_flow_feat, flow_feat = timed(lambda: features(flow_encoder, flow, p, "flow"), repeats)
    rgb_t, flow_t = torch.from_numpy(rgb)[None], torch.from_numpy(flow_feat)[None]
    mask = torch.ones(rgb_t.shape[:2], dtype=torch.bool)
    head = {"num_classes": p.classes, "channels": p.channels, "num_blocks": p.blocks}
    torch.manual_seed(0)
    student = SingleStreamDetector(modality="rgb", input_dim=p.dim, **head).eval()
    teacher = TwoStreamTeacher(aux_modality="flow", rgb_dim=p.dim, aux_dim=p.dim, **head).eval()
    batch = {"features": {"rgb": rgb_t, "flow": flow_t}, "mask": mask}
    t_student, _ = timed(head_runner(student, batch), head_repeats)
    t_teacher, _ = timed(head_runner(teacher, batch), head_repeats)
    costs = {
        "rgb_features": t_rgb,
        "flow": t_flow,
        "flow_features": t_flow_feat,
        "student_head": t_student,
        "teacher_heads": t_teacher,
    }
    if onnx:
        with tempfile.TemporaryDirectory() as tmp:
            run = onnx_runner(student, rgb_t, mask, Path(tmp))
            if run is not None:
                costs["student_head_onnx"] = timed(run, head_repeats)[0]
    return {
        "frames": len(frames),
        "steps": int(rgb_t.shape[1]),
        "seconds_of_video": seconds,
        "per_minute_s": {k: v * scale for k, v in costs.items()},
    }


def cost_table(per_minute: dict[str, float]) -> str:
    """Markdown rows: each stage's seconds per minute of video (3 significant digits: the heads cost
    milliseconds) for the student and the teacher, the totals and teacher / student ratios (also with
    the student's ONNX head when measured)."""
    lines = ["| stage | student (RGB only) | teacher (RGB + flow) |", "| --- | --- | --- |"]
    for row in ("rgb_features", "flow", "flow_features"):
        student = f"{per_minute[row]:.3g}" if row in STUDENT_ROWS else "-"
        lines.append(f"| {ROW_NAMES[row]} | {student} | {per_minute[row]:.3g} |")
    head = f"{per_minute['student_head']:.3g}"
    if "student_head_onnx" in per_minute:
        head += f" (ONNX {per_minute['student_head_onnx']:.3g})"
    lines.append(f"| detection head(s) | {head} | {per_minute['teacher_heads']:.3g} |")
    student_total = sum(per_minute[r] for r in STUDENT_ROWS)
    teacher_total = sum(per_minute[r] for r in TEACHER_ROWS)
    lines.append(f"| **total** | **{student_total:.3g}** | **{teacher_total:.3g}** |")
    ratio = f"| teacher / student | | **{teacher_total / student_total:.1f}x** |"
    if "student_head_onnx" in per_minute:
        onnx_total = student_total - per_minute["student_head"] + per_minute["student_head_onnx"]
        ratio = ratio[: -len(" |")] + f" ({teacher_total / onnx_total:.1f}x vs the ONNX student) |"
    lines.append(ratio)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), nargs="+", default=["synthetic", "paper"])
    parser.add_argument("--seconds", type=float, default=60.0, help="video length timed (scaled to 1 min)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each extraction stage")
    parser.add_argument("--head-repeats", type=int, default=5, help="timed runs of each head")
    parser.add_argument("--threads", type=int, default=1, help="torch, OpenCV and onnxruntime threads")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX student")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    result: dict[str, Any] = {"threads": args.threads, "torch": torch.__version__, "presets": {}}
    for name in args.preset:
        p = PRESETS[name]
        m = measure(p, args.seconds, args.repeats, args.head_repeats, not args.no_onnx)
        result["presets"][name] = {"preset": asdict(p), **m}
        print(
            f"\n{name}: {m['frames']} frames, {m['steps']} feature steps in {args.seconds:g} s of video; "
            f"seconds per minute of video, {args.threads} thread(s)\n"
        )
        print(cost_table(m["per_minute_s"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
