"""Faults a peer can cause (issue 16, "a node never dies of a peer"): in-process gossip
nodes on 127.0.0.1 (real py-libp2p hosts, real signatures), each test first driving the
exact interleaving or message pattern that hurt the node, then checking ours survives it."""

from __future__ import annotations

from typing import Any

import trio

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.net.gossip import GossipService, topic_name
from ambient_p2p.net.host import open_host
from tests.net_helpers import connect, run_trio, wait_until

CHAIN = "testnet"
TXS = topic_name(CHAIN, "txs")
KEYS = [Keypair.deterministic("faults", i) for i in range(6)]


async def _gossip_node(kp: Keypair, nursery: trio.Nursery, **kw: Any) -> tuple[Any, GossipService]:
    """Start host + GossipService inside ``nursery``; return (host, service)."""
    ready = trio.Event()
    box: dict[str, Any] = {}

    async def run() -> None:
        async with open_host(kp) as h:
            svc = GossipService(h, kp, CHAIN, **kw)
            async with svc.run():
                box["h"], box["s"] = h, svc
                ready.set()
                await trio.sleep_forever()

    nursery.start_soon(run)
    await ready.wait()
    return box["h"], box["s"]


def test_ban_while_the_connection_dies_does_not_kill_the_node() -> None:
    """py-libp2p's blacklist teardown resets the peer's stream and then deletes the peer;
    when the connection's dead-peer handler runs during that reset (our ban's own disconnect,
    or the peer hanging up: six crashes seen on localnets), the delete raised KeyError and
    the pubsub service, and with it the node, died. Drive exactly that interleaving."""

    async def body() -> None:
        async with trio.open_nursery() as n:
            hb, b = await _gossip_node(KEYS[1], n)
            hc, c = await _gossip_node(KEYS[2], n)
            ha, a = await _gossip_node(KEYS[0], n)
            await connect(ha, hb)
            await connect(hc, hb)
            aid = ha.get_id()
            assert await wait_until(lambda: aid in b.pubsub.peers and hc.get_id() in b.pubsub.peers, 15)
            stream = b.pubsub.peers[aid]
            real_reset = stream.reset

            async def reset_while_peer_dies() -> None:
                b.pubsub._handle_dead_peer(aid)  # the dead-peer handler wins the race
                await real_reset()

            stream.reset = reset_while_peer_dies
            b.ban(aid)
            assert await wait_until(lambda: aid not in hb.get_network().connections, 10)
            assert aid not in b.pubsub.peers and aid not in b.pubsub.peer_queues
            # b is alive and still gossips with c
            assert b.pubsub.manager.is_running
            await b.publish("txs", b"after-ban")
            assert await wait_until(lambda: c.stats.delivered["txs"] == 1, 15)
            n.cancel_scope.cancel()

    run_trio(body, 90)
