"""A Lightning Trainer for tests: CPU, no loggers, checkpoints, progress bar or model summary.

Import as ``from tests.trainers import quiet_trainer`` and pass what a test varies.
"""

from __future__ import annotations

import lightning.pytorch as pl

QUIET = dict(
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


def quiet_trainer(**kw) -> pl.Trainer:
    """``pl.Trainer(**QUIET, **kw)`` (``kw`` overrides)."""
    return pl.Trainer(**{**QUIET, **kw})
