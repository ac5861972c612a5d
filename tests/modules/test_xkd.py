"""One-step CPU training of each XKD variant on a tiny synthetic batch, plus the wiring checks."""

import inspect
import json

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from tests.modules.xkd_tiny import SAMPLES, TINY_XKD, TinyClips
from tests.trainers import quiet_trainer
from xmkd.distill.ema import EMATeacherCallback
from xmkd.modules.xkd import XKDPretrainer, load_exported_encoder, reconstruction_grid

TINY = {**TINY_XKD, "encoder_depth": 2}


def tiny_clips(n: int = 4, local_views: int = 2) -> TinyClips:
    """The shared tiny dataset with two local views and one unlabelled (-1) sample."""
    return TinyClips(n, local_views=local_views, labels=[0, 1, -1, 2])


pytestmark = pytest.mark.usefixtures("one_thread")


def trainer(**kw) -> pl.Trainer:
    return quiet_trainer(**{"max_steps": 1, "limit_val_batches": 0, **kw})


@pytest.mark.parametrize("variant", ["xkd", "mas", "mats"])
def test_one_training_step_per_variant(variant: str) -> None:
    torch.manual_seed(0)
    model = XKDPretrainer(variant=variant, num_local_views=2, **TINY)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    t = trainer()
    t.fit(model, DataLoader(tiny_clips(), batch_size=4))
    assert t.global_step == 1
    metrics = t.callback_metrics
    for key in (
        "loss/da",
        "loss/kd",
        "loss/rec",
        "loss/total",
        "loss/rec_video",
        "loss/rec_audio",
        "ema/momentum",
    ):
        assert key in metrics and torch.isfinite(metrics[key]), key
    expected_total = (metrics["loss/da"] + metrics["loss/kd"] + 5 * metrics["loss/rec"]) / 7
    torch.testing.assert_close(metrics["loss/total"], expected_total)
    # teachers: no gradient, not optimised, moved by EMA towards the (updated) student
    teacher_params = list(model.teacher.parameters()) + list(model.teacher_heads.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher_params)
    optimised = {id(p) for g in t.optimizers[0].param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in teacher_params}
    assert not any(mod.training for mod in model.teacher.modules())
    key = "video.patch_embed.weight"
    assert not torch.equal(model.student.state_dict()[key], student_before[key])
    assert not torch.equal(model.teacher.state_dict()[key], teacher_before[key])
    m = metrics["ema/momentum"].item()
    torch.testing.assert_close(
        model.teacher.state_dict()[key], m * teacher_before[key] + (1 - m) * model.student.state_dict()[key]
    )
    # centers moved from zero after the step
    assert model.centers["video"].center.abs().sum() > 0
    # sharing
    shared = model.student["video"].blocks is model.student["audio"].blocks
    assert shared == (variant in ("mas", "mats"))
    teacher_shared = model.teacher["video"].blocks is model.teacher["audio"].blocks
    assert teacher_shared == (variant == "mats")


def test_probe_is_trained_on_detached_features_and_logged() -> None:
    torch.manual_seed(0)
    model = XKDPretrainer(probe_num_classes=3, loss_weights={"da": 0.0, "kd": 1.0, "rec": 5.0}, **TINY)
    t = trainer(limit_val_batches=1, val_check_interval=1, check_val_every_n_epoch=None)
    data = DataLoader(tiny_clips(), batch_size=4)
    t.fit(model, data, data)
    assert "val/probe_top1" in t.callback_metrics and "val/probe_audio_top1" in t.callback_metrics
    assert "loss/da" not in t.callback_metrics  # zero-weight term skipped
    groups = t.optimizers[0].param_groups
    probe_group = [g for g in groups if any(p is model.probes["video"].weight for p in g["params"])]
    assert len(probe_group) == 1 and probe_group[0]["weight_decay"] == 0.0
    # the probe's loss must not reach the encoder: a probe-only backward leaves encoder grads empty
    model.zero_grad(set_to_none=True)
    batch = next(iter(data))
    model.train()
    feats = {"video": model.student["video"].patch_mean(batch["video"]), "audio": torch.randn(4, 192)}
    sum(model._probe_losses(feats, batch["label"]).values()).backward()
    assert model.student["video"].patch_embed.weight.grad is None
    assert model.probes["video"].weight.grad is not None


def test_probe_loss_ignores_unlabelled_samples() -> None:
    torch.manual_seed(0)
    model = XKDPretrainer(probe_num_classes=3, **TINY)
    feats = {"video": torch.randn(4, 192), "audio": torch.randn(4, 192)}
    label = torch.tensor([0, -1, 2, -1])
    losses = model._probe_losses(feats, label)
    for m, loss in losses.items():
        keep = label >= 0
        expected = torch.nn.functional.cross_entropy(model.probes[m](feats[m][keep]), label[keep])
        torch.testing.assert_close(loss, expected)
    unlabelled = model._probe_losses(feats, torch.full((4,), -1))
    assert all(float(v) == 0.0 for v in unlabelled.values())


def test_default_hparams_match_the_paper() -> None:
    sig = inspect.signature(XKDPretrainer.__init__).parameters
    assert sig["video_mask_ratio"].default == 0.85 and sig["audio_mask_ratio"].default == 0.80
    assert sig["teacher_view"].default == "local" and sig["clip_grad"].default == 0.3
    assert sig["weight_decay"].default == 0.3 and sig["betas"].default == (0.9, 0.95)
    assert sig["ema_base_momentum"].default == 0.997 and sig["audio_teacher_temperature"].default == 0.07


def test_reconstruction_pngs_are_written(tmp_path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    model = XKDPretrainer(**{**TINY, "recon_log_every_n_epochs": 1})
    t = trainer(logger=CSVLogger(tmp_path), default_root_dir=tmp_path)
    t.fit(model, DataLoader(tiny_clips(), batch_size=4))
    pngs = sorted(
        p.name for p in (tmp_path / "lightning_logs" / "version_0" / "reconstructions").glob("*.png")
    )
    assert pngs == ["audio_epoch0000.png", "video_epoch0000.png"]


def test_ema_callback_is_attached_by_the_module() -> None:
    model = XKDPretrainer(**TINY)
    (cb,) = model.configure_callbacks()
    assert isinstance(cb, EMATeacherCallback) and cb.base_momentum == 0.997


def test_export_and_reload(tmp_path) -> None:
    model = XKDPretrainer(variant="mas", **TINY)
    paths = model.export_encoders(tmp_path)
    assert set(paths) == {"student_video", "student_audio", "teacher_video", "teacher_audio"}
    index = json.loads((tmp_path / "encoders.json").read_text())
    assert index["variant"] == "mas" and index["files"]["teacher_audio"] == "teacher_audio.pt"
    state = torch.load(paths["student_audio"], weights_only=True)
    assert "blocks.0.attn.qkv.weight" in state
    enc = load_exported_encoder(paths["student_video"]).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    torch.testing.assert_close(enc(x), model.student["video"].eval()(x))


def test_reconstruction_grid_layout() -> None:
    video = torch.randn(3, 4, 32, 32)
    mask = torch.zeros(8, dtype=torch.bool)
    mask[:4] = True
    img = reconstruction_grid(video, mask, torch.randn(8, 3 * 2 * 16 * 16), "video", (2, 16, 16))
    assert img.dtype.name == "uint8" and img.shape == (3 * 32, 2 * 32, 3)
    # patches 0-3 (the first tubelet, columns 0:32) are masked, 4-7 (columns 32:64) visible: the
    # reconstruction row shows the input where visible and the prediction where masked
    assert (img[64:, 32:64] == img[:32, 32:64]).all()
    assert not (img[64:, :32] == img[:32, :32]).all()
    assert (img[32:64, :32] == img[32:64, :32].min()).all()  # the masked input row is blanked there
    spec = torch.randn(1, 80, 32)
    smask = torch.zeros(40, dtype=torch.bool)
    simg = reconstruction_grid(spec, smask, torch.randn(40, 64), "audio", (4, 16))
    assert simg.shape == (240, 32, 3)
    assert (simg[160:] == simg[:80]).all()  # nothing masked: reconstruction == input


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="variant"):
        XKDPretrainer(variant="bogus", **TINY)
    with pytest.raises(ValueError, match="loss_weights"):
        XKDPretrainer(loss_weights={"foo": 1.0}, **TINY)


# ------------------------------------------------------------------ fidelity to the release


def test_release_audio_views_shapes_and_the_legacy_option() -> None:
    torch.manual_seed(0)
    wave = torch.randn(3, SAMPLES) * 0.1
    model = XKDPretrainer(num_local_views=2, num_audio_local_views=1, **TINY)
    spec, local = model.audio_views(wave)
    assert spec.shape == (3, 80, 32) and local.shape == (3, 1, 80, 16)
    # the global view is the clip's log-mel with one gain in [0.9, 1.1]: a per-sample offset of
    # 2 ln(g) / std on every bin that is not at the log's floor
    clean = model.audio_spectrogram(wave)
    offset = (spec - clean).flatten(1).median(1).values
    assert (
        torch.all(offset.abs() <= 2 * torch.log(torch.tensor(1.1)) / 4.41 + 1e-4) and offset.abs().max() > 0
    )
    legacy = XKDPretrainer(audio_views="spectrogram", num_local_views=2, **TINY)
    spec_old, local_old = legacy.audio_views(wave)
    torch.testing.assert_close(spec_old, legacy.audio_spectrogram(wave))
    assert local_old.shape == (3, 2, 80, 16)


def test_release_audio_local_view_is_its_own_waveform_crop() -> None:
    """With the random resize crop an identity (scale 1, no canvas) and no gain, a local view is
    the log-mel of a 100-sample-aligned crop of the clip."""
    torch.manual_seed(1)
    wave = torch.randn(2, SAMPLES) * 0.1
    model = XKDPretrainer(
        audio_local_crop_scale=(1.0, 1.0),
        audio_local_canvas_scale=(1.0, 1.0),
        audio_local_volume_jitter=0.0,
        audio_global_volume_jitter=0.0,
        **TINY,
    )
    _, local = model.audio_views(wave)
    length = SAMPLES * 16 // 32
    mel = model.melspec(wave.device)
    candidates = [mel(wave[:, s : s + length])[..., :16] for s in range(0, SAMPLES - length + 1, 100)]
    for b in range(2):
        err = min(float((c[b] - local[b, 0]).abs().max()) for c in candidates)
        assert err < 1e-4


def test_mas_teacher_temperature_warms_up_per_epoch() -> None:
    model = XKDPretrainer(
        variant="mas",
        video_teacher_temperature=0.11,
        audio_teacher_temperature=0.06,
        video_warmup_teacher_temperature=0.09,
        audio_warmup_teacher_temperature=0.04,
        teacher_temperature_warmup_epochs=30,
        **TINY,
    )
    assert model.teacher_temperature("video", 0) == 0.09 and model.teacher_temperature("audio", 29) == 0.06
    assert abs(model.teacher_temperature("video", 10) - (0.09 + 0.02 * 10 / 29)) < 1e-12
    assert XKDPretrainer(**TINY).teacher_temperature("video", 0) == 0.1  # no warm-up: constant


@pytest.mark.parametrize(("variant", "shared"), [("xkd", 0), ("mas", 0), ("mats", 1)])
def test_mats_shared_teacher_blocks_get_the_release_double_update(variant: str, shared: int) -> None:
    model = XKDPretrainer(variant=variant, **TINY)
    callback = model.configure_callbacks()[0]
    assert isinstance(callback, EMATeacherCallback) and callback.shared_updates == "per_pair"
    groups = callback.tensor_groups(model.ema_pairs())
    blocks = {id(p) for p in model.teacher["video"].blocks.parameters()}
    twice = {id(t) for t in groups.get(2, ([], []))[0]}
    assert twice == (blocks if shared else set())
    once = XKDPretrainer(variant=variant, shared_teacher_ema="once", **TINY).configure_callbacks()[0]
    assert once.shared_updates == "once"


def test_release_architecture_defaults_and_old_checkpoints_name_the_knob() -> None:
    model = XKDPretrainer(**TINY)
    assert model.student["video"].norm.eps == 1e-5 and model.decoders["audio"].blocks[0].norm1.eps == 1e-5
    assert not any(k.startswith("decoders.video.norm") for k in model.state_dict())
    old = XKDPretrainer(decoder_final_norm=True, norm_eps=1e-6, **TINY)
    ckpt = {"state_dict": old.state_dict()}
    with pytest.raises(Exception, match="decoder_final_norm=True"):
        model.on_load_checkpoint(ckpt)
    fresh = XKDPretrainer(decoder_final_norm=True, norm_eps=1e-6, **TINY)
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"])
    sig = inspect.signature(XKDPretrainer.__init__).parameters
    assert sig["decoder_heads"].default == 12 and sig["lr_warmup_from_zero"].default is True
    assert sig["mel_scale"].default == "slaney" and sig["audio_views"].default == "release"
    from xmkd.models.audio import XKD_LOG_EPS

    assert sig["mel_log_eps"].default == XKD_LOG_EPS == float(torch.finfo(torch.float32).eps)
    assert XKDPretrainer(mel_log_eps=1e-6, **TINY).melspec(torch.device("cpu")).eps == 1e-6


def test_a_kd_baseline_is_one_more_weighted_term_and_off_by_default() -> None:
    """``fitnets`` in loss_weights: logged, in the weighted total, its regressors optimised; without
    it (or at weight 0) the model and its first loss are those of plain XKD."""
    batch = next(iter(DataLoader(tiny_clips(), batch_size=4)))

    def first_loss(**kw) -> tuple[XKDPretrainer, dict]:
        torch.manual_seed(0)
        model = XKDPretrainer(num_local_views=2, **TINY, **kw)
        torch.manual_seed(1)
        video, video_local, spec, spec_local = model._batch_views(batch)
        return model, model.compute_losses(video, video_local, spec, spec_local, update_centers=False)

    plain, out = first_loss()
    off, out_off = first_loss(loss_weights={"da": 1.0, "kd": 1.0, "rec": 5.0, "fitnets": 0.0})
    assert not len(plain.kd_baselines) and not len(off.kd_baselines)
    assert plain.state_dict().keys() == off.state_dict().keys()
    assert torch.equal(out["loss"], out_off["loss"])

    model, out_fit = first_loss(loss_weights={"da": 1.0, "kd": 1.0, "rec": 5.0, "fitnets": 1.0})
    logs = out_fit["logs"]
    assert torch.equal(logs["loss/rec"], out["logs"]["loss/rec"])  # the same draws: the same XKD terms
    want = (logs["loss/da"] + logs["loss/kd"] + 5 * logs["loss/rec"] + logs["loss/fitnets"]) / 8
    torch.testing.assert_close(out_fit["loss"].detach(), want)
    t = trainer()
    t.fit(model, DataLoader(tiny_clips(), batch_size=4))
    optimised = {id(p) for g in t.optimizers[0].param_groups for p in g["params"]}
    assert {id(p) for p in model.kd_baselines.parameters()} <= optimised
    assert torch.isfinite(t.callback_metrics["loss/fitnets"])


def test_kd_baselines_alone_run_the_teachers_and_bad_names_are_refused() -> None:
    torch.manual_seed(0)
    model = XKDPretrainer(loss_weights={"da": 0.0, "kd": 0.0, "rec": 5.0, "rkd": 1.0, "sp": 1.0}, **TINY)
    batch = next(iter(DataLoader(tiny_clips(), batch_size=4)))
    out = model.compute_losses(*model._batch_views(batch))
    assert {"loss/rkd", "loss/sp"} <= set(out["logs"]) and "loss/kd" not in out["logs"]
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match=r"loss_weights.*KD baselines"):
        XKDPretrainer(loss_weights={"da": 1.0, "at": 1.0}, **TINY)
    with pytest.raises(ValueError, match="loss_options"):
        XKDPretrainer(loss_options={"fitnets": {"regressor": False}}, **TINY)


# ------------------------------------------------------------------ MAE only: video alone


def test_video_alone_is_mae_and_refuses_cross_modal_terms() -> None:
    for weights in ({"rec": 1.0, "kd": 1.0, "da": 0.0}, {"rec": 1.0, "kd": 0.0, "da": 0.0, "fitnets": 1.0}):
        with pytest.raises(ValueError, match=r"loss_weights.*need two modalities"):
            XKDPretrainer(modalities=("video",), loss_weights=weights, **TINY)
    mae = {"rec": 1.0, "kd": 0.0, "da": 0.0}
    with pytest.raises(ValueError, match="variant"):
        XKDPretrainer(modalities=("video",), variant="mats", loss_weights=mae, **TINY)
    with pytest.raises(ValueError, match="modalities"):
        XKDPretrainer(modalities=("audio",), loss_weights=mae, **TINY)


def test_video_alone_trains_on_batches_without_audio_or_local_views(tmp_path) -> None:
    """A 2-channel (flow) encoder: the batch has only ``video``; reconstruction is the whole loss."""
    from lightning.pytorch.loggers import CSVLogger

    torch.manual_seed(0)
    model = XKDPretrainer(
        **{**TINY, "recon_log_every_n_epochs": 1},
        modalities=("video",), video_in_chans=2, num_local_views=0,
        loss_weights={"rec": 1.0, "kd": 0.0, "da": 0.0},
    )  # fmt: skip
    assert set(model.student) == set(model.teacher) == set(model.decoders) == {"video"}
    assert model.student["video"].config.in_chans == 2
    clips = [{"video": torch.randn(2, 4, 32, 32)} for _ in range(4)]
    t = trainer(logger=CSVLogger(tmp_path), default_root_dir=tmp_path)
    t.fit(model, DataLoader(clips, batch_size=4))
    metrics = t.callback_metrics
    torch.testing.assert_close(metrics["loss/total"], metrics["loss/rec_video"])
    assert "loss/rec_audio" not in metrics and "loss/kd" not in metrics
    recon = tmp_path / "lightning_logs" / "version_0" / "reconstructions"
    assert [p.name for p in recon.glob("*.png")] == ["video_epoch0000.png"]  # flow drawn as (u, v, 0)
    assert set(model.export_encoders(tmp_path / "enc")) == {"student_video", "teacher_video"}


def test_mae_weights_on_two_modalities_skip_heads_and_teachers_without_changing_the_loss() -> None:
    """With kd and da at 0 the DINO heads and teachers feed nothing: the step skips them and the
    loss is the mean of the two reconstructions (xkd-ablation's row (a), MAE only)."""
    torch.manual_seed(0)
    mae = XKDPretrainer(**TINY, num_local_views=2, loss_weights={"rec": 1.0, "kd": 0.0, "da": 0.0})
    batch = tiny_clips()[0]
    video, local, wave = batch["video"][None], batch["video_local"][None], batch["audio"][None]
    calls = []
    mae.heads["video"].register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(1)
    spec, spec_local = mae.audio_views(wave)
    torch.manual_seed(2)
    out = mae.compute_losses(video, local, spec, spec_local)
    assert not calls
    torch.testing.assert_close(
        out["loss"], (out["logs"]["loss/rec_video"] + out["logs"]["loss/rec_audio"]) / 2
    )
