"""Issue-5 acceptance run (slow): 6 node processes started with `join` off one bootstrap;
1,000 messages published round-robin by every node; each must reach all other nodes,
with p99 delivery latency under 2 s on every node."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from ambient_p2p.devnet.localnet import Localnet

NODES = 6
TOTAL = 1000


@pytest.mark.slow
@pytest.mark.integration
def test_six_nodes_thousand_messages_p99_under_2s(tmp_path: Path) -> None:
    per_node = TOTAL // NODES
    counts = [per_node + (1 if i < TOTAL % NODES else 0) for i in range(NODES)]
    with Localnet(tmp_path, NODES) as net:
        assert net.wait_for(lambda: all(s["peers"] >= 3 for s in net.statuses()), 60), [
            s["peers"] for s in net.statuses()
        ]
        results: list[dict[str, Any]] = [{} for _ in range(NODES)]

        def pub(i: int) -> None:
            # 1 msg/s per node (6 msgs/s network-wide). Six py-libp2p processes on a shared
            # 2-CPU machine saturate near 15 msgs/s network-wide (every node receives each
            # message from ~5 mesh peers); at 48 msgs/s a probe saw outbound drops and 4 %
            # loss, at 15 msgs/s p99 was ~11 s, at 6 msgs/s p99 was ~0.7 s.
            results[i] = net.nodes[i].control(
                {"cmd": "publish_many", "kind": "txs", "count": counts[i], "size": 256, "rate": 1.0}, timeout_s=400
            )

        threads = [threading.Thread(target=pub, args=(i,)) for i in range(NODES)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(400)
        assert all(r.get("ok") for r in results), results

        def done() -> bool:
            return all(
                int(s["gossip"]["delivered"].get("txs", 0)) == TOTAL - counts[i] for i, s in enumerate(net.statuses())
            )

        assert net.wait_for(done, 120), [s["gossip"]["delivered"] for s in net.statuses()]
        st = net.statuses()
        p99 = [s["latency"]["txs"]["p99_ms"] for s in st]
        p50 = [s["latency"]["txs"]["p50_ms"] for s in st]
        print(f"\np50 ms per node {p50}; p99 ms per node {p99}")
        assert max(p99) < 2000, p99
        assert all(sum(s["gossip"]["rejected"].values()) == 0 for s in st)
