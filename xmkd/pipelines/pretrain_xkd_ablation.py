"""``xmkd pipeline xkd-ablation`` (``make xkd-ablation``): what each XKD term buys, on the synthetic set.

Pretraining runs of the same recipe (default ``experiments/xkd/xkd_tiny_synthetic.yaml``), the same
seed and data, differing only in ``model.init_args.loss_weights``:

    (a) reconstruction only           {da: 0, kd: 0, rec: 5}
    (b) + domain alignment            {da: 1, kd: 0, rec: 5}
    (c) + cross-modal KD (full XKD)   {da: 1, kd: 1, rec: 5}
    (d) (b) + FitNets, no DINO KD     {da: 1, kd: 0, rec: 5, fitnets: 1}
    (e) (b) + SP, no DINO KD          {da: 1, kd: 0, rec: 5, sp: 1}
    (f) (b) + RKD, no DINO KD         {da: 1, kd: 0, rec: 5, rkd: 1}

(a)-(c) are the paper's ablation (METHODS.md part A: video-only reconstruction vs full XKD; KD
without domain alignment does not help); (d)-(f) put the detection table's KD baselines that apply
to XKD in the place of its DINO KD, cross-modally as XKD distils (``xmkd.distill.xkd_baselines``):
does DINO's soft-target KD beat feature regression and relational KD here? Each run is scored as ``make pretrain-xkd`` scores its run: the final
encoders and their random-init copies, frozen, under the SVM protocol on the validation clips
(:func:`xmkd.pipelines.pretrain_xkd.frozen_svm_probe`; ``--online-probe`` also trains the online
probes); the table and ``runs/xkd-ablation/results.json`` give every figure. With (a) no teacher is
ever run, so its steps are cheaper. ``--epochs`` / ``--max-steps`` shorten every run alike.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from xmkd.pipelines.pretrain_xkd import DEFAULT_CONFIG, RECIPE_THREADS, fit_argv, pretrain_with_control
from xmkd.runs import write_json

#: (name, description, loss weights) of the ablation rows, in the paper's order.
ABLATIONS: list[tuple[str, str, dict[str, float]]] = [
    ("rec", "(a) reconstruction only", {"da": 0.0, "kd": 0.0, "rec": 5.0}),
    ("rec+da", "(b) + domain alignment", {"da": 1.0, "kd": 0.0, "rec": 5.0}),
    ("xkd", "(c) + cross-modal KD (full XKD)", {"da": 1.0, "kd": 1.0, "rec": 5.0}),
    # the detection KD baselines that apply to XKD, each in place of its DINO KD (xmkd.distill.xkd_baselines)
    ("rec+da+fitnets", "(d) (b) + FitNets, no DINO KD", {"da": 1.0, "kd": 0.0, "rec": 5.0, "fitnets": 1.0}),
    ("rec+da+sp", "(e) (b) + SP, no DINO KD", {"da": 1.0, "kd": 0.0, "rec": 5.0, "sp": 1.0}),
    ("rec+da+rkd", "(f) (b) + RKD, no DINO KD", {"da": 1.0, "kd": 0.0, "rec": 5.0, "rkd": 1.0}),
]

__all__ = ["ABLATIONS", "ablation_table", "add_arguments", "run"]


def ablation_table(rows: list[dict[str, Any]], chance: float) -> str:
    """Plain-text table: one line per ablation, SVM top-1 on frozen features (video, audio) and the
    random-init control's, then the online probe's where it ran."""

    def pct(x: float | None) -> str:
        return "   n/a" if x is None else f"{100 * x:5.1f}%"

    header = (
        f"{'ablation':<32} {'video':>7} {'audio':>7} {'rand-v':>7} {'rand-a':>7} "
        f"{'online-v':>8} {'online-a':>8} {'steps':>6} {'fit s':>6}"
    )
    lines = [
        "XKD ablation: SVM on frozen features, top-1 on the validation clips "
        f"(chance {100 * chance:.1f}%; online probe where it ran)"
    ]
    lines += [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['description']:<32} {pct(r.get('svm_top1')):>7} {pct(r.get('svm_audio_top1')):>7} "
            f"{pct(r.get('svm_top1_random_init')):>7} {pct(r.get('svm_audio_top1_random_init')):>7} "
            f"{pct(r.get('probe_top1')):>8} {pct(r.get('probe_audio_top1')):>8} "
            f"{r['steps']:>6} {r['fit_s']:>6.0f}"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment YAML (default: tiny CPU)")
    parser.add_argument("--experiment", default="xkd-ablation", help="results folder under --runs-dir")
    parser.add_argument("--runs-dir", default="runs", help="root of the run folders")
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.max_epochs of every run")
    parser.add_argument("--max-steps", type=int, default=None, help="override trainer.max_steps of every run")
    parser.add_argument(
        "--only", nargs="+", choices=[a[0] for a in ABLATIONS], default=None, help="run a subset of the rows"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=RECIPE_THREADS,
        help=f"torch threads (default {RECIPE_THREADS}, the recipe's; 0 = torch's; see pretrain-xkd --help)",
    )
    parser.add_argument(
        "--online-probe", action="store_true", help="also train the online probes (see pretrain-xkd --help)"
    )
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="extra LightningCLI override"
    )


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.runs_dir) / args.experiment
    rows: list[dict[str, Any]] = []
    for name, description, weights in ABLATIONS:
        if args.only and name not in args.only:
            continue
        probe_off = [] if args.online_probe else ["model.init_args.probe_num_classes=0"]
        overrides = [*probe_off, *args.override, f"model.init_args.loss_weights={json.dumps(weights)}"]
        argv = fit_argv(
            args.config, f"{args.experiment}-{name}", args.runs_dir, args.epochs, args.max_steps, overrides
        )
        result = pretrain_with_control(argv)
        rows.append({"name": name, "description": description, **result})
        write_json(
            out_dir / "results.json", {"rows": rows, "complete": False}
        )  # partial results survive a kill
    chance = rows[0]["chance"] if rows else float("nan")
    summary = {
        "rows": rows,
        "svm_top1": {r["name"]: r.get("svm_top1") for r in rows},
        "svm_top1_random_init": {r["name"]: r.get("svm_top1_random_init") for r in rows},
        "probe_top1": {r["name"]: r["probe_top1"] for r in rows},
        "probe_top1_random_init": {r["name"]: r["probe_top1_random_init"] for r in rows},
        "chance": chance,
        "config": str(args.config),
        "wall_s": time.perf_counter() - t0,
        "complete": True,
    }
    write_json(out_dir / "results.json", summary)
    print(ablation_table(rows, chance))
    return 0
