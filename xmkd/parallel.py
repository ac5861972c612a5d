"""Process pools that are safe to start from a process that already ran torch, OpenCV or PyAV.

A plain ``fork`` copies a parent whose OpenMP / OpenCV thread pools are mid-flight, and the child
can deadlock on a lock one of those threads held (seen here: ``compute_flow_folder`` hung when the
test suite had run torch code first). ``forkserver`` forks workers from a small clean server
process instead, so the pool behaves the same whatever the parent did before.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` whose workers never inherit the parent's thread pools."""
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context(method))
