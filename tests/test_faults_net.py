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
            ha, _a = await _gossip_node(KEYS[0], n)
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


# -- blame: rejections count against whoever could have known ------------------------------


def _sealed(kp: Keypair, topic: str, payload: bytes, wallclock_ms: int) -> bytes:
    from ambient_p2p.core.codec import encode
    from ambient_p2p.net.messages import seal_envelope

    return encode(seal_envelope(kp, topic, payload, wallclock_ms))


def test_near_stale_messages_relayed_by_an_honest_node_do_not_get_it_banned() -> None:
    """attacker A -- honest B -- honest C, C's clock 10 s ahead of B's (or a 10 s backlog).
    A stamps messages just inside the freshness window: B accepts and relays them, they
    reach C stale. Scored against the forwarder (before), C banned honest B after
    BAN_REJECTS of them; staleness is nobody's fault (gossipsub's "ignore"): C drops them
    without charging B or lowering its score, and keeps B's traffic."""
    from ambient_p2p.net.gossip import BAN_REJECTS, FRESHNESS_WINDOW_MS
    from tests.net_helpers import raw_peer

    skew_ms = 10_000

    async def body() -> None:
        async with trio.open_nursery() as n:
            hb, b = await _gossip_node(KEYS[1], n)
            hc, c = await _gossip_node(KEYS[2], n, clock_ms=lambda: b.clock_ms() + skew_ms)
            await connect(hc, hb)
            async with raw_peer(KEYS[0], [TXS]) as a:
                await connect(a.host, hb)
                bid = hb.get_id()
                assert await wait_until(
                    lambda: len(b.router.mesh.get(TXS, ())) >= 2 and bid in c.router.mesh.get(TXS, ()), 15
                )
                count = 2 * BAN_REJECTS
                for i in range(count):
                    stamp = b.clock_ms() - FRESHNESS_WINDOW_MS + 3_000  # fresh at B, stale at C
                    await a.publish(TXS, _sealed(KEYS[0], TXS, b"near-stale-%d" % i, stamp))
                assert await wait_until(lambda: c.stats.rejected["stale"] >= count, 20), c.stats.as_json()
                assert b.stats.delivered["txs"] == count and sum(b.stats.rejected.values()) == 0
                assert c.reject_count(bid) == 0 and not c.is_banned(bid)
                assert c.stats.ignored_forwards >= count
                assert c.peer_score(bid) >= 0, c.peer_score(bid)
                await b.publish("txs", b"honest")
                assert await wait_until(lambda: c.stats.delivered["txs"] == 1, 15)
            n.cancel_scope.cancel()

    run_trio(body, 90)


def test_payload_rejects_count_against_the_originator_not_the_forwarder() -> None:
    """A publishes shreds for slots it does not lead; B cannot tell (it does not know the
    schedule) and relays them; C knows the leader and rejects them (not-leader). C charges
    A, the signed originator, and bans it after BAN_REJECTS although A never connected to
    it; B, which could not have checked, is not charged and stays connected."""
    from ambient_p2p.core.codec import encode
    from ambient_p2p.net.gossip import BAN_REJECTS, shreds_check
    from ambient_p2p.net.messages import ShredBatch, make_standin_shred
    from tests.net_helpers import raw_peer

    shreds = topic_name(CHAIN, "shreds")
    leader = KEYS[5].pubkey

    async def body() -> None:
        async with trio.open_nursery() as n:
            hb, b = await _gossip_node(KEYS[1], n)
            hc, c = await _gossip_node(KEYS[2], n, payload_checks={"shreds": shreds_check(lambda _s: leader)})
            await connect(hc, hb)
            async with raw_peer(KEYS[0], [shreds]) as a:
                await connect(a.host, hb)
                aid, bid = a.host.get_id(), hb.get_id()
                assert await wait_until(
                    lambda: aid in b.router.mesh.get(shreds, ()) and bid in c.router.mesh.get(shreds, ()), 15
                )
                for i in range(BAN_REJECTS + 2):  # counts decay: a couple more than the threshold
                    payload = encode(ShredBatch(shreds=(make_standin_shred(7, i, size=300),)))
                    await a.publish(shreds, _sealed(KEYS[0], shreds, payload, b.clock_ms()))
                assert await wait_until(lambda: c.stats.rejected["not-leader"] >= BAN_REJECTS, 20)
                assert await wait_until(lambda: c.is_banned(aid), 10), (c.reject_count(aid), c.stats.as_json())
                assert c.reject_count(bid) == 0 and not c.is_banned(bid) and c.peer_score(bid) >= 0
                assert aid not in hc.get_network().connections
                assert bid in hc.get_network().connections
            n.cancel_scope.cancel()

    run_trio(body, 90)


def test_blame_table() -> None:
    """Who a rejection counts against (spec/network.md 2.3 "Blame")."""
    from ambient_p2p.net.gossip import FORWARDER_PAYLOAD_REASONS, FORWARDER_REASONS, IGNORE_REASONS, blame

    assert not (IGNORE_REASONS & FORWARDER_REASONS) and not (IGNORE_REASONS & FORWARDER_PAYLOAD_REASONS)
    for r in ("stale", "future", "replay", "unknown-leader", "no-lstake"):
        assert blame(r) == (False, False), r
    for r in ("malformed", "bad-signature", "origin-mismatch", "too-large", "bad-libp2p-signature"):
        assert blame(r) == (True, False), r
    for r in ("bad-payload", "bad-pol-signature", "not-auction", "vote-bad-signature"):
        assert blame(r) == (True, True), r
    for r in ("not-leader", "bad-shred-signature", "some-future-state-dependent-reason"):
        assert blame(r) == (False, True), r


# -- payload checks: signed spam on logit-pool, auction and shreds is not relayed ----------


def _pol_messages() -> dict[str, bytes]:
    from ambient_p2p.core import crypto
    from ambient_p2p.core.codec import encode
    from ambient_p2p.core.messages import sign_message
    from ambient_p2p.core.pol import PolCommitment, PolVerdict

    cmt = PolCommitment(model_id=bytes(32), tier=1, vocab=64, top_k=8, temp_milli=0, sample_seed=bytes(32),
                        prompt_hash=bytes(32), output_hash=bytes(32), num_tokens=4, root=bytes(32),
                        miner=KEYS[0].pubkey, signature=crypto.ZERO_SIGNATURE)
    verdict = PolVerdict(cmt=cmt.hash(), validator=KEYS[0].pubkey, seed=bytes(32), positions=(1, 2), accept=True,
                         reason="ok", signature=crypto.ZERO_SIGNATURE)
    return {
        "valid-commitment": encode(sign_message(cmt, KEYS[0], "pol-commitment")),
        "valid-verdict": encode(sign_message(verdict, KEYS[0], "pol-verdict")),
        "unsigned-commitment": encode(cmt),
        "verdict-signed-by-another": encode(sign_message(verdict, KEYS[4], "pol-verdict")),
    }


def _auction_messages() -> dict[str, bytes]:
    from ambient_p2p.core.auction_tx import register_miner_transaction
    from ambient_p2p.ledger.producer import transfer_tx

    bh = bytes(range(32))
    good = register_miner_transaction(KEYS[0], bh)
    bad_sig = bytearray(good)
    bad_sig[1] ^= 0xFF  # first byte is the signature count; flip a signature byte
    return {
        "valid-auction-tx": good,
        "bad-signature": bytes(bad_sig),
        "transfer-not-auction": transfer_tx(KEYS[0], KEYS[1].pubkey, 5, bh),
        "garbage": b"\x01" + bytes(200),
    }


def test_signed_spam_on_logit_pool_auction_and_unscheduled_shreds_is_rejected_and_not_relayed() -> None:
    """Correctly signed envelopes carrying junk on logit-pool (60 KB of it was relayed
    network-wide), auction (7 KB) and shreds for a slot whose leader is not computable yet:
    B rejects each with its reason and relays only the well-formed ones to C. (Two
    spammers, A1 on logit-pool and A2 on auction and shreds, so that neither is banned
    before it has sent every case.)"""
    from ambient_p2p.core.codec import encode
    from ambient_p2p.net.gossip import shreds_check
    from ambient_p2p.net.messages import ShredBatch, make_standin_shred
    from tests.net_helpers import raw_peer

    pool, auction, shreds = (topic_name(CHAIN, k) for k in ("logit-pool", "auction", "shreds"))
    known_until = 100  # B's schedule covers slots below this; A2 leads them all

    async def body() -> None:
        async with trio.open_nursery() as n:
            hb, b = await _gossip_node(
                KEYS[1], n,
                payload_checks={"shreds": shreds_check(lambda s: KEYS[3].pubkey if 0 < s < known_until else None)},
            )
            hc, c = await _gossip_node(KEYS[2], n)
            await connect(hc, hb)
            async with raw_peer(KEYS[0], [pool]) as a1, raw_peer(KEYS[3], [auction, shreds]) as a2:
                await connect(a1.host, hb)
                await connect(a2.host, hb)
                assert await wait_until(
                    lambda: a1.host.get_id() in b.router.mesh.get(pool, ())
                    and all(a2.host.get_id() in b.router.mesh.get(t, ()) for t in (auction, shreds))
                    and all(hb.get_id() in c.router.mesh.get(t, ()) for t in (pool, auction, shreds)), 15
                )
                pol = _pol_messages()
                pool_sends: list[tuple[str, bytes, str | None]] = [
                    (pool, pol["valid-commitment"], None), (pool, pol["valid-verdict"], None),
                    (pool, pol["unsigned-commitment"], "bad-pol-signature"),
                    (pool, pol["verdict-signed-by-another"], "bad-pol-signature"),
                    (pool, b"\x07" * 60_000, "oversized"), (pool, b"\xa1\x00", "bad-payload"),
                    (pool, encode(ShredBatch(shreds=(make_standin_shred(1, 0, size=200),))), "bad-payload")]
                auc = _auction_messages()
                other_sends: list[tuple[str, bytes, str | None]] = [
                    (auction, auc["valid-auction-tx"], None), (auction, auc["bad-signature"], "bad-tx-signature"),
                    (auction, auc["transfer-not-auction"], "not-auction"),
                    (auction, auc["garbage"], "bad-transaction"), (auction, bytes(2000), "oversized"),
                    (shreds, encode(ShredBatch(shreds=(make_standin_shred(5, 0, size=300),))), None),
                    (shreds, encode(ShredBatch(shreds=(make_standin_shred(known_until + 7, 0, size=300),))),
                     "unknown-leader")]
                for peer, kp, sends in ((a1, KEYS[0], pool_sends), (a2, KEYS[3], other_sends)):
                    for topic, payload, _why in sends:
                        await peer.publish(topic, _sealed(kp, topic, payload, b.clock_ms()))
                expected: dict[str, int] = {}
                for _t, _p, why in pool_sends + other_sends:
                    if why is not None:
                        expected[why] = expected.get(why, 0) + 1
                assert await wait_until(lambda: all(b.stats.rejected[k] >= v for k, v in expected.items()), 20), (
                    b.stats.as_json())
                assert dict(b.stats.rejected) == expected
                good = {"logit-pool": 2, "auction": 1, "shreds": 1}
                assert await wait_until(lambda: all(c.stats.delivered[k] == v for k, v in good.items()), 20), (
                    c.stats.as_json())
                assert sum(c.stats.rejected.values()) == 0  # nothing invalid was relayed
            n.cancel_scope.cancel()

    run_trio(body, 120)
