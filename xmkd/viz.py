"""The pictures of a run: pure figure builders (arrays in, matplotlib figures out) and one writer.

- :func:`timeline_figure`: a detection video's ground truth vs each model's per-step scores, one row
  per class (named), time in seconds where the feature rate is known.
- :func:`per_class_ap_figure`: per-class AP of a detection epoch, sorted.
- :func:`confusion_figure` (over :func:`confusion_matrix`): a classifier's row-normalised confusion.
- :func:`embedding_figure` (over :func:`tsne_points`): frozen features in 2-D (t-SNE), one colour
  and legend entry per class, one panel per encoder.
- :func:`loss_curves_figure` (over :func:`read_metrics_csv`): training losses per step and
  validation metrics per epoch from a run's ``metrics.csv``, for runs without W&B.

:func:`save_figure` writes a PNG and only warns when it cannot (a picture never ends a run);
:func:`log_images` hands the pixels to every W&B logger of a trainer. Rendering is headless (Agg).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend
from matplotlib.figure import Figure

__all__ = [
    "confusion_figure",
    "confusion_matrix",
    "detection_figures",
    "embedding_figure",
    "figure_to_array",
    "log_images",
    "loss_curves_figure",
    "per_class_ap_figure",
    "read_metrics_csv",
    "save_embedding_map",
    "save_figure",
    "timeline_figure",
    "tsne_points",
]


def _name(class_names: Sequence[str] | None, c: int) -> str:
    return str(class_names[c]) if class_names else f"class {c}"


# ------------------------------------------------------------------------------------------ detection


def timeline_figure(
    labels: np.ndarray,
    scores: Mapping[str, np.ndarray],
    classes: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    max_classes: int = 6,
    title: str = "",
    seconds_per_step: float | None = None,
) -> Figure:
    """Ground truth vs each model's per-step scores over time, one row per class.

    ``labels`` (T, C) 0/1, ``scores`` {name: (T, C) probabilities}, e.g. teacher / student / RGB
    baseline. Default classes: those present in the ground truth, most frequent first (then the
    classes the first model scores highest), at most ``max_classes``. ``seconds_per_step``: the
    x axis in seconds (step t drawn at t x seconds_per_step, the labelling rule's step time);
    ``None`` keeps time steps.
    """
    labels = np.asarray(labels)
    if classes is None:
        freq = labels.sum(0)
        present = [int(c) for c in np.argsort(-freq, kind="stable") if freq[c] > 0]
        if len(present) < max_classes and scores:
            first = np.asarray(next(iter(scores.values())))
            present += [int(c) for c in np.argsort(-first.max(0), kind="stable") if c not in present]
        classes = present[:max_classes]
    classes = list(classes)
    fig, axes = plt.subplots(
        len(classes), 1, figsize=(8, 1.2 * len(classes) + 0.6), sharex=True, squeeze=False
    )
    steps = np.arange(labels.shape[0], dtype=float)
    x = steps * seconds_per_step if seconds_per_step else steps
    for ax, c in zip(axes[:, 0], classes):
        ax.fill_between(x, 0, labels[:, c], step="mid", color="0.8", label="ground truth")
        for name, s in scores.items():
            ax.plot(x, np.asarray(s)[:, c], lw=1.2, label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(_name(class_names, c), rotation=0, ha="right", fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=len(scores) + 1)
    axes[-1, 0].set_xlabel("time (seconds)" if seconds_per_step else "time step")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def per_class_ap_figure(ap: np.ndarray, class_names: Sequence[str] | None = None, title: str = "") -> Figure:
    """Bar chart of per-class AP, sorted descending; NaN (classes without positives) left out."""
    ap = np.asarray(ap, dtype=float)
    keep = np.flatnonzero(~np.isnan(ap))
    order = keep[np.argsort(-ap[keep], kind="stable")]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.08 * len(order) + 2), 3))
    ax.bar(np.arange(len(order)), ap[order], width=0.9)
    names = [class_names[c] if class_names else str(c) for c in order]
    if len(order) <= 60:
        ax.set_xticks(np.arange(len(order)), names, rotation=90, fontsize=6)
    ax.set_ylabel("AP")
    ax.set_ylim(0, 1)
    ax.set_title(
        title or f"per-class AP (mean {ap[keep].mean() if len(keep) else float('nan'):.3f})", fontsize=9
    )
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- classification


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    predictions, labels = np.asarray(predictions, np.int64), np.asarray(labels, np.int64)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape} predictions for {labels.shape} labels")
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (labels, predictions), 1)
    return out


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str] | None = None, title: str = "") -> Figure:
    """Row-normalised confusion matrix (each true class sums to 1), the counts written in the cells
    of small matrices; class names on both axes up to 60 classes."""
    matrix = np.asarray(matrix, dtype=float)
    k = matrix.shape[0]
    totals = matrix.sum(1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    side = min(12.0, max(4.0, 0.35 * k + 2))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 60:
        names = [_name(class_names, c) for c in range(k)]
        ax.set_xticks(np.arange(k), names, rotation=90, fontsize=7)
        ax.set_yticks(np.arange(k), names, fontsize=7)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=6, color=colour)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    correct = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(title or f"confusion (top-1 {correct:.3f}, {int(matrix.sum())} videos)", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ embeddings


def tsne_points(features: np.ndarray, max_points: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of at most ``max_points`` rows (a fixed random subset beyond that, so the cost stays
    seconds): ``(points (n, 2), indices of the rows used)``. Deterministic for a given ``seed``."""
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    index = np.arange(n)
    if n > max_points:
        index = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    x = features[index]
    # perplexity must stay below the number of points; 30 (sklearn's default) for larger sets
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(x), index


def embedding_figure(
    points: Mapping[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """One scatter panel per entry of ``points`` ({panel title: (n, 2)}), coloured by ``labels``
    (n,), one legend entry per class present (named), shared by the panels."""
    labels = np.asarray(labels, np.int64)
    classes = sorted(int(c) for c in np.unique(labels))
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points) + 1.8, 4.2), squeeze=False)
    for ax, (name, xy) in zip(axes[0], points.items()):
        xy = np.asarray(xy)
        if len(xy) != len(labels):
            raise ValueError(f"panel {name!r}: {len(xy)} points for {len(labels)} labels")
        for i, c in enumerate(classes):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=10, color=cmap(i % cmap.N), label=_name(class_names, c))
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1", fontsize=8)
        ax.set_ylabel("t-SNE 2", fontsize=8)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7, markerscale=1.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    return fig


def save_embedding_map(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str] | None,
    path: str | Path,
    max_points: int = 300,
    seed: int = 0,
    title: str = "",
    loggers: Iterable[Any] = (),
) -> np.ndarray:
    """t-SNE of each entry of ``features`` ({panel: (n, D)}, rows of the same items), the same
    ``max_points`` subset in every panel, drawn by :func:`embedding_figure`, written to ``path``
    (warning only) and logged as ``embedding/tsne`` to the W&B loggers among ``loggers``."""
    points: dict[str, np.ndarray] = {}
    index = np.arange(len(labels))
    for name, x in features.items():
        points[name], index = tsne_points(x, max_points, seed)  # same n and seed: same subset
    fig = embedding_figure(points, np.asarray(labels)[index], class_names, title)
    image = save_figure(fig, path)
    log_images(loggers, {"embedding/tsne": image})
    return image


# ---------------------------------------------------------------------------------------- loss curves


def _number(text: str | None) -> float:
    try:
        return float(text or "nan")
    except ValueError:
        return math.nan


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[float, float, float]]]:
    """``metrics.csv`` (Lightning's CSV logger) -> {metric: [(step, epoch, value), ...]}, rows in file
    order; empty cells (metrics not logged on that row) are left out."""
    series: dict[str, list[tuple[float, float, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step, epoch = _number(row.get("step")), _number(row.get("epoch"))
            for key, text in row.items():
                if key in ("step", "epoch") or not text:
                    continue
                value = _number(text)
                if math.isfinite(value):
                    series.setdefault(key, []).append((step, epoch, value))
    return series


def _is_train_loss(name: str) -> bool:
    # the per-step values (Lightning also logs ``train/loss_epoch`` when on_epoch=True)
    return name.startswith("train/") and "loss" in name and not name.endswith("_epoch")


def loss_curves_figure(series: Mapping[str, Sequence[tuple[float, float, float]]], title: str = "") -> Figure:
    """Left: every ``train/*loss*`` per step; right: every ``val/*`` metric per epoch (the last value
    logged in each epoch). A side without metrics says so instead of staying blank."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in sorted(n for n in series if _is_train_loss(n)):
        rows = np.asarray(series[name], dtype=float)
        left.plot(rows[:, 0], rows[:, 2], lw=1, label=name)
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    for name in sorted(n for n in series if n.startswith("val/")):
        per_epoch: dict[float, float] = {}
        for _, epoch, value in series[name]:
            per_epoch[epoch] = value
        epochs = sorted(e for e in per_epoch if math.isfinite(e))
        right.plot(epochs, [per_epoch[e] for e in epochs], marker="o", ms=3, lw=1, label=name)
    right.set_xlabel("epoch")
    right.set_ylabel("validation metric")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- output


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 array and close it."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def run_log_dir(trainer: Any) -> Path:
    """``trainer.log_dir`` without its broadcast: that property is a collective, so rank zero reading
    it alone (to write a picture) waits forever for the other ranks under DDP."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if trainer.loggers:
        logger = trainer.loggers[0]
        path = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
        if path:
            return Path(path)
    return Path(trainer.default_root_dir)


def figure_tag(stage: str, epoch: int, step: int) -> str:
    """The name a figure carries: ``epoch007`` during ``fit``; ``validate_epoch007_step000123`` when
    ``xmkd validate|test`` evaluates the weights of that epoch and step, so that an evaluation written
    into the run that trained the checkpoint leaves that run's own figures as they were."""
    return f"epoch{epoch:03d}" if stage == "fit" else f"{stage}_epoch{epoch:03d}_step{step:06d}"


def trainer_stage(trainer: Any) -> str:
    """``fit``, ``validate``, ``test`` or ``predict``: what the Trainer is running."""
    return str(getattr(trainer.state.fn, "value", trainer.state.fn))


def module_figure_tag(module: Any) -> str:
    """:func:`figure_tag` of a LightningModule's current stage: its own epoch and step during fit,
    when evaluating the epoch and step of the checkpoint it loaded (``_checkpoint_position``, which
    the module sets in ``on_load_checkpoint``)."""
    stage = trainer_stage(module.trainer)
    position = (module.current_epoch, module.global_step)
    if stage != "fit":
        position = getattr(module, "_checkpoint_position", position)
    return figure_tag(stage, *position)


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> np.ndarray:
    """Write the figure as a PNG and return its pixels (the figure is closed); a figure that cannot
    be written (full disk, read-only folder) is a warning: a plot must never end a training run."""
    from lightning.pytorch.utilities import rank_zero_warn

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    except OSError as e:
        with contextlib.suppress(OSError):  # no half-written PNG left behind
            path.unlink(missing_ok=True)
        rank_zero_warn(f"xmkd: could not write the figure {path} ({e.strerror or e}); training goes on")
    return figure_to_array(fig)


def detection_figures(
    ap: np.ndarray,
    videos: Sequence[Mapping[str, Any]],
    folder: Path,
    tag: str,
    class_names: Sequence[str] | None = None,
    max_classes: int = 6,
) -> dict[str, np.ndarray]:
    """A detection epoch's figures, saved as ``<folder>/<tag>_per_class_ap.png`` and one
    ``<tag>_timeline_<video>.png`` per video; returns them by logger tag (``val/per_class_ap``,
    ``val/timeline/<video_id>``). ``videos``: dicts of ``video_id``, ``labels`` (T, C), ``scores``
    {name: (T, C)} and ``seconds_per_step`` (or ``None``)."""
    images: dict[str, np.ndarray] = {}
    images["val/per_class_ap"] = save_figure(
        per_class_ap_figure(ap, class_names), folder / f"{tag}_per_class_ap.png"
    )
    for item in videos:
        fig = timeline_figure(
            item["labels"], item["scores"], class_names=class_names, max_classes=max_classes,
            title=item["video_id"], seconds_per_step=item.get("seconds_per_step"),
        )  # fmt: skip
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in item["video_id"])
        images[f"val/timeline/{item['video_id']}"] = save_figure(fig, folder / f"{tag}_timeline_{safe}.png")
    return images


def log_images(loggers: Iterable[Any], images: Mapping[str, np.ndarray], step: int | None = None) -> None:
    """``log_image`` of each image under its key on every W&B logger among ``loggers`` (one key per
    image: wandb warns for a list of unequal sizes under one key); other loggers are skipped."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for key, image in images.items():
                logger.log_image(key=key, images=[image], step=step)
