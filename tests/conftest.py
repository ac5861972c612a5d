"""Shared fixtures: real sample files from ../shared/realdata, copied, never written in place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

REALDATA = Path(os.environ.get("XMKD_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))

# The suite shares two cores with itself; more threads only add contention.
torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def realdata_root() -> Path:
    """The read-only real-data folder; tests that need it skip (saying why) where it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(
            f"real sample data not found at {REALDATA} (set XMKD_REALDATA); only in the xmkd dev checkout"
        )
    return REALDATA


@pytest.fixture()
def realdata(realdata_root: Path, tmp_path: Path):
    """Copy a file or folder from the real-data folder into tmp_path and return the copy's path."""

    def copy(relative: str) -> Path:
        src = realdata_root / relative
        if not src.exists():
            pytest.skip(f"{src} is missing from the real-data folder")
        dst = tmp_path / "realdata" / relative
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        return dst

    return copy


@pytest.fixture()
def one_thread():
    """Tiny tensors on two cores: a second OpenMP thread only adds contention (up to ~20x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
