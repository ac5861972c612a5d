"""Framework callbacks that every run gets: results file, resolved-config saving, checkpoints, and the
CSV metrics log that a resumed run continues."""

from __future__ import annotations

import csv
import io
import numbers
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_warn

from xmkd.runs import atomic_write_text, update_results
from xmkd.viz import log_images, loss_curves_figure, read_metrics_csv, save_figure


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
        checkpoints = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        if checkpoints:
            best = next((c for c in checkpoints if c.monitor), None)
            payload["best_checkpoint"] = (best.best_model_path or None) if best else None
            payload["best_score"] = best.best_model_score if best else None
            payload["monitor"] = best.monitor if best else None
            last = [c.best_model_path for c in checkpoints if c.filename == LAST and c.best_model_path]
            last += [c.last_model_path for c in checkpoints if c.last_model_path]
            payload["last_checkpoint"] = last[0] if last else None
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
    """Saves the resolved config into the run folder and hands it to W&B as the run's config.

    ``defer_to_train_start``: a resumed fit writes it only once training really restarts, so a resume
    that fails (a bad checkpoint, an invalid override) leaves the run's ``config.yaml`` as it was.
    """

    def __init__(self, *args: Any, defer_to_train_start: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.defer_to_train_start = defer_to_train_start

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.defer_to_train_start:
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.defer_to_train_start:
            super().setup(trainer, pl_module, "fit")

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(resolved, allow_val_change=True)


#: The file ``--resume auto`` reads: the newest state of the run, whoever wrote it.
LAST = "last"


class LastCheckpoint(ModelCheckpoint):
    """Keeps one file, ``last.ckpt``, rewritten in place; also written when training ends.

    Lightning's epoch-end checkpoint is taken after validation, and a run that validates every k
    epochs (or ends at ``max_steps`` mid-epoch) would otherwise end newer than its ``last.ckpt``.
    """

    def __init__(self, *args: Any, at_train_end: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_train_end = at_train_end

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.at_train_end and self.dirpath:
            trainer.save_checkpoint(Path(self.dirpath) / f"{LAST}{self.FILE_EXTENSION}")


def last_checkpoint_callback(directory: Path, every_n_train_steps: int | None = None) -> ModelCheckpoint:
    """A :class:`LastCheckpoint`: exactly one file, ``last.ckpt``, rewritten in place with the state at
    every epoch end (or every N optimiser steps) and at the end of training.

    Why not ``save_last=True``: Lightning's version counter then writes ``last-v1.ckpt`` beside a
    ``last.ckpt`` it did not write itself (one left by a preemption before the first epoch end), and
    ``--resume auto`` would go on reading the stale one; and with ``save_top_k=0`` (no monitor) it writes
    ``last`` only when training ends. Every writer of ``last.ckpt`` (this, its step twin,
    :class:`~xmkd.fault.PreemptionCheckpoint`) writes the current state, so the newest write wins.
    """
    return LastCheckpoint(
        dirpath=directory,
        filename=LAST,
        monitor=None,
        save_top_k=1,
        save_last=False,
        every_n_train_steps=every_n_train_steps,
        enable_version_counter=False,
        at_train_end=not every_n_train_steps,  # one end-of-training write is enough
    )


def default_checkpoint_callbacks(
    run_dir: Path, monitor: str | None, mode: str = "max", every_n_train_steps: int | None = None
) -> list[ModelCheckpoint]:
    """The best checkpoint by ``monitor`` (first, so it is ``trainer.checkpoint_callback``), and one
    ``last.ckpt`` refreshed every epoch and, when asked, every N steps (bounds the work lost to a kill -9)."""
    directory = run_dir / "checkpoints"
    callbacks = []
    if monitor:
        callbacks.append(
            ModelCheckpoint(
                dirpath=directory,
                filename="best-{epoch:03d}-{step:06d}",
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                save_last=False,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    callbacks.append(last_checkpoint_callback(directory))
    if every_n_train_steps:
        callbacks.append(last_checkpoint_callback(directory, every_n_train_steps))
    return callbacks


class MetricsCSVWriter:
    """The CSV logger's writer, continuing an existing ``metrics.csv`` instead of deleting it.

    Lightning's writer deletes the file of a folder that already has one ("Previous log files in this
    directory will be deleted"), so a resumed run kept only its own steps. This one keeps the rows up to
    ``resume_step`` (rows logged after the checkpoint by the interrupted process are replaced by the
    resumed run's), widens the header when new metrics appear, and writes ``hparams.yaml`` only once
    there are metrics to go with it, so a resume that fails before its first step changes nothing.
    """

    def __init__(self, log_dir: str, filename: str = "metrics.csv", resume_step: int | None = None) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, filename)
        self.hparams_file_path = os.path.join(log_dir, "hparams.yaml")
        self.resume_step = resume_step
        self.metrics: list[dict[str, Any]] = []
        self.hparams: dict[str, Any] = {}
        self._hparams_pending = False
        self._keys: list[str] | None = None  # the file's header, read on the first save

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        self._hparams_pending = True

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics_dict.items()}
        row["step"] = len(self.metrics) if step is None else step
        self.metrics.append(row)

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not os.path.isfile(self.metrics_file_path):
            return [], []
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)

    def _kept(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        def step(row: dict[str, str]) -> float:
            try:
                return float(row.get("step") or "nan")
            except ValueError:
                return float("nan")

        assert self.resume_step is not None
        return [r for r in rows if not step(r) > self.resume_step]

    def save(self) -> None:
        if not self.metrics:
            return
        os.makedirs(self.log_dir, exist_ok=True)
        if self._hparams_pending:
            save_hparams_to_yaml(self.hparams_file_path, self.hparams)
            self._hparams_pending = False
        rewrite = False
        rows: list[dict[str, str]] | None = None
        if self._keys is None:  # the first save: adopt the file's header; drop rows after the resume once
            self._keys, rows = self._read()
            if self.resume_step is not None:
                kept = self._kept(rows)
                rewrite, rows = len(kept) != len(rows), kept
        new_keys = sorted({k for row in self.metrics for k in row} - set(self._keys))
        if new_keys:
            self._keys = sorted([*self._keys, *new_keys])
            rewrite = rewrite or os.path.isfile(self.metrics_file_path)
        if rewrite:
            if rows is None:
                _, rows = self._read()
            buffer = io.StringIO(newline="")
            writer = csv.DictWriter(buffer, fieldnames=self._keys)
            writer.writeheader()
            writer.writerows(rows)
            writer.writerows(self.metrics)
            atomic_write_text(Path(self.metrics_file_path), buffer.getvalue())
        else:
            exists = os.path.isfile(self.metrics_file_path)
            with open(self.metrics_file_path, "a" if exists else "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._keys)
                if not exists:
                    writer.writeheader()
                writer.writerows(self.metrics)
        self.metrics = []


class RunCSVLogger(CSVLogger):
    """``metrics.csv`` (and ``hparams.yaml``) directly in the run folder, continued across resumes.

    ``filename``: validate/test attached to a trained run log into their own file
    (``metrics_validate.csv``), so the training history stays one series over steps.
    ``resume_step``: the resumed checkpoint's global step; rows after it are dropped once.
    """

    def __init__(
        self, run_dir: str | Path, filename: str = "metrics.csv", resume_step: int | None = None
    ) -> None:
        super().__init__(save_dir=str(run_dir), name="", version="")
        self.filename = filename
        self.resume_step = resume_step
        self._writer: MetricsCSVWriter | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> MetricsCSVWriter:
        if self._writer is None:
            self._writer = MetricsCSVWriter(self.log_dir, self.filename, self.resume_step)
        return self._writer

    def log_hyperparams(self, params: dict[str, Any] | Namespace | None = None) -> None:
        if self.filename == "metrics.csv" and params is not None:  # evaluation leaves the fit's hparams alone
            super().log_hyperparams(params)


class LossCurvesPlot(pl.Callback):
    """``<run_dir>/figures/loss_curves.png`` when a fit ends: the training losses per step and the
    validation metrics per epoch of the run's ``metrics.csv`` (the whole run, resumes included), for
    runs without W&B; also logged to W&B where a W&B logger is present. Rank zero; a ``metrics.csv``
    that is missing or unreadable, or a figure that cannot be written, is a warning."""

    def __init__(self, run_dir: str | Path, metrics_file: str = "metrics.csv") -> None:
        self.metrics_path = Path(run_dir) / metrics_file
        self.path = Path(run_dir) / "figures" / "loss_curves.png"

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return

        for logger in trainer.loggers:  # the last rows are still in the CSV writer's buffer
            if isinstance(logger, CSVLogger):
                logger.save()
        try:
            series = read_metrics_csv(self.metrics_path)
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            rank_zero_warn(f"xmkd: no loss curves: cannot read {self.metrics_path} ({e})")
            return
        title = f"{type(pl_module).__name__}, {trainer.global_step} steps, {trainer.current_epoch} epochs"
        image = save_figure(loss_curves_figure(series, title), self.path)
        log_images(trainer.loggers, {"loss_curves": image}, step=trainer.global_step)
