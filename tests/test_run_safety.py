"""Runs that never lose or misfile work, through the ``xmkd`` CLI on the tiny synthetic detection world:
resume appends the metrics history and keeps one ``last.ckpt``; Ctrl-C is a preemption; a checkpoint
of another model is refused before anything runs; one run folder has one writer; validate reports into
the trained run; files follow the umask; a figure that cannot be written never ends training.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from xmkd.callbacks import MetricsCSVWriter
from xmkd.checkpoint_check import checkpoint_mismatch
from xmkd.errors import ConfigError
from xmkd.locks import file_lock
from xmkd.runs import atomic_write_text, check_writable

REPO = Path(__file__).resolve().parents[1]
DETECTION = REPO / "experiments" / "detection"

# 8 videos, batch 2: 3 training steps per epoch; a PDAN head of 8 channels; seconds per run.
TINY = [
    "--data.init_args.synthetic_videos=8",
    "--data.init_args.feature_root=data/synth-tiny",
    "--data.init_args.batch_size=2",
    "--model.init_args.channels=8",
    "--model.init_args.plot_videos=1",
    "--trainer.max_epochs=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
]
STEPS = 6  # 2 epochs x 3 steps

SIGNAL_AT = textwrap.dedent(
    """
    import os, signal
    import lightning.pytorch as pl

    class SignalAt(pl.Callback):
        # sends this process SIGNAL at the end of global step SIGNAL_AT_STEP
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == int(os.environ.get("SIGNAL_AT_STEP", "-1")):
                os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
    """
)


def xmkd(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": f"{cwd}:{REPO}", "WANDB_MODE": "disabled", **env}
    full_env.pop("XMKD_RUN_DIR", None)
    old_umask = os.umask(0o022)  # the child inherits it: the modes below are checked against 0644
    try:
        return subprocess.run(
            [sys.executable, "-m", "xmkd.cli", *args],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=600,
            # as in a terminal: a test runner started in the background has SIGINT ignored, inherited
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    finally:
        os.umask(old_umask)


def fit_rgb(cwd: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    config = str(DETECTION / "rgb_pdan_synthetic.yaml")
    return xmkd(
        ["fit", "--config", config, *TINY, "--trainer.callbacks+=signal_at.SignalAt", *extra], cwd, **env
    )


def ckpt_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def train_rows(run_dir: Path, column: str = "train/loss") -> list[int]:
    """The steps of metrics.csv's rows that hold the training loss."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get(column)]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "signal_at.py").write_text(SIGNAL_AT)
    return tmp_path


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_preempted_run_resumes_into_one_history_and_one_last_ckpt(project: Path) -> None:
    run_dir = project / "runs" / "rgb_pdan_synthetic" / "version_0"
    # SIGTERM at step 1: before the first epoch-end checkpoint
    first = fit_rgb(project, SIGNAL="SIGTERM", SIGNAL_AT_STEP="1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == 1
    config_before = (run_dir / "config.yaml").read_bytes()

    second = fit_rgb(project, "--resume", "auto")
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    assert "Previous log files" not in out
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert [n for n in checkpoints if n.startswith("last")] == ["last.ckpt"], checkpoints
    assert (
        ckpt_step(run_dir / "checkpoints" / "last.ckpt") == STEPS
    )  # the newest state, not the preempted one
    assert train_rows(run_dir) == list(range(STEPS))  # the whole history, each step once
    # files follow the umask (022 -> 0644), not mkstemp's 0600
    for path in [run_dir / "results.json", *(run_dir / "checkpoints").glob("*.ckpt")]:
        assert path.stat().st_mode & 0o777 == 0o644, path

    # a finished run resumed again trains nothing more (it used to resume the stale last.ckpt)
    third = fit_rgb(project, "--resume", "auto")
    assert third.returncode == 0, third.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == STEPS
    assert train_rows(run_dir) == list(range(STEPS))

    # a resume that fails (here: a checkpoint of another model) replaces nothing
    metrics_before = (run_dir / "metrics.csv").read_bytes()
    config_before = (run_dir / "config.yaml").read_bytes()
    failed = fit_rgb(project, "--resume", "auto", "--model.init_args.num_classes=5")
    assert failed.returncode != 0
    assert "num_classes=12" in failed.stderr and "num_classes=5" in failed.stderr, failed.stderr[-3000:]
    assert (run_dir / "metrics.csv").read_bytes() == metrics_before
    assert (run_dir / "config.yaml").read_bytes() == config_before

    # validate a checkpoint of the run: reported into the run, figures named after the checkpoint
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    best_step = ckpt_step(best)
    config = str(DETECTION / "rgb_pdan_synthetic.yaml")
    validate = xmkd(["validate", "--config", config, *TINY, "--ckpt_path", str(best)], project)
    assert validate.returncode == 0, validate.stderr[-3000:]
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]  # no new version folder
    assert "val/map" in json.loads((run_dir / "results.json").read_text())["validate"]
    assert list((run_dir / "figures").glob(f"validate_epoch*_step{best_step:06d}_per_class_ap.png"))
    assert (run_dir / "config.yaml").read_bytes() == config_before  # the training config stays
    assert train_rows(run_dir) == list(range(STEPS))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ctrl_c_saves_last_and_an_unwritable_figure_is_a_warning(project: Path) -> None:
    run_dir = project / "runs" / "rgb_pdan_synthetic" / "version_0"
    first = fit_rgb(project, SIGNAL="SIGINT", SIGNAL_AT_STEP="4")
    assert first.returncode == 130, first.stderr[-3000:]  # stopped by the user, like any command
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == 4
    assert "interrupted (Ctrl-C)" in first.stdout + first.stderr

    # the figures folder becomes unwritable (a read-only filesystem even for root): training goes on
    figures = run_dir / "figures"
    for png in figures.glob("*.png"):
        png.unlink()
    figures.rmdir()
    figures.symlink_to("/sys")
    second = fit_rgb(project, "--resume", "auto")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "could not write the figure" in second.stdout + second.stderr
    assert not (run_dir.parent / "version_1").exists()
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == STEPS


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_folder_has_one_writer(project: Path) -> None:
    run_dir = project / "runs" / "rgb_pdan_synthetic" / "version_0"
    first = fit_rgb(project, SIGNAL="SIGTERM", SIGNAL_AT_STEP="2")
    assert first.returncode == 0, first.stderr[-3000:]
    with file_lock(run_dir / ".lock", wait=False):  # as a running `xmkd fit --resume auto` holds it
        second = fit_rgb(project, "--resume", "auto")
    assert second.returncode != 0
    assert (
        f"{run_dir.relative_to(project)} is in use by another xmkd process (pid {os.getpid()}"
        in second.stderr
    )
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == 2  # untouched


def test_a_bad_data_path_is_one_line_and_leaves_no_run_folder(project: Path) -> None:
    config = str(DETECTION / "rgb_pdan_charades.yaml")  # real data: nothing is generated at a missing root
    for _ in range(2):  # a retry does not add a version either
        result = xmkd(["fit", "--config", config, "--data.init_args.feature_root=no/such/features"], project)
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            "xmkd fit: error: config key 'feature_root': no/such/features is not an existing folder "
            "(expected <feature_root>/<modality>/)"
        )
    assert not (project / "runs").exists() or not any((project / "runs").rglob("version_*"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_unwritable_checkpoint_folder_fails_before_training(project: Path) -> None:
    result = fit_rgb(
        project,
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath=/sys/xmkd-checkpoints",
    )
    assert result.returncode != 0
    assert "cannot write into /sys/xmkd-checkpoints" in result.stderr, result.stderr[-3000:]
    run_dir = project / "runs" / "rgb_pdan_synthetic" / "version_0"
    assert not (run_dir / "metrics.csv").exists()  # refused before the first step, not after an epoch


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_validate_refuses_a_checkpoint_of_another_model(project: Path) -> None:
    teacher_cfg = str(DETECTION / "teacher-rgbflow_pdan_synthetic.yaml")
    teacher = xmkd(["fit", "--config", teacher_cfg, *TINY, "--trainer.max_epochs=1"], project)
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    ckpt = project / "runs" / "teacher-rgbflow_pdan_synthetic" / "version_0" / "checkpoints" / "last.ckpt"
    student_cfg = str(DETECTION / "rgb_pdan_synthetic.yaml")
    result = xmkd(["validate", "--config", student_cfg, *TINY, "--ckpt_path", str(ckpt)], project)
    assert result.returncode != 0
    assert "holds a TwoStreamTeacher" in result.stderr and "SingleStreamDetector" in result.stderr
    assert not (project / "runs" / "rgb_pdan_synthetic").exists()  # nothing filed under the student


# ------------------------------------------------------------------------------ the pieces, in-process


def test_checkpoint_mismatch_names_class_and_key_hparams() -> None:
    teacher = {
        "_class_path": "xmkd.modules.detection.TwoStreamTeacher",
        "aux_modality": "flow",
        "num_classes": 12,
    }
    why = checkpoint_mismatch(teacher, "xmkd.modules.detection.SingleStreamDetector", {"num_classes": 12})
    assert why is not None and "TwoStreamTeacher" in why and "SingleStreamDetector" in why
    same = {"_class_path": "a.B", "num_classes": 12, "lr": 0.1}
    assert checkpoint_mismatch(same, "a.B", {"num_classes": 12, "lr": 0.5}) is None  # lr may differ
    why = checkpoint_mismatch(same, "a.B", {"num_classes": 4})
    assert why is not None and "num_classes=12" in why and "num_classes=4" in why


def test_metrics_writer_continues_the_file_and_drops_rows_after_the_checkpoint(tmp_path: Path) -> None:
    first = MetricsCSVWriter(str(tmp_path))
    for step in range(5):
        first.log_metrics({"train/loss": float(step)}, step)
    first.save()
    # resumed from a checkpoint at step 2: rows 3-4 of the killed process are replaced
    resumed = MetricsCSVWriter(str(tmp_path), resume_step=2)
    resumed.log_hparams({"lr": 0.1})
    for step in range(3, 6):
        resumed.log_metrics({"train/loss": 10.0 + step, "val/map": 0.5}, step)
    resumed.save()
    resumed.log_metrics({"train/loss": 20.0}, 6)
    resumed.save()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    assert [float(r["train/loss"]) for r in rows] == [0, 1, 2, 13, 14, 15, 20]
    assert rows[0]["val/map"] == "" and rows[3]["val/map"] == "0.5"
    assert (tmp_path / "hparams.yaml").is_file()


def test_a_resume_that_logs_nothing_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "hparams.yaml").write_text("lr: 0.1\n")
    writer = MetricsCSVWriter(str(tmp_path), resume_step=0)
    writer.log_hparams({"lr": -1.0})
    writer.save()
    assert (tmp_path / "hparams.yaml").read_text() == "lr: 0.1\n"
    assert not (tmp_path / "metrics.csv").exists()


def test_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    from xmkd.fault import atomic_torch_save

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "results.json", "{}")
        atomic_torch_save({"a": 1}, tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == 0o640


def test_check_writable_names_the_folder(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "checkpoints")
    assert (tmp_path / "new" / "checkpoints").is_dir() and not list(
        (tmp_path / "new" / "checkpoints").iterdir()
    )
    if not Path("/sys").is_dir():
        pytest.skip("no read-only /sys to write into")
    with pytest.raises(ConfigError, match="cannot write into /sys/xmkd"):
        check_writable(Path("/sys/xmkd"))


def test_unwritable_figure_is_a_warning(tmp_path: Path) -> None:
    from xmkd.viz import per_class_ap_figure
    from xmkd.viz import save_figure as _save_png

    blocker = tmp_path / "figures"
    blocker.write_text("a file where the folder should be")
    with pytest.warns(UserWarning, match="could not write the figure"):
        image = _save_png(per_class_ap_figure(torch.rand(4).numpy()), blocker / "epoch000_ap.png")
    assert image.ndim == 3


def test_close_finished_epoch_resumes_with_the_next_epoch(tmp_path: Path) -> None:
    """A run stopped by max_steps on an epoch's last batch, resumed with a larger max_steps, trains the
    next epochs exactly as the uninterrupted run does (not a one-batch or empty epoch first)."""
    import lightning.pytorch as pl
    from torch.utils.data import TensorDataset

    from xmkd.fault import AtomicCheckpointIO, ResumableDataLoader, ResumeState

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.seen: list[tuple[int, int]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append((self.current_epoch, batch_idx))
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(max_steps: int, ckpt: Path | None = None) -> Recorder:
        model = Recorder()
        trainer = pl.Trainer(
            accelerator="cpu", max_steps=max_steps, max_epochs=-1, logger=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path, plugins=[AtomicCheckpointIO()],
            callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0), ResumeState()],
        )  # fmt: skip
        data = ResumableDataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4, shuffle=True)
        trainer.fit(model, data, ckpt_path=ckpt)
        return model

    torch.set_num_threads(1)
    fit(4)  # epochs 0 and 1 of 2 batches, ends on the last batch of epoch 1
    resumed = fit(8, tmp_path / "last.ckpt")
    assert resumed.seen == [(2, 0), (2, 1), (3, 0), (3, 1)]


def test_two_processes_generate_the_synthetic_world_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys, time
        from pathlib import Path
        from xmkd.data.synthetic.untrimmed import ensure_synthetic_untrimmed
        go = Path(sys.argv[2])
        (go.parent / f"ready-{os.getpid()}").write_text("")
        while not go.exists():
            time.sleep(0.005)
        ensure_synthetic_untrimmed(sys.argv[1], videos=8, classes=12, seed=0)
        """
    )
    root, go = tmp_path / "world", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root), str(go)], env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # both imported: generation (~0.1 s) would otherwise not overlap
    go.write_text("")  # both start generating at the same moment
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    reference = tmp_path / "reference"
    from xmkd.data.synthetic.untrimmed import ensure_synthetic_untrimmed

    ensure_synthetic_untrimmed(reference, videos=8, classes=12, seed=0)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (reference / rel).read_bytes(), rel


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="POSIX signals")
def test_file_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    from xmkd.locks import LockBusy

    with file_lock(tmp_path / ".lock", wait=False):
        holder = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from xmkd.locks import file_lock\nwith file_lock({str(tmp_path / '.lock')!r}, wait=False): pass",
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
        )
        assert (
            holder.returncode != 0 and "LockBusy" in holder.stderr and f"pid {os.getpid()}" in holder.stderr
        )
    with file_lock(tmp_path / ".lock", wait=False):  # released with the block
        pass
    assert issubclass(LockBusy, RuntimeError)


# XKD on a tiny generated audio-visual set: 2 classes x 4 clips, batch 2 -> 2 steps an epoch.
XKD_SYNTH = {
    "classes": 2,
    "clips_per_class": 4,
    "clips_per_group": 1,
    "duration": 1.5,
    "size": 32,
    "fps": 8.0,
}
XKD_TINY = [
    *(
        f"--model.init_args.{k}={v}"
        for k, v in dict(
            encoder_size="tiny", encoder_depth=1, num_frames=4, img_size=32, tubelet=2, patch_size=16,
            audio_frames=32, audio_local_frames=16, decoder_dim=32, decoder_depth=1, decoder_heads=2,
            head_hidden_dim=32, head_bottleneck_dim=16, head_out_dim=64, probe_num_classes=0,
        ).items()
    ),
    *(
        f"--data.init_args.{k}={v}"
        for k, v in dict(
            num_frames=4, audio_seconds=0.3, crop_size=32, local_crop_size=16, local_frames=2, batch_size=2,
            root="data/synth-av-tiny", decode_cache_mb=0,
        ).items()
    ),
    "--data.init_args.synthetic_options=" + json.dumps(XKD_SYNTH),
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
    "--trainer.limit_val_batches=0",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_resuming_a_finished_xkd_run_with_more_steps_starts_the_next_epoch(project: Path) -> None:
    config = str(REPO / "experiments" / "xkd" / "xkd_tiny_synthetic.yaml")
    run_dir = project / "runs" / "xkd_tiny_synthetic" / "version_0"
    first = xmkd(["fit", "--config", config, *XKD_TINY, "--trainer.max_steps=2"], project)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["epoch"] == 1  # epoch 0 done, at its last batch
    more = xmkd(["fit", "--config", config, *XKD_TINY, "--trainer.max_steps=4", "--resume", "auto"], project)
    assert more.returncode == 0, more.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    # one more full epoch of 2 batches, as the uninterrupted run; not an empty or one-batch epoch first
    assert (results["global_step"], results["epoch"]) == (4, 2)
    assert train_rows(run_dir, "loss/total") == [0, 1, 2, 3]
