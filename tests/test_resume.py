"""Interrupted (SIGTERM mid-epoch) and resumed CPU runs end exactly where uninterrupted runs end.

Each test trains one tiny module three times in this process: A uninterrupted; B interrupted by a
real SIGTERM after step ``STOP`` (Lightning finishes the batch, ``PreemptionCheckpoint`` writes
``last.ckpt``, the process would exit 0); C a fresh module, fresh Trainer and a scrambled global
RNG, resumed from B's ``last.ckpt``. C must match A: every weight and buffer (students, EMA
teachers, DINO centres, probes), the optimiser and lr-scheduler state, and the final metrics.
Tolerance: exact equality (CPU float math in the same order); stated as ``atol=0`` below.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import Dataset

from xmkd.fault import AtomicCheckpointIO, PreemptionCheckpoint, ResumableDataLoader, ResumeState

SAMPLES = 143 * 31  # 32 spectrogram frames with the XKD STFT
XKD_TINY = dict(
    encoder_size="tiny", encoder_depth=1, num_frames=4, img_size=32, tubelet=2, patch_size=16,
    audio_frames=32, audio_local_frames=16, decoder_dim=16, decoder_depth=1, decoder_heads=2,
    head_hidden_dim=16, head_bottleneck_dim=8, head_out_dim=32, warmup_epochs=1.0, lr=1e-3,
    recon_log_every_n_epochs=0, probe_num_classes=3,
)  # fmt: skip
STOP = 5  # SIGTERM during step 5 of 2 epochs x 4 steps: mid-epoch 2


pytestmark = pytest.mark.usefixtures("one_thread")


class AugmentedClips(Dataset):
    """XKD-shaped items whose augmentation draws from the global RNG (like random crops do)."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.video = torch.randn(n, 3, 4, 40, 40, generator=g)
        self.audio = torch.randn(n, SAMPLES, generator=g) * 0.1
        self.label = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int) -> dict[str, Any]:
        y, x = torch.randint(0, 9, (2,)).tolist()  # a random crop: the global RNG at load time
        video = self.video[i][:, :, y : y + 32, x : x + 32]
        local = torch.stack([video[:, :2, :16, :16], video[:, 2:, 16:, 16:]])
        return {"video": video, "video_local": local, "audio": self.audio[i], "label": self.label[i]}


class SigtermAt(pl.Callback):
    """Sends this process a real SIGTERM at the end of global step ``step`` (a preemption)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def make_trainer(root: Path, extra: list[pl.Callback] | None = None) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=2, default_root_dir=root, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            pl.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0),
            PreemptionCheckpoint(), ResumeState(), *(extra or []),
        ],
    )  # fmt: skip


def run_three_ways(tmp_path: Path, make_model, make_loaders) -> tuple[dict, dict, pl.Trainer, pl.Trainer]:
    pl.seed_everything(0)
    model_a = make_model()
    trainer_a = make_trainer(tmp_path / "a")
    trainer_a.fit(model_a, *make_loaders())

    pl.seed_everything(0)
    model_b = make_model()
    trainer_b = make_trainer(tmp_path / "b", [SigtermAt(STOP)])
    with pytest.raises(SystemExit) as stopped:
        trainer_b.fit(model_b, *make_loaders())
    assert stopped.value.code in (None, 0)  # a clean exit, as the CLI would see it
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] == STOP and saved["epoch"] == 1  # mid-epoch 2, not an epoch end

    pl.seed_everything(0)
    model_c = make_model()
    torch.manual_seed(12345)  # the resumed process's RNG must not matter: the checkpoint restores it
    resume = ResumeState()
    trainer_c = make_trainer(tmp_path / "b")
    trainer_c.callbacks = [c for c in trainer_c.callbacks if not isinstance(c, ResumeState)] + [resume]
    trainer_c.fit(model_c, *make_loaders(), ckpt_path=last)
    assert resume.skipped_batches == STOP - 4  # one batch of epoch 2 was already trained
    assert trainer_c.global_step == trainer_a.global_step == 8
    return model_a.state_dict(), model_c.state_dict(), trainer_a, trainer_c


def assert_same_run(sd_a: dict, sd_c: dict, trainer_a: pl.Trainer, trainer_c: pl.Trainer) -> None:
    assert sd_a.keys() == sd_c.keys()
    for key in sd_a:
        torch.testing.assert_close(sd_c[key], sd_a[key], atol=0, rtol=0, msg=key)
    opt_a, opt_c = trainer_a.optimizers[0].state_dict(), trainer_c.optimizers[0].state_dict()
    for pid, st in opt_a["state"].items():
        for k, v in st.items():
            torch.testing.assert_close(opt_c["state"][pid][k], v, atol=0, rtol=0)
    lr_a = [g["lr"] for g in trainer_a.optimizers[0].param_groups]
    assert [g["lr"] for g in trainer_c.optimizers[0].param_groups] == lr_a
    metrics_a, metrics_c = trainer_a.callback_metrics, trainer_c.callback_metrics
    assert metrics_a.keys() == metrics_c.keys()
    for key in metrics_a:
        torch.testing.assert_close(metrics_c[key], metrics_a[key], atol=0, rtol=0, msg=key)


@pytest.mark.timeout(300)
def test_xkd_pretrainer_resumes_exactly(tmp_path: Path) -> None:
    from xmkd.modules.xkd import XKDPretrainer

    def loaders():
        data = AugmentedClips()
        return (
            ResumableDataLoader(data, batch_size=2, shuffle=True),
            ResumableDataLoader(data, batch_size=4, shuffle=False),
        )

    sd_a, sd_c, ta, tc = run_three_ways(tmp_path, lambda: XKDPretrainer(**XKD_TINY), loaders)
    # the state that must survive: EMA teachers, DINO centres, probe; they really moved
    fresh = XKDPretrainer(**XKD_TINY).state_dict()
    for prefix in ("teacher.", "teacher_heads.", "centers.", "probes."):
        assert any(k.startswith(prefix) for k in sd_a), prefix
    teacher_key = next(k for k in sd_a if k.startswith("teacher.video.") and k.endswith("weight"))
    assert not torch.equal(sd_a[teacher_key], fresh[teacher_key])  # the EMA moved the teacher
    assert sd_a["centers.video.center"].abs().sum() > 0
    assert not torch.equal(sd_a["probes.video.weight"], fresh["probes.video.weight"])
    assert "val/probe_top1" in ta.callback_metrics and "ema/momentum" in ta.callback_metrics
    assert_same_run(sd_a, sd_c, ta, tc)


def _detection_batches(n: int = 8, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        t = 6 + (i % 3) * 2
        labels = (torch.rand(t, 4, generator=g) < 0.3).float()
        labels[0, i % 4] = 1.0
        out.append(
            {
                "features": {"rgb": torch.randn(t, 6, generator=g), "flow": torch.randn(t, 5, generator=g)},
                "labels": labels,
                "video_id": f"v{i}",
            }
        )
    return out


def collate_detection(items: list[dict]) -> dict:
    t = max(len(x["labels"]) for x in items)
    mask = torch.zeros(len(items), t, dtype=torch.bool)
    feats = {m: torch.zeros(len(items), t, items[0]["features"][m].shape[1]) for m in items[0]["features"]}
    labels = torch.zeros(len(items), t, 4)
    for i, x in enumerate(items):
        n = len(x["labels"])
        mask[i, :n], labels[i, :n] = True, x["labels"]
        for m in feats:
            feats[m][i, :n] = x["features"][m]
    return {"features": feats, "labels": labels, "mask": mask, "video_id": [x["video_id"] for x in items]}


@pytest.mark.timeout(300)
def test_augmented_rgb_student_resumes_exactly(tmp_path: Path) -> None:
    from xmkd.modules.detection import AugmentedRGBStudent, TwoStreamTeacher

    head = {"num_classes": 4, "channels": 8, "num_blocks": 2, "plot_videos": 0, "dropout": 0.3}
    torch.manual_seed(0)
    teacher = TwoStreamTeacher(aux_modality="flow", rgb_dim=6, aux_dim=5, **head)
    ckpt = tmp_path / "teacher.ckpt"
    pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_progress_bar=False).strategy.connect(
        teacher
    )
    torch.save(
        {"state_dict": teacher.state_dict(), "hyper_parameters": dict(teacher.hparams),
         "pytorch-lightning_version": pl.__version__},
        ckpt,
    )  # fmt: skip

    def loaders():
        data = _detection_batches()
        return (
            ResumableDataLoader(data, batch_size=2, shuffle=True, collate_fn=collate_detection),
            ResumableDataLoader(data, batch_size=4, shuffle=False, collate_fn=collate_detection),
        )

    def model():
        return AugmentedRGBStudent(teacher_checkpoint=str(ckpt), rgb_dim=6, **head)

    sd_a, sd_c, ta, tc = run_three_ways(tmp_path, model, loaders)
    assert not any(k.startswith("_teacher") or k.startswith("teacher.") for k in sd_a)
    assert "val/map" in ta.callback_metrics
    assert_same_run(sd_a, sd_c, ta, tc)
