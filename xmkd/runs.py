"""The run folder: where every run keeps its resolved config, checkpoints, W&B id and results.

Layout::

    runs/<experiment>/<version>/
        config.yaml        the resolved config (every default filled in)
        checkpoints/       last.ckpt, best-*.ckpt, step-*.ckpt
        wandb_id.txt       the W&B run id, so a resumed run continues the same W&B run
        .lock              held by the one process training or evaluating into the folder
        metrics.csv        the CSV logger's copy of every logged value
        results.json       the job's final metrics

These are small pure functions over paths so that the CLI, the make pipelines and the tests agree
on one layout.
"""

from __future__ import annotations

import contextlib
import json
import math
import netrc
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from xmkd.atomic import atomic_write_text  # re-exported: the run folder's writes
from xmkd.errors import ConfigError
from xmkd.locks import LockBusy, file_lock

RUN_DIR_ENV = "XMKD_RUN_DIR"
_VERSION_RE = re.compile(r"^version_(\d+)$")


def experiment_name(config_paths: list[str | Path], explicit: str | None = None) -> str:
    """The experiment's name: explicit if given, else the stem of the last config file, else 'default'."""
    if explicit:
        if "/" in explicit or explicit.startswith("."):
            raise ConfigError("experiment", f"'{explicit}' must be a plain name, not a path")
        return explicit
    if config_paths:
        return Path(str(config_paths[-1])).stem
    return "default"


def list_versions(experiment_dir: Path) -> list[Path]:
    """Version folders of an experiment, oldest first (by number, not by name)."""
    if not experiment_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in experiment_dir.iterdir() if (m := _VERSION_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def new_run_dir(runs_root: Path, experiment: str) -> Path:
    """Create and return the next version folder, ``version_<N+1>``, race-free against a twin process."""
    experiment_dir = runs_root / experiment
    experiment_dir.mkdir(parents=True, exist_ok=True)
    versions = list_versions(experiment_dir)
    next_number = int(versions[-1].name.split("_")[1]) + 1 if versions else 0
    while True:
        candidate = experiment_dir / f"version_{next_number}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            next_number += 1


def last_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def newest_resumable_run(runs_root: Path, experiment: str) -> Path | None:
    """The newest version of an experiment that has a ``last.ckpt``, or None."""
    for run_dir in reversed(list_versions(runs_root / experiment)):
        if last_checkpoint(run_dir) is not None:
            return run_dir
    return None


def resolve_run_dir(runs_root: Path, experiment: str, resume: str | None) -> tuple[Path, Path | None]:
    """Pick the run folder and the checkpoint to resume from.

    ``resume``: None (a new version), ``"auto"`` (the newest run with a ``last.ckpt``, or a new version
    when there is none), or a path to a run folder or a ``.ckpt`` file.
    """
    if resume in (None, "", "none", "never"):
        return new_run_dir(runs_root, experiment), None
    if resume == "auto":
        run_dir = newest_resumable_run(runs_root, experiment)
        if run_dir is None:
            return new_run_dir(runs_root, experiment), None
        return run_dir, last_checkpoint(run_dir)
    path = Path(resume)
    if path.is_file() and path.suffix == ".ckpt":
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return run_dir, path
    if path.is_dir():
        ckpt = last_checkpoint(path)
        if ckpt is None:
            raise ConfigError("resume", f"run folder {path} has no checkpoints/last.ckpt to resume from")
        return path, ckpt
    raise ConfigError("resume", f"expected 'auto', a run folder or a .ckpt file; {resume!r} does not exist")


def run_dir_of_checkpoint(ckpt: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` with ``<run>/config.yaml``
    beside), or None for a checkpoint that lives outside a run folder."""
    if ckpt.parent.name != "checkpoints":
        return None
    run_dir = ckpt.parent.parent
    return run_dir if (run_dir / "config.yaml").is_file() else None


def check_writable(directory: Path, key: str = "runs_dir") -> None:
    """Create ``directory`` if needed and prove a file can be written there, before any training.

    A read-only or full checkpoint folder otherwise fails at the first checkpoint, after an epoch.
    """
    if directory.exists() and not directory.is_dir():
        raise ConfigError(key, f"{directory} exists and is not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".xmkd-write-check.")
        try:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise ConfigError(key, f"cannot write into {directory}: {e.strerror or e}") from e


@contextlib.contextmanager
def hold_run_dir(run_dir: Path, job: str = "fit") -> Iterator[Path]:
    """Hold the run folder's lock for the ``with`` block; refuse at once when another process holds it.

    Two ``--resume auto`` of one experiment would otherwise both continue ``version_N``: duplicate
    checkpoints and two W&B processes with one run id. The lock dies with its process (flock).
    """
    lock = file_lock(run_dir / ".lock", wait=False)
    try:
        lock.__enter__()
    except LockBusy as e:
        hint = (
            "wait for it to finish, or start a new run (without --resume)"
            if job == "fit"
            else "wait for it to finish, or evaluate a copy of the checkpoint kept outside the run folder"
        )
        raise ConfigError(
            "resume" if job == "fit" else "ckpt_path",
            f"{run_dir} is in use by another xmkd process ({e.holder or 'unknown'}); two jobs writing into "
            f"one run folder would mix their checkpoints and logs: {hint}",
        ) from None
    try:
        yield run_dir
    finally:
        lock.__exit__(None, None, None)


def holds_run_work(run_dir: Path) -> bool:
    """Whether a run folder holds anything a run made: a checkpoint, a metrics row, a figure or a
    result (a folder with only its lock, W&B id, the W&B run's start-up files and its config does not)."""
    if any(run_dir.rglob("*.ckpt")) or any((run_dir / "figures").glob("*")):
        return True
    if any(run_dir.glob("results*.json")) or any(run_dir.glob("*.png")):
        return True
    for metrics in run_dir.glob("metrics*.csv"):
        with metrics.open() as f:
            if sum(1 for line in f if line.strip()) > 1:  # a row below the header
                return True
    return False


@contextlib.contextmanager
def discard_if_failed_empty(
    run_dir: Path, made_progress: Callable[[], bool] = lambda: False
) -> Iterator[Path]:
    """Remove the new ``run_dir`` when the ``with`` block fails before the run made anything: no
    training step (``made_progress``) and nothing on disk (:func:`holds_run_work`). A bad config or
    data path must not leave a ``version_N`` per retry; a run that trained keeps its folder (its W&B
    files hold its logs)."""
    try:
        yield run_dir
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        if run_dir.is_dir() and not made_progress() and not holds_run_work(run_dir):
            _finish_wandb_run_in(run_dir)  # else its process writes the folder again at exit
            shutil.rmtree(run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                run_dir.parent.rmdir()  # the experiment's folder, if this was its only run
            print(f"xmkd: removed {run_dir}: the run failed before it wrote anything")
        raise


def _finish_wandb_run_in(run_dir: Path) -> None:
    """End this process's W&B run if it writes into ``run_dir`` (W&B is only looked at if imported)."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is not None and Path(run.dir).resolve().is_relative_to(run_dir.resolve()):
        with contextlib.suppress(Exception):  # a W&B that cannot finish must not hide the run's own error
            wandb.finish(exit_code=1)


def wandb_run_id(run_dir: Path) -> str:
    """The run's W&B id, created once and kept in the run folder so that a resume continues the same run."""
    path = run_dir / "wandb_id.txt"
    if path.is_file():
        existing = path.read_text().strip()
        if existing:
            return existing
    run_id = secrets.token_hex(4)
    atomic_write_text(path, run_id + "\n")
    return run_id


def resolve_wandb_mode(env: Mapping[str, str] | None = None, netrc_file: Path | None = None) -> str:
    """W&B mode: what ``WANDB_MODE`` says, else online only when the user configured W&B credentials.

    Never online by accident: a machine without credentials (or network) logs offline, and the run
    can be synced later with ``wandb sync``.
    """
    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE", "").strip().lower()
    if mode in {"online", "offline", "disabled", "dryrun"}:
        return "offline" if mode == "dryrun" else mode
    if env.get("WANDB_DISABLED", "").lower() in {"1", "true", "yes"}:
        return "disabled"
    if env.get("WANDB_API_KEY"):
        return "online"
    netrc_file = netrc_file or Path(env.get("NETRC", Path.home() / ".netrc"))
    try:
        if netrc_file.is_file() and netrc.netrc(str(netrc_file)).authenticators("api.wandb.ai"):
            return "online"
    except (netrc.NetrcParseError, OSError):
        pass
    return "offline"


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy scalars and paths as plain JSON values; NaN/Inf as None (JSON has neither)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
    elif hasattr(value, "item") and callable(value.item) and getattr(value, "size", 2) == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(payload), indent=2, sort_keys=False) + "\n")


def update_results(path: Path, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the results file (created if absent) and return the merged content."""
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    results.update(to_jsonable(dict(updates)))
    write_json(path, results)
    return results
