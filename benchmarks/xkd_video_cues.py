"""Which synthetic video cue can the tiny XKD recipe learn on a CPU? The study behind the README's
"XKD on the synthetic audio-visual data" table.

Each row renders the synthetic AV set in memory (the shipped generator, optionally with one extra
video cue; the audio is always the shipped one), trains the tiny recipe
(``experiments/xkd/xkd_tiny_synthetic.yaml``: same losses, XKD augmentations, AdamW with warm-up and
cosine, per-tensor clipping, EMA teachers) with a plain loop, then fits a logistic-regression probe
(C 0.1 and 1) on frozen mean-pooled features of the fold-1 training clips' centre views and scores
the held-out clips, for the trained student and the random initialisation it started from.
``supervised`` rows train the video encoder with labels instead (is the cue learnable at all?).

Cues (added to the shipped clip, drawn from their own random stream, classes 0..K-1):
    motion   the shipped clip: trajectory x tempo of a striped blob (no extra cue)
    pulse    the whole scene's light pulses at 0.5 + 3 k / (K - 1) Hz, depth 0.4-0.6, random phase
    blink    the same rate with a smooth random phase field (regions blink out of step)
    grating  75 % of each frame is a drifting full-frame grating, orientation x period per class

    python benchmarks/xkd_video_cues.py                      # every row (about an hour on 2 cores)
    python benchmarks/xkd_video_cues.py --rows pulse-220 pulse-500 --json out.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from xmkd.data.datasets.transforms import VideoEvalTransform, XKDVideoViews
from xmkd.data.synthetic import av as synthetic_av
from xmkd.data.synthetic.media import smooth_noise
from xmkd.distill.ema import collect_ema_tensors, cosine_momentum, ema_update_tensors_
from xmkd.modules.xkd import MODALITIES, XKDPretrainer
from xmkd.optim import build_adamw, clip_grad_per_tensor_, param_groups_weight_decay, warmup_cosine_factor

RECIPE = Path(__file__).resolve().parents[1] / "experiments" / "xkd" / "xkd_tiny_synthetic.yaml"
CUES = ("motion", "pulse", "blink", "grating")
CLIP_FRAMES, FPS, SAMPLE_RATE, SIZE, BATCH = 16, 8, 16000, 64, 16
#: The README's rows: name -> {cue, steps (220), clips_per_class (24), supervised (False), model
#: (XKDPretrainer overrides of the tiny recipe)}.
ROWS: dict[str, dict[str, Any]] = {
    "motion-220": {"cue": "motion"},
    "grating-220": {"cue": "grating"},
    "pulse-220": {"cue": "pulse"},
    "blink-220": {"cue": "blink"},
    "pulse-500": {"cue": "pulse", "steps": 500},
    "pulse-1000": {"cue": "pulse", "steps": 1000},
    "pulse-60-per-class": {"cue": "pulse", "clips_per_class": 60},
    "pulse-supervised-150": {"cue": "pulse", "steps": 150, "supervised": True, "model": {"lr": 1e-4}},
    "grating-supervised-150": {"cue": "grating", "steps": 150, "supervised": True, "model": {"lr": 3e-4}},
    "pulse-global-teachers-ema0.9": {
        "cue": "pulse",
        "model": {"ema_base_momentum": 0.9, "teacher_view": "global"},
    },
    "pulse-kd-friendly": {
        "cue": "pulse",
        "model": {
            "head_out_dim": 128,
            "loss_weights": {"da": 1.0, "kd": 5.0, "rec": 5.0},
            "audio_teacher_temperature": 0.1,
        },
    },
    "blink-reconstruction-only": {
        "cue": "blink",
        "model": {"loss_weights": {"da": 0.0, "kd": 0.0, "rec": 5.0}},
    },
}


# ------------------------------------------------------------------------------------------- cues
def pulse_rate_hz(label: int, num_classes: int) -> float:
    """The generator's ``light_pulse`` rate (``synthetic_av.class_spec``): 0.5-3.5 Hz over the classes."""
    return float(synthetic_av.class_spec(label, num_classes)["pulse_hz"])


def add_cue(
    frames: np.ndarray, cue: str, label: int, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """``frames`` (T, S, S, 3) uint8 with ``cue`` added (see the module docstring)."""
    if cue not in CUES:
        raise ValueError(f"unknown cue {cue!r}; expected one of {CUES}")
    if cue == "motion":
        return frames
    n, size = frames.shape[:2]
    t = np.arange(n) / FPS
    f = frames.astype(np.float32)
    if cue in ("pulse", "blink"):
        depth = rng.uniform(*synthetic_av.PULSE_DEPTH)
        if cue == "pulse":
            phase = np.full((1, 1), rng.random(), np.float32)
        else:  # 0..2 cycles across the frame, smooth, so neighbouring regions blink nearly together
            phase = smooth_noise(rng, size, int(rng.integers(2, 5))) * 2.0
        light = synthetic_av.light_level(
            t[:, None, None], phase[None], pulse_rate_hz(label, num_classes), depth
        )
        f *= light[..., None]
    else:  # grating: orientation in [0, 90] deg (a flip maps it to 180 - theta) x period
        theta = (0, 30, 60, 90, 0, 30, 60, 90, 15, 75)[label % 10] * math.pi / 180
        period = (6, 6, 6, 6, 12, 12, 12, 12, 9, 9)[label % 10] * size / 64
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        u = xx * math.cos(theta) + yy * math.sin(theta)
        speed, phase0 = rng.uniform(-2, 2), rng.random() * 2 * math.pi
        c0, c1 = rng.random(3) * 255, rng.random(3) * 255
        for i in range(n):
            g = (0.5 + 0.5 * np.sin(2 * math.pi * (u + speed * i) / period + phase0))[..., None]
            f[i] = 0.25 * f[i] + 0.75 * (c0 * (1 - g) + c1 * g)
    return np.clip(f, 0, 255).astype(np.uint8)


def _render(job: tuple[dict[str, Any], str]) -> tuple[np.ndarray, np.ndarray]:
    spec, cue = job
    p = spec["params"]
    frames, audio, _ = synthetic_av.render_clip(spec)
    rng = np.random.default_rng([p["seed"], spec["label"], spec["index"], 99])
    return add_cue(frames, cue, spec["label"], p["classes"], rng), audio


def make_clips(classes: int, clips_per_class: int, cue: str, workers: int) -> dict[str, Tensor]:
    """Every clip of the fold-1 split: video (N, T, S, S, 3) uint8, audio (N, samples), label, is_val."""
    params = synthetic_av.SyntheticAVParams(
        classes=classes, clips_per_class=clips_per_class, duration=4.0, size=SIZE, fps=float(FPS)
    )
    pdict = synthetic_av.asdict(params)
    clips = synthetic_av.plan_clips(params)
    jobs = [
        ({"params": pdict, "label": c["label"], "group": c["group"], "index": c["index"]}, cue) for c in clips
    ]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rendered = list(pool.map(_render, jobs, chunksize=8))
    else:
        rendered = [_render(j) for j in jobs]
    return {
        "video": torch.from_numpy(np.stack([r[0] for r in rendered])),
        "audio": torch.from_numpy(np.stack([r[1] for r in rendered])),
        "label": torch.tensor([c["label"] for c in clips]),
        "is_val": torch.tensor([c["test_fold"] == 0 for c in clips]),
    }


# ------------------------------------------------------------------------------------------- data
class AugmentedClips(torch.utils.data.Dataset):
    """A random 2 s window per item with XKD's global + local video views and the aligned audio."""

    def __init__(self, video: Tensor, audio: Tensor, label: Tensor) -> None:
        self.video, self.audio, self.label = video, audio, label
        self.views = XKDVideoViews(
            num_frames=CLIP_FRAMES, size=SIZE, local_frames=8, local_size=48, num_local_views=1
        )

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        start = int(torch.randint(0, self.video.shape[1] - CLIP_FRAMES + 1, (1,)))
        item = self.views(self.video[i, start : start + CLIP_FRAMES])
        a0 = start * SAMPLE_RATE // FPS
        item["audio"] = self.audio[i, a0 : a0 + CLIP_FRAMES * SAMPLE_RATE // FPS].clone()
        item["label"] = self.label[i]
        return item


def centre_views(video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
    """The evaluation input: each clip's centre 2 s, normalised as in validation."""
    start = (video.shape[1] - CLIP_FRAMES) // 2
    transform = VideoEvalTransform(size=SIZE)
    clips = torch.stack([transform(v[start : start + CLIP_FRAMES]) for v in video])
    a0 = start * SAMPLE_RATE // FPS
    return clips, audio[:, a0 : a0 + CLIP_FRAMES * SAMPLE_RATE // FPS]


@torch.no_grad()
def pooled_features(
    model: XKDPretrainer, encoders: Any, video: Tensor, audio: Tensor, batch: int = 64
) -> dict[str, np.ndarray]:
    feats: dict[str, list[Tensor]] = {m: [] for m in MODALITIES}
    for i in range(0, len(video), batch):
        feats["video"].append(encoders["video"].patch_mean(video[i : i + batch]))
        spec = model.audio_spectrogram(audio[i : i + batch])
        feats["audio"].append(encoders["audio"].patch_mean(spec))
    return {m: torch.cat(x).float().numpy() for m, x in feats.items()}


def logistic_probe(
    train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray
) -> dict[str, float]:
    """Held-out top-1 of a standardised logistic regression, for C 0.1 and 1."""
    scaler = StandardScaler().fit(train)
    out = {}
    for c in (0.1, 1.0):
        clf = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(train), y_train)
        out[f"C={c}"] = float((clf.predict(scaler.transform(test)) == y_test).mean())
    return out


# ------------------------------------------------------------------------------------------- training
def recipe_kwargs(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    model = yaml.safe_load(RECIPE.read_text())["model"]["init_args"]
    model = {k: v for k, v in model.items() if not k.startswith("probe_")}
    model["audio_patch"] = tuple(model["audio_patch"])
    return {**model, **(overrides or {})}


def train(
    model: XKDPretrainer, clips: AugmentedClips, steps: int, supervised: bool, workers: int
) -> tuple[float, dict[str, float]]:
    """The tiny recipe's optimisation for ``steps`` (warm-up 10 %, as 2 of its 20 epochs); seconds, last logs."""
    if len(clips) < BATCH:
        raise ValueError(f"{len(clips)} training clips make no batch of {BATCH} (batches drop the remainder)")
    hp = model.hparams
    params = [(n, p) for n, p in model.named_parameters() if not n.startswith("teacher") and p.requires_grad]
    groups = param_groups_weight_decay(params, hp.weight_decay)
    label_head = None
    if supervised:  # created only here, so XKD rows draw the same random numbers as without it
        label_head = torch.nn.Linear(model.student["video"].config.dim, int(clips.label.max()) + 1)
        groups.append({"params": list(label_head.parameters()), "weight_decay": 0.0})
    optimizer = build_adamw(groups, hp.lr, tuple(hp.betas))
    ema = collect_ema_tensors(model.ema_pairs())
    clipped = model.clipped_parameters()
    loader = torch.utils.data.DataLoader(
        clips,
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    warmup, step, logs, t0 = round(0.1 * steps), 0, {}, time.perf_counter()
    model.train()
    while step < steps:
        for batch in loader:
            if step == steps:
                break
            for g in optimizer.param_groups:
                g["lr"] = hp.lr * warmup_cosine_factor(step, warmup, steps, hp.min_lr_factor)
            video, video_local, spec, spec_local = model._batch_views(batch)
            if label_head is not None:
                logits = label_head(model.student["video"].patch_mean(video))
                loss = torch.nn.functional.cross_entropy(logits, batch["label"])
                step_logs = {"loss/supervised": loss.detach()}
            else:
                out = model.compute_losses(video, video_local, spec, spec_local)
                loss, step_logs = out["loss"], out["logs"]
            loss.backward()
            clip_grad_per_tensor_(clipped, hp.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema_update_tensors_(*ema, cosine_momentum(step, steps, hp.ema_base_momentum, 1.0))
            step += 1
        logs = {k: round(float(v), 3) for k, v in step_logs.items()}
    return time.perf_counter() - t0, logs


def augmented_views(
    dataset: AugmentedClips, per_clip: int, seed: int = 0
) -> tuple[Tensor, Tensor, np.ndarray]:
    """``per_clip`` training views of every clip (random window, XKD global view, aligned audio)."""
    torch.manual_seed(seed)
    items = [dataset[i] for _ in range(per_clip) for i in range(len(dataset))]
    video = torch.stack([it["video"] for it in items])
    audio = torch.stack([it["audio"] for it in items])
    return video, audio, np.array([int(it["label"]) for it in items])


def run_row(
    name: str, row: dict[str, Any], clips: dict[str, Tensor], workers: int, probe_views: int = 0
) -> dict[str, Any]:
    """Train one row and probe it; ``probe_views`` > 0 also fits the probe on that many augmented
    views per training clip (what the online probe sees over a run), scored on the same centre views."""
    torch.manual_seed(0)
    model = XKDPretrainer(**recipe_kwargs(row.get("model")))
    initial = {m: copy.deepcopy(model.student[m]).eval() for m in MODALITIES}
    train_idx, val_idx = ~clips["is_val"], clips["is_val"]
    dataset = AugmentedClips(clips["video"][train_idx], clips["audio"][train_idx], clips["label"][train_idx])
    seconds, logs = train(model, dataset, row.get("steps", 220), row.get("supervised", False), workers)
    model.eval()
    inputs = {
        s: centre_views(clips["video"][idx], clips["audio"][idx])
        for s, idx in (("train", train_idx), ("val", val_idx))
    }
    labels = {s: clips["label"][idx].numpy() for s, idx in (("train", train_idx), ("val", val_idx))}
    result: dict[str, Any] = {"row": name, **row, "train_s": round(seconds, 1), "last_logs": logs}
    for tag, encoders in (("trained", model.student), ("random_init", initial)):
        feats = {s: pooled_features(model, encoders, *inputs[s]) for s in inputs}
        for m in MODALITIES:
            result[f"{tag}_{m}"] = logistic_probe(
                feats["train"][m], labels["train"], feats["val"][m], labels["val"]
            )
        if probe_views > 0:
            video, audio, y = augmented_views(dataset, probe_views)
            train_feats = pooled_features(model, encoders, video, audio)
            for m in MODALITIES:
                result[f"{tag}_{m}_{probe_views}_views"] = logistic_probe(
                    train_feats[m], y, feats["val"][m], labels["val"]
                )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--workers", type=int, default=2, help="render and DataLoader processes")
    parser.add_argument("--json", default=None, help="append one JSON line per row here")
    parser.add_argument(
        "--probe-views",
        type=int,
        default=0,
        help="also fit the probe on this many augmented views per training clip (0: centre views only)",
    )
    args = parser.parse_args(argv)
    cache: dict[tuple[str, int], dict[str, Tensor]] = {}
    for name in args.rows:
        row = ROWS[name]
        key = (row["cue"], row.get("clips_per_class", 24))
        if key not in cache:
            cache[key] = make_clips(10, key[1], key[0], args.workers)
        result = run_row(name, row, cache[key], args.workers, args.probe_views)

        def pct(probe: dict[str, float]) -> str:
            return "-".join(f"{100 * v:.0f}" for v in sorted(probe.values())) + " %"

        print(
            f"{name:<30} {result['train_s']:>6.0f} s  video {pct(result['trained_video']):>9} "
            f"(random init {pct(result['random_init_video'])})  audio {pct(result['trained_audio']):>9} "
            f"(random init {pct(result['random_init_audio'])})",
            flush=True,
        )
        if args.probe_views:
            k = args.probe_views
            print(
                f"{'':<30} probe on {k} augmented views per clip: video {pct(result[f'trained_video_{k}_views'])} "
                f"(random init {pct(result[f'random_init_video_{k}_views'])})  audio "
                f"{pct(result[f'trained_audio_{k}_views'])} (random init {pct(result[f'random_init_audio_{k}_views'])})",
                flush=True,
            )
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
