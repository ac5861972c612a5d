"""The synthetic untrimmed-video worlds, and the ``evidence`` world (the first one) itself.

Two worlds, chosen with ``world``:

- ``motion`` (the default; :mod:`xmkd.data.synthetic.motion`): actions are motions, RGB holds them
  only implicitly, flow explicitly, and the training labels carry boundary jitter and omissions. It
  is built to test Augmented-RGB's premise (see its docstring and the README's preconditions).
- ``evidence`` (this module; :class:`SyntheticUntrimmedParams`): per-step class evidence, weak and
  nuisance-laden in RGB, clean in flow, exact dense labels. On it a teacher adds little that the
  labels do not already give (README).

The ``evidence`` world. Why it exists: Augmented-RGB distils a two-stream (RGB + flow [+ pose]) teacher into an RGB-only
student. To test that end to end in seconds, the world must make the second stream genuinely more
informative than RGB while leaving RGB useful, which real I3D features do for reasons we cannot
control. Here the reasons are explicit:

- Actions: each video has T feature steps (``min_steps``..``max_steps``, ``steps_per_second``
  steps per second, like I3D's one feature per 8 frames at 24 fps); a Poisson number of actions
  (``actions_per_100_steps``) of uniform class and uniform length (``min_action_steps``..
  ``max_action_steps``) start anywhere, so they overlap (multi-label) and some run past the end
  of the video, as in Charades; a fraction ``empty_fraction`` of videos has no action. Times are
  written in seconds with 2 decimals, and the ground truth y (T, C) is computed from the written
  values with the dataset's own rule (:func:`xmkd.data.datasets.untrimmed.frame_labels`).
- RGB (``rgb_dim``): weak, nuisance-laden evidence. Each class has a global direction; each video
  perturbs the directions (``rgb_rotation``: mixing in a per-video random matrix, so the direction
  of a class differs between videos), scales the signal (``rgb_scale_jitter``, log-normal), adds a
  large per-video offset (``rgb_offset``) and a slow random drift (``rgb_drift``), plus white noise
  (``rgb_noise``). x_rgb = s_v * ``rgb_signal`` * y @ W_v + b_v + drift + noise.
- Flow (``flow_dim``): cleaner motion evidence: fixed class signatures (``flow_signal``) with
  small per-video offset and noise (``flow_noise``), plus a boundary transient at each action's
  start (class signature) and end (a shared "stop" signature), a Gaussian pulse of width
  ``boundary_width`` steps and height ``boundary_strength``, which a temporal model uses to place
  boundaries. A fraction ``static_fraction`` of the classes is "static" (holding, sitting): their
  flow signature and boundary transients are scaled by ``static_flow_gain``, so for those classes
  RGB is the better view and RGB + flow beats flow alone, as with real two-stream I3D.
- Pose (``pose_dim``, written with ``pose=True``): intermediate, class signatures with noise
  ``pose_noise``.

Outputs in ``root``: see :mod:`xmkd.data.synthetic.world`. Everything is deterministic given the parameters (seed included); each
video draws from its own stream ``(seed, index)``, the shared class directions from ``seed``.

Measured with the defaults (200 videos, 12 classes, 160 train / 40 test, test per-frame mAP, chance
about 0.06): ridge probe per frame RGB 0.22, flow 0.43, RGB+flow 0.51; ridge probe with +-4 steps
of context RGB 0.48, flow 0.76, RGB+flow 0.83; a 3-layer temporal conv (40 epochs, Adam) RGB 0.24,
flow 0.75, RGB+flow 0.78. RGB is weak but far above chance: room for a cross-modal student.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import uniform_filter1d

from xmkd.data.readers.untrimmed import Segment, frame_labels
from xmkd.data.synthetic.motion import MotionWorldParams, generate_motion_world
from xmkd.data.synthetic.world import FORMAT_VERSION, SyntheticVideo, write_world
from xmkd.errors import ConfigError
from xmkd.locks import generation_lock
from xmkd.metrics.detection import per_frame_map

#: The default world of the generator, the data module and ``make distill-detection``.
DEFAULT_WORLD = "motion"


@dataclass(frozen=True)
class SyntheticUntrimmedParams:
    """Every knob of the synthetic world (see the module docstring for what each does)."""

    videos: int = 200
    classes: int = 12
    seed: int = 0
    pose: bool = False
    min_steps: int = 60
    max_steps: int = 200
    steps_per_second: float = 3.0
    actions_per_100_steps: float = 3.0
    min_action_steps: int = 6
    max_action_steps: int = 50
    empty_fraction: float = 0.03
    test_fraction: float = 0.2
    rgb_dim: int = 64
    rgb_signal: float = 1.0
    rgb_rotation: float = 0.8
    rgb_scale_jitter: float = 0.4
    rgb_offset: float = 1.0
    rgb_drift: float = 0.5
    rgb_noise: float = 1.4
    flow_dim: int = 64
    flow_signal: float = 1.0
    flow_noise: float = 1.0
    flow_offset: float = 0.2
    boundary_strength: float = 2.0
    boundary_width: float = 1.5
    static_fraction: float = 0.25
    static_flow_gain: float = 0.25
    pose_dim: int = 32
    pose_signal: float = 1.0
    pose_noise: float = 0.8

    def validate(self) -> None:
        checks = {
            "videos": self.videos >= 2,
            "classes": self.classes >= 1,
            "min_steps": 2 <= self.min_steps <= self.max_steps,
            "steps_per_second": self.steps_per_second > 0,
            "min_action_steps": 1 <= self.min_action_steps <= self.max_action_steps,
            "empty_fraction": 0 <= self.empty_fraction <= 1,
            "test_fraction": 0 < self.test_fraction < 1,
            "static_fraction": 0 <= self.static_fraction <= 1,
            "rgb_dim": self.rgb_dim >= 1 and self.flow_dim >= 1 and self.pose_dim >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(key, f"invalid synthetic-untrimmed parameter ({getattr(self, key)!r})")


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    m = rng.standard_normal((rows, dim))
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _pulse(num_steps: int, centre: float, width: float) -> np.ndarray:
    t = np.arange(num_steps, dtype=np.float64)
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def generate_world(params: SyntheticUntrimmedParams) -> list[SyntheticVideo]:
    """All videos of the world, in memory (what :func:`make_synthetic_untrimmed` writes)."""
    params.validate()
    p = params
    rng = np.random.default_rng(p.seed)
    c = p.classes
    w_rgb = _unit_rows(rng, c, p.rgb_dim) * np.sqrt(p.rgb_dim) / 4
    w_flow = _unit_rows(rng, c, p.flow_dim) * np.sqrt(p.flow_dim) / 4
    b_start = _unit_rows(rng, c, p.flow_dim) * np.sqrt(p.flow_dim) / 4
    b_stop = _unit_rows(rng, 1, p.flow_dim)[0] * np.sqrt(p.flow_dim) / 4
    w_pose = _unit_rows(rng, c, p.pose_dim) * np.sqrt(p.pose_dim) / 4
    # "static" classes (holding, sitting): little motion, so flow sees them only faintly
    motion_gain = np.ones(c)
    motion_gain[rng.permutation(c)[: round(p.static_fraction * c)]] = p.static_flow_gain
    w_flow = w_flow * motion_gain[:, None]
    n_test = max(1, round(p.videos * p.test_fraction))
    test_ids = set(rng.choice(p.videos, size=n_test, replace=False).tolist())
    videos: list[SyntheticVideo] = []
    for i in range(p.videos):
        vrng = np.random.default_rng([p.seed, i])  # per-video stream: a video does not depend on the count
        t_len = int(vrng.integers(p.min_steps, p.max_steps + 1))
        duration = round(t_len / p.steps_per_second, 2)
        n_actions = (
            0
            if vrng.random() < p.empty_fraction
            else int(vrng.poisson(p.actions_per_100_steps * t_len / 100))
        )
        if n_actions == 0 and p.empty_fraction == 0:
            n_actions = 1
        segments: list[Segment] = []
        for _ in range(n_actions):
            label = int(vrng.integers(c))
            length = int(vrng.integers(p.min_action_steps, p.max_action_steps + 1))
            start = float(vrng.uniform(0, t_len - 1))
            segments.append(
                Segment(
                    label,
                    round(start / p.steps_per_second, 2),
                    round((start + length) / p.steps_per_second, 2),
                )
            )
        y = frame_labels(segments, t_len, duration, c)
        fps = t_len / duration
        # RGB: per-video rotated/scaled class directions, offset, drift, noise
        w_v = w_rgb + p.rgb_rotation * vrng.standard_normal((c, p.rgb_dim)) / 2
        scale = float(np.exp(p.rgb_scale_jitter * vrng.standard_normal()))
        offset = p.rgb_offset * vrng.standard_normal(p.rgb_dim)
        drift = np.cumsum(vrng.standard_normal((t_len, p.rgb_dim)), axis=0) / np.sqrt(t_len) * p.rgb_drift
        rgb = (
            scale * p.rgb_signal * (y @ w_v)
            + offset
            + drift
            + p.rgb_noise * vrng.standard_normal((t_len, p.rgb_dim))
        )
        # flow: fixed class signatures plus boundary transients
        flow = p.flow_signal * (y @ w_flow) + p.flow_offset * vrng.standard_normal(p.flow_dim)
        for seg in segments:
            s_step, e_step = seg.start_s * fps, seg.end_s * fps
            if s_step < t_len:
                gain = p.boundary_strength * motion_gain[seg.label]
                flow += gain * _pulse(t_len, s_step, p.boundary_width)[:, None] * b_start[seg.label]
            if e_step < t_len:
                gain = p.boundary_strength * motion_gain[seg.label]
                flow += gain * _pulse(t_len, e_step, p.boundary_width)[:, None] * b_stop
        flow += p.flow_noise * vrng.standard_normal((t_len, p.flow_dim))
        features = {"rgb": rgb.astype(np.float32), "flow": flow.astype(np.float32)}
        if p.pose:
            pose = p.pose_signal * (y @ w_pose) + p.pose_noise * vrng.standard_normal((t_len, p.pose_dim))
            features["pose"] = pose.astype(np.float32)
        subset = "testing" if i in test_ids else "training"
        videos.append(SyntheticVideo(f"SYN{i:05d}", subset, duration, segments, features, y))
    return videos


#: world name -> (parameter dataclass, generator)
WORLDS: dict[str, tuple[type, Callable[[Any], list[SyntheticVideo]]]] = {
    "motion": (MotionWorldParams, generate_motion_world),
    "evidence": (SyntheticUntrimmedParams, generate_world),
}


def world_params(world: str, **params: Any) -> Any:
    """The parameter dataclass of ``world`` (ConfigError naming the world or the unknown knob)."""
    if world not in WORLDS:
        raise ConfigError("world", f"unknown synthetic world {world!r}; expected one of {sorted(WORLDS)}")
    cls = WORLDS[world][0]
    unknown = sorted(set(params) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(
            "synthetic_options",
            f"the {world!r} world has no parameter(s) {unknown}; it has {sorted(f.name for f in fields(cls))}",
        )
    return cls(**params)


def make_synthetic_untrimmed(root: str | Path, world: str = DEFAULT_WORLD, **params: Any) -> dict[str, Any]:
    """Generate ``world`` into ``root`` (written to a temporary sibling, then renamed, so that an
    interrupted run leaves no half-written dataset). Returns the ``dataset.json`` content."""
    root = Path(root)
    p = world_params(world, **params)
    if root.exists():
        raise ConfigError("out", f"{root} already exists; remove it or choose another folder")
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        info = write_world(WORLDS[world][1](p), p, tmp, world)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def ensure_synthetic_untrimmed(root: str | Path, world: str = DEFAULT_WORLD, **params: Any) -> dict[str, Any]:
    """Generate ``world`` at ``root`` unless it is there with the same parameters.

    A folder with a ``dataset.json`` of another world or other parameters raises ConfigError (never
    overwritten). Two processes that ask for the same world at once (two first runs of a synthetic
    config) generate it once: the second waits for the first, then reads what it wrote.
    """
    root = Path(root)
    with generation_lock(root):
        return _ensure_synthetic_untrimmed(root, world, **params)


def _ensure_synthetic_untrimmed(root: Path, world: str, **params: Any) -> dict[str, Any]:
    wanted = asdict(world_params(world, **params))
    info_path = root / "dataset.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        have_world = info.get("world", "evidence")  # written before there were two worlds
        have = info.get("params", {})
        diff = {k: (have.get(k), v) for k, v in wanted.items() if have.get(k) != v}
        if have_world != world:
            raise ConfigError(
                "feature_root",
                f"{root} holds the {have_world!r} synthetic world, not {world!r}; delete it or choose another folder",
            )
        if diff or info.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                "feature_root",
                f"{root} holds a synthetic world with other parameters {diff} (have, wanted); "
                "delete it or choose another folder",
            )
        return info
    if root.exists() and any(root.iterdir()):
        raise ConfigError("feature_root", f"{root} exists, is not empty and has no dataset.json")
    if root.exists():
        root.rmdir()
    # generation takes seconds to minutes on first use: say what is happening
    print(f"synth-untrimmed: generating the {world!r} world into {root} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    info = make_synthetic_untrimmed(root, world, **params)
    print(f"synth-untrimmed: done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return info


# ------------------------------------------------------------------------------ evidence check (probe)
def ridge_probe_map(
    videos: list[SyntheticVideo], modalities: list[str], context: int = 0, ridge: float = 1000.0
) -> float:
    """Test per-frame mAP of a ridge-regression probe trained on the training videos.

    ``context`` > 0 also feeds the probe the per-video mean-removed features and their means over
    +-``context`` steps: a crude linear temporal model.
    """

    def design(v: SyntheticVideo) -> np.ndarray:
        parts = []
        for m in modalities:
            x = v.features[m].astype(np.float64)
            parts.append(x)
            if context > 0:
                xc = x - x.mean(axis=0, keepdims=True)
                smooth = uniform_filter1d(xc, size=2 * context + 1, axis=0, mode="constant")
                parts += [xc, smooth]
        x = np.concatenate(parts, axis=1)
        return np.concatenate([x, np.ones((len(x), 1))], axis=1)

    train = [v for v in videos if v.subset == "training"]
    test = [v for v in videos if v.subset == "testing"]
    x_tr = np.concatenate([design(v) for v in train])
    y_tr = np.concatenate([v.labels for v in train])
    w = np.linalg.solve(x_tr.T @ x_tr + ridge * np.eye(x_tr.shape[1]), x_tr.T @ y_tr)
    x_te = np.concatenate([design(v) for v in test])
    y_te = np.concatenate([v.labels for v in test])
    return per_frame_map(torch.from_numpy(x_te @ w), torch.from_numpy(y_te)).map
