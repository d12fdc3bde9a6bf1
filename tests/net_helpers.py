"""Shared helpers for the networking tests: in-process hosts, an adversarial raw
py-libp2p peer (no validators, can forge signatures), and a bounded trio runner."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.net.host import full_addrs, open_host, parse_peer_multiaddr


def run_trio(fn: Callable[[], Awaitable[Any]], timeout_s: float = 60.0) -> Any:
    """Run ``fn`` under trio with a hard deadline (a hung test fails, never hangs)."""

    async def main() -> Any:
        with trio.fail_after(timeout_s):
            return await fn()

    return trio.run(main)


async def connect(a: Any, b: Any) -> None:
    """Make ``a`` dial ``b``."""
    await a.connect(parse_peer_multiaddr(full_addrs(b)[0]))


async def wait_until(pred: Callable[[], bool], timeout_s: float = 10.0, step_s: float = 0.05) -> bool:
    with trio.move_on_after(timeout_s):
        while not pred():  # noqa: ASYNC110 - the predicates read library state that has no event
            await trio.sleep(step_s)
        return True
    return bool(pred())


class RawPeer:
    """A py-libp2p pubsub peer with no validators (it forwards anything) whose message
    signatures can be forged: what an attacker runs."""

    def __init__(self, host: Any, pubsub: Any, router: Any) -> None:
        self.host = host
        self.pubsub = pubsub
        self.router = router

    async def publish(self, topic: str, data: bytes) -> None:
        await self.pubsub.publish(topic, data)

    def send_raw(self, peer: Any, topic: str, datas: list[bytes], *, forge: bool = False) -> bool:
        """Send one RPC carrying one message per item of ``datas`` straight to ``peer``,
        bypassing our own seen-cache and validation (so exact replays go out too).
        ``forge`` signs with a key other than the one our peer id names."""
        from libp2p.pubsub.pb import rpc_pb2
        from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

        from ambient_p2p.net.host import libp2p_keypair

        key = libp2p_keypair(Keypair.deterministic("forger", 0)).private_key if forge else self.host.get_private_key()
        msgs = []
        for data in datas:
            msg = rpc_pb2.Message(
                data=data, topicIDs=[topic], from_id=self.host.get_id().to_bytes(), seqno=self.pubsub._next_seqno()
            )
            msg.signature = key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
            msgs.append(msg)
        queue = self.pubsub.peer_queues.get(peer)
        return bool(queue is not None and queue.push(rpc_pb2.RPC(publish=msgs)))

    def send_forged(self, peer: Any, topic: str, data: bytes) -> None:
        """Send ``data`` straight to ``peer`` as a message from us whose libp2p signature is
        made with a different key (our own push_msg would drop it, so bypass it)."""
        from libp2p.pubsub.pb import rpc_pb2
        from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

        from ambient_p2p.net.host import libp2p_keypair

        msg = rpc_pb2.Message(
            data=data, topicIDs=[topic], from_id=self.host.get_id().to_bytes(), seqno=self.pubsub._next_seqno()
        )
        wrong = libp2p_keypair(Keypair.deterministic("forger", 0)).private_key
        msg.signature = wrong.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
        msg.key = self.host.get_public_key().serialize()
        self.router.send_rpc(peer, rpc_pb2.RPC(publish=[msg]))


@contextlib.asynccontextmanager
async def raw_peer(kp: Keypair, topics: list[str], **router_kw: Any) -> AsyncIterator[RawPeer]:
    from libp2p.pubsub.gossipsub import GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.tools.anyio_service import background_trio_service

    kw: dict[str, Any] = {"heartbeat_interval": 1, "spam_protection_enabled": False}
    kw.update(router_kw)
    async with open_host(kp) as host:
        router = GossipSub(["/meshsub/1.2.0", "/meshsub/1.1.0"], 6, 4, 12, **kw)
        pubsub = Pubsub(host, router, strict_signing=True)
        async with background_trio_service(pubsub), background_trio_service(router):
            await pubsub.wait_until_ready()
            for t in topics:
                await pubsub.subscribe(t)
            yield RawPeer(host, pubsub, router)
