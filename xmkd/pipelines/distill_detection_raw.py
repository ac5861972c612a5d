"""``xmkd pipeline distill-detection-raw``: the whole Augmented-RGB chain from raw untrimmed video.

Stages (each resumable: a finished stage's outputs are reused on a rerun):

1. raw synthetic untrimmed mp4 videos + Charades CSVs (:mod:`xmkd.data.synthetic.raw_untrimmed`);
2. optical flow per video (:func:`xmkd.data.io.flow.compute_flow_folder`, DIS, native 12 fps);
3. two tiny clip encoders, a 3-channel ViT for RGB and a 2-channel ViT for flow, each trained
   briefly with the XKD/MAE masked reconstruction objective on clips of the TRAINING videos only
   (``XKDPretrainer`` on video alone, distillation and alignment at 0, through the runner: each
   encoder has its run folder ``<out>/encoders-mae/runs/mae-<modality>``); ``--encoder-init random`` uses frozen
   random ViTs instead. Why MAE by default: a few hundred steps cost well under a minute and give
   features that track the picture's content; random ViTs work too (a random projection of the
   input keeps motion evidence in flow) and are the cheaper ablation;
4. sliding-window features for both modalities (:func:`xmkd.features.extract.extract_features_folder`)
   in the untrimmed layout ``<features>/{rgb,flow}/<id>.npy``;
5. the detection table on those features: RGB-only, flow-only, two-stream teacher (RGB + flow,
   logit-mean fusion) and the Augmented-RGB student distilled from that teacher (atomic + GCR +
   ABS, weights 1/1/1), ``--seeds`` seeds each, test per-frame mAP after ``--epochs`` epochs (the
   last epoch, no model selection on the test split).

Smaller than the feature-level table (``distill-detection``) so that the chain fits in 30 minutes
on 2 cores: 40 videos of 8-14 s at 64x64, heads of 64 channels and 3 blocks, 2 seeds, 4 rows (no
distillation baselines). Writes ``runs/distill-detection-raw/results.json`` and ``table.md``.

Stage 5 trains each detector (:mod:`xmkd.modules.detection`) through :func:`xmkd.runner.run_lightning_cli`,
each in its run folder ``<out>/runs/<row>-seed<seed>/version_N`` with its resolved config; the student
reads the teacher run's ``last.ckpt``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmkd.data.datasets.clip_arrays import write_clip_array
from xmkd.data.datasets.untrimmed import UntrimmedVideoDataModule, frame_labels
from xmkd.data.io.flow import compute_flow_folder, read_flow_file
from xmkd.data.readers.untrimmed import read_charades_csv
from xmkd.data.synthetic.raw_untrimmed import ensure_synthetic_raw_untrimmed
from xmkd.errors import ConfigError
from xmkd.features.extract import centre_crop_resize, extract_features_folder, load_input, sample_clips
from xmkd.models.vit import EncoderConfig, build_encoder, save_exported_encoder
from xmkd.pipelines.report import markdown_lines
from xmkd.pipelines.seeds import detection_table_row
from xmkd.runner import run_lightning_cli
from xmkd.runs import last_checkpoint
from xmkd.viz import read_metrics_csv

ROWS = ("rgb", "flow", "teacher", "student")
ROW_NAMES = {
    "rgb": "RGB only",
    "flow": "flow only",
    "teacher": "two-stream teacher (RGB + flow)",
    "student": "Augmented-RGB student (atomic + GCR + ABS)",
}


def encoder_config(in_chans: int, size: int, frames: int, dim: int, depth: int) -> EncoderConfig:
    """The tiny ViT of the raw pipeline: tubelets 2 x 16 x 16."""
    return EncoderConfig("video", (frames, size, size), (2, 16, 16), in_chans, dim, depth, max(1, dim // 32))


def _training_ids(root: Path) -> list[str]:
    with (root / "Charades_v1_train.csv").open(newline="") as f:
        return [row["id"] for row in csv.DictReader(f)]


#: Random training windows cut from each training video for an MAE-only encoder.
MAE_CLIPS_PER_VIDEO = 8
#: The MAE-only clip-encoder recipe (``XKDPretrainer`` on video alone); the rows override its sizes.
MAE_ENCODER_CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "encoders" / "mae_flow_tiny.yaml"


def mae_encoder_argv(
    clips: Path, modality: str, cfg: EncoderConfig, steps: int, seed: int, runs_dir: Path
) -> list[str]:
    """The ``fit`` arguments of one MAE-only clip encoder: :data:`MAE_ENCODER_CONFIG` (reconstruction
    weight only, cosine lr over ``steps`` AdamW steps, gradient norm clipped at 1) with this chain's
    encoder ``cfg`` (3 channels for RGB, 2 for flow), in run ``<runs_dir>/mae-<modality>``."""
    model_args = {
        "video_in_chans": cfg.in_chans, "encoder_dim": cfg.dim, "encoder_depth": cfg.depth,
        "encoder_heads": cfg.num_heads, "num_frames": cfg.input_size[0], "img_size": cfg.input_size[1],
        "tubelet": cfg.patch_size[0], "patch_size": cfg.patch_size[1],
    }  # fmt: skip
    return [
        "fit",
        "--config", str(MAE_ENCODER_CONFIG),
        "--seed_everything", str(seed),
        "--experiment", f"mae-{modality}",
        "--runs_dir", str(runs_dir),
        f"--trainer.max_steps={steps}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *(f"--model.init_args.{k}={v}" for k, v in model_args.items()),
        f"--data.init_args.clips={clips}",
        f"--data.init_args.modality={modality}",
    ]  # fmt: skip


def train_mae_clip_encoder(
    clips: Path, modality: str, cfg: EncoderConfig, steps: int, seed: int, runs_dir: Path, export: Path
) -> dict[str, Any]:
    """Train one MAE-only encoder through the runner (:func:`mae_encoder_argv`), export its student
    video encoder to ``export`` (``.pt`` + ``.json``) and summarise the run's reconstruction loss."""
    cli = run_lightning_cli(mae_encoder_argv(clips, modality, cfg, steps, seed, runs_dir))
    save_exported_encoder(cli.model.student["video"].cpu().eval(), export)
    losses = [v for _, _, v in read_metrics_csv(cli.run_dir / "metrics.csv").get("loss/rec_video", [])]
    return {
        "run": str(cli.run_dir),
        "steps": int(cli.trainer.global_step),
        "loss_first10": float(np.mean(losses[:10])) if losses else None,
        "loss_last10": float(np.mean(losses[-10:])) if losses else None,
    }


def train_encoders(
    data: Path, flow_dir: Path, out: Path, init: str, size: int, frames: int, dim: int, depth: int,
    steps: int, seed: int, modalities: tuple[str, ...] = ("rgb", "flow"),
) -> dict[str, Any]:  # fmt: skip
    """Stage 3: export ``out/rgb.pt`` and ``out/flow.pt`` (skipped when they exist); ``modalities``
    picks a subset (``xkd-to-detection`` brings its own RGB encoders and trains the flow one only).
    ``mae``: :data:`MAE_CLIPS_PER_VIDEO` random windows per training video (``out/<modality>_clips.npy``) train each encoder
    (:func:`train_mae_clip_encoder`); ``random``: frozen random ViTs."""
    paths = {m: out / f"{m}.pt" for m in modalities}
    info_path = out / "encoders.json"
    if all(p.is_file() for p in paths.values()) and info_path.is_file():
        return json.loads(info_path.read_text())
    info: dict[str, Any] = {"init": init}
    ids = _training_ids(data)
    rng = np.random.default_rng(seed)
    for modality, chans in (("rgb", 3), ("flow", 2)):
        if modality not in paths:
            continue
        cfg = encoder_config(chans, size, frames, dim, depth)
        if init == "random":
            torch.manual_seed(seed)
            save_exported_encoder(build_encoder(cfg).eval(), paths[modality])
            continue
        if modality == "rgb":
            inputs = [load_input(data / "videos" / f"{i}.mp4", "rgb", (size, size), None)[0] for i in ids]
        else:
            inputs = [
                centre_crop_resize(read_flow_file(flow_dir / f"{i}.npz").flow, (size, size)) for i in ids
            ]
        windows = sample_clips(inputs, frames, MAE_CLIPS_PER_VIDEO, rng)
        clips = write_clip_array(out / f"{modality}_clips.npy", windows)
        t0 = time.perf_counter()
        run = train_mae_clip_encoder(clips, modality, cfg, steps, seed, out / "runs", paths[modality])
        info[modality] = {"clips": len(windows), **run, "seconds": round(time.perf_counter() - t0, 1)}
    info_path.write_text(json.dumps(info, indent=2))
    return info


#: The LightningModule of each row of the table.
ROW_MODELS = {
    "rgb": "xmkd.modules.detection.SingleStreamDetector",
    "flow": "xmkd.modules.detection.SingleStreamDetector",
    "teacher": "xmkd.modules.detection.TwoStreamTeacher",
    "student": "xmkd.modules.detection.AugmentedRGBStudent",
}


def detection_argv(
    row: str, feature_root: Path, data: Path, runs_dir: Path, seed: int, epochs: int, channels: int,
    blocks: int, lr: float, teacher_checkpoint: Path | None = None,
) -> list[str]:  # fmt: skip
    """The ``fit`` arguments of one detector of the table: its run ``<runs_dir>/<row>-seed<seed>``
    trains ``epochs`` epochs and is scored once, after the last (no model selection)."""
    if row not in ROW_MODELS:
        raise ConfigError("rows", f"unknown row {row!r}; expected one of {ROWS}")
    data_args = {
        "format": "charades_csv",
        "annotations": [str(data / "Charades_v1_train.csv"), str(data / "Charades_v1_test.csv")],
        "classes_file": str(data / "Charades_v1_classes.txt"),
        "feature_root": str(feature_root),
        "modalities": ["rgb", "flow"],
        "max_len": None,
        "batch_size": 8,
    }
    # the heads' input sizes are the features' (read from the folder, as the data module reads them)
    dm = UntrimmedVideoDataModule(**data_args)
    dims = dm.feature_dims
    data_args["num_classes"] = dm.num_classes  # Lightning merges the data's and the model's hparams
    model_args: dict[str, Any] = {
        "num_classes": dm.num_classes, "head": "pdan", "channels": channels, "num_blocks": blocks,
        "dropout": 0.3, "lr": lr, "plot_videos": 0,
    }  # fmt: skip
    if row in ("rgb", "flow"):
        model_args.update(modality=row, input_dim=dims[row])
    elif row == "teacher":
        model_args.update(aux_modality="flow", rgb_dim=dims["rgb"], aux_dim=dims["flow"])
    else:
        if teacher_checkpoint is None:
            raise ConfigError("rows", "the student row needs the teacher row")
        model_args.update(teacher_checkpoint=str(teacher_checkpoint), rgb_dim=dims["rgb"], cache_teacher=True)
    trainer_args = {
        "max_epochs": epochs, "accelerator": "auto", "devices": 1, "enable_progress_bar": False,
        "enable_model_summary": False, "num_sanity_val_steps": 0, "check_val_every_n_epoch": epochs,
        "deterministic": False,
    }  # fmt: skip
    return [
        "fit",
        "--seed_everything", str(seed),
        "--experiment", f"{row}-seed{seed}",
        "--runs_dir", str(runs_dir),
        "--model", json.dumps({"class_path": ROW_MODELS[row], "init_args": model_args}),
        "--data", json.dumps({"class_path": f"{UntrimmedVideoDataModule.__module__}.UntrimmedVideoDataModule", "init_args": data_args}),
        *(f"--trainer.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in trainer_args.items()),
    ]  # fmt: skip


def detection_row(argv: list[str]) -> tuple[float, Path]:
    """Train one detector of the table through the runner (its own run folder and resolved config);
    return (test per-frame mAP after the last epoch, the run's ``last.ckpt``)."""
    cli = run_lightning_cli(argv)
    result = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    last = last_checkpoint(cli.run_dir)
    if last is None:
        raise FileNotFoundError(f"{cli.run_dir}: no last.ckpt written")
    return float(result["val/map"]), last


def table_rows(per_row: dict[str, list[float]]) -> list[dict[str, Any]]:
    """``results.json``'s ``table``: the rows in the schema both detection pipelines share
    (:func:`xmkd.pipelines.seeds.detection_table_row`); seeds are 0..n-1."""
    return [
        detection_table_row(r, ROW_NAMES.get(r, r), list(range(len(v))), v, "test per-frame mAP (last epoch)")
        for r, v in per_row.items()
    ]


def format_table(results: dict[str, Any]) -> str:
    """Markdown table: one line per row, mean +- std over seeds of the test per-frame mAP."""
    lines = markdown_lines(
        ["model", "test per-frame mAP (mean ± std over seeds)", "seeds"],
        [
            [
                ROW_NAMES.get(row, row),
                f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}",
                str(len(r["per_seed"])),
            ]
            for row, r in results["rows"].items()
        ],
    )
    lines.append("")
    lines.append(f"chance (mean positive rate over classes): {100 * results['chance_map']:.1f}")
    return "\n".join(lines) + "\n"


def chance_map(data: Path) -> float:
    """Per-frame mAP of constant scores = mean over classes of the positive fraction of test steps
    (1 step per 1/3 s), a reference for the table."""
    ann = read_charades_csv([data / "Charades_v1_test.csv"], data / "Charades_v1_classes.txt")
    labels = np.concatenate(
        [
            frame_labels(v.segments, max(1, round(v.duration_s * 3)), v.duration_s, ann.num_classes)
            for v in ann.videos
        ]
    )
    rates = labels.mean(0)
    return float(rates[rates > 0].mean())


def run_pipeline(
    out: Path = Path("runs/distill-detection-raw"),
    data: Path = Path("data/synth-untrimmed-raw"),
    videos: int = 40,
    classes: int = 6,
    seeds: int = 2,
    epochs: int = 40,
    encoder_init: str = "mae",
    encoder_steps: int = 150,
    encoder_dim: int = 96,
    encoder_depth: int = 3,
    window: int = 8,
    stride: int = 4,
    channels: int = 64,
    blocks: int = 3,
    lr: float = 1e-3,
    workers: int = 2,
    rows: tuple[str, ...] = ROWS,
    progress: bool = True,
) -> dict[str, Any]:
    """Run all stages; return (and write) the results."""
    if encoder_init not in ("mae", "random"):
        raise ConfigError("encoder_init", f"expected 'mae' or 'random', got {encoder_init!r}")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = t = time.perf_counter()
    world = ensure_synthetic_raw_untrimmed(data, workers=workers, videos=videos, classes=classes)
    size = world["params"]["size"]
    timings["synthesize"] = time.perf_counter() - t

    t = time.perf_counter()
    flow_dir = data / "flow"
    flow_report = compute_flow_folder(
        data / "videos", flow_dir, size=size, workers=workers, progress=progress
    )
    timings["flow"] = time.perf_counter() - t

    t = time.perf_counter()
    enc_dir = out / f"encoders-{encoder_init}"
    enc_info = train_encoders(
        data, flow_dir, enc_dir, encoder_init, size, window, encoder_dim, encoder_depth, encoder_steps, 0
    )
    timings["encoders"] = time.perf_counter() - t

    t = time.perf_counter()
    feature_root = data / f"features-{encoder_init}"
    extraction = {}
    for modality, src in (("rgb", data / "videos"), ("flow", flow_dir)):
        rep = extract_features_folder(
            src, enc_dir / f"{modality}.pt", modality, feature_root, window=window, stride=stride,
            workers=0, progress=progress,
        )  # fmt: skip
        extraction[modality] = {
            "done": len(rep.done),
            "skipped": len(rep.skipped),
            "failed": len(rep.failures),
        }
        if rep.failures:
            raise ConfigError("videos", rep.summary(f"{modality} features"))
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    per_row: dict[str, list[float]] = {r: [] for r in rows}
    for seed in range(seeds):
        teacher = None
        for row in rows:
            argv = detection_argv(
                row, feature_root, data, out / "runs", seed, epochs, channels, blocks, lr, teacher
            )
            score, checkpoint = detection_row(argv)
            per_row[row].append(score)
            if row == "teacher":
                teacher = checkpoint
            print(f"distill-detection-raw: seed {seed} {row}: test mAP {100 * score:.1f}", flush=True)
    timings["detection"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    results = {
        "pipeline": "distill-detection-raw",
        "metric": "test per-frame mAP (last epoch)",
        "chance_map": chance_map(data),
        "rows": {
            r: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": v} for r, v in per_row.items()
        },
        # the schema both detection pipelines share (xmkd.pipelines.seeds.detection_table_row)
        "table": table_rows(per_row),
        "data": {"root": str(data), **world["counts"], "params": world["params"]},
        "flow": {"written": len(flow_report.done), "skipped": len(flow_report.skipped)},
        "encoders": enc_info,
        "features": {"root": str(feature_root), "window": window, "stride": stride, **extraction},
        "settings": {"seeds": seeds, "epochs": epochs, "channels": channels, "blocks": blocks, "lr": lr},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "table.md").write_text(format_table(results))
    return results


# ------------------------------------------------------------------------------------------ CLI tool
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``xmkd pipeline distill-detection-raw [--out DIR] [--data DIR] [--seeds N] [--epochs E] ...``."""
    parser.add_argument("--out", default="runs/distill-detection-raw", help="results.json and table.md")
    parser.add_argument("--data", default="data/synth-untrimmed-raw", help="raw world, flow and features")
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--encoder-init", choices=["mae", "random"], default="mae")
    parser.add_argument("--encoder-steps", type=int, default=150, help="MAE steps per encoder")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis and flow")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    results = run_pipeline(
        out=Path(args.out),
        data=Path(args.data),
        videos=args.videos,
        classes=args.classes,
        seeds=args.seeds,
        epochs=args.epochs,
        encoder_init=args.encoder_init,
        encoder_steps=args.encoder_steps,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(format_table(results))
    print(f"total {results['seconds']['total']} s; written to {args.out}/results.json and table.md")
    return 0
