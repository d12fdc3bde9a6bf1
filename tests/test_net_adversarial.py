"""Adversarial flood against a node process: >= 10,000 messages (malformed CBOR, bad
Ambient and libp2p signatures, oversized, stale, exact replays) in a bounded loop from a
peer in the test process, while honest traffic flows through the same node."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from ambient_p2p.core.codec import encode
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.devnet.localnet import Localnet
from ambient_p2p.net.gossip import TOPIC_LIMITS, topic_name
from ambient_p2p.net.messages import seal_envelope
from tests.net_helpers import raw_peer, run_trio, wait_until

pytestmark = pytest.mark.integration
FLOOD = 10_000
PER_RPC = 250


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _flood(node_addr: str, chain: str) -> dict[str, Any]:
    from ambient_p2p.net.host import parse_peer_multiaddr

    txs = topic_name(chain, "txs")
    kp = Keypair.deterministic("flooder", 0)

    async def body() -> dict[str, Any]:
        async with raw_peer(kp, [txs]) as a:
            info = parse_peer_multiaddr(node_addr)
            await a.host.connect(info)
            assert await wait_until(lambda: info.peer_id in a.pubsub.peer_queues, 15)
            now = int(time.time() * 1000)
            env = seal_envelope(kp, txs, b"valid", now)
            good = encode(env)
            kinds = [
                b"\xa1\x00",  # malformed CBOR
                encode(dataclasses.replace(env, signature=bytes(64))),  # bad Ambient signature
                b"\x00" * (TOPIC_LIMITS["txs"] + 1),  # oversized for the topic
                encode(seal_envelope(kp, txs, b"old", now - 3_600_000)),  # stale
                good,  # exact replay (after the first copy)
            ]
            sent = rpcs = pushed = 0
            deadline = trio.current_time() + 60
            while sent < FLOOD and trio.current_time() < deadline:
                # keep each RPC under py-libp2p's 1 MiB inbound limit (an RPC above it is
                # dropped whole and the stream reset, before any per-message validation)
                batch: list[bytes] = []
                size = 0
                while len(batch) < PER_RPC and sent + len(batch) < FLOOD:
                    m = kinds[(sent + len(batch)) % len(kinds)]
                    if size + len(m) > 900_000:
                        break
                    batch.append(m)
                    size += len(m) + 64
                forge = rpcs % 7 == 3  # every 7th RPC under a forged libp2p signature
                if a.send_raw(info.peer_id, txs, batch, forge=forge):
                    pushed += 1
                sent += len(batch)
                rpcs += 1
                await trio.sleep(0.02)
            await trio.sleep(3)
            return {
                "sent": sent,
                "rpcs": rpcs,
                "queued": pushed,
                "connected": info.peer_id in a.host.get_network().connections,
            }

    return dict(run_trio(body, 120))


def test_flood_is_rejected_sender_banned_honest_traffic_flows_memory_bounded(tmp_path: Path) -> None:
    with Localnet(tmp_path, 3) as net:
        assert net.wait_for(lambda: all(s["peers"] >= 2 for s in net.statuses()), 40)
        victim = net.nodes[1]
        rss0 = _vm_hwm_kib(victim.proc.pid)
        honest: dict[str, Any] = {}

        def publish_honest() -> None:
            honest.update(
                net.nodes[0].control(
                    {"cmd": "publish_many", "kind": "txs", "count": 150, "size": 500, "rate": 15}, timeout_s=120
                )
            )

        t = threading.Thread(target=publish_honest)
        t.start()
        res = _flood(victim.info()["addrs"][0], net.chain_id)
        t.join(120)
        assert honest.get("ok"), honest
        assert res["sent"] >= FLOOD, res
        # nodes 1 and 2: the 150 honest messages plus the flood's one *valid* envelope,
        # delivered once although the flooder replayed it ~2,000 times
        ok = net.wait_for(
            lambda: all(int(s["gossip"]["delivered"].get("txs", 0)) == 151 for s in net.statuses()[1:]), 60
        )
        assert ok, ([s["gossip"] for s in net.statuses()], res)
        st = victim.control({"cmd": "status"})
        g = st["gossip"]
        assert g["bans"] == 1 and not res["connected"], (g, res)
        assert sum(g["rejected"].values()) >= 8
        # no invalid flood message got through (151 = 150 honest + 1 valid)
        assert g["delivered"].get("txs", 0) == 151
        for other in (net.nodes[0], net.nodes[2]):
            o = other.control({"cmd": "status"})["gossip"]
            assert o["rejected_from"].get(st["peer_id"], 0) == 0  # the victim forwarded nothing bad
        rss1 = _vm_hwm_kib(victim.proc.pid)
        print(
            f"\nvictim peak RSS {rss0 / 1024:.1f} MiB before, {rss1 / 1024:.1f} MiB after the flood; rejects {g['rejected']}"
        )
        assert rss1 < 400 * 1024
