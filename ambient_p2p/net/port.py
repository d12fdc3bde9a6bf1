"""The networking node seen through a narrow port: publish on a gossip topic, ask one peer
(or many at once), list the connected peers. The validator and the blob service take any
object of this shape (``node/port.py`` ``NetPort``); :class:`NetNodePort` adapts a
:class:`~ambient_p2p.net.node.NetNode` to it (moved here from ``node/port.py``, issue 11:
it is network work, it imports only ``net`` and ``core``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..core.codec import encode
from ..core.leader_policy import gossip_batches
from .messages import ShredBatch
from .reqresp import ReqRespError, request

if TYPE_CHECKING:  # pragma: no cover
    from .node import NetNode

#: ``(peer, protocol id, request, timeout_s) -> response``, raising ``ReqRespError``
Request = Callable[[Any, str, Any, float], Awaitable[Any]]
#: Shreds per gossip message: one message must stay below Noise's 65,535-byte frame (a
#: larger one is several frames, which py-libp2p 0.8.1 lets concurrent writers interleave).
SHREDS_PER_GOSSIP_MESSAGE = 32


class NetNodePort:
    def __init__(self, node: NetNode) -> None:
        self.node = node

    async def publish(self, topic: str, data: bytes) -> None:
        if self.node.gossip is not None:
            await self.node.gossip.publish(topic, data)

    async def request(self, peer: Any, proto: str, req: Any, timeout_s: float) -> Any:
        assert self.node.host is not None
        return await request(self.node.host, peer, proto, req, timeout=timeout_s)

    def peers(self) -> list[Any]:
        host = self.node.host
        return [] if host is None else sorted(host.get_network().connections.keys(), key=str)

    def peer_label(self, peer: Any) -> str:
        from ..core.crypto import encode_address
        from .host import pubkey_of_peer_id

        pk = pubkey_of_peer_id(peer)
        return encode_address(pk) if pk else str(peer)


async def request_all(send: Request, jobs: Sequence[tuple[Any, str, Any]], *, parallel: int,
                      timeout_s: float) -> list[Any]:
    """Send each ``(peer, protocol, request)`` of ``jobs``, at most ``parallel`` at once,
    each bounded by ``timeout_s``; the responses in the order they arrived. A request that
    fails (``ReqRespError``: timeout, unavailable, an error answer) is left out: a repair
    round asks again in the next."""
    limiter = trio.CapacityLimiter(parallel)
    out: list[Any] = []

    async def one(peer: Any, proto: str, req: Any) -> None:
        async with limiter:
            try:
                out.append(await send(peer, proto, req, timeout_s))
            except ReqRespError:
                return

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(one, *job)
    return out


async def publish_shreds(publish: Callable[[str, bytes], Awaitable[None]], variants: Sequence[Sequence[bytes]]) -> None:
    """Gossip each variant's shreds on the ``shreds`` topic, ``SHREDS_PER_GOSSIP_MESSAGE``
    a ``ShredBatch``, the variants interleaved (``leader_policy.gossip_batches``; moved here
    from node/production.py, issue 11)."""
    for batch in gossip_batches(variants, SHREDS_PER_GOSSIP_MESSAGE):
        await publish("shreds", encode(ShredBatch(shreds=tuple(batch))))
