"""Faults a peer can cause (issue 16, "a node never dies of a peer"): in-process gossip
nodes on 127.0.0.1 (real py-libp2p hosts, real signatures), each test first driving the
exact interleaving or message pattern that hurt the node, then checking ours survives it."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
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


# -- the control socket ---------------------------------------------------------------------

BAD_CONTROL_REQUESTS: list[tuple[bytes, str]] = [
    (b'{"cmd": "has_shred", "slot": -1, "index": 0}', "slot must be in"),
    (b'{"cmd": "has_shred", "slot": 1180591620717411303424, "index": 0}', "out of range"),
    (b'{"cmd": "has_shred", "slot": 1, "index": 4294967296}', "index must be in"),
    (b'{"cmd": "has_shred", "slot": "1", "index": 0}', "slot must be an integer"),
    (b'{"cmd": "has_shred", "slot": true, "index": 0}', "slot must be an integer"),
    (b'{"cmd": "has_shred", "slot": 1}', "has_shred needs index"),
    (b'{"cmd": "slot_info", "slot": -1}', "slot must be in"),
    (b'{"cmd": "slot_info", "slot": 1180591620717411303424}', "out of range"),
    (b'{"cmd": "repair", "peer": "x", "slot": 1, "kind": 300}', "kind must be in"),
    (b'{"cmd": "publish", "kind": "txs", "payload_hex": "zz"}', "hex"),
    (b'{"cmd": "publish_many", "kind": "txs", "rate": NaN}', "NaN"),
    (b'{"cmd": "publish_many", "kind": "txs", "count": 1, "size": -5}', "size must be in"),
    (b"[" * 100_000 + b"]" * 100_000, "deeper than"),
    (b'{"cmd": "status", "x": ' + b"{" * 50_000 + b"}" * 50_000 + b"}", "deeper than"),
    (b"[1, 2]", "JSON object"),
    (b'{"cmd": 5}', "'cmd'"),
    (b'{"cmd": "status"', "not JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b"", "'cmd'"),
]


def test_control_socket_answers_every_bad_request_and_the_node_lives(tmp_path: Path) -> None:
    """Each request of BAD_CONTROL_REQUESTS once killed the node or would reach code that
    raises on it; every one is answered ok=false with a reason over the real socket, and the
    node answers status afterwards."""
    from ambient_p2p.net.node import CONTROL_SOCKET, NetNode, NodeConfig

    def ask(raw: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(tmp_path / CONTROL_SOCKET))
            s.sendall(raw + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        out = json.loads(buf)
        assert isinstance(out, dict)
        return out

    async def body() -> None:
        node = NetNode(NodeConfig(keypair=KEYS[3], chain_id=CHAIN, data_dir=tmp_path, print_status=False))
        async with trio.open_nursery() as n:
            await n.start(node.run)
            for raw, why in BAD_CONTROL_REQUESTS:
                r = await trio.to_thread.run_sync(ask, raw)
                assert r["ok"] is False and why in r["error"], (raw[:80], r)
            good = await trio.to_thread.run_sync(ask, b'{"cmd": "has_shred", "slot": 7, "index": 0}')
            assert good == {"ok": True, "has": False}
            assert (await trio.to_thread.run_sync(ask, b'{"cmd": "status"}'))["ok"]
            n.cancel_scope.cancel()

    run_trio(body, 120)


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a": "[[[[[[[[[[[[", "cmd": "x"}'])
def test_json_depth_scan_counts_brackets_outside_strings_only(raw: bytes) -> None:
    from ambient_p2p.net.control import CONTROL_MAX_DEPTH, json_depth_exceeds

    assert json_depth_exceeds(raw, CONTROL_MAX_DEPTH) == raw.startswith(b"[")


def test_control_request_checker_accepts_what_the_tools_send() -> None:
    from ambient_p2p.net.control import check_control_request

    for req in (
        {"cmd": "status"},
        {"cmd": "chain", "from": 12},
        {"cmd": "slot_info", "slot": 2**63 - 1},
        {"cmd": "publish_many", "kind": "shreds", "count": 2, "per_batch": 4, "slot": 42, "size": 1232},
        {"cmd": "publish_many", "kind": "txs", "count": 3, "size": 40, "rate": 1.5},
        {"cmd": "repair", "peer": "12D3KooW", "slot": 43, "index": 3},
        {"cmd": "submit_tx", "tx_hex": "00ff"},
    ):
        assert check_control_request(req) is req
