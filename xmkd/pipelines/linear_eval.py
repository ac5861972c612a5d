"""``xmkd pipeline linear-eval``: the linear-SVM protocol on every official fold, mean and std.

    xmkd pipeline linear-eval                                   # synthetic set, make pretrain-xkd's encoder
    xmkd pipeline linear-eval --dataset ucf101 --data UCF-101/ --splits ucfTrainTestlist/ --ckpt enc.pt
    xmkd pipeline linear-eval --config experiments/eval/svm_vitb_esc50.yaml --data ESC-50/ --ckpt audio.pt

Features are extracted once for the union of the folds' videos (UCF101 / HMDB51 folds re-split the
same videos; ESC-50 folds partition them), ``--train-clips`` augmented clips per video and the
multi-view test views, then each fold selects its train / test videos, chooses C by grouped CV on
its training videos only, fits and scores (see :mod:`xmkd.eval.svm`). Writes
``<out>/results.json`` with per-fold and mean/std video-level and clip-level top-1 / top-5 and the
weighted kNN top-1 (k = 20, as solo-learn reports it) on the same features, the encoder, the protocol
settings and timings, and ``<out>/embedding_tsne.png``, a t-SNE map of the test videos by class.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from xmkd.data.datasets import transforms as T
from xmkd.data.datasets.audio_clips import AudioClipDataset
from xmkd.data.datasets.samplers import RandomClipSampler, UniformClipSampler
from xmkd.data.datasets.trimmed import TrimmedVideoDataset, read_trimmed_annotations
from xmkd.data.readers.trimmed import find_existing
from xmkd.data.registry import trimmed_dataset, trimmed_names
from xmkd.errors import ConfigError
from xmkd.eval.knn import knn_top1
from xmkd.eval.svm import DEFAULT_C_GRID, cv_group_map, extract_features, svm_protocol, video_level_scores
from xmkd.metrics.classification import encode_video_ids
from xmkd.models.audio import LogMelSpectrogram
from xmkd.modules.classifier import load_encoder_for_eval
from xmkd.pipelines import pretrain_xkd
from xmkd.runs import write_json
from xmkd.typed_config import load_options
from xmkd.viz import save_embedding_map

SYNTHETIC_DATA = "data/synth-av-xkd"
PRETRAIN_DIR = Path("runs/pretrain-xkd/encoders")
#: The synthetic set of ``make pretrain-xkd`` (experiments/xkd/xkd_tiny_synthetic.yaml).
SYNTHETIC_OPTIONS = {
    "classes": 10,
    "clips_per_class": 24,
    "duration": 4.0,
    "size": 64,
    "fps": 8.0,
    "light_pulse": True,
    "heldout_per_class": 25,
}
HOP_LENGTH, SAMPLE_RATE = 143, 16000


@dataclass(frozen=True)
class LinearEvalOptions:
    """The options of ``xmkd pipeline linear-eval``: command-line flags and the keys of its
    ``--config`` YAML (``experiments/eval/svm_*.yaml``), with their types and defaults."""

    config: str | None = None
    dataset: str = "synthetic"
    data: str | None = None
    splits: str | None = None
    ckpt: str | None = None
    modality: Literal["video", "audio"] | None = None
    folds: list[int] | None = None
    train_clips: int | None = None
    test_clips: int = 3
    test_crops: int | None = None
    fps: float = 8.0
    eval_short_side: int | None = None
    train_augment: Literal["crop-flip", "none"] = "crop-flip"
    c_grid: list[float] | None = None
    cv_folds: int = 3
    normalize: Literal["standard", "l2", "none"] = "standard"
    missing: Literal["error", "skip"] = "error"
    batch_size: int = 32
    num_workers: int = 2
    device: str | None = None
    out: str = "runs/linear-eval"
    seed: int = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LinearEvalOptions()
    parser.add_argument("--config", default=d.config, help="YAML of these options (keys with underscores)")
    parser.add_argument("--dataset", choices=trimmed_names(), default=d.dataset)
    parser.add_argument("--data", default=d.data, help="dataset root (videos; ESC-50: the release folder)")
    parser.add_argument("--splits", default=d.splits, help="split files folder (UCF101 / HMDB51)")
    parser.add_argument(
        "--ckpt", default=d.ckpt, help="exported encoder .pt (default: make pretrain-xkd's student)"
    )
    parser.add_argument(
        "--modality", choices=("video", "audio"), default=d.modality, help="default: the encoder's"
    )
    parser.add_argument("--folds", type=int, nargs="+", default=d.folds, help="default: all official folds")
    parser.add_argument(
        "--train-clips", type=int, default=d.train_clips, help="augmented clips per training video"
    )
    parser.add_argument("--test-clips", type=int, default=d.test_clips)
    parser.add_argument(
        "--test-crops", type=int, default=d.test_crops, help="1 or 3 (default 3; synthetic 1)"
    )
    parser.add_argument("--fps", type=float, default=d.fps, help="frame rate clips are sampled at")
    parser.add_argument("--eval-short-side", type=int, default=d.eval_short_side)
    parser.add_argument("--train-augment", choices=("crop-flip", "none"), default=d.train_augment)
    parser.add_argument("--c-grid", type=float, nargs="+", default=d.c_grid)
    parser.add_argument("--cv-folds", type=int, default=d.cv_folds)
    parser.add_argument("--normalize", choices=("standard", "l2", "none"), default=d.normalize)
    parser.add_argument(
        "--missing",
        choices=("error", "skip"),
        default=d.missing,
        help="listed videos absent on disk: stop naming them (default), or leave them out of every fold",
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--num-workers", type=int, default=d.num_workers)
    parser.add_argument("--device", default=d.device, help="default: cuda if available")
    parser.add_argument("--out", default=d.out)
    parser.add_argument("--seed", type=int, default=d.seed)


def apply_config(
    args: argparse.Namespace, parser_defaults: dict[str, Any] | None = None
) -> argparse.Namespace:
    """Fill options from ``--config`` where the command line left the default; every key is checked
    against :class:`LinearEvalOptions` (an unknown key or a wrong type names the key and file)."""
    if not args.config:
        return args
    for attr, value in load_options(args.config, LinearEvalOptions).items():
        if attr == "dataset":
            trimmed_dataset(value)  # a registered name (the registry is open, so not a Literal)
        if parser_defaults is None or getattr(args, attr) == parser_defaults.get(attr):
            setattr(args, attr, value)
    return args


def default_encoder(modality: str = "video", pretrain_if_missing: bool = True) -> Path:
    """``runs/pretrain-xkd/encoders/student_<modality>.pt``, running ``make pretrain-xkd``'s job if absent."""
    path = PRETRAIN_DIR / f"student_{modality}.pt"
    if not path.is_file() and pretrain_if_missing:
        print(f"xmkd: {path} not found; running `xmkd pipeline pretrain-xkd` first", flush=True)
        parser = argparse.ArgumentParser()
        pretrain_xkd.add_arguments(parser)
        code = pretrain_xkd.run(parser.parse_args([]))
        if code:
            raise ConfigError("ckpt", f"pretrain-xkd failed (exit {code}); pass an encoder with --ckpt")
    if not path.is_file():
        raise ConfigError("ckpt", f"{path} not found; pass an exported encoder with --ckpt")
    return path


def audio_seconds_for(frames: int) -> float:
    """Seconds of 16 kHz audio giving at least ``frames`` XKD spectrogram frames."""
    return math.ceil((frames - 1) * HOP_LENGTH / SAMPLE_RATE * 100 + 1) / 100


# ---------------------------------------------------------------------------- data


def fold_splits(dataset: str, root: str, splits: str | None, folds: list[int]) -> tuple[list[str], dict]:
    """Class names and, per fold, (train records, test records)."""
    out = {}
    names: list[str] = []
    for k in folds:
        names, train, test = read_trimmed_annotations(dataset, root, splits, fold=k)
        out[k] = (train, test)
    return names, out


def drop_missing_videos(per_fold: dict, missing: str) -> tuple[dict, int]:
    """(every fold's lists without the videos absent on disk, how many) for ``missing: skip``; with
    ``error`` the lists as they are (the dataset then names the first absent file)."""
    if missing != "skip":
        return per_fold, 0
    paths = [r.path for r in union_records(per_fold)]
    present = dict(zip(paths, find_existing(paths)))
    absent = [p for p, ok in present.items() if not ok]
    if absent and len(absent) == len(paths):
        raise ConfigError(
            "missing", f"none of the {len(paths)} listed videos is on disk (first: {absent[0]})"
        )
    if absent:
        print(
            f"linear-eval: {len(absent)} of {len(paths)} listed videos are missing on disk and left out of "
            f"every fold; first: {', '.join(absent[:3])}",
            flush=True,
        )
    kept = {
        k: ([r for r in tr if present[r.path]], [r for r in te if present[r.path]])
        for k, (tr, te) in per_fold.items()
    }
    return kept, len(absent)


def union_records(per_fold: dict) -> list:
    seen: dict[str, Any] = {}
    for train, test in per_fold.values():
        for r in [*train, *test]:
            seen.setdefault(r.video_id, r)
    return list(seen.values())


def build_datasets(
    args: argparse.Namespace, records: list, encoder_config: Any, modality: str
) -> tuple[Any, Any, int]:
    """(augmented training clips, multi-view test views, crops per test clip) over ``records``."""
    if modality == "audio":
        seconds = audio_seconds_for(encoder_config.input_size[1])
        if not trimmed_dataset(args.dataset).video:  # audio clips (ESC-50)
            train = AudioClipDataset(records, seconds, args.train_clips, random=True)
            test = AudioClipDataset(records, seconds, args.test_clips, random=False)
            return train, test, 1
        common = dict(
            num_frames=1, fps=args.fps, audio_seconds=seconds, with_audio=True, missing_audio="silence"
        )
        train = TrimmedVideoDataset(records, RandomClipSampler(args.train_clips), **common)
        test = TrimmedVideoDataset(records, UniformClipSampler(args.test_clips), **common)
        return train, test, 1

    frames, size = encoder_config.input_size[0], encoder_config.input_size[1]
    if args.train_augment == "crop-flip":
        # Interpretation: "augmented clips" = random temporal window + random resized crop + flip.
        augment = T.linear_eval_transform(size)
    else:
        augment = T.VideoEvalTransform(size=size, short_side=args.eval_short_side, num_crops=1)
    common = dict(num_frames=frames, fps=args.fps, with_audio=False)
    train = TrimmedVideoDataset(records, RandomClipSampler(args.train_clips), augment, **common)
    crops = args.test_crops
    eval_t = T.VideoEvalTransform(size=size, short_side=args.eval_short_side, num_crops=crops)
    test = TrimmedVideoDataset(
        records, UniformClipSampler(args.test_clips), eval_t, num_crops=crops, **common
    )
    return train, test, crops


def feature_function(encoder: torch.nn.Module, modality: str) -> Any:
    """batch -> (B, D) clip features of the frozen encoder (patch mean after the final norm)."""
    if modality == "video":
        return lambda batch: encoder.patch_mean(batch["video"])

    frames = encoder.config.input_size[1]
    mel = LogMelSpectrogram(n_mels=encoder.config.input_size[0])

    def audio_features(batch: dict[str, Any]) -> torch.Tensor:
        wave = batch["audio"]
        spec = mel.to(wave.device)(wave.float())[..., :frames]
        return encoder.patch_mean(spec)

    return audio_features


# ---------------------------------------------------------------------------- protocol


def summarize(
    folds: list[dict[str, Any]],
    keys: tuple[str, ...] = ("video_top1", "clip_top1", "video_top5", "clip_top5", "knn_top1"),
) -> dict:
    """Mean and (population) std over folds of each metric."""
    out: dict[str, Any] = {"mean": {}, "std": {}}
    for k in keys:
        values = [f[k] for f in folds if f.get(k) is not None]
        if values:
            out["mean"][k] = float(np.mean(values))
            out["std"][k] = float(np.std(values))
    return out


def evaluate_encoder(
    args: argparse.Namespace, encoder_path: Path, figure_dir: Path | None = None
) -> dict[str, Any]:
    """Extract features once, run the SVM protocol on every fold, and the weighted kNN (k = 20,
    cosine, T = 0.07; video level) on the same features; the results dict. ``figure_dir``: also a
    t-SNE map of the test videos (mean of their views), coloured by class (``embedding_tsne.png``)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = load_encoder_for_eval(encoder_path).to(device).eval()
    modality = args.modality or encoder.config.modality
    if modality != encoder.config.modality:
        raise ConfigError(
            "modality", f"{encoder_path} is a {encoder.config.modality} encoder, not {modality}"
        )
    folds = args.folds or list(trimmed_dataset(args.dataset).folds)
    names, per_fold = fold_splits(args.dataset, args.data, args.splits, folds)
    per_fold, missing_videos = drop_missing_videos(per_fold, args.missing)
    records = union_records(per_fold)
    train_set, test_set, crops = build_datasets(args, records, encoder.config, modality)
    feature_fn = feature_function(encoder, modality)
    t0 = time.perf_counter()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        train_feats = extract_features(feature_fn, train_set, device, args.batch_size, args.num_workers)
        t1 = time.perf_counter()
        test_feats = extract_features(
            feature_fn, test_set, device, args.batch_size, args.num_workers, num_crops=crops
        )
    t2 = time.perf_counter()
    groups = cv_group_map(args.dataset, args.data, records)
    if groups:
        train_feats = train_feats.with_cv_groups(groups)
    fold_results = []
    for k in folds:
        train_records, test_records = per_fold[k]
        train = train_feats.of_videos(encode_video_ids([r.video_id for r in train_records]).tolist())
        test = test_feats.of_videos(encode_video_ids([r.video_id for r in test_records]).tolist())
        result = svm_protocol(
            train, test, len(names), tuple(args.c_grid or DEFAULT_C_GRID), args.cv_folds, args.normalize,
            seed=args.seed,
        )  # fmt: skip
        knn = knn_top1(train, test, len(names))
        fold_results.append({"fold": k, **result.as_dict(), "knn_top1": knn})
        print(
            f"linear-eval {args.dataset} fold {k}: video top-1 {result.video_top1:.3f}, clip top-1 "
            f"{result.clip_top1:.3f} (C={result.c:g}), kNN top-1 {knn:.3f}",
            flush=True,
        )
    t3 = time.perf_counter()
    figures = {}
    if figure_dir is not None:
        videos, labels, _ = video_level_scores(test_feats.features, test_feats.labels, test_feats.groups)
        if len(videos) >= 3:
            path = figure_dir / "embedding_tsne.png"
            title = f"{args.dataset} test videos, {encoder_path.name} (t-SNE, seed {args.seed})"
            save_embedding_map({"frozen encoder": videos}, labels, names, path, seed=args.seed, title=title)
            figures["embedding"] = str(path)
    return {
        "dataset": args.dataset,
        "encoder": str(encoder_path),
        "modality": modality,
        "missing_videos_left_out": missing_videos,
        "protocol": {
            "train_clips_per_video": args.train_clips,
            "test_clips": args.test_clips,
            "test_crops": crops,
            "train_augment": args.train_augment,
            "c_grid": list(args.c_grid or DEFAULT_C_GRID),
            "cv_folds": args.cv_folds,
            "normalize": args.normalize,
            "c_selection": "grouped CV on the training videos only"
            + (" (groups: UCF101-style scene groups)" if groups else " (groups: videos)"),
        },
        "folds": fold_results,
        **summarize(fold_results),
        "figures": figures,
        "timing_s": {
            "train_features": t1 - t0,
            "test_features": t2 - t1,
            "svm": t3 - t2,
            "train_clips": len(train_feats),
            "test_views": len(test_feats),
        },
        "device": str(device),
    }


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    spec = trimmed_dataset(args.dataset)
    if args.data is None:
        if spec.prepare is None:
            raise ConfigError("data", f"--data is required for {args.dataset}")
        spec.prepare(SYNTHETIC_DATA, SYNTHETIC_OPTIONS)
        args.data = SYNTHETIC_DATA
    if spec.splits is True and args.splits is None:
        raise ConfigError("splits", f"--splits is required for {args.dataset}")
    if args.train_clips is None:
        args.train_clips = spec.linear_eval_train_clips
    if args.test_crops is None:
        args.test_crops = spec.linear_eval_test_crops
    return args


def run(args: argparse.Namespace) -> int:
    defaults = vars(_defaults())
    args = resolve_defaults(apply_config(args, defaults))
    modality = args.modality or ("video" if trimmed_dataset(args.dataset).video else "audio")
    encoder_path = Path(args.ckpt) if args.ckpt else default_encoder(modality)
    if not encoder_path.is_file():  # named by the option the user typed
        raise ConfigError("ckpt", f"{encoder_path}: exported encoder not found")
    start = time.perf_counter()
    out = Path(args.out)
    results = evaluate_encoder(args, encoder_path, figure_dir=out)
    results["wall_s"] = time.perf_counter() - start
    write_json(out / "results.json", results)
    mean, std = results["mean"], results["std"]
    print(
        f"linear-eval {args.dataset}: video top-1 {mean['video_top1']:.3f} ± {std['video_top1']:.3f}, clip top-1 "
        f"{mean['clip_top1']:.3f} ± {std['clip_top1']:.3f}, kNN top-1 {mean['knn_top1']:.3f} ± {std['knn_top1']:.3f} over folds {[f['fold'] for f in results['folds']]} "
        f"-> {out / 'results.json'}"
    )
    return 0


def _defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([])
