"""A miner whose start-up calibration ran under a passing load measures its speed again
(node/miner.py ``RECALIBRATE_S``). Found by the slow newcomer test
(tests/test_newcomer_multiproc.py): the newcomer calibrated while it repaired and replayed
its way to the tip on a loaded machine (871 ms a token), then declined every query as
"cannot-finish-in-time" for good, since only a served query updates the speed, and so never
earned the work that would give it LStake."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from ambient_p2p.core import miner_policy as mp
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.node import miner
from ambient_p2p.node.miner import RECALIBRATE_S, MinerOptions, MinerService

SLOW = mp.Speed(ms_per_prompt_token=75.0, ms_per_output_token=871.0)
FAST = mp.Speed(ms_per_prompt_token=2.0, ms_per_output_token=30.0)


def _service() -> MinerService:
    v: Any = SimpleNamespace(kp=Keypair.deterministic("recalibrate", 0))
    svc = MinerService(v, MinerOptions(), blobs=None)  # type: ignore[arg-type]
    svc.lm = object()  # type: ignore[assignment]
    svc.book = mp.MinerBook(mp.MinerConfig(b"m" * 32, 10, 800.0), v.kp.pubkey, SLOW, random.Random(1))
    return svc


def test_a_miner_that_declines_as_too_slow_measures_its_speed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def calibrate(lm: object) -> mp.Speed:
        calls.append(lm)
        return FAST

    monkeypatch.setattr(miner, "_calibrate", calibrate)
    svc = _service()
    book = svc.book
    assert book is not None
    measured = [trio.Event()]
    measure = svc._recalibrate

    async def recalibrate(lm: Any) -> None:  # the service's own, then a signal for the test
        await measure(lm)
        measured[0].set()

    svc._recalibrate = recalibrate  # type: ignore[method-assign]

    async def started_and_done() -> None:
        """The measurement was scheduled by this very call (synchronously) and has run."""
        assert svc.calibrated_at == trio.current_time()
        await measured[0].wait()  # a worker thread: the mock clock does not wait for it
        measured[0] = trio.Event()

    async def main() -> None:
        async with trio.open_nursery() as n:
            svc._maybe_recalibrate(n)
            await trio.sleep(RECALIBRATE_S + 1)
            svc._maybe_recalibrate(n)  # nothing declined yet: no reason to measure
            await trio.sleep(0.1)
            assert calls == [] and book.speed == SLOW
            book.refused["cannot-finish-in-time"] = 3
            book.memos[b"q" * 32] = mp.BidMemo(b"q" * 32, 10, b"s" * 32, 1, commit_sent=1, est_ms=1.0)
            svc._maybe_recalibrate(n)  # a bid in flight: its job may need the worker
            await trio.sleep(0.1)
            assert calls == []
            book.memos.clear()
            svc._maybe_recalibrate(n)
            await started_and_done()
            assert calls == [svc.lm] and book.speed == FAST and svc.recalibrations == 1
            book.speed = SLOW
            book.refused["cannot-finish-in-time"] = 9
            svc._maybe_recalibrate(n)  # declined again, but measured less than RECALIBRATE_S ago
            await trio.sleep(0.1)
            assert len(calls) == 1
            await trio.sleep(RECALIBRATE_S)
            svc._maybe_recalibrate(n)
            await started_and_done()
            assert len(calls) == 2 and book.speed == FAST

    trio.run(main, clock=MockClock(autojump_threshold=0))
