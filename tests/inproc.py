"""In-process validators on virtual time, shared by the node tests (tests/test_node.py,
tests/test_schedule_fork.py): the test identities and genesis, an in-process network for
the validators' ports, a cluster of loaded validators on one trio clock, and the check
that every node rooted the same chain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.messages import Genesis
from ambient_p2p.devnet.genesis import localnet_genesis
from ambient_p2p.node.clock import Clock
from ambient_p2p.node.validator import Validator

KEYS = [Keypair.deterministic("test-node", i) for i in range(4)]


def node_genesis(n: int = 4, **kw: int) -> Genesis:
    """A localnet genesis over the first ``n`` of :data:`KEYS` (20 hashes per tick,
    32-slot epochs unless given)."""
    kw.setdefault("hashes_per_tick", 20)
    kw.setdefault("slots_per_epoch", 32)
    return localnet_genesis("nodetest", [k.pubkey for k in KEYS[:n]], creation_time_s=0, **kw)


def trio_clock() -> Clock:
    """The validator clock that follows trio's (a ``MockClock`` in these tests)."""
    return Clock.fixed(lambda: int(trio.current_time() * 1000))


def loaded_validator(kp: Keypair, genesis: Genesis, data_dir: Path) -> Validator:
    """A validator loaded from ``data_dir`` with its heavy work inline (a worker thread
    would let the mock clock jump while it runs), then put on :func:`trio_clock`."""
    data_dir.mkdir(exist_ok=True)
    v = Validator(kp, genesis, data_dir, clock=Clock.fixed(lambda: 0), offload=False)
    v.load()
    v.clock = trio_clock()
    return v


class FakeNet:
    """In-process network for validators' ports: publish delivers to every other node
    through its gossip payload checks; requests call the peer's handlers directly."""

    def __init__(self) -> None:
        self.nodes: dict[str, Validator] = {}
        self.cut: set[str] = set()  # nodes whose messages (both ways) are dropped

    def port(self, name: str) -> Any:
        net = self

        class Port:
            async def publish(self, topic: str, data: bytes) -> None:
                from ambient_p2p.net.gossip import Delivery
                from ambient_p2p.net.messages import seal_envelope

                v = net.nodes[name]
                env = seal_envelope(v.kp, topic, data, 0)
                for other, w in net.nodes.items():
                    if other == name or {name, other} & net.cut:
                        continue
                    if w.payload_checks()[topic](env) is None:
                        w.on_delivery(Delivery(topic, env, name, 0))

            async def request(self, peer: str, proto: str, req: Any, timeout_s: float) -> Any:
                from ambient_p2p.net.reqresp import PROTO_REPAIR, ReqRespError, repair_handler

                if {name, peer} & net.cut:
                    raise ReqRespError("timeout", "cut")
                w = net.nodes[peer]
                h = repair_handler(w.store) if proto == PROTO_REPAIR else w.reqresp_handlers()[proto]
                out = h(None, req)
                return await out if hasattr(out, "__await__") else out

            def peers(self) -> list[str]:
                return [] if name in net.cut else [p for p in net.nodes if p != name and p not in net.cut]

            def peer_label(self, peer: str) -> str:
                return peer

        return Port()

    def close(self) -> None:
        for v in self.nodes.values():
            v.close()


def inproc_cluster(tmp_path: Path, genesis: Genesis, keys: list[Keypair] = KEYS) -> FakeNet:
    """One loaded validator per key (``v0``, ``v1``, ...) under ``tmp_path``, each with a
    port on one :class:`FakeNet`; run them with ``node.services.run_services`` under a
    ``MockClock`` and ``close()`` the net afterwards."""
    net = FakeNet()
    for i, k in enumerate(keys):
        v = loaded_validator(k, genesis, tmp_path / f"v{i}")
        v.port = net.port(f"v{i}")
        net.nodes[f"v{i}"] = v
    return net


def run_cluster(net: FakeNet, script: Callable[[], Awaitable[None]]) -> None:
    """Run every node's services (``node.services.run_services``) on one ``MockClock`` while
    ``script`` runs (it sleeps in virtual time, cuts and heals the net, reads status); the
    services are cancelled when it returns."""
    from trio.testing import MockClock

    from ambient_p2p.node.services import run_services

    async def main() -> None:
        async with trio.open_nursery() as n:
            for v in net.nodes.values():
                n.start_soon(run_services, v)
            await script()
            n.cancel_scope.cancel()

    trio.run(main, clock=MockClock(autojump_threshold=0))


def statuses(net: FakeNet) -> dict[str, dict[str, Any]]:
    """Every node's ``consensus`` status, by name."""
    return {name: v.status()["consensus"] for name, v in net.nodes.items()}


def rooted_chains(nodes: list[Validator]) -> list[dict[int, bytes]]:
    """Each node's stored roots above genesis, slot -> bank hash."""
    out = []
    for v in nodes:
        chain = {}
        for r in v.bs.roots()[1:]:
            rec = v.bs.bank_hash(r)
            assert rec is not None, (v.kp.pubkey.hex()[:8], r)
            chain[r] = rec.bank_hash
        out.append(chain)
    return out


def assert_one_rooted_chain(chains: list[dict[int, bytes]]) -> int:
    """Every node rooted the same chain up to the lowest node's highest root (returned)."""
    top = min(max(c) for c in chains)
    common = {s: h for s, h in chains[0].items() if s <= top}
    assert all({s: h for s, h in c.items() if s <= top} == common for c in chains), top
    return top
