"""Process-pool PoH verification (the shell side of :func:`ambient_p2p.core.poh.verify_entries`).

sha256 chains hold the GIL in CPython's hashlib for 32-byte inputs (too small to release
it), so threads do not help; processes do. Entries are independent given their
predecessor's hash, so a slot's entries split into ``jobs`` contiguous chunks, one per
worker, and the lowest failing index wins (spec/poh.md, "Parallel verification").
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType
from typing import Self

from ..core.poh import Entry, verify_entries

#: Below this many hashes in a slot the pickling round trip costs more than it saves.
MIN_HASHES_FOR_POOL = 200_000
#: How often a pool worker checks that the process that started it still lives.
PARENT_CHECK_INTERVAL_S = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: the worker exits once ``parent_pid`` is no longer its parent. A
    worker blocked on its task queue does not notice a parent killed with SIGKILL (the
    queue's other end stays open in its siblings), so without this a crashed or killed
    node leaves its pool workers running for ever."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_INTERVAL_S)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class PohVerifier:
    """``with PohVerifier(jobs) as v: bad = v.verify(start_hash, entries)``."""

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Self:
        if self.jobs > 1:
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, initializer=exit_with_parent,
                                             initargs=(os.getpid(),))
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def verify(self, start_hash: bytes, entries: Sequence[Entry], *, force_pool: bool = False) -> int | None:
        total = sum(e.num_hashes for e in entries)
        if self._pool is None or (total < MIN_HASHES_FOR_POOL and not force_pool):
            return verify_entries(start_hash, entries)
        return verify_entries(start_hash, entries, map_fn=self._pool.map, chunks=self.jobs)
