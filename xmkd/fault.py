"""Fault tolerance: preemption-safe checkpoints, atomic checkpoint files, exact resume.

A preempted or killed run must lose at most the work since its last checkpoint and, resumed with
``--resume auto``, end where the uninterrupted run would have ended. Four pieces:

- :class:`AtomicCheckpointIO` (a Trainer plugin): every checkpoint is written to a temporary file
  in the destination folder, fsynced and renamed over the target. Lightning's own save goes through
  an fsspec transaction whose temporary file lives in the *system* temp dir; when that is another
  filesystem (a node-local ``/tmp`` and a shared checkpoint folder, the usual cluster layout) the
  final move is a copy, and a kill during the copy leaves a truncated ``last.ckpt``.
- :class:`PreemptionCheckpoint` (a callback): on SIGTERM (Lightning stops after the current batch
  and raises ``SIGTERMException``) or SIGUSR1 (routed to the same path) it writes ``last.ckpt`` and
  lets the process exit with status 0; a first Ctrl-C does the same and exits with status 130.
- :class:`ResumeState` (a callback): stores the RNG states (torch, numpy, python) in the checkpoint
  and restores them when training restarts, and tells :class:`ResumableDataLoader` how many batches
  of the interrupted epoch were already trained on.
- :class:`ResumableDataLoader` + :class:`EpochSeededRandomSampler`: the order of an epoch is a pure
  function of (seed, epoch) and every item's augmentation randomness a pure function of (seed, epoch,
  item index), independent of workers, prefetching, ranks and restarts; a resumed epoch skips the
  batches it had already trained on without decoding them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, Dataset, RandomSampler

from xmkd.atomic import atomic_path

T = TypeVar("T")

__all__ = [
    "AtomicCheckpointIO",
    "EpochSeededRandomSampler",
    "PreemptionCheckpoint",
    "ResumableDataLoader",
    "ResumeState",
    "atomic_torch_save",
    "call_seeded",
    "default_seed",
    "fault_tolerance_callbacks",
    "item_seed",
]


# ----------------------------------------------------------------------------------------------
# atomic checkpoint files


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, fsync, then ``os.replace`` onto ``path``
    (:func:`xmkd.atomic.atomic_path`): a resume after a kill at any instant sees the previous or the
    new complete checkpoint, never a mixture."""
    path = Path(path)
    with atomic_path(path, fsync=True) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Trainer plugin: local checkpoints are written atomically (temp file in the same folder + rename).

    Remote URLs (``s3://`` ...) fall back to Lightning's fsspec path, where object stores are
    atomic per object anyway. Use: ``Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        text = str(path)
        if "://" in text and not text.startswith("file://"):
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, text.removeprefix("file://"))


# ----------------------------------------------------------------------------------------------
# preemption


class PreemptionCheckpoint(pl.Callback):
    """Writes ``last.ckpt`` when the job is preempted (SIGTERM / SIGUSR1), then lets it exit cleanly.

    SIGTERM: Lightning's signal connector finishes the current batch and raises ``SIGTERMException``
    (a ``SystemExit`` with status 0) on every rank; this callback's ``on_exception`` saves the
    checkpoint through the Trainer (rank zero writes, all ranks wait), so ``--resume auto``
    continues from the batch after the last one trained. SIGUSR1 (SLURM's ``--signal=USR1@90``,
    other schedulers' grace signal) is turned into a SIGTERM when no other handler claims it (with
    SLURM auto-requeue, Lightning's own requeue handler keeps it). A first Ctrl-C (SIGINT) during
    training takes the same path, so an interactive run is resumable with ``--resume auto`` like a
    preempted one; the process then exits with status 130, as an interrupted command does. A second
    Ctrl-C aborts at once without a checkpoint. Other exceptions (a crash, a KeyboardInterrupt raised
    mid-step) never overwrite ``last.ckpt``: the state mid-step may be inconsistent.

    Args:
        dirpath: where ``last.ckpt`` goes; ``None``: the Trainer's first ``ModelCheckpoint``'s
            folder, else ``<default_root_dir>/checkpoints``.
        filename: the file name (``last.ckpt``, the file ``--resume auto`` reads).
        handle_sigusr1: install the SIGUSR1 -> SIGTERM handler (main thread, POSIX only).
        handle_sigint: make the first Ctrl-C a preemption (main thread).
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str = "last.ckpt",
        handle_sigusr1: bool = True,
        handle_sigint: bool = True,
    ) -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.filename = filename
        self.handle_sigusr1 = handle_sigusr1
        self.handle_sigint = handle_sigint
        self.saved_path: Path | None = None
        self.interrupted_by_user = False
        self._previous: dict[int, Any] = {}

    def checkpoint_path(self, trainer: pl.Trainer) -> Path:
        if self.dirpath is not None:
            return self.dirpath / self.filename
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                return Path(cb.dirpath) / self.filename
        return Path(trainer.default_root_dir) / "checkpoints" / self.filename

    @staticmethod
    def _usr1_to_term(signum: int, frame: Any) -> None:
        signal.raise_signal(signal.SIGTERM)

    def _sigint_to_term(self, signum: int, frame: Any) -> None:
        self.interrupted_by_user = True
        self._restore_signal(signal.SIGINT)  # a second Ctrl-C is a plain KeyboardInterrupt
        rank_zero_info("\nxmkd: Ctrl-C: saving last.ckpt after this batch (Ctrl-C again aborts without it)")
        signal.raise_signal(signal.SIGTERM)

    def _install(self, signum: int, handler: Any, replaceable: tuple[Any, ...]) -> None:
        try:
            if signal.getsignal(signum) in replaceable:
                self._previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # installed after Lightning registered its own handlers (and restored at its teardown)
        usr1 = getattr(signal, "SIGUSR1", None)
        if self.handle_sigusr1 and usr1 is not None:
            self._install(usr1, self._usr1_to_term, (None, signal.SIG_DFL))
        if self.handle_sigint:
            self._install(signal.SIGINT, self._sigint_to_term, (signal.default_int_handler,))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_signal()

    def _restore_signal(self, only: int | None = None) -> None:
        for signum in [only] if only is not None else list(self._previous):
            if signum in self._previous:
                with contextlib.suppress(ValueError):
                    signal.signal(signum, self._previous.pop(signum) or signal.SIG_DFL)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_signal()  # Lightning skips the teardown hooks after an exception
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.saved_path = path
        cause = "interrupted (Ctrl-C)" if self.interrupted_by_user else "preempted"
        rank_zero_info(
            f"xmkd: {cause} at epoch {trainer.current_epoch} step {trainer.global_step}; saved {path}. "
            "Continue with --resume auto."
        )
        if self.interrupted_by_user:
            exception.code = 130  # the status of a command stopped by Ctrl-C, so `make` and `&&` stop too


# ----------------------------------------------------------------------------------------------
# exact resume: RNG states and the data order


def default_seed() -> int:
    """The run's seed: what ``seed_everything`` exported (``PL_GLOBAL_SEED``), else 0."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item of one epoch (BLAKE2 of the three numbers: no accidental overlap)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class EpochSeededRandomSampler(RandomSampler):
    """A random permutation per epoch that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` at every epoch start (and, on resume, with the restored epoch),
    so a resumed run draws the same order as the uninterrupted one. Being a ``RandomSampler``,
    it is replaced by Lightning's ``DistributedSampler`` under DDP, which is (seed, epoch)-seeded too.
    """

    def __init__(self, data_source: Any, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = default_seed() if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, -1))
        yield from torch.randperm(len(self.data_source), generator=g).tolist()


class _SeededItems(Dataset):
    """Each ``dataset[i]`` runs under its own RNG seed, (seed, epoch, i); the caller's RNG is untouched."""

    def __init__(self, dataset: Any, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return call_seeded(item_seed(self.seed, self.epoch, int(index)), self.dataset.__getitem__, index)

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """A batch's items (the DataLoader asks for them together), each under its own seed as in
        :meth:`__getitem__`; the caller's RNG is saved and restored once for the batch, not per item
        (numpy's state alone costs about 60 us to save and restore)."""
        with _caller_rng_kept():
            out = []
            for index in indices:
                _seed_all(item_seed(self.seed, self.epoch, int(index)))
                out.append(self.dataset.__getitem__(index))
            return out


def call_seeded(seed: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with torch (CPU), numpy and python ``random`` seeded by ``seed``; the caller's RNG untouched.

    What every resumable loader runs each item under (``seed`` = :func:`item_seed`), so an item's
    augmentation is the same whichever process, worker or storage layout loads it.
    """
    with _caller_rng_kept():
        _seed_all(seed)
        return fn(*args)


@contextlib.contextmanager
def _caller_rng_kept() -> Iterator[None]:
    """Torch's CPU generator, numpy's and python ``random``'s states as they were on entry, on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    # The CPU generator only (the one fork_rng restores): ``torch.manual_seed`` would also reseed
    # every CUDA generator, unrestored, and, before CUDA is initialised, queue that call with a
    # formatted stack trace (~0.5 ms an item).
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _seed_all(seed: int) -> None:
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose epochs are reproducible and resumable mid-epoch.

    - ``shuffle=True`` uses :class:`EpochSeededRandomSampler` (order = f(seed, epoch)).
    - Every item is loaded under the RNG seed (seed, epoch, index), in the main process or a worker
      alike, so random crops / clip starts do not depend on ``num_workers``, on which worker got the
      item, on prefetching, or on the model's use of the global RNG.
    - :meth:`skip_batches` (called by :class:`ResumeState` on a mid-epoch restart) makes the next
      iteration start at batch ``n`` of the epoch's order, without loading the skipped items.
    - Iteration starts lazily at the first ``next()``: Lightning creates the iterator before it calls
      ``set_epoch`` on a restart, and the order must be that of the restored epoch.

    ``seed``: default :func:`default_seed`. Each epoch builds its own worker pool (a per-epoch
    dataset wrapper carries the epoch to the workers), so ``persistent_workers`` is not used.
    Lightning sees ``state_dict`` / ``load_state_dict`` and so treats the loader as resumable.
    """

    def __init__(self, dataset: Any, *args: Any, seed: int | None = None, **kwargs: Any) -> None:
        self.seed = default_seed() if seed is None else int(seed)
        shuffle = kwargs.get("shuffle", args[1] if len(args) > 1 else False)
        if (
            shuffle
            and kwargs.get("sampler") is None
            and kwargs.get("batch_sampler") is None
            and len(args) < 3
        ):
            kwargs["sampler"] = EpochSeededRandomSampler(dataset, self.seed)
            kwargs["shuffle"] = None
            if len(args) > 1:
                args = (args[0],)
        super().__init__(dataset, *args, **kwargs)
        self._skip = 0

    def skip_batches(self, n: int) -> None:
        """The next iteration starts at batch ``n`` (0 = from the start)."""
        self._skip = max(0, int(n))

    def _epoch(self) -> int:
        for sampler in (self.sampler, getattr(self.batch_sampler, "sampler", None)):
            epoch = getattr(sampler, "epoch", None)
            if isinstance(epoch, int):
                return epoch
        # no epoch-aware sampler (evaluation): the same items every time, so epochs stay comparable
        return 0

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self._epoch()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            rank_zero_info(
                f"xmkd: the checkpoint's data seed {state['seed']} differs from this run's {self.seed}; "
                "the resumed epoch's order will differ from the interrupted run's"
            )

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        epoch = self._epoch()
        batches = [list(b) for b in self.batch_sampler] if self.batch_sampler is not None else None
        if batches is None:  # batch_size=None: one item per "batch", no collation
            raise TypeError("ResumableDataLoader needs batching (batch_size or batch_sampler)")
        generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, -2))
        kwargs: dict[str, Any] = dict(
            batch_sampler=batches[skip:],
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            timeout=self.timeout,
            worker_init_fn=self.worker_init_fn,
            generator=generator,
        )
        if self.num_workers > 0:
            kwargs.update(
                multiprocessing_context=self.multiprocessing_context, prefetch_factor=self.prefetch_factor
            )
        yield from DataLoader(_SeededItems(self.dataset, self.seed, epoch), **kwargs)


class ResumeState(pl.Callback):
    """Puts the RNG states in every checkpoint and restores them, and the data position, on resume.

    Saved (rank zero's, as Lightning writes rank zero's checkpoint; ``seed_everything`` gives all
    ranks the same stream anyway): torch CPU (and CUDA when used), numpy and python ``random``.
    Restored at ``on_train_start``, after the sanity check and before the first training batch,
    so the model's random draws (MAE masks, dropout) continue the interrupted run's sequence.
    The batches already trained in the interrupted epoch are skipped in every
    :class:`ResumableDataLoader` of the training loaders.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self.skipped_batches = 0

    def state_dict(self) -> dict[str, Any]:
        # plain tensors, ints and lists only, so that ``torch.load(weights_only=True)`` accepts them
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, py_internal, py_gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": {"version": int(version), "internal": list(py_internal), "gauss": py_gauss},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # runs before Lightning restores its loops from the same dict
        close_finished_epoch(checkpoint.get("loops") or {})

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.skipped_batches = 0
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        npy, py = state["numpy"], state["python"]
        keys = npy["keys"].numpy().astype(np.uint32)
        np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
        random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            with contextlib.suppress(RuntimeError):
                torch.cuda.set_rng_state_all(state["cuda"])
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        for loader in _flatten(trainer.train_dataloader):
            if isinstance(loader, ResumableDataLoader) and 0 < done < len(loader):
                loader.skip_batches(done)
                self.skipped_batches = done


def close_finished_epoch(loops: dict[str, Any]) -> bool:
    """Mark the checkpoint's last epoch as closed when training stopped right after it; True if changed.

    A run that ends at ``max_steps`` on an epoch's last batch is saved after its epoch counter moved on
    while the batch counters still hold that epoch's batches. Resumed with a larger ``max_steps``,
    Lightning takes those counters for a half-done new epoch: it runs an epoch of the remaining zero
    batches (or, with a restartable loader, a one-batch epoch) and every later epoch is shifted. Zeroing
    the current-epoch counters makes the resume start the next epoch as the uninterrupted run does.
    Checkpoints saved mid-epoch (preemption, step checkpoints) or at an epoch end before the epoch
    counter moved are left alone.
    """
    fit = loops.get("fit_loop") or {}
    epochs = (fit.get("epoch_progress") or {}).get("total")
    batches = fit.get("epoch_loop.batch_progress")
    if not epochs or not batches:
        return False
    epoch_closed = epochs["ready"] == epochs["started"] == epochs["processed"] == epochs["completed"]
    # (``is_last_batch`` is no help: it stays False when the loader's end was not fetched ahead)
    if not (epoch_closed and batches["current"].get("completed", 0) > 0):
        return False

    def zero_current(progress: Any) -> None:
        if isinstance(progress, dict):
            if isinstance(progress.get("current"), dict):
                progress["current"] = {k: 0 for k in progress["current"]}
            for key, value in progress.items():
                if key not in ("current", "total"):
                    zero_current(value)

    for key in ("epoch_loop.batch_progress", "epoch_loop.scheduler_progress"):
        zero_current(fit.get(key))
    zero_current(fit.get("epoch_loop.automatic_optimization.optim_progress"))
    zero_current(fit.get("epoch_loop.manual_optimization.optim_step_progress"))
    batches["is_last_batch"] = False
    return True


def _flatten(loaders: Any) -> list[Any]:
    if isinstance(loaders, dict):
        return [x for v in loaders.values() for x in _flatten(v)]
    if isinstance(loaders, (list, tuple)):
        return [x for v in loaders for x in _flatten(v)]
    return [] if loaders is None else [loaders]


def fault_tolerance_callbacks(dirpath: str | os.PathLike | None = None) -> list[pl.Callback]:
    """The callbacks every xmkd fit should get: :class:`PreemptionCheckpoint` and :class:`ResumeState`."""
    return [PreemptionCheckpoint(dirpath), ResumeState()]
