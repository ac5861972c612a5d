"""Raw synthetic untrimmed videos (h264 mp4) with Charades-style annotations: the embedded default of
``make distill-detection-raw`` (raw video -> flow -> RGB and flow features -> teacher -> student).

World. Each video shows ``objects`` textured discs on a textured background. An object is still
except while it performs an action; each action class is a MOTION PATTERN (move right / left / up
/ down, circle, shake, spin in place, zigzag), carried out over ``[start, end)``. An object performs
its actions one after another with random gaps; objects act independently, so actions of
different objects overlap in time (multi-label steps, as in Charades). Positions wrap around the
frame edges (a torus), so a long "move right" never leaves the picture.

Why flow beats RGB here. Everything about appearance is random per video and per object (disc
colours, stripe texture and orientation, size, background palette and texture, pixel noise, a
still distractor disc): a single frame says nothing about which action runs. The class lives
only in how pixels move, which optical flow measures directly (direction, rotation, oscillation),
while an RGB clip encoder has to infer it from appearance changes. The teacher (RGB + flow)
therefore has evidence an RGB-only student lacks: the setting of Augmented-RGB distillation.

Labels. As in the feature-level ``motion`` world (:mod:`xmkd.data.synthetic.motion`), the training
videos' annotations are what an annotator writes: each boundary moved by N(0, ``label_jitter_s``)
seconds and a fraction ``label_omission`` of the actions left out; the test videos' are exact, and
``annotations_exact.json`` (PDAN layout) keeps every video's exact segments for analysis.

Layout under ``root``::

    videos/<video_id>.mp4               h264 yuv420p, ``size`` x ``size`` at ``fps``
    Charades_v1_train.csv / _test.csv   official columns; actions "c003 1.25 4.00;..." (seconds)
    Charades_v1_classes.txt             "c000 Move right" ...
    dataset.json                        parameters, class names, counts (written last: complete)

Deterministic given the parameters; each video draws from its own stream ``(seed, index)``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmkd.atomic import atomic_write_text
from xmkd.data.readers.untrimmed import CHARADES_CSV_COLUMNS, Segment
from xmkd.data.synthetic.media import smooth_noise, write_mp4
from xmkd.errors import ConfigError
from xmkd.locks import generation_lock
from xmkd.parallel import process_pool

FORMAT = "xmkd-synthetic-raw-untrimmed"
#: 2: x264 portable C path (byte-identical everywhere); noisy training annotations, annotations_exact.json.
VERSION = 2
#: every motion pattern, in class order; ``classes`` takes the first N.
MOTIONS = ("Move right", "Move left", "Move up", "Move down", "Circle", "Shake", "Spin", "Zigzag")


@dataclass(frozen=True)
class RawUntrimmedParams:
    """Every knob of the raw world."""

    videos: int = 40
    classes: int = 6
    seed: int = 0
    size: int = 64
    fps: float = 12.0
    min_duration_s: float = 8.0
    max_duration_s: float = 14.0
    objects: int = 2
    min_action_s: float = 1.5
    max_action_s: float = 4.0
    mean_gap_s: float = 1.5
    speed: float = 0.3  # translation speed in frame widths per second
    noise: float = 4.0  # pixel noise sigma (0..255)
    test_fraction: float = 0.25
    crf: int = 18
    label_jitter_s: float = 0.67  # two feature steps of the chain's default (window 8, stride 4 at 12 fps)
    label_omission: float = 0.2

    def validate(self) -> None:
        checks = {
            "videos": self.videos >= 2,
            "classes": 1 <= self.classes <= len(MOTIONS),
            "size": 32 <= self.size <= 512 and self.size % 2 == 0,
            "fps": 1 <= self.fps <= 60,
            "min_duration_s": 1 <= self.min_duration_s <= self.max_duration_s,
            "objects": self.objects >= 1,
            "min_action_s": 0 < self.min_action_s <= self.max_action_s,
            "test_fraction": 0 < self.test_fraction < 1,
            "crf": 0 <= self.crf <= 51,
            "label_jitter_s": self.label_jitter_s >= 0,
            "label_omission": 0 <= self.label_omission < 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(key, f"invalid synthetic-raw-untrimmed parameter ({getattr(self, key)!r})")


def class_names(num_classes: int) -> list[str]:
    return list(MOTIONS[:num_classes])


# ------------------------------------------------------------------------------------ motion
def motion_offset(
    label: int, tau: np.ndarray, size: int, speed: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dy, dtheta) of an object ``tau`` seconds into an action of class ``label`` (pure).

    Image axes: x right, y down. Offsets start at 0 for tau = 0, so positions are continuous; a
    finished action leaves the object where it ended.
    """
    v = speed * size  # pixels per second
    zero = np.zeros_like(tau)
    name = MOTIONS[label]
    if name == "Move right":
        return v * tau, zero, zero
    if name == "Move left":
        return -v * tau, zero, zero
    if name == "Move up":
        return zero, -v * tau, zero
    if name == "Move down":
        return zero, v * tau, zero
    if name == "Circle":  # counter-clockwise on screen, radius 0.15 size, one turn per 1.5 s
        r, w = 0.15 * size, 2 * math.pi / 1.5
        return r * (np.cos(w * tau) - 1), -r * np.sin(w * tau), zero
    if name == "Shake":  # horizontal oscillation, 3 Hz
        return 0.08 * size * np.sin(2 * math.pi * 3.0 * tau), zero, zero
    if name == "Spin":  # rotation in place, half a turn per second
        return zero, zero, math.pi * tau
    if name == "Zigzag":  # up-right diagonal with a vertical wiggle
        return 0.7 * v * tau, -0.7 * v * tau + 0.06 * size * np.sin(2 * math.pi * 2.0 * tau), zero
    raise ValueError(f"unknown motion class {label}")


def plan_video(p: RawUntrimmedParams, index: int) -> dict[str, Any]:
    """One video's actions per object (no rendering): duration, frames, segments."""
    rng = np.random.default_rng([p.seed, index, 1])
    num_frames = round(rng.uniform(p.min_duration_s, p.max_duration_s) * p.fps)
    duration = num_frames / p.fps
    objects = []
    for _ in range(p.objects):
        actions = []
        t = float(rng.exponential(p.mean_gap_s))
        while t < duration - 0.5:
            length = float(rng.uniform(p.min_action_s, p.max_action_s))
            label = int(rng.integers(p.classes))
            actions.append((label, round(t, 2), round(min(t + length, duration), 2)))
            t += length + float(rng.exponential(p.mean_gap_s)) + 0.25
        objects.append(actions)
    return {"index": index, "num_frames": num_frames, "duration_s": duration, "objects": objects}


def render_video(p: RawUntrimmedParams, plan: dict[str, Any]) -> np.ndarray:
    """Frames (N, S, S, 3) uint8 of a planned video."""
    rng = np.random.default_rng([p.seed, plan["index"], 2])
    s, n = p.size, plan["num_frames"]
    t = np.arange(n) / p.fps
    palette = rng.random((2, 3)) * 255
    mix = 0.6 * smooth_noise(rng, s, int(rng.integers(3, 7))) + 0.4 * smooth_noise(
        rng, s, int(rng.integers(8, 16))
    )
    background = (palette[0] * (1 - mix[..., None]) + palette[1] * mix[..., None]).astype(np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)

    def disc(cx: float, cy: float, radius: float, theta: float, colours: np.ndarray, period: float):
        dx = (xx - cx + s / 2) % s - s / 2  # wrapped distance: the world is a torus
        dy = (yy - cy + s / 2) % s - s / 2
        mask = dx * dx + dy * dy <= radius * radius
        u = dx * math.cos(theta) + dy * math.sin(theta)
        stripe = (np.sin(2 * math.pi * u / period) > 0)[..., None]
        return mask, np.where(stripe, colours[0], colours[1])

    # the still distractor, drawn into the background
    mask, tex = disc(*(rng.uniform(0, s, 2)), s * rng.uniform(0.08, 0.14), rng.uniform(0, math.pi),
                     rng.random((2, 3)) * 255, s * rng.uniform(0.05, 0.1))  # fmt: skip
    background = np.where(mask[..., None], tex, background).astype(np.float32)
    tracks = []
    for actions in plan["objects"]:
        x = np.full(n, rng.uniform(0, s))
        y = np.full(n, rng.uniform(0, s))
        theta = np.full(n, rng.uniform(0, math.pi))
        for label, start, end in actions:
            tau = np.clip(t - start, 0, end - start)
            dx, dy, dth = motion_offset(label, tau, s, p.speed)
            x, y, theta = x + dx, y + dy, theta + dth
        look = (s * rng.uniform(0.1, 0.16), rng.random((2, 3)) * 255, s * rng.uniform(0.06, 0.12))
        tracks.append((x, y, theta, look))
    sigma = p.noise * rng.uniform(0.5, 1.5)
    frames = np.empty((n, s, s, 3), np.uint8)
    for i in range(n):
        img = background.copy()
        for x, y, theta, (radius, colours, period) in tracks:
            mask, tex = disc(float(x[i]), float(y[i]), radius, float(theta[i]), colours, period)
            img = np.where(mask[..., None], tex, img)
        img = img + rng.standard_normal(img.shape).astype(np.float32) * sigma
        frames[i] = np.clip(img, 0, 255)
    return frames


def _make_video(job: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    pdict, plan, path = job
    p = RawUntrimmedParams(**pdict)
    write_mp4(Path(path), render_video(p, plan), p.fps, p.crf)


def video_segments(plan: dict[str, Any]) -> list[Segment]:
    """All objects' actions of a planned video, sorted by start."""
    return sorted(Segment(*a) for actions in plan["objects"] for a in actions)


def annotated_segments(p: RawUntrimmedParams, plan: dict[str, Any]) -> list[Segment]:
    """What an annotator writes for a training video: every boundary moved by N(0, ``label_jitter_s``)
    s, a fraction ``label_omission`` of the actions left out (its own random stream: the video and
    the exact segments do not depend on it)."""
    rng = np.random.default_rng([p.seed, plan["index"], 4])
    written = []
    for seg in video_segments(plan):
        omit = rng.random() < p.label_omission
        ds, de = rng.standard_normal(2) * p.label_jitter_s
        if omit:
            continue
        start = min(max(0.01, seg.start_s + ds), plan["duration_s"] - 0.1)
        end = max(start + 1 / p.fps, seg.end_s + de)
        written.append(Segment(seg.label, round(start, 2), round(end, 2)))
    return written


def make_synthetic_raw_untrimmed(
    root: str | os.PathLike, workers: int | None = None, **params: Any
) -> dict[str, Any]:
    """Write the world into ``root`` (must not hold one already) and return ``dataset.json``'s content."""
    p = RawUntrimmedParams(**params)
    p.validate()
    root = Path(root)
    if (root / "dataset.json").exists():
        raise ConfigError(
            "out", f"{root} already holds a dataset; use ensure_synthetic_raw_untrimmed or a new folder"
        )
    (root / "videos").mkdir(parents=True, exist_ok=True)
    plans = [plan_video(p, i) for i in range(p.videos)]
    split_rng = np.random.default_rng([p.seed, 3])
    n_test = max(1, round(p.videos * p.test_fraction))
    test = set(split_rng.choice(p.videos, size=n_test, replace=False).tolist())
    ids = [f"RAW{i:04d}" for i in range(p.videos)]
    jobs = [(asdict(p), plan, str(root / "videos" / f"{vid}.mp4")) for plan, vid in zip(plans, ids)]
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1:
        with process_pool(workers) as pool:
            list(pool.map(_make_video, jobs))
    else:
        for job in jobs:
            _make_video(job)
    names = class_names(p.classes)
    (root / "Charades_v1_classes.txt").write_text("".join(f"c{i:03d} {n}\n" for i, n in enumerate(names)))
    for subset, filename in (("training", "Charades_v1_train.csv"), ("testing", "Charades_v1_test.csv")):
        with (root / filename).open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(CHARADES_CSV_COLUMNS))
            writer.writeheader()
            for i, (plan, vid) in enumerate(zip(plans, ids)):
                if (i in test) != (subset == "testing"):
                    continue
                segs = video_segments(plan) if subset == "testing" else annotated_segments(p, plan)
                writer.writerow({
                    "id": vid, "subject": f"OBJ{i % 7:02d}", "scene": "Synthetic", "quality": "7",
                    "relevance": "7", "verified": "Yes",
                    "script": f"{p.objects} objects, {len(segs)} motion(s), each, in turn, on its own.",
                    "objects": "disc", "descriptions": "Textured discs move in class-specific ways.",
                    "actions": ";".join(f"c{s.label:03d} {s.start_s:.2f} {s.end_s:.2f}" for s in segs),
                    "length": f"{plan['duration_s']:.2f}",
                })  # fmt: skip
    exact = {
        vid: {
            "subset": "testing" if i in test else "training",
            "duration": plan["duration_s"],
            "actions": [[s.label, s.start_s, s.end_s] for s in video_segments(plan)],
        }
        for i, (plan, vid) in enumerate(zip(plans, ids))
    }
    (root / "annotations_exact.json").write_text(json.dumps(exact), encoding="utf-8")
    segs = [s for plan in plans for s in video_segments(plan)]
    info = {
        "format": FORMAT,
        "version": VERSION,
        "params": asdict(p),
        "class_names": names,
        "counts": {
            "videos": p.videos,
            "training": p.videos - len(test),
            "testing": len(test),
            "segments": len(segs),
            "per_class": [sum(s.label == c for s in segs) for c in range(p.classes)],
            "total_duration_s": round(sum(plan["duration_s"] for plan in plans), 2),
        },
    }
    # written last: its presence means the folder is complete
    atomic_write_text(root / "dataset.json", json.dumps(info, indent=1))
    return info


def ensure_synthetic_raw_untrimmed(
    root: str | os.PathLike, workers: int | None = None, **params: Any
) -> dict[str, Any]:
    """Return the world at ``root``, generating it when absent; an incomplete folder (no
    ``dataset.json``) is regenerated, one with other parameters raises :class:`ConfigError`. A twin
    process asking at the same time waits for the first one's world instead of writing beside it."""
    root = Path(root)
    with generation_lock(root):
        return _ensure_synthetic_raw_untrimmed(root, workers, **params)


def _ensure_synthetic_raw_untrimmed(root: Path, workers: int | None, **params: Any) -> dict[str, Any]:
    wanted = asdict(RawUntrimmedParams(**params))
    marker = root / "dataset.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        diff = {
            k: (info.get("params", {}).get(k), v)
            for k, v in wanted.items()
            if info.get("params", {}).get(k) != v
        }
        if diff or info.get("version") != VERSION:
            raise ConfigError("out", f"{root} holds a raw world with other parameters {diff} (have, wanted)")
        return info
    shutil.rmtree(root / "videos", ignore_errors=True)
    print(
        f"synth-untrimmed-raw: rendering {wanted['videos']} videos into {root} ...",
        file=sys.stderr,
        flush=True,
    )
    start = time.perf_counter()
    info = make_synthetic_raw_untrimmed(root, workers=workers, **params)
    print(f"synth-untrimmed-raw: done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return info


__all__ = [
    "MOTIONS",
    "RawUntrimmedParams",
    "class_names",
    "ensure_synthetic_raw_untrimmed",
    "make_synthetic_raw_untrimmed",
    "motion_offset",
    "plan_video",
    "render_video",
    "video_segments",
]
