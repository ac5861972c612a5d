"""A small synthetic audio-visual action dataset written as real mp4 files (h264 + AAC).

Each class is a motion pattern (trajectory family x tempo, plus a spin direction/speed of the
striped blob) and a sound (pitch and timbre) whose tone bursts start where the blob turns, so
the two modalities carry the same class evidence and are aligned in time. Per clip the colours,
stripe texture, background, blob size, start phase, position, a moving distractor square, pixel
noise, a distractor hum and background hiss are random, so the class is not readable from a
frame's colours: a model has to use motion (video) or pitch/rhythm (audio).

``light_pulse=True`` (off by default) also dims the whole scene in a raised cosine at a class rate
(0.5-3.5 Hz over the classes, under the Nyquist rate of 8 fps clips) with a per-clip depth and phase,
drawn from its own random stream so that every other draw is unchanged. It is the video cue of the
README's XKD study: unlike trajectory shapes, it survives crops, flips and colour jitter, and a tiny
video ViT learns it within a few hundred supervised CPU steps; but a probe on a random init's pooled
features also reads it.

Layout under ``out``::

    videos/<Class>/<youtube_id>_<start:06d>_<end:06d>.mp4
    kinetics.csv                 label,youtube_id,time_start,time_end,split (Kinetics-400 style)
    splits/classInd.txt          "1 ClassName" (UCF101 style)
    splits/trainlist0{1,2,3}.txt "Class/file.mp4 idx";  splits/testlist0{1,2,3}.txt "Class/file.mp4"
    dataset.json                 classes, counts, generator params, seed, and every clip's record

Like UCF101, clips come in groups (same background and palette: "same actor, same room"), and
each fold keeps a group wholly in train or wholly in test, with UCF101's proportions (7 of 25
groups per test fold, the last 4 of 25 always in train): see :func:`fold_of_group`.
``heldout_per_class`` adds that many clips per class, in groups of their own, that no training list
holds: they are in the test list of every fold, so an evaluation can have many more test clips
than UCF101's proportions give without growing the training set (the tiny XKD recipe scores its
online probe on them). ``kinetics.csv`` marks fold 1's test clips and the held-out clips ``val``
and the rest ``train``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmkd.atomic import atomic_write_text
from xmkd.data.synthetic.media import smooth_noise, write_mp4
from xmkd.errors import ConfigError
from xmkd.locks import generation_lock
from xmkd.parallel import process_pool

FAMILIES = ("HorizontalBounce", "VerticalBounce", "Circle", "FigureEight", "DiagonalBounce")
TEMPOS = ("Slow", "Fast", "Faster", "Fastest")
_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
FORMAT = "xmkd-synthetic-av"
#: 2: files written by x264's portable C path (byte-identical on every machine and in any process).
VERSION = 2

#: ``light_pulse``: the rates span [PULSE_MIN_HZ, PULSE_MAX_HZ] over the classes, and per clip the
#: light dims by a depth drawn from PULSE_DEPTH at the troughs.
PULSE_MIN_HZ, PULSE_MAX_HZ = 0.5, 3.5
PULSE_DEPTH = (0.4, 0.6)


@dataclass(frozen=True)
class SyntheticAVParams:
    """Generator parameters; all of them (and ``VERSION``) decide whether a folder is reusable."""

    classes: int = 10
    clips_per_class: int = 24
    seed: int = 0
    duration: float = 4.0
    size: int = 128
    fps: float = 16.0
    sample_rate: int = 16000
    clips_per_group: int = 3
    crf: int = 23
    light_pulse: bool = False
    heldout_per_class: int = 0

    def validate(self) -> None:
        checks = {
            "classes": self.classes >= 1,
            "clips_per_class": self.clips_per_class >= 1,
            "duration": 0.5 <= self.duration <= 600,
            "size": 32 <= self.size <= 1024 and self.size % 2 == 0,
            "fps": 1 <= self.fps <= 120,
            "sample_rate": self.sample_rate in (16000, 22050, 44100, 48000),
            "clips_per_group": self.clips_per_group >= 1,
            "crf": 0 <= self.crf <= 51,
            "heldout_per_class": self.heldout_per_class >= 0,
        }
        ranges = {
            "heldout_per_class": ">= 0",
            "duration": "in [0.5, 600] s",
            "size": "an even number in [32, 1024]",
            "fps": "in [1, 120]",
            "sample_rate": "one of 16000, 22050, 44100, 48000",
            "crf": "in [0, 51]",
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(key, f"got {getattr(self, key)!r}, expected {ranges.get(key, '>= 1')}")


# ----------------------------------------------------------------------------------- class design
def class_name(label: int) -> str:
    family, tempo = FAMILIES[label % len(FAMILIES)], label // len(FAMILIES)
    return family + (TEMPOS[tempo] if tempo < len(TEMPOS) else f"Tempo{tempo + 1}")


def class_spec(label: int, num_classes: int) -> dict[str, float | str]:
    """The class-determined parameters: trajectory family, tempo, spin, pulse rate, pitch, timbre."""
    tempo = label // len(FAMILIES)
    return {
        "pulse_hz": PULSE_MIN_HZ + (PULSE_MAX_HZ - PULSE_MIN_HZ) * label / max(num_classes - 1, 1),
        "family": FAMILIES[label % len(FAMILIES)],
        "cycles_per_s": 0.4 + 0.3 * tempo,  # trajectory cycles per second
        "spin_rad_s": (1.0 + (label % 3)) * (1 if tempo % 2 == 0 else -1) * math.pi / 2,
        "pitch_hz": 220.0 * 2 ** (2.0 * label / max(num_classes, 1)),  # two octaves over the classes
        "harmonics": 1 + label % 4,
        "decay_s": 0.05 + 0.04 * (label % 3),
    }


def _tri(phase: np.ndarray) -> np.ndarray:
    """Triangle wave in [-1, 1] turning at every multiple of 1/2 (phase in cycles)."""
    return 4 * np.abs(phase - np.floor(phase + 0.5)) - 1


def trajectory(family: str, phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-amplitude (x, y) offsets for trajectory ``family`` at ``phase`` (in cycles)."""
    two_pi = 2 * np.pi * phase
    if family == "HorizontalBounce":
        return _tri(phase), np.zeros_like(phase)
    if family == "VerticalBounce":
        return np.zeros_like(phase), _tri(phase)
    if family == "Circle":
        return np.cos(two_pi), np.sin(two_pi)
    if family == "FigureEight":
        return np.sin(two_pi), 0.5 * np.sin(2 * two_pi)
    if family == "DiagonalBounce":
        return _tri(phase), _tri(phase + 0.25)
    raise ValueError(f"unknown trajectory family {family!r}")


def event_times(phase0: float, cycles_per_s: float, duration: float) -> np.ndarray:
    """Times where the phase crosses a multiple of 1/2: the bounces/turns that trigger sounds."""
    k = np.arange(math.ceil(2 * phase0), math.floor(2 * (phase0 + cycles_per_s * duration)) + 1)
    t = (k / 2 - phase0) / cycles_per_s
    return t[(t >= 0) & (t < duration)]


def light_level(t: np.ndarray, phase0: float, pulse_hz: float, depth: float) -> np.ndarray:
    """Scene brightness factor in [1 - depth, 1]: a raised cosine at ``pulse_hz`` (phase in cycles)."""
    return 1 - depth * 0.5 * (1 - np.cos(2 * np.pi * (phase0 + pulse_hz * t)))


# ----------------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    palette = rng.random((2, 3)) * 255
    a = smooth_noise(rng, size, int(rng.integers(3, 9)))
    b = smooth_noise(rng, size, int(rng.integers(10, 24)))
    mix = (0.7 * a + 0.3 * b)[..., None]
    return palette[0] * (1 - mix) + palette[1] * mix


def render_clip(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Frames ``(T, S, S, 3)`` uint8, mono audio float32, and event times for one clip spec."""
    p = spec["params"]
    size, fps, duration, sr = p["size"], p["fps"], p["duration"], p["sample_rate"]
    cls = class_spec(spec["label"], p["classes"])
    grng = np.random.default_rng([p["seed"], spec["label"], spec["group"], 7])  # shared within a group
    rng = np.random.default_rng([p["seed"], spec["label"], spec["index"]])
    background = _background(grng, size)
    shift = rng.integers(-size // 8, size // 8 + 1, 2)
    background = np.roll(background, tuple(shift), axis=(0, 1))

    n_frames = max(1, round(duration * fps))
    t = np.arange(n_frames) / fps
    phase0 = float(rng.random())
    amp = size * rng.uniform(0.2, 0.3)
    centre = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    dx, dy = trajectory(str(cls["family"]), phase0 + float(cls["cycles_per_s"]) * t)
    xs, ys = centre[0] + amp * dx, centre[1] + amp * dy
    radius = size * rng.uniform(0.08, 0.12)
    colours = rng.random((2, 3)) * 255
    stripe_period = radius * rng.uniform(0.5, 1.0)
    angle0 = rng.uniform(0, 2 * np.pi)

    # distractor: a square on a smooth random walk
    d_size = int(size * rng.uniform(0.1, 0.18))
    steps = rng.normal(0, size * 0.02, (n_frames, 2)).cumsum(0)
    d_pos = (rng.uniform(0.2, 0.8, 2) * size + steps) % (size - d_size)
    d_colour = rng.random(3) * 255
    noise_sigma = rng.uniform(3, 8)
    light = np.ones(n_frames)
    if p.get("light_pulse", False):  # its own stream: every other draw stays as without the pulse
        prng = np.random.default_rng([p["seed"], spec["label"], spec["index"], 99])
        light = light_level(
            t, float(prng.random()), float(cls["pulse_hz"]), float(prng.uniform(*PULSE_DEPTH))
        )

    background = background.astype(np.float32)
    r_box = math.ceil(radius) + 1
    off = np.arange(-r_box, r_box + 1, dtype=np.float32)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for i in range(n_frames):
        img = background.copy()
        dxp, dyp = int(d_pos[i, 0]), int(d_pos[i, 1])
        img[dyp : dyp + d_size, dxp : dxp + d_size] = d_colour
        # the blob, drawn inside its bounding box only (clipped at the frame border)
        cx, cy = round(xs[i]), round(ys[i])
        x0, x1 = max(0, cx - r_box), min(size, cx + r_box + 1)
        y0, y1 = max(0, cy - r_box), min(size, cy + r_box + 1)
        if x0 < x1 and y0 < y1:
            rx = (off[x0 - cx + r_box : x1 - cx + r_box] + cx - xs[i])[None, :]
            ry = (off[y0 - cy + r_box : y1 - cy + r_box] + cy - ys[i])[:, None]
            mask = rx * rx + ry * ry <= radius * radius
            theta = angle0 + float(cls["spin_rad_s"]) * t[i]
            u = rx * np.cos(theta) + ry * np.sin(theta)
            stripe = (np.sin(2 * np.pi * u / stripe_period) > 0)[..., None]
            patch = img[y0:y1, x0:x1]
            patch[:] = np.where(mask[..., None], np.where(stripe, colours[0], colours[1]), patch)
        img *= light[i]
        img += rng.standard_normal(img.shape, dtype=np.float32) * noise_sigma
        np.clip(img, 0, 255, out=img)
        frames[i] = img

    events = event_times(phase0, float(cls["cycles_per_s"]), duration)
    audio = _render_audio(rng, cls, events, duration, sr)
    return frames, audio, [round(float(e), 4) for e in events]


def _render_audio(
    rng: np.random.Generator, cls: dict[str, Any], events: np.ndarray, duration: float, sr: int
) -> np.ndarray:
    n = round(duration * sr)
    t = np.arange(n) / sr
    out = np.zeros(n)
    pitch = float(cls["pitch_hz"]) * rng.uniform(0.97, 1.03)  # small per-clip detune
    burst_n = int(0.25 * sr)
    bt = np.arange(burst_n) / sr
    tone = sum(np.sin(2 * np.pi * pitch * h * bt) / h for h in range(1, int(cls["harmonics"]) + 1))
    burst = tone * np.exp(-bt / float(cls["decay_s"])) * np.minimum(1, bt / 0.005)  # 5 ms attack
    for e in events:
        s = round(e * sr)
        m = min(burst_n, n - s)
        out[s : s + m] += burst[:m]
    out *= rng.uniform(0.3, 0.5) / max(1e-9, np.abs(burst).max())
    hum_f = rng.uniform(80, 1200)
    out += rng.uniform(0.02, 0.06) * np.sin(2 * np.pi * hum_f * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    out += rng.normal(0, rng.uniform(0.005, 0.02), n)
    return np.clip(out, -1, 1).astype(np.float32)


def _make_clip(job: tuple[dict[str, Any], str]) -> list[float]:
    spec, path = job
    frames, audio, events = render_clip(spec)
    p = spec["params"]
    write_mp4(Path(path), frames, p["fps"], p["crf"], audio=audio, sample_rate=p["sample_rate"])
    return events


# ----------------------------------------------------------------------------------- dataset
#: ``test_fold`` of a held-out clip: in every fold's test list, in no training list.
HELDOUT = -1


def fold_of_group(group: int, num_groups: int) -> int | None:
    """0, 1, 2: the fold whose test set holds this group; None: always in train.

    UCF101's rule scaled to ``num_groups``: of 25 groups, groups 1-7, 8-14 and 15-21 are the
    test sets of folds 1, 2, 3 and groups 22-25 are always in train; here blocks of
    ``max(1, round(7 * num_groups / 25))`` groups (with fewer than 3 groups a fold has no test clips).
    """
    block = max(1, round(7 * num_groups / 25))
    k = group // block
    return k if k < 3 else None


def _youtube_id(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_ID_CHARS, 11))


def plan_clips(params: SyntheticAVParams) -> list[dict[str, Any]]:
    """Every clip's record (label, group, folds, file name), without rendering anything.

    ``test_fold`` is the fold whose test list holds the clip (None: always in train; -1: a
    held-out clip, in every fold's test list and no training list).
    """
    num_groups = math.ceil(params.clips_per_class / params.clips_per_group)
    rng = np.random.default_rng([params.seed, 1_000_003])
    used: set[str] = set()

    def record(label: int, index: int, test_fold: int | None) -> dict[str, Any]:
        name = class_name(label)
        ytid = _youtube_id(rng)
        while ytid in used:
            ytid = _youtube_id(rng)
        used.add(ytid)
        start = int(rng.integers(0, 300))
        end = start + max(1, round(params.duration))
        return {
            "path": f"videos/{name}/{ytid}_{start:06d}_{end:06d}.mp4",
            "label": label,
            "class": name,
            "index": index,
            "group": index // params.clips_per_group,
            "test_fold": test_fold,
            "youtube_id": ytid,
            "time_start": start,
            "time_end": end,
        }

    clips = [
        record(label, index, fold_of_group(index // params.clips_per_group, num_groups))
        for label in range(params.classes)
        for index in range(params.clips_per_class)
    ]
    # Drawn after the regular clips, so adding held-out clips changes none of those.
    first = num_groups * params.clips_per_group  # held-out clips start a group of their own
    clips += [
        record(label, first + j, HELDOUT)
        for label in range(params.classes)
        for j in range(params.heldout_per_class)
    ]
    return clips


def empty_splits(params: SyntheticAVParams) -> list[str]:
    """The split files the dataset for ``params`` would write without a single video listed (a fold
    needs at least two scene groups per class: one to test, one to train), in fold order."""
    clips = plan_clips(params)
    empty = []
    for k in range(3):
        if not any(c["test_fold"] not in (k, HELDOUT) for c in clips):
            empty.append(f"splits/trainlist0{k + 1}.txt")
        if not any(c["test_fold"] in (k, HELDOUT) for c in clips):
            empty.append(f"splits/testlist0{k + 1}.txt")
    return empty


def empty_splits_message(params: SyntheticAVParams, empty: list[str]) -> str:
    groups = math.ceil(params.clips_per_class / params.clips_per_group)
    return (
        f"{', '.join(empty)} would list no videos: {params.clips_per_class} clips per class in groups of "
        f"{params.clips_per_group} make {groups} scene group(s) per class, and each fold tests whole groups; "
        "raise --clips-per-class (or lower --clips-per-group)"
    )


def make_synthetic_av(out: str | os.PathLike, workers: int | None = None, **params: Any) -> dict[str, Any]:
    """Write the dataset into ``out`` (created; must not hold a dataset already) and return its info.

    ``workers`` processes render and encode clips in parallel (default: up to 4, at most the
    CPU count); ``workers=1`` runs inline. Output is deterministic in content for a given seed.
    """
    p = SyntheticAVParams(**params)
    p.validate()
    root = Path(out)
    if (root / "dataset.json").exists():
        raise ConfigError(
            "out", f"{root} already holds a dataset (dataset.json); use ensure_synthetic_av or a new folder"
        )
    clips = plan_clips(p)
    empty = empty_splits(p)
    if empty:  # small sets for one fold are legitimate (tests); say which lists stay empty
        warnings.warn(empty_splits_message(p, empty), stacklevel=2)
    for name in {c["class"] for c in clips}:
        (root / "videos" / name).mkdir(parents=True, exist_ok=True)
    pdict = asdict(p)
    jobs = [
        (
            {"params": pdict, "label": c["label"], "group": c["group"], "index": c["index"]},
            str(root / c["path"]),
        )
        for c in clips
    ]
    workers = workers or min(4, os.cpu_count() or 1)
    print(
        f"synth-av: rendering {len(jobs)} clips into {root} ({workers} worker(s))",
        file=sys.stderr,
        flush=True,
    )
    if workers > 1 and len(jobs) > 1:
        with process_pool(workers) as pool:
            results = pool.map(_make_clip, jobs, chunksize=max(1, len(jobs) // (16 * workers)))
            all_events = list(_with_progress(results, len(jobs)))
    else:
        all_events = list(_with_progress(map(_make_clip, jobs), len(jobs)))
    for c, ev in zip(clips, all_events):
        c["events_s"] = ev
    _write_annotations(root, p, clips)
    return json.loads((root / "dataset.json").read_text())


def _with_progress(items: Any, total: int, steps: int = 10) -> Any:
    """Yield ``items``, printing ``k/total clips`` about ``steps`` times (generation takes minutes)."""
    every = max(1, total // steps)
    for done, item in enumerate(items, 1):
        if done % every == 0 or done == total:
            print(f"synth-av: {done}/{total} clips", file=sys.stderr, flush=True)
        yield item


def _write_annotations(root: Path, p: SyntheticAVParams, clips: list[dict[str, Any]]) -> None:
    names = [class_name(i) for i in range(p.classes)]
    with open(root / "kinetics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for c in clips:
            w.writerow(
                [
                    c["class"],
                    c["youtube_id"],
                    c["time_start"],
                    c["time_end"],
                    "val" if c["test_fold"] in (0, HELDOUT) else "train",
                ]
            )
    splits = root / "splits"
    splits.mkdir(exist_ok=True)
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    counts: dict[str, Any] = {
        "clips": len(clips),
        "per_class": p.clips_per_class,
        "heldout_per_class": p.heldout_per_class,
        "train": [],
        "test": [],
    }
    for k in range(3):
        rel = [(c, c["path"].removeprefix("videos/")) for c in clips]
        train = [f"{r} {c['label'] + 1}\n" for c, r in rel if c["test_fold"] not in (k, HELDOUT)]
        test = [f"{r}\n" for c, r in rel if c["test_fold"] in (k, HELDOUT)]
        (splits / f"trainlist0{k + 1}.txt").write_text("".join(train))
        (splits / f"testlist0{k + 1}.txt").write_text("".join(test))
        counts["train"].append(len(train))
        counts["test"].append(len(test))
    info = {
        "format": FORMAT,
        "version": VERSION,
        "params": asdict(p),
        "seed": p.seed,
        "classes": names,
        "class_specs": [class_spec(i, p.classes) for i in range(p.classes)],
        "counts": counts,
        "videos_root": "videos",
        "clips": clips,
    }
    # written last: its presence means the folder is complete
    atomic_write_text(root / "dataset.json", json.dumps(info, indent=1))


def ensure_synthetic_av(root: str | os.PathLike, workers: int | None = None, **params: Any) -> Path:
    """Return ``root`` holding the dataset for ``params``, generating it only when needed.

    Skips generation when ``root/dataset.json`` exists with the same parameters and version;
    otherwise removes this generator's previous outputs (videos/, splits/, kinetics.csv,
    dataset.json) and writes the dataset anew. A twin process asking at the same time waits for the
    first one's dataset instead of writing into the same folder.
    """
    root = Path(root)
    p = SyntheticAVParams(**params)
    with generation_lock(root):
        return _ensure_synthetic_av(root, p, workers)


def _ensure_synthetic_av(root: Path, p: SyntheticAVParams, workers: int | None) -> Path:
    marker = root / "dataset.json"
    if marker.exists():
        try:
            info = json.loads(marker.read_text())
            if (
                info.get("format") == FORMAT
                and info.get("version") == VERSION
                and info.get("params") == asdict(p)
            ):
                return root
        except (json.JSONDecodeError, OSError):
            pass
        for sub in ("videos", "splits"):
            shutil.rmtree(root / sub, ignore_errors=True)
        for f in ("kinetics.csv", "dataset.json"):
            (root / f).unlink(missing_ok=True)
    make_synthetic_av(root, workers=workers, **asdict(p))
    return root


__all__ = [
    "HELDOUT",
    "SyntheticAVParams",
    "class_name",
    "class_spec",
    "empty_splits",
    "empty_splits_message",
    "ensure_synthetic_av",
    "event_times",
    "fold_of_group",
    "light_level",
    "make_synthetic_av",
    "plan_clips",
    "render_clip",
    "trajectory",
]
