"""The pretrain-xkd pipeline: its random-init control probe, its bookkeeping, and one tiny end-to-end run."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from tests.modules.xkd_tiny import TINY_XKD, TinyClips
from tests.trainers import quiet_trainer
from xmkd.errors import ConfigError
from xmkd.models.vit import load_exported_encoder
from xmkd.modules.xkd_control import XKDWithRandomInitProbe
from xmkd.pipelines import pretrain_xkd
from xmkd.pipelines.pretrain_xkd import fit_argv, step_time_summary

TINY = {
    **TINY_XKD,
    "encoder_depth": 1,
    "audio_patch": (16, 16),
    "probe_num_classes": 3,
    "probe_lr": 0.05,
    "probe_view": "global",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_clips(n: int = 4) -> TinyClips:
    """The shared tiny dataset with ``video_probe``, which stands for the linear-eval view."""
    return TinyClips(n, probe=True)


def fit(model: pl.LightningModule, steps: int = 2) -> pl.Trainer:
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0)
    trainer.fit(model, DataLoader(tiny_clips(), batch_size=4))
    return trainer


@pytest.mark.parametrize("probe_view", ["masked", "global", "local", "linear"])
def test_control_probe_reads_the_views_the_real_probe_reads(probe_view: str, monkeypatch):
    # At init the student and the control encoders are equal, so equal views give equal features.
    torch.manual_seed(0)
    model = XKDWithRandomInitProbe(**{**TINY, "probe_view": probe_view})
    seen: dict[str, torch.Tensor] = {}
    real_probe_losses = model._probe_losses

    def spy(features: dict, label: torch.Tensor) -> dict:
        seen.update({k: v.detach().clone() for k, v in features.items()})
        return real_probe_losses(features, label)

    monkeypatch.setattr(model, "_probe_losses", spy)
    clips = tiny_clips()
    batch = {k: torch.stack([clips[i][k] for i in range(4)]) for k in clips[0]}
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer attached
        model.training_step(batch, batch_idx=1)
    assert set(seen) == {"video", "audio", "random_init_video", "random_init_audio"}
    for m in ("video", "audio"):
        torch.testing.assert_close(seen[m], seen[f"random_init_{m}"])
    # the masked view's visible tokens pool differently from the whole view, and the local view
    # and the linear-eval view are other inputs
    encoder = model.random_init_encoders["video"]
    for view, key in (("global", "video"), ("linear", "video_probe")):
        assert torch.allclose(seen["video"], encoder.patch_mean(batch[key])) == (probe_view == view)


def test_linear_probe_view_needs_the_datamodules_probe_view():
    model = XKDWithRandomInitProbe(**{**TINY, "probe_view": "linear"})
    clips = tiny_clips()
    batch = {k: torch.stack([clips[i][k] for i in range(4)]) for k in clips[0] if k != "video_probe"}
    with pytest.raises(ConfigError, match="linear_probe_view: true"):
        model.training_step(batch, batch_idx=1)


@pytest.mark.parametrize("probe_view", ["masked", "global", "local", "linear"])
def test_control_probe_trains_on_frozen_initial_encoders(probe_view: str):
    torch.manual_seed(0)
    model = XKDWithRandomInitProbe(**{**TINY, "probe_view": probe_view})
    control = model.random_init_encoders
    assert control is not None
    initial = {k: v.clone() for k, v in model.student.state_dict().items()}
    assert all(torch.equal(v, control.state_dict()[k]) for k, v in initial.items())
    for m in ("video", "audio"):  # the control probe starts as the real probe
        real, ctrl = model.probes[m].state_dict(), model.probes[f"random_init_{m}"].state_dict()
        assert all(torch.equal(v, ctrl[k]) for k, v in real.items())
    probe_before = model.probes["random_init_video"][1].weight.clone()
    fit(model)
    # The student trained, the control encoders did not move, and the control probe did learn.
    assert not torch.equal(
        model.student.state_dict()["video.patch_embed.weight"], initial["video.patch_embed.weight"]
    )
    assert all(torch.equal(v, control.state_dict()[k]) for k, v in initial.items())
    assert not torch.equal(model.probes["random_init_video"][1].weight, probe_before)
    optimizer = model.trainer.optimizers[0]
    probe_group = [g for g in optimizer.param_groups if g["initial_lr"] == TINY["probe_lr"]]
    probe_params = {id(p) for g in probe_group for p in g["params"]}
    assert {id(p) for p in model.probes["random_init_audio"].parameters()} <= probe_params
    assert not any(p.requires_grad for p in control.parameters())
    assert len(model.step_times) == 2


def test_control_probe_is_scored_in_validation():
    torch.manual_seed(0)
    model = XKDWithRandomInitProbe(**TINY)
    fit(model, steps=1)
    evaluator = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    metrics = evaluator.validate(model, DataLoader(tiny_clips(), batch_size=4), verbose=False)[0]
    assert {"val/probe_top1", "val/random_init_probe_top1", "val/random_init_probe_audio_top1"} <= set(
        metrics
    )
    # Scored independently: accuracy of the control probe computed by hand on the same clips.
    data = tiny_clips()
    model.eval()
    with torch.no_grad():
        feats = model.random_init_encoders["video"].patch_mean(data.video)
        preds = model.probes["random_init_video"](feats).argmax(-1)
    assert metrics["val/random_init_probe_top1"] == pytest.approx((preds == data.label).float().mean().item())


def test_step_time_summary_skips_epoch_starts():
    times = [(math.nan, 5.0), (0.5, 1.0), (0.1, 2.0), (0.3, 3.0), (math.nan, 9.0), (0.1, 1.0)]
    s = step_time_summary(times)
    assert s["step_s_median"] == pytest.approx(1.5)  # median of 1, 2, 3, 1
    assert s["data_wait_s_median"] == pytest.approx(0.2)  # median of 0.5, 0.1, 0.3, 0.1
    assert s["data_wait_fraction"] == pytest.approx(1.0 / 8.0)
    assert step_time_summary([])["step_s_median"] is None
    assert "data_wait_fraction_with_epoch_starts" not in s
    # the two epochs' first batches waited 2 s and 1 s: (1 + 3) s of waiting in (4 + 21) s of waits and steps
    with_starts = step_time_summary(times, [2.0, 1.0])
    assert with_starts["data_wait_fraction_with_epoch_starts"] == pytest.approx(4.0 / 25.0)
    assert with_starts["data_wait_fraction"] == pytest.approx(1.0 / 8.0)
    assert "views_fraction" not in s
    # the views made after the transfer: of the same batches only (epoch starts and None left out)
    views = step_time_summary(times, view_times=[9.0, 0.4, None, 0.2, 9.0, 0.1])
    assert views["views_s_median"] == pytest.approx(0.2)  # median of 0.4, 0.2, 0.1
    assert views["views_fraction"] == pytest.approx(0.7 / 8.0)


def test_fit_argv_swaps_in_the_control_model_and_passes_overrides():
    argv = fit_argv(
        "x.yaml", "exp", "runs", max_epochs=3, max_steps=7, overrides=["data.init_args.batch_size=2"]
    )
    assert argv[:3] == ["fit", "--config", "x.yaml"]
    assert "--model.class_path=xmkd.modules.xkd_control.XKDWithRandomInitProbe" in argv
    assert {"--trainer.max_epochs=3", "--trainer.max_steps=7", "--data.init_args.batch_size=2"} <= set(argv)


def _value(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def tiny_pipeline_overrides(tmp_path: Path) -> list[str]:
    synth = {
        "classes": 2,
        "clips_per_class": 6,
        "clips_per_group": 1,
        "duration": 1.5,
        "size": 32,
        "fps": 8.0,
    }
    model = {k: v for k, v in TINY.items() if k not in ("warmup_epochs", "lr")} | {"probe_num_classes": 2}
    model["audio_patch"] = list(model["audio_patch"])
    data = {
        "root": str(tmp_path / "synth"),
        "synthetic_options": synth,
        "num_frames": 4,
        "audio_seconds": 0.3,
        "crop_size": 32,
        "local_crop_size": 16,
        "local_frames": 2,
        "batch_size": 4,
        "eval_batch_size": 4,
        "num_workers": 0,
    }
    return (
        ["trainer.logger=false", "trainer.enable_progress_bar=false"]
        + [f"model.init_args.{k}={_value(v)}" for k, v in model.items()]
        + [f"data.init_args.{k}={_value(v)}" for k, v in data.items()]
    )


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture):
    parser = argparse.ArgumentParser()
    pretrain_xkd.add_arguments(parser)
    args = parser.parse_args(
        ["--runs-dir", str(tmp_path / "runs"), "--max-steps", "2"]
        + [a for o in tiny_pipeline_overrides(tmp_path) for a in ("--override", o)]
    )
    assert pretrain_xkd.run(args) == 0
    out = tmp_path / "runs" / "pretrain-xkd"
    results = json.loads((out / "results.json").read_text())
    for key in ("probe_top1", "probe_top1_random_init", "probe_audio_top1", "probe_audio_top1_random_init"):
        assert 0.0 <= results[key] <= 1.0
    assert results["num_classes"] == 2 and results["chance"] == 0.5
    # the frozen-feature SVM probe of both encoders, on every validation clip
    for key in ("svm_top1", "svm_top1_random_init", "svm_audio_top1", "svm_audio_top1_random_init"):
        assert 0.0 <= results[key] <= 1.0 and results[f"{key}_c"] > 0
    assert results["svm_test_clips"] == results["val_clips"] and results["svm_train_views"] == 5
    assert results["steps"] == results["steps_random_init"] == 2
    assert results["val_clips"] == 4 and results["wall_s"] > 0 and results["fit_cpu_s"] > 0
    # the recipe makes its views after the transfer, inside the data wait (the second step's)
    assert 0 < results["views_s_median"] <= results["data_wait_s_median"]
    assert 0 < results["views_fraction"] <= results["data_wait_fraction"]
    assert Path(results["runs"]["pretrain"]).is_dir()
    assert set(results["encoders"]) == {"student_video", "student_audio", "teacher_video", "teacher_audio"}
    for path in results["encoders"].values():
        state = torch.load(path, weights_only=True)
        assert isinstance(state, dict) and "pos_embed" in state
        encoder = load_exported_encoder(path)
        assert encoder.config.depth == 1
    assert "random init" in capsys.readouterr().out


@pytest.mark.slow
def test_ablation_runs_each_loss_combination(tmp_path: Path, capsys: pytest.CaptureFixture):
    from xmkd.pipelines import pretrain_xkd_ablation as ablation

    parser = argparse.ArgumentParser()
    ablation.add_arguments(parser)
    args = parser.parse_args(
        ["--runs-dir", str(tmp_path / "runs"), "--max-steps", "1"]
        + [a for o in tiny_pipeline_overrides(tmp_path) for a in ("--override", o)]
    )
    assert ablation.run(args) == 0
    results = json.loads((tmp_path / "runs" / "xkd-ablation" / "results.json").read_text())
    assert results["complete"] and [r["name"] for r in results["rows"]] == [a[0] for a in ablation.ABLATIONS]
    weights = [r["loss_weights"] for r in results["rows"]]
    assert weights == [w for _, _, w in ablation.ABLATIONS]
    for row in results["rows"]:
        config = (Path(row["run_dir"]) / "config.yaml").read_text()
        assert "loss_weights" in config and row["steps"] == 1
    table = capsys.readouterr().out
    assert "(a) reconstruction only" in table and "(c) + cross-modal KD (full XKD)" in table


def test_ablation_baseline_rows_swap_dino_kd_for_one_baseline_each():
    from xmkd.distill.xkd_baselines import XKD_BASELINES
    from xmkd.pipelines.pretrain_xkd_ablation import ABLATIONS

    names = [a[0] for a in ABLATIONS]
    assert names[:3] == ["rec", "rec+da", "xkd"]  # the paper's ablation, in its order
    weights = dict((a[0], a[2]) for a in ABLATIONS)
    for baseline in XKD_BASELINES:
        row = weights[f"rec+da+{baseline}"]
        assert row == {**weights["rec+da"], baseline: 1.0}


def test_ablation_table_lists_every_row():
    from xmkd.pipelines.pretrain_xkd_ablation import ablation_table

    row = dict(
        svm_top1=0.5,
        svm_audio_top1=0.75,
        svm_top1_random_init=0.25,
        svm_audio_top1_random_init=None,
        probe_top1=None,
        probe_audio_top1=0.4,
        steps=10,
        fit_s=3.0,
    )
    table = ablation_table([{**row, "description": "(a) x"}, {**row, "description": "(b) y"}], chance=0.1)
    lines = table.splitlines()
    assert "chance 10.0%" in lines[0] and len(lines) == 5
    assert "50.0%" in lines[3] and "75.0%" in lines[3] and "25.0%" in lines[3] and "n/a" in lines[3]
    assert "40.0%" in lines[3]  # the online probe's audio figure where it ran


def test_seed_summary_mean_std_and_the_noise_verdict():
    from xmkd.pipelines.pretrain_xkd import summarize_seeds

    runs = [
        {
            "probe_top1": 0.40,
            "probe_top1_random_init": 0.20,
            "probe_audio_top1": 0.5,
            "probe_audio_top1_random_init": 0.3,
        },
        {
            "probe_top1": 0.50,
            "probe_top1_random_init": 0.30,
            "probe_audio_top1": 0.5,
            "probe_audio_top1_random_init": 0.3,
        },
        {
            "probe_top1": 0.45,
            "probe_top1_random_init": 0.25,
            "probe_audio_top1": 0.5,
            "probe_audio_top1_random_init": 0.3,
        },
    ]
    s = summarize_seeds(runs)
    assert s["probe_top1"]["mean"] == pytest.approx(0.45) and s["probe_top1"]["std"] == pytest.approx(0.05)
    margin = s["video_margin"]
    assert margin["mean"] == pytest.approx(0.2) and margin["std"] == pytest.approx(0.0, abs=1e-12)
    assert margin["twice_larger_std"] == pytest.approx(0.1) and margin["beyond_noise"]  # 0.2 > 2 x 0.05
    runs[1]["probe_top1"] = 0.70  # one lucky seed: std 0.15, the gap 0.267 < 0.3
    assert not summarize_seeds(runs)["video_margin"]["beyond_noise"]


@pytest.mark.slow
def test_pipeline_with_seeds_writes_each_seed_and_the_summary(tmp_path: Path):
    parser = argparse.ArgumentParser()
    pretrain_xkd.add_arguments(parser)
    args = parser.parse_args(
        ["--runs-dir", str(tmp_path / "runs"), "--max-steps", "1", "--seeds", "0,3"]
        + [a for o in tiny_pipeline_overrides(tmp_path) for a in ("--override", o)]
    )
    assert pretrain_xkd.run(args) == 0
    out = tmp_path / "runs" / "pretrain-xkd"
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 3] and [r["seed"] for r in results["per_seed"]] == [0, 3]
    assert results["probe_top1"] == results["per_seed"][0]["probe_top1"]
    assert len(results["summary"]["probe_top1"]["values"]) == 2
    assert (out / "encoders" / "student_video.pt").is_file() and (
        out / "encoders-seed3" / "student_video.pt"
    ).is_file()
    runs = [Path(r["runs"]["pretrain"]) for r in results["per_seed"]]
    assert [r.parent.name for r in runs] == ["pretrain-xkd-seed0", "pretrain-xkd-seed3"]
    assert "seed_everything: 3" in (runs[1] / "config.yaml").read_text()


def test_frozen_svm_probe_reads_both_encoders_on_fresh_views_of_every_clip():
    """Each training pass draws new views (a new epoch seeds them), the control's features come from
    the frozen initial copy, and the test features are the validation clips' own."""
    from xmkd.pipelines.pretrain_xkd import _frozen_features

    class Loader:
        def __init__(self, data: TinyClips) -> None:
            self.data, self.epoch = data, 0

        def __iter__(self):
            g = torch.Generator().manual_seed(self.epoch)
            items = [self.data[i] for i in range(len(self.data))]
            batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
            batch["video_probe"] = batch["video_probe"] + torch.randn(batch["video_probe"].shape, generator=g)
            batch["video_id"] = [f"v{i}" for i in range(len(items))]
            yield batch

    class DM:
        def on_after_batch_transfer(self, batch, idx):
            return batch

    model = XKDWithRandomInitProbe(**{**TINY, "probe_view": "linear"})
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(0.1)  # "pretrained": no longer the initial weights
    loader = Loader(tiny_clips())
    first, labels, ids = _frozen_features(model, DM(), loader, train=True)
    loader.epoch = 1
    second, _, _ = _frozen_features(model, DM(), loader, train=True)
    assert set(first) == {"video", "audio", "video_random_init", "audio_random_init"}
    assert not torch.allclose(first["video"], second["video"])  # another view of the same clips
    assert ids == ["v0", "v1", "v2", "v3"] and labels.tolist() == [0, 1, 2, 0]
    batch = next(iter(Loader(tiny_clips())))
    with torch.no_grad():
        want = model.random_init_encoders["video"].patch_mean(batch["video_probe"])
    torch.testing.assert_close(first["video_random_init"], want)
    assert not torch.allclose(first["video"], first["video_random_init"])
    test, _, _ = _frozen_features(model, DM(), Loader(tiny_clips()), train=False)
    with torch.no_grad():
        torch.testing.assert_close(test["video"], model.student["video"].patch_mean(batch["video"]))


def test_seed_summary_table_headlines_the_svm_margin_when_the_online_probe_is_off():
    from xmkd.pipelines.pretrain_xkd import _summary_rows, summarize_seeds

    runs = [
        {"svm_top1": a, "svm_top1_random_init": b, "probe_top1": None, "probe_top1_random_init": None}
        for a, b in ((0.42, 0.30), (0.44, 0.31), (0.40, 0.29))
    ]
    first = {"chance": 0.1, "num_classes": 10, "steps": 5, "train_clips": 4, "val_clips": 3}
    rows = dict(_summary_rows(summarize_seeds(runs), first))
    assert rows["SVM on frozen features (video), pretrained"].startswith("42.0 ± 2.0 % (42.0, 44.0, 40.0)")
    assert not any(label.startswith("online probe") for label in rows)  # it did not run: no n/a rows
    assert rows["SVM video margin (pretrained - random init)"].startswith("12.0 ± 1.0")
    assert rows["headline margin > 2 x the larger seed std"] == "yes (4.0)"


def test_frozen_probe_reports_knn_beside_the_svm_and_draws_the_embedding_map(tmp_path: Path, monkeypatch):
    """kNN top-1 for every encoder and modality the SVM scores, from the same features, and a
    two-panel t-SNE map (pretrained, random init) of the validation clips named by the data's classes."""
    import xmkd.viz as viz
    from xmkd.pipelines.pretrain_xkd import frozen_svm_probe

    class Loader:
        def __init__(self, data: TinyClips, offset: int) -> None:
            self.data, self.offset = data, offset

        def __iter__(self):
            items = [self.data[i] for i in range(len(self.data))]
            batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
            batch["video_id"] = [f"v{i + self.offset}" for i in range(len(items))]
            yield batch

    class DM:
        dataset, num_classes, class_names = "tiny", 3, ("red", "green", "blue")

        def train_dataloader(self):
            return Loader(tiny_clips(9), 0)

        def val_dataloader(self):
            return Loader(tiny_clips(6), 100)

        def on_after_batch_transfer(self, batch, idx):
            return batch

    figures = []
    real = viz.embedding_figure
    monkeypatch.setattr(viz, "embedding_figure", lambda *a, **k: figures.append(fig := real(*a, **k)) or fig)
    model = XKDWithRandomInitProbe(**{**TINY, "probe_view": "linear"})
    out = frozen_svm_probe(model, DM(), train_views=2, figure_dir=tmp_path / "figures")
    for svm_key in ("svm_top1", "svm_top1_random_init", "svm_audio_top1", "svm_audio_top1_random_init"):
        knn_key = svm_key.replace("svm", "knn")
        assert 0.0 <= out[knn_key] <= 1.0 and 0.0 <= out[svm_key] <= 1.0, knn_key
    png = tmp_path / "figures" / "embedding_tsne.png"
    assert out["embedding_map"] == str(png) and png.is_file() and png.stat().st_size > 1000
    (fig,) = figures
    assert [ax.get_title() for ax in fig.axes] == ["pretrained", "random init"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["red", "green", "blue"]
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 6  # every validation clip
