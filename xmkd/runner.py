"""One LightningCLI job in this process: the runner behind ``xmkd fit|validate|test|predict`` and every
pipeline's training runs.

:func:`run_lightning_cli` resolves the run folder (``runs/<experiment>/version_<N>``, see
:mod:`xmkd.runs`), saves the resolved config there, adds the run's loggers and callbacks (results,
checkpoints, preemption, the bad-input report) and returns the CLI object, so a pipeline chains runs
and reads their results without subprocesses and without importing the ``xmkd`` command.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger

from xmkd.callbacks import (
    LossCurvesPlot,
    RunCSVLogger,
    RunResultsWriter,
    SaveResolvedConfig,
    default_checkpoint_callbacks,
)
from xmkd.checkpoint_check import check_checkpoint_matches, read_checkpoint_header
from xmkd.console import quiet_harmless_messages
from xmkd.data.datasets.bad_input import BadInputReport
from xmkd.fault import AtomicCheckpointIO, PreemptionCheckpoint, ResumeState
from xmkd.predict import PredictionWriter
from xmkd.runs import (
    RUN_DIR_ENV,
    check_writable,
    discard_if_failed_empty,
    experiment_name,
    hold_run_dir,
    resolve_run_dir,
    resolve_wandb_mode,
    run_dir_of_checkpoint,
    wandb_run_id,
)
from xmkd.typed_config import read_yaml

__all__ = ["XmkdCLI", "run_lightning_cli"]


def _model_spec(config: Any) -> tuple[str, dict[str, Any]]:
    init_args = config.model.get("init_args")
    return config.model.class_path, (init_args.as_dict() if init_args is not None else {})


class XmkdCLI(LightningCLI):
    """LightningCLI with xmkd's run folder, loggers and default callbacks (see the module docstring)."""

    run_dir: Path
    experiment: str
    resume_step: int | None = None

    def __init__(self, *args: Any, run_lock: contextlib.ExitStack, **kwargs: Any) -> None:
        # the run folder's lock: entered once the folder is chosen, released by run_lightning_cli
        self.run_lock = run_lock
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Checked here, before Lightning replaces the config's model by the class and hparams that
        # a --ckpt_path checkpoint names (so a teacher checkpoint would run as the teacher).
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt and ckpt not in ("best", "last", "hpc") and not str(ckpt).startswith("registry"):
            check_checkpoint_matches(ckpt, *_model_spec(self.config[subcommand]))

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment", type=str | None, default=None, help="run name; default: config stem"
        )
        parser.add_argument(
            "--resume",
            type=str | None,
            default=None,
            help="'auto' continues the newest run of this experiment from its last.ckpt (and W&B run); "
            "or a run folder / .ckpt path",
        )
        parser.add_argument("--runs_dir", type=str, default="runs", help="root of the run folders")
        parser.add_argument("--wandb_project", type=str, default="xmkd")
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int | None,
            default=None,
            help="also refresh last.ckpt every N optimiser steps (bounds the work lost to a kill -9)",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        config_files = [str(p) for p in (config.get("config") or [])]
        self.experiment = experiment_name(config_files, config.get("experiment"))
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited:  # a DDP worker re-executed by Lightning: use the folder rank zero chose
            self.run_dir = Path(inherited)
            resume_ckpt = None
            if config.get("resume"):
                last = self.run_dir / "checkpoints" / "last.ckpt"
                resume_ckpt = last if last.is_file() else None
        else:
            resume = config.get("resume") if self.subcommand == "fit" else None
            # validate/test of a trained run's checkpoint report into that run (files, W&B run)
            attach = None
            if self.subcommand in ("validate", "test") and config.get("ckpt_path"):
                attach = run_dir_of_checkpoint(Path(config.ckpt_path))
            if attach is not None:
                self.run_dir, resume_ckpt, self.experiment = attach, None, attach.parent.name
            else:
                self.run_dir, resume_ckpt = resolve_run_dir(Path(config.runs_dir), self.experiment, resume)
            if attach is None and resume_ckpt is None:  # a version folder made for this job
                self.run_lock.enter_context(discard_if_failed_empty(self.run_dir, self._trained))
            if resume_ckpt is not None:
                check_checkpoint_matches(resume_ckpt, *_model_spec(config), what="resume")
            self.run_lock.enter_context(hold_run_dir(self.run_dir, self.subcommand))
            check_writable(self.run_dir)
            if self.subcommand == "fit":
                check_writable(self.run_dir / "checkpoints")
            os.environ[RUN_DIR_ENV] = str(self.run_dir)
        config.trainer.default_root_dir = str(self.run_dir)
        if resume_ckpt is not None and not config.get("ckpt_path"):
            config.ckpt_path = str(resume_ckpt)
        if self.subcommand == "fit" and config.get("ckpt_path") and Path(config.ckpt_path).is_file():
            self.resume_step = read_checkpoint_header(config.ckpt_path)["global_step"]
        attached = self.subcommand != "fit" and (self.run_dir / "config.yaml").is_file()
        self.save_config_kwargs = {
            **self.save_config_kwargs,
            # a resume that fails before training restarts leaves config.yaml as it was
            "defer_to_train_start": self.subcommand == "fit" and self.resume_step is not None,
            "config_filename": f"config_{self.subcommand}.yaml" if attached else "config.yaml",
        }
        print(f"xmkd: run folder {self.run_dir}" + (f" (resuming {resume_ckpt})" if resume_ckpt else ""))

    def _trained(self) -> bool:
        """Whether this job's Trainer has taken an optimiser step."""
        return getattr(getattr(self, "trainer", None), "global_step", 0) > 0

    def _loggers(self) -> list[Any]:
        metrics_file = "metrics.csv" if self.subcommand == "fit" else f"metrics_{self.subcommand}.csv"
        loggers: list[Any] = [RunCSVLogger(self.run_dir, metrics_file, self.resume_step)]
        mode = resolve_wandb_mode()
        if mode != "disabled":
            import wandb

            if wandb.run is not None and wandb.run.id != wandb_run_id(self.run_dir):
                # An earlier run of this process (a pipeline chains runs) still holds the W&B run;
                # Lightning's logger would log this run into it. Its training is over: close it.
                wandb.finish()
            loggers.append(
                WandbLogger(
                    project=self.config[self.subcommand].wandb_project,
                    name=f"{self.experiment}/{self.run_dir.name}",
                    save_dir=str(self.run_dir),
                    id=wandb_run_id(self.run_dir),
                    resume="allow",
                    offline=mode == "offline",
                    settings=wandb.Settings(init_timeout=60, silent=True),
                )
            )
            # Lightning always passes wandb's deprecated `anonymous` setting (None included), and
            # wandb warns that it has no effect: leave it out.
            loggers[-1]._wandb_init.pop("anonymous", None)
        return loggers

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer_config = self.config_init[self.subcommand].trainer
        extra: dict[str, Any] = {}
        if trainer_config.get("logger") in (None, True):
            extra["logger"] = self._loggers()
        has_logger = trainer_config.get("logger") is not False
        user_callbacks = list(trainer_config.get("callbacks") or [])
        callbacks: list[Any] = [RunResultsWriter(self.run_dir)]
        if (
            not any(isinstance(c, ModelCheckpoint) for c in user_callbacks)
            and trainer_config.get("enable_checkpointing") is not False
        ):
            monitor, mode = getattr(self.model, "checkpoint_monitor", (None, "max"))
            callbacks += default_checkpoint_callbacks(
                self.run_dir, monitor, mode, self.config[self.subcommand].checkpoint_every_n_steps
            )
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in user_callbacks
        ):
            callbacks.append(RichProgressBar(leave=True))
        if has_logger and self.subcommand == "fit":
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if "logger" in extra and self.subcommand == "fit":  # our CSV logger writes metrics.csv
            callbacks.append(LossCurvesPlot(self.run_dir))
        if self.subcommand == "fit":
            # Preemption (SIGTERM/SIGUSR1) saves last.ckpt and exits cleanly; RNG and data
            # position travel in the checkpoint so a resume continues bit-exactly.
            for default in (PreemptionCheckpoint(self.run_dir / "checkpoints"), ResumeState()):
                if not any(isinstance(c, type(default)) for c in user_callbacks):
                    callbacks.append(default)
        if self.subcommand == "predict":
            if not any(isinstance(c, PredictionWriter) for c in user_callbacks):
                callbacks.append(PredictionWriter(self.run_dir / "predictions"))
            # a fit checkpoint carries ResumeState's RNG state: give it its callback (unused here),
            # else Lightning warns "Please add the following callbacks: ['ResumeState']"
            callbacks.append(ResumeState())
        if self.subcommand == "fit":  # a user's checkpoint folder, checked before an epoch is spent
            for c in user_callbacks:
                if isinstance(c, ModelCheckpoint) and c.dirpath:
                    check_writable(Path(c.dirpath), "trainer.callbacks")
        if not trainer_config.get("plugins"):
            trainer_config.plugins = [AtomicCheckpointIO()]
        callbacks.append(BadInputReport())
        trainer_config.callbacks = user_callbacks + callbacks
        return super().instantiate_trainer(**extra, **kwargs)


def config_files(argv: list[str]) -> list[str]:
    """The files given with ``--config`` in ``argv`` (``--config F`` or ``--config=F``)."""
    files = [b for a, b in itertools.pairwise(argv) if a == "--config"]
    return files + [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]


def run_lightning_cli(argv: list[str]) -> XmkdCLI:
    """Run one LightningCLI job in this process and return the CLI object (``.trainer``, ``.model``,
    ``.datamodule``, ``.run_dir``, ``.experiment``), so pipelines can chain runs without subprocesses.
    """
    held = contextlib.ExitStack()  # the run folder's lock, released when this job returns
    # Pipelines call this with their own argv while sys.argv holds the pipeline's: not a mistake.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    quiet_harmless_messages()
    inherited_run_dir = os.environ.get(RUN_DIR_ENV)
    for path in config_files(argv):  # a YAML syntax error named by its file and line, not "<string>"
        if Path(path).is_file():
            read_yaml(path)
    try:
        with held:  # an exception reaches the run folder's handlers (discard_if_failed_empty)
            return XmkdCLI(
                pl.LightningModule,
                pl.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_callback=SaveResolvedConfig,
                save_config_kwargs={"overwrite": True},
                seed_everything_default=42,
                args=argv,
                auto_configure_optimizers=False,
                parser_kwargs={"default_env": False},
                run_lock=held,
            )
    finally:
        # The run folder is handed to DDP workers through the environment; a pipeline that runs
        # several jobs in one process must not inherit the previous job's folder.
        if inherited_run_dir is None:
            os.environ.pop(RUN_DIR_ENV, None)
