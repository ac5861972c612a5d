"""XKD self-supervised pretraining (Sarkar & Etemad, AAAI 2024) as a thin LightningModule.

Per step: masked reconstruction per modality (L_rec), cross-modal DINO distillation from each
modality's EMA teacher to the other modality's student (L_kd), and multi-kernel MMD domain alignment
between the video and audio head outputs (L_da); total = (w_da L_da + w_kd L_kd + w_rec L_rec) / sum(w).
The math lives in ``xmkd.models`` and ``xmkd.distill``; this file wires views, teachers and logging.

Batch (from the data layer): ``video`` (B, 3, T, H, W) normalised global view, ``video_local``
(B, L, 3, t, h, w), ``audio`` (B, N) 16 kHz waveform (turned into a log-mel spectrogram on device),
``label`` (B,) long, -1 where unknown (only the online probe reads it).

MAE only is this module with the distillation and alignment weights at zero; with ``modalities:
[video]`` it needs no audio and no local views (any ``video_in_chans``: 2 for optical flow).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from xmkd.distill.dino import DINOCenter, multi_view_dino_cross_entropy, teacher_temperature_at
from xmkd.distill.ema import EMATeacherCallback, freeze_
from xmkd.distill.mixin import WeightedLossMixin, WeightedLossSum
from xmkd.distill.mmd import DEFAULT_GAMMAS, mmd2
from xmkd.distill.refinement import refine_pair
from xmkd.distill.xkd_baselines import XKD_BASELINES, build_xkd_baselines
from xmkd.errors import ConfigError
from xmkd.models.audio import (
    LogMelSpectrogram,
    random_waveform_crops,
    release_audio_local_views,
    spectrogram_local_views,
    volume_jitter,
)
from xmkd.models.heads import DINOHead, mean_patch_tokens
from xmkd.models.masking import TokenMask, random_masking
from xmkd.models.vit import (
    VIT_SIZES,
    MAEDecoder,
    PackedInput,
    ViTEncoder,
    audio_encoder_config,
    load_exported_encoder,
    masked_mse,
    normalized_patch_target,
    patchify_spectrogram,
    patchify_video,
    save_exported_encoder,
    unpatchify_spectrogram,
    unpatchify_video,
    video_encoder_config,
)
from xmkd.modules.data_checks import check_against_data, data_attribute
from xmkd.optim import build_adamw, clip_grad_per_tensor_, param_groups_weight_decay, warmup_cosine_lambda
from xmkd.viz import run_log_dir

__all__ = ["XKDPretrainer", "load_exported_encoder", "reconstruction_grid"]

MODALITIES = ("video", "audio")
#: XKD's own loss terms (reconstruction, cross-modal DINO KD, MMD domain alignment)
XKD_TERMS = ("da", "kd", "rec")


class XKDPretrainer(WeightedLossMixin, pl.LightningModule):
    """XKD / XKD-MAS / XKD-MATS pretraining.

    Args:
        variant: ``xkd`` (an encoder per modality), ``mas`` (students share the transformer blocks;
            tokenisers, position embeddings, final norms, decoders and heads stay per modality;
            separate teachers, whose blocks, being EMAs of the same shared blocks, stay equal), ``mats``
            (the teachers share their blocks too). The paper uses 3 local views for MAS/MATS.
        encoder_size: ``tiny`` | ``small`` | ``base`` (paper: base).
        encoder_depth: override the number of blocks (None: the size's 12); for tiny test configs.
        encoder_dim, encoder_heads: override the size's width and attention heads (small encoders of
            the raw detection chains).
        modalities: ``[video, audio]`` (XKD) or ``[video]``: masked video reconstruction alone (MAE),
            which needs every cross-modal weight (``kd``, ``da``, the baselines) at 0 and ``variant:
            xkd``; the batch then needs neither ``audio`` nor, without local views, ``video_local``.
        video_in_chans: channels of the video input (3 RGB; 2 for optical flow, ``modalities: [video]``).
        num_frames, img_size, tubelet, patch_size: global video view and tubelet (32x112x112, 4x16x16).
        mel_bins, audio_frames, audio_patch: global spectrogram (80x448) and its patches (4x16).
        audio_local_frames: width of the audio local views (112 frames = 1 s).
        mel_scale, mel_norm: the log-mel filterbank (``xmkd.models.audio.mel_filterbank``): the
            release's librosa default ``slaney`` / ``slaney`` (its normalisation constants are for
            it), or torchaudio's ``htk`` / ``none``.
        mel_log_eps: the eps of ``log(mel + eps)`` (the release's float32 eps; xmkd used 1e-6).
        audio_views: ``release`` (default): each audio local view is its own random crop of the
            waveform (``audio_local_frames`` worth of samples, start on a 100-sample step), gain
            ``U(1 -+ audio_local_volume_jitter)`` on the waveform, its own log-mel, then BYOL-A's
            random resize crop in frequency and time (``audio_local_crop_scale`` of each axis, on a
            zero canvas ``audio_local_canvas_scale`` times the view, bicubic); the global view's
            waveform gets gain ``U(1 -+ audio_global_volume_jitter)``. ``spectrogram``: the views
            xmkd made before (no global jitter; local views are time-only linear resized crops of
            the global spectrogram, ``xmkd.data.datasets.transforms.spectrogram_local_views``, whose gain g is
            the log-domain offset 2 ln(g) / std).
        audio_local_volume_jitter: local views' volume jitter (0.2); 0 disables.
        audio_global_volume_jitter: global view's volume jitter (0.1, ``audio_views: release`` only).
        audio_local_crop_scale: BYOL-A's frequency and time scale range (0.6, 1.5).
        audio_local_canvas_scale: BYOL-A's virtual crop canvas, (frequency, time) (1.0, 1.5).
        video_mask_ratio, audio_mask_ratio: MAE masking of the global views (0.85 / 0.80).
        decoder_dim, decoder_depth, decoder_heads: MAE decoders (384, 4, 12 as released).
        decoder_final_norm: a LayerNorm before the decoders' prediction layer (False: the release
            has none; checkpoints written by xmkd before this knob need True).
        norm_eps: every encoder and decoder LayerNorm's eps (the release's 1e-5; xmkd used 1e-6).
        pos_embed_resize: how local views resize the position embeddings: ``scale_factor`` (the
            release's ``scale_factor=(n + 0.1) / o``) or ``size``.
        head_hidden_dim, head_bottleneck_dim, head_out_dim: DINO heads (2048, 256, 8192).
        student_temperature, video_teacher_temperature, audio_teacher_temperature: 0.1 / 0.1 / 0.07.
        video_warmup_teacher_temperature, audio_warmup_teacher_temperature,
            teacher_temperature_warmup_epochs: DINO's per-epoch linear warm-up of each teacher
            temperature from the warm-up value to the final one over the first epochs
            (``xmkd.distill.dino.teacher_temperature_at``); None: constant (XKD, MATS). XKD-MAS:
            0.09 -> 0.11 (video) and 0.04 -> 0.06 (audio) over 30 epochs.
        center_momentum: EMA of the teacher centers (0.9).
        teacher_view: which view the teachers see. ``local`` (default) is what the released code does
            (it feeds the first local view) although its comment and the paper say the global view;
            ``global`` feeds the unmasked global view.
        num_local_views: video local views used as extra student views (the datamodule's
            ``num_local_views`` makes them).
        num_audio_local_views: audio local views (None: ``num_local_views``). The release's MAS and
            MATS use 3 video and 1 audio.
        loss_weights: ``{"da": 1, "kd": 1, "rec": 5}``; divided by their sum when
            ``normalize_loss_weights``. A zero weight skips the term (and the teachers if both
            ``da`` and ``kd`` are zero). The detection KD baselines that apply to XKD may be added by
            name (``fitnets``, ``sp``, ``rkd``; ``xmkd.distill.xkd_baselines``), e.g. ``{da: 1, kd: 0,
            rec: 5, fitnets: 1}``; like ``kd`` they distil each teacher into the other modality's
            student, on the pooled encoder embeddings; off by default.
        loss_options: keyword options of those baselines, e.g. ``{fitnets: {regressor: false}}``.
        feature_refinement: teachers pool refined (cross-modal attention weighted) patch tokens.
        refinement_head_weighting: ``mean`` | ``softmax``; interpretation, see ``xmkd.distill.refinement``.
        mmd_gammas: kernel gammas of the MMD, k = sum exp(-gamma ||x - y||^2).
        align_teacher_outputs: L_da = (MMD(students) + MMD(teachers)) / 2 as released (the teacher
            term carries no gradient; it is there so the logged value matches the reference).
        lr, weight_decay, betas, warmup_epochs, min_lr_factor: AdamW (no decay on biases and
            norms), linear warm-up then per-step cosine to ``min_lr_factor * lr``. The lr is used as
            given (no hidden batch-size scaling).
        lr_warmup_from_zero: the warm-up starts at lr 0 (the release's ``linspace(0, lr, W)``);
            False starts at lr / W.
        clip_grad: per-tensor gradient clip (0.3); 0 disables.
        clip_decoders: interpretation: the released code clips only the student encoders and heads
            (False); True clips the decoders as well.
        ema_base_momentum: teacher momentum, cosine to 1.0 over all optimiser steps.
        shared_teacher_ema: XKD-MATS's shared teacher blocks: ``per_modality`` (the release:
            updated once per modality each step, an effective momentum m^2, 0.994 at the start) or
            ``once`` (m).
        drop_path: stochastic depth of the student encoders (0 in pretraining).
        probe_num_classes: >0 trains an online linear probe (solo-learn style) on detached
            mean-pooled student features, logged as ``val/probe_top1`` and ``val/probe_audio_top1``.
        probe_lr: the probe's own lr (its group has no weight decay).
        probe_view: which training features the probe reads (validation always uses the unmasked
            global view). ``masked``: the masked global view's pooled visible tokens, already
            computed, so free; this is what solo-learn's MAE does (its classifier reads the masked
            backbone output in training). ``local``: the first (unmasked) local view, also free, but
            a different crop scale and length than validation's. ``global``: an extra no-grad
            student pass on the unmasked global view, matching validation's crop at a cost.
            ``linear``: the same extra pass on the batch's ``video_probe`` (the datamodule's
            ``linear_probe_view: true``), the linear evaluation's view of the clip: random resized crop
            and flip, without the pretraining's colour jitter; audio as ``global``.
        recon_log_every_n_epochs: log input / masked / reconstruction images every N epochs (0: never).
    """

    def __init__(
        self,
        variant: Literal["xkd", "mas", "mats"] = "xkd",
        encoder_size: Literal["tiny", "small", "base"] = "base",
        encoder_depth: int | None = None,
        encoder_dim: int | None = None,
        encoder_heads: int | None = None,
        modalities: tuple[str, ...] = MODALITIES,
        video_in_chans: int = 3,
        num_frames: int = 32,
        img_size: int = 112,
        tubelet: int = 4,
        patch_size: int = 16,
        mel_bins: int = 80,
        audio_frames: int = 448,
        audio_patch: tuple[int, int] = (4, 16),
        audio_local_frames: int = 112,
        mel_scale: Literal["slaney", "htk"] = "slaney",
        mel_norm: Literal["slaney", "none"] = "slaney",
        mel_log_eps: float = 1.1920928955078125e-07,
        audio_views: Literal["release", "spectrogram"] = "release",
        audio_local_volume_jitter: float = 0.2,
        audio_global_volume_jitter: float = 0.1,
        audio_local_crop_scale: tuple[float, float] = (0.6, 1.5),
        audio_local_canvas_scale: tuple[float, float] = (1.0, 1.5),
        video_mask_ratio: float = 0.85,
        audio_mask_ratio: float = 0.80,
        decoder_dim: int = 384,
        decoder_depth: int = 4,
        decoder_heads: int = 12,
        decoder_final_norm: bool = False,
        norm_eps: float = 1e-5,
        pos_embed_resize: Literal["scale_factor", "size"] = "scale_factor",
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        head_out_dim: int = 8192,
        student_temperature: float = 0.1,
        video_teacher_temperature: float = 0.1,
        audio_teacher_temperature: float = 0.07,
        video_warmup_teacher_temperature: float | None = None,
        audio_warmup_teacher_temperature: float | None = None,
        teacher_temperature_warmup_epochs: int = 30,
        center_momentum: float = 0.9,
        teacher_view: Literal["local", "global"] = "local",
        num_local_views: int = 1,
        num_audio_local_views: int | None = None,
        loss_weights: dict[str, float] | None = None,
        loss_options: dict[str, dict[str, Any]] | None = None,
        normalize_loss_weights: bool = True,
        feature_refinement: bool = True,
        refinement_head_weighting: Literal["mean", "softmax"] = "mean",
        mmd_gammas: tuple[float, ...] = DEFAULT_GAMMAS,
        align_teacher_outputs: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.3,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_epochs: float = 30.0,
        min_lr_factor: float = 0.0,
        lr_warmup_from_zero: bool = True,
        clip_grad: float = 0.3,
        clip_decoders: bool = False,
        ema_base_momentum: float = 0.997,
        shared_teacher_ema: Literal["per_modality", "once"] = "per_modality",
        drop_path: float = 0.0,
        probe_num_classes: int = 0,
        probe_lr: float = 1e-3,
        probe_view: Literal["masked", "local", "global", "linear"] = "local",
        recon_log_every_n_epochs: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if variant not in ("xkd", "mas", "mats"):
            raise ConfigError("variant", f"expected xkd | mas | mats, got {variant!r}")
        if probe_view not in ("masked", "local", "global", "linear"):
            raise ConfigError("probe_view", f"expected masked | local | global | linear, got {probe_view!r}")
        if teacher_view not in ("local", "global"):
            raise ConfigError("teacher_view", f"expected local | global, got {teacher_view!r}")
        self.modalities = tuple(modalities)
        if self.modalities not in (MODALITIES, ("video",)):
            raise ConfigError("modalities", f"expected [video, audio] or [video], got {list(modalities)}")
        audio_locals = num_local_views if num_audio_local_views is None else num_audio_local_views
        self.num_audio_local_views = audio_locals if "audio" in self.modalities else 0
        for key, value, choices in (
            ("audio_views", audio_views, ("release", "spectrogram")),
            ("mel_scale", mel_scale, ("slaney", "htk")),
            ("mel_norm", mel_norm, ("slaney", "none")),
            ("pos_embed_resize", pos_embed_resize, ("scale_factor", "size")),
            ("shared_teacher_ema", shared_teacher_ema, ("per_modality", "once")),
        ):
            if value not in choices:
                raise ConfigError(key, f"expected {' | '.join(choices)}, got {value!r}")
        weights = {"da": 1.0, "kd": 1.0, "rec": 5.0} if loss_weights is None else dict(loss_weights)
        unknown = set(weights) - set(XKD_TERMS) - set(XKD_BASELINES)
        if unknown:
            raise ConfigError(
                "loss_weights",
                f"unknown terms {sorted(unknown)}; known: {', '.join(XKD_TERMS)} and the KD baselines "
                f"{', '.join(XKD_BASELINES)}",
            )
        # XKD's own terms first, in their order, so the sum is the same with or without a baseline
        baselines = [k for k in weights if k not in XKD_TERMS]
        self.loss_sum = WeightedLossSum(
            {
                **{k: float(weights.get(k, 0.0)) for k in XKD_TERMS},
                **{k: float(weights[k]) for k in baselines},
            },
            normalize_loss_weights,
        )
        stray = sorted(set(loss_options or {}) - set(baselines))
        if stray:
            raise ConfigError("loss_options", f"options for {stray}, which loss_weights does not name")
        cross_modal = [k for k in ("da", "kd", *baselines) if self.loss_sum.active(k)]
        if len(self.modalities) == 1:
            if cross_modal:
                raise ConfigError(
                    "loss_weights",
                    f"{cross_modal} need two modalities; modalities: [video] trains only 'rec'",
                )
            if variant != "xkd":
                raise ConfigError("variant", f"{variant} shares blocks across modalities; [video] needs xkd")
        elif min(num_local_views, audio_locals) < 1 and teacher_view == "local" and cross_modal:
            raise ConfigError(
                "num_local_views", "teacher_view=local needs at least one video and one audio local view"
            )

        if encoder_size not in VIT_SIZES:
            raise ConfigError("encoder_size", f"expected one of {sorted(VIT_SIZES)}, got {encoder_size!r}")
        overrides = {"depth": encoder_depth, "dim": encoder_dim, "num_heads": encoder_heads}
        arch: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        arch.update(norm_eps=norm_eps, pos_embed_resize=pos_embed_resize, drop_path=drop_path)
        vcfg = video_encoder_config(
            encoder_size, num_frames, img_size, tubelet, patch_size, in_chans=video_in_chans, **arch
        )
        acfg = audio_encoder_config(encoder_size, mel_bins, audio_frames, audio_patch, **arch)
        configs = {"video": vcfg, "audio": acfg}
        video_encoder = ViTEncoder(vcfg)
        self.student = nn.ModuleDict({"video": video_encoder})
        if "audio" in self.modalities:
            shared = video_encoder.blocks if variant in ("mas", "mats") else None
            self.student["audio"] = ViTEncoder(acfg, blocks=shared)
        self.decoders = nn.ModuleDict(
            {
                m: MAEDecoder(
                    cfg.num_patches,
                    cfg.dim,
                    cfg.patch_dim,
                    decoder_dim,
                    decoder_depth,
                    decoder_heads,
                    final_norm=decoder_final_norm,
                    norm_eps=norm_eps,
                )
                for m, cfg in ((m, configs[m]) for m in self.modalities)
            }
        )
        self.heads = nn.ModuleDict(
            {
                m: DINOHead(vcfg.dim, head_hidden_dim, head_bottleneck_dim, head_out_dim)
                for m in self.modalities
            }
        )
        # MATS: one deepcopy of the dict keeps the shared blocks shared; MAS: separate copies.
        if variant == "mas":
            self.teacher = nn.ModuleDict({m: copy.deepcopy(self.student[m]) for m in self.modalities})
        else:
            self.teacher = copy.deepcopy(self.student)
        self.teacher_heads = copy.deepcopy(self.heads)
        for m in self.modalities:
            # Teachers never use stochastic depth (they are in eval mode anyway).
            freeze_(self.teacher[m])
            freeze_(self.teacher_heads[m])
        self.teacher.eval()
        self.teacher_heads.eval()
        self.centers = nn.ModuleDict({m: DINOCenter(head_out_dim, center_momentum) for m in self.modalities})
        # Only terms with a weight are built: an unused regressor would trip DDP's unused-parameter check.
        active = [k for k in baselines if self.loss_sum.active(k)]
        try:
            self.kd_baselines = build_xkd_baselines(
                active, vcfg.dim, {k: v for k, v in (loss_options or {}).items() if k in active}
            )
        except ValueError as e:
            raise ConfigError("loss_options", str(e)) from e
        self.teacher_temperatures = {
            "video": (video_teacher_temperature, video_warmup_teacher_temperature),
            "audio": (audio_teacher_temperature, audio_warmup_teacher_temperature),
        }

        self.probes = nn.ModuleDict()
        self.probe_acc = nn.ModuleDict()
        if probe_num_classes > 0:
            for m in self.modalities:
                self.probes[m] = nn.Linear(vcfg.dim, probe_num_classes)
                self.probe_acc[m] = MulticlassAccuracy(probe_num_classes, top_k=1, average="micro")

        # Built on first use and deliberately not registered as a submodule, so checkpoints do not
        # depend on the feature extractor's buffers.
        self._aux: dict[str, Any] = {}

    def setup(self, stage: str) -> None:
        """Check the clip size and the probe's classes against the data before any step: another
        frame count or crop size only fails deep in the MAE decoder, more classes in the probe loss."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        hp = self.hparams
        probe_classes = hp.probe_num_classes if hp.probe_num_classes > 0 else None
        check_against_data(
            self,
            datamodule,
            [
                ("num_frames", hp.num_frames, "num_frames", data_attribute(datamodule, "num_frames")),
                ("img_size", hp.img_size, "crop_size", data_attribute(datamodule, "crop_size")),
                (
                    "probe_num_classes",
                    probe_classes,
                    "num_classes",
                    data_attribute(datamodule, "num_classes"),
                ),
            ],
        )

    # ------------------------------------------------------------------ teachers

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) pairs for :class:`EMATeacherCallback`; shared teacher tensors update once."""
        return [(self.student[m], self.teacher[m]) for m in self.modalities] + [
            (self.heads[m], self.teacher_heads[m]) for m in self.modalities
        ]

    def configure_callbacks(self) -> list[pl.Callback]:
        shared = "per_pair" if self.hparams.shared_teacher_ema == "per_modality" else "once"
        return [EMATeacherCallback(self.hparams.ema_base_momentum, 1.0, shared_updates=shared)]

    def teacher_temperature(self, modality: str, epoch: int | None = None) -> float:
        """The ``modality`` teacher's temperature at ``epoch`` (default: the current epoch)."""
        final, warmup = self.teacher_temperatures[modality]
        epoch = self.current_epoch if epoch is None else epoch
        return teacher_temperature_at(epoch, final, warmup, self.hparams.teacher_temperature_warmup_epochs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Name the knob when a checkpoint's decoder layout differs from this module's."""
        state = checkpoint.get("state_dict", {})
        has_norm = any(k.startswith("decoders.") and ".norm." in k and ".blocks." not in k for k in state)
        if has_norm != self.hparams.decoder_final_norm:
            raise ConfigError(
                "decoder_final_norm",
                f"the checkpoint's decoders {'have' if has_norm else 'have no'} final LayerNorm; build the "
                f"module with decoder_final_norm={has_norm} (checkpoints written before this knob have "
                "one, and were trained with norm_eps=1e-6, pos_embed_resize=size, audio_views=spectrogram, "
                "mel_scale=htk, mel_norm=none, mel_log_eps=1e-6, lr_warmup_from_zero=false)",
            )

    def train(self, mode: bool = True) -> XKDPretrainer:
        super().train(mode)
        self.teacher.eval()
        self.teacher_heads.eval()
        return self

    # ------------------------------------------------------------------ audio on device

    def melspec(self, device: torch.device) -> Any:
        mel = self._aux.get("melspec")
        if mel is None:
            mel = self._aux["melspec"] = LogMelSpectrogram(
                mel_scale=self.hparams.mel_scale, mel_norm=self.hparams.mel_norm, eps=self.hparams.mel_log_eps
            )
        return mel.to(device) if isinstance(mel, nn.Module) else mel

    def audio_spectrogram(self, waveform: Tensor) -> Tensor:
        """(B, N) waveform -> (B, F, audio_frames) normalised log-mel, computed in float32."""
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            spec = self.melspec(waveform.device)(waveform.float())
        if spec.ndim == 4:
            spec = spec.squeeze(1)
        frames = self.hparams.audio_frames
        if spec.shape[-1] < frames or spec.shape[-2] != self.hparams.mel_bins:
            raise ConfigError(
                "audio_frames",
                f"the batch's audio ({waveform.shape[-1]} samples) gives a {tuple(spec.shape[-2:])} spectrogram; "
                f"the model expects {self.hparams.mel_bins} x {frames}",
            )
        return spec[..., :frames]

    def audio_views(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        """Training views of a (B, N) waveform: global (B, F, audio_frames), local (B, L, F, t)."""
        hp = self.hparams
        if hp.audio_views == "spectrogram":
            spec = self.audio_spectrogram(waveform)
            return spec, self.audio_local_views(spec)
        return self.release_audio_views(waveform)

    def release_audio_views(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        """The released XKD's audio views (``audio_views: release``; see the class docstring)."""
        hp = self.hparams
        wave = waveform.float()
        if hp.audio_global_volume_jitter > 0:
            wave = volume_jitter(wave, hp.audio_global_volume_jitter)
        spec = self.audio_spectrogram(wave)
        b, n = waveform.shape
        views = self.num_audio_local_views
        # The local crop covers the same share of the waveform as its frames of the global view's
        # (the release: a quarter, 1 s of 4 s).
        length = n * hp.audio_local_frames // hp.audio_frames
        crops = random_waveform_crops(waveform.float(), views, length)  # of the clip, not the global view
        crops = crops.reshape(b * views, length)
        if hp.audio_local_volume_jitter > 0:
            crops = volume_jitter(crops, hp.audio_local_volume_jitter)
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            local = self.melspec(waveform.device)(crops)
            if local.shape[-1] < hp.audio_local_frames:
                raise ConfigError(
                    "audio_local_frames",
                    f"a {length}-sample local crop gives {local.shape[-1]} frames, fewer than "
                    f"audio_local_frames={hp.audio_local_frames}",
                )
            local = release_audio_local_views(
                local[..., : hp.audio_local_frames],
                tuple(hp.audio_local_canvas_scale),
                tuple(hp.audio_local_crop_scale),
                tuple(hp.audio_local_crop_scale),
            )
        return spec, local.reshape(b, views, *local.shape[1:])

    def audio_local_views(self, spec: Tensor) -> Tensor:
        """(B, F, T) -> (B, L, F, audio_local_frames) time-only random crops (``audio_views: spectrogram``)."""
        views = spectrogram_local_views(spec, self.num_audio_local_views, self.hparams.audio_local_frames)
        views = views.squeeze(2) if views.ndim == 5 else views
        jitter = self.hparams.audio_local_volume_jitter
        if jitter > 0:
            mel = self.melspec(spec.device)
            std = float(getattr(mel, "std", 1.0)) if getattr(mel, "normalize", True) else 1.0
            gain = 1.0 - jitter + 2.0 * jitter * torch.rand(views.shape[:2], device=views.device)
            views = views + (2.0 * gain.log() / std)[..., None, None].to(views.dtype)
        return views

    # ------------------------------------------------------------------ losses

    def _student_views(
        self, m: str, x: Tensor, mask: TokenMask, local: Tensor | None
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Masked global view and (B, L, ...) local views through the ``m`` student in one pass.

        Returns (pooled global features (B, D), reconstruction loss, L pooled local features (B, D)).
        ``forward_many`` runs the encoder's row-wise layers once over the global view's visible tokens
        and all local views' tokens (view-major), so each weight sees one matmul and one gradient.
        """
        enc = self.student[m]
        patches = enc.patchify(x)  # once, for the visible tokens and the target
        inputs = [PackedInput(x, mask.keep_indices, patches)]
        n_local = 0 if local is None else local.shape[1]
        if n_local:
            b = local.shape[0]
            inputs.append(PackedInput(local.transpose(0, 1).reshape(b * n_local, *local.shape[2:])))
        tokens = enc.forward_many(inputs)
        pred = self.decoders[m](tokens[0], mask.restore_indices)
        target = normalized_patch_target(patches.float())
        pooled_local = list(mean_patch_tokens(tokens[1]).chunk(n_local)) if n_local else []
        return mean_patch_tokens(tokens[0]), masked_mse(pred, target, mask.mask), pooled_local

    @torch.no_grad()
    def _teacher_outputs(
        self, views: dict[str, Tensor], pooled: dict[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """The teachers' head outputs, from their pooled embeddings (computed here unless given)."""
        pooled = self._teacher_pooled(views) if pooled is None else pooled
        return {m: self.teacher_heads[m](pooled[m]).float() for m in self.modalities}

    @torch.no_grad()
    def _teacher_pooled(self, views: dict[str, Tensor]) -> dict[str, Tensor]:
        """The teachers' clip embeddings: refined (or plain) mean of their patch tokens."""
        refine = self.hparams.feature_refinement
        tokens, attn = {}, {}
        for m in self.modalities:
            tokens[m], attn[m] = self.teacher[m].forward_with_attention(views[m], return_attention=refine)
        if refine:
            pooled = dict(
                zip(
                    MODALITIES,
                    refine_pair(
                        tokens["video"][:, 1:],
                        attn["video"],
                        tokens["audio"][:, 1:],
                        attn["audio"],
                        self.hparams.refinement_head_weighting,
                    ),
                )
            )
        else:
            pooled = {m: mean_patch_tokens(tokens[m]) for m in self.modalities}
        return pooled

    def compute_losses(
        self,
        video: Tensor,
        video_local: Tensor | None,
        spec: Tensor | None = None,
        spec_local: Tensor | None = None,
        update_centers: bool = True,
    ) -> dict[str, Any]:
        """All XKD terms for one batch; returns the total, log values and the pieces for the probe.

        ``spec``/``spec_local`` are None with ``modalities: [video]``, ``video_local`` without local views.
        """
        hp = self.hparams
        b = video.shape[0]
        counts = {"video": hp.num_local_views, "audio": self.num_audio_local_views}
        given = {"video": video_local, "audio": spec_local}
        have = {m: 0 if given[m] is None else given[m].shape[1] for m in self.modalities}
        if any(have[m] < counts[m] for m in self.modalities):
            raise ConfigError(
                "num_local_views",
                " / ".join(f"batch has {have[m]} {m} local views, need {counts[m]}" for m in self.modalities),
            )
        inputs = {"video": video, "audio": spec}
        local = {m: given[m][:, : counts[m]] for m in self.modalities if counts[m] > 0}
        ratios = {"video": hp.video_mask_ratio, "audio": hp.audio_mask_ratio}
        # the heads feed only L_kd and L_da: MAE-only runs skip them
        need_heads = self.loss_sum.active("kd") or self.loss_sum.active("da")
        masks, pooled_global, rec, student_out, pooled_local = {}, {}, {}, {}, {}
        for m in self.modalities:
            n = self.student[m].config.num_patches
            masks[m] = random_masking(b, n, ratios[m], device=video.device)
            pooled_global[m], rec[m], pooled_local[m] = self._student_views(
                m, inputs[m], masks[m], local.get(m)
            )
            if need_heads:
                # One head call over all views: one weight-norm recompute and batch x (1 + L) rows per
                # matmul instead of 1 + L calls of ``batch`` rows (ViT-B at batch 2: 2-row matmuls).
                views = [pooled_global[m], *pooled_local[m]]
                student_out[m] = list(self.heads[m](torch.cat(views)).float().chunk(len(views)))

        logs: dict[str, Tensor] = {f"loss/rec_{m}": rec[m].detach() for m in self.modalities}
        need_teacher = need_heads or bool(self.kd_baselines)
        teacher_out: dict[str, Tensor] = {}
        teacher_pooled: dict[str, Tensor] = {}
        if need_teacher:
            if hp.teacher_view == "local":
                tviews = {m: local[m][:, 0] for m in self.modalities}
            else:
                tviews = inputs
            teacher_pooled = self._teacher_pooled(tviews)
            teacher_out = self._teacher_outputs(tviews, teacher_pooled)

        tau_s = hp.student_temperature

        def kd() -> Tensor:
            v2a = multi_view_dino_cross_entropy(
                student_out["audio"],
                teacher_out["video"],
                self.centers["video"].center,
                tau_s,
                self.teacher_temperature("video"),
            )
            a2v = multi_view_dino_cross_entropy(
                student_out["video"],
                teacher_out["audio"],
                self.centers["audio"].center,
                tau_s,
                self.teacher_temperature("audio"),
            )
            logs["loss/kd_video_teacher_to_audio"] = v2a.detach()
            logs["loss/kd_audio_teacher_to_video"] = a2v.detach()
            return (v2a + a2v) / 2

        def da() -> Tensor:
            gammas = hp.mmd_gammas
            students = mmd2(torch.cat(student_out["video"]), torch.cat(student_out["audio"]), gammas)
            logs["loss/da_students"] = students.detach()
            if not hp.align_teacher_outputs:
                return students
            with torch.no_grad():
                teachers = mmd2(teacher_out["video"], teacher_out["audio"], gammas)
            logs["loss/da_teachers"] = teachers
            return (students + teachers) / 2

        def reconstruction() -> Tensor:
            return sum(rec.values()) / len(rec)  # (video + audio) / 2 as released; video alone in MAE

        terms: dict[str, Any] = {"da": da, "kd": kd, "rec": reconstruction}
        if self.kd_baselines:
            student_pooled = {m: [pooled_global[m], *pooled_local[m]] for m in self.modalities}
            for name, term in self.kd_baselines.items():
                terms[name] = lambda term=term: term(student_pooled, teacher_pooled)
        total, term_logs = self.combine_losses(terms)
        logs.update(term_logs)
        if update_centers and teacher_out and self.loss_sum.active("kd"):
            for m in self.modalities:
                self.centers[m].update(teacher_out[m])
        return {
            "loss": total,
            "logs": logs,
            "masks": masks,
            "pooled_local": pooled_local,
            "pooled_global": pooled_global,
        }

    # ------------------------------------------------------------------ probe

    def _probe_losses(self, features: dict[str, Tensor], label: Tensor) -> dict[str, Tensor]:
        """Cross-entropy of each modality's probe on DETACHED features, labelled samples only."""
        if not self.probes:
            return {}
        # No host sync (``bool(valid.any())`` stalls a GPU every step): unlabelled samples (-1) are
        # ignored, and a batch without labels contributes 0 instead of NaN.
        count = (label >= 0).sum().clamp_min(1)
        return {
            m: F.cross_entropy(self.probes[m](feat.detach().float()), label, ignore_index=-1, reduction="sum")
            / count
            for m, feat in features.items()
        }

    @property
    def reads_probe_view(self) -> bool:
        """Whether a training step reads the batch's ``video_probe`` (the online probe on the linear
        view); the datamodule leaves that view out of the training batches otherwise."""
        return bool(self.probes) and self.hparams.probe_view == "linear"

    def probe_video(self, batch: dict[str, Any], video: Tensor) -> Tensor:
        """The video the probe reads with ``probe_view`` global (the global view) or linear."""
        if self.hparams.probe_view != "linear":
            return video
        if "video_probe" not in batch:
            raise ConfigError(
                "probe_view",
                "probe_view: linear reads the batch's 'video_probe' (the linear evaluation's view); "
                "set data.init_args.linear_probe_view: true",
            )
        return batch["video_probe"]

    # ------------------------------------------------------------------ steps

    def _batch_views(
        self, batch: dict[str, Any]
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        needed = ["video"] + (["video_local"] if self.hparams.num_local_views > 0 else [])
        needed += ["audio"] if "audio" in self.modalities else []
        for key in needed:
            if key not in batch:
                hint = (
                    "; it holds raw clips ('video_raw'): with augment_on: batch the datamodule makes the "
                    "views in on_after_batch_transfer, so give the Trainer the datamodule"
                    if "video_raw" in batch
                    else ""
                )
                raise KeyError(f"XKDPretrainer batch has no '{key}' (keys: {sorted(batch)}){hint}")
        spec, spec_local = self.audio_views(batch["audio"]) if "audio" in self.modalities else (None, None)
        return batch["video"], batch.get("video_local"), spec, spec_local

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        video, video_local, spec, spec_local = self._batch_views(batch)
        out = self.compute_losses(video, video_local, spec, spec_local)
        loss = out["loss"]
        self.log_dict(out["logs"], on_step=True, on_epoch=False, prog_bar=False)
        self.log("loss", out["logs"]["loss/total"], prog_bar=True, on_step=True, on_epoch=False)
        if self.probes and "label" in batch:
            if self.hparams.probe_view in ("global", "linear"):
                with torch.no_grad():
                    feats = {"video": self.student["video"].patch_mean(self.probe_video(batch, video))}
                    if spec is not None:
                        feats["audio"] = self.student["audio"].patch_mean(spec)
            elif self.hparams.probe_view == "masked":
                feats = out["pooled_global"]
            else:
                feats = {m: out["pooled_local"][m][0] for m in self.modalities}
            for m, probe_loss in self._probe_losses(feats, batch["label"]).items():
                self.log(f"probe/loss_{m}", probe_loss, on_step=True, on_epoch=False)
                loss = loss + probe_loss
        if batch_idx == 0:
            self._maybe_log_reconstructions(video, spec)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if not self.probes or "label" not in batch:
            return
        label = batch["label"]
        valid = label >= 0
        if not bool(valid.any()):
            return
        feats = {"video": self.student["video"].patch_mean(batch["video"])}
        if "audio" in batch and "audio" in self.student:
            feats["audio"] = self.student["audio"].patch_mean(self.audio_spectrogram(batch["audio"]))
        for m, feat in feats.items():
            preds = self.probes[m](feat.float()[valid])
            metric = self.probe_acc[m]
            metric.update(preds, label[valid])
            name = "val/probe_top1" if m == "video" else "val/probe_audio_top1"
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=m == "video")

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Clip embeddings of the student encoders (mean of the final-normed patch tokens, as the
        probes and the SVM protocol read them), for :class:`xmkd.predict.PredictionWriter`."""
        feats = {"video": self.student["video"].patch_mean(batch["video"])}
        if "audio" in batch and "audio" in self.student:
            feats["audio"] = self.student["audio"].patch_mean(self.audio_spectrogram(batch["audio"]))
        n = feats["video"].shape[0]
        label = torch.as_tensor(batch.get("label", -1)).long().reshape(-1).expand(n)
        return {
            "kind": "embedding",
            "video_id": [str(v) for v in batch["video_id"]],
            "embeddings": {m: f.float().cpu() for m, f in feats.items()},
            "label": label.cpu(),
        }

    # ------------------------------------------------------------------ optimisation

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """AdamW's parameter groups: the students, heads and decoders (weight decay on matrices
        only; the EMA teachers are not trained), and the online probes (``probe_lr``, no decay)."""
        hp = self.hparams
        trainable = [
            (n, p)
            for n, p in self.named_parameters()
            if not n.startswith(("teacher", "probes.")) and p.requires_grad
        ]
        groups = param_groups_weight_decay(trainable, hp.weight_decay)
        if self.probes:
            groups.append({"params": list(self.probes.parameters()), "weight_decay": 0.0, "lr": hp.probe_lr})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = build_adamw(self.optimizer_param_groups(), hp.lr, tuple(hp.betas))
        total = int(self.trainer.estimated_stepping_batches)
        max_epochs = self.trainer.max_epochs or 0
        warmup = round(total * hp.warmup_epochs / max_epochs) if max_epochs > 0 else 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine_lambda(warmup, total, hp.min_lr_factor, hp.lr_warmup_from_zero)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def clipped_parameters(self) -> list[Tensor]:
        modules = [self.student, self.heads] + ([self.decoders] if self.hparams.clip_decoders else [])
        seen: dict[int, Tensor] = {}
        for mod in modules:
            for p in mod.parameters():
                seen.setdefault(id(p), p)
        return list(seen.values())

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if self.hparams.clip_grad > 0:
            clip_grad_per_tensor_(self.clipped_parameters(), self.hparams.clip_grad)
        if gradient_clip_val:  # the Trainer's own clipping, if also asked for
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ------------------------------------------------------------------ reconstructions

    @torch.no_grad()
    def _maybe_log_reconstructions(self, video: Tensor, spec: Tensor | None) -> None:
        every = self.hparams.recon_log_every_n_epochs
        if every <= 0 or self.current_epoch % every or self.trainer is None:
            return
        self._log_reconstructions(video[:1], None if spec is None else spec[:1])

    @rank_zero_only
    def _log_reconstructions(self, video: Tensor, spec: Tensor | None) -> None:
        images = {}
        for m, x in (("video", video), ("audio", spec)):
            if x is None:
                continue
            enc = self.student[m]
            mask = random_masking(
                1, enc.config.num_patches, getattr(self.hparams, f"{m}_mask_ratio"), device=x.device
            )
            pred = self.decoders[m](enc(x, mask.keep_indices), mask.restore_indices)
            images[m] = reconstruction_grid(
                x[0], mask.mask[0], pred[0], enc.config.modality, enc.config.patch_size
            )

        log_dir = run_log_dir(self.trainer)  # rank zero alone: trainer.log_dir would wait for the others
        if log_dir:
            out = log_dir / "reconstructions"
            import matplotlib.pyplot as plt

            for m, img in images.items():
                path = out / f"{m}_epoch{self.current_epoch:04d}.png"
                try:
                    out.mkdir(parents=True, exist_ok=True)
                    plt.imsave(path, img)
                except OSError as e:  # a full disk or read-only folder: a picture must not end the run
                    rank_zero_warn(f"xmkd: could not write {path} ({e.strerror or e}); training goes on")
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                # one key per modality: the video and spectrogram grids differ in size, and wandb
                # warns "Images sizes do not match" for a list of unequal images under one key
                for m, img in images.items():
                    logger.log_image(key=f"reconstructions/{m}", images=[img], caption=[m])

    # ------------------------------------------------------------------ export

    def export_encoders(self, directory: str | Path) -> dict[str, Path]:
        """Plain state_dicts + architecture JSON of the student and teacher encoders.

        Writes ``{student,teacher}_{video,audio}.pt`` (each loadable with ``torch.load(...,
        weights_only=True)`` and :func:`load_exported_encoder`), one ``.json`` per file, and an
        ``encoders.json`` index with the variant and hyper-parameters.
        """
        directory = Path(directory)
        paths = {}
        for role, encoders in (("student", self.student), ("teacher", self.teacher)):
            for m in self.modalities:
                paths[f"{role}_{m}"] = save_exported_encoder(encoders[m], directory / f"{role}_{m}.pt")
        index = {
            "method": "xkd",
            "variant": self.hparams.variant,
            "files": {k: p.name for k, p in paths.items()},
            "hparams": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.hparams.items()},
        }
        (directory / "encoders.json").write_text(json.dumps(index, indent=2, default=str))
        return paths


def reconstruction_grid(
    x: Tensor, mask: Tensor, pred: Tensor, modality: str, patch_size: tuple[int, ...], eps: float = 1e-6
) -> np.ndarray:
    """uint8 image with rows input / masked input / reconstruction (pure function).

    ``x``: video (C, T, H, W) or spectrogram (1, F, T) / (F, T); ``mask`` (N,) True = masked;
    ``pred`` (N, patch_dim) normalised-pixel predictions, de-normalised with each true patch's
    mean and std as in MAE's visualisation; visible patches show the input. Video shows the first
    frame of every tubelet side by side; each row shares one min-max scaling.
    """
    x = x.detach().float().cpu()
    pred = pred.detach().float().cpu()
    mask = mask.detach().bool().cpu()
    if modality == "video":
        t, p = patch_size[0], patch_size[1]
        patches = patchify_video(x.unsqueeze(0), t, p)[0]
        grid = (x.shape[1] // t, x.shape[2] // p, x.shape[3] // p)
    else:
        x = x.reshape(1, *x.shape[-2:])
        patches = patchify_spectrogram(x.unsqueeze(0), patch_size)[0]
        grid = (x.shape[1] // patch_size[0], x.shape[2] // patch_size[1])
    mean = patches.mean(-1, keepdim=True)
    std = (patches.var(-1, keepdim=True) + eps).sqrt()
    recon = torch.where(mask.unsqueeze(-1), pred * std + mean, patches)
    masked = torch.where(mask.unsqueeze(-1), torch.zeros_like(patches) + patches.min(), patches)
    rows = []
    for pt in (patches, masked, recon):
        if modality == "video":
            v = unpatchify_video(pt.unsqueeze(0), grid, t, p, x.shape[0])[0]  # (C, T, H, W)
            frames = v[:, ::t]  # first frame of each tubelet
            rows.append(torch.cat(list(frames.unbind(1)), dim=-1).permute(1, 2, 0).numpy())  # (H, n*W, C)
        else:
            s = unpatchify_spectrogram(pt.unsqueeze(0), grid, patch_size)[0, 0].flip(0)  # low freq at bottom
            rows.append(np.repeat(s.numpy()[..., None], 3, axis=-1))
    scale_ref = rows[0]
    lo, hi = float(scale_ref.min()), float(scale_ref.max())
    rows = [np.clip((r - lo) / max(hi - lo, 1e-8), 0, 1) for r in rows]
    img = np.concatenate(rows, axis=0)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    elif img.shape[-1] == 2:  # optical flow: (u, v) as red and green
        img = np.concatenate([img, np.zeros_like(img[..., :1])], axis=-1)
    return (img * 255).astype(np.uint8)
