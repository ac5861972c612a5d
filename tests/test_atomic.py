"""xmkd.atomic: the one atomic-write mechanism (temporary file in the folder, then os.replace)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xmkd.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_the_target_appears_whole_and_no_temporary_remains(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "results.json"
    atomic_write_text(target, "old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # not yet replaced while the block runs
        assert tmp.parent == target.parent and tmp.name.startswith(".results.json.")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]


@pytest.mark.parametrize("fsync", [False, True])
def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path, fsync: bool) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target, fsync=fsync) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
