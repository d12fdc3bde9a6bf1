"""In-process network tests (several hosts inside one trio run on 127.0.0.1): host identity
and security, gossip delivery and rejection, the py-libp2p pitfalls our code works around
(each test first shows the library behaviour, then ours), and request/response."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import trio

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.net.gossip import BAN_REJECTS, GossipService, score_params, topic_name
from ambient_p2p.net.host import HostError, build_host, open_host, parse_peer_multiaddr, peer_id_of, pubkey_of_peer_id
from ambient_p2p.net.messages import PolOpenRequest, RepairRequest, make_standin_shred, seal_envelope
from ambient_p2p.net.reqresp import (
    PROTO_POL_OPEN,
    PROTO_REPAIR,
    PROTOCOLS,
    REPAIR,
    ReqRespError,
    ReqRespServer,
    ShredStore,
    encode_frame,
    pol_open_handler,
    repair_handler,
    request,
)
from tests.net_helpers import connect, raw_peer, run_trio, wait_until

CHAIN = "testnet"
TXS = topic_name(CHAIN, "txs")
KEYS = [Keypair.deterministic("inproc", i) for i in range(6)]


def test_host_identity_is_our_ed25519_key_and_security_is_noise_only() -> None:
    async def body() -> None:
        kp = KEYS[0]
        async with open_host(kp) as h:
            assert h.get_id() == peer_id_of(kp.pubkey)
            assert pubkey_of_peer_id(h.get_id()) == kp.pubkey
            assert h.get_id().to_base58().startswith("12D3KooW")
            offered = list(h.get_network().upgrader.security_multistream.transports)
            assert offered == ["/noise"]
            # a peer that only speaks plaintext cannot connect to us
            from libp2p import new_host
            from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

            from ambient_p2p.net.host import full_addrs, libp2p_keypair

            lkp = libp2p_keypair(KEYS[1])
            plain = new_host(key_pair=lkp, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(lkp)})
            import multiaddr

            async with plain.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                refused = False
                try:
                    with trio.fail_after(15):
                        await plain.connect(parse_peer_multiaddr(full_addrs(h)[0]))
                except Exception:  # noqa: BLE001 - any failure to connect is the expected outcome
                    refused = True
                assert refused
                assert plain.get_id() not in h.get_network().connections

    run_trio(body, 60)


def test_pitfall_default_security_offers_plaintext_and_secio() -> None:
    """py-libp2p's default new_host() accepts plaintext and secio: why we pass sec_opt."""
    from libp2p import new_host

    from ambient_p2p.net.host import libp2p_keypair

    default = new_host(key_pair=libp2p_keypair(KEYS[2]))
    offered = set(default.get_network().upgrader.security_multistream.transports)
    assert "/plaintext/2.0.0" in offered and "/secio/1.0.0" in offered
    ours = build_host(KEYS[2], ["/ip4/127.0.0.1/tcp/0"])
    assert set(ours.get_network().upgrader.security_multistream.transports) == {"/noise"}


def test_pitfall_listen_failure_is_swallowed_ours_raises() -> None:
    """py-libp2p prints a failed listen and runs with no address; open_host raises."""
    import socket

    import multiaddr

    from ambient_p2p.net.host import HostConfig, libp2p_keypair

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        addr = f"/ip4/127.0.0.1/tcp/{busy.getsockname()[1]}"

        async def library() -> int:
            from libp2p import new_host

            h = new_host(key_pair=libp2p_keypair(KEYS[3]))
            async with h.run(listen_addrs=[multiaddr.Multiaddr(addr)]):
                return len(h.get_transport_addrs())

        assert run_trio(library, 30) == 0  # no exception, no address

        async def ours() -> None:
            async with open_host(KEYS[3], HostConfig(listen=(addr,))):
                raise AssertionError("open_host must not yield on a failed listen")

        with pytest.raises(HostError, match="cannot listen"):
            run_trio(ours, 30)


def test_bad_listen_address_is_a_host_error() -> None:
    with pytest.raises(HostError):
        build_host(KEYS[0], ["/ip4/not-an-ip/tcp/1"])
    with pytest.raises(HostError):
        parse_peer_multiaddr("/ip4/127.0.0.1/tcp/9000")  # no /p2p/ part


async def _gossip_node(kp: Keypair, nursery: trio.Nursery, **kw: Any) -> Any:
    """Start host + GossipService inside ``nursery``; return (host, service)."""
    ready: Any = trio.Event()
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


def test_gossip_line_invalid_messages_are_rejected_not_forwarded_and_sender_banned() -> None:
    """adversary A -- honest B -- honest C. Every kind of invalid message A sends is
    rejected by B, never reaches C, and gets A banned; B -> C traffic keeps flowing."""

    async def body() -> None:
        async with trio.open_nursery() as n:
            hb, b = await _gossip_node(KEYS[1], n)
            hc, c = await _gossip_node(KEYS[2], n)
            await connect(hc, hb)
            async with raw_peer(KEYS[0], [TXS]) as a:
                await connect(a.host, hb)
                assert await wait_until(
                    lambda: len(b.router.mesh.get(TXS, ())) >= 2 and len(c.router.mesh.get(TXS, ())) >= 1, 15
                )
                # honest traffic first
                await b.publish("txs", b"honest-1")
                assert await wait_until(lambda: c.stats.delivered["txs"] == 1, 10)
                from ambient_p2p.core.codec import encode

                now = b.clock_ms()
                bad = [
                    b"\xa1\x00",  # malformed CBOR envelope
                    encode(seal_envelope(KEYS[3], TXS, b"x", now)),  # origin is not the sender
                    encode(seal_envelope(KEYS[0], TXS, b"y", now - 10 * 60_000)),  # stale
                    encode(seal_envelope(KEYS[0], topic_name(CHAIN, "votes"), b"z", now)),  # wrong topic
                ]

                env = seal_envelope(KEYS[0], TXS, b"w", now)
                bad.append(encode(dataclasses.replace(env, signature=bytes(64))))  # bad Ambient signature
                for data in bad:
                    await a.publish(TXS, data)
                assert await wait_until(lambda: sum(b.stats.rejected.values()) >= len(bad), 10)
                # scored down below the gossip threshold (P4: 10 per invalid message)
                # while still connected and not yet banned
                assert not b.is_banned(a.host.get_id())
                assert b.peer_score(a.host.get_id()) < score_params().gossip_threshold
                # a valid envelope under a forged libp2p signature: py-libp2p drops it
                # before validation and would not score it; we count it (pitfall 4)
                a.send_forged(hb.get_id(), TXS, encode(seal_envelope(KEYS[0], TXS, b"forged", b.clock_ms())))
                assert await wait_until(lambda: b.stats.rejected["bad-libp2p-signature"] >= 1, 10)
                for i in range(BAN_REJECTS):
                    await a.publish(TXS, b"junk-%d" % i)
                assert await wait_until(lambda: b.is_banned(a.host.get_id()), 10)
                assert await wait_until(lambda: a.host.get_id() not in hb.get_network().connections, 10)
                # nothing invalid reached C: it delivered only honest traffic, rejected nothing
                await b.publish("txs", b"honest-2")
                assert await wait_until(lambda: c.stats.delivered["txs"] == 2, 10)
                assert sum(c.stats.rejected.values()) == 0
                for reason in ("malformed", "origin-mismatch", "stale", "wrong-topic", "bad-signature"):
                    assert b.stats.rejected[reason] >= 1, (reason, b.stats.rejected)
                assert b.stats.bans == 1
            n.cancel_scope.cancel()

    run_trio(body, 90)


def test_pitfall_spam_protection_throttles_own_publishes() -> None:
    """py-libp2p's default spam protection (10 msgs/s per topic) applies to our own
    publishes; GossipService disables it, so a burst of 40 all arrive."""

    async def body() -> None:
        async with raw_peer(KEYS[0], ["t"], spam_protection_enabled=True) as x, raw_peer(KEYS[1], ["t"]) as y:
            await connect(y.host, x.host)
            assert await wait_until(lambda: len(x.router.mesh.get("t", ())) == 1, 15)
            sub = y.pubsub.subscribed_topics_receive["t"]
            for i in range(40):
                await x.publish("t", b"m%d" % i)
                await trio.sleep(0.005)
            got = 0
            with trio.move_on_after(3):
                while True:
                    await sub.get()
                    got += 1
            assert got <= 12, got  # the library throttled our own burst to ~10/s
        async with trio.open_nursery() as n:
            hx, gx = await _gossip_node(KEYS[2], n)
            hy, gy = await _gossip_node(KEYS[3], n)
            await connect(hy, hx)
            assert await wait_until(lambda: len(gx.router.mesh.get(TXS, ())) == 1, 15)
            for i in range(40):
                await gx.publish("txs", b"m%d" % i)
            assert await wait_until(lambda: gy.stats.delivered["txs"] == 40, 20), gy.stats.as_json()
            n.cancel_scope.cancel()

    run_trio(body, 90)


def test_pitfall_subscription_queue_drops_silently_ours_counts() -> None:
    """py-libp2p keeps 32 undelivered messages per subscription and drops the rest with
    only a log line; our delivery queue is sized by us and counts every drop."""

    async def body() -> None:
        async with raw_peer(KEYS[0], ["t"]) as x, raw_peer(KEYS[1], ["t"]) as y:
            await connect(y.host, x.host)
            assert await wait_until(lambda: len(x.router.mesh.get("t", ())) == 1, 15)
            for i in range(50):
                await x.publish("t", b"m%d" % i)
                await trio.sleep(0.01)
            await trio.sleep(1.0)
            sub = y.pubsub.subscribed_topics_receive["t"]
            buffered = sub.receive_channel.statistics().current_buffer_used
            assert buffered == 32  # 18 messages vanished without a counter
        async with trio.open_nursery() as n:
            hx, gx = await _gossip_node(KEYS[2], n)
            hy, gy = await _gossip_node(KEYS[3], n, queue_len=20)
            await connect(hy, hx)
            assert await wait_until(lambda: len(gx.router.mesh.get(TXS, ())) == 1, 15)
            for i in range(50):
                await gx.publish("txs", b"m%d" % i)
            assert await wait_until(lambda: gy.stats.delivered["txs"] + gy.stats.delivery_dropped["txs"] == 50, 20)
            assert gy.stats.delivered["txs"] == 20 and gy.stats.delivery_dropped["txs"] == 30
            n.cancel_scope.cancel()

    run_trio(body, 90)


def test_pitfall_default_heartbeat_is_120s() -> None:
    from libp2p.pubsub.gossipsub import GossipSub

    from ambient_p2p.net.gossip import HEARTBEAT_INTERVAL_S, make_router

    assert GossipSub(["/meshsub/1.1.0"], 6, 4, 12).heartbeat_interval == 120
    r = make_router()
    assert r.heartbeat_interval == HEARTBEAT_INTERVAL_S == 1
    assert r.spam_protection_enabled is False


def test_pitfall_seqno_starts_at_seconds_ours_survives_a_restart() -> None:
    """py-libp2p starts a publisher's sequence numbers at the time in *seconds* and counts one
    per message: a node that published more than one message a second before a restart
    reuses sequence numbers, which peers' gossipsub drops as equivocation (and penalises).
    Ours start at the time in nanoseconds (go-libp2p), so a restarted node is always ahead."""

    async def body() -> None:
        async with raw_peer(KEYS[0], ["t"]) as x:
            t0 = time.time()
            assert x.pubsub.counter <= int(t0) + 1  # py-libp2p's default: seconds
        async with trio.open_nursery() as n:
            _h, g1 = await _gossip_node(KEYS[1], n)
            for i in range(5):
                await g1.publish("txs", b"before restart %d" % i)
            last_before = g1.pubsub.counter
            assert last_before >= time.time_ns() - 60 * 10**9  # nanoseconds, not seconds
            n.cancel_scope.cancel()
        async with trio.open_nursery() as n:  # the same identity, restarted within the same second
            _h, g2 = await _gossip_node(KEYS[1], n)
            assert g2.pubsub.counter > last_before
            n.cancel_scope.cancel()

    run_trio(body, 60)


# -- request / response ----------------------------------------------------------------------
def test_repair_and_pol_open_request_response(monkeypatch: pytest.MonkeyPatch) -> None:
    # a small bucket so that the test can exhaust it faster than it refills
    monkeypatch.setitem(PROTOCOLS, PROTO_REPAIR, dataclasses.replace(REPAIR, rate_limit=(12.0, 0.2)))

    async def body() -> None:
        store = ShredStore()
        for slot in (5, 6, 7):
            for i in range(3):
                store.insert(make_standin_shred(slot, i, parent_offset=1))
        slow_gate = trio.Event()

        async def slow_pol(_peer: Any, req: PolOpenRequest) -> Any:
            if req.positions == (999,):
                await slow_gate.wait()  # never set: forces a client timeout
            return pol_open_handler(lambda c, p: [b"open-%d" % x for x in p] if c == bytes(32) else None)(_peer, req)

        async with open_host(KEYS[0]) as server, open_host(KEYS[1]) as client:
            srv = ReqRespServer(server, {PROTO_REPAIR: repair_handler(store), PROTO_POL_OPEN: slow_pol})
            await connect(client, server)
            sid = server.get_id()
            r = await request(client, sid, PROTO_REPAIR, RepairRequest(kind=0, slot=6, index=2, nonce=1))
            assert r.nonce == 1 and r.shreds == (make_standin_shred(6, 2, parent_offset=1),)
            r = await request(client, sid, PROTO_REPAIR, RepairRequest(kind=1, slot=6, index=0, nonce=2))
            assert [s[73:77] for s in r.shreds] == [(2).to_bytes(4, "little")]
            r = await request(client, sid, PROTO_REPAIR, RepairRequest(kind=2, slot=7, index=0, nonce=3))
            from ambient_p2p.net.messages import shred_key

            assert [shred_key(s)[0] for s in r.shreds] == [7, 6, 5]  # type: ignore[index]
            with pytest.raises(ReqRespError) as ei:
                await request(client, sid, PROTO_REPAIR, RepairRequest(kind=0, slot=99, index=0, nonce=4))
            assert ei.value.code == "not-found"
            p = await request(
                client, sid, PROTO_POL_OPEN, PolOpenRequest(commitment=bytes(32), positions=(3, 1), nonce=5)
            )
            assert p.openings == (b"open-3", b"open-1")
            with pytest.raises(ReqRespError) as ei:
                await request(
                    client, sid, PROTO_POL_OPEN, PolOpenRequest(commitment=b"\x01" * 32, positions=(1,), nonce=6)
                )
            assert ei.value.code == "not-found"
            with pytest.raises(ReqRespError) as ei:
                await request(
                    client,
                    sid,
                    PROTO_POL_OPEN,
                    PolOpenRequest(commitment=bytes(32), positions=(999,), nonce=7),
                    timeout=1.0,
                )
            assert ei.value.code == "timeout"

            # raw streams: oversized and malformed requests get clear error responses
            from libp2p.custom_types import TProtocol

            from ambient_p2p.core.codec import decode
            from ambient_p2p.net.reqresp import read_frame

            async def raw(data: bytes) -> Any:
                s = await client.new_stream(sid, [TProtocol(PROTO_REPAIR)])
                await s.write(data)
                out = decode(await read_frame(s, 4096))
                await s.close()
                return out

            e = await raw(encode_frame(b"x" * 5000))
            assert (e.code, e.nonce) == ("too-large", 0)
            e = await raw(encode_frame(b"\xa0"))
            assert e.code == "bad-request"
            # rate limit: the bucket empties, then requests are refused with rate-limited
            cap = int(PROTOCOLS[PROTO_REPAIR].rate_limit[0])
            codes = []
            for i in range(cap + 20):
                try:
                    await request(client, sid, PROTO_REPAIR, RepairRequest(kind=0, slot=5, index=0, nonce=100 + i))
                    codes.append("ok")
                except ReqRespError as exc:
                    codes.append(exc.code)
            assert "rate-limited" in codes and codes[0] == "ok"
            assert srv.stats.errors.get("rate-limited", 0) >= 1
            slow_gate.set()

    run_trio(body, 120)


def test_pitfall_publish_burst_drops_without_backpressure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without our publisher back-pressure a burst overflows py-libp2p's 32-RPC outbound
    queue (silently, in the library); with it, every message arrives and nothing drops."""
    import ambient_p2p.net.gossip as g

    async def burst(n: int, wait_s: float) -> tuple[int, int]:
        async with trio.open_nursery() as nursery:
            hx, gx = await _gossip_node(KEYS[4], nursery)
            hy, gy = await _gossip_node(KEYS[5], nursery)
            await connect(hy, hx)
            assert await wait_until(lambda: len(gx.router.mesh.get(TXS, ())) == 1, 15)
            for i in range(n):
                await gx.publish("txs", b"%d" % i + bytes(1200))
            await wait_until(lambda: gy.stats.delivered["txs"] == n, wait_s)
            out = (gy.stats.delivered["txs"], gx.router.dropped_rpcs)
            nursery.cancel_scope.cancel()
        return out

    delivered, dropped = run_trio(lambda: burst(200, 30), 90)
    assert (delivered, dropped) == (200, 0)
    monkeypatch.setattr(g, "OUTBOUND_HIGH_WATER", 10**9)  # no back-pressure
    delivered, dropped = run_trio(lambda: burst(200, 5), 90)
    assert dropped > 0 and delivered < 200


def test_pitfall_idontwant_sent_for_every_small_message() -> None:
    """py-libp2p answers every received message with an IDONTWANT RPC to each mesh peer
    (go-libp2p: only for messages >= 1 KiB), the peer that sent it included; ours only for
    messages >= 16 KiB and never to the forwarder or the originator, who have it (P14)."""
    from ambient_p2p.net.gossip import IDONTWANT_MIN_BYTES

    def count_idontwant(router: Any) -> list[Any]:
        sent: list[Any] = []
        orig = router.emit_idontwant

        async def counting(msg_ids: list[bytes], to_peer: Any) -> None:
            sent.append(to_peer)
            await orig(msg_ids, to_peer)

        router.emit_idontwant = counting
        return sent

    async def body() -> None:
        async with raw_peer(KEYS[0], ["t"]) as x, raw_peer(KEYS[1], ["t"]) as y:
            await connect(y.host, x.host)
            assert await wait_until(lambda: len(y.router.mesh.get("t", ())) == 1, 15)
            n = count_idontwant(y.router)
            for i in range(10):
                await x.publish("t", b"small-%d" % i)
            assert await wait_until(lambda: len(n) >= 10, 10), n
            assert set(n) == {x.host.get_id()}  # the library tells the sender it has them
        async with trio.open_nursery() as nursery:
            hx, gx = await _gossip_node(KEYS[2], nursery)
            hy, gy = await _gossip_node(KEYS[3], nursery)
            hz, gz = await _gossip_node(KEYS[4], nursery)
            await connect(hy, hx)
            await connect(hz, hy)  # a line x - y - z: y's mesh is {x, z}
            assert await wait_until(
                lambda: len(gy.router.mesh.get(TXS, ())) == 2 and len(gx.router.mesh.get(TXS, ())) == 1
                and len(gz.router.mesh.get(TXS, ())) == 1, 15
            )
            n = count_idontwant(gy.router)
            for i in range(10):
                await gx.publish("txs", b"small-%d" % i)
            assert await wait_until(lambda: gz.stats.delivered["txs"] == 10, 20), gz.stats.as_json()
            assert n == []
            await gx.publish("txs", bytes(IDONTWANT_MIN_BYTES))  # a large one still gets it,
            assert await wait_until(lambda: len(n) == 1, 10), n
            assert await wait_until(lambda: gz.stats.delivered["txs"] == 11, 20), gz.stats.as_json()
            assert n == [hz.get_id()]  # but only to z: not back to x, its forwarder and originator
            nursery.cancel_scope.cancel()

    run_trio(body, 90)


def test_signed_record_cache_is_per_host_and_follows_the_local_record() -> None:
    """The P9 cache of the outgoing signed peer record: every host sends its own record (a
    cache keyed by ``id(host)`` handed a new host a collected host's record), and a newer
    local record (identify issues one when the addresses change) replaces the cached one."""
    import gc

    import libp2p.pubsub.pubsub as ps
    from libp2p.peer.envelope import consume_envelope, seal_record
    from libp2p.peer.peer_record import PeerRecord

    for i in range(40):
        host = build_host(Keypair.deterministic("spr", i), ["/ip4/127.0.0.1/tcp/0"])
        env, _ = ps.env_to_send_in_RPC(host)
        _, rec = consume_envelope(env, "libp2p-peer-record")
        assert rec.peer_id == host.get_id(), f"host {i} sent another host's record"
        assert ps.env_to_send_in_RPC(host)[0] == env  # cached
        newer = seal_record(PeerRecord(host.get_id(), host.get_addrs()), host.get_private_key())
        host.get_peerstore().set_local_record(newer)
        assert ps.env_to_send_in_RPC(host)[0] == newer.marshal_envelope()
        del host, env
        gc.collect()
