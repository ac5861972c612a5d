"""The ``xmkd`` command.

``xmkd fit|validate|test|predict --config experiments/...yaml [--key.sub value ...]``
    LightningCLI (``xmkd.runner``) over any LightningModule/DataModule named by ``class_path``, plus
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
    The multi-run jobs behind the make targets (pretraining + probes, detection tables, ...), listed
    by ``xmkd pipeline --help`` (see ``xmkd.pipelines.registry``).
``xmkd --version``
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType

from xmkd import __version__, errors
from xmkd.errors import ConfigError, XmkdError

# Tools are imported only when used, so `xmkd --help` stays fast: name -> (module, help). The pipelines
# have their own registry (xmkd.pipelines.registry).
DATA_TOOLS: dict[str, tuple[str, str]] = {
    "synth-av": ("xmkd.data.tools.synth_av", "write the synthetic audio-visual dataset (real mp4 files)"),
    "synth-untrimmed": ("xmkd.data.tools.synth_untrimmed", "write the synthetic untrimmed feature world"),
    "inspect": ("xmkd.data.tools.inspect", "summarise a dataset as JSON: counts, decoded samples, failures"),
    "shard": ("xmkd.data.tools.shard", "write a trimmed dataset as litdata shards (encoded clips + labels)"),
    "synth-untrimmed-raw": (
        "xmkd.data.tools.synth_untrimmed_raw",
        "write raw synthetic untrimmed mp4 videos + Charades CSVs",
    ),
}
# Top-level tools of the raw-video chain: `xmkd compute-flow ...`, `xmkd extract-features ...`.
CHAIN_TOOLS: dict[str, tuple[str, str]] = {
    "compute-flow": (
        "xmkd.data.tools.compute_flow",
        "dense optical flow (OpenCV DIS), quantised uint8, resumable",
    ),
    "extract-features": ("xmkd.features.cli", "sliding-window features per video, resumable"),
}
# Tools over a finished run's checkpoint: `xmkd export --ckpt ... --out ...`.
CHECKPOINT_TOOLS: dict[str, tuple[str, str]] = {
    "export": ("xmkd.export", "encoders of an XKD checkpoint, the RGB student of a detection one"),
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


def _tool_main(
    prog: str, helps: Mapping[str, str], load: Callable[[str], ModuleType], argv: list[str]
) -> int:
    """Parse and run one tool or pipeline: ``load(name)`` gives its module (``add_arguments``, ``run``)."""
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="tool", required=True, metavar="TOOL")
    for name, help_text in helps.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in helps:
        parser.parse_args(argv)  # prints usage and exits with the reason
    name, rest = argv[0], option_spelling(argv[1:], "-")
    module = load(name)
    tool_parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=helps[name])
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


def _lazy_tools(tools: dict[str, tuple[str, str]], argv: list[str], prog: str) -> int:
    helps = {name: help_text for name, (_, help_text) in tools.items()}
    return _tool_main(prog, helps, lambda name: importlib.import_module(tools[name][0]), argv)


def _pipeline_main(argv: list[str]) -> int:
    # Imported here: every pipeline loads torch and Lightning (seconds), which the rest of the command
    # (help, data tools) does without.
    from xmkd.pipelines.registry import PIPELINES

    helps = {name: p.help for name, p in PIPELINES.items()}
    return _tool_main("xmkd pipeline", helps, lambda name: PIPELINES[name].module, argv)


def _lightning_main(argv: list[str]) -> int:
    # Imported here for the same reason: Lightning takes seconds to import.
    from xmkd.runner import run_lightning_cli

    run_lightning_cli(option_spelling(argv, "_"))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    apply_portable_math()
    if argv and argv[0] == "data":
        return _lazy_tools(DATA_TOOLS, argv[1:], "xmkd data")
    if argv and argv[0] == "pipeline":
        return _pipeline_main(argv[1:])
    if argv and argv[0] in CHAIN_TOOLS:
        return _lazy_tools(CHAIN_TOOLS, argv, "xmkd")
    if argv and argv[0] in CHECKPOINT_TOOLS:
        return _lazy_tools(CHECKPOINT_TOOLS, argv, "xmkd")
    if argv and argv[0] in ("-V", "--version"):
        print(f"xmkd {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(plain_text(__doc__ or ""))
        print("Lightning subcommands:", ", ".join(LIGHTNING_SUBCOMMANDS))
        print("Data tools:", ", ".join(DATA_TOOLS))
        print("Raw-video tools:", ", ".join(CHAIN_TOOLS))
        print("Checkpoint tools:", ", ".join(CHECKPOINT_TOOLS))
        print("Pipelines: xmkd pipeline --help")
        return 0
    return _lightning_main(argv)


def _user_error(e: BaseException) -> str | None:
    """The message of the :class:`~xmkd.errors.XmkdError` behind ``e``: itself, one it was raised from
    (a config parser reports a class's refusal as its own error, raised from the original), or one a
    DataLoader worker raised (the main process gets a RuntimeError carrying its traceback as text)."""
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        if isinstance(current, XmkdError):
            return str(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    last = str(e).strip().splitlines()[-1] if isinstance(e, RuntimeError) and str(e).strip() else ""
    if str(e).startswith("Caught ") and last.startswith("xmkd.errors."):
        name, _, message = last.removeprefix("xmkd.errors.").partition(": ")
        if isinstance(getattr(errors, name, None), type) and issubclass(getattr(errors, name), XmkdError):
            return message
    return None


def console_main() -> int:
    """The ``xmkd`` command: :func:`main`, where a bad file or setting (an :class:`~xmkd.errors.XmkdError`,
    whose message names the file or key) ends the command with that message on one line and exit
    status 2 rather than a traceback. ``XMKD_TRACEBACK=1`` shows the traceback as well."""
    try:
        return main()
    except Exception as e:
        error = _user_error(e)
        if error is None or os.environ.get("XMKD_TRACEBACK"):
            raise
        words = sys.argv[1:3] if sys.argv[1:2] in (["data"], ["pipeline"]) else sys.argv[1:2]
        print(" ".join(["xmkd", *words]) + f": error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # `python -m xmkd.cli`
    sys.exit(console_main())
