"""Interop with another implementation: a js-libp2p node (libp2p 3, @libp2p/gossipsub 17,
Noise, Yamux; see interop_js/) joins a two-node Ambient network over TCP, receives gossip
published by the node it did not dial, publishes envelopes that our validators accept, and one with a
broken Ambient signature that they reject and do not forward.

Needs `node` (>= 20) and npm access to install interop_js/package-lock.json (npm ci)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from ambient_p2p.devnet.localnet import Localnet

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "interop_js"
pytestmark = pytest.mark.integration


def _npm_ci() -> None:
    if (JS / "node_modules" / "libp2p").exists():
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm are not installed")
def test_js_libp2p_gossipsub_peer_interoperates(tmp_path: Path) -> None:
    _npm_ci()
    with Localnet(tmp_path, 2) as net:
        assert net.wait_for(lambda: all(s["peers"] >= 1 for s in net.statuses()), 30)
        addr = net.nodes[1].info()["addrs"][0]
        proc = subprocess.Popen(
            ["node", "--import", str(JS / "polyfill.mjs"), str(JS / "peer.mjs"), addr, net.chain_id, "3", "25"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        events: list[dict[str, Any]] = []
        other: list[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    other.append(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:

            def saw(kind: str, n: int = 1) -> bool:
                return sum(e.get("event") == kind for e in events) >= n

            assert net.wait_for(lambda: saw("published-bad"), 40, 0.2), (events, other[-20:])
            # our node 0 publishes; the JS peer is connected to node 1 only
            net.nodes[0].control({"cmd": "publish_many", "kind": "txs", "count": 3, "size": 40, "rate": 10})
            assert net.wait_for(lambda: saw("recv", 3), 20, 0.2), (events, other[-20:])
            st = [n.control({"cmd": "status"}) for n in net.nodes]
            js_id = next(e["peer_id"] for e in events if e.get("event") == "started")
            # node 1 validated and delivered the JS peer's 3 envelopes, rejected the bad one
            assert st[1]["gossip"]["delivered"].get("txs", 0) == 3 + 3, st[1]["gossip"]
            assert st[1]["gossip"]["rejected"] == {"bad-signature": 1}
            assert st[1]["gossip"]["rejected_from"] == {js_id: 1}
            # node 0 got the JS messages too (relayed by node 1, or directly if the JS peer
            # dialed it after learning its address), and node 1 forwarded nothing invalid
            assert net.wait_for(lambda: net.nodes[0].control({"cmd": "status"})["gossip"]["delivered"].get("txs", 0) == 3, 10)
            node1_id = net.nodes[1].info()["peer_id"]
            assert set(net.nodes[0].control({"cmd": "status"})["gossip"]["rejected_from"]) <= {js_id}
            assert node1_id not in net.nodes[0].control({"cmd": "status"})["gossip"]["rejected_from"]
            # and the JS peer decoded nothing but our envelopes (type 0x0200, canonical CBOR)
            for e in events:
                if e.get("event") == "recv":
                    assert e["data"].startswith("83190200")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            reader.join(5)
