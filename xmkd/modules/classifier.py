"""Video (or audio) classification on top of an exported XKD encoder: linear probe or full fine-tuning.

``mode="linear"`` (the K400 linear protocol): the encoder is frozen and kept in eval mode; a linear
layer is trained on its clip feature (mean of the patch tokens after the final norm) with AdamW,
lr 0.01, 10 warm-up epochs, cosine over 100 epochs.

``mode="finetune"`` (XKD's UCF101 / HMDB51 recipe): every weight trains, with layer-wise lr decay
(0.45 UCF101, 0.75 HMDB51; see :mod:`xmkd.eval.finetune_utils` for the formula), stochastic depth,
mixup 0.6 / cutmix 0.5 (HMDB51: 1 / 1) with label smoothing 0.1, dropout 0.5 before the head, AdamW
lr 5e-4, wd 0.05, 5 warm-up epochs, cosine to 1e-6; the input may be larger than in pretraining
(224 from 112): the position embeddings are then interpolated once and trained at the new size.
RandAugment and random erasing live in the data transform (``train_transform: finetune``).

Validation / test: multi-view testing; every view's logits go to
:class:`~xmkd.metrics.classification.VideoLevelAccuracy`, which averages the views of a video and
logs ``{val,test}/{clip,video}_top{1,5}``. Audio encoders take the batch's ``audio`` waveform,
turned into the XKD log-mel spectrogram on the device.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmkd.checkpoint_check import XKD, checkpoint_module_class, load_checkpoint_module, read_checkpoint
from xmkd.errors import ConfigError
from xmkd.eval.finetune_utils import (
    layer_decay_param_groups,
    mix_batch,
    soft_target_cross_entropy,
)
from xmkd.metrics.classification import VideoLevelAccuracy
from xmkd.models.audio import LogMelSpectrogram
from xmkd.models.vit import EncoderConfig, ViTEncoder, build_encoder, interpolate_pos_embed
from xmkd.modules.data_checks import check_against_data, data_attribute
from xmkd.modules.xkd import XKDPretrainer
from xmkd.optim import build_adamw, param_groups_weight_decay, warmup_cosine_lambda
from xmkd.viz import (
    confusion_figure,
    confusion_matrix,
    log_images,
    module_figure_tag,
    run_log_dir,
    save_figure,
    trainer_stage,
)

__all__ = ["VideoClassifier", "load_encoder_for_eval", "resize_encoder_input"]

#: Offset between clip and crop index in the view number given to the metric (crops < 1000).
_VIEW_STRIDE = 1000


def encoder_from_xkd_checkpoint(path: str | Path, encoder_key: str = "student_video") -> ViTEncoder:
    """One encoder (``student_video``, ``student_audio``, ``teacher_video``, ``teacher_audio``) of an
    XKD Lightning checkpoint, as ``xmkd export`` would write it; other checkpoints are refused by name."""
    kind = checkpoint_module_class(read_checkpoint(path))
    if kind != XKD:
        raise ConfigError(
            "encoder_path", f"{path} is a {kind or 'checkpoint of an unknown module'}, not an XKDPretrainer's"
        )
    role, _, modality = encoder_key.partition("_")
    if role not in ("student", "teacher") or modality not in ("video", "audio"):
        raise ConfigError(
            "encoder_key",
            f"expected student_video | student_audio | teacher_video | teacher_audio, got {encoder_key!r}",
        )

    model = load_checkpoint_module(XKDPretrainer, path)
    return getattr(model, role)[modality]


def load_encoder_for_eval(
    path: str | Path, drop_path: float | None = None, encoder_key: str = "student_video"
) -> ViTEncoder:
    """Rebuild an exported encoder (``.pt`` + ``.json``), or take ``encoder_key`` of an XKD Lightning
    checkpoint (``.ckpt``), optionally with a new stochastic-depth rate."""
    path = Path(path)
    if path.suffix == ".ckpt":
        encoder = encoder_from_xkd_checkpoint(path, encoder_key)
        config = encoder.config.to_dict()
        if drop_path is not None:
            config["drop_path"] = drop_path
        rebuilt = build_encoder(config)  # a standalone copy (MAS/MATS students share their blocks)
        rebuilt.load_state_dict(encoder.state_dict())
        return rebuilt
    meta = path.with_suffix(".json")
    if not path.is_file():
        raise ConfigError("encoder_path", f"{path}: exported encoder weights not found")
    if not meta.is_file():
        raise ConfigError("encoder_path", f"{meta}: architecture JSON next to {path.name} not found")
    config = json.loads(meta.read_text())
    if drop_path is not None:
        config["drop_path"] = drop_path
    encoder = build_encoder(config)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            "encoder_path",
            f"{path}: weights do not match {meta.name}: missing {missing[:5]}, unexpected {unexpected[:5]}",
        )
    return encoder


def resize_encoder_input(encoder: ViTEncoder, input_size: tuple[int, ...]) -> ViTEncoder:
    """Change the encoder's native input size, interpolating its position embeddings once.

    The new embeddings are a trainable parameter at the new grid (fine-tuning at 224 from 112);
    the CLS embedding is kept as is.
    """
    input_size = tuple(input_size)
    old = encoder.config
    if input_size == old.input_size:
        return encoder
    new_config = EncoderConfig(**{**old.to_dict(), "input_size": list(input_size)})
    with torch.no_grad():
        patches = interpolate_pos_embed(
            encoder.pos_embed[:, 1:], old.grid, new_config.grid, old.pos_embed_resize
        )
        encoder.pos_embed = nn.Parameter(torch.cat([encoder.pos_embed[:, :1], patches], dim=1))
    encoder.config = new_config
    return encoder


class VideoClassifier(pl.LightningModule):
    """Linear probe or fine-tuning of an exported encoder, with multi-view video-level testing.

    Args:
        encoder_path: an exported encoder ``.pt`` (its ``.json`` next to it), e.g.
            ``runs/pretrain-xkd/encoders/student_video.pt``, or an XKD Lightning checkpoint
            (``.ckpt``, e.g. ``runs/xkd_vitb_k400/version_0/checkpoints/last.ckpt``).
        encoder_key: which encoder of an XKD checkpoint: ``student_video`` (default),
            ``student_audio``, ``teacher_video`` or ``teacher_audio`` (ignored for a ``.pt``).
        num_classes: classes of the downstream dataset.
        mode: ``linear`` (frozen encoder in eval mode, linear head) or ``finetune`` (all weights).
        input_size: fine-tune at this input size ((frames, H, W) or (mel_bins, frames)); the position
            embeddings are interpolated once. ``None``: the encoder's own size.
        drop_path: stochastic depth of the fine-tuned encoder (interpretation: XKD does not state the
            rate; 0.1 is VideoMAE's for ViT-B). Ignored in linear mode.
        head_dropout: dropout before the head (0.5 fine-tuning).
        linear_batchnorm: interpretation: a BatchNorm without affine before the linear head (MAE's
            linear probing); off by default, as XKD does not mention one.
        lr, weight_decay, betas: AdamW (no weight decay on biases, norms, position embeddings).
        layer_decay: layer-wise lr decay (fine-tuning; 1 = none).
        warmup_epochs, min_lr: linear warm-up, then per-step cosine to ``min_lr``.
        mixup_alpha, cutmix_alpha, mix_switch_prob, mix_prob: batch mixing (fine-tuning only).
        label_smoothing: folded into the soft targets.
        aggregate: how views are combined per video: ``softmax`` (mean probability) or ``scores``.
        audio_frames: audio encoders: spectrogram frames kept (``None``: the encoder's input size).
        plot_confusion: at the end of each validation / test epoch, write the video-level confusion
            matrix to ``<run>/figures/confusion_<stage>.png`` during fit (the last epoch's stays; an
            evaluation writes ``<stage>_epochE_stepS_confusion_<stage>.png`` beside it),
            class names from the datamodule, and log it to W&B where a W&B logger is present.
    """

    checkpoint_monitor = ("val/video_top1", "max")

    def __init__(
        self,
        encoder_path: str,
        num_classes: int,
        mode: Literal["linear", "finetune"] = "finetune",
        input_size: list[int] | None = None,
        drop_path: float = 0.1,
        head_dropout: float = 0.5,
        linear_batchnorm: bool = False,
        lr: float = 5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        layer_decay: float = 0.75,
        warmup_epochs: float = 5.0,
        min_lr: float = 1e-6,
        mixup_alpha: float = 0.6,
        cutmix_alpha: float = 0.5,
        mix_switch_prob: float = 0.5,
        mix_prob: float = 1.0,
        label_smoothing: float = 0.1,
        aggregate: Literal["softmax", "scores"] = "softmax",
        audio_frames: int | None = None,
        encoder_key: str = "student_video",
        plot_confusion: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if mode not in ("linear", "finetune"):
            raise ConfigError("mode", f"must be linear | finetune, got {mode!r}")
        if num_classes < 2:
            raise ConfigError("num_classes", f"must be >= 2, got {num_classes}")
        encoder = load_encoder_for_eval(encoder_path, drop_path if mode == "finetune" else 0.0, encoder_key)
        if input_size is not None:
            encoder = resize_encoder_input(encoder, tuple(input_size))
        self.encoder = encoder
        self.modality = encoder.config.modality
        dim = encoder.dim
        if mode == "linear":
            self.encoder.requires_grad_(False)
            norm: nn.Module = nn.BatchNorm1d(dim, affine=False) if linear_batchnorm else nn.Identity()
            self.head = nn.Sequential(norm, nn.Linear(dim, num_classes))
            nn.init.trunc_normal_(self.head[1].weight, std=0.01)
            nn.init.zeros_(self.head[1].bias)
        else:
            self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(dim, num_classes))
            # MAE/VideoMAE initialise the fine-tuning head small so early logits are near uniform.
            nn.init.trunc_normal_(self.head[1].weight, std=2e-5)
            nn.init.zeros_(self.head[1].bias)
        self.val_accuracy = VideoLevelAccuracy(aggregate=aggregate)
        self.test_accuracy = VideoLevelAccuracy(aggregate=aggregate)
        self._aux: dict[str, Any] = {}  # the log-mel front end, not part of the checkpoint

    def setup(self, stage: str) -> None:
        """Check ``num_classes`` against the data's before any step (else: an index error in the loss)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = data_attribute(datamodule, "num_classes")
        check_against_data(
            self, datamodule, [("num_classes", self.hparams.num_classes, "num_classes", data_classes)]
        )

    # ------------------------------------------------------------------ inputs

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.hparams.mode == "linear":
            self.encoder.eval()  # frozen features: no dropout / drop path, fixed norms
        return self

    def spectrogram(self, waveform: Tensor) -> Tensor:
        """(B, N) 16 kHz waveform -> (B, mel_bins, frames) XKD log-mel, in float32 on the device."""
        mel = self._aux.get("melspec")
        if mel is None:
            mel = self._aux["melspec"] = LogMelSpectrogram(n_mels=self.encoder.config.input_size[0])
        mel = mel.to(waveform.device)
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            spec = mel(waveform.float())
        frames = self.hparams.audio_frames or self.encoder.config.input_size[1]
        if spec.shape[-1] < frames:
            raise ConfigError(
                "audio_frames",
                f"the batch's audio ({waveform.shape[-1]} samples) gives {spec.shape[-1]} spectrogram frames; "
                f"the encoder needs {frames} (lengthen the data module's audio_seconds)",
            )
        return spec[..., :frames]

    def inputs(self, batch: dict[str, Any]) -> Tensor:
        if self.modality == "audio":
            if "audio" not in batch:
                raise ConfigError(
                    "with_audio", "an audio encoder needs batches with 'audio' (set with_audio: true)"
                )
            return self.spectrogram(batch["audio"])
        return batch["video"]

    def features(self, x: Tensor) -> Tensor:
        """Clip features (B, D): mean of the patch tokens after the final norm."""
        if self.hparams.mode == "linear":
            with torch.no_grad():
                return self.encoder.patch_mean(x).float()
        return self.encoder.patch_mean(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        hp = self.hparams
        x, labels = self.inputs(batch), batch["label"]
        if hp.mode == "finetune":
            mixed = mix_batch(
                x, labels, hp.num_classes, hp.mixup_alpha, hp.cutmix_alpha, hp.mix_switch_prob, hp.mix_prob,
                hp.label_smoothing,
            )  # fmt: skip
            logits = self(mixed.inputs)
            loss = soft_target_cross_entropy(logits, mixed.targets)
        else:
            logits = self(x)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=hp.label_smoothing)
        # sync_dist: the epoch mean must be over every rank's batches, not rank zero's alone
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=labels.shape[0],
            sync_dist=True,
        )
        return loss

    def _eval_step(self, batch: dict[str, Any], metric: VideoLevelAccuracy) -> None:
        logits = self(self.inputs(batch))
        clip = torch.as_tensor(batch.get("clip_index", 0)).long().reshape(-1)
        crop = torch.as_tensor(batch.get("crop_index", 0)).long().reshape(-1)
        # one id per view: the metric drops a repeated (video, view) pair as DistributedSampler padding
        views = (clip * _VIEW_STRIDE + crop).expand(logits.shape[0])
        metric.update(logits, batch["label"], batch["video_id"], views)

    def _log_metric(self, stage: str, metric: VideoLevelAccuracy) -> dict[str, float]:
        values = {f"{stage}/{k}": v for k, v in metric.compute().items()}
        self.log_dict(values, prog_bar=False, sync_dist=False)  # the metric already gathered all ranks
        if self.hparams.plot_confusion and metric.last_video_predictions is not None:
            self._save_confusion(stage, *metric.last_video_predictions)
        metric.reset()
        return {k: float(v) for k, v in values.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # where the weights come from, for the figures of `xmkd validate|test --ckpt_path`
        self._checkpoint_position = (int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0)))

    def _save_confusion(self, stage: str, predictions: Tensor, labels: Tensor) -> None:
        """``confusion_<stage>.png`` in the run's ``figures`` folder during fit (the last epoch's stays);
        ``<figure_tag>_confusion_<stage>.png`` when evaluating, so that ``xmkd validate --ckpt_path``
        into the trained run leaves its training figures alone (rank zero, not in the sanity check)."""
        trainer = self._trainer
        if trainer is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        name = f"confusion_{stage}.png"
        if trainer_stage(trainer) != "fit":
            name = f"{module_figure_tag(self)}_{name}"

        k = self.hparams.num_classes
        names = data_attribute(trainer.datamodule, "class_names")
        names = [str(n) for n in names] if names is not None and len(names) == k else None
        matrix = confusion_matrix(predictions.numpy(), labels.numpy(), k)
        fig = confusion_figure(matrix, names, title=f"{stage} confusion, epoch {self.current_epoch}")
        root = run_log_dir(trainer) / "figures"
        image = save_figure(fig, root / name)
        log_images(self.loggers, {f"{stage}/confusion": image}, step=self.global_step)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.val_accuracy)

    def on_validation_epoch_end(self) -> None:
        if self.val_accuracy.update_count:
            self._log_metric("val", self.val_accuracy)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.test_accuracy)

    def on_test_epoch_end(self) -> None:
        if self.test_accuracy.update_count:
            self._log_metric("test", self.test_accuracy)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Each view's logits with its video id, for :class:`xmkd.predict.PredictionWriter`, which
        averages a video's views as ``aggregate`` says and writes its top-k classes."""
        logits = self(self.inputs(batch)).float().cpu()
        label = torch.as_tensor(batch.get("label", -1)).long().reshape(-1).expand(logits.shape[0])
        return {
            "kind": "classification",
            "video_id": [str(v) for v in batch["video_id"]],
            "logits": logits,
            "label": label.cpu(),
            "aggregate": self.hparams.aggregate,
        }

    # ------------------------------------------------------------------ optimisation

    def parameter_groups(self) -> list[dict]:
        hp = self.hparams
        if hp.mode == "linear":
            return param_groups_weight_decay(self.head, hp.weight_decay, lr=hp.lr)
        return layer_decay_param_groups(
            self, hp.lr, hp.weight_decay, hp.layer_decay, len(self.encoder.blocks)
        )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = self.parameter_groups()
        for g in groups:
            g.pop("names", None)
        optimizer = build_adamw(groups, hp.lr, tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = self.trainer.max_epochs or 0
        warmup = math.floor(total * hp.warmup_epochs / max_epochs) if max_epochs > 0 else 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine_lambda(warmup, total, hp.min_lr / hp.lr)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
