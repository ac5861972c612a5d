"""``xmkd pipeline distill-detection`` (``make distill-detection``): the Augmented-RGB comparison table.

On a synthetic untrimmed world (``--world``, default ``motion``; generated when missing) it trains,
for each seed, the RGB-only and auxiliary(flow)-only detectors, the two-stream teacher, the
Augmented-RGB student with the paper's three terms, the student with each term alone, the student
with each baseline distillation of the paper's table, and the student with XKD's per-step MMD and
DINO terms, alone and added to the paper's three (the cross-method recipe); students of seed s
distil from the teacher of seed s. On the ``motion`` world it also trains RGB only on 10x the
training videos (the same world with more of them, the same test videos), and reports the world's three preconditions
before any distillation result: (a) the information is in RGB (RGB only with 10x the videos reaches
at least 80 % of the teacher), (b) it is hard at the default budget (RGB only at most 60 % of the
teacher), (c) the teacher is well ahead of RGB only. Each row also gets the fraction of the gap
between RGB only and the teacher that it closes. Every training is a
regular run of the synthetic YAMLs in ``experiments/detection/`` through ``run_lightning_cli`` (in
this process), so each keeps its run folder (resolved config, checkpoints, metrics.csv,
results.json) under ``runs/distill-detection/<row>-seed<s>/version_N``.

No choice looks at the test split: a validation split is carved from the training videos
(``--val-fraction``); it drives ReduceLROnPlateau and picks the best checkpoint, which is then
scored once on the test split (per-frame mAP and the Charades 25-point mAP). The table (mean and
sample std over seeds) goes to stdout, ``runs/distill-detection/results.json`` and ``table.md``,
with the student's per-video inference time and parameter count against the teacher's, measured
in the same run (median over the test videos, batch 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmkd.data.datasets.untrimmed import UntrimmedVideoDataModule
from xmkd.data.synthetic.untrimmed import ensure_synthetic_untrimmed
from xmkd.errors import ConfigError
from xmkd.metrics.detection import CharadesLocalizationMAP, PerFrameMAP
from xmkd.modules.detection import AugmentedRGBStudent, SingleStreamDetector, TwoStreamTeacher
from xmkd.pipelines.report import markdown_lines
from xmkd.pipelines.seeds import detection_table_row, mean_std, parse_seeds, pm
from xmkd.runner import run_lightning_cli
from xmkd.runs import atomic_write_text, list_versions, update_results, write_json

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "detection"
PIPELINE_DIR = "distill-detection"


@dataclass(frozen=True)
class Row:
    """One line of the table: which config trains it and with which overrides."""

    name: str
    label: str
    config: str
    distill: Mapping[str, float] | None = None  # students only: the terms and weights
    options: Mapping[str, Any] = field(default_factory=dict)  # students only: distill_options
    data_scale: int = 1  # training videos, as a multiple of the world's (precondition a)

    @property
    def is_student(self) -> bool:
        return self.distill is not None


#: Preconditions of a world that tests Augmented-RGB (the issue's (a)-(c)), as fractions of the teacher.
INFORMATION_PRESENT = 0.8  # (a) RGB only on 10x the videos reaches >= this of the teacher
HARD_AT_BUDGET = 0.6  # (b) RGB only at the default budget stays <= this of the teacher
#: The Augmented-RGB student's target: close this fraction of the RGB-to-teacher gap, with a gain
#: over RGB only larger than NOISE_FACTOR x the larger of the two rows' seed standard deviations.
TARGET_GAP_CLOSED = 0.3
NOISE_FACTOR = 2.0

_TEACHER_CFG = "teacher-rgbflow_pdan_synthetic.yaml"
_STUDENT_CFG = "augrgb-flow_pdan_synthetic.yaml"
_BASELINES = ("logit_kd", "fitnets", "mars", "at", "sp", "crd", "rkd")
#: XKD's ingredients as per-step terms (xmkd.distill.detection_xkd_terms)
_XKD_TERMS = ("mmd", "dino")
_STUDENT_XKD_CFG = "augrgb-flow-xkd_pdan_synthetic.yaml"

ROWS: dict[str, Row] = {
    r.name: r
    for r in [
        Row("rgb", "RGB only", "rgb_pdan_synthetic.yaml"),
        Row("rgb10x", "RGB only, 10x the training videos", "rgb_pdan_synthetic.yaml", data_scale=10),
        Row("aux", "flow only (auxiliary)", "flow_pdan_synthetic.yaml"),
        Row("teacher", "two-stream teacher (RGB + flow)", _TEACHER_CFG),
        Row(
            "student",
            "Augmented-RGB student (atomic + gcr + abs)",
            _STUDENT_CFG,
            {"atomic": 1, "gcr": 1, "abs": 1},
        ),
        *[Row(t, f"student, {t} only", _STUDENT_CFG, {t: 1.0}) for t in ("atomic", "gcr", "abs")],
        *[Row(t, f"student, baseline {t}", _STUDENT_CFG, {t: 1.0}) for t in _BASELINES],
        *[Row(t, f"student, XKD's {t} only", _STUDENT_CFG, {t: 1.0}) for t in _XKD_TERMS],
        Row(
            "student+xkd",
            "student + XKD's terms (atomic + gcr + abs + mmd + dino)",
            _STUDENT_XKD_CFG,
            {"atomic": 1, "gcr": 1, "abs": 1, "mmd": 1, "dino": 1},
        ),
    ]
}


# ------------------------------------------------------------------------------------ pure helpers
def parse_rows(text: str | None) -> list[str]:
    """Row names in table order; ``None``/``all`` = every row. A student row pulls in ``teacher``."""
    if text is None or text.strip() in ("", "all"):
        return list(ROWS)
    asked = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in asked if t not in ROWS]
    if unknown:
        raise ConfigError("--rows", f"unknown row(s) {unknown}; known: {', '.join(ROWS)}")
    if any(ROWS[t].is_student for t in asked):
        asked.append("teacher")
    return [name for name in ROWS if name in asked]


def carve_validation(
    entries: Mapping[str, Mapping[str, Any]], fraction: float, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """PDAN-style annotations with a ``fraction`` of the ``training`` videos moved to ``validation``.

    Deterministic given ``seed``; test videos are never touched, so nothing tuned on the
    validation split has seen the test split. At least one video stays on each side.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError("--val-fraction", f"must be in (0, 1), got {fraction}")
    train_ids = sorted(v for v, e in entries.items() if e.get("subset") == "training")
    if len(train_ids) < 2:
        raise ConfigError(
            "--val-fraction", f"need >= 2 training videos to carve a validation split, got {len(train_ids)}"
        )
    n_val = min(len(train_ids) - 1, max(1, round(fraction * len(train_ids))))
    rng = np.random.default_rng(seed)
    val_ids = {train_ids[i] for i in rng.choice(len(train_ids), size=n_val, replace=False)}
    return {
        vid: {**entry, "subset": "validation"} if vid in val_ids else dict(entry)
        for vid, entry in entries.items()
    }


TABLE_METRIC = "test per-frame mAP (best validation checkpoint)"


def summarize_row(row: Row, per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """One ``results.json`` entry from the per-seed test metrics of a row."""
    seeds = sorted(per_seed)
    maps = [per_seed[s]["map"] for s in seeds]
    maps25 = [per_seed[s]["map_25"] for s in seeds]
    map_mean, map_std = mean_std(maps)
    m25_mean, m25_std = mean_std(maps25)
    return {
        "name": row.name,
        "label": row.label,
        "map_mean": map_mean,
        "map_std": map_std,
        "seeds": maps,
        "map_25_mean": m25_mean,
        "map_25_std": m25_std,
        "map_25_seeds": maps25,
        "seed_ids": seeds,
        "distill": dict(row.distill) if row.distill is not None else None,
    }


def gap_closed(value: float, rgb: float, teacher: float) -> float | None:
    """Fraction of the RGB-only-to-teacher gap that ``value`` closes (None without a gap)."""
    gap = teacher - rgb
    return (value - rgb) / gap if gap > 0 else None


def preconditions(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The world's preconditions from the table's rows (those whose rows are present):
    (a) ``rgb10x`` / teacher >= INFORMATION_PRESENT, (b) ``rgb`` / teacher <= HARD_AT_BUDGET,
    (c) the teacher's lead over RGB only and over the auxiliary stream (in mAP points)."""
    by = {e["name"]: e["map_mean"] for e in entries}
    out: list[dict[str, Any]] = []
    teacher = by.get("teacher")
    if teacher is None or teacher <= 0:
        return out
    if "rgb10x" in by:
        ratio = by["rgb10x"] / teacher
        out.append(
            {"name": "a", "what": f"information is in RGB: RGB only on 10x the videos / teacher >= {INFORMATION_PRESENT}",
             "value": ratio, "holds": ratio >= INFORMATION_PRESENT}
        )  # fmt: skip
    if "rgb" in by:
        ratio = by["rgb"] / teacher
        out.append(
            {"name": "b", "what": f"hard at the default budget: RGB only / teacher <= {HARD_AT_BUDGET}",
             "value": ratio, "holds": ratio <= HARD_AT_BUDGET}
        )  # fmt: skip
        lead = teacher - by["rgb"]
        aux = f"; over flow only {100 * (teacher - by['aux']):+.1f}" if "aux" in by else ""
        out.append(
            {"name": "c", "what": f"the teacher is well ahead of RGB only (points{aux})",
             "value": lead, "holds": lead > 0.1}
        )  # fmt: skip
    return out


def student_verdict(entries: Sequence[Mapping[str, Any]], name: str = "student") -> dict[str, Any] | None:
    """Does row ``name`` meet the target? Its gap closed >= TARGET_GAP_CLOSED and its gain over RGB
    only > NOISE_FACTOR x the larger seed std of the two rows (needs >= 2 seeds)."""
    by = {e["name"]: e for e in entries}
    if not {"rgb", "teacher", name} <= set(by) or by[name]["map_std"] is None:
        return None
    rgb, student, teacher = by["rgb"], by[name], by["teacher"]
    gain = student["map_mean"] - rgb["map_mean"]
    noise = NOISE_FACTOR * max(rgb["map_std"] or 0.0, student["map_std"] or 0.0)
    closed = gap_closed(student["map_mean"], rgb["map_mean"], teacher["map_mean"])
    return {
        "row": name,
        "gain": gain,
        "noise": noise,
        "gap_closed": closed,
        "holds": closed is not None and closed >= TARGET_GAP_CLOSED and gain > noise,
    }


def markdown_table(entries: Sequence[Mapping[str, Any]], cost: Mapping[str, Any] | None = None) -> str:
    """The results as a markdown table (mAP in %), gains against the RGB-only row and the fraction of
    the RGB-to-teacher gap closed where present, the world's preconditions, the student's verdict,
    then the inference-cost table."""
    rgb = next((e for e in entries if e["name"] == "rgb"), None)
    teacher = next((e for e in entries if e["name"] == "teacher"), None)
    cells = []
    for e in entries:
        gain = f"{(e['map_mean'] - rgb['map_mean']) * 100:+.1f}" if rgb is not None and e is not rgb else ""
        closed = ""
        if rgb is not None and teacher is not None and e is not rgb:
            frac = gap_closed(e["map_mean"], rgb["map_mean"], teacher["map_mean"])
            closed = f"{100 * frac:.0f} %" if frac is not None else ""
        seeds = ", ".join(f"{v * 100:.1f}" for v in e["seeds"])
        cells.append(
            [
                e["label"],
                pm(e["map_mean"], e["map_std"]),
                pm(e["map_25_mean"], e["map_25_std"]),
                gain,
                closed,
                seeds,
            ]
        )
    header = ["row", "per-frame mAP (%)", "Charades 25-pt mAP (%)", "vs RGB only", "gap closed", "seeds"]
    lines = markdown_lines(header, cells)
    checks = preconditions(entries)
    if checks:
        measured = [
            [
                f"({c['name']}) {c['what']}",
                f"{100 * c['value']:.1f} points" if c["name"] == "c" else f"{c['value']:.2f}",
                "yes" if c["holds"] else "NO",
            ]
            for c in checks
        ]
        lines += ["", *markdown_lines(["precondition of the world", "measured", "holds"], measured)]
    verdict = student_verdict(entries)
    if verdict is not None:
        closed = verdict["gap_closed"]
        lines += [
            "",
            f"Augmented-RGB student: gain {100 * verdict['gain']:+.1f} points over RGB only "
            f"({NOISE_FACTOR:g} x the larger seed std: {100 * verdict['noise']:.1f}), "
            f"{'n/a' if closed is None else f'{100 * closed:.0f} %'} of the gap to the teacher closed "
            f"(target {100 * TARGET_GAP_CLOSED:.0f} %): {'met' if verdict['holds'] else 'NOT met'}.",
        ]
    if cost:
        header = ["inference (RGB student vs two-stream teacher)", "student", "teacher", "ratio"]
        figures = [
            [
                "parameters",
                f"{cost['student_params']:,}",
                f"{cost['teacher_params']:,}",
                f"{cost['student_params'] / cost['teacher_params']:.2f}",
            ],
            [
                f"median time per video (ms, batch 1, {cost['videos']} videos)",
                f"{cost['student_ms']:.2f}",
                f"{cost['teacher_ms']:.2f}",
                f"{cost['student_ms'] / cost['teacher_ms']:.2f}",
            ],
        ]
        lines += [
            "",
            *markdown_lines(header, figures),
            "",
            "Head time only: the teacher also needs optical flow at test time, which the student does not.",
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- model evaluation
def collect_batches(datamodule: Any) -> list[dict[str, Any]]:
    """The test split's batches, read once and reused for every model."""
    datamodule.setup("test")
    return list(datamodule.test_dataloader())


def evaluate(model: Any, batches: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per-frame mAP and Charades 25-point mAP of ``model`` over ``batches`` (the metrics the
    validation loop logs, computed here directly so the test split never enters a Trainer)."""
    frame, loc = PerFrameMAP(), CharadesLocalizationMAP()
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            probs = model(batch)["logits"].sigmoid()
            frame.update(probs, batch["labels"], batch["mask"])
            loc.update(probs, batch["labels"], batch["mask"])
    return {"map": float(frame.compute()), "map_25": float(loc.compute())}


def inference_parameters(model: Any) -> int:
    """Parameters used at inference: the detection head(s); training-only parts (distillation
    projectors and regressors) are left out."""
    skip = (
        {id(p) for p in getattr(model, "distill_losses", {}).parameters()}
        if hasattr(model, "distill_losses")
        else set()
    )
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def single_video_batches(batches: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each video of ``batches`` as a batch of one, cut to its valid length (no padding)."""
    out = []
    for batch in batches:
        for i in range(len(batch["mask"])):
            n = int(batch["mask"][i].sum())
            out.append(
                {
                    "features": {m: f[i : i + 1, :n] for m, f in batch["features"].items()},
                    "labels": batch["labels"][i : i + 1, :n],
                    "mask": batch["mask"][i : i + 1, :n],
                    "video_id": [batch["video_id"][i]],
                }
            )
    return out


def inference_cost(
    student: Any, teacher: Any, batches: Sequence[Mapping[str, Any]], repeats: int = 3
) -> dict[str, Any]:
    """Median per-video forward time (ms, batch 1; best of ``repeats`` per video, student and
    teacher interleaved so machine noise hits both alike) and inference parameter counts."""
    videos = single_video_batches(batches)
    times: dict[str, list[float]] = {"student": [], "teacher": []}
    models = {"student": student.eval(), "teacher": teacher.eval()}
    with torch.inference_mode():
        for m in models.values():  # warm-up (allocator, lazy init)
            m(videos[0])
        for video in videos:
            for name, m in models.items():
                best = math.inf
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    m(video)
                    best = min(best, time.perf_counter() - t0)
                times[name].append(best * 1000)
    return {
        "student_ms": float(np.median(times["student"])),
        "teacher_ms": float(np.median(times["teacher"])),
        "student_params": inference_parameters(student),
        "teacher_params": inference_parameters(teacher),
        "videos": len(videos),
        "mean_steps": float(np.mean([int(v["mask"].sum()) for v in videos])),
    }


# ---------------------------------------------------------------------------------------- training
def _best_checkpoint(run_dir: Path) -> Path:
    results = json.loads((run_dir / "results.json").read_text())
    best = results.get("best_checkpoint") or results.get("last_checkpoint")
    if not best or not Path(best).is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint written (results.json: {results})")
    return Path(best)


@dataclass(frozen=True)
class WorldData:
    """Where a row's world lives: features, annotations with the carved validation split, and the
    generator options beyond the pipeline's own (``extra_training_videos`` for a scaled world)."""

    feature_root: Path
    annotations: Path
    options: Mapping[str, Any] = field(default_factory=dict)


def train_run(
    row: Row,
    seed: int,
    args: argparse.Namespace,
    world: WorldData,
    teacher_ckpt: Path | None,
) -> tuple[Any, Path, Path]:
    """Fit one row for one seed in this process; returns (model with the best weights, run folder,
    best checkpoint)."""
    annotations = world.annotations
    argv = [
        "fit",
        "--config", str(EXPERIMENTS / row.config),
        "--seed_everything", str(seed),
        "--experiment", f"{row.name}-seed{seed}",
        "--runs_dir", str(Path(args.runs_dir) / PIPELINE_DIR),
        "--trainer.max_epochs", str(args.epochs),
        "--trainer.enable_progress_bar", "false",
        "--model.init_args.plot_videos", str(args.plot_videos),
        "--data.init_args.feature_root", str(world.feature_root),
        "--data.init_args.synthetic_videos", str(args.synthetic_videos),
        "--data.init_args.synthetic_world", args.world,
        "--data.init_args.synthetic_options", json.dumps(dict(world.options)),
        "--data.init_args.annotations", json.dumps([str(annotations)]),
        "--data.init_args.train_subset", "training",
        "--data.init_args.eval_subset", "validation",
    ]  # fmt: skip
    if row.is_student:
        argv += [
            "--model.init_args.teacher_checkpoint", str(teacher_ckpt),
            "--model.init_args.distill", json.dumps(dict(row.distill)),
            "--model.init_args.distill_options", json.dumps(dict(row.options)),
        ]  # fmt: skip
        argv += [o if o.startswith("--") else f"--{o}" for o in args.student_override]
    cli = run_lightning_cli(argv)
    best = _best_checkpoint(cli.run_dir)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    cli.model.load_state_dict(state)
    return cli.model, cli.run_dir, best


def prepare_world(args: argparse.Namespace, scale: int = 1) -> WorldData:
    """Generate the synthetic world if missing (``scale`` > 1: the same world with ``scale`` times its
    training videos, in its own folder); write its annotations with a carved validation split."""
    root = Path(args.feature_root)
    base = ensure_synthetic_untrimmed(
        root, args.world, videos=args.synthetic_videos, classes=12, seed=0, pose=False
    )
    options: dict[str, Any] = {}
    if scale > 1:
        if args.world != "motion":
            raise ConfigError("--rows", f"a row with {scale}x the training videos needs --world motion")
        options = {"extra_training_videos": (scale - 1) * int(base["counts"]["training"])}
        root = root.with_name(f"{root.name}-{scale}x")
        ensure_synthetic_untrimmed(
            root, args.world, videos=args.synthetic_videos, classes=12, seed=0, pose=False, **options
        )
    entries = json.loads((root / "annotations.json").read_text(encoding="utf-8"))
    carved = carve_validation(entries, args.val_fraction, seed=0)
    suffix = f"-{scale}x" if scale > 1 else ""
    out = Path(args.runs_dir) / PIPELINE_DIR / f"annotations_train-val-test{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(carved), encoding="utf-8")
    return WorldData(root, out, options)


def load_test_batches(args: argparse.Namespace) -> list[dict[str, Any]]:
    dm = UntrimmedVideoDataModule(
        format="synthetic",
        synthetic_world=args.world,
        feature_root=str(args.feature_root),
        modalities=["rgb", "flow"],
        eval_subset="testing",
        max_len=None,
        batch_size=16,
        synthetic_videos=args.synthetic_videos,
    )
    return collect_batches(dm)


# --------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", default="3", help="seed count (3 -> 0,1,2) or a list (0,1,2); default 3")
    parser.add_argument(
        "--rows",
        default="all",
        help=f"comma-separated rows (default all): {', '.join(ROWS)}; a student row also trains the teacher",
    )
    parser.add_argument("--epochs", type=int, default=40, help="training epochs of every run (default 40)")
    parser.add_argument("--runs-dir", dest="runs_dir", default="runs", help="root of the run folders")
    parser.add_argument(
        "--world",
        default="motion",
        choices=["motion", "evidence"],
        help="the synthetic world (default motion)",
    )
    parser.add_argument(
        "--feature-root",
        dest="feature_root",
        default=None,
        help="where the synthetic world lives (default data/synth-untrimmed-<world>)",
    )
    parser.add_argument(
        "--synthetic-videos", dest="synthetic_videos", type=int, default=200, help="videos in the world"
    )
    parser.add_argument(
        "--val-fraction",
        dest="val_fraction",
        type=float,
        default=0.15,
        help="fraction of training videos held out for validation (lr schedule, best checkpoint)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the heads are tiny, so thread hand-offs cost more than they "
        "save, several times so on a busy machine)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse every row/seed whose run folder already holds a test score for the same --epochs "
        "(an interrupted table continues where it stopped)",
    )
    parser.add_argument(
        "--plot-videos", dest="plot_videos", type=int, default=0, help="timeline plots per run"
    )
    parser.add_argument(
        "--student-override",
        dest="student_override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="LightningCLI override for every student row, e.g. model.init_args.teacher_embedding=aux",
    )
    parser.add_argument(
        "--wandb",
        default="disabled",
        choices=["disabled", "offline", "online"],
        help="W&B mode of the sub-runs (default disabled: its start-up would dominate these short runs; "
        "each run keeps its CSV log)",
    )


def run(args: argparse.Namespace) -> int:
    rows = parse_rows(args.rows)
    seeds = parse_seeds(str(args.seeds))
    if args.feature_root is None:
        args.feature_root = f"data/synth-untrimmed-{args.world}"
    if args.world != "motion" and args.rows in (None, "", "all"):
        rows = [r for r in rows if ROWS[r].data_scale == 1]  # only the motion world can grow
    if args.epochs < 1:
        raise ConfigError("--epochs", f"must be >= 1, got {args.epochs}")
    threads, wandb_mode = torch.get_num_threads(), os.environ.get("WANDB_MODE")
    torch.set_num_threads(args.threads)
    os.environ["WANDB_MODE"] = args.wandb
    try:
        return _run_table(args, rows, seeds)
    finally:  # a caller in the same process (tests, notebooks) gets its settings back
        torch.set_num_threads(threads)
        if wandb_mode is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = wandb_mode


def finished_run(runs_root: Path, row: str, seed: int, epochs: int) -> dict[str, Any] | None:
    """The newest finished run of ``row``/``seed`` (its results.json has a ``test`` entry and it
    trained ``epochs`` epochs), for ``--resume``; None when there is none."""
    for run_dir in reversed(list_versions(runs_root / PIPELINE_DIR / f"{row}-seed{seed}")):
        path = run_dir / "results.json"
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        test = results.get("test")
        if test and results.get("epoch") == epochs and Path(test.get("checkpoint", "")).is_file():
            return {
                "map": test["map"],
                "map_25": test["map_25"],
                "run_dir": str(run_dir),
                "checkpoint": test["checkpoint"],
            }
    return None


def load_for_inference(row: Row, checkpoint: str | Path) -> Any:
    """A trained model from its checkpoint (a student without its teacher: inference needs none)."""
    cls = (
        AugmentedRGBStudent
        if row.is_student
        else TwoStreamTeacher
        if row.name == "teacher"
        else SingleStreamDetector
    )
    return cls.load_from_checkpoint(checkpoint, map_location="cpu").eval()


def _write_outputs(
    out_dir: Path,
    rows: list[str],
    per_row: Mapping[str, Mapping[int, Mapping[str, Any]]],
    cost: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
    complete: bool,
) -> str:
    entries = []
    for name in rows:
        if per_row[name]:
            e = summarize_row(ROWS[name], per_row[name])
            e["runs"] = [per_row[name][s]["run_dir"] for s in e["seed_ids"]]
            entries.append(e)
    write_json(
        out_dir / "results.json",
        {
            "complete": complete,
            "rows": entries,
            # the schema both detection pipelines share (xmkd.pipelines.seeds.detection_table_row)
            "table": [
                detection_table_row(e["name"], e["label"], e["seed_ids"], e["seeds"], TABLE_METRIC)
                for e in entries
            ],
            "preconditions": preconditions(entries),
            "student_verdict": student_verdict(entries),
            "inference_cost": cost,
            **meta,
        },
    )
    table = markdown_table(entries, cost)
    note = "" if complete else " (INCOMPLETE: still running or interrupted; rerun with --resume)"
    atomic_write_text(
        out_dir / "table.md",
        table + f"\n{len(meta['seeds'])} seed(s), {meta['epochs']} epochs, wall time "
        f"{meta['wall_time_s'] / 60:.1f} min{note}.\n",
    )
    return table


def _run_table(args: argparse.Namespace, rows: list[str], seeds: list[int]) -> int:
    start = time.perf_counter()
    out_dir = Path(args.runs_dir) / PIPELINE_DIR
    worlds = {scale: prepare_world(args, scale) for scale in sorted({ROWS[r].data_scale for r in rows} | {1})}
    annotations = worlds[1].annotations
    batches = load_test_batches(args)
    meta: dict[str, Any] = {
        "world": args.world,
        "seeds": seeds,
        "epochs": args.epochs,
        "threads": args.threads,
        "data": {
            "feature_root": str(args.feature_root),
            "annotations": str(annotations),
            "test_videos": sum(len(b["mask"]) for b in batches),
            "selection": "best val/map on a validation split carved from the training videos; test scored once",
        },
    }
    per_row: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in rows}
    cost_models: dict[str, tuple[str, Any]] = {}  # teacher and first student of the first seed
    ordered = (["teacher"] if "teacher" in rows else []) + [r for r in rows if r != "teacher"]
    total, count = len(seeds) * len(ordered), 0
    for seed in seeds:
        for name in ordered:
            row = ROWS[name]
            count += 1
            t0 = time.perf_counter()
            done = finished_run(Path(args.runs_dir), name, seed, args.epochs) if args.resume else None
            if done is not None:
                per_row[name][seed], model, how = done, None, "reused"
            else:
                teacher_ckpt = Path(per_row["teacher"][seed]["checkpoint"]) if row.is_student else None
                model, run_dir, best = train_run(row, seed, args, worlds[row.data_scale], teacher_ckpt)
                scores = evaluate(model, batches)
                per_row[name][seed] = {**scores, "run_dir": str(run_dir), "checkpoint": str(best)}
                update_results(
                    run_dir / "results.json", {"test": {**scores, "split": "testing", "checkpoint": best}}
                )
                how = f"{time.perf_counter() - t0:.0f} s"
            role = "teacher" if name == "teacher" else "student" if row.is_student else None
            if seed == seeds[0] and role is not None and role not in cost_models:
                if model is None:
                    model = load_for_inference(row, per_row[name][seed]["checkpoint"])
                cost_models[role] = (name, model)
            scores = per_row[name][seed]
            print(
                f"[distill-detection] run {count} of {total}: {name} seed {seed}: test mAP {scores['map'] * 100:.1f}, "
                f"25-pt {scores['map_25'] * 100:.1f} ({how})",
                flush=True,
            )
            meta["wall_time_s"] = time.perf_counter() - start
            _write_outputs(out_dir, rows, per_row, None, meta, complete=False)

    cost = None
    if {"teacher", "student"} <= set(cost_models):
        student_row, student = cost_models["student"]
        cost = {"student_row": student_row, **inference_cost(student, cost_models["teacher"][1], batches)}
    meta["wall_time_s"] = time.perf_counter() - start
    table = _write_outputs(out_dir, rows, per_row, cost, meta, complete=True)
    print(table)
    print(
        f"[distill-detection] wrote {out_dir / 'results.json'} and {out_dir / 'table.md'} "
        f"({meta['wall_time_s'] / 60:.1f} min)"
    )
    return 0
