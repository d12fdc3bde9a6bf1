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


def test_publish_shreds_packs_interleaves_and_caps_each_message() -> None:
    from ambient_p2p.core.codec import decode
    from ambient_p2p.net.messages import ShredBatch
    from ambient_p2p.net.port import SHREDS_PER_GOSSIP_MESSAGE, publish_shreds

    sent: list[tuple[str, bytes]] = []

    async def publish(topic: str, data: bytes) -> None:
        sent.append((topic, data))

    a = [bytes([1, i % 256, i // 256]) for i in range(SHREDS_PER_GOSSIP_MESSAGE + 5)]
    b = [bytes([2, i, 0]) for i in range(3)]
    trio.run(publish_shreds, publish, [a, b])
    batches = [list(decode(d, expected=ShredBatch).shreds) for _t, d in sent]
    assert {t for t, _d in sent} == {"shreds"} and SHREDS_PER_GOSSIP_MESSAGE == 32
    assert batches == [a[:32], b, a[32:]]  # at most 32 a message, the variants interleaved
