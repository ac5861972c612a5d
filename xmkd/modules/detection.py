"""LightningModules for temporal action detection and Augmented-RGB distillation (METHODS.md B).

- ``DetectionModule``: the shared base — a PDAN or MS-TCN head, masked BCE, Adam with
  ReduceLROnPlateau on ``val/map``, per-frame mAP and the Charades 25-point mAP each validation (and
  test) epoch, and event mAP at IoU thresholds where a config asks for it (TSU, PKU-MMD).
- ``SingleStreamDetector``: one modality (RGB-only or aux-only baseline).
- ``TwoStreamTeacher``: an RGB and an auxiliary (flow / pose) stream fused at logit level (default)
  or at feature level.
- ``AugmentedRGBStudent``: an RGB-only head trained with detection loss + the distillation terms a
  config names; the teacher is frozen, in eval mode, outside the optimiser and outside DDP.

Batches (``xmkd.data.datasets.untrimmed``): ``features`` {modality: (B, T, D)}, ``labels`` (B, T, C) 0/1,
``mask`` (B, T) bool, ``video_id`` list[str]. The best checkpoint monitors ``MONITOR`` ("val/map", max).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor

from xmkd.distill.detection import build_distill_losses
from xmkd.distill.mixin import WeightedLossMixin, WeightedLossSum
from xmkd.distill.teacher_cache import TeacherOutputCache
from xmkd.errors import ConfigError
from xmkd.metrics.detection import CharadesLocalizationMAP, EventMAP, EventProtocol, PerFrameMAP
from xmkd.models.temporal import HeadKind, StageActivation, build_head, masked_bce
from xmkd.modules.data_checks import check_against_data, data_attribute
from xmkd.viz import (
    detection_figures,
    figure_to_array,
    log_images,
    module_figure_tag,
    per_class_ap_figure,
    run_log_dir,
    timeline_figure,
)

# the figure builders moved to xmkd.viz; kept importable from here
__all__ = [
    "AugmentedRGBStudent",
    "DetectionModule",
    "SingleStreamDetector",
    "TwoStreamTeacher",
    "figure_to_array",
    "per_class_ap_figure",
    "timeline_figure",
]

MONITOR = "val/map"
MONITOR_MODE = "max"
DEFAULT_DISTILL = {"atomic": 1.0, "gcr": 1.0, "abs": 1.0}

# --------------------------------------------------------------------------------------------------
# modules


def batch_features(batch: Mapping[str, Any], modality: str) -> Tensor:
    """The (B, T, D) features of one modality, with an error that names what the batch has."""
    feats = batch.get("features", {})
    if modality not in feats:
        raise ConfigError("modality", f"the batch has no '{modality}' features; it has {sorted(feats)}")
    return feats[modality]


class DetectionModule(L.LightningModule):
    """Base: detection head(s), masked BCE, Adam + ReduceLROnPlateau on ``val/map``, mAP metrics.

    Subclasses implement ``forward(batch) -> {"logits", "embedding", "stage_logits", ...}``.

    Args:
        num_classes: 157 for Charades, 51 for TSU / PKU-MMD.
        head: ``pdan`` (dilated attention) or ``mstcn`` (dilated residual convolutions).
        channels, num_blocks, num_stages, dropout, stage_activation: head knobs (PDAN: 512, 5, 1, 0.5,
            release; see ``xmkd.models.temporal.TemporalDetectionHead``).
        loss_all_stages: sum the BCE over all stages (MS-TCN) or only the last stage's.
        lr, weight_decay: Adam (PDAN: 1e-4, 0).
        lr_factor, lr_patience: ReduceLROnPlateau on ``val/map`` (PDAN: 0.5, 8).
        class_names: for plots; ``plot_videos``: validation videos drawn as timelines each epoch
            (0 = no plots); ``plot_classes``: classes per timeline.
        event_iou_thresholds: also log event-based mAP at these temporal IoU thresholds, as
            ``{val,test}/event_map@<iou>`` and their mean ``{val,test}/event_map`` (None: off, the
            default, as Charades reports per-frame mAP only; TSU and PKU-MMD report IoU 0.1-0.5).
            Each video's valid steps are decoded into segments (runs of probability >=
            ``event_score_threshold``, scored by their mean; interpretation, the releases ship no
            decoder), the labels into ground-truth segments by the same rule, in time steps.
        event_protocol: ``pku-mmd`` (default: the official event mAP script of PKU-MMD, which TSU's
            release uses too) or ``activitynet`` (see ``xmkd.metrics.detection.event_map``).

    The test loop (``trainer.test``) logs the same metrics under ``test/``.
    """

    # Read by the xmkd CLI to keep the best checkpoint (and by pipelines to pick it).
    checkpoint_monitor = (MONITOR, MONITOR_MODE)

    def __init__(
        self,
        num_classes: int = 157,
        head: HeadKind = "pdan",
        channels: int = 512,
        num_blocks: int = 5,
        num_stages: int = 1,
        dropout: float = 0.5,
        stage_activation: StageActivation = "release",
        loss_all_stages: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_factor: float = 0.5,
        lr_patience: int = 8,
        class_names: list[str] | None = None,
        plot_videos: int = 4,
        plot_classes: int = 6,
        event_iou_thresholds: list[float] | None = None,
        event_score_threshold: float = 0.5,
        event_protocol: EventProtocol = "pku-mmd",
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError("class_names", f"{len(class_names)} names for num_classes={num_classes}")
        if event_iou_thresholds is not None and (
            not event_iou_thresholds or not all(0 < t <= 1 for t in event_iou_thresholds)
        ):
            raise ConfigError(
                "event_iou_thresholds", f"expected IoU thresholds in (0, 1], got {event_iou_thresholds}"
            )
        if event_protocol not in ("pku-mmd", "activitynet"):
            raise ConfigError("event_protocol", f"expected pku-mmd | activitynet, got {event_protocol!r}")
        # called here, Lightning collects the init args of the subclass frames too (teacher: an instance)
        self.save_hyperparameters(ignore=["teacher"])
        # one set of metrics, used by the validation and the test loop (they never run at once)
        self.val_map = PerFrameMAP()
        self.val_map_25 = CharadesLocalizationMAP()
        self.val_event_map = (
            EventMAP(event_iou_thresholds, event_score_threshold, event_protocol, num_classes)
            if event_iou_thresholds
            else None
        )
        self._plot_buffer: list[dict[str, Any]] = []

    def expected_feature_dims(self) -> dict[str, tuple[str, int]]:
        """Modality -> (hyper-parameter, width) of the features this model reads; checked against the
        data in :meth:`setup`."""
        return {}

    def setup(self, stage: str) -> None:
        """Check ``num_classes`` and the input widths against the data before any step runs."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        dims = data_attribute(datamodule, "feature_dims") or {}
        checks = [
            (
                "num_classes",
                self.hparams.num_classes,
                "num_classes",
                data_attribute(datamodule, "num_classes"),
            )
        ]
        for modality, (key, width) in self.expected_feature_dims().items():
            checks.append((key, width, f"feature width of {modality}", dims.get(modality)))
        check_against_data(self, datamodule, checks)

    def make_head(self, in_dim: int):
        h = self.hparams
        return build_head(
            h.head,
            in_dim,
            h.num_classes,
            h.channels,
            h.num_blocks,
            h.num_stages,
            h.dropout,
            h.stage_activation,
        )

    def detection_loss(self, stage_logits: Sequence[Tensor], labels: Tensor, mask: Tensor) -> Tensor:
        used = stage_logits if self.hparams.loss_all_stages else stage_logits[-1:]
        return sum(masked_bce(logits, labels, mask) for logits in used)

    def shared_loss(self, out: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        return self.detection_loss(out["stage_logits"], batch["labels"], batch["mask"])

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        out = self(batch)
        loss = self.shared_loss(out, batch)
        bs = len(batch["mask"])
        self.log("train/loss_det", loss, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    # validation -----------------------------------------------------------------------------------

    def plot_scores(self, batch: Mapping[str, Any], out: Mapping[str, Any]) -> dict[str, Tensor]:
        """Per-model (B, T, C) probabilities drawn on the timelines; subclasses add teacher etc."""
        return {type(self).__name__: out["logits"].sigmoid()}

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self(batch)
        labels, mask = batch["labels"], batch["mask"]
        self.log("val/loss", self.shared_loss(out, batch), batch_size=len(mask), sync_dist=True)
        self._update_metrics(out, batch)
        if len(self._plot_buffer) < self.hparams.plot_videos:
            scores = self.plot_scores(batch, out)
            duration = batch.get("duration")
            for i in range(len(mask)):
                if len(self._plot_buffer) >= self.hparams.plot_videos:
                    break
                m = mask[i]
                self._plot_buffer.append(
                    {
                        "video_id": str(batch["video_id"][i]),
                        "labels": labels[i][m].float().cpu().numpy(),
                        "scores": {k: v[i][m].float().cpu().numpy() for k, v in scores.items()},
                        "seconds_per_step": self._seconds_per_step(
                            None if duration is None else float(duration[i]), int(m.sum())
                        ),
                    }
                )

    def _update_metrics(self, out: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        labels, mask = batch["labels"], batch["mask"]
        probs = out["logits"].sigmoid()
        self.val_map.update(probs, labels, mask)
        self.val_map_25.update(probs, labels, mask)
        if self.val_event_map is not None:
            self.val_event_map.update(probs, labels, mask)

    def _log_epoch_metrics(self, stage: str) -> np.ndarray:
        """Log ``{stage}/map``, ``map_25`` and the event mAPs; return the per-class AP; reset."""
        # torchmetrics gathers the states of all processes in compute(): every rank gets the same value
        self.log(f"{stage}/map", self.val_map.compute().float(), prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/map_25", self.val_map_25.compute().float(), sync_dist=True)
        if self.val_event_map is not None:
            values = self.val_event_map.compute().float()
            for iou, value in zip(self.val_event_map.iou_thresholds, values):
                self.log(f"{stage}/event_map@{iou:g}", value, sync_dist=True)
            self.log(f"{stage}/event_map", values.mean(), sync_dist=True)
            self.val_event_map.reset()
        ap = self.per_class_ap()  # read after compute(), before reset()
        self.val_map.reset()
        self.val_map_25.reset()
        return ap

    def on_validation_epoch_end(self) -> None:
        ap = self._log_epoch_metrics("val")
        buffer, self._plot_buffer = self._plot_buffer, []
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self.hparams.plot_videos <= 0:
            return
        self._log_figures(ap, buffer)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self(batch)
        self.log("test/loss", self.shared_loss(out, batch), batch_size=len(batch["mask"]), sync_dist=True)
        self._update_metrics(out, batch)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        """Per-step probabilities of each video's valid steps, for :class:`xmkd.predict.PredictionWriter`
        (labels are not read: unlabelled annotation files work)."""
        probs = self(batch)["logits"].sigmoid().float().cpu()
        lengths = batch["mask"].sum(1).tolist()
        duration = batch.get("duration")
        return {
            "kind": "detection",
            "video_id": [str(v) for v in batch["video_id"]],
            "scores": [probs[i, : int(n)] for i, n in enumerate(lengths)],
            "duration": None if duration is None else [float(d) for d in duration],
            "class_names": self.hparams.class_names,
        }

    def per_class_ap(self) -> np.ndarray:
        """Per-class AP of the current validation epoch (NaN for classes without positives)."""
        result = self.val_map.last_result  # set by PerFrameMAP.compute()
        ap = result.ap.detach().cpu().numpy().astype(float)
        ap[~result.valid.detach().cpu().numpy()] = np.nan
        return ap

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # where the weights come from, for the figures of `xmkd validate --ckpt_path` (epoch 0 otherwise)
        self._checkpoint_position = (int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0)))

    def figure_tag(self) -> str:
        """:func:`xmkd.viz.module_figure_tag` (a checkpoint's epoch and step when evaluating one)."""
        return module_figure_tag(self)

    def _datamodule(self) -> Any:
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def plot_class_names(self) -> list[str] | None:
        """``class_names`` of the config, else the data's (``datamodule.class_names``) when it has
        one per class; ``None`` (the figures then say ``class <c>``) otherwise."""
        if self.hparams.class_names:
            return list(self.hparams.class_names)
        names = data_attribute(self._datamodule(), "class_names")
        if names is not None and len(names) == self.hparams.num_classes:
            return [str(n) for n in names]
        return None

    def _seconds_per_step(self, duration: float | None, steps: int) -> float | None:
        """The data's labelling rule's step length: 1 / ``feature_fps`` where the datamodule fixes
        the rate, else the video's duration / its number of steps (the PDAN rule); ``None``
        (time steps on the axis) where neither is known."""
        hparams = data_attribute(self._datamodule(), "hparams")
        fps = getattr(hparams, "feature_fps", None) if hparams is not None else None
        if fps:
            return 1.0 / float(fps)
        if duration is not None and duration > 0 and steps > 0:
            return duration / steps
        return None

    def _log_figures(self, ap: np.ndarray, buffer: list[dict[str, Any]]) -> None:
        images = detection_figures(
            ap, buffer, run_log_dir(self.trainer) / "figures", self.figure_tag(),
            class_names=self.plot_class_names(), max_classes=self.hparams.plot_classes,
        )  # fmt: skip
        log_images(self.loggers, images, step=self.global_step)

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=h.lr, weight_decay=h.weight_decay, fused=True)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=h.lr_factor, patience=h.lr_patience
        )
        # strict=False: a run without a validation loop has no val/map; the lr then stays constant
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": MONITOR, "interval": "epoch", "strict": False},
        }


class SingleStreamDetector(DetectionModule):
    """One-modality detector: the RGB-only baseline (``modality="rgb"``) or an aux-only one."""

    def __init__(self, modality: str = "rgb", input_dim: int = 1024, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head = self.make_head(input_dim)

    def expected_feature_dims(self) -> dict[str, tuple[str, int]]:
        return {self.hparams.modality: ("input_dim", self.hparams.input_dim)}

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        stage_logits, emb = self.head.forward_stages(
            batch_features(batch, self.hparams.modality), batch["mask"]
        )
        return {"logits": stage_logits[-1], "embedding": emb, "stage_logits": stage_logits}


class TwoStreamTeacher(DetectionModule):
    """RGB + auxiliary (flow or pose) streams, each a head, fused.

    Args:
        aux_modality: batch key of the auxiliary stream ("flow" or "pose").
        rgb_dim, aux_dim: input feature dims (I3D: 1024; pose: 256).
        fusion: ``logit_mean`` (the paper's standard, default), ``prob_mean`` (interpretation knob:
            average probabilities; the fused logit is logit(mean prob)), or ``feature`` (concatenate
            the two inputs into one head).
        train_on: for late fusion, ``streams`` trains each stream with its own BCE (interpretation:
            late fusion of two independently trained streams) and ``fused`` trains the fused logits.

    ``forward`` returns ``logits`` (fused), ``embedding`` (mean of the streams' last-block outputs,
    or the feature-fused head's), and for late fusion ``rgb_embedding`` / ``aux_embedding`` (MARS).
    """

    def __init__(
        self,
        aux_modality: str = "flow",
        rgb_dim: int = 1024,
        aux_dim: int = 1024,
        fusion: Literal["logit_mean", "prob_mean", "feature"] = "logit_mean",
        train_on: Literal["streams", "fused"] = "streams",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if fusion not in ("logit_mean", "prob_mean", "feature"):
            raise ConfigError("fusion", f"expected logit_mean | prob_mean | feature, got {fusion!r}")
        if fusion == "feature":
            self.fused_head = self.make_head(rgb_dim + aux_dim)
        else:
            self.rgb_head = self.make_head(rgb_dim)
            self.aux_head = self.make_head(aux_dim)

    @property
    def embedding_dim(self) -> int:
        return self.hparams.channels

    def expected_feature_dims(self) -> dict[str, tuple[str, int]]:
        return {
            "rgb": ("rgb_dim", self.hparams.rgb_dim),
            self.hparams.aux_modality: ("aux_dim", self.hparams.aux_dim),
        }

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        mask = batch["mask"]
        rgb = batch_features(batch, "rgb")
        aux = batch_features(batch, self.hparams.aux_modality)
        if self.hparams.fusion == "feature":
            stage_logits, emb = self.fused_head.forward_stages(torch.cat([rgb, aux], -1), mask)
            return {"logits": stage_logits[-1], "embedding": emb, "stage_logits": stage_logits}
        rgb_logits, rgb_emb = self.rgb_head.forward_stages(rgb, mask)
        aux_logits, aux_emb = self.aux_head.forward_stages(aux, mask)
        fused = [self._fuse(a, b) for a, b in zip(rgb_logits, aux_logits)]
        return {
            "logits": fused[-1],
            "embedding": (rgb_emb + aux_emb) / 2,
            "rgb_embedding": rgb_emb,
            "aux_embedding": aux_emb,
            "stage_logits": fused,
            "rgb_stage_logits": rgb_logits,
            "aux_stage_logits": aux_logits,
        }

    def _fuse(self, a: Tensor, b: Tensor) -> Tensor:
        if self.hparams.fusion == "logit_mean":
            return (a + b) / 2
        p = (a.sigmoid() + b.sigmoid()) / 2
        return torch.logit(p, eps=1e-6)

    def shared_loss(self, out: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        if self.hparams.fusion != "feature" and self.hparams.train_on == "streams":
            labels, mask = batch["labels"], batch["mask"]
            return self.detection_loss(out["rgb_stage_logits"], labels, mask) + self.detection_loss(
                out["aux_stage_logits"], labels, mask
            )
        return super().shared_loss(out, batch)


class AugmentedRGBStudent(WeightedLossMixin, DetectionModule):
    """RGB-only detector distilled from a frozen ``TwoStreamTeacher`` (Augmented-RGB).

    Args:
        teacher_checkpoint: a ``TwoStreamTeacher`` checkpoint; loaded frozen (eval, no grad), kept
            out of the optimiser, the state dict and DDP. ``teacher`` passes an instance instead
            (programmatic use; not saved in hparams). Give neither to load a trained student for
            inference; then ``teacher_dims`` must hold the teacher's (embedding, aux) dims.
        distill: term name -> weight, from ``xmkd.distill.detection.DISTILL_LOSSES``
            (default {atomic: 1, gcr: 1, abs: 1}, the paper's alpha = beta = gamma = 1).
        distill_options: term name -> keyword options of that term (e.g. {gcr: {mode: kl}}).
        cache_teacher: keep the teacher outputs per ``video_id`` (on the CPU) and reuse them. Each
            entry is keyed by a fingerprint of the video's input features (valid length and sums),
            so a randomly cropped sequence simply misses the cache and is recomputed: the cache
            only saves work when inputs are deterministic (whole sequences, ``max_len`` >= the
            longest video), and is never wrong. Memory: about T x (E + C) floats per video.
        baseline_checkpoint: an optional RGB-only ``SingleStreamDetector`` drawn on the timelines.
        teacher_embedding: interpretation: which teacher embedding the embedding terms (atomic,
            gcr, abs, fitnets, at, sp, crd, rkd) read. ``aux`` (default): the two-stream teacher's
            auxiliary (flow / pose) stream's, the knowledge the RGB student lacks. ``fused``: the
            mean of its streams' embeddings; in a late-fusion teacher its variance is mostly the RGB
            stream's, which an RGB student matches without learning the motion (a linear map from
            the student's embedding explains 0.54 of the fused embedding's variance and 0.07 of the
            flow stream's; README, Augmented-RGB results). ``mars`` always reads the auxiliary stream.
    """

    def __init__(
        self,
        teacher_checkpoint: str | None = None,
        distill: dict[str, float] | None = None,
        distill_options: dict[str, dict[str, Any]] | None = None,
        cache_teacher: bool = False,
        rgb_dim: int = 1024,
        teacher_dims: tuple[int, int] | None = None,
        baseline_checkpoint: str | None = None,
        teacher: TwoStreamTeacher | None = None,
        teacher_embedding: Literal["fused", "aux"] = "aux",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if teacher_embedding not in ("fused", "aux"):
            raise ConfigError("teacher_embedding", f"expected fused | aux, got {teacher_embedding!r}")
        self.distill_weights = dict(DEFAULT_DISTILL if distill is None else distill)
        # detection loss first, then the terms in their configured order: total = det + sum w_i L_i
        try:
            self.loss_sum = WeightedLossSum(
                {"det": 1.0, **self.distill_weights}, prefix="train/loss_", total_key="train/loss"
            )
        except ValueError as e:
            raise ConfigError("distill", str(e)) from e
        if teacher is None and teacher_checkpoint is not None:
            teacher = self._load_frozen(TwoStreamTeacher, teacher_checkpoint, "teacher_checkpoint")
        if teacher is not None:
            self.set_teacher(teacher)
            teacher_dims = (teacher.embedding_dim, teacher.hparams.channels)
            self.hparams.teacher_dims = teacher_dims  # so a saved student rebuilds without the teacher
        elif teacher_dims is None:
            raise ConfigError(
                "teacher_checkpoint", "give a teacher checkpoint (or teacher_dims to load a student)"
            )
        self._baseline: list[L.LightningModule] = []
        if baseline_checkpoint is not None:
            self._baseline.append(
                self._load_frozen(SingleStreamDetector, baseline_checkpoint, "baseline_checkpoint")
            )
        self.head = self.make_head(rgb_dim)
        try:
            self.distill_losses = build_distill_losses(
                self.distill_weights, self.hparams.channels, teacher_dims[0], teacher_dims[1], distill_options
            )
        except ValueError as e:
            raise ConfigError("distill", str(e)) from e
        # what the terms read -> the teacher output it comes from
        self._teacher_sources = {
            k: ("aux_embedding" if k == "embedding" and teacher_embedding == "aux" else k)
            for loss in self.distill_losses.values()
            for k in loss.teacher_keys
        }
        self._teacher_keys = sorted(set(self._teacher_sources.values()))
        self._cache = TeacherOutputCache(self._teacher_keys)

    # the frozen teacher -------------------------------------------------------------------------

    @staticmethod
    def _load_frozen(cls: type[L.LightningModule], path: str, key: str) -> L.LightningModule:
        if not Path(path).is_file():
            raise ConfigError(key, f"checkpoint not found: {path}")
        # LightningCLI builds the student inside its "given hyperparameters" context; loading the
        # teacher in that context would hand it the student's hyperparameters. A fresh context
        # loads the teacher with its own. Building the teacher initialises weights that the
        # checkpoint then replaces: forked RNG, so the student initialises and trains the same at a
        # seed whether its teacher comes from a checkpoint or as an instance.
        with torch.random.fork_rng(devices=[]):
            return contextvars.Context().run(cls.load_from_checkpoint, path, map_location="cpu")

    def set_teacher(self, teacher: TwoStreamTeacher) -> None:
        """Attach a frozen teacher without registering it as a submodule (not in parameters(),
        state_dict() or DDP's view); ``on_fit_start`` moves it to the student's device."""
        teacher.eval()
        teacher.requires_grad_(False)
        object.__setattr__(self, "_teacher", teacher)

    @property
    def teacher(self) -> TwoStreamTeacher | None:
        return self.__dict__.get("_teacher")

    def _move_frozen(self) -> None:
        for frozen in [self.teacher, *self._baseline]:
            if frozen is not None:
                frozen.to(self.device).eval()

    def expected_feature_dims(self) -> dict[str, tuple[str, int]]:
        return {"rgb": ("rgb_dim", self.hparams.rgb_dim)}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.distill_weights and self.teacher is None:
            raise ConfigError(
                "teacher_checkpoint", "distillation terms are configured but no teacher is loaded"
            )
        teacher = self.teacher
        if (
            teacher is not None
            and "aux_embedding" in self._teacher_keys
            and teacher.hparams.fusion == "feature"
        ):
            raise ConfigError(
                "teacher_embedding" if self.hparams.teacher_embedding == "aux" else "distill.mars",
                "reading the teacher's auxiliary stream (mars, teacher_embedding: aux) needs a late-fusion "
                "teacher (fusion != feature)",
            )

    def on_fit_start(self) -> None:
        self._move_frozen()

    def on_validation_start(self) -> None:
        self._move_frozen()

    def teacher_outputs(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The teacher's outputs under the names the configured terms read (``embedding`` is the
        teacher's fused or auxiliary embedding, see ``teacher_embedding``)."""
        raw = self._teacher_raw(batch)
        return {k: raw[source] for k, source in self._teacher_sources.items()}

    @torch.no_grad()
    def _teacher_raw(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The teacher's outputs the configured terms need, from the cache when enabled and valid."""
        teacher = self.teacher
        if teacher is None:
            raise ConfigError("teacher_checkpoint", "no teacher loaded")
        teacher.eval()
        if not self.hparams.cache_teacher:
            out = teacher(batch)
            return {k: out[k] for k in self._teacher_keys}
        return self._cache.outputs(batch, teacher, self.device)

    # training -----------------------------------------------------------------------------------

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        stage_logits, emb = self.head.forward_stages(batch_features(batch, "rgb"), batch["mask"])
        return {"logits": stage_logits[-1], "embedding": emb, "stage_logits": stage_logits}

    def distillation_terms(self, out: Mapping[str, Tensor], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        if not self.distill_losses:
            return {}
        t_out = self.teacher_outputs(batch)
        return {name: loss(out, t_out, batch["mask"]) for name, loss in self.distill_losses.items()}

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        out = self(batch)
        bs = len(batch["mask"])
        terms = {"det": self.shared_loss(out, batch), **self.distillation_terms(out, batch)}
        total, logs = self.combine_losses(terms)
        for key, value in logs.items():
            self.log(key, value, prog_bar=key == self.loss_sum.total_key, batch_size=bs)
        return total

    def plot_scores(self, batch: Mapping[str, Any], out: Mapping[str, Any]) -> dict[str, Tensor]:
        scores = {"student": out["logits"].sigmoid()}
        with torch.no_grad():
            if self.teacher is not None:
                scores["teacher"] = self.teacher(batch)["logits"].sigmoid()
            for b in self._baseline:
                scores["rgb baseline"] = b(batch)["logits"].sigmoid()
        return scores
