"""Framework callbacks that every run gets: results file, resolved-config saving, checkpoints."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from xmkd.runs import update_results


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of a metrics dict (``trainer.callback_metrics``) as plain floats."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value.detach().cpu())
        elif isinstance(value, numbers.Real):
            out[name] = float(value)
    return out


class RunResultsWriter(pl.Callback):
    """Writes the job's final metrics to ``<run_dir>/results.json`` (rank zero only).

    Fit writes the last epoch's metrics, the best checkpoint and its score; validate/test add their
    metrics under their own keys, so one file tells what the run achieved.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "results.json"

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        payload: dict[str, Any] = {
            "fit": scalar_metrics(trainer.callback_metrics),
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
        }
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint):
            payload["best_checkpoint"] = checkpoint.best_model_path or None
            payload["best_score"] = checkpoint.best_model_score
            payload["monitor"] = checkpoint.monitor
            payload["last_checkpoint"] = checkpoint.last_model_path or None
        update_results(self.path, payload)

    def _write_stage(self, trainer: pl.Trainer, stage: str) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            update_results(self.path, {stage: scalar_metrics(trainer.callback_metrics)})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._write_stage(trainer, "validate")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_stage(trainer, "test")


class SaveResolvedConfig(SaveConfigCallback):
    """Saves the resolved config into the run folder and hands it to W&B as the run's config."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        import yaml

        resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(resolved, allow_val_change=True)


def default_checkpoint_callbacks(
    run_dir: Path, monitor: str | None, mode: str = "max", every_n_train_steps: int | None = None
) -> list[ModelCheckpoint]:
    """``last.ckpt`` every epoch (and every N steps when asked), plus the best by ``monitor``."""
    directory = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(
            dirpath=directory,
            filename="best-{epoch:03d}-{step:06d}",
            monitor=monitor,
            mode=mode,
            save_top_k=1 if monitor else 0,
            save_last=True,
            auto_insert_metric_name=False,
        )
    ]
    if every_n_train_steps:
        # A second, step-based "last" bounds the work lost to a kill -9 mid-epoch.
        callbacks.append(
            ModelCheckpoint(
                dirpath=directory,
                filename="step-{step:06d}",
                every_n_train_steps=every_n_train_steps,
                save_top_k=1,
                monitor="step",
                mode="max",
                save_last=True,
                auto_insert_metric_name=False,
            )
        )
    return callbacks
