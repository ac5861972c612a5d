"""What ``xmkd predict`` writes: the predictions of every module, in files a user can submit or read.

Each LightningModule's ``predict_step`` returns plain CPU data tagged with a ``kind``;
:class:`PredictionWriter` (added by the CLI to every ``predict`` run) collects them and, at the end
of the loop, writes into ``<run_dir>/predictions/``:

``detection`` (:mod:`xmkd.modules.detection`)
    ``frame_scores.npz``: one (T, C) array of per-step probabilities per video id;
    ``charades_localize.txt``: the Charades localisation submission (``Charades_v1_localize``):
    per video 25 lines ``<video_id> <frame 1..25> <score of class 0> ... <score of class C-1>``;
    ``segments.json``: detected segments per video (runs of probability >= the module's
    ``event_score_threshold``, see :func:`xmkd.metrics.detection.segments_from_frame_scores`) with
    class index, class name, start and end in seconds and score.
``classification`` (:class:`~xmkd.modules.classifier.VideoClassifier`)
    ``topk.json``: per video the top-k classes (name, index, probability) after averaging the
    video's views the module's way (``aggregate``), and its label where the file has one.
``embedding`` (:class:`~xmkd.modules.xkd.XKDPretrainer`)
    ``embeddings.npz``: ``video_id`` (N,), ``label`` (N,) (-1: unknown) and one (N, D) array per
    modality (``video``, ``audio``): the student encoders' clip features averaged over the views.

Unlabelled annotation files work: nothing here reads labels except to copy them when known.
With several processes each rank writes its own files, suffixed ``.rank<k>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from xmkd.metrics.detection import charades_sample_indices, segments_from_frame_scores

__all__ = [
    "PredictionWriter",
    "charades_submission_lines",
    "class_names_for",
    "detection_segments",
    "mean_per_video",
    "top_k",
    "video_probabilities",
]

CHARADES_POINTS = 25


# ------------------------------------------------------------------------------------ pure helpers


def class_names_for(num_classes: int, *sources: Sequence[str] | None) -> list[str]:
    """The first source with ``num_classes`` names, else ``class 0`` ... (a wrong-length list is
    skipped rather than trusted: it would misname every class after the first gap)."""
    for names in sources:
        if names is not None and len(names) == num_classes:
            return [str(n) for n in names]
    return [f"class {i}" for i in range(num_classes)]


def detection_segments(
    scores: Tensor,
    duration_s: float | None,
    class_names: Sequence[str],
    threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Detected segments of one video from its (T, C) per-step probabilities.

    With the video's duration, step t covers ``[t, t + 1) * duration / T`` seconds (the PDAN label
    rule's fps = T / duration); without it times are in steps. Sorted by start, then class.
    """
    steps = scores.shape[0]
    fps = steps / duration_s if duration_s else 1.0
    rows = segments_from_frame_scores(scores, fps, threshold)
    out = []
    for cls, start, end, score in rows.tolist():
        if duration_s:
            end = min(end, duration_s)
        out.append(
            {
                "class_index": int(cls),
                "class_name": class_names[int(cls)],
                "start": round(start, 4),
                "end": round(end, 4),
                "score": round(score, 6),
            }
        )
    return sorted(out, key=lambda s: (s["start"], s["class_index"]))


def charades_submission_lines(
    video_id: str, scores: Tensor, points: int = CHARADES_POINTS, rule: str = "linspace"
) -> list[str]:
    """The ``Charades_v1_localize`` submission lines of one video: ``points`` equally spaced steps
    (picked as :class:`~xmkd.metrics.detection.CharadesLocalizationMAP` scores them), numbered from 1,
    each followed by the C class scores."""
    idx = charades_sample_indices(scores.shape[0], points, rule)  # type: ignore[arg-type]
    sampled = scores[idx].double().numpy()
    return [f"{video_id} {j + 1} " + " ".join(f"{v:.6f}" for v in row) for j, row in enumerate(sampled)]


def mean_per_video(video_ids: Sequence[str], values: Tensor) -> tuple[list[str], Tensor, list[int]]:
    """Average the rows of ``values`` (N, ...) that share a video id.

    Returns the ids in order of first appearance, their means and how many rows (views) each had.
    """
    order: dict[str, int] = {}
    for vid in video_ids:
        order.setdefault(str(vid), len(order))
    index = torch.tensor([order[str(v)] for v in video_ids], dtype=torch.long)
    sums = torch.zeros((len(order), *values.shape[1:]), dtype=torch.float64)
    sums.index_add_(0, index, values.double())
    counts = torch.bincount(index, minlength=len(order))
    means = sums / counts.view(-1, *([1] * (values.dim() - 1)))
    return list(order), means, counts.tolist()


def video_probabilities(
    video_ids: Sequence[str], logits: Tensor, aggregate: str = "softmax"
) -> tuple[list[str], Tensor, list[int]]:
    """Per-video class probabilities from per-view logits, combined as ``VideoLevelAccuracy`` does:
    ``softmax`` averages the views' probabilities, ``scores`` takes the softmax of the mean logits."""
    if aggregate == "softmax":
        return mean_per_video(video_ids, logits.double().softmax(-1))
    if aggregate == "scores":
        ids, means, counts = mean_per_video(video_ids, logits)
        return ids, means.softmax(-1), counts
    raise ValueError(f"aggregate must be softmax | scores, got {aggregate!r}")


def top_k(probabilities: Tensor, k: int, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of one video (at most the number of classes), best first."""
    values, indices = probabilities.topk(min(k, probabilities.shape[-1]))
    return [
        {"class_index": int(i), "class_name": class_names[int(i)], "probability": round(float(v), 6)}
        for v, i in zip(values.tolist(), indices.tolist())
    ]


# ------------------------------------------------------------------------------------ the writer


def _data_class_names(trainer: Trainer) -> list[str] | None:
    """The datamodule's class names where it knows them (after setup), else None."""
    try:
        names = getattr(trainer.datamodule, "class_names", None)
    except (RuntimeError, AttributeError):
        return None
    return list(names) if names is not None else None


class PredictionWriter(Callback):
    """Collects the ``predict_step`` outputs of a run and writes them under ``output_dir``.

    Args:
        output_dir: the folder (the CLI's: ``<run_dir>/predictions``).
        top_k: classes listed per video for classifiers.
        threshold: detection segments' probability threshold (``None``: the module's
            ``event_score_threshold``, else 0.5).
    """

    def __init__(self, output_dir: str | Path, top_k: int = 5, threshold: float | None = None) -> None:
        # A plain Callback, not BasePredictionWriter: that one makes the loop track batch indices,
        # which it cannot for xmkd's loaders (a warning per run), and nothing here needs them.
        self.output_dir = Path(output_dir)
        self.top_k = top_k
        self.threshold = threshold
        self._outputs: list[Mapping[str, Any]] = []
        self.written: list[Path] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outputs = []

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(prediction, Mapping) or "kind" not in prediction:
            raise TypeError(
                f"{type(pl_module).__name__}.predict_step must return a dict with a 'kind' "
                f"(detection | classification | embedding) for PredictionWriter; got {type(prediction).__name__}"
            )
        self._outputs.append(prediction)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        outputs, self._outputs = self._outputs, []
        if not outputs:
            return
        kinds = {o["kind"] for o in outputs}
        if len(kinds) != 1:
            raise ValueError(f"predict_step returned several kinds of outputs: {sorted(kinds)}")
        kind = kinds.pop()
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        writers = {
            "detection": self._write_detection,
            "classification": self._write_classification,
            "embedding": self._write_embeddings,
        }
        if kind not in writers:
            raise ValueError(f"unknown prediction kind {kind!r}; expected one of {sorted(writers)}")
        self.written = writers[kind](outputs, trainer, pl_module, suffix)
        if trainer.is_global_zero:
            print(
                f"xmkd: predictions written to {self.output_dir} ({', '.join(p.name for p in self.written)})"
            )

    def _path(self, name: str, suffix: str) -> Path:
        stem, dot, ext = name.partition(".")
        return self.output_dir / f"{stem}{suffix}{dot}{ext}"

    def _write_detection(
        self, outputs: list[Mapping[str, Any]], trainer: Trainer, pl_module: LightningModule, suffix: str
    ) -> list[Path]:
        ids = [str(v) for o in outputs for v in o["video_id"]]
        scores = [s for o in outputs for s in o["scores"]]
        durations = [d for o in outputs for d in (o.get("duration") or [None] * len(o["video_id"]))]
        num_classes = scores[0].shape[-1]
        names = class_names_for(num_classes, outputs[0].get("class_names"), _data_class_names(trainer))
        threshold = self.threshold
        if threshold is None:
            threshold = float(getattr(pl_module.hparams, "event_score_threshold", 0.5))
        frame_path = self._path("frame_scores.npz", suffix)
        np.savez_compressed(frame_path, **{vid: s.numpy() for vid, s in zip(ids, scores)})
        charades_path = self._path("charades_localize.txt", suffix)
        lines = [line for vid, s in zip(ids, scores) for line in charades_submission_lines(vid, s)]
        charades_path.write_text("\n".join(lines) + "\n")
        segments = {
            vid: {
                "duration_s": d,
                "steps": int(s.shape[0]),
                "segments": detection_segments(s, d, names, threshold),
            }
            for vid, s, d in zip(ids, scores, durations)
        }
        payload = {
            "time_unit": "seconds" if all(d for d in durations) else "steps",
            "threshold": threshold,
            "class_names": names,
            "videos": segments,
        }
        segments_path = self._path("segments.json", suffix)
        segments_path.write_text(json.dumps(payload, indent=1))
        return [frame_path, charades_path, segments_path]

    def _write_classification(
        self, outputs: list[Mapping[str, Any]], trainer: Trainer, pl_module: LightningModule, suffix: str
    ) -> list[Path]:
        ids = [str(v) for o in outputs for v in o["video_id"]]
        logits = torch.cat([o["logits"] for o in outputs])
        labels = torch.cat([o["label"] for o in outputs])
        aggregate = outputs[0].get("aggregate", "softmax")
        videos, probs, views = video_probabilities(ids, logits, aggregate)
        names = class_names_for(probs.shape[-1], _data_class_names(trainer))
        label_of = {vid: int(lab) for vid, lab in zip(ids, labels.tolist())}
        rows = []
        for vid, p, n in zip(videos, probs, views):
            row: dict[str, Any] = {"video_id": vid, "views": n, "top": top_k(p, self.top_k, names)}
            if label_of[vid] >= 0:
                row["label"] = {"class_index": label_of[vid], "class_name": names[label_of[vid]]}
            rows.append(row)
        path = self._path("topk.json", suffix)
        path.write_text(json.dumps({"aggregate": aggregate, "k": self.top_k, "videos": rows}, indent=1))
        return [path]

    def _write_embeddings(
        self, outputs: list[Mapping[str, Any]], trainer: Trainer, pl_module: LightningModule, suffix: str
    ) -> list[Path]:
        ids = [str(v) for o in outputs for v in o["video_id"]]
        labels = torch.cat([o["label"] for o in outputs])
        arrays: dict[str, np.ndarray] = {}
        videos: list[str] = []
        for modality in outputs[0]["embeddings"]:
            values = torch.cat([o["embeddings"][modality] for o in outputs])
            videos, means, _ = mean_per_video(ids, values)
            arrays[modality] = means.float().numpy()
        label_of = {vid: int(lab) for vid, lab in zip(ids, labels.tolist())}
        path = self._path("embeddings.npz", suffix)
        np.savez(
            path,
            video_id=np.array(videos),
            label=np.array([label_of[v] for v in videos], dtype=np.int64),
            **arrays,
        )
        return [path]
