"""The gossip validation rules (sans-IO EnvelopeChecker), one test per reject reason,
plus topic naming and the token bucket."""

from __future__ import annotations

import dataclasses

import pytest

from ambient_p2p.core.codec import encode
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.net.gossip import (
    FRESHNESS_WINDOW_MS,
    FUTURE_SKEW_MS,
    TOPIC_KINDS,
    TOPIC_LIMITS,
    EnvelopeChecker,
    kind_of_topic,
    message_id,
    shreds_check,
    topic_name,
)
from ambient_p2p.net.messages import ShredBatch, make_standin_shred, seal_envelope
from ambient_p2p.net.reqresp import TokenBucket

A = Keypair.deterministic("rules", 0)
B = Keypair.deterministic("rules", 1)
NOW = 1_700_000_000_000
TXS = topic_name("testnet", "txs")


def env_bytes(kp: Keypair = A, topic: str = TXS, payload: bytes = b"p", t: int = NOW) -> bytes:
    return encode(seal_envelope(kp, topic, payload, t))


def checker(**checks: object) -> EnvelopeChecker:
    c = EnvelopeChecker("testnet")
    c.payload_checks.update({"shreds": shreds_check()})
    c.payload_checks.update(checks)  # type: ignore[arg-type]
    return c


def test_topic_names() -> None:
    assert [topic_name("c1", k) for k in TOPIC_KINDS] == [
        "/ambient/c1/shreds/1",
        "/ambient/c1/votes/1",
        "/ambient/c1/logit-pool/1",
        "/ambient/c1/auction/1",
        "/ambient/c1/txs/1",
        "/ambient/c1/stages/1",
    ]
    assert kind_of_topic("c1", "/ambient/c1/votes/1") == "votes"
    assert kind_of_topic("c1", "/ambient/c2/votes/1") is None
    assert kind_of_topic("c1", "/ambient/c1/other/1") is None
    with pytest.raises(ValueError, match='unknown topic kind'):
        topic_name("c1", "other")


def test_accepts_valid_and_message_id_is_content_hash() -> None:
    data = env_bytes()
    reason, env = checker().check(TXS, data, A.pubkey, NOW)
    assert reason is None and env is not None and env.payload == b"p"
    assert message_id(data) == message_id(bytes(data)) != message_id(env_bytes(payload=b"q"))


def test_rejects_each_rule() -> None:
    c = checker()
    assert c.check(TXS, b"\xff" * 10, A.pubkey, NOW)[0] == "malformed"
    assert c.check(TXS, b"x" * (TOPIC_LIMITS["txs"] + 1), A.pubkey, NOW)[0] == "too-large"
    assert c.check(topic_name("testnet", "votes"), env_bytes(), A.pubkey, NOW)[0] == "wrong-topic"
    assert c.check(TXS, env_bytes(), B.pubkey, NOW)[0] == "origin-mismatch"
    assert c.check(TXS, env_bytes(), None, NOW)[0] == "origin-mismatch"
    assert c.check(TXS, env_bytes(t=NOW - FRESHNESS_WINDOW_MS - 1), A.pubkey, NOW)[0] == "stale"
    assert c.check(TXS, env_bytes(t=NOW + FUTURE_SKEW_MS + 1), A.pubkey, NOW)[0] == "future"
    assert c.check("/ambient/other/txs/1", env_bytes(), A.pubkey, NOW)[0] == "unknown-topic"
    env = seal_envelope(A, TXS, b"p2", NOW)
    forged = encode(dataclasses.replace(env, signature=B.sign("gossip", b"whatever")))
    assert c.check(TXS, forged, A.pubkey, NOW)[0] == "bad-signature"
    # a signature for another purpose never verifies as gossip
    from ambient_p2p.net.messages import envelope_signing_bytes

    wrong_domain = encode(dataclasses.replace(env, signature=A.sign("vote", envelope_signing_bytes(env))))
    assert c.check(TXS, wrong_domain, A.pubkey, NOW)[0] == "bad-signature"


def test_limits_boundaries() -> None:
    c = checker()
    # just inside the freshness window is accepted
    assert c.check(TXS, env_bytes(payload=b"a", t=NOW - FRESHNESS_WINDOW_MS), A.pubkey, NOW)[0] is None
    assert c.check(TXS, env_bytes(payload=b"b", t=NOW + FUTURE_SKEW_MS), A.pubkey, NOW)[0] is None
    votes = topic_name("testnet", "votes")
    big = env_bytes(topic=votes, payload=b"v" * (TOPIC_LIMITS["votes"]))
    assert c.check(votes, big, A.pubkey, NOW)[0] == "too-large"


def test_replay_of_payload_by_same_origin_is_rejected_other_origin_is_not() -> None:
    c = checker()
    assert c.check(TXS, env_bytes(payload=b"tx1", t=NOW), A.pubkey, NOW)[0] is None
    # same payload re-wrapped with a new timestamp: a replay
    assert c.check(TXS, env_bytes(payload=b"tx1", t=NOW + 5), A.pubkey, NOW + 5)[0] == "replay"
    # the same payload from another origin (e.g. two nodes relaying one tx) is fine
    assert c.check(TXS, env_bytes(kp=B, payload=b"tx1", t=NOW), B.pubkey, NOW)[0] is None


def test_rejected_message_does_not_enter_replay_memory() -> None:
    c = checker(txs=lambda env: "bad-payload" if env.payload == b"bad" else None)
    assert c.check(TXS, env_bytes(payload=b"bad"), A.pubkey, NOW)[0] == "bad-payload"
    c.payload_checks.pop("txs")
    assert c.check(TXS, env_bytes(payload=b"bad", t=NOW + 1), A.pubkey, NOW)[0] is None


def test_shreds_payload_checks_and_leader_for_slot() -> None:
    shreds = topic_name("testnet", "shreds")
    good = encode(ShredBatch(shreds=(make_standin_shred(10, 0), make_standin_shred(10, 1))))
    c = checker()
    assert c.check(shreds, env_bytes(topic=shreds, payload=good), A.pubkey, NOW)[0] is None
    assert c.check(shreds, env_bytes(topic=shreds, payload=b"junk"), A.pubkey, NOW)[0] == "bad-payload"
    short = encode(ShredBatch(shreds=(b"x" * 50,)))
    assert c.check(shreds, env_bytes(topic=shreds, payload=short), A.pubkey, NOW)[0] == "bad-shred"
    empty = encode(ShredBatch(shreds=()))
    assert c.check(shreds, env_bytes(topic=shreds, payload=empty), A.pubkey, NOW)[0] == "bad-payload"
    # slot 10's leader is B: A may not publish its shreds
    lc = checker(shreds=shreds_check(lambda slot: B.pubkey if slot == 10 else None))
    other = encode(ShredBatch(shreds=(make_standin_shred(10, 5),)))
    assert lc.check(shreds, env_bytes(topic=shreds, payload=other), A.pubkey, NOW)[0] == "not-leader"
    assert lc.check(shreds, env_bytes(kp=B, topic=shreds, payload=other), B.pubkey, NOW)[0] is None


def test_replay_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import ambient_p2p.net.gossip as g

    monkeypatch.setattr(g, "REPLAY_MEMORY", 10)
    c = checker()
    for i in range(50):
        assert c.check(TXS, env_bytes(payload=i.to_bytes(4, "big")), A.pubkey, NOW)[0] is None
    assert len(c._replay["txs"]) == 10


def test_token_bucket() -> None:
    b = TokenBucket(capacity=3, rate=1.0, last=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(1.01) is True and b.take(1.02) is False


def test_shreds_topic_with_the_ledgers_merkle_shreds() -> None:
    """Real shreds from the ledger's shredder: accepted from the slot leader, rejected when
    tampered with (Merkle root no longer matches the leader's signature), published by a
    non-leader, or not shreds at all; and repair serves them by (slot, index)."""
    from ambient_p2p.core.shred import make_shreds_from_data
    from ambient_p2p.net.messages import RepairRequest, shred_key
    from ambient_p2p.net.reqresp import ShredStore, repair_handler

    shreds_topic = topic_name("testnet", "shreds")
    made = make_shreds_from_data(A, bytes(32), b"entries" * 300, 7, 6, 1, 0, True, 0, 0)
    packets = [s.payload for s in made.data] + [s.payload for s in made.code]
    assert [shred_key(p) for p in packets[:3]] == [(7, 0), (7, 1), (7, 2)]
    c = checker(shreds=shreds_check(lambda slot: A.pubkey if slot == 7 else None, verify=True))
    ok = encode(ShredBatch(shreds=tuple(packets[:32])))
    assert c.check(shreds_topic, env_bytes(topic=shreds_topic, payload=ok), A.pubkey, NOW)[0] is None
    tampered = bytearray(packets[5])
    tampered[200] ^= 1
    bad = encode(ShredBatch(shreds=(bytes(tampered),)))
    assert c.check(shreds_topic, env_bytes(topic=shreds_topic, payload=bad), A.pubkey, NOW)[0] == "bad-shred-signature"
    other = encode(ShredBatch(shreds=tuple(packets[32:40])))
    assert c.check(shreds_topic, env_bytes(kp=B, topic=shreds_topic, payload=other), B.pubkey, NOW)[0] == "not-leader"
    standin = encode(ShredBatch(shreds=(make_standin_shred(7, 0),)))
    assert c.check(shreds_topic, env_bytes(topic=shreds_topic, payload=standin), A.pubkey, NOW)[0] == "bad-shred"
    store = ShredStore()
    for p in packets:
        store.insert(p)
    r = repair_handler(store)(None, RepairRequest(kind=0, slot=7, index=3, nonce=9))  # type: ignore[arg-type]
    assert r.shreds == (packets[3],)
