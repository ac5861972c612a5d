"""The ``motion`` world: untrimmed feature sequences where actions are motions, RGB holds them
only implicitly, optical flow explicitly, and the training labels are as imperfect as real ones.

It is built to test the premise of Augmented-RGB (Dai, Das & Bremond, ICCV 2021): RGB features
contain what flow makes explicit, but an RGB-only detector learns it poorly from the labels alone,
and a two-stream teacher can hand it over. The world is defined by its own preconditions, measured by
``make distill-detection`` before any distillation runs (the README's table): the information is
in RGB (an RGB-only detector trained on 10x the videos gets close to the teacher), it is hard to
learn at the default budget (RGB only stays far below the teacher), and the teacher is well ahead
of RGB.

What generates a video (every knob is a field of :class:`MotionWorldParams`):

- **Actors and actions.** ``ceil(classes / 4)`` body parts (or objects) move in a 2-D scene. Class
  ``c`` is motion ``c % 4`` of part ``c // 4``; the motions (:data:`MOTIONS`) are defined by how the
  part moves, never by where it is: ``slide`` (constant velocity), ``swing`` (back and forth along an
  axis, period 5-8 steps), ``circle`` (a turning velocity, period 8-12 steps, either sense) and
  ``shake`` (a fresh random velocity every step). Direction, phase and speed (``speed`` position
  units per step, log-normal jitter 0.25) are drawn per action. Each part alternates idle gaps
  (exponential, mean ``mean_gap_steps``) and actions (``min_action_steps``..``max_action_steps``),
  so different parts act at the same time (multi-label), and an action may run past the end of
  the video (clipped, as in Charades). Idle parts wander (an AR(1) velocity of size ``idle_speed``)
  and the scene (camera) drifts (``scene_speed``), so position alone never tells an action.
- **RGB** (``rgb_dim``): the feature of a clip around each step, made by a fixed random
  one-hidden-layer tanh network (``rgb_hidden`` units, gain ``rgb_nonlinearity``) from where each
  part and the scene are (periodic codes of the positions) and how each part moves (its velocity):
  the motion is in the feature, but entangled non-linearly with position, as a clip feature of I3D's
  RGB stream holds it. On top: an appearance cue of which part is engaged (``rgb_activity_signal``,
  its direction perturbed per video by ``rgb_activity_rotation``: an object in the hand looks
  different in every kitchen), a per-video gain (``rgb_gain_jitter``) and offset (``rgb_offset``),
  and white noise (``rgb_noise``).
- **Flow** (``flow_dim``): the velocities themselves, linearly (the parts' and the camera's),
  plus noise (``flow_noise``). Flow sees motion explicitly but only partly where it is: each part's
  projection is ``flow_part_specificity`` its own and the rest shared by all parts, so flow alone
  confuses which part moves, which RGB's appearance cue knows.
- **Pose** (``pose_dim``, written with ``pose=True``): the parts' positions (periodic codes),
  linearly, plus noise ``pose_noise``: explicit state, motion only by differencing.
- **Labels.** Test videos carry the exact segments. Training videos carry what an annotator would
  write: each boundary moved by N(0, ``label_jitter_steps``) steps and a fraction
  ``label_omission`` of the actions missing (Charades' boundaries are vague and its labels
  incomplete); the exact segments are kept in ``annotations_exact.json`` for analysis.
- **More data.** ``extra_training_videos`` appends that many training videos to the same world
  (the first ``videos`` and the test split are unchanged): precondition (a), "is the information
  there?", trains RGB only on 10x the training videos and scores it on the same test videos.

Steps are written as seconds with 2 decimals; the ground truth is what the dataset's labelling rule
(:func:`xmkd.data.datasets.untrimmed.frame_labels`) gives from the written segments, and a segment's
positive steps are exactly the steps at which its part performs the motion. Everything is
deterministic given the parameters: the shared mixing matrices draw from ``seed``, each video from its
own stream ``(seed, index)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xmkd.data.readers.untrimmed import Segment, frame_labels
from xmkd.data.synthetic.world import SyntheticVideo
from xmkd.errors import ConfigError

MOTIONS = ("slide", "swing", "circle", "shake")
#: AR(1) coefficient of an idle part's velocity (a smooth wander).
IDLE_AR = 0.8


@dataclass(frozen=True)
class MotionWorldParams:
    """Every knob of the motion world (see the module docstring for what each does)."""

    videos: int = 200
    classes: int = 12
    seed: int = 0
    pose: bool = False
    min_steps: int = 60
    max_steps: int = 200
    steps_per_second: float = 3.0
    mean_gap_steps: float = 25.0
    min_action_steps: int = 6
    max_action_steps: int = 50
    test_fraction: float = 0.2
    speed: float = 0.3
    idle_speed: float = 0.1
    scene_speed: float = 0.05
    rgb_dim: int = 64
    rgb_hidden: int = 64
    rgb_nonlinearity: float = 2.0
    rgb_activity_signal: float = 1.5
    rgb_activity_rotation: float = 0.3
    rgb_gain_jitter: float = 0.3
    rgb_offset: float = 1.0
    rgb_noise: float = 0.3
    flow_dim: int = 64
    flow_part_specificity: float = 0.5
    flow_noise: float = 0.5
    pose_dim: int = 32
    pose_noise: float = 0.3
    label_jitter_steps: float = 2.0
    label_omission: float = 0.2
    extra_training_videos: int = 0

    @property
    def parts(self) -> int:
        return math.ceil(self.classes / len(MOTIONS))

    def validate(self) -> None:
        checks = {
            "videos": self.videos >= 2,
            "classes": self.classes >= 1,
            "min_steps": 2 <= self.min_steps <= self.max_steps,
            "steps_per_second": self.steps_per_second > 0,
            "min_action_steps": 1 <= self.min_action_steps <= self.max_action_steps,
            "mean_gap_steps": self.mean_gap_steps > 0,
            "test_fraction": 0 < self.test_fraction < 1,
            "speed": self.speed > 0,
            "flow_part_specificity": 0 <= self.flow_part_specificity <= 1,
            "label_omission": 0 <= self.label_omission < 1,
            "label_jitter_steps": self.label_jitter_steps >= 0,
            "extra_training_videos": self.extra_training_videos >= 0,
            "rgb_dim": min(self.rgb_dim, self.rgb_hidden, self.flow_dim, self.pose_dim) >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(key, f"invalid motion-world parameter ({getattr(self, key)!r})")


def motion_velocity(kind: str, num_steps: int, speed: float, rng: np.random.Generator) -> np.ndarray:
    """(num_steps, 2) per-step displacement of one action of motion ``kind`` (see :data:`MOTIONS`)."""
    theta = rng.uniform(0, 2 * np.pi)
    axis = np.array([np.cos(theta), np.sin(theta)])
    t = np.arange(num_steps)
    if kind == "slide":
        return np.tile(axis * speed, (num_steps, 1))
    if kind == "swing":  # position ~ sin: the velocity's amplitude keeps the mean speed near `speed`
        period, phase = rng.uniform(5, 8), rng.uniform(0, 2 * np.pi)
        return (speed * np.pi / 2 * np.cos(2 * np.pi * t / period + phase))[:, None] * axis
    if kind == "circle":
        period = rng.uniform(8, 12) * rng.choice([-1.0, 1.0])
        angle = theta + 2 * np.pi * t / period
        return speed * np.stack([np.cos(angle), np.sin(angle)], 1)
    if kind == "shake":
        return speed * rng.standard_normal((num_steps, 2))
    raise ValueError(f"unknown motion {kind!r}; expected one of {MOTIONS}")


def idle_velocity(num_steps: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """(num_steps, 2) AR(1) wander whose stationary standard deviation is ``size``."""
    shocks = rng.standard_normal((num_steps, 2)) * size * math.sqrt(1 - IDLE_AR**2)
    out = np.empty((num_steps, 2))
    v = np.zeros(2)
    for i in range(num_steps):
        v = IDLE_AR * v + shocks[i]
        out[i] = v
    return out


def periodic_code(positions: np.ndarray) -> np.ndarray:
    """(..., 2) positions -> (..., 4) (cos x, cos y, sin x, sin y): bounded, smooth, any range."""
    return np.concatenate([np.cos(positions), np.sin(positions)], -1)


def _segment(label: int, start_step: float, end_step: float, fps: float) -> Segment:
    """A segment whose positive steps under the labelling rule are ``ceil(start)..ceil(end) - 1``:
    boundaries half a step before the first and after the last step, written in seconds."""
    return Segment(label, round((start_step - 0.5) / fps, 2), round((end_step - 0.5) / fps, 2))


def annotate(
    true_steps: list[tuple[int, int, int]],
    fps: float,
    num_steps: int,
    p: MotionWorldParams,
    rng: np.random.Generator,
) -> list[Segment]:
    """What an annotator writes for actions ``(label, first step, end step)``: boundaries moved by
    N(0, ``label_jitter_steps``), a fraction ``label_omission`` left out, at least one step kept."""
    written = []
    for label, s, e in true_steps:
        omit = rng.random() < p.label_omission
        ds, de = rng.standard_normal(2) * p.label_jitter_steps
        if omit:
            continue
        start = min(max(1.0, s + ds), num_steps - 1.0)
        end = max(start + 1.0, e + de)
        written.append(_segment(label, round(start), round(end), fps))
    return written


@dataclass(frozen=True)
class _Renderers:
    """The world's fixed random maps (shared by every video)."""

    rgb_in: np.ndarray  # (inputs, hidden)
    rgb_bias: np.ndarray  # (hidden,)
    rgb_out: np.ndarray  # (hidden, rgb_dim)
    activity: np.ndarray  # (parts, rgb_dim)
    flow: np.ndarray  # (2 * parts + 2, flow_dim)
    pose: np.ndarray  # (4 * parts, pose_dim)


def _renderers(p: MotionWorldParams, rng: np.random.Generator) -> _Renderers:
    parts = p.parts
    n_in = 4 * (parts + 1) + 2 * parts  # position codes of the parts and the scene, the parts' velocities
    flow = rng.standard_normal((2 * parts + 2, p.flow_dim))
    shared = rng.standard_normal((2, p.flow_dim))
    a = p.flow_part_specificity
    for k in range(parts):
        flow[2 * k : 2 * k + 2] = math.sqrt(1 - a * a) * shared + a * flow[2 * k : 2 * k + 2]
    return _Renderers(
        rgb_in=rng.standard_normal((n_in, p.rgb_hidden)) * p.rgb_nonlinearity / math.sqrt(n_in),
        rgb_bias=rng.standard_normal(p.rgb_hidden) * 0.5,
        rgb_out=rng.standard_normal((p.rgb_hidden, p.rgb_dim)) * 2 / math.sqrt(p.rgb_hidden),
        activity=rng.standard_normal((parts, p.rgb_dim)) / 2,
        flow=flow,
        pose=rng.standard_normal((4 * parts, p.pose_dim)) / 2,
    )


def _schedule(p: MotionWorldParams, num_steps: int, rng: np.random.Generator):
    """Per-part velocities (T, parts, 2) and the actions ``(label, first step, end step)``."""
    velocity = np.zeros((num_steps, p.parts, 2))
    actions: list[tuple[int, int, int]] = []
    for k in range(p.parts):
        velocity[:, k] = idle_velocity(num_steps, p.idle_speed, rng)
        motions = min(len(MOTIONS), p.classes - len(MOTIONS) * k)
        t = 1 + int(rng.exponential(p.mean_gap_steps))  # step 0 can never be positive (start < t / fps)
        while t < num_steps:
            m = int(rng.integers(motions))
            length = int(rng.integers(p.min_action_steps, p.max_action_steps + 1))
            end = min(num_steps, t + length)
            speed = p.speed * math.exp(0.25 * rng.standard_normal())
            velocity[t:end, k] = motion_velocity(MOTIONS[m], end - t, speed, rng)
            actions.append((len(MOTIONS) * k + m, t, t + length))
            t += length + 1 + int(rng.exponential(p.mean_gap_steps))
    return velocity, actions


def generate_motion_world(params: MotionWorldParams) -> list[SyntheticVideo]:
    """All videos of the motion world, in memory (what ``make_synthetic_untrimmed`` writes)."""
    params.validate()
    p = params
    rng = np.random.default_rng(p.seed)
    maps = _renderers(p, rng)
    n_test = max(1, round(p.videos * p.test_fraction))
    test_ids = set(rng.choice(p.videos, size=n_test, replace=False).tolist())
    videos = []
    for i in range(p.videos + p.extra_training_videos):
        vrng = np.random.default_rng([p.seed, i])  # per-video stream: a video does not depend on the count
        t_len = int(vrng.integers(p.min_steps, p.max_steps + 1))
        duration = round(t_len / p.steps_per_second, 2)
        fps = t_len / duration
        velocity, actions = _schedule(p, t_len, vrng)
        scene_velocity = vrng.standard_normal((t_len, 2)) * p.scene_speed
        positions = np.concatenate(
            [
                np.cumsum(velocity, 0) + vrng.uniform(-np.pi, np.pi, (1, p.parts, 2)),
                (np.cumsum(scene_velocity, 0) + vrng.uniform(-np.pi, np.pi, 2))[:, None],
            ],
            1,
        )  # (T, parts + 1, 2)
        # RGB: a random tanh network of where things are and how the parts move
        inputs = np.concatenate(
            [periodic_code(positions).reshape(t_len, -1), velocity.reshape(t_len, -1) / p.speed], 1
        )
        rgb = np.tanh(inputs @ maps.rgb_in + maps.rgb_bias) @ maps.rgb_out
        engaged = np.zeros((t_len, p.parts))
        for label, s, e in actions:
            engaged[s:e, label // len(MOTIONS)] = 1.0
        cue = maps.activity + p.rgb_activity_rotation * vrng.standard_normal(maps.activity.shape) / 2
        rgb = (rgb + p.rgb_activity_signal * engaged @ cue) * math.exp(
            p.rgb_gain_jitter * vrng.standard_normal()
        )
        rgb = rgb + p.rgb_offset * vrng.standard_normal(p.rgb_dim)
        rgb = rgb + p.rgb_noise * vrng.standard_normal((t_len, p.rgb_dim))
        # flow: the velocities, linearly (parts and camera)
        motion = np.concatenate([velocity.reshape(t_len, -1), scene_velocity], 1) / p.speed
        flow = motion @ maps.flow + p.flow_noise * vrng.standard_normal((t_len, p.flow_dim))
        features = {"rgb": rgb.astype(np.float32), "flow": flow.astype(np.float32)}
        if p.pose:
            pose = periodic_code(positions[:, : p.parts]).reshape(t_len, -1) @ maps.pose
            features["pose"] = (pose + p.pose_noise * vrng.standard_normal((t_len, p.pose_dim))).astype(
                np.float32
            )
        exact = [_segment(label, s, e, fps) for label, s, e in actions]
        subset = "testing" if i in test_ids else "training"
        written = exact if subset == "testing" else annotate(actions, fps, t_len, p, vrng)
        labels = frame_labels(written, t_len, duration, p.classes)
        latents = {"velocity": velocity, "scene_velocity": scene_velocity, "positions": positions}
        videos.append(
            SyntheticVideo(
                f"SYN{i:05d}",
                subset,
                duration,
                written,
                features,
                labels,
                true_segments=exact,
                latents=latents,
            )
        )
    return videos


__all__ = [
    "MOTIONS",
    "MotionWorldParams",
    "annotate",
    "generate_motion_world",
    "idle_velocity",
    "motion_velocity",
    "periodic_code",
]
