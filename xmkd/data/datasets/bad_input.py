"""Skipping bad input without losing count: the collate function, the loader and the report.

Under ``on_bad_input: skip`` a dataset puts a ``{"path", "reason"}`` dict for each file it could
not load into the sample's ``failures`` list, and then either

- replaces the item by the next good one (``skip_mode="replace"``, training: an epoch of
  replacements is still an epoch of training), or
- drops it (``skip_mode="drop"``, validation, test and predict): the item becomes a
  :func:`dropped_item` marker, which :func:`collate_with_failures` removes from its batch, counting
  it under ``batch["dropped"]``. Replacing it there would put the next video into the metrics
  twice (6 copies of one video in a 6-item batch). :class:`DropEmptyBatchesLoader` holds back a
  batch whose every item was dropped, passing its failures on with the next batch.

The lists ride through the DataLoader (workers included) inside the batch, and
:class:`BadInputReport` (a Lightning callback) sums them per epoch, prints the count and the
files on rank zero, logs the count, and stops the run when more than ``max_fraction`` of the
split's items are bad (a wrong root or a codec missing from the machine should fail in minutes,
not after a silent epoch of replacements).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import default_collate

from xmkd.errors import FailureLog, XmkdError
from xmkd.fault import ResumableDataLoader

log = logging.getLogger(__name__)

__all__ = [
    "DROPPED_ITEM",
    "BadInputReport",
    "DropEmptyBatchesLoader",
    "SkipMode",
    "TooManyBadInputsError",
    "collate_with_failures",
    "dropped_item",
    "split_dropped",
]

SkipMode = Literal["replace", "drop"]
# Key of the marker a dataset returns for an item it dropped (and of a batch whose items all were).
DROPPED_ITEM = "dropped_item"


class TooManyBadInputsError(XmkdError):
    """More than the allowed fraction of an epoch's items could not be loaded."""


def dropped_item(failures: list[dict[str, str]]) -> dict[str, Any]:
    """The sample a dataset returns, under ``skip_mode="drop"``, for an item it could not load."""
    return {DROPPED_ITEM: True, "failures": failures}


def split_dropped(
    samples: Sequence[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[dict[str, str]], int, bool]:
    """(kept samples, every sample's failures, number dropped, whether failures are tracked)."""
    kept = [s for s in samples if not s.get(DROPPED_ITEM)]
    failures = [dict(f) for s in samples for f in s.get("failures", ())]
    tracked = any("failures" in s for s in samples)
    return kept, failures, len(samples) - len(kept), tracked


def collate_with_failures(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``default_collate`` of dict samples, with their ``failures`` lists concatenated.

    Tensors are stacked, ints become a tensor, strings a list (``default_collate`` rules). The
    batch has a ``failures`` key (possibly empty) whenever any sample had one, so that a
    consumer can tell "no failures" from "not tracked". Dropped items (:func:`dropped_item`) are
    left out and counted under ``dropped``; if all were dropped, the batch is only a marker
    (``{DROPPED_ITEM: True, "failures", "dropped"}``) for :class:`DropEmptyBatchesLoader`.
    """
    samples = list(samples)  # iterated more than once below
    if not samples:
        raise ValueError("collate_with_failures: empty batch")
    kept, failures, dropped, tracked = split_dropped(samples)
    if not kept:
        return {DROPPED_ITEM: True, "failures": failures, "dropped": dropped}
    batch = default_collate([{k: v for k, v in s.items() if k != "failures"} for s in kept])
    if tracked:
        batch["failures"] = failures
    if dropped:
        batch["dropped"] = dropped
    return batch


class DropEmptyBatchesLoader(ResumableDataLoader):
    """An evaluation loader over a dataset that drops bad items (``skip_mode="drop"``).

    A batch whose every item was dropped is not yielded (a step cannot run on nothing); its
    failures and dropped count ride with the next batch, or with the last one, which is held back
    one step for that. A split whose every item failed raises :class:`TooManyBadInputsError`.
    """

    def __iter__(self) -> Iterator[Any]:
        failures: list[dict[str, str]] = []
        dropped = 0
        held: Any = None
        for batch in super().__iter__():
            if isinstance(batch, Mapping) and batch.get(DROPPED_ITEM):
                failures += batch["failures"]
                dropped += int(batch.get("dropped", 0))
                continue
            if failures or dropped:
                _attach(batch, failures, dropped)
                failures, dropped = [], 0
            if held is not None:
                yield held
            held = batch
        if held is None:
            if failures:
                first = failures[0]
                raise TooManyBadInputsError(
                    f"every item of this evaluation split failed to load ({dropped} items); "
                    f"first: {first['path']}: {first['reason']}"
                )
            return
        if failures or dropped:
            _attach(held, failures, dropped)
        yield held


def _attach(batch: Any, failures: list[dict[str, str]], dropped: int) -> None:
    batch["failures"] = failures + list(batch.get("failures", []))
    batch["dropped"] = int(batch.get("dropped", 0)) + dropped


def _batch_size(batch: Mapping[str, Any]) -> int:
    for key in ("label", "video", "labels", "features"):
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    if isinstance(batch.get("video_id"), list):
        return len(batch["video_id"])
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    return 0


class BadInputReport(pl.Callback):
    """Counts ``batch["failures"]`` per stage and epoch; reports at epoch end; fails fast.

    ``max_fraction``: largest tolerated share of bad items, ``bad / items``, checked after every
    batch once ``min_items`` items were seen, and over the whole epoch at its end. ``items`` counts
    the split's items (a batch's items plus those it dropped), not loads: a replaced item is one
    item however many bad files it walked past. ``bad`` is the number of distinct bad files, or of
    dropped items where more. Counts are per process: each rank reports its own files; the logged
    ``bad_input/<stage>`` count is summed over ranks. Batches that are not dicts or carry no
    ``failures`` are ignored.
    """

    def __init__(self, max_fraction: float = 0.1, min_items: int = 64, list_limit: int = 20) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction = max_fraction
        self.min_items = min_items
        self.list_limit = list_limit
        self.logs: dict[str, FailureLog] = {}
        self.items: dict[str, int] = {}  # the split's items seen this epoch, per stage
        self.dropped: dict[str, int] = {}
        self.totals: dict[str, int] = {}  # failures over all finished epochs, per stage

    # -- accounting ---------------------------------------------------------------------------

    def _add(self, stage: str, batch: Any) -> None:
        if not isinstance(batch, Mapping) or "failures" not in batch:
            return
        failure_log = self.logs.setdefault(stage, FailureLog())
        failure_log.extend(batch["failures"])
        dropped = int(batch.get("dropped", 0))
        self.dropped[stage] = self.dropped.get(stage, 0) + dropped
        self.items[stage] = self.items.get(stage, 0) + _batch_size(batch) + dropped
        self._check(stage, final=False)

    def _check(self, stage: str, final: bool) -> None:
        bad = self._bad_files(stage)
        seen = max(self.items.get(stage, 0), bad)
        if bad == 0 or (not final and seen < self.min_items):
            return
        if bad / seen > self.max_fraction:
            summary = self.logs[stage].summary(self.list_limit)
            self._reset(stage)
            raise TooManyBadInputsError(
                f"{stage}: {bad} of {seen} items were bad ({bad / seen:.1%} > max_fraction "
                f"{self.max_fraction:.1%}); check the dataset root and decoders.\n{summary}"
            )

    def _bad_files(self, stage: str) -> int:
        """Distinct bad files (under replacement a run of k consecutive bad files is walked past by
        k items, so the raw failure list holds the same file up to k times), or the dropped items
        where more (several views of one bad video are several items)."""
        failure_log = self.logs.get(stage)
        files = len(failure_log.unique()) if failure_log is not None else 0
        return max(files, self.dropped.get(stage, 0))

    def _reset(self, stage: str) -> None:
        self.logs.pop(stage, None)
        self.items.pop(stage, None)
        self.dropped.pop(stage, None)

    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        failure_log = self.logs.get(stage, FailureLog())
        count = self._bad_files(stage)
        self.totals[stage] = self.totals.get(stage, 0) + count
        if stage in self.logs:
            self._check(stage, final=True)
        if count:
            dropped = self.dropped.get(stage, 0)
            note = f" ({dropped} item(s) dropped, not replaced)" if dropped else ""
            self._print(
                f"xmkd: {stage} epoch {trainer.current_epoch}{note}: {failure_log.summary(self.list_limit)}"
            )
            log.warning("%s epoch %d: %d bad input item(s) skipped", stage, trainer.current_epoch, count)
        if stage in self.logs and not trainer.sanity_checking:
            pl_module.log(f"bad_input/{stage}", float(count), reduce_fx="sum", sync_dist=True)
        self._reset(stage)

    @staticmethod
    @rank_zero_only
    def _print(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # -- Lightning hooks ----------------------------------------------------------------------

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        self._add("train", batch)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[override]
        self._add("validate", batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # type: ignore[override]
        self._add("test", batch)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # type: ignore[override]
        self._add("predict", batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer, pl_module, "validate")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer, pl_module, "test")

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        failure_log = self.logs.get("predict", FailureLog())
        if len(failure_log):  # self.log is not allowed in predict: print only
            self._print(f"xmkd: predict: {failure_log.summary(self.list_limit)}")
        if "predict" in self.logs:
            self._check("predict", final=True)
        self._reset("predict")
