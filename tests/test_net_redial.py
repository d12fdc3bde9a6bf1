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


def test_discovery_dials_due_peers_in_parallel_and_one_peer_at_a_time() -> None:
    """Every due address is dialled in one round that lasts one dial timeout, not one per
    unreachable address (each dial into a partition hangs until its timeout); a peer's
    addresses go one after another and stop at the first that connects; an address whose
    backoff has not passed is not dialled."""
    from trio.testing import MockClock

    from ambient_p2p.net import node as netnode

    ids = [peer_id_of(Keypair.deterministic("redial-peer", i).pubkey).to_base58() for i in range(12)]
    n = netnode.NetNode(netnode.NodeConfig(keypair=KEYS[0], chain_id="t", print_status=False, target_peers=99))
    n.known = {f"/ip4/10.0.0.{i}/tcp/1/p2p/{p}": 0.0 for i, p in enumerate(ids[:10])}
    n.known["/ip4/10.0.1.0/tcp/1/p2p/" + ids[0]] = 0.0  # a second address of peer 0: reached first
    n.known["/ip4/10.0.0.11/tcp/1/p2p/" + ids[11]] = 50.0  # backing off
    dialled: list[str] = []
    live = {"now": 0, "max": 0}

    async def fake_dial(addr: str) -> bool:
        dialled.append(addr)
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        await trio.sleep(netnode.DIAL_TIMEOUT_S)  # unreachable: the dial times out
        live["now"] -= 1
        return addr.startswith("/ip4/10.0.0.0/")  # peer 0's first address connects

    n.dial = fake_dial  # type: ignore[method-assign]
    n._connected = lambda: []  # type: ignore[method-assign]

    async def main() -> float:
        t0 = trio.current_time()
        await n._dial_due(10.0)
        return trio.current_time() - t0

    took = trio.run(main, clock=MockClock(autojump_threshold=0))
    assert live["max"] == netnode.DIAL_PARALLEL  # 10 due peers, 8 at a time
    assert took == 2 * netnode.DIAL_TIMEOUT_S  # two waves, not 10 timeouts in a row
    assert len(dialled) == 10 and not any("10.0.0.11" in a or "10.0.1.0" in a for a in dialled)
