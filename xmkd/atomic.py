"""Atomic file writes: a reader, or a resume after a kill at any instant, sees either the previous
complete file or the new complete file, never half of one.

One mechanism for every file xmkd writes in place (results, run ids, checkpoints, feature and flow
files, generated media, dataset manifests): write a temporary file in the same folder (a rename is
atomic only within one filesystem), then ``os.replace`` it onto the target::

    with atomic_path(out / "features.npy") as tmp:
        np.save(tmp, array)          # or av.open(str(tmp), "w", format="mp4"), torch.save, ...
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "umask_file_mode"]


def umask_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process umask.

    ``tempfile.mkstemp`` creates 0600 files whatever the umask; a file renamed into place from one
    keeps that mode, and teammates on shared storage could not read the run's results.
    """
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entries (the rename itself) to disk where the filesystem allows it."""
    with contextlib.suppress(OSError):  # some filesystems (and Windows) cannot open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """A temporary path next to ``path`` (``.<name>.<random>.tmp``, mode as ``open`` would give),
    renamed onto ``path`` when the block exits cleanly and removed when it raises.

    ``fsync``: flush the file and the folder to disk before returning (checkpoints: a power cut
    must not leave a renamed but empty file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.fchmod(fd, umask_file_mode())
        os.close(fd)
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
