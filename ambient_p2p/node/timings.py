"""Operation timings for ``/metrics`` (spec/rpc.md "Metrics"): cumulative histograms of how
long the node's worker-thread jobs take (shred insert, slot replay, block build, disk
writes, repair serving, cleanup), the miner's model runs and the RPC's history writes.

A plain bucketed counter rather than prometheus-client's ``Histogram``: the node runs
without the ``rpc`` extra (prometheus-client) too, and the doors' collector
(node/rpc/metrics.py) renders these at scrape time. Buckets are Prometheus' default
latency buckets extended to two minutes (a replay on a loaded machine, a model run).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")

#: Upper bounds of the buckets, seconds (ascending; +Inf is implicit).
BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                30.0, 60.0, 120.0)


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))  # last: above every bound
    sum_s: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.sum_s += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it), ending with ("+Inf", count)."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(BUCKETS_S, self.counts, strict=False):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", self.count))
        return out


class Timings:
    """Histograms by operation name; worker threads observe, the event loop reads (a lock)."""

    def __init__(self) -> None:
        self.ops: dict[str, Histogram] = {}
        self._lock = threading.Lock()

    def observe(self, op: str, seconds: float) -> None:
        with self._lock:
            h = self.ops.get(op)
            if h is None:
                h = self.ops[op] = Histogram()
            h.observe(max(0.0, seconds))

    def timed(self, op: str, fn: Callable[..., _T]) -> Callable[..., _T]:
        """``fn`` observed under ``op`` each time it runs (raising or not)."""

        def run(*args: Any) -> _T:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.observe(op, time.perf_counter() - t0)

        return run

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {op: {"buckets": h.cumulative(), "sum_s": h.sum_s, "count": h.count} for op, h in self.ops.items()}
