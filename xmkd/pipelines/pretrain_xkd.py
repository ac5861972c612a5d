"""``xmkd pipeline pretrain-xkd`` (``make pretrain-xkd``): XKD pretraining that proves it learns.

1. Pretrains XKD with ``experiments/xkd/xkd_tiny_synthetic.yaml`` (or ``--config``) through
   :func:`xmkd.runner.run_lightning_cli` (run folder ``runs/pretrain-xkd/version_N``); the synthetic
   audio-visual set is generated on first use by the datamodule.
2. Keeps a FROZEN copy of the encoders as they were initialised
   (:class:`xmkd.modules.xkd_control.XKDWithRandomInitProbe`), the random-init control. With
   ``--online-probe`` the same online linear probe (same initial weights, same lr and schedule, same
   batches, same number of steps) is also trained on that copy, in the same run: sharing the batches
   makes the control exact and costs one no-grad encoder pass per step (over the visible tokens
   only, with ``probe_view: masked``) instead of a second run with its own data loading.
3. With ``--online-probe``, scores both online probes on the validation split (a monitor, see below).
4. Scores both encoders, frozen as they are at the end, under the linear (SVM) protocol
   (:func:`frozen_svm_probe`): mean patch tokens of ``--svm-train-views`` augmented linear-evaluation
   views of each training clip (the data module's own cached clips) -> LinearSVC with C chosen by
   grouped cross-validation on the training clips -> top-1 on the validation clips. This is the
   headline comparison: an online probe trains on features that keep moving while the encoder
   pretrains (its lr decays with the pretraining's), while the control's features never move, so
   the online comparison is biased against the pretrained encoder.
5. Exports the student/teacher video/audio encoders to ``runs/pretrain-xkd/encoders/`` and writes
   ``runs/pretrain-xkd/results.json`` (both probes vs random init vs chance, step-time breakdown,
   paths) and prints a summary table.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xmkd.eval.knn import knn_top1
from xmkd.eval.svm import FeatureSet, cv_group_map, svm_protocol
from xmkd.metrics.classification import encode_video_ids
from xmkd.models.vit import save_exported_encoder
from xmkd.modules.data_checks import data_attribute
from xmkd.modules.xkd_control import XKDWithRandomInitProbe
from xmkd.pipelines.report import key_value_table, percent
from xmkd.pipelines.seeds import RECIPE_THREADS, mean_std, parse_seeds, pm
from xmkd.runner import run_lightning_cli
from xmkd.runs import write_json
from xmkd.viz import save_embedding_map

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "experiments" / "xkd" / "xkd_tiny_synthetic.yaml"
MODEL_CLASS = f"{XKDWithRandomInitProbe.__module__}.XKDWithRandomInitProbe"
#: Validation never runs inside fit; the pipeline scores the probes once, after training.
NEVER = 1_000_000

__all__ = [
    "DEFAULT_CONFIG",
    "add_arguments",
    "fit_argv",
    "pretrain_with_control",
    "run",
    "step_time_summary",
    "summarize_seeds",
]


def step_time_summary(
    step_times: list[tuple[float, float]],
    epoch_start_waits: Sequence[float] = (),
    view_times: Sequence[float | None] = (),
) -> dict[str, float | None]:
    """Medians and totals of (data wait, step) seconds; the first batch of each epoch is left out.

    With ``epoch_start_waits`` (epoch start -> its first batch: the loader's start, DataLoader
    workers included), also ``data_wait_fraction_with_epoch_starts``: every wait of the run,
    epoch starts included, over the run's waits and steps. With ``view_times`` (per batch, as
    ``step_times``: the seconds of each wait spent making the batch's views after the transfer,
    None where none were made there), also ``views_s_median`` and ``views_fraction``, their share
    of the same total as ``data_wait_fraction``.
    """
    waits = [w for w, _ in step_times if w == w]  # drop NaN (epoch starts)
    steps = [s for w, s in step_times if w == w]
    if not steps:
        return {"step_s_median": None, "data_wait_s_median": None, "data_wait_fraction": None}
    total_wait, total_step = sum(waits), sum(steps)
    out: dict[str, float | None] = {
        "step_s_median": statistics.median(steps),
        "data_wait_s_median": statistics.median(waits),
        "data_wait_fraction": total_wait / max(total_wait + total_step, 1e-9),
    }
    if epoch_start_waits:
        all_wait = total_wait + sum(epoch_start_waits)
        all_step = sum(s for _, s in step_times)
        out["data_wait_fraction_with_epoch_starts"] = all_wait / max(all_wait + all_step, 1e-9)
    views = [v for (w, _), v in zip(step_times, view_times, strict=False) if w == w and v is not None]
    if views:
        out["views_s_median"] = statistics.median(views)
        out["views_fraction"] = sum(views) / max(total_wait + total_step, 1e-9)
    return out


def fit_argv(
    config: str | Path,
    experiment: str,
    runs_dir: str | Path,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    overrides: list[str] | None = None,
) -> list[str]:
    """LightningCLI arguments of the pretraining run (the model swapped for the control subclass)."""
    argv = [
        "fit",
        "--config",
        str(config),
        "--experiment",
        experiment,
        "--runs_dir",
        str(runs_dir),
        f"--model.class_path={MODEL_CLASS}",
        f"--trainer.check_val_every_n_epoch={NEVER}",
        "--trainer.num_sanity_val_steps=0",
    ]
    if max_epochs is not None:
        argv.append(f"--trainer.max_epochs={max_epochs}")
    if max_steps is not None:
        argv.append(f"--trainer.max_steps={max_steps}")
    argv += [o if o.startswith("--") else f"--{o}" for o in overrides or []]
    return argv


@torch.no_grad()
def _frozen_features(
    model: XKDWithRandomInitProbe, dm: Any, loader: Any, train: bool
) -> tuple[dict[str, Tensor], Tensor, list[str]]:
    """Mean patch tokens of every batch of ``loader`` under the pretrained and the random-init
    encoders, video (the probe's view in training, the centre view otherwise) and audio."""
    assert model.random_init_encoders is not None
    encoders = {"": model.student, "_random_init": model.random_init_encoders}
    feats: dict[str, list[Tensor]] = {}
    labels, ids = [], []
    for batch in loader:
        batch = dm.on_after_batch_transfer(batch, 0) if train else batch
        video = model.probe_video(batch, batch["video"]) if train else batch["video"]
        inputs = {"video": video}
        if "audio" in batch:
            inputs["audio"] = model.audio_spectrogram(batch["audio"])
        for suffix, enc in encoders.items():
            for m, x in inputs.items():
                feats.setdefault(f"{m}{suffix}", []).append(enc[m].patch_mean(x).float())
        labels.append(batch["label"])
        ids += [str(v) for v in batch["video_id"]]
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels), ids


def frozen_svm_probe(
    model: XKDWithRandomInitProbe,
    dm: Any,
    train_views: int = 5,
    seed: int = 0,
    figure_dir: Path | None = None,
    loggers: Sequence[Any] = (),
) -> dict[str, Any]:
    """The linear (SVM) protocol on the final encoders and their random-init copies, frozen.

    Training features: ``train_views`` passes over the training clips, each drawing new augmented
    linear-evaluation views (the epoch seeds the augmentation); test features: the validation clips'
    centre views. LinearSVC with C by cross-validation on the training clips, whole scene groups held
    out (:func:`xmkd.eval.svm.svm_protocol`). Returns top-1 per encoder and modality, and the C used;
    beside each, the weighted kNN top-1 (k = 20, cosine, T = 0.07: :mod:`xmkd.eval.knn`) over the
    same features (``knn_top1``, ``knn_audio_top1``, ``..._random_init``).

    ``figure_dir``: also draw the validation clips' video features of both encoders as a t-SNE map
    coloured by class (``embedding_tsne.png``, logged to the W&B loggers among ``loggers``).
    """
    was_training = model.training
    model.eval()
    try:
        loader = dm.train_dataloader()
        sampler = getattr(loader, "sampler", None)
        train_parts = []
        for view in range(train_views):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(10_000 + view)  # epochs the pretraining never drew
            train_parts.append(_frozen_features(model, dm, loader, train=True))
        test_feats, test_labels, test_ids = _frozen_features(model, dm, dm.val_dataloader(), train=False)
    finally:
        model.train(was_training)
    groups = cv_group_map("synthetic", str(Path(dm.root) / "videos"), []) if dm.dataset == "synthetic" else {}
    train_ids = [i for _, _, ids in train_parts for i in ids]
    train_codes = encode_video_ids(train_ids).numpy()
    train_labels = torch.cat([lab for _, lab, _ in train_parts]).numpy()
    views = [v for v, (_, lab, _) in enumerate(train_parts) for _ in range(len(lab))]
    cv = [groups.get(int(c), int(c)) for c in train_codes] if groups else None
    out: dict[str, Any] = {"svm_train_views": train_views, "svm_test_clips": len(test_ids)}
    num_classes = int(dm.num_classes)
    for key in test_feats:
        train = FeatureSet(
            torch.cat([f[key] for f, _, _ in train_parts]).numpy(),
            train_labels,
            train_codes,
            views=np.asarray(views),
            cv_groups=None if cv is None else np.asarray(cv),
        )
        test = FeatureSet(test_feats[key].numpy(), test_labels.numpy(), encode_video_ids(test_ids).numpy())
        result = svm_protocol(train, test, num_classes, seed=seed)
        name = "svm_top1" if key.startswith("video") else "svm_audio_top1"
        suffix = "_random_init" if key.endswith("_random_init") else ""
        out[name + suffix] = result.video_top1
        out[f"{name}{suffix}_c"] = result.c
        out[name.replace("svm", "knn") + suffix] = knn_top1(train, test, num_classes)
    if figure_dir is not None and "video_random_init" in test_feats and len(test_ids) >= 3:
        path = Path(figure_dir) / "embedding_tsne.png"
        panels = {
            "pretrained": test_feats["video"].numpy(),
            "random init": test_feats["video_random_init"].numpy(),
        }
        names = data_attribute(dm, "class_names")
        title = f"validation clips, video encoder (t-SNE, seed {seed})"
        save_embedding_map(panels, test_labels.numpy(), names, path, seed=seed, title=title, loggers=loggers)
        out["embedding_map"] = str(path)
    return out


def pretrain_with_control(
    argv: list[str],
    export_dir: Path | None = None,
    svm_train_views: int = 5,
    export_random_init: bool = False,
) -> dict[str, Any]:
    """Run one pretraining job (``fit_argv``), score both probes (online, and the frozen SVM probe
    unless ``svm_train_views`` is 0), optionally export the encoders; ``export_random_init`` also
    exports the frozen copy of the weights the run started from (``random_init_{video,audio}.pt``)."""
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    cli = run_lightning_cli(argv)
    fit_s = time.perf_counter() - t0
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    if not isinstance(model, XKDWithRandomInitProbe) or model.random_init_encoders is None:
        raise ValueError("pretrain_with_control needs XKDWithRandomInitProbe with random_init_probe: true")
    t1 = time.perf_counter()
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    val_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    svm = (
        frozen_svm_probe(
            model, dm, svm_train_views, figure_dir=Path(cli.run_dir) / "figures", loggers=trainer.loggers
        )
        if svm_train_views > 0
        else {}
    )
    svm_s = time.perf_counter() - t2
    num_classes = int(dm.num_classes)
    out: dict[str, Any] = {
        "probe_top1": metrics.get("val/probe_top1"),
        "probe_top1_random_init": metrics.get("val/random_init_probe_top1"),
        "probe_audio_top1": metrics.get("val/probe_audio_top1"),
        "probe_audio_top1_random_init": metrics.get("val/random_init_probe_audio_top1"),
        "num_classes": num_classes,
        "chance": 1.0 / num_classes,
        "steps": int(trainer.global_step),
        "steps_random_init": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "train_clips": len(dm.train_set) if dm.train_set is not None else None,
        "val_clips": len(dm.eval_set) if dm.eval_set is not None else None,
        "loss_weights": dict(model.loss_sum.weights),
        "fit_s": fit_s,
        # CPU seconds of this process and its (finished) DataLoader workers: what the run costs on an
        # unshared machine, whatever else the cores were doing meanwhile.
        "fit_cpu_s": _cpu_seconds() - cpu0,
        "validate_s": val_s,
        **svm,
        "svm_s": svm_s,
        **step_time_summary(model.step_times, model.epoch_start_waits, model.view_times),
        "run_dir": str(cli.run_dir),
    }
    if export_dir is not None:
        out["encoders"] = {k: str(p) for k, p in model.export_encoders(export_dir).items()}
        if export_random_init:
            for m, encoder in model.random_init_encoders.items():
                path = save_exported_encoder(encoder, export_dir / f"random_init_{m}.pt")
                out["encoders"][f"random_init_{m}"] = str(path)
    return out


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment YAML (default: tiny CPU)")
    parser.add_argument("--experiment", default="pretrain-xkd", help="run name under --runs-dir")
    parser.add_argument("--runs-dir", default="runs", help="root of the run folders")
    parser.add_argument(
        "--seeds",
        default=None,
        help="run the recipe at several seeds: a count (3 -> 0,1,2) or a list (0,4); each seed gets its own "
        "run folder (<experiment>-seed<s>) and results.json the per-seed figures and their mean ± std. "
        "Default: one run at the config's seed",
    )
    parser.add_argument(
        "--online-probe",
        action="store_true",
        help="also train the online probe and its random-init control during pretraining (the YAML's "
        "probe_num_classes; off by default: it costs a third of each step and lags the moving encoder)",
    )
    parser.add_argument(
        "--svm-train-views",
        type=int,
        default=5,
        help="augmented views per training clip for the frozen-feature SVM probe of both encoders "
        "(default 5; 0 skips it)",
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="override trainer.max_epochs")
    parser.add_argument("--max-steps", type=int, default=None, help="override trainer.max_steps")
    parser.add_argument(
        "--threads",
        type=int,
        default=RECIPE_THREADS,
        help=f"torch threads of the training process (default {RECIPE_THREADS}, the recipe's: the "
        "figures depend on the thread count, which orders the float reductions, so it is fixed rather than "
        "one per core; 0 = torch's default). The tiny recipe decodes its clips once into memory "
        "(decode_cache_mb) and cuts and augments them in the training process between steps, so the step "
        "has every core; with DataLoader workers that decode every epoch on few cores, pass 1",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra LightningCLI override, e.g. data.init_args.batch_size=8 (repeatable)",
    )


#: The figures that get a mean ± std over seeds.
PROBE_KEYS = (
    "svm_top1",
    "svm_top1_random_init",
    "svm_audio_top1",
    "svm_audio_top1_random_init",
    "knn_top1",
    "knn_top1_random_init",
    "knn_audio_top1",
    "knn_audio_top1_random_init",
    "probe_top1",
    "probe_top1_random_init",
    "probe_audio_top1",
    "probe_audio_top1_random_init",
)
#: (name, pretrained key, random-init key) of the margins summarised over seeds; the first is the headline.
MARGINS = (
    ("video_svm_margin", "svm_top1", "svm_top1_random_init"),
    ("audio_svm_margin", "svm_audio_top1", "svm_audio_top1_random_init"),
    ("video_margin", "probe_top1", "probe_top1_random_init"),
    ("audio_margin", "probe_audio_top1", "probe_audio_top1_random_init"),
)


def summarize_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sample std over seeds of the probes and of the pretrained-minus-random-init margins
    (:data:`MARGINS`), and whether each margin clears the noise: mean pretrained - mean random init >
    2 x the larger of the two seed stds (needs >= 2 seeds)."""
    out: dict[str, Any] = {}
    for key in PROBE_KEYS:
        values = [r[key] for r in per_seed if r.get(key) is not None]
        if values:
            mean, std = mean_std(values)
            out[key] = {"mean": mean, "std": std, "values": values}
    for name, xkd, rand in MARGINS:
        if xkd in out and rand in out and len(out[xkd]["values"]) == len(out[rand]["values"]):
            margins = [a - b for a, b in zip(out[xkd]["values"], out[rand]["values"])]
            mean, std = mean_std(margins)
            stds = [out[xkd]["std"], out[rand]["std"]]
            noise = 2 * max(stds) if None not in stds else None
            out[name] = {
                "mean": mean,
                "std": std,
                "values": margins,
                "twice_larger_std": noise,
                "beyond_noise": None if noise is None else out[xkd]["mean"] - out[rand]["mean"] > noise,
            }
    return out


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.runs_dir) / args.experiment
    seeds: list[int | None] = parse_seeds(str(args.seeds)) if args.seeds else [None]
    per_seed: list[dict[str, Any]] = []
    for i, seed in enumerate(seeds):
        experiment = args.experiment if seed is None else f"{args.experiment}-seed{seed}"
        overrides = list(args.override) + ([f"seed_everything={seed}"] if seed is not None else [])
        if not args.online_probe:
            overrides.insert(0, "model.init_args.probe_num_classes=0")  # an explicit --override wins
        if len(seeds) > 1:
            print(f"[pretrain-xkd] seed {seed} ({i + 1} of {len(seeds)})", flush=True)
        argv = fit_argv(args.config, experiment, args.runs_dir, args.max_epochs, args.max_steps, overrides)
        # the first seed's encoders are the ones the downstream targets read (runs/<experiment>/encoders)
        export = out_dir / ("encoders" if i == 0 else f"encoders-seed{seed}")
        result = pretrain_with_control(argv, export_dir=export, svm_train_views=args.svm_train_views)
        result.update(seed=seed, runs={"pretrain": result.pop("run_dir")})
        per_seed.append(result)
        if len(seeds) > 1:
            print(key_value_table(_rows(result, out_dir), f"XKD pretraining, seed {seed}"), flush=True)
    summary = summarize_seeds(per_seed) if len(seeds) > 1 else {}
    # the first seed's record at the top level (one schema whatever the seed count), the rest beside it
    results = dict(per_seed[0])
    results.update(
        config=str(args.config),
        threads=torch.get_num_threads(),
        wall_s=time.perf_counter() - t0,
        seeds=[r["seed"] for r in per_seed],
    )
    if len(seeds) > 1:
        results.update(per_seed=per_seed, summary=summary)
    write_json(out_dir / "results.json", results)
    title = "XKD pretraining on synthetic AV: the final encoders vs their random init (frozen-feature probes)"
    if len(seeds) > 1:
        print(key_value_table(_summary_rows(summary, per_seed[0]), f"{title}, {len(seeds)} seeds"))
    else:
        print(key_value_table(_rows(results, out_dir), title))
    return 0


#: (label, results key) of the probe rows; a probe that did not run (None) gets no row.
PROBE_ROWS = (
    ("SVM on frozen features (video), pretrained", "svm_top1"),
    ("SVM on frozen features (video), random init", "svm_top1_random_init"),
    ("SVM on frozen features (audio), pretrained", "svm_audio_top1"),
    ("SVM on frozen features (audio), random init", "svm_audio_top1_random_init"),
    ("kNN (k=20) on frozen features (video), pretrained", "knn_top1"),
    ("kNN (k=20) on frozen features (video), random init", "knn_top1_random_init"),
    ("kNN (k=20) on frozen features (audio), pretrained", "knn_audio_top1"),
    ("kNN (k=20) on frozen features (audio), random init", "knn_audio_top1_random_init"),
    ("online probe top-1 (video), pretrained", "probe_top1"),
    ("online probe top-1 (video), random init", "probe_top1_random_init"),
    ("online probe top-1 (audio), pretrained", "probe_audio_top1"),
    ("online probe top-1 (audio), random init", "probe_audio_top1_random_init"),
)
#: (label, summary key) of the margin rows over seeds, the headline first (as in :data:`MARGINS`).
MARGIN_ROWS = (
    ("SVM video margin (pretrained - random init)", "video_svm_margin"),
    ("SVM audio margin", "audio_svm_margin"),
    ("online probe video margin", "video_margin"),
    ("online probe audio margin", "audio_margin"),
)


def _rows(result: dict[str, Any], out_dir: Path) -> list[tuple[str, str]]:
    rows = [(label, percent(result[key])) for label, key in PROBE_ROWS if result.get(key) is not None]
    rows += [
        ("chance", f"{percent(result['chance'])} ({result['num_classes']} classes)"),
        ("steps (both probes) / epochs", f"{result['steps']} / {result['epochs']}"),
        ("train / val clips", f"{result['train_clips']} / {result['val_clips']}"),
        (
            "step s (median) / data wait s (median)",
            f"{result['step_s_median'] or float('nan'):.3f} / {result['data_wait_s_median'] or float('nan'):.3f}",
        ),
        ("share of train time waiting for data", percent(result["data_wait_fraction"])),
        ("... with the epochs' first batches", percent(result.get("data_wait_fraction_with_epoch_starts"))),
        ("... of which making the batch's views", percent(result.get("views_fraction"))),
        ("fit s / validate s", f"{result['fit_s']:.0f} / {result['validate_s']:.0f}"),
        ("encoders", str(result.get("encoders", {}).get("student_video", out_dir / "encoders"))),
        ("run folder", result["runs"]["pretrain"]),
        ("results", str(out_dir / "results.json")),
    ]
    return rows


def _summary_rows(summary: dict[str, Any], first: dict[str, Any]) -> list[tuple[str, str]]:
    """Mean ± std (and the per-seed values) of every probe that ran and of its margin, and the
    headline margin's verdict: mean pretrained - mean random init > 2 x the larger of their seed stds."""

    def cell(key: str) -> str:
        s = summary[key]
        values = ", ".join(f"{100 * v:.1f}" for v in s["values"])
        return f"{pm(s['mean'], s['std'])} % ({values})"

    rows = [(label, cell(key)) for label, key in PROBE_ROWS if key in summary]
    rows += [(label, cell(key)) for label, key in MARGIN_ROWS if key in summary]
    headline = next((summary[key] for _, key in MARGIN_ROWS if key in summary), None)
    if headline is not None and headline["twice_larger_std"] is not None:
        verdict = "yes" if headline["beyond_noise"] else "NO"
        rows.append(
            (
                "headline margin > 2 x the larger seed std",
                f"{verdict} ({100 * headline['twice_larger_std']:.1f})",
            )
        )
    rows += [
        ("chance", f"{percent(first['chance'])} ({first['num_classes']} classes)"),
        ("steps / train / val clips", f"{first['steps']} / {first['train_clips']} / {first['val_clips']}"),
    ]
    return rows
