"""A Lightning Trainer for tests: CPU, no loggers, checkpoints, progress bar or model summary.

Import as ``from tests.trainers import quiet_trainer`` and pass what a test varies.
"""

from __future__ import annotations

import tempfile

import lightning.pytorch as pl

QUIET = dict(
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


def quiet_trainer(**kw) -> pl.Trainer:
    """``pl.Trainer(**QUIET, **kw)`` (``kw`` overrides). Without a ``default_root_dir`` the run writes
    (figures, say) into a fresh temporary folder, never into the checkout the tests run from."""
    return pl.Trainer(**{**QUIET, "default_root_dir": tempfile.mkdtemp(prefix="xmkd-test-"), **kw})
