"""Redialling a peer after it was unreachable (issue 16: reconnects after a partition heal
took ~18 s in the netns fault suite). The py-libp2p pitfall first, then ours: two real
hosts in one trio run on 127.0.0.1."""

from __future__ import annotations

import socket

import trio

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.net.host import HostConfig, connect_now, open_host, parse_peer_multiaddr, peer_id_of
from tests.net_helpers import run_trio

KEYS = [Keypair.deterministic("redial", i) for i in range(2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pitfall_a_failed_dial_blocks_the_peer_for_60s_ours_redials_at_once() -> None:
    """py-libp2p's swarm refuses to dial a peer for 60 s after a dial to it failed on every
    address (its negative cache), without trying: a peer that came back (a healed
    partition, a restart) stays unreachable from here until the block expires.
    ``connect_now`` lifts the block, so the next dial reaches it."""
    port = _free_port()
    addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(KEYS[1].pubkey).to_base58()}"
    info = parse_peer_multiaddr(addr)

    async def body() -> None:
        async with open_host(KEYS[0]) as a:
            failed = False
            try:
                with trio.fail_after(10):
                    await a.connect(info)  # nobody listens yet: refused
            except Exception:  # noqa: BLE001 - py-libp2p raises several kinds here
                failed = True
            assert failed
            async with open_host(KEYS[1], HostConfig(listen=[f"/ip4/127.0.0.1/tcp/{port}"])):
                # the library: the peer is up, but the dial fails at once on the cached failure
                blocked = ""
                try:
                    with trio.fail_after(10):
                        await a.connect(info)
                except Exception as exc:  # noqa: BLE001
                    blocked = f"{exc} {exc.__cause__}"
                assert "negative cache" in blocked, blocked
                assert info.peer_id not in a.get_network().connections
                # ours: the block is lifted and the dial goes out
                with trio.fail_after(10):
                    await connect_now(a, info)
                assert info.peer_id in a.get_network().connections

    run_trio(body, timeout_s=60)
