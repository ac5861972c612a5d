"""The ``xmkd`` command.

``xmkd fit|validate|test|predict --config experiments/...yaml [--key.sub value ...]``
    LightningCLI over any xmkd LightningModule/DataModule named by ``class_path`` in the YAML, plus
    ``--experiment NAME`` (default: the config file's stem), ``--resume auto|RUN_DIR|CKPT`` and
    ``--runs_dir DIR``. Every run lives in ``runs/<experiment>/version_<N>/`` (see ``xmkd.runs``).
``xmkd data <tool> ...``
    Dataset tools: ``synth-av``, ``synth-untrimmed``, ``inspect``, ``shard``.
    ``predict`` writes ``predictions/`` in the run folder: detection scores, the Charades submission
    file and segments; classifier top-k; XKD embeddings (see ``xmkd.predict``).
``xmkd export --ckpt CKPT --out DIR [--format ckpt|onnx|torchscript]``
    The encoders of an XKD checkpoint, the RGB student of a detection one, as a checkpoint or as an
    ONNX / TorchScript graph checked against PyTorch (see ``xmkd.export``).
``xmkd compute-flow ...``, ``xmkd extract-features ...``
    The raw-video chain: optical flow, then sliding-window features for the detection readers.
``xmkd pipeline <name> ...``
    The multi-run jobs behind the make targets (pretraining + probes, detection tables, ...).
``xmkd --version``
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from xmkd.errors import ConfigError

# Tools are imported only when used, so `xmkd --help` stays fast: name -> (module, help).
DATA_TOOLS: dict[str, tuple[str, str]] = {
    "synth-av": ("xmkd.data.synthetic_av", "write the synthetic audio-visual dataset (real mp4 files)"),
    "synth-untrimmed": ("xmkd.data.synthetic_untrimmed", "write the synthetic untrimmed feature world"),
    "inspect": ("xmkd.data.inspect", "summarise a dataset as JSON: counts, decoded samples, failures"),
    "shard": ("xmkd.data.shards", "write a trimmed dataset as litdata shards (encoded clips + labels)"),
    "synth-untrimmed-raw": (
        "xmkd.data.synthetic_raw_untrimmed",
        "write raw synthetic untrimmed mp4 videos + Charades CSVs",
    ),
}
# Top-level tools of the raw-video chain: `xmkd compute-flow ...`, `xmkd extract-features ...`.
CHAIN_TOOLS: dict[str, tuple[str, str]] = {
    "compute-flow": ("xmkd.data.flow", "dense optical flow (OpenCV DIS), quantised uint8, resumable"),
    "extract-features": ("xmkd.features.extract", "sliding-window features per video, resumable"),
}
# Tools over a finished run's checkpoint: `xmkd export --ckpt ... --out ...`.
CHECKPOINT_TOOLS: dict[str, tuple[str, str]] = {
    "export": ("xmkd.export", "encoders of an XKD checkpoint, the RGB student of a detection one"),
}
PIPELINES: dict[str, tuple[str, str]] = {
    "pretrain-xkd": (
        "xmkd.pipelines.pretrain_xkd",
        "XKD pretraining + online probe vs random init; exports encoders",
    ),
    "xkd-ablation": (
        "xmkd.pipelines.pretrain_xkd_ablation",
        "probe top-1 of rec only / + alignment / full XKD",
    ),
    "distill-detection": ("xmkd.pipelines.distill_detection", "RGB / aux / teacher / students table"),
    "linear-eval": (
        "xmkd.pipelines.linear_eval",
        "linear-SVM protocol on every fold (C by grouped CV on train)",
    ),
    "finetune": (
        "xmkd.pipelines.finetune",
        "fine-tune an exported encoder on every fold (UCF101/HMDB51 recipe)",
    ),
    "eval-ablation": (
        "xmkd.pipelines.eval_ablation",
        "random vs reconstruction-only vs XKD: SVM + fine-tune table",
    ),
    "distill-detection-raw": (
        "xmkd.pipelines.distill_detection_raw",
        "raw video -> flow -> features -> teacher/student table",
    ),
}

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


_DASHED = re.compile(r"--[a-z0-9]+(?:-[a-z0-9]+)+")
_UNDERSCORED = re.compile(r"--[a-z0-9]+(?:_[a-z0-9]+)+")


def option_spelling(argv: list[str], separator: str) -> list[str]:
    """Spell plain option names (``--runs-dir`` / ``--runs_dir``, before any ``=value``) with
    ``separator``, so either spelling works: the data tools and pipelines use dashes, LightningCLI
    (``--ckpt_path``, ``--runs_dir``) underscores. Dotted keys (``--model.init_args.lr``) and values
    are left alone."""
    pattern = _UNDERSCORED if separator == "-" else _DASHED
    other = "_" if separator == "-" else "-"
    out = []
    for token in argv:
        name, eq, value = token.partition("=")
        if pattern.fullmatch(name):
            token = "--" + name[2:].replace(other, separator) + eq + value
        out.append(token)
    return out


def split_dotted_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Take LightningCLI-style dotted flags (``--model.init_args.lr 1e-4`` or ``--trainer.max_epochs=3``)
    out of a tool's argv as ``key=value`` overrides, so a pipeline takes the same flags as ``xmkd fit``
    as well as its own ``--override key=value``. Everything after a bare ``--`` is left as it is (a
    pipeline's pass-through arguments). Returns (the remaining argv, the overrides)."""
    rest: list[str] = []
    overrides: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            rest += [token, *tokens]
            break
        name, eq, value = token.partition("=")
        if not (name.startswith("--") and "." in name[2:]):
            rest.append(token)
            continue
        if not eq:
            value = next(tokens, None)
            if value is None:
                raise ConfigError(name[2:], f"{name} needs a value")
        overrides.append(f"{name[2:]}={value}")
    return rest, overrides


def _tool_main(prog: str, tools: dict[str, tuple[str, str]], argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="tool", required=True, metavar="TOOL")
    for name, (_, help_text) in tools.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in tools:
        parser.parse_args(argv)  # prints usage and exits with the reason
    name, rest = argv[0], option_spelling(argv[1:], "-")
    module = importlib.import_module(tools[name][0])
    tool_parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=tools[name][1])
    module.add_arguments(tool_parser)
    rest, dotted = split_dotted_overrides(rest)
    args = tool_parser.parse_args(rest)
    if dotted:
        if isinstance(getattr(args, "override", None), list):
            args.override += dotted
        elif isinstance(getattr(args, "extra", None), list):  # fit arguments passed through (finetune)
            args.extra += [f"--{o}" for o in dotted]
        else:
            tool_parser.error(f"takes no config overrides ({dotted[0]})")
    return int(module.run(args) or 0)


def run_lightning_cli(argv: list[str]) -> Any:
    """Run one LightningCLI job in this process and return the CLI object (``.trainer``, ``.model``,
    ``.datamodule``, ``.run_dir``, ``.experiment``), so pipelines can chain runs without subprocesses.
    """
    # Imported here: Lightning takes seconds to import and the data tools do not need it.
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
    from xmkd.fault import AtomicCheckpointIO, PreemptionCheckpoint, ResumeState
    from xmkd.runs import (
        RUN_DIR_ENV,
        check_writable,
        experiment_name,
        hold_run_dir,
        resolve_run_dir,
        resolve_wandb_mode,
        run_dir_of_checkpoint,
        wandb_run_id,
    )

    held = contextlib.ExitStack()  # the run folder's lock, released when this job returns

    def model_spec(config: Any) -> tuple[str, dict[str, Any]]:
        init_args = config.model.get("init_args")
        return config.model.class_path, (init_args.as_dict() if init_args is not None else {})

    class XmkdCLI(LightningCLI):
        run_dir: Path
        experiment: str
        resume_step: int | None = None

        def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
            super().parse_arguments(parser, args)
            # Checked here, before Lightning replaces the config's model by the class and hparams that
            # a --ckpt_path checkpoint names (so a teacher checkpoint would run as the teacher).
            subcommand = self.config.get("subcommand")
            ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt and ckpt not in ("best", "last", "hpc") and not str(ckpt).startswith("registry"):
                check_checkpoint_matches(ckpt, *model_spec(self.config[subcommand]))

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
                    self.run_dir, resume_ckpt = resolve_run_dir(
                        Path(config.runs_dir), self.experiment, resume
                    )
                if resume_ckpt is not None:
                    check_checkpoint_matches(resume_ckpt, *model_spec(config), what="resume")
                held.enter_context(hold_run_dir(self.run_dir, self.subcommand))
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

        def _loggers(self) -> list[Any]:
            metrics_file = "metrics.csv" if self.subcommand == "fit" else f"metrics_{self.subcommand}.csv"
            loggers: list[Any] = [RunCSVLogger(self.run_dir, metrics_file, self.resume_step)]
            mode = resolve_wandb_mode()
            if mode != "disabled":
                import wandb

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
                from xmkd.predict import PredictionWriter

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
            try:
                from xmkd.data.bad_input import BadInputReport

                callbacks.append(BadInputReport())
            except ImportError:
                pass
            trainer_config.callbacks = user_callbacks + callbacks
            return super().instantiate_trainer(**extra, **kwargs)

    # Pipelines call this with their own argv while sys.argv holds the pipeline's: not a mistake.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    from xmkd.console import quiet_harmless_messages

    quiet_harmless_messages()
    inherited_run_dir = os.environ.get(RUN_DIR_ENV)
    try:
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
        )
    finally:
        held.close()
        # The run folder is handed to DDP workers through the environment; a pipeline that runs
        # several jobs in one process must not inherit the previous job's folder.
        if inherited_run_dir is None:
            os.environ.pop(RUN_DIR_ENV, None)


#: ``XMKD_PORTABLE_MATH=1``: the CPU kernels of one vector ISA (AVX2) on every x86-64 machine, set
#: before torch loads them. A machine picks its own kernels otherwise (AVX-512 where it has it, and MKL
#: its vendor-specific paths), and their float rounding differs: the tiny XKD recipe's loss after 12
#: steps changed with the kernels alone. Costs some speed on AVX-512 machines.
PORTABLE_MATH_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def apply_portable_math(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """With ``XMKD_PORTABLE_MATH=1`` in ``environ``, fill in :data:`PORTABLE_MATH_ENV` (values the user
    set win). Must run before torch is imported; returns whether it applied."""
    if environ.get("XMKD_PORTABLE_MATH", "0") in ("", "0", "false", "no"):
        return False
    if "torch" in sys.modules:
        warnings.warn(
            "XMKD_PORTABLE_MATH is set but torch is already imported: its kernels are chosen", stacklevel=2
        )
    for key, value in PORTABLE_MATH_ENV.items():
        environ.setdefault(key, value)
    return True


def plain_text(docstring: str) -> str:
    """A docstring for the terminal: reStructuredText's ``literal`` markup shown as plain text."""
    return docstring.replace("``", "")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    apply_portable_math()
    if argv and argv[0] == "data":
        return _tool_main("xmkd data", DATA_TOOLS, argv[1:])
    if argv and argv[0] == "pipeline":
        return _tool_main("xmkd pipeline", PIPELINES, argv[1:])
    if argv and argv[0] in CHAIN_TOOLS:
        return _tool_main("xmkd", CHAIN_TOOLS, argv)
    if argv and argv[0] in CHECKPOINT_TOOLS:
        return _tool_main("xmkd", CHECKPOINT_TOOLS, argv)
    if argv and argv[0] in ("-V", "--version"):
        from xmkd import __version__

        print(f"xmkd {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(plain_text(__doc__ or ""))
        print("Lightning subcommands:", ", ".join(LIGHTNING_SUBCOMMANDS))
        print("Data tools:", ", ".join(DATA_TOOLS))
        print("Raw-video tools:", ", ".join(CHAIN_TOOLS))
        print("Checkpoint tools:", ", ".join(CHECKPOINT_TOOLS))
        print("Pipelines:", ", ".join(PIPELINES) or "(none)")
        return 0
    run_lightning_cli(option_spelling(argv, "_"))
    return 0


if __name__ == "__main__":  # `python -m xmkd.cli`
    sys.exit(main())
