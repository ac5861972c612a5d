"""XKD pretraining with its own control: the same online probe on a frozen copy of the initial encoders.

``make pretrain-xkd`` (:mod:`xmkd.pipelines.pretrain_xkd`) trains this module so that "pretrained vs
random init" is measured in one run, over the same batches, with the same probe and schedule.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from xmkd.distill.ema import freeze_
from xmkd.models.heads import mean_patch_tokens
from xmkd.models.masking import TokenMask
from xmkd.modules.xkd import MODALITIES, XKDPretrainer

__all__ = ["XKDWithRandomInitProbe"]


class XKDWithRandomInitProbe(XKDPretrainer):
    """:class:`XKDPretrainer` plus a control probe on a frozen copy of the initial encoders.

    The copies are taken in ``__init__``, so "random init" is exactly the weights pretraining started
    from. The control probes (``probes["random_init_video"]`` / ``["random_init_audio"]``) start as
    copies of the real probes, sit in the same optimiser group (``probe_lr``, no weight decay, same
    warm-up/cosine schedule) and read the same views of the same batches, detached; only the features
    differ. Logged as ``val/random_init_probe_top1`` and ``val/random_init_probe_audio_top1``.

    Also records, per training batch, the time spent waiting for data (previous batch end -> this
    batch start) and in the step (forward, backward, clipping, AdamW, EMA): ``step_times``; and
    where the data module makes the batch's views after the transfer (``augment_on: batch``), the
    part of that wait they took: ``view_times`` (its ``last_views_s``, None elsewhere).

    Args:
        random_init_probe: keep a frozen copy of the initial encoders (the control of the frozen-feature
            SVM probe) and, with ``probe_num_classes > 0``, train the control online probes on it.
        probe_batchnorm: interpretation: an MAE-style linear probe, ``BatchNorm1d(affine=False)``
            before the linear layer (still a linear map of the features), for both the real and the
            control probes, so the probe's lr does not depend on the scale of the features. Without
            it, in the tiny recipe both probes' training losses stayed at chance (ln 10) for the
            first 35 steps, the audio one included although pitch separates the classes.
        **kwargs: everything :class:`XKDPretrainer` takes.
    """

    def __init__(self, random_init_probe: bool = True, probe_batchnorm: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if probe_batchnorm:
            for m in list(self.probes):
                linear = self.probes[m]
                self.probes[m] = nn.Sequential(nn.BatchNorm1d(linear.in_features, affine=False), linear)
        self.random_init_encoders: nn.ModuleDict | None = None
        self.random_init_acc = nn.ModuleDict()
        if random_init_probe:
            # One deepcopy of the dict keeps MAS/MATS block sharing as it was at init.
            self.random_init_encoders = copy.deepcopy(self.student)
            for m in MODALITIES:
                freeze_(self.random_init_encoders[m])
                if self.hparams.probe_num_classes > 0:
                    self.probes[f"random_init_{m}"] = copy.deepcopy(self.probes[m])
                    self.random_init_acc[m] = MulticlassAccuracy(
                        self.hparams.probe_num_classes, top_k=1, average="micro"
                    )
        self.step_times: list[tuple[float, float]] = []  # (data wait s, step s) per training batch
        self.view_times: list[float | None] = []  # of each wait, the views made after the transfer
        self.epoch_start_waits: list[float] = []  # epoch start -> its first batch (workers start up too)
        self._batch_end: float | None = None
        self._epoch_start: float | None = None
        self._batch_start = 0.0
        self._views_s: float | None = None
        self._views: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self._masks: dict[str, TokenMask] | None = None

    def train(self, mode: bool = True) -> XKDWithRandomInitProbe:
        super().train(mode)
        if self.random_init_encoders is not None:
            self.random_init_encoders.eval()
        return self

    def _batch_views(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # Kept so the control probe sees the very same (randomly cropped) audio local view.
        self._views = super()._batch_views(batch)
        return self._views

    def compute_losses(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = super().compute_losses(*args, **kwargs)
        self._masks = out["masks"]  # kept so the control probe sees the very same visible tokens
        return out

    @torch.no_grad()
    def _random_init_features(
        self, views: tuple[Tensor, Tensor, Tensor, Tensor], batch: dict[str, Any]
    ) -> dict[str, Tensor]:
        """The control encoders' features of the views the real probe reads (``probe_view``)."""
        enc = self.random_init_encoders
        assert enc is not None
        video, video_local, spec, spec_local = views
        inputs = {"video": self.probe_video(batch, video), "audio": spec}
        if self.hparams.probe_view == "local":
            inputs = {"video": video_local[:, 0], "audio": spec_local[:, 0]}
        if self.hparams.probe_view == "masked":
            assert self._masks is not None
            return {
                f"random_init_{m}": mean_patch_tokens(enc[m](inputs[m], self._masks[m].keep_indices))
                for m in MODALITIES
            }
        return {f"random_init_{m}": enc[m].patch_mean(inputs[m]) for m in MODALITIES}

    @property
    def online_control(self) -> bool:
        """Whether the control online probes train (a frozen copy and ``probe_num_classes > 0``)."""
        return self.random_init_encoders is not None and len(self.random_init_acc) > 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        if not self.online_control or "label" not in batch or self._views is None:
            return loss
        feats = self._random_init_features(self._views, batch)
        for name, probe_loss in self._probe_losses(feats, batch["label"]).items():
            self.log(f"probe/loss_{name}", probe_loss, on_step=True, on_epoch=False)
            loss = loss + probe_loss
        self._views, self._masks = None, None
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if not self.online_control or "label" not in batch:
            return
        label = batch["label"]
        valid = label >= 0
        if not bool(valid.any()):
            return
        spec = self.audio_spectrogram(batch["audio"]) if "audio" in batch else None
        enc = self.random_init_encoders
        feats = {"video": enc["video"].patch_mean(batch["video"])}
        if spec is not None:
            feats["audio"] = enc["audio"].patch_mean(spec)
        for m, feat in feats.items():
            preds = self.probes[f"random_init_{m}"](feat.float()[valid])
            metric = self.random_init_acc[m]
            metric.update(preds, label[valid])
            name = "val/random_init_probe_top1" if m == "video" else "val/random_init_probe_audio_top1"
            self.log(name, metric, on_step=False, on_epoch=True)

    # -- where the time goes (host clock; this pipeline runs on the CPU)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()
        datamodule = getattr(self.trainer, "datamodule", None)
        self._views_s = getattr(datamodule, "last_views_s", None)
        if self._epoch_start is not None:
            self.epoch_start_waits.append(self._batch_start - self._epoch_start)
            self._epoch_start = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        wait = self._batch_start - self._batch_end if self._batch_end is not None else float("nan")
        self.step_times.append((wait, now - self._batch_start))
        self.view_times.append(self._views_s)
        self._batch_end = now

    def on_train_epoch_start(self) -> None:
        self._batch_end = None  # the first batch of an epoch also waits for worker start-up
        self._epoch_start = time.perf_counter()
