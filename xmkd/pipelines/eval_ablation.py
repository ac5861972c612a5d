"""``xmkd pipeline eval-ablation``: what pretraining buys downstream, on the synthetic set.

Three video encoders of one architecture (make pretrain-xkd's tiny recipe):

- ``random init``: the architecture as initialised (seeded), never trained;
- ``reconstruction only``: pretrained with the same recipe but ``loss_weights {da: 0, kd: 0, rec: 1}``
  (MAE-style, no distillation, no domain alignment), exported the same way;
- ``XKD``: the full recipe (``runs/pretrain-xkd/encoders/student_video.pt``, trained first if absent,
  or ``--xkd-ckpt``);

each scored under the SVM protocol (:mod:`xmkd.pipelines.linear_eval`) and under fine-tuning
(:mod:`xmkd.pipelines.finetune`, UCF101 recipe), on the same folds. Writes
``runs/eval-ablation/results.json`` and prints a markdown table (mean ± std over folds, video-level
top-1) for the README.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from xmkd.models.vit import build_encoder, save_exported_encoder
from xmkd.pipelines import finetune as ft
from xmkd.pipelines import linear_eval as le
from xmkd.pipelines.pretrain_xkd import fit_argv, pretrain_with_control
from xmkd.pipelines.report import markdown_lines
from xmkd.pipelines.seeds import RECIPE_THREADS
from xmkd.runs import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--xkd-ckpt", default=None, help="full XKD encoder (default: make pretrain-xkd's)")
    parser.add_argument(
        "--rec-ckpt", default=None, help="reconstruction-only encoder (default: pretrain one)"
    )
    parser.add_argument("--pretrain-config", default="experiments/xkd/xkd_tiny_synthetic.yaml")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="override for the rec-only run")
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--train-clips", type=int, default=5, help="SVM: augmented clips per training video")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="default: the recipe YAML's")
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--skip-svm", action="store_true", help="fine-tuning only")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--out", default="runs/eval-ablation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "extra",
        nargs=argparse.REMAINDER,
        help="-- then arguments for every fine-tuning fit, e.g. -- --model.init_args.layer_decay 1.0",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=RECIPE_THREADS,
        help=f"torch threads (default {RECIPE_THREADS}, the recipe's; 0 = torch's; see pretrain-xkd --help)",
    )


def export_random_encoder(like: Path, out: Path, seed: int = 0) -> Path:
    """A freshly initialised encoder with ``like``'s architecture, exported next to the others."""
    torch.manual_seed(seed)
    config = json.loads(like.with_suffix(".json").read_text())
    return save_exported_encoder(build_encoder(config), out)


def pretrain_reconstruction_only(args: argparse.Namespace, out: Path) -> Path:
    """Pretrain with the reconstruction term only and export its encoders under ``out``."""
    overrides = ["model.init_args.loss_weights={da: 0.0, kd: 0.0, rec: 1.0}"]
    argv = fit_argv(
        args.pretrain_config,
        "eval-ablation-rec",
        Path(args.out).parent,
        args.pretrain_epochs,
        None,
        overrides,
    )
    result = pretrain_with_control(argv, export_dir=out)
    return Path(result["encoders"]["student_video"])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def cell(block: dict[str, Any] | None, key: str = "video_top1") -> str:
        if not block or key not in block.get("mean", {}):
            return "-"
        return f"{100 * block['mean'][key]:.1f} ± {100 * block['std'][key]:.1f}"

    header = ["encoder", "SVM video top-1", "SVM clip top-1", "fine-tune video top-1", "fine-tune clip top-1"]
    cells = [
        [
            r["name"],
            cell(r["svm"]),
            cell(r["svm"], "clip_top1"),
            cell(r.get("finetune")),
            cell(r.get("finetune"), "clip_top1"),
        ]
        for r in rows
    ]
    return "\n".join(markdown_lines(header, cells))


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    xkd = Path(args.xkd_ckpt) if args.xkd_ckpt else le.default_encoder("video")
    encoders = {
        "random init": export_random_encoder(
            xkd, out / "encoders" / "random" / "student_video.pt", args.seed
        ),
        "reconstruction only": Path(args.rec_ckpt)
        if args.rec_ckpt
        else pretrain_reconstruction_only(args, out / "encoders" / "rec_only"),
        "XKD": xkd,
    }
    rows: list[dict[str, Any]] = []
    for name, ckpt in encoders.items():
        slug = name.replace(" ", "-")
        svm_args = le.resolve_defaults(le._defaults())
        svm_args.folds, svm_args.train_clips, svm_args.num_workers = (
            args.folds,
            args.train_clips,
            args.num_workers,
        )
        svm_args.c_grid, svm_args.seed = [0.001, 0.01, 0.1, 1.0], args.seed
        row: dict[str, Any] = {
            "name": name,
            "encoder": str(ckpt),
            "svm": None if args.skip_svm else le.evaluate_encoder(svm_args, ckpt),
        }
        if not args.skip_finetune:
            ft_args = argparse.Namespace(
                recipe="ucf101", dataset="synthetic", data=None, splits=None, config=None, folds=args.folds,
                max_epochs=args.finetune_epochs,
            )  # fmt: skip
            extra = [a for a in (args.extra or []) if a != "--"]
            row["finetune"] = ft.finetune_all_folds(ckpt, ft_args, out / f"finetune-{slug}", extra)
        rows.append(row)
        write_json(out / "results.json", {"rows": rows, "partial": True})
    table = markdown_table(rows)
    write_json(
        out / "results.json",
        {
            "rows": rows,
            "folds": args.folds,
            "finetune_args": [a for a in (args.extra or []) if a != "--"],
            "table": table,
            "wall_s": time.perf_counter() - start,
        },
    )
    print("Synthetic set, video-level / clip-level top-1 (mean ± std over folds):\n" + table)
    return 0
