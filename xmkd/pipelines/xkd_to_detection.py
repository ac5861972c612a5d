"""``xmkd pipeline xkd-to-detection`` (``make xkd-to-detection``): does audio-visual pretraining help
cross-modal distillation for detection?

One chain from XKD pretraining to a distilled RGB detector, composed of the other pipelines' stages:

1. Two pretraining runs of the tiny XKD recipe (``experiments/xkd/xkd_tiny_synthetic.yaml``, the
   synthetic audio-visual set, same seed and data) through
   :func:`xmkd.pipelines.pretrain_xkd.pretrain_with_control`: full XKD and MAE only (the same
   pretrainer with the alignment and distillation weights at zero, ``xkd-ablation``'s row (a)). Each
   exports its student video encoder, the exact weights it started from, and its frozen-feature SVM
   top-1 on the set's validation clips (how good the encoder is on its own data). ``--ckpt`` /
   ``--mae-ckpt`` take exported video encoders (``.pt`` + ``.json``) instead of pretraining.
2. The raw untrimmed world of ``distill-detection-raw`` (mp4 videos of moving textured discs, the
   class is the motion) and its DIS optical flow.
3. A flow encoder (tiny ViT, 2 channels, MAE on the training videos' flow) as ``distill-detection-raw``
   trains it; shared by every row, so only the RGB features differ between the rows.
4. Per-step features (stride 4 frames at 12 fps: 3 steps a second) of every video: flow once, RGB with
   each of three video encoders of one architecture: the random init (the weights the pretraining
   started from), MAE only, XKD. Each encoder reads windows of its own input size (16 x 64 x 64 for
   the tiny recipe, the raw world's frame size), so nothing is resized but the frame rate (the raw
   world's 12 fps instead of the recipe's 8).
5. Per encoder, the detection rows of ``distill-detection-raw``: RGB only, the two-stream teacher
   (RGB + flow) and the Augmented-RGB student distilled from that teacher; flow only once, as the
   reference. ``--seeds`` detection seeds each (paired: seed s of every encoder shares its head's
   initialisation and batch order), test per-frame mAP at the last epoch.

Writes ``<out>/results.json`` and ``<out>/table.md``: mean ± sample std over the detection seeds, the
share of the teacher-RGB gap each student closes, and the comparisons the question needs (XKD vs MAE
only and vs random init, for the student and for the distillation gain), each judged by the project's
noise rule: a difference counts when it exceeds twice the larger seed std. The pretraining itself runs
once (one pretraining seed): the seeds measure the detection's noise, not the pretraining's.

Every stage is resumable: a rerun reuses finished pretraining runs, the world, the flow, the encoders
and the features. The pipeline only orchestrates: models, modules and trainers come from the pipelines
it composes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmkd.data.io.flow import compute_flow_folder
from xmkd.data.synthetic.raw_untrimmed import ensure_synthetic_raw_untrimmed
from xmkd.errors import ConfigError
from xmkd.features.extract import extract_features_folder, load_encoder
from xmkd.models.vit import build_encoder, load_exported_encoder, save_exported_encoder
from xmkd.pipelines.distill_detection_raw import chance_map, detection_argv, detection_row, train_encoders
from xmkd.pipelines.pretrain_xkd import DEFAULT_CONFIG, fit_argv, pretrain_with_control
from xmkd.pipelines.pretrain_xkd_ablation import ABLATIONS
from xmkd.pipelines.report import markdown_lines
from xmkd.pipelines.seeds import RECIPE_THREADS, detection_table_row, mean_std, parse_seeds, pm
from xmkd.runs import write_json

#: The RGB encoders of the table, in its order.
ENCODERS = ("random", "mae", "xkd")
ENCODER_LABELS = {
    "random": "random init",
    "mae": "MAE only (XKD recipe, alignment and distillation at 0)",
    "xkd": "XKD (audio-visual)",
}
#: The pretraining runs: name -> loss weights (MAE only is xkd-ablation's row (a), XKD its row (c)).
_ABLATION_WEIGHTS = {name: weights for name, _, weights in ABLATIONS}
PRETRAIN_WEIGHTS = {"mae": dict(_ABLATION_WEIGHTS["rec"]), "xkd": dict(_ABLATION_WEIGHTS["xkd"])}
DETECTION_ROWS = ("rgb", "teacher", "student")
ROW_LABELS = {
    "rgb": "RGB only",
    "teacher": "two-stream teacher (RGB + flow)",
    "student": "Augmented-RGB student",
    "flow": "flow only",
}
METRIC = "test per-frame mAP (last epoch)"
QUESTION = "does audio-visual pretraining help cross-modal distillation for detection?"

__all__ = [
    "DETECTION_ROWS",
    "ENCODERS",
    "ENCODER_LABELS",
    "PRETRAIN_WEIGHTS",
    "add_arguments",
    "compare",
    "comparisons",
    "detect_all",
    "extract_all",
    "format_table",
    "gap_closed",
    "pretrain",
    "run",
    "run_pipeline",
    "weights_tag",
]


# ------------------------------------------------------------------------------------ pure helpers
def compare(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """``a`` vs ``b`` over paired seeds: the mean difference, the std of the per-seed differences, and
    the project's noise rule (mean a - mean b > 2 x the larger of the two seed stds; ``None`` with one
    seed, where there is no std to judge by)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired comparison needs as many values on both sides, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    diff_mean, diff_std = mean_std(diffs)
    stds = [mean_std(a)[1], mean_std(b)[1]]
    noise = None if None in stds else 2 * max(s for s in stds if s is not None)
    return {
        "mean": diff_mean,
        "std": diff_std,
        "per_seed": diffs,
        "twice_larger_std": noise,
        "beyond_noise": None if noise is None else abs(diff_mean) > noise,
    }


def gap_closed(student: float, rgb: float, teacher: float) -> float | None:
    """Share of the teacher's lead over RGB only that the student closes; ``None`` where the teacher
    does not lead (nothing to close)."""
    if teacher <= rgb:
        return None
    return (student - rgb) / (teacher - rgb)


def comparisons(per_encoder: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    """The table's questions, each a :func:`compare` over the detection seeds:

    - ``student: A - B``: the student on encoder A's features vs on encoder B's;
    - ``gain: A - B``: the distillation gain (student - RGB only, per seed) on A vs on B;
    - ``gain on A``: the student vs RGB only on encoder A's features (does distillation help at all).
    """
    out: dict[str, dict[str, Any]] = {}
    gains = {
        e: [s - r for s, r in zip(rows["student"], rows["rgb"])]
        for e, rows in per_encoder.items()
        if "student" in rows and "rgb" in rows
    }
    for e, rows in per_encoder.items():
        if e in gains:
            out[f"gain on {e}"] = compare(rows["student"], rows["rgb"])
    for a, b in (("xkd", "mae"), ("xkd", "random"), ("mae", "random")):
        if a in per_encoder and b in per_encoder:
            out[f"student: {a} - {b}"] = compare(per_encoder[a]["student"], per_encoder[b]["student"])
            if a in gains and b in gains:
                out[f"gain: {a} - {b}"] = compare(gains[a], gains[b])
    return out


def _cell(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return pm(mean, std)


def _verdict(c: dict[str, Any]) -> str:
    if c["beyond_noise"] is None:
        return "one seed: no noise estimate"
    noise = f"2 x larger seed std {100 * c['twice_larger_std']:.1f}"
    return f"{'beyond' if c['beyond_noise'] else 'within'} the noise ({noise})"


def format_table(results: dict[str, Any]) -> str:
    """Markdown: one line per RGB encoder (in-domain SVM top-1, RGB only, teacher, student, the gain
    and the share of the gap closed), the flow-only reference, chance, then the comparisons."""
    seeds = results["settings"]["seeds"]
    rows = []
    for name, enc in results["encoders"].items():
        scores = results["rows"][name]
        svm = enc.get("svm_top1")
        gain = results["comparisons"].get(f"gain on {name}")
        means = {r: float(np.mean(scores[r])) for r in DETECTION_ROWS}
        closed = gap_closed(means["student"], means["rgb"], means["teacher"])
        rows.append(
            [
                enc["label"],
                "n/a" if svm is None else f"{100 * svm:.1f}",
                *(_cell(scores[r]) for r in DETECTION_ROWS),
                "n/a" if gain is None else pm(gain["mean"], gain["std"]),
                "n/a" if closed is None else f"{100 * closed:.0f} %",
            ]
        )
    header = [
        "RGB encoder", "SVM top-1 on synthetic AV (%)", "RGB only", "teacher (RGB + flow)",
        "Augmented-RGB student", "student - RGB only", "gap closed",
    ]  # fmt: skip
    lines = [
        f"Test per-frame mAP (%) on the raw untrimmed world, mean ± std over {len(seeds)} detection "
        "seed(s); one pretraining run per encoder.",
        "",
        *markdown_lines(header, rows),
        "",
        f"Flow only (shared flow encoder): {_cell(results['rows']['flow'])}; chance (mean positive rate "
        f"over classes): {100 * results['chance_map']:.1f}.",
        "",
        *markdown_lines(
            ["comparison", "difference (points)", "verdict"],
            [[name, pm(c["mean"], c["std"]), _verdict(c)] for name, c in results["comparisons"].items()],
        ),
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ stages
def _check_video_encoder(path: Path, key: str) -> Path:
    """An exported RGB video encoder (``.pt`` + ``.json``), or a ConfigError naming the file."""
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise ConfigError(key, f"{path}: expected an exported video encoder (.pt and its .json beside it)")
    enc = load_encoder(path, "xkd")
    if enc.in_chans != 3:
        raise ConfigError(key, f"{path} takes {enc.in_chans} channels; an RGB video encoder is needed")
    return path


def pretrain(
    name: str,
    out: Path,
    config: Path,
    epochs: int | None,
    max_steps: int | None,
    svm_train_views: int,
    overrides: Sequence[str],
) -> dict[str, Any]:
    """Stage 1: one pretraining run (``name`` in :data:`PRETRAIN_WEIGHTS`) exported to
    ``out/encoders/<name>/``; reused when its ``pretrain.json`` exists and records the same arguments
    (other arguments raise :class:`ConfigError` rather than silently reusing a different encoder)."""
    export = out / "encoders" / name
    record = export / "pretrain.json"
    argv = fit_argv(
        config,
        f"pretrain-{name}",
        out,
        epochs,
        max_steps,
        [
            "model.init_args.probe_num_classes=0",  # the frozen-feature SVM scores it instead
            *overrides,
            f"model.init_args.loss_weights={json.dumps(PRETRAIN_WEIGHTS[name])}",
        ],
    )
    if record.is_file():
        done = json.loads(record.read_text())
        if done.get("argv") != argv or done.get("svm_train_views_asked") != svm_train_views:
            raise ConfigError(
                "out",
                f"{record} holds a {name} run with other arguments; remove {export} or pick another --out",
            )
        return done
    print(f"xkd-to-detection: pretraining {ENCODER_LABELS[name]} ...", flush=True)
    result = pretrain_with_control(
        argv, export_dir=export, svm_train_views=svm_train_views, export_random_init=True
    )
    write_json(record, {**result, "argv": argv, "svm_train_views_asked": svm_train_views})
    return json.loads(record.read_text())


def random_init_encoder(
    runs: dict[str, dict[str, Any]], like: Path, out: Path, seed: int
) -> tuple[Path, str, str | None]:
    """The random-init RGB encoder, its description and the run it comes from: the exact weights a
    pretraining run here started from (both runs start from the same ones: same seed, same modules),
    else a fresh seeded init of ``like``'s architecture (when both encoders were given)."""
    for name in ("xkd", "mae"):
        path = runs.get(name, {}).get("encoders", {}).get("random_init_video")
        if path:
            return Path(path), f"the weights the {name} pretraining started from", name
    path = out / "encoders" / "random" / "random_init_video.pt"
    if not path.is_file():
        torch.manual_seed(seed)
        save_exported_encoder(build_encoder(load_exported_encoder(like).config).eval(), path)
    return path, f"a seeded ({seed}) init of the architecture of {like}", None


def _architecture(path: Path) -> dict[str, Any]:
    """The encoder's configuration with every default filled in (an export that predates a knob
    reads as that knob's legacy value), so that equal architectures compare equal."""
    return load_exported_encoder(path).config.to_dict()


def weights_tag(path: Path) -> str:
    """First 8 hex digits of the SHA-1 of an encoder's weights file. Feature folders and detection
    scores are keyed by it, so new weights at the same path (a pretraining run redone) never reuse the
    old ones' features or scores."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:8]


def extract_all(
    encoders: dict[str, Path], data: Path, flow_dir: Path, flow_encoder: Path, out: Path,
    flow_window: int, stride: int, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Stage 4: flow features once into ``out/features/flow-<tag>/flow``, RGB features per encoder into
    ``out/features/<encoder>-<tag>-<flow tag>/rgb`` beside a copy of the flow ones (a detector reads
    one root); ``<tag>`` = :func:`weights_tag`. Returns per modality/encoder its counts and root."""
    flow_tag = weights_tag(flow_encoder)
    flow_root = out / "features" / f"flow-{flow_tag}"
    rep = extract_features_folder(
        flow_dir, flow_encoder, "flow", flow_root, window=flow_window, stride=stride, workers=0,
        progress=progress,
    )  # fmt: skip
    if rep.failures:
        raise ConfigError("videos", rep.summary("flow features"))
    report: dict[str, Any] = {
        "flow": {
            "done": len(rep.done),
            "skipped": len(rep.skipped),
            "window": flow_window,
            "root": str(flow_root),
        }
    }
    for name, path in encoders.items():
        root = out / "features" / f"{name}-{weights_tag(path)}-{flow_tag}"
        # window = the encoder's own frame count, so it reads clips of the size it was trained on
        rep = extract_features_folder(
            data / "videos", path, "rgb", root, stride=stride, workers=0, progress=progress
        )
        if rep.failures:
            raise ConfigError("videos", rep.summary(f"rgb features ({name})"))
        shutil.copytree(flow_root / "flow", root / "flow", dirs_exist_ok=True)
        report[name] = {
            "done": len(rep.done),
            "skipped": len(rep.skipped),
            "encoder": str(path),
            "root": str(root),
        }
    return report


def detect_all(
    out: Path, roots: dict[str, Path], flow_root: Path, data: Path, seeds: Sequence[int], epochs: int,
    channels: int, blocks: int, lr: float,
) -> tuple[dict[str, dict[str, list[float]]], list[float]]:  # fmt: skip
    """Stage 5: per seed, flow only once and, per encoder, RGB only, the teacher and its student, on
    the feature roots ``roots`` (encoder -> root) and ``flow_root``, as :func:`extract_all` writes them.

    Every detector is one runner job with its own run folder under ``out/detection/<feature root>/``;
    the student loads its teacher's ``last.ckpt``. Each finished unit (a seed's flow-only row; a seed's
    three rows of one encoder) is recorded in ``out/detection_scores.json`` under the seed and the
    feature root's name, and reused by a rerun with the same settings: an interrupted run loses one
    unit at most."""
    settings = {"epochs": epochs, "channels": channels, "blocks": blocks, "lr": lr}
    path = out / "detection_scores.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    scores: dict[str, Any] = saved.get("scores", {}) if saved.get("settings") == settings else {}
    first, flow_key = roots[ENCODERS[0]], flow_root.name  # the flow-only row reads its flow features only
    for seed in seeds:
        hyper = (seed, epochs, channels, blocks, lr)
        if f"{seed}/{flow_key}" not in scores:
            argv = detection_argv("flow", first, data, out / "detection" / flow_key, *hyper)
            scores[f"{seed}/{flow_key}"] = detection_row(argv)[0]
            write_json(path, {"settings": settings, "scores": scores})
        for name in ENCODERS:
            key = f"{seed}/{roots[name].name}"
            if key in scores:
                continue
            unit: dict[str, float] = {}
            teacher: Path | None = None
            for row in DETECTION_ROWS:
                runs_dir = out / "detection" / roots[name].name
                argv = detection_argv(row, roots[name], data, runs_dir, *hyper, teacher)
                unit[row], checkpoint = detection_row(argv)
                teacher = checkpoint if row == "teacher" else teacher
                print(
                    f"xkd-to-detection: seed {seed} {name} {row}: test mAP {100 * unit[row]:.1f}", flush=True
                )
            scores[key] = unit
            write_json(path, {"settings": settings, "scores": scores})
    per_encoder = {
        e: {r: [scores[f"{s}/{roots[e].name}"][r] for s in seeds] for r in DETECTION_ROWS} for e in ENCODERS
    }
    return per_encoder, [scores[f"{s}/{flow_key}"] for s in seeds]


def run_pipeline(
    out: Path = Path("runs/xkd-to-detection"),
    data: Path = Path("data/synth-untrimmed-raw"),
    config: Path = DEFAULT_CONFIG,
    ckpt: Path | None = None,
    mae_ckpt: Path | None = None,
    pretrain_epochs: int | None = None,
    pretrain_max_steps: int | None = None,
    svm_train_views: int = 5,
    pretrain_overrides: Sequence[str] = (),
    videos: int = 40,
    classes: int = 6,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    epochs: int = 40,
    flow_encoder_steps: int = 150,
    flow_encoder_dim: int = 96,
    flow_encoder_depth: int = 3,
    flow_window: int = 8,
    stride: int = 4,
    channels: int = 64,
    blocks: int = 3,
    lr: float = 1e-3,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every stage (module docstring); return and write the results."""
    if not seeds:
        raise ConfigError("seeds", "at least one detection seed is needed")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = t = time.perf_counter()

    runs: dict[str, dict[str, Any]] = {}
    encoders: dict[str, Path] = {}
    sources: dict[str, str] = {}
    for name, given in (("xkd", ckpt), ("mae", mae_ckpt)):
        if given is not None:
            encoders[name] = _check_video_encoder(Path(given), "ckpt" if name == "xkd" else "mae_ckpt")
            sources[name] = f"given: {given}"
            continue
        runs[name] = pretrain(
            name, out, Path(config), pretrain_epochs, pretrain_max_steps, svm_train_views, pretrain_overrides
        )
        encoders[name] = Path(runs[name]["encoders"]["student_video"])
        sources[name] = f"pretrained here ({runs[name]['steps']} steps, run {runs[name]['run_dir']})"
    encoders["random"], sources["random"], random_run = random_init_encoder(runs, encoders["xkd"], out, 0)
    archs = {name: _architecture(p) for name, p in encoders.items()}
    # The comparison is about the weights; a given encoder of another architecture confounds it.
    arch_diff = {
        name: {k: [v, archs["xkd"].get(k)] for k, v in a.items() if archs["xkd"].get(k) != v}
        for name, a in archs.items()
        if a != archs["xkd"]
    }
    if arch_diff:
        print(f"xkd-to-detection: warning: encoders differ from the XKD one (theirs, XKD's): {arch_diff}")
    timings["pretrain"] = time.perf_counter() - t

    t = time.perf_counter()
    world = ensure_synthetic_raw_untrimmed(data, workers=workers, videos=videos, classes=classes)
    size = world["params"]["size"]
    flow_dir = data / "flow"
    flow_report = compute_flow_folder(
        data / "videos", flow_dir, size=size, workers=workers, progress=progress
    )
    timings["world_and_flow"] = time.perf_counter() - t

    t = time.perf_counter()
    flow_info = train_encoders(
        data, flow_dir, out / "encoders" / "flow", "mae", size, flow_window, flow_encoder_dim,
        flow_encoder_depth, flow_encoder_steps, 0, modalities=("flow",),
    )  # fmt: skip
    timings["flow_encoder"] = time.perf_counter() - t

    t = time.perf_counter()
    ordered = {name: encoders[name] for name in ENCODERS}
    features = extract_all(
        ordered, data, flow_dir, out / "encoders" / "flow" / "flow.pt", out, flow_window, stride, progress
    )
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    roots = {name: Path(features[name]["root"]) for name in ENCODERS}
    flow_root = Path(features["flow"]["root"])
    per_encoder, flow_only = detect_all(out, roots, flow_root, data, seeds, epochs, channels, blocks, lr)
    timings["detection"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all

    table = [detection_table_row("flow", ROW_LABELS["flow"], list(seeds), flow_only, METRIC)]
    for name in ENCODERS:
        for row in DETECTION_ROWS:
            label = f"{ROW_LABELS[row]}, {ENCODER_LABELS[name]} features"
            entry = detection_table_row(row, label, list(seeds), per_encoder[name][row], METRIC)
            table.append({**entry, "encoder": name})
    svm = {
        "xkd": runs.get("xkd", {}).get("svm_top1"),
        "mae": runs.get("mae", {}).get("svm_top1"),
        "random": runs[random_run].get("svm_top1_random_init") if random_run else None,
    }
    results: dict[str, Any] = {
        "pipeline": "xkd-to-detection",
        "question": QUESTION,
        "metric": METRIC,
        "chance_map": chance_map(data),
        "encoders": {
            name: {
                "label": ENCODER_LABELS[name],
                "path": str(encoders[name]),
                "source": sources[name],
                "architecture": archs[name],
                "svm_top1": svm[name],
            }
            for name in ENCODERS
        },
        "rows": {"flow": flow_only, **per_encoder},
        "comparisons": comparisons(per_encoder),
        "architecture_differences": arch_diff,
        "table": table,
        "pretraining": {
            name: {
                k: r.get(k)
                for k in ("steps", "fit_s", "svm_top1", "svm_top1_random_init", "loss_weights", "run_dir")
            }
            for name, r in runs.items()
        },
        "data": {"root": str(data), **world["counts"], "params": world["params"]},
        "flow": {"written": len(flow_report.done), "skipped": len(flow_report.skipped), "encoder": flow_info},
        "features": {"root": str(out / "features"), "stride": stride, **features},
        "settings": {
            "seeds": list(seeds),
            "epochs": epochs,
            "channels": channels,
            "blocks": blocks,
            "lr": lr,
            "config": str(config),
            "threads": torch.get_num_threads(),
        },
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    write_json(out / "results.json", results)
    (out / "table.md").write_text(format_table(results))
    return results


# ------------------------------------------------------------------------------------------ CLI tool
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``xmkd pipeline xkd-to-detection [--ckpt ENCODER] [--seeds N] [--out DIR] ...``."""
    parser.add_argument("--out", default="runs/xkd-to-detection", help="run folder: results.json, table.md")
    parser.add_argument("--data", default="data/synth-untrimmed-raw", help="raw world and its flow")
    parser.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="XKD pretraining YAML (default: tiny CPU)"
    )
    parser.add_argument(
        "--ckpt", default=None, help="exported XKD video encoder (.pt + .json) to use instead of pretraining"
    )
    parser.add_argument("--mae-ckpt", default=None, help="exported MAE-only video encoder, likewise")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="override the recipe's max_epochs")
    parser.add_argument(
        "--pretrain-max-steps", type=int, default=None, help="override the recipe's max_steps"
    )
    parser.add_argument(
        "--svm-train-views",
        type=int,
        default=5,
        help="views per clip of the in-domain SVM probe (0 skips it)",
    )
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="extra LightningCLI override of both pretraining runs (repeatable)",
    )  # fmt: skip
    parser.add_argument("--videos", type=int, default=40, help="raw untrimmed videos")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--seeds", default="5", help="detection seeds: a count (5 -> 0..4) or a list (0,4)")
    parser.add_argument("--epochs", type=int, default=40, help="detection epochs")
    parser.add_argument("--flow-encoder-steps", type=int, default=150, help="MAE steps of the flow encoder")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis and flow")
    parser.add_argument(
        "--threads", type=int, default=RECIPE_THREADS,
        help=f"torch threads (default {RECIPE_THREADS}, the recipe's; 0 = torch's; see pretrain-xkd --help)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run_pipeline(
        out=Path(args.out),
        data=Path(args.data),
        config=Path(args.config),
        ckpt=Path(args.ckpt) if args.ckpt else None,
        mae_ckpt=Path(args.mae_ckpt) if args.mae_ckpt else None,
        pretrain_epochs=args.pretrain_epochs,
        pretrain_max_steps=args.pretrain_max_steps,
        svm_train_views=args.svm_train_views,
        pretrain_overrides=args.override,
        videos=args.videos,
        classes=args.classes,
        seeds=parse_seeds(str(args.seeds)),
        epochs=args.epochs,
        flow_encoder_steps=args.flow_encoder_steps,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(format_table(results))
    print(f"total {results['seconds']['total']} s; written to {args.out}/results.json and table.md")
    return 0
