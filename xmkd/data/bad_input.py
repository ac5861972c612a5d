"""Skipping bad input without losing count: the collate function and the epoch-end report.

Under ``on_bad_input: skip`` a dataset replaces a broken item by the next good one and puts a
``{"path", "reason"}`` dict for each skipped file into the sample's ``failures`` list. The lists
ride through the DataLoader (workers included) inside the batch: :func:`collate_with_failures`
concatenates them under ``batch["failures"]``, and :class:`BadInputReport` (a Lightning callback)
sums them per epoch, prints the count and the files on rank zero, logs the count, and stops the
run when more than ``max_fraction`` of the items of an epoch are bad (a wrong root or a codec
missing from the machine should fail in minutes, not after a silent epoch of replacements).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import default_collate

from xmkd.errors import FailureLog, XmkdError

log = logging.getLogger(__name__)

__all__ = ["BadInputReport", "TooManyBadInputsError", "collate_with_failures"]


class TooManyBadInputsError(XmkdError):
    """More than the allowed fraction of an epoch's items could not be loaded."""


def collate_with_failures(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``default_collate`` of dict samples, with their ``failures`` lists concatenated.

    Tensors are stacked, ints become a tensor, strings a list (``default_collate`` rules). The
    batch has a ``failures`` key (possibly empty) whenever any sample had one, so that a
    consumer can tell "no failures" from "not tracked".
    """
    samples = list(samples)  # iterated twice below
    if not samples:
        raise ValueError("collate_with_failures: empty batch")
    tracked = any("failures" in s for s in samples)
    failures = [dict(f) for s in samples for f in s.get("failures", ())]
    batch = default_collate([{k: v for k, v in s.items() if k != "failures"} for s in samples])
    if tracked:
        batch["failures"] = failures
    return batch


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

    ``max_fraction``: largest tolerated share of bad items, ``bad / (bad + good)``, checked after
    every batch once ``min_items`` items were seen, and over the whole epoch at its end. Counts
    are per process: each rank reports its own files; the logged ``bad_input/<stage>`` count is
    summed over ranks. Batches that are not dicts or carry no ``failures`` are ignored.
    """

    def __init__(self, max_fraction: float = 0.1, min_items: int = 64, list_limit: int = 20) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction = max_fraction
        self.min_items = min_items
        self.list_limit = list_limit
        self.logs: dict[str, FailureLog] = {}
        self.good: dict[str, int] = {}
        self.totals: dict[str, int] = {}  # failures over all finished epochs, per stage

    # -- accounting ---------------------------------------------------------------------------

    def _add(self, stage: str, batch: Any) -> None:
        if not isinstance(batch, Mapping) or "failures" not in batch:
            return
        failure_log = self.logs.setdefault(stage, FailureLog())
        failure_log.extend(batch["failures"])
        self.good[stage] = self.good.get(stage, 0) + _batch_size(batch)
        self._check(stage, final=False)

    def _check(self, stage: str, final: bool) -> None:
        bad = self._bad_files(stage)
        seen = bad + self.good.get(stage, 0)
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
        """Distinct bad files: under ``skip`` a run of k consecutive bad files is walked past by k
        items, so the raw failure list holds the same file up to k times."""
        failure_log = self.logs.get(stage)
        return len(failure_log.unique()) if failure_log is not None else 0

    def _reset(self, stage: str) -> None:
        self.logs.pop(stage, None)
        self.good.pop(stage, None)

    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        failure_log = self.logs.get(stage, FailureLog())
        count = self._bad_files(stage)
        self.totals[stage] = self.totals.get(stage, 0) + count
        if stage in self.logs:
            self._check(stage, final=True)
        if count:
            self._print(
                f"xmkd: {stage} epoch {trainer.current_epoch}: {failure_log.summary(self.list_limit)}"
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
