"""Preemption and kills: SIGTERM/SIGUSR1 save last.ckpt and exit 0, ``--resume auto`` continues,
``--checkpoint_every_n_steps`` bounds the loss to a kill -9, and a kill during a checkpoint write
never leaves a broken ``last.ckpt``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from xmkd.fault import AtomicCheckpointIO, PreemptionCheckpoint, atomic_torch_save

REPO = Path(__file__).resolve().parents[1]

# A tiny module that signals itself at a chosen global step (SIGNAL_AT_STEP / SIGNAL env vars).
MODULE = textwrap.dedent(
    """
    import os, signal
    import torch, lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Preempted(pl.LightningModule):
        def __init__(self, lr: float = 0.05):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train/loss", loss)
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx):
            at = int(os.environ.get("SIGNAL_AT_STEP", "-1"))
            if self.trainer.global_step == at:
                os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4)  # 8 steps per epoch
    """
)


def run_xmkd(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": f"{cwd}:{REPO}", "WANDB_MODE": "disabled", **env}
    full_env.pop("XMKD_RUN_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "xmkd.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "preempted.py").write_text(MODULE)
    config = {
        "model": {"class_path": "preempted.Preempted"},
        "data": {"class_path": "preempted.Data"},
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
        },
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


FAULT_ARGS = [
    "--trainer.callbacks+=xmkd.fault.PreemptionCheckpoint",
    "--trainer.callbacks+=xmkd.fault.ResumeState",
]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_saves_last_and_resume_auto_finishes(project: Path) -> None:
    first = run_xmkd(
        ["fit", "--config", "job.yaml", *FAULT_ARGS], project, SIGNAL="SIGTERM", SIGNAL_AT_STEP="11"
    )
    assert first.returncode == 0, first.stderr[-3000:]  # a clean exit, not a crash
    run_dir = project / "runs" / "job" / "version_0"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 11 and last["epoch"] == 1  # saved at the signal, mid-epoch 2
    assert "preempted at epoch 1 step 11" in first.stderr + first.stdout

    second = run_xmkd(["fit", "--config", "job.yaml", "--resume", "auto", *FAULT_ARGS], project)
    assert second.returncode == 0, second.stderr[-3000:]
    assert not (project / "runs" / "job" / "version_1").exists()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 16 and results["epoch"] == 2  # 2 epochs x 8 steps, no step repeated


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_step_checkpoints_bound_the_work_lost_to_kill_9(project: Path) -> None:
    args = ["fit", "--config", "job.yaml", "--checkpoint_every_n_steps", "3"]
    first = run_xmkd(args, project, SIGNAL="SIGKILL", SIGNAL_AT_STEP="10")
    assert first.returncode == -signal.SIGKILL
    run_dir = project / "runs" / "job" / "version_0"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 9  # the newest multiple of 3 before the kill: at most 2 steps lost
    second = run_xmkd(["fit", "--config", "job.yaml", "--resume", "auto"], project)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 16
    # step and epoch checkpoints share one last.ckpt, the newest state (no last-v1.ckpt, no step-*.ckpt)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 16


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="SIGUSR1 is POSIX only")
def test_sigusr1_is_a_preemption_too(tmp_path: Path) -> None:
    class SendUsr1(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGUSR1)

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = PreemptionCheckpoint(tmp_path)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[cb, SendUsr1()], plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4))
    assert stopped.value.code in (None, 0)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)  # handler removed at teardown


def test_only_sigterm_writes_last_ckpt_not_a_crash(tmp_path: Path) -> None:
    class Crash(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("boom")
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = PreemptionCheckpoint(tmp_path)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[cb],
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Crash(), DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4))
    assert cb.saved_path is None and not (tmp_path / "last.ckpt").exists()


# ------------------------------------------------------------------ atomic writes under SIGKILL

WRITER = textwrap.dedent(
    """
    import sys, torch
    from xmkd.fault import AtomicCheckpointIO
    from lightning.pytorch.plugins.io import TorchCheckpointIO
    io = AtomicCheckpointIO() if sys.argv[2] == "atomic" else TorchCheckpointIO()
    i = 0
    while True:  # rewrite last.ckpt with ever new content until killed
        i += 1
        io.save_checkpoint({"step": i, "weights": torch.full((4_000_000,), float(i))}, sys.argv[1])
        print(i, flush=True)
    """
)


def _kill_writer_at_random_times(tmp_path: Path, mode: str, rounds: int, tmpdir: str) -> list[str]:
    """Start the writer, SIGKILL it at a random moment, try torch.load; return the load errors."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    target = tmp_path / mode / "last.ckpt"
    target.parent.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": tmpdir}
    rng = random.Random(0)
    errors = []
    for _ in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(target), mode], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # one complete checkpoint exists
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        try:
            ckpt = torch.load(target, map_location="cpu", weights_only=True)
            assert torch.equal(ckpt["weights"], torch.full((4_000_000,), float(ckpt["step"])))
        except Exception as e:  # any failure to read the file is the finding
            errors.append(f"{type(e).__name__}: {e}"[:200])
    return errors


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_during_checkpoint_write_leaves_a_loadable_last_ckpt(tmp_path: Path) -> None:
    # TMPDIR on another filesystem (tmpfs) is the cluster layout where a move becomes a copy.
    tmpdir = "/dev/shm" if Path("/dev/shm").is_dir() else str(tmp_path)
    errors = _kill_writer_at_random_times(tmp_path, "atomic", rounds=5, tmpdir=tmpdir)
    assert errors == []
    assert not list((tmp_path / "atomic").glob(".last.ckpt.*.tmp.keep"))


def test_atomic_torch_save_replaces_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.ckpt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    atomic_torch_save({"a": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary left behind

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"bad": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(3))  # old file intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    AtomicCheckpointIO().save_checkpoint({"b": torch.ones(1)}, str(path))
    assert torch.load(path, weights_only=True)["b"].item() == 1.0
