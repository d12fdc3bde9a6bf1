"""Gossip envelope vectors (spec/network.md 2.1 to 2.3): the topic validator's generic checks.

``envelope/<case>``: input.json {chain_id, topic (the topic the message arrived on), sender
(base58: the ed25519 key of the libp2p publisher ``from``), now_ms, accepted_before: [hex
data, ...], data (hex: the gossip message data)}. A fresh validator of ``chain_id`` first
checks each ``accepted_before`` message (same topic, sender and clock; each must pass), then
``data``. Output {message_id (hex sha256 of data), kind, origin (base58), wallclock_ms,
payload (hex)}; a message failing a check is a must-reject with the reason of the first
failing row of the validation table (rows 2 to 9: ``unknown-topic``, ``too-large``,
``malformed``, ``wrong-topic``, ``origin-mismatch``, ``stale``, ``future``,
``bad-signature``, ``replay``). Rows 0 and 1 (libp2p) and the kind-specific row 10 are out
of scope.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ...core import crypto
from ...core.codec import encode
from ...net.gossip import (
    FRESHNESS_WINDOW_MS,
    FUTURE_SKEW_MS,
    TOPIC_LIMITS,
    EnvelopeChecker,
    message_id,
    topic_name,
)
from ...net.messages import seal_envelope
from .. import Case, Rejected, case_from_run

FORMAT = "gossip"

CHAIN = "ambient-vectors"
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def run(handler: str, data: bytes) -> Any:
    if handler != "envelope":
        raise Rejected("unknown-handler", handler)
    try:
        v = json.loads(data)
        chain_id, topic, now_ms = str(v["chain_id"]), str(v["topic"]), int(v["now_ms"])
        sender = crypto.decode_address(v["sender"])
        before = [bytes.fromhex(x) for x in v["accepted_before"]]
        msg = bytes.fromhex(v["data"])
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError) as exc:
        raise Rejected("malformed-input", str(exc)) from None
    checker = EnvelopeChecker(chain_id)
    for earlier in before:
        reason, _ = checker.check(topic, earlier, sender, now_ms)
        if reason is not None:
            raise Rejected(reason, "an accepted_before message")
    reason, env = checker.check(topic, msg, sender, now_ms)
    if reason is not None:
        raise Rejected(reason)
    assert env is not None
    return {
        "message_id": message_id(msg).hex(),
        "kind": topic.split("/")[-2],
        "origin": crypto.encode_address(env.origin),
        "wallclock_ms": env.wallclock_ms,
        "payload": env.payload.hex(),
    }


def _case(
    name: str,
    desc: str,
    topic: str,
    data: bytes,
    sender: bytes,
    *,
    now_ms: int = NOW_MS,
    before: tuple[bytes, ...] = (),
) -> Case:
    inp = {
        "chain_id": CHAIN,
        "topic": topic,
        "sender": crypto.encode_address(sender),
        "now_ms": now_ms,
        "accepted_before": [b.hex() for b in before],
        "data": data.hex(),
    }
    return case_from_run(
        run, "envelope", name, (json.dumps(inp, indent=1, sort_keys=True) + "\n").encode(), desc, "input.json"
    )


def cases() -> list[Case]:
    kp, other = crypto.Keypair.deterministic("vectors/gossip", 0), crypto.Keypair.deterministic("vectors/gossip", 1)
    votes, txs, auction = (topic_name(CHAIN, k) for k in ("votes", "txs", "auction"))
    payload = b"a vote transaction would be here"

    def seal(topic: str, body: bytes = payload, at: int = NOW_MS, key: crypto.Keypair = kp) -> bytes:
        return encode(seal_envelope(key, topic, body, at))

    def sized(n: int) -> bytes:
        """A sealed votes envelope of exactly ``n`` encoded bytes."""
        body = bytes(n - len(seal(votes, b"")))
        while len(seal(votes, body)) > n:  # the payload's length header grows with it
            body = body[:-1]
        out = seal(votes, body)
        assert len(out) == n
        return out

    ok = seal(votes)
    forged = seal_envelope(kp, votes, payload, NOW_MS)
    tampered = encode(dataclasses.replace(forged, payload=payload[:-1] + b"!"))
    return [
        _case("votes", "a signed envelope on the votes topic", votes, ok, kp.pubkey),
        _case(
            "auction",
            "a signed envelope on the auction topic (no payload check in this row set)",
            auction,
            seal(auction, b"\x01\x02"),
            kp.pubkey,
        ),
        _case(
            "unknown-topic",
            "a topic of another chain",
            topic_name("other-chain", "votes"),
            seal(topic_name("other-chain", "votes")),
            kp.pubkey,
        ),
        _case(
            "unknown-kind",
            "a topic kind this chain does not have",
            f"/ambient/{CHAIN}/blocks/1",
            seal(f"/ambient/{CHAIN}/blocks/1"),
            kp.pubkey,
        ),
        _case(
            "largest-vote-envelope",
            f"an envelope of exactly the votes topic's limit ({TOPIC_LIMITS['votes']} bytes)",
            votes,
            sized(TOPIC_LIMITS["votes"]),
            kp.pubkey,
        ),
        _case(
            "too-large",
            f"an envelope of {TOPIC_LIMITS['votes'] + 1} bytes, 1 over the votes topic's limit",
            votes,
            sized(TOPIC_LIMITS["votes"] + 1),
            kp.pubkey,
        ),
        _case(
            "malformed",
            "a three-element array holding only the type id 0x0200 (not a message)",
            votes,
            bytes.fromhex("83190200"),
            kp.pubkey,
        ),
        _case("truncated", "the envelope with its last byte cut", votes, ok[:-1], kp.pubkey),
        _case("wrong-topic", "sealed for the txs topic, arrived on votes", votes, seal(txs), kp.pubkey),
        _case("origin-mismatch", "published by another libp2p peer than its origin", votes, ok, other.pubkey),
        _case(
            "fresh-at-window-edge",
            "exactly FRESHNESS_WINDOW_MS old: still fresh",
            votes,
            ok,
            kp.pubkey,
            now_ms=NOW_MS + FRESHNESS_WINDOW_MS,
        ),
        _case(
            "stale",
            "1 ms older than the freshness window",
            votes,
            ok,
            kp.pubkey,
            now_ms=NOW_MS + FRESHNESS_WINDOW_MS + 1,
        ),
        _case(
            "future-at-skew-edge",
            "exactly FUTURE_SKEW_MS ahead: accepted",
            votes,
            seal(votes, at=NOW_MS + FUTURE_SKEW_MS),
            kp.pubkey,
        ),
        _case(
            "future",
            "1 ms beyond the allowed clock skew",
            votes,
            seal(votes, at=NOW_MS + FUTURE_SKEW_MS + 1),
            kp.pubkey,
        ),
        _case("bad-signature", "the payload changed after signing", votes, tampered, kp.pubkey),
        _case(
            "wrong-signer",
            "signed by another key than its origin",
            votes,
            encode(dataclasses.replace(forged, signature=other.sign("gossip", b"x"))),
            kp.pubkey,
        ),
        _case(
            "replay",
            "the same origin and payload again, re-sealed 1 s later",
            votes,
            seal(votes, at=NOW_MS + 1000),
            kp.pubkey,
            before=(ok,),
        ),
        _case(
            "new-payload-no-replay",
            "the same origin with another payload after the first: not a replay",
            votes,
            seal(votes, b"another vote", at=NOW_MS + 1000),
            kp.pubkey,
            before=(ok,),
        ),
    ]
