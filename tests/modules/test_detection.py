"""Detection LightningModules: teacher and student train with a real Trainer on tiny fake features;
the teacher stays frozen (bit-identical weights, no gradient, not in the optimiser or state dict)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from xmkd.errors import ConfigError
from xmkd.metrics.detection import event_map, segments_from_frame_labels, segments_from_frame_scores
from xmkd.modules.detection import (
    AugmentedRGBStudent,
    SingleStreamDetector,
    TwoStreamTeacher,
    figure_to_array,
    per_class_ap_figure,
    timeline_figure,
)

C, D_RGB, D_FLOW = 4, 6, 5
HEAD = {"num_classes": C, "channels": 8, "num_blocks": 2, "plot_videos": 2, "plot_classes": 2}


def fake_videos(n: int = 6, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        t = 6 + (i % 3) * 3
        labels = (torch.rand(t, C, generator=g) < 0.3).float()
        labels[0, i % C] = 1.0
        out.append(
            {
                "features": {
                    "rgb": torch.randn(t, D_RGB, generator=g),
                    "flow": torch.randn(t, D_FLOW, generator=g),
                },
                "labels": labels,
                "video_id": f"v{i}",
            }
        )
    return out


def collate(items: list[dict]) -> dict:
    t = max(len(x["labels"]) for x in items)
    mask = torch.zeros(len(items), t, dtype=torch.bool)
    feats = {m: torch.zeros(len(items), t, items[0]["features"][m].shape[1]) for m in items[0]["features"]}
    labels = torch.zeros(len(items), t, C)
    for i, x in enumerate(items):
        n = len(x["labels"])
        mask[i, :n] = True
        labels[i, :n] = x["labels"]
        for m in feats:
            feats[m][i, :n] = x["features"][m]
    return {"features": feats, "labels": labels, "mask": mask, "video_id": [x["video_id"] for x in items]}


def loader(shuffle: bool = False) -> DataLoader:
    return DataLoader(fake_videos(), batch_size=3, shuffle=shuffle, collate_fn=collate)


def trainer(root: Path, **kw) -> L.Trainer:
    return L.Trainer(
        default_root_dir=root, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, num_sanity_val_steps=0, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    teacher = TwoStreamTeacher(aux_modality="flow", rgb_dim=D_RGB, aux_dim=D_FLOW, **HEAD)
    tr = trainer(root, max_steps=2, limit_val_batches=1)
    tr.fit(teacher, loader(True), loader())
    assert torch.isfinite(tr.callback_metrics["train/loss"])
    assert "val/map" in tr.callback_metrics and "val/map_25" in tr.callback_metrics
    path = root / "teacher.ckpt"
    tr.save_checkpoint(path)
    return path


def test_student_trains_and_teacher_stays_frozen(teacher_ckpt: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    distill = {"atomic": 1.0, "gcr": 1.0, "abs": 1.0, "mars": 0.5, "fitnets": 0.1}
    student = AugmentedRGBStudent(
        teacher_checkpoint=str(teacher_ckpt), rgb_dim=D_RGB, distill=distill, **HEAD
    )
    teacher = student.teacher
    assert isinstance(teacher, TwoStreamTeacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ids = {id(p) for p in teacher.parameters()}
    assert not ids & {id(p) for p in student.parameters()}
    assert not any(k.startswith("_teacher") or "rgb_head" in k for k in student.state_dict())
    proj_before = student.distill_losses["atomic"].student_proj[0].weight.clone()

    tr = trainer(tmp_path, max_steps=2, limit_val_batches=1)
    tr.fit(student, loader(True), loader())

    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    opt_ids = {id(p) for group in tr.optimizers[0].param_groups for p in group["params"]}
    assert not opt_ids & ids
    assert not torch.equal(proj_before, student.distill_losses["atomic"].student_proj[0].weight)  # learnt
    metrics = tr.callback_metrics
    for name in ["det", *distill]:
        assert torch.isfinite(metrics[f"train/loss_{name}"]), name
    assert 0.0 <= float(metrics["val/map"]) <= 1.0
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert any("timeline" in p for p in pngs), pngs


def test_a_student_initialises_alike_from_a_teacher_checkpoint_or_instance(teacher_ckpt: Path) -> None:
    # loading the teacher draws nothing from the global RNG (the raw chain passes a checkpoint)
    instance = TwoStreamTeacher.load_from_checkpoint(teacher_ckpt, map_location="cpu")
    torch.manual_seed(3)
    from_instance = AugmentedRGBStudent(teacher=instance, rgb_dim=D_RGB, **HEAD)
    after_instance = torch.rand(1)
    torch.manual_seed(3)
    from_checkpoint = AugmentedRGBStudent(teacher_checkpoint=str(teacher_ckpt), rgb_dim=D_RGB, **HEAD)
    assert torch.equal(torch.rand(1), after_instance)
    a, b = from_instance.state_dict(), from_checkpoint.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_cache_hits_only_for_identical_inputs(teacher_ckpt: Path) -> None:
    student = AugmentedRGBStudent(
        teacher_checkpoint=str(teacher_ckpt), rgb_dim=D_RGB, cache_teacher=True, **HEAD
    )
    calls = []
    student.teacher.register_forward_hook(lambda *a: calls.append(1))
    batch = collate(fake_videos()[:3])
    first = student.teacher_outputs(batch)
    second = student.teacher_outputs(batch)
    assert len(calls) == 1
    torch.testing.assert_close(first["embedding"], second["embedding"])
    # the same videos padded differently in another batch: still a hit, same values at valid steps
    regrouped = collate(fake_videos()[:2])
    third = student.teacher_outputs(regrouped)
    assert len(calls) == 1
    torch.testing.assert_close(third["embedding"], first["embedding"][:2, : regrouped["mask"].shape[1]])
    # a different crop of a video misses the cache and is recomputed
    cropped = collate([{**v, "features": {m: f[1:] for m, f in v["features"].items()}, "labels": v["labels"][1:]}
                       for v in fake_videos()[:3]])  # fmt: skip
    student.teacher_outputs(cropped)
    assert len(calls) == 2


def test_student_config_errors(teacher_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="teacher_checkpoint"):
        AugmentedRGBStudent(teacher_checkpoint=str(tmp_path / "missing.ckpt"), rgb_dim=D_RGB, **HEAD)
    with pytest.raises(ConfigError, match="unknown term"):
        AugmentedRGBStudent(
            teacher_checkpoint=str(teacher_ckpt), rgb_dim=D_RGB, distill={"gcrr": 1.0}, **HEAD
        )
    with pytest.raises(ConfigError, match="has no 'pose'"):
        SingleStreamDetector(modality="pose", input_dim=3, **HEAD)(collate(fake_videos()[:2]))


@pytest.mark.parametrize(("choice", "key"), [("aux", "aux_embedding"), ("fused", "embedding")])
def test_terms_read_the_chosen_teacher_embedding(teacher_ckpt: Path, choice: str, key: str) -> None:
    student = AugmentedRGBStudent(
        teacher_checkpoint=str(teacher_ckpt),
        rgb_dim=D_RGB,
        teacher_embedding=choice,
        cache_teacher=True,
        **HEAD,
    )
    batch = collate(fake_videos()[:3])
    with torch.no_grad():
        want = student.teacher(batch)[key]
    for _ in range(2):  # computed, then from the cache
        torch.testing.assert_close(student.teacher_outputs(batch)["embedding"], want)
    # what the terms compute is what they compute on that embedding
    out = student(batch)
    terms = student.distillation_terms(out, batch)
    gcr = student.distill_losses["gcr"](out, {"embedding": want}, batch["mask"])
    torch.testing.assert_close(terms["gcr"], gcr)


def test_reading_the_aux_stream_needs_a_late_fusion_teacher(tmp_path: Path) -> None:
    feature_teacher = TwoStreamTeacher(rgb_dim=D_RGB, aux_dim=D_FLOW, fusion="feature", **HEAD)
    student = AugmentedRGBStudent(teacher=feature_teacher, rgb_dim=D_RGB, **HEAD)
    with pytest.raises(ConfigError, match="teacher_embedding"):
        student.setup("fit")
    with pytest.raises(ConfigError, match="teacher_embedding"):
        AugmentedRGBStudent(teacher=feature_teacher, rgb_dim=D_RGB, teacher_embedding="flow", **HEAD)
    AugmentedRGBStudent(teacher=feature_teacher, rgb_dim=D_RGB, teacher_embedding="fused", **HEAD).setup(
        "fit"
    )


def test_teacher_fusion_variants() -> None:
    torch.manual_seed(0)
    batch = collate(fake_videos()[:3])
    late = TwoStreamTeacher(rgb_dim=D_RGB, aux_dim=D_FLOW, fusion="prob_mean", **HEAD).eval()
    out = late(batch)
    rgb, _ = late.rgb_head(batch["features"]["rgb"], batch["mask"])
    aux, _ = late.aux_head(batch["features"]["flow"], batch["mask"])
    torch.testing.assert_close(
        out["logits"].sigmoid(), (rgb.sigmoid() + aux.sigmoid()) / 2, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(out["embedding"], (out["rgb_embedding"] + out["aux_embedding"]) / 2)
    fused = TwoStreamTeacher(rgb_dim=D_RGB, aux_dim=D_FLOW, fusion="feature", head="mstcn", **HEAD).eval()
    out = fused(batch)
    assert out["logits"].shape == (3, batch["mask"].shape[1], C) and "aux_embedding" not in out


def test_plots_return_figures_and_arrays() -> None:
    labels = np.zeros((20, 5))
    labels[3:9, 2] = 1
    labels[10:15, 4] = 1
    scores = {"teacher": np.random.rand(20, 5), "student": np.random.rand(20, 5)}
    fig = timeline_figure(labels, scores, max_classes=3, class_names=[f"c{i}" for i in range(5)])
    assert len(fig.axes) == 3
    assert fig.axes[0].get_ylabel() == "c2"  # most frequent ground-truth class first
    image = figure_to_array(fig)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    bar = per_class_ap_figure(np.array([0.2, np.nan, 0.9]))
    assert len(bar.axes[0].patches) == 2


def test_event_map_logged_in_validation_and_test_equals_direct_computation(tmp_path: Path) -> None:
    """``event_iou_thresholds`` logs {val,test}/event_map@<iou> and their mean; each equals event_map
    over the model's own per-video probabilities (valid steps only), computed here directly."""
    torch.manual_seed(0)
    thresholds = [0.1, 0.3, 0.5]
    model = SingleStreamDetector(
        modality="rgb", input_dim=D_RGB, event_iou_thresholds=thresholds, **{**HEAD, "plot_videos": 0}
    )
    tr = trainer(tmp_path, max_steps=2)
    tr.fit(model, loader(True), loader())
    model.eval()
    preds, gts = [], []
    with torch.no_grad():
        for batch in loader():
            probs = model(batch)["logits"].sigmoid()
            for p, y, m in zip(probs, batch["labels"], batch["mask"]):
                preds.append(segments_from_frame_scores(p[m], 1.0, 0.5))
                gts.append(segments_from_frame_labels(y[m], 1.0))
    expected = event_map(preds, gts, thresholds, num_classes=C, protocol="pku-mmd")
    assert sum(len(p) for p in preds) > 0 and expected[0.1].map > 0
    metrics = tr.callback_metrics
    for t in thresholds:
        assert metrics[f"val/event_map@{t:g}"].item() == pytest.approx(expected[t].map, abs=1e-6)
    mean = np.mean([expected[t].map for t in thresholds])
    assert metrics["val/event_map"].item() == pytest.approx(mean, abs=1e-6)
    tested = tr.test(model, loader(), verbose=False)[0]
    assert tested["test/event_map@0.5"] == pytest.approx(expected[0.5].map, abs=1e-6)
    assert tested["test/map"] == pytest.approx(metrics["val/map"].item(), abs=1e-6)
    assert "test/map_25" in tested and "test/loss" in tested
    # off by default; bad thresholds are a config error naming the key
    assert (
        "val/event_map"
        not in trainer(tmp_path).validate(
            SingleStreamDetector(modality="rgb", input_dim=D_RGB, **{**HEAD, "plot_videos": 0}),
            loader(),
            verbose=False,
        )[0]
    )
    with pytest.raises(ConfigError, match="event_iou_thresholds"):
        SingleStreamDetector(modality="rgb", input_dim=D_RGB, event_iou_thresholds=[0.0, 0.5], **HEAD)


class NamedData(L.LightningDataModule):
    """Batches with durations (2 s per video) and the data side's class names; no feature_fps."""

    class_names = ("open door", "sit", "drink", "wave")

    def train_dataloader(self) -> DataLoader:
        return loader(True)

    def val_dataloader(self) -> DataLoader:
        def with_duration(items: list[dict]) -> dict:
            batch = collate(items)
            batch["duration"] = torch.full((len(items),), 2.0, dtype=torch.float64)
            return batch

        return DataLoader(fake_videos(), batch_size=3, collate_fn=with_duration)


def test_timelines_name_the_data_classes_and_count_seconds(tmp_path: Path, monkeypatch) -> None:
    """Without class_names in the config, the timelines read the datamodule's; the x axis is in
    seconds (duration / steps per step); a fixed feature_fps of the data wins over the duration."""
    import xmkd.modules.detection as detection

    figures = []

    def recording(*args, **kwargs):
        figures.append(fig := timeline_figure(*args, **kwargs))
        return fig

    monkeypatch.setattr(detection, "timeline_figure", recording)
    torch.manual_seed(0)
    model = SingleStreamDetector(modality="rgb", input_dim=D_RGB, **HEAD)
    trainer(tmp_path, max_steps=2, limit_val_batches=1).fit(model, datamodule=NamedData())
    assert len(figures) == 2
    for fig in figures:
        assert fig.axes[-1].get_xlabel() == "time (seconds)"
        assert all(ax.get_ylabel() in NamedData.class_names for ax in fig.axes)
        steps = len(fig.axes[0].get_lines()[0].get_xdata())
        assert fig.axes[0].get_lines()[0].get_xdata()[-1] == pytest.approx(2.0 * (steps - 1) / steps)
    assert any("timeline" in p.name for p in (tmp_path / "figures").glob("*.png"))
    data = NamedData()
    data.hparams["feature_fps"] = 4.0
    model.trainer.datamodule = data  # the rule of a data module with a fixed feature rate
    assert model._seconds_per_step(2.0, 6) == pytest.approx(0.25)


def test_student_trains_with_xkds_terms(teacher_ckpt: Path, tmp_path: Path) -> None:
    """``mmd`` and ``dino`` are one config line each: logged, the DINO head learnt, its centre moved."""
    torch.manual_seed(0)
    student = AugmentedRGBStudent(
        teacher_checkpoint=str(teacher_ckpt), rgb_dim=D_RGB, distill={"mmd": 1.0, "dino": 1.0}, **HEAD
    )
    dino = student.distill_losses["dino"]
    head_before = dino.head.mlp[0].weight.clone()
    tr = trainer(tmp_path, max_steps=2, limit_val_batches=1)
    tr.fit(student, loader(True), loader())
    assert torch.isfinite(tr.callback_metrics["train/loss_mmd"])
    assert torch.isfinite(tr.callback_metrics["train/loss_dino"])
    assert not torch.equal(head_before, dino.head.mlp[0].weight)
    assert dino.center.abs().sum() > 0
    assert "distill_losses.dino.center" in student.state_dict()  # resumes with its centre
