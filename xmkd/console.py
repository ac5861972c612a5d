"""The one place where xmkd silences console messages, each of them harmless by construction.

Messages that point at something to fix are fixed where they arise, not here. What is left:

- Lightning's tips to install its cloud loggers (``litlogger``, ``litmodels``): advertisements.
- ``isinstance(treespec, LeafSpec)`` is deprecated: Lightning's own use of a torch API, not ours.
- "Found N module(s) in eval mode at the start of training": xmkd's frozen EMA and distillation
  teachers are in eval mode on purpose (``xmkd.distill.ema.freeze_``, ``AugmentedRGBStudent``).
- Lightning's start-up banner (GPU/TPU available, "Seed set to"): shown once per process, not once
  per run of a multi-run pipeline.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["HARMLESS_WARNINGS", "LightningTipFilter", "RepeatedBannerFilter", "quiet_harmless_messages"]

#: (message regex, why it is harmless)
HARMLESS_WARNINGS: tuple[tuple[str, str], ...] = (
    (r".*isinstance\(treespec, LeafSpec\).*", "Lightning's use of a deprecated torch API"),
    (r"Found \d+ module\(s\) in eval mode at the start of training.*", "frozen teachers, by design"),
)


class LightningTipFilter(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger / litmodels" log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip:")


#: Lightning's start-up lines, printed by every Trainer: a pipeline of 42 runs showed each 42 times.
BANNER_PREFIXES = ("GPU available:", "TPU available:", "HPU available:", "Seed set to", "LOCAL_RANK:")


class RepeatedBannerFilter(logging.Filter):
    """Lets each distinct start-up banner line through once per process (a new seed is a new line)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.getMessage())
        if not message.startswith(BANNER_PREFIXES):
            return True
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


_TIP_FILTER = LightningTipFilter()
_BANNER_FILTER = RepeatedBannerFilter()


def quiet_harmless_messages() -> None:
    """Install the filters above (idempotent). Called by the ``xmkd`` CLI before a Lightning job."""
    for pattern, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        for f in (_TIP_FILTER, _BANNER_FILTER):
            if f not in logger.filters:
                logger.addFilter(f)
