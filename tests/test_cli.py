"""The `xmkd` entry point: run folder, resolved config, results, resume with the same W&B run."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

MODULE = textwrap.dedent(
    """
    import torch, lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    class TinyRegressor(pl.LightningModule):
        checkpoint_monitor = ("val/loss", "min")

        def __init__(self, lr: float = 0.1):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, _):
            self.log("val/loss", self.layer(batch[0]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    class TinyData(pl.LightningDataModule):
        def __init__(self, size: int = 32):
            super().__init__()
            self.size = size

        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(self.size, 4)), batch_size=8)

        def val_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=8)
    """
)


def run_xmkd(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # the checkout under test after the project folder, whatever copy of xmkd the venv installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(REPO)]), "WANDB_MODE": "offline"}
    env.pop("XMKD_RUN_DIR", None)
    # A W&B run earlier in this pytest process leaves its service's address in WANDB_SERVICE; a
    # child that inherits it joins that long-lived service, which may still hold the first fit's
    # run when the resumed fit opens the same id ("run ID ... is in use"). Each child gets its own.
    env.pop("WANDB_SERVICE", None)
    return subprocess.run(
        [sys.executable, "-m", "xmkd.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "tiny_module.py").write_text(MODULE)
    config = {
        "model": {"class_path": "tiny_module.TinyRegressor", "init_args": {"lr": 0.05}},
        "data": {"class_path": "tiny_module.TinyData"},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "log_every_n_steps": 1},
    }
    (tmp_path / "tiny_experiment.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_fit_writes_run_folder_then_resume_auto_continues_it(project: Path):
    first = run_xmkd(["fit", "--config", "tiny_experiment.yaml", "--model.init_args.lr", "0.01"], project)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = project / "runs" / "tiny_experiment" / "version_0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["model"]["init_args"]["lr"] == 0.01  # the override, not the YAML's value
    assert resolved["seed_everything"] == 42
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epoch"] == 2 and results["monitor"] == "val/loss"
    assert "val/loss" in results["fit"]
    assert (run_dir / "metrics.csv").is_file()
    curves = run_dir / "figures" / "loss_curves.png"
    assert curves.is_file() and curves.stat().st_size > 1000  # every fit draws its metrics.csv
    wandb_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert list((run_dir / "wandb").glob(f"offline-run-*-{wandb_id}"))

    second = run_xmkd(
        ["fit", "--config", "tiny_experiment.yaml", "--resume", "auto", "--trainer.max_epochs", "3"], project
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert not (project / "runs" / "tiny_experiment" / "version_1").exists()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epoch"] == 3 and results["global_step"] == 12  # continued, not restarted
    assert (run_dir / "wandb_id.txt").read_text().strip() == wandb_id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{wandb_id}"))) == 2


def test_bad_override_names_the_key(project: Path):
    result = run_xmkd(["fit", "--config", "tiny_experiment.yaml", "--model.init_args.lr", "fast"], project)
    assert result.returncode != 0
    assert "lr" in result.stderr


def test_data_tool_usage_errors_are_clear(project: Path):
    result = run_xmkd(["data", "no-such-tool"], project)
    assert result.returncode != 0
    assert "invalid choice" in result.stderr


def test_portable_math_pins_the_cpu_kernels_before_torch_loads():
    code = (
        "import sys; from xmkd.cli import apply_portable_math; assert apply_portable_math(); "
        "import torch; print(torch.backends.cpu.get_cpu_capability())"
    )
    env = {**os.environ, "XMKD_PORTABLE_MATH": "1"}
    for key in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"):
        env.pop(key, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("AVX2", "DEFAULT")  # DEFAULT on a machine without AVX2
    from xmkd.cli import apply_portable_math

    environ = {"XMKD_PORTABLE_MATH": "1", "MKL_CBWR": "COMPATIBLE"}
    assert apply_portable_math(environ) and environ["MKL_CBWR"] == "COMPATIBLE"  # the user's value wins
    assert environ["ATEN_CPU_CAPABILITY"] == "avx2"
    assert not apply_portable_math({"XMKD_PORTABLE_MATH": "0"})
