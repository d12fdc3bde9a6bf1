"""``net/port.py`` ``request_all``: the repair round's fan-out (moved out of
node/services.py, issue 11). Bounded parallelism, each request's timeout passed on,
failures left out, responses in arrival order. Virtual time (``MockClock``), no sockets."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from ambient_p2p.net.port import request_all
from ambient_p2p.net.reqresp import ReqRespError


def test_request_all_bounds_parallelism_drops_failures_and_keeps_arrival_order() -> None:
    running, peak, seen, answered = 0, 0, [], []

    async def send(peer: Any, proto: str, req: Any, timeout_s: float) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        seen.append((peer, proto, timeout_s))
        try:
            await trio.sleep(req)  # the request says how long its answer takes
            if peer == "bad":
                raise ReqRespError("timeout", "no answer")
            answered.append((peer, req))
            return (peer, req)
        finally:
            running -= 1

    jobs = [("a", "p1", 3.0), ("b", "p2", 1.0), ("bad", "p1", 0.5), ("c", "p1", 2.0), ("d", "p2", 0.1)]
    out = trio.run(lambda: request_all(send, jobs, parallel=2, timeout_s=7.5),
                   clock=trio.testing.MockClock(autojump_threshold=0))
    assert out == answered and sorted(out) == [("a", 3.0), ("b", 1.0), ("c", 2.0), ("d", 0.1)]  # as they came
    assert peak == 2 and sorted(seen) == sorted((p, proto, 7.5) for p, proto, _r in jobs)


def test_request_all_of_nothing() -> None:
    async def send(peer: Any, proto: str, req: Any, timeout_s: float) -> Any:
        raise AssertionError("no request expected")

    assert trio.run(lambda: request_all(send, [], parallel=4, timeout_s=1.0)) == []
