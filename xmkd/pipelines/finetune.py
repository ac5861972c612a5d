"""``xmkd pipeline finetune``: fine-tune an exported encoder on every official fold; mean and std.

    xmkd pipeline finetune --recipe ucf101                 # synthetic set, make pretrain-xkd's encoder
    xmkd pipeline finetune --recipe hmdb51 --dataset hmdb51 --data hmdb51/ --splits splits/ --ckpt enc.pt

``--recipe`` picks the hyper-parameters: ``experiments/eval/finetune_vitb_<recipe>.yaml`` on real
data (the paper's: UCF101 layer decay 0.45, mixup 0.6 / cutmix 0.5, lr 5e-4; HMDB51 0.75, 1 / 1,
1e-4; RandAugment, random erasing), ``experiments/eval/finetune_tiny_synthetic_<recipe>.yaml`` on the
synthetic set (crop and flip only; see its header), or ``--config``. Each
fold is one ``xmkd fit`` run in ``<out>/fold<k>/version_<n>``; the fold's score is the LAST epoch's
test (= validation) metrics, never the best checkpoint's, since picking the best epoch on the test
split would be selection on test. Writes ``<out>/results.json`` (default ``runs/finetune-<recipe>``).
Extra ``--key value`` arguments after ``--`` go to every fit run (e.g. ``-- --trainer.max_epochs 2``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from xmkd.callbacks import scalar_metrics
from xmkd.data.registry import TRIMMED_DATASETS, trimmed_dataset
from xmkd.errors import ConfigError
from xmkd.pipelines.linear_eval import default_encoder, summarize
from xmkd.pipelines.seeds import RECIPE_THREADS
from xmkd.runner import run_lightning_cli
from xmkd.runs import write_json

REPO_ROOT = Path(__file__).resolve().parents[2]
METRICS = ("video_top1", "clip_top1", "video_top5", "clip_top5")


def fold_datasets() -> tuple[str, ...]:
    """Registered video datasets read from split files (their official folds are what is run)."""
    return tuple(n for n, s in TRIMMED_DATASETS.items() if s.video and s.splits)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", choices=("ucf101", "hmdb51"), default="ucf101")
    parser.add_argument("--dataset", choices=fold_datasets(), default="synthetic")
    parser.add_argument("--data", default=None, help="video root (default: the synthetic set)")
    parser.add_argument("--splits", default=None, help="split files folder")
    parser.add_argument("--ckpt", default=None, help="exported encoder .pt (default: make pretrain-xkd's)")
    parser.add_argument("--config", default=None, help="fit YAML (default: by recipe and dataset)")
    parser.add_argument("--folds", type=int, nargs="+", default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--out", default=None, help="default runs/finetune-<recipe>")
    parser.add_argument(
        "--threads",
        type=int,
        default=RECIPE_THREADS,
        help=f"torch threads (default {RECIPE_THREADS}, the recipe's; 0 = torch's; see pretrain-xkd --help)",
    )
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="-- then overrides for every fit run")


def default_config(recipe: str, dataset: str) -> Path:
    size = "tiny_synthetic" if dataset == "synthetic" else "vitb"
    return REPO_ROOT / "experiments" / "eval" / f"finetune_{size}_{recipe}.yaml"


def encoder_shape(ckpt: Path) -> dict[str, Any]:
    meta = ckpt.with_suffix(".json")
    if not meta.is_file():
        raise ConfigError("ckpt", f"{meta}: architecture JSON next to {ckpt.name} not found")
    return json.loads(meta.read_text())


def fold_argv(
    config: Path, fold: int, ckpt: Path, out: Path, args: argparse.Namespace, extra: list[str]
) -> list[str]:
    """The ``xmkd fit`` arguments of one fold; clip length / crop follow the encoder (or input_size)."""
    cfg = yaml.safe_load(config.read_text())
    input_size = (
        cfg.get("model", {}).get("init_args", {}).get("input_size") or encoder_shape(ckpt)["input_size"]
    )
    argv = [
        "fit", "--config", str(config), "--experiment", f"fold{fold}", "--runs_dir", str(out),
        "--model.init_args.encoder_path", str(ckpt), "--data.init_args.fold", str(fold),
        "--data.init_args.num_frames", str(input_size[0]), "--data.init_args.crop_size", str(input_size[1]),
    ]  # fmt: skip
    if args.dataset != "synthetic" or args.data:
        argv += ["--data.init_args.dataset", args.dataset, "--data.init_args.root", str(args.data)]
        if args.splits:
            argv += ["--data.init_args.splits", str(args.splits)]
    if args.max_epochs:
        argv += [
            "--trainer.max_epochs",
            str(args.max_epochs),
            "--trainer.check_val_every_n_epoch",
            str(args.max_epochs),
        ]
    return argv + extra


def finetune_all_folds(
    ckpt: Path, args: argparse.Namespace, out: Path, extra: list[str] | None = None
) -> dict[str, Any]:
    """Run every fold; per-fold and mean/std metrics (last epoch), the encoder and the run folders."""
    config = Path(args.config) if args.config else default_config(args.recipe, args.dataset)
    if not config.is_file():
        raise ConfigError("config", f"{config} not found")
    folds = args.folds or list(trimmed_dataset(args.dataset).folds)
    per_fold: list[dict[str, Any]] = []
    for k in folds:
        t0 = time.perf_counter()
        cli = run_lightning_cli(fold_argv(config, k, ckpt, out, args, list(extra or [])))
        metrics = scalar_metrics(cli.trainer.callback_metrics)
        missing = [m for m in METRICS if f"val/{m}" not in metrics]
        if missing:
            raise ConfigError(
                "trainer.check_val_every_n_epoch",
                f"fold {k} logged no val/{missing[0]}: validation must run after the last epoch",
            )
        row = {"fold": k, **{m: metrics[f"val/{m}"] for m in METRICS}}
        row.update(
            run_dir=str(cli.run_dir), epochs=cli.trainer.current_epoch, wall_s=time.perf_counter() - t0
        )
        per_fold.append(row)
        print(
            f"finetune {args.recipe} fold {k}: video top-1 {row['video_top1']:.3f}, clip top-1 {row['clip_top1']:.3f}"
        )
    return {
        "recipe": args.recipe,
        "dataset": args.dataset,
        "config": str(config),
        "encoder": str(ckpt),
        "score": "last epoch on the test split (no best-epoch selection on test)",
        "folds": per_fold,
        **summarize(per_fold, METRICS),
    }


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = [a for a in (args.extra or []) if a != "--"]
    if args.dataset != "synthetic" and not args.data:
        raise ConfigError("data", f"--data is required for {args.dataset}")
    ckpt = Path(args.ckpt) if args.ckpt else default_encoder("video")
    out = Path(args.out or f"runs/finetune-{args.recipe}")
    start = time.perf_counter()
    results = finetune_all_folds(ckpt, args, out, extra)
    results["wall_s"] = time.perf_counter() - start
    write_json(out / "results.json", results)
    mean, std = results["mean"], results["std"]
    print(
        f"finetune {args.recipe} on {args.dataset}: video top-1 {mean['video_top1']:.3f} ± {std['video_top1']:.3f}, "
        f"clip top-1 {mean['clip_top1']:.3f} ± {std['clip_top1']:.3f} -> {out / 'results.json'}"
    )
    return 0
