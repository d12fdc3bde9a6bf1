"""Gossipsub topics, validators, scoring and back-pressure (normative text: spec/network.md).

Topics are ``/ambient/<chain-id>/<kind>/1`` for kind in :data:`TOPIC_KINDS`. Every message
is a :class:`~ambient_p2p.net.messages.GossipEnvelope`; its gossipsub message id is
``sha256(data)``, so the same envelope arriving over several paths is processed once.

Rules a message must pass before it is delivered or forwarded (checked in this order by
:class:`EnvelopeChecker`; the first failure is the reject reason):

====================  =====================================================================
reason                rule
====================  =====================================================================
``too-large``         ``len(data)`` <= the topic's limit (:data:`TOPIC_LIMITS`)
``malformed``         strict canonical-CBOR decode as ``GossipEnvelope``
``wrong-topic``       ``envelope.topic`` equals the gossipsub topic it arrived on
``origin-mismatch``   ``envelope.origin`` is the ed25519 key of the libp2p ``from`` peer
``stale``/``future``  ``now - FRESHNESS_WINDOW_MS <= wallclock_ms <= now + FUTURE_SKEW_MS``
``bad-signature``     Ambient ``gossip``-purpose signature by ``origin``
``replay``            (origin, sha256(payload)) not accepted before (bounded memory)
kind-specific         the topic's payload check (e.g. shreds: batch decode, slot leader)
====================  =====================================================================

A rejected message is not delivered and not forwarded. It is counted against whoever could
have known (:func:`blame`): the forwarder for failures it could have checked itself (our
counter and py-libp2p's P4 score), the signed originator for payload failures, nobody for
time- or state-dependent outcomes (``stale``, ``future``, ``replay``, ``unknown-leader``).
After :data:`BAN_REJECTS` counted rejects within the decay window the peer is blacklisted
(its messages are dropped whoever relays them) and disconnected for :data:`BAN_DURATION_S`.

py-libp2p 0.8.1 behaviours this module works around (each has a test in
tests/test_net_gossip.py; see spec/network.md "py-libp2p pitfalls"):

1. ``spam_protection_enabled`` (default on, 10 msgs/s per topic) also throttles our *own*
   publishes: disabled; abuse is handled by validation + scoring + ban instead.
2. The subscription channel holds 32 messages and drops the rest with only a log line: we
   override ``notify_subscriptions`` to deliver into our own bounded queues with counters.
3. ``publish()`` never pushes back and per-peer outbound queues (32 RPCs) drop silently:
   :meth:`GossipService.publish` waits (bounded) while any outbound queue is near full,
   and dropped RPCs are counted via ``_handle_dropped_rpc``.
4. Messages whose libp2p signature is bad are dropped *before* topic validation and are
   not scored: we check the signature first and count the reject ourselves.
5. The scorer forgets a peer's score when it disconnects, so a spammer could reconnect
   clean: our reject counters and bans are kept per peer id across reconnects.
6. A negative validation result is cached by message id for ``validation_cache_ttl``; with
   content-hash ids a poisoned id would need the honest message's exact bytes, and we set
   the cache TTL below the freshness window so a cached "valid" never outlives freshness
   (the cache is bypassed altogether since item 10).
7. The default heartbeat interval is 120 s (go-libp2p: 1 s): set to 1 s.
8. A publisher's sequence numbers start at the time in seconds and count one per message, so
   a restarted node reuses numbers its peers remember and they drop its messages as
   equivocation: ours start at the time in nanoseconds, as go-libp2p's do.
9. Blacklisting a peer (our ban) tears its pubsub stream down in a task that deletes the
   peer after an ``await``; if the connection's dead-peer handler removed it meanwhile the
   ``del`` raised ``KeyError`` and the whole node exited: ours tolerates the interleaving
   (spec/network.md P18).
10. Validators answer only accept/reject: every rejection costs the *forwarder* P4, and the
   validation cache replays a rejection to later forwarders without asking us. We override
   ``validate_msg`` (no library cache; ours caches only deterministic rejections) and spare
   the forwarder's P4 when the rejection is not its fault (spec/network.md 2.3 "Blame", P19).
11. Per-message waste (spec/network.md P21, issue 17): the library verified each StrictSign
   signature twice on receipt and once on our own publish, recomputed the message id (a
   sha256 of the whole message) four to five times, and re-parsed the originator's key per
   message. ``push_msg`` and ``publish`` are vendored with one verification per received
   message and none for our own, the id is memoised per message object, originators are
   cached, and the envelope is encoded once per publish and never re-encoded per receipt
   (:func:`seal_wire`, :func:`wire_signing_bytes`). tests/test_gossip_fastpath.py.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ..core.codec import DecodeError, decode, encode
from ..core.constants import PACKET_DATA_BYTES
from ..core.crypto import ZERO_SIGNATURE, Keypair
from ..core.crypto import verify as verify_signature
from .host import pubkey_of_peer_id
from .messages import (
    GOSSIP_ENVELOPE_OVERHEAD_BYTES,
    GossipEnvelope,
    ShredBatch,
    StageAnnounce,
    envelope_signing_bytes,
    shred_key,
)

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.abc import IHost
    from libp2p.peer.id import ID

TOPIC_KINDS: tuple[str, ...] = ("shreds", "votes", "logit-pool", "auction", "txs", "stages")
#: Largest encoded envelope (bytes) admitted per topic kind.
TOPIC_LIMITS: dict[str, int] = {
    "shreds": 128 * 1024 + GOSSIP_ENVELOPE_OVERHEAD_BYTES,
    "votes": 4 * 1024,
    "logit-pool": 64 * 1024,
    "auction": 8 * 1024,
    "txs": 64 * 1024,
    "stages": 2 * 1024,  # StageAnnounce (spec/shard.md): a served layer range and its throughput
}
#: Gossipsub protocol ids we speak (1.1 for peers without IDONTWANT).
GOSSIPSUB_PROTOCOLS = ("/meshsub/1.2.0", "/meshsub/1.1.0")
MESH_D, MESH_D_LOW, MESH_D_HIGH = 6, 4, 12
HEARTBEAT_INTERVAL_S = 1
GOSSIP_WINDOW, GOSSIP_HISTORY = 3, 5
FANOUT_TTL_S = 60
PRUNE_BACKOFF_S = 60
PX_PEERS = 16
#: Send our own messages to every subscribed peer (not just the mesh); see make_router.
FLOOD_PUBLISH = True
#: Only messages at least this large trigger IDONTWANT (see make_router).
IDONTWANT_MIN_BYTES = 16 * 1024
SEEN_TTL_S = 120
FRESHNESS_WINDOW_MS = 30_000
FUTURE_SKEW_MS = 2_000
VALIDATION_CACHE_TTL_S = 20  # < FRESHNESS_WINDOW_MS (pitfall 6)
VALIDATION_CACHE_SIZE = 512
MAX_INBOUND_RPC_BYTES = 1 << 20
#: Bounded queue from gossip to the core, per topic kind (messages).
DELIVERY_QUEUE_LEN = 4096
#: Publisher back-pressure: wait while any peer's outbound queue (py-libp2p: 32) holds
#: at least this many RPCs, for at most PUBLISH_WAIT_MAX_S.
OUTBOUND_HIGH_WATER = 24
PUBLISH_WAIT_MAX_S = 0.5
#: Replay memory: (origin, payload hash) pairs remembered per topic kind.
REPLAY_MEMORY = 65_536
#: Ban policy (ours, on top of py-libp2p scoring).
BAN_REJECTS = 8
REJECT_DECAY_S = 60.0
BAN_DURATION_S = 600.0

#: Who a rejection is scored against (spec/network.md 2.3 "Blame"). A forwarder ran the same
#: validation before relaying, so it is penalised only for what it could have checked: rules
#: that are deterministic over the message bytes. A message's originator is known (the libp2p
#: ``from``, whose signature py-libp2p verified, equals ``envelope.origin`` from rule 6 on) and
#: signed what it sent, so payload failures count against it wherever they arrive from.
#: Envelope-level failures a forwarder could have checked (counted against the forwarder).
FORWARDER_REASONS: frozenset[str] = frozenset({
    "bad-libp2p-signature", "multi-topic", "unknown-topic", "too-large", "malformed", "wrong-topic",
    "origin-mismatch", "bad-signature",
})
#: Outcomes that depend on the time or on what this node has seen or knows, not on anyone's
#: fault (gossipsub v1.1's "ignore"; Ethereum's gossip rules IGNORE messages outside their
#: time window): not delivered, not forwarded, nobody is penalised. A message stamped just
#: inside the freshness window and relayed by an honest node arrives stale; a backlog after a
#: pause or a partition heal arrives stale; two envelopes of one payload race over two paths.
#: ``no-lstake`` (a validator's vote check): whether a voter has LStake depends on the epoch
#: this node has reached, so around an epoch change an honest voter can fail it here.
#: ``other-fork-leader``: a shred's slot leader, computed from this node's working fork (the
#: root is more than an epoch behind), differs from its origin; another fork's schedule may
#: name that origin (spec/node.md "Leader schedule on a fork").
IGNORE_REASONS: frozenset[str] = frozenset({"stale", "future", "replay", "unknown-leader", "no-lstake",
                                            "other-fork-leader"})
#: Payload failures that are deterministic over the payload (a forwarder ran the same check),
#: counted against the forwarder as well as the originator. Any other payload reason (e.g.
#: ``not-leader``: the forwarder may not know the slot's leader yet) counts against the
#: originator only.
FORWARDER_PAYLOAD_REASONS: frozenset[str] = frozenset({
    "bad-payload", "bad-shred", "bad-pol-signature", "bad-transaction", "unsupported-transaction",
    "bad-tx-signature", "not-auction", "oversized",
    # a validator's vote checks that read only the message (core/vote_program.py, core/consensus.py)
    "not-a-vote", "vote-bad-accounts", "vote-bad-data", "vote-wrong-voter", "vote-bad-signature",
    "vote-bad-root", "vote-origin-mismatch", "bad-root",
})
#: Kinds whose payload check this node also runs on its *own* messages before publishing.
#: ``unfunded`` (a transaction whose fee payer cannot pay, in the checking node's working bank)
#: depends on state, so it counts against the originator only; a node that published what
#: its own check refuses (e.g. a transfer an RPC user submitted from an empty account) would
#: be charged by every peer, and an attacker could get an honest node banned through its RPC.
#: Such a message stays local (the caller's mempool keeps it) and is counted in
#: ``own_refused``.
OWN_CHECK_KINDS: frozenset[str] = frozenset({"txs"})
#: Message objects whose gossipsub id is remembered (GossipService._msg_id): a message's
#: handling interleaves with at most a few others between its awaits.
MSG_ID_MEMO_LEN = 64
#: Originators whose peer id, base58 form and keys are remembered (GossipService._originator);
#: forgotten all at once when full.
ORIGINATOR_CACHE_LEN = 4096
#: Rejections cached by message id (deterministic ones only), so that the copies of one bad
#: message that several peers forward cost a dict lookup each.
REJECT_CACHE_LEN = 4096


def blame(reason: str) -> tuple[bool, bool]:
    """(count against the forwarder, count against the originator) for a reject reason."""
    if reason in IGNORE_REASONS:
        return False, False
    if reason in FORWARDER_REASONS:
        return True, False
    return reason in FORWARDER_PAYLOAD_REASONS, True


def topic_name(chain_id: str, kind: str) -> str:
    if kind not in TOPIC_KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"/ambient/{chain_id}/{kind}/1"


def kind_of_topic(chain_id: str, topic: str) -> str | None:
    prefix = f"/ambient/{chain_id}/"
    if not topic.startswith(prefix) or not topic.endswith("/1"):
        return None
    kind = topic[len(prefix) : -2]
    return kind if kind in TOPIC_KINDS else None


def message_id(data: bytes) -> bytes:
    """Gossipsub message id: sha256 of the message data (content addressed)."""
    return hashlib.sha256(data).digest()


#: How the envelope's signature field starts in its canonical encoding: the map key
#: ``"signature"`` (text, 9 bytes) and a 64-byte byte-string head. Keys sort by their
#: encoding (shorter first), so only ``wallclock_ms`` (key and integer, at most 22 bytes)
#: follows the 64 signature bytes and the last occurrence is the field itself unless the
#: signature bytes contain the pattern.
_SIGNATURE_FIELD = b"\x69signature\x58\x40"


def _signature_at(data: bytes, signature: bytes) -> int | None:
    """Offset of the 64 signature bytes in ``data``, a canonical ``GossipEnvelope``
    encoding whose signature is ``signature``; None if they are not where the layout puts
    them (the caller then encodes instead)."""
    i = data.rfind(_SIGNATURE_FIELD)
    j = i + len(_SIGNATURE_FIELD)
    if i < 0 or data[j : j + 64] != signature:
        return None
    return j


def wire_signing_bytes(data: bytes, env: GossipEnvelope) -> bytes:
    """``envelope_signing_bytes(env)`` for ``env`` strictly decoded from ``data``: the same
    bytes with the signature zeroed, spliced instead of re-encoding up to 128 KiB (issue 17;
    tests/test_gossip_fastpath.py shows both agree). Falls back to encoding when the
    signature is not where the canonical layout puts it: a splice at a wrong place could
    only make a valid signature fail (the zeroed bytes would not be the signature field,
    which no honest signer signs), never make a bad one pass."""
    j = _signature_at(data, env.signature)
    if j is None:
        return envelope_signing_bytes(env)
    return data[:j] + ZERO_SIGNATURE + data[j + 64 :]


def seal_wire(kp: Keypair, topic: str, payload: bytes, wallclock_ms: int) -> tuple[GossipEnvelope, bytes]:
    """:func:`~ambient_p2p.net.messages.seal_envelope` and its encoding from one encode:
    the signature is spliced into the signing bytes (the encoding with a zero signature)."""
    unsigned = GossipEnvelope(topic=topic, origin=kp.pubkey, wallclock_ms=wallclock_ms, payload=payload,
                              signature=ZERO_SIGNATURE)
    signing = encode(unsigned)
    sig = kp.sign("gossip", signing)
    env = GossipEnvelope(topic=topic, origin=kp.pubkey, wallclock_ms=wallclock_ms, payload=payload, signature=sig)
    j = _signature_at(signing, ZERO_SIGNATURE)
    return env, (encode(env) if j is None else signing[:j] + sig + signing[j + 64 :])


#: A kind-specific payload check: (envelope) -> reject reason, or None to accept.
PayloadCheck = Callable[[GossipEnvelope], "str | None"]


def shreds_check(leader_for_slot: Callable[[int], bytes | None] | None = None, *, verify: bool = False,
                 leader_final: Callable[[int], bool] | None = None) -> PayloadCheck:
    """Payload check of the shreds topic: a ShredBatch of well-formed packets; with
    ``leader_for_slot``, only a slot's leader may publish its shreds, and shreds of a slot
    whose leader it cannot compute (None) are refused (``unknown-leader``).
    ``leader_final(slot)`` False says the leader came from this node's working fork, not its
    root (spec/node.md "Leader schedule on a fork"): another fork may name another leader,
    so a mismatch is then ``other-fork-leader``, which blames nobody, not ``not-leader``.

    With ``verify`` every packet must also parse as a ledger Merkle shred
    (:func:`ambient_p2p.core.shred.parse_shred`, strict) and, when the slot's leader is
    known, carry that leader's signature over its FEC set's Merkle root
    (:func:`~ambient_p2p.core.shred.verify_shred`; one ed25519 check per FEC set, cached).
    Without ``verify`` only the common header is read (stand-in shreds for tests)."""
    verified: set[tuple[bytes, bytes, bytes]] = set()  # (leader, root, signature) already checked

    def check(env: GossipEnvelope) -> str | None:
        try:
            batch = decode(env.payload, expected=ShredBatch)
        except DecodeError:
            return "bad-payload"
        if not batch.shreds:
            return "bad-payload"
        for s in batch.shreds:
            key = shred_key(s)
            if key is None:
                return "bad-shred"
            leader = leader_for_slot(key[0]) if leader_for_slot is not None else None
            if leader_for_slot is not None and leader is None:
                # a slot whose leader this node cannot compute yet (or slot 0): nobody can be
                # shown to be its leader, so its shreds are not relayed (agave's shred
                # sigverify drops a shred whose slot leader is unknown); a node that is behind
                # gets such slots by repair once it knows the schedule
                return "unknown-leader"
            if leader is not None and leader != env.origin:
                return "not-leader" if leader_final is None or leader_final(key[0]) else "other-fork-leader"
            if verify:
                from ..core.shred import ShredError, parse_shred, verify_shred

                try:
                    shred = parse_shred(s)
                except ShredError:
                    return "bad-shred"
                if leader is not None:
                    if len(verified) > 4096:  # bounded: forget and re-verify
                        verified.clear()
                    try:
                        verify_shred(shred, leader, verified)
                    except ShredError:
                        return "bad-shred-signature"
        return None

    return check


#: Largest logit-pool payload: the largest message it may carry (PolVerdict, spec/pol.md).
LOGIT_POOL_MAX_PAYLOAD_BYTES = 16_384
#: Largest auction payload: one Solana wire transaction (spec/auction.md).
AUCTION_MAX_PAYLOAD_BYTES = PACKET_DATA_BYTES


def logit_pool_check(env: GossipEnvelope) -> str | None:
    """Payload check of the logit-pool topic: exactly one canonical PolCommitment,
    PolOpening or PolVerdict (spec/pol.md "Wire formats"); a commitment must carry its
    miner's signature and a verdict its validator's (the signer is named inside)."""
    from ..core.messages import verify_message
    from ..core.pol import PolCommitment, PolOpening, PolVerdict, verify_verdict

    if len(env.payload) > LOGIT_POOL_MAX_PAYLOAD_BYTES:
        return "oversized"
    try:
        msg = decode(env.payload)
    except (DecodeError, ValueError):
        return "bad-payload"
    if isinstance(msg, PolCommitment):
        return None if verify_message(msg, msg.miner, "pol-commitment") else "bad-pol-signature"
    if isinstance(msg, PolVerdict):
        return None if verify_verdict(msg) else "bad-pol-signature"
    if isinstance(msg, PolOpening):
        return None
    return "bad-payload"


def auction_check(env: GossipEnvelope) -> str | None:
    """Payload check of the auction topic: one Solana wire transaction that parses,
    sanitizes, whose signatures verify and that calls the auction program (query orders and
    bids are auction instructions, spec/auction.md)."""
    from ..core.auction import AUCTION_PROGRAM_ID
    from ..core.bank import BlockError, parse_transaction

    if len(env.payload) > AUCTION_MAX_PAYLOAD_BYTES:
        return "oversized"
    try:
        tx = parse_transaction(env.payload, verify_signatures=True)
    except BlockError as exc:
        return "bad-tx-signature" if exc.reason == "bad-signature" else exc.reason
    if not any(tx.account_keys[prog] == AUCTION_PROGRAM_ID for prog, _accts, _data in tx.instructions):
        return "not-auction"
    return None


def stages_check(env: GossipEnvelope) -> str | None:
    """Payload check of the stages topic (spec/shard.md): one ``StageAnnounce`` with a
    non-empty layer range inside the model."""
    try:
        a = decode(env.payload, expected=StageAnnounce)
    except DecodeError as exc:
        return exc.reason
    return None if a.start < a.end <= a.total else "bad-range"


@dataclass
class EnvelopeChecker:
    """The sans-IO half of validation: pure checks over bytes + a clock reading."""

    chain_id: str
    payload_checks: dict[str, PayloadCheck] = field(default_factory=dict)
    _replay: dict[str, collections.OrderedDict[bytes, None]] = field(default_factory=dict)

    def check(
        self, topic: str, data: bytes, sender_pubkey: bytes | None, now_ms: int, *, own: bool = False
    ) -> tuple[str | None, GossipEnvelope | None]:
        """Return (None, envelope) to accept, or (reason, None) to reject. ``own``: the
        message is this node's own publish, sealed by :meth:`GossipService.seal` a moment
        ago, so its envelope signature is not verified again (every other rule runs)."""
        kind = kind_of_topic(self.chain_id, topic)
        if kind is None:
            return "unknown-topic", None
        if len(data) > TOPIC_LIMITS[kind]:
            return "too-large", None
        try:
            env = decode(data, expected=GossipEnvelope)
        except DecodeError:
            return "malformed", None
        if env.topic != topic:
            return "wrong-topic", None
        if sender_pubkey is None or sender_pubkey != env.origin:
            return "origin-mismatch", None
        if env.wallclock_ms + FRESHNESS_WINDOW_MS < now_ms:
            return "stale", None
        if env.wallclock_ms > now_ms + FUTURE_SKEW_MS:
            return "future", None
        if not own and not verify_signature(env.origin, "gossip", wire_signing_bytes(data, env), env.signature):
            return "bad-signature", None
        rkey = env.origin + hashlib.sha256(env.payload).digest()
        seen = self._replay.setdefault(kind, collections.OrderedDict())
        if rkey in seen:
            return "replay", None
        pc = self.payload_checks.get(kind)
        if pc is not None:
            reason = pc(env)
            if reason is not None:
                return reason, None
        seen[rkey] = None
        if len(seen) > REPLAY_MEMORY:
            seen.popitem(last=False)
        return None, env


@dataclass(frozen=True)
class _Originator:
    """A libp2p ``from`` as this node uses it (GossipService._originator)."""

    peer_id: ID
    b58: str
    pubkey: bytes | None  # the Ambient (ed25519) key, None if the peer id embeds none
    libp2p_key: Any  # the key that verifies its StrictSign signatures; None: ask the library; False: never


@dataclass(frozen=True)
class Delivery:
    """A validated message handed to the core."""

    kind: str
    envelope: GossipEnvelope
    forwarder: str  # base58 peer id of the peer we got it from
    received_ms: int


@dataclass
class GossipStats:
    published: collections.Counter[str] = field(default_factory=collections.Counter)
    delivered: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)  # by reason
    rejected_from: collections.Counter[str] = field(default_factory=collections.Counter)  # by peer charged (bounded)
    ignored_forwards: int = 0  # rejections not charged to the forwarder (IGNORE_REASONS, originator-only)
    delivery_dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    outbound_rpc_dropped: int = 0
    publish_waits: int = 0
    publish_wait_timeouts: int = 0
    bans: int = 0
    ban_refused: int = 0  # connections from banned peers closed on arrival
    own_refused: collections.Counter[str] = field(default_factory=collections.Counter)  # OWN_CHECK_KINDS, by reason

    def as_json(self) -> dict[str, Any]:
        return {
            "published": dict(self.published),
            "delivered": dict(self.delivered),
            "rejected": dict(self.rejected),
            "rejected_from": dict(self.rejected_from),
            "ignored_forwards": self.ignored_forwards,
            "delivery_dropped": dict(self.delivery_dropped),
            "outbound_rpc_dropped": self.outbound_rpc_dropped,
            "publish_waits": self.publish_waits,
            "publish_wait_timeouts": self.publish_wait_timeouts,
            "bans": self.bans,
            "ban_refused": self.ban_refused,
            "own_refused": dict(self.own_refused),
        }


def score_params() -> Any:
    """Peer-score parameters (values and reasoning in spec/network.md "Peer scoring").

    py-libp2p's scorer *subtracts* ``p4.weight * invalid`` (positive weight = penalty), uses
    one parameter set for all topics, never feeds P3, and its P1 counts grafts, not time."""
    from libp2p.pubsub.score import ScoreParams, TopicScoreParams

    return ScoreParams(
        p1_time_in_mesh=TopicScoreParams(weight=0.0, cap=0.0, decay=1.0),
        p2_first_message_deliveries=TopicScoreParams(weight=1.0, cap=20.0, decay=0.97),
        p3_mesh_message_deliveries=TopicScoreParams(weight=0.0, cap=0.0, decay=1.0),
        p4_invalid_messages=TopicScoreParams(weight=10.0, cap=1000.0, decay=0.99),
        p5_behavior_penalty_weight=1.0,
        p5_behavior_penalty_decay=0.95,
        p5_behavior_penalty_threshold=20.0,
        p7_ip_colocation_weight=0.0,
        gossip_threshold=-20.0,
        publish_threshold=-100.0,
        graylist_threshold=-150.0,
        accept_px_threshold=0.0,
    )


def make_router(*, eclipse_protection: bool = False) -> Any:
    """Our GossipSub router (a subclass that counts outbound drops)."""
    from libp2p.custom_types import TProtocol
    from libp2p.pubsub import gossipsub as _gs
    from libp2p.pubsub.gossipsub import GossipSub

    IDONTWANT_PROTOCOLS = {getattr(_gs, n) for n in ("PROTOCOL_ID_V12", "PROTOCOL_ID_V13", "PROTOCOL_ID_V14",
                                                      "PROTOCOL_ID_V20") if hasattr(_gs, n)}

    class AmbientGossipSub(GossipSub):
        """Counts RPCs py-libp2p drops on full outbound queues (pitfall 3)."""

        dropped_rpcs = 0

        def _get_peers_to_send(self, topic_ids: Any, msg_forwarder: Any, origin: Any, msg_id: Any = None) -> Any:
            """Flood publishing (gossipsub v1.1, go-libp2p's default, absent from py-libp2p):
            our *own* messages go to every subscribed peer whose score is above the publish
            threshold, not only to mesh peers, so a peer whose GRAFT is still in back-off
            after a restart still gets them at once."""
            peers = set(super()._get_peers_to_send(topic_ids, msg_forwarder, origin, msg_id))
            me = self.pubsub.my_id if self.pubsub is not None else None
            scorer = self.scorer
            if FLOOD_PUBLISH and origin == me and msg_forwarder == me and self.pubsub is not None and scorer is not None:
                for t in topic_ids:
                    for p in self.pubsub.peer_topics.get(t, ()):
                        if p != me and scorer.score(p, [t]) >= scorer.params.publish_threshold:
                            peers.add(p)
            yield from peers

        async def publish(self, msg_forwarder: Any, pubsub_msg: Any) -> None:
            self._cur_size = len(pubsub_msg.data)
            self._cur_own = self.pubsub is not None and msg_forwarder == self.pubsub.my_id
            self._cur_skip = (msg_forwarder, pubsub_msg.from_id)
            await super().publish(msg_forwarder, pubsub_msg)

        async def _emit_idontwant_for_message(self, msg_id: bytes, topic_ids: Any) -> None:
            """py-libp2p sends one IDONTWANT RPC per mesh peer for *every* message, also
            for our own publishes and also back to the peer that sent it to us and to its
            originator (both have it; go-libp2p skips them); per-RPC overhead dominates in
            Python, so for small messages this costs more than the duplicates it saves
            (go-libp2p only sends it for messages >= 1 KiB). We send it only for messages
            >= IDONTWANT_MIN_BYTES that we did not originate, and only to mesh peers other
            than the forwarder and the originator (P14)."""
            if getattr(self, "_cur_own", False) or getattr(self, "_cur_size", 0) < IDONTWANT_MIN_BYTES:
                return
            if self.pubsub is None:
                return
            forwarder, origin_bytes = getattr(self, "_cur_skip", (None, b""))
            peers: set[Any] = set()
            for t in topic_ids:
                peers.update(self.mesh.get(t, ()))
            for p in peers:
                if p == forwarder or p.to_bytes() == origin_bytes:
                    continue
                if self.peer_protocol.get(p) in IDONTWANT_PROTOCOLS:
                    await self.emit_idontwant([msg_id], p)

        def _handle_dropped_rpc(self, peer_id: Any, rpc: Any, reason: str) -> None:
            self.dropped_rpcs += 1
            super()._handle_dropped_rpc(peer_id, rpc, reason)

    return AmbientGossipSub(
        [TProtocol(p) for p in GOSSIPSUB_PROTOCOLS],
        MESH_D,
        MESH_D_LOW,
        MESH_D_HIGH,
        time_to_live=FANOUT_TTL_S,
        gossip_window=GOSSIP_WINDOW,
        gossip_history=GOSSIP_HISTORY,
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        do_px=True,
        px_peers_count=PX_PEERS,
        prune_back_off=PRUNE_BACKOFF_S,
        score_params=score_params(),
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
        eclipse_protection_enabled=eclipse_protection,
    )


class GossipService:
    """Gossip for one node: topics of one chain, validators, delivery queues, counters.

    Use inside a trio nursery::

        svc = GossipService(host, kp, chain_id)
        async with svc.run():
            await svc.publish("txs", payload)
            d = await svc.receive("txs")
    """

    def __init__(
        self,
        host: IHost,
        kp: Keypair,
        chain_id: str,
        *,
        kinds: tuple[str, ...] = TOPIC_KINDS,
        payload_checks: dict[str, PayloadCheck] | None = None,
        queue_len: int = DELIVERY_QUEUE_LEN,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        eclipse_protection: bool = False,
    ) -> None:
        from libp2p.exceptions import ValidationError
        from libp2p.peer.id import ID
        from libp2p.pubsub.pubsub import Pubsub

        self.host = host
        self.kp = kp
        self.chain_id = chain_id
        self.kinds = kinds
        self.clock_ms = clock_ms
        self.stats = GossipStats()
        checks: dict[str, PayloadCheck] = {"shreds": shreds_check(), "logit-pool": logit_pool_check,
                                           "auction": auction_check,
                                           "stages": stages_check}
        checks.update(payload_checks or {})
        self.checker = EnvelopeChecker(chain_id, checks)
        self._reject_counts: dict[str, tuple[float, float]] = {}  # peer -> (count, last_t)
        self._banned_until: dict[str, float] = {}
        self._spare_p4: ID | None = None  # forwarder of the message just ignored (no P4 for it)
        self._reject_cache: collections.OrderedDict[bytes, str] = collections.OrderedDict()
        self._pending: collections.OrderedDict[int, GossipEnvelope] = collections.OrderedDict()
        # message ids of the last few message objects (see _msg_id)
        self._mid_memo: dict[int, tuple[Any, bytes]] = {}
        self._originators: dict[bytes, _Originator] = {}
        self._publishing: tuple[bytes, bytes] | None = None  # (data, id) publish_sealed hands over
        self._send: dict[str, trio.MemorySendChannel[Delivery]] = {}
        self._recv: dict[str, trio.MemoryReceiveChannel[Delivery]] = {}
        for k in kinds:
            s, r = trio.open_memory_channel[Delivery](queue_len)
            self._send[k], self._recv[k] = s, r
        svc = self

        class AmbientPubsub(Pubsub):
            my_id_bytes: bytes = b""  # our peer id's bytes (set below)

            def notify_subscriptions(self, publish_message: Any) -> None:
                # pitfall 2: deliver into our bounded queues, counting drops
                svc._deliver(publish_message)

            async def push_msg(self, msg_forwarder: Any, msg: Any) -> None:
                # py-libp2p 0.8.1's push_msg (vendored, same checks and order as ours before
                # it plus the library's), with the per-message waste removed (pitfall 11,
                # spec/network.md P21): the libp2p signature is verified once (ours counted
                # and scored it, then the library verified it again), our own publishes are
                # not re-verified (we signed them a moment ago), and the message id is
                # computed once per message object (``_msg_id``).
                # pitfall 4: a bad libp2p signature would be dropped unscored
                if self.is_peer_blacklisted(msg_forwarder) or self._is_msg_seen(msg):
                    return
                own = msg_forwarder == self.my_id
                if not own and not svc._libp2p_signature_ok(msg):
                    svc._reject(msg_forwarder, None, "bad-libp2p-signature", list(msg.topicIDs))
                    return
                from_id = msg.from_id
                if self.is_peer_blacklisted(ID(from_id)):
                    return
                scorer = getattr(self.router, "scorer", None)
                if scorer is not None and not scorer.allow_publish(msg_forwarder, list(msg.topicIDs)):
                    return
                try:
                    await self.validate_msg(msg_forwarder, msg)
                except ValidationError:
                    if scorer is not None:
                        for topic in msg.topicIDs:
                            scorer.on_invalid_message(msg_forwarder, topic)
                    return
                self._mark_msg_seen(msg)
                if scorer is not None:
                    for topic in msg.topicIDs:
                        scorer.on_first_delivery(msg_forwarder, topic)
                if not own and from_id == self.my_id_bytes:
                    return  # claims to be from us but was forwarded (the library drops it too)
                self.notify_subscriptions(msg)
                await self.router.publish(msg_forwarder, msg)

            async def publish(self, topic_id: Any, data: bytes) -> None:
                # py-libp2p 0.8.1's publish (vendored: same message, seqno and StrictSign
                # signature), which also records the message id we computed for ``data``
                # so that no sha256 of our own message is taken twice (``_msg_id``).
                from libp2p.pubsub.pb import rpc_pb2
                from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

                msg = rpc_pb2.Message(data=data, topicIDs=[topic_id] if isinstance(topic_id, str) else topic_id,
                                      from_id=self.my_id_bytes, seqno=self._next_seqno())
                if self.strict_signing:
                    priv_key = self.sign_key
                    if priv_key is None:
                        raise ValueError("private key not found")
                    msg.signature = priv_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
                    msg.key = self.host.get_public_key().serialize()
                pending, svc._publishing = svc._publishing, None
                svc._remember_msg_id(msg, pending[1] if pending is not None and pending[0] is data
                                     else message_id(data))
                await self.push_msg(self.my_id, msg)

            async def validate_msg(self, msg_forwarder: Any, msg: Any) -> None:
                # pitfall 10: py-libp2p knows only accept/reject: every rejection costs the
                # *forwarder* P4, and its validation cache replays a rejection to every later
                # forwarder of the same message without asking us. Ours decides who is to
                # blame (``blame``); for an outcome that is nobody's fault it still raises
                # (the message is dropped, not forwarded) but spares the forwarder's P4.
                svc._spare_p4 = None
                if not svc._validator(msg_forwarder, msg, own=msg_forwarder == self.my_id):
                    raise ValidationError(f"rejected: {msg_forwarder}")

            async def _teardown_if_connected(self, peer_id: Any) -> None:
                # pitfall 9: py-libp2p resets the peer's stream, then does
                # `del self.peers[peer_id]`; the reset awaits, and a dead-peer handler that
                # runs meanwhile (the connection closing: our ban's disconnect, or the peer
                # hanging up) has already removed the peer, so the `del` raised KeyError and
                # took the pubsub service, and the node, down. The library also left the
                # peer's outbound queue and router state behind.
                stream = self.peers.get(peer_id)
                if stream is not None:
                    with contextlib.suppress(Exception):  # a stream already gone is fine
                        await stream.reset()
                # idempotent: forgets subscriptions, and the peer, queue and router state if
                # still there; a still-connected blacklisted peer is refused on re-registration
                self._handle_dead_peer(peer_id)

        self._install_ban_gate()
        self.router = make_router(eclipse_protection=eclipse_protection)
        scorer = self.router.scorer
        library_on_invalid = scorer.on_invalid_message

        def on_invalid_message(peer: Any, topic: str) -> None:
            if self._spare_p4 is not None and peer == self._spare_p4:
                self._spare_p4 = None
                return
            library_on_invalid(peer, topic)

        scorer.on_invalid_message = on_invalid_message
        self.pubsub = AmbientPubsub(
            host,
            self.router,
            seen_ttl=SEEN_TTL_S,
            strict_signing=True,
            msg_id_constructor=self._msg_id,
            validation_cache_ttl=VALIDATION_CACHE_TTL_S,
            validation_cache_size=VALIDATION_CACHE_SIZE,
            max_inbound_rpc_size=MAX_INBOUND_RPC_BYTES,
            allowed_topics=frozenset(topic_name(chain_id, k) for k in kinds),
        )
        # pitfall 8: py-libp2p starts the publish sequence number at int(time.time()) (seconds)
        # and adds one per message, so a node publishing many messages a second runs far ahead
        # of the clock; restarted, it reuses sequence numbers peers still remember, and their
        # gossipsub drops its messages as equivocation and penalises it (-100 each; seen after a
        # SIGKILL and restart at 400 ms slots). go-libp2p starts at the time in nanoseconds.
        self.pubsub.counter = max(self.pubsub.counter, time.time_ns())
        self.pubsub.my_id_bytes = self.pubsub.my_id.to_bytes()
        for k in kinds:
            self.pubsub.set_topic_validator(topic_name(chain_id, k), self._validator, False)

    def _install_ban_gate(self) -> None:
        """Close any new connection from a banned peer at once: py-libp2p's auto-connector
        (ours or the banned peer's) re-dials known peers, and pubsub's blacklist alone
        leaves the connection open (spec/network.md P11)."""
        from libp2p.abc import INotifee

        svc = self

        class BanGate(INotifee):
            async def connected(self, network: Any, conn: Any) -> None:
                peer = conn.muxed_conn.peer_id
                if svc.is_banned(peer):
                    svc.stats.ban_refused += 1
                    svc.pubsub.manager.run_task(svc._disconnect, peer)
                await trio.lowlevel.checkpoint()

            async def disconnected(self, network: Any, conn: Any) -> None:
                await trio.lowlevel.checkpoint()

            async def opened_stream(self, network: Any, stream: Any) -> None:
                await trio.lowlevel.checkpoint()

            async def closed_stream(self, network: Any, stream: Any) -> None:
                await trio.lowlevel.checkpoint()

            async def listen(self, network: Any, multiaddr: Any) -> None:
                await trio.lowlevel.checkpoint()

            async def listen_close(self, network: Any, multiaddr: Any) -> None:
                await trio.lowlevel.checkpoint()

        self.host.get_network().register_notifee(BanGate())

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> Any:
        """Async context manager running pubsub + router and subscribed to every topic."""
        import contextlib

        from libp2p.tools.anyio_service import background_trio_service

        @contextlib.asynccontextmanager
        async def _run() -> Any:
            async with background_trio_service(self.pubsub), background_trio_service(self.router):
                await self.pubsub.wait_until_ready()
                for k in self.kinds:
                    await self.pubsub.subscribe(topic_name(self.chain_id, k))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._unban_loop)
                    try:
                        yield self
                    finally:
                        nursery.cancel_scope.cancel()

        return _run()

    async def _unban_loop(self) -> None:
        from libp2p.peer.id import ID

        while True:
            await trio.sleep(1.0)
            now = time.monotonic()
            for pid, until in list(self._banned_until.items()):
                if until <= now:
                    del self._banned_until[pid]
                    self.pubsub.remove_from_blacklist(ID.from_base58(pid))

    # -- validation ------------------------------------------------------------------------
    def _msg_id(self, msg: Any) -> bytes:
        """Gossipsub message id (:func:`message_id` of ``msg.data``), computed once per
        message object: py-libp2p asks for it four to five times per message (seen check,
        validation cache, mark seen, IDONTWANT, ours), each a sha256 over up to 128 KiB plus
        a copy of ``msg.data`` (upb returns a fresh ``bytes`` on every access). Entries hold
        the message object, so an ``id()`` is never reused while it is remembered."""
        hit = self._mid_memo.get(id(msg))
        if hit is not None and hit[0] is msg:
            return hit[1]
        mid = message_id(msg.data)
        self._remember_msg_id(msg, mid)
        return mid

    def _remember_msg_id(self, msg: Any, mid: bytes) -> None:
        memo = self._mid_memo
        if len(memo) >= MSG_ID_MEMO_LEN:
            del memo[next(iter(memo))]  # oldest first (dicts keep insertion order)
        memo[id(msg)] = (msg, mid)

    def _originator(self, from_id: bytes) -> _Originator:
        """What this node derives from a message's libp2p ``from`` bytes, derived once per
        peer (py-libp2p re-parses the multihash, re-deserializes the key and re-encodes
        base58 for every message)."""
        hit = self._originators.get(from_id)
        if hit is not None:
            return hit
        from libp2p.peer.id import ID

        pid = ID(from_id)
        try:
            key = pid.extract_public_key()
        except Exception:  # noqa: BLE001 - not an identity peer id: the library's path decides
            key = None
        key_state: Any = None if key is None else (key if ID.from_pubkey(key) == pid else False)
        hit = _Originator(pid, pid.to_base58(), pubkey_of_peer_id(pid), key_state)
        if len(self._originators) >= ORIGINATOR_CACHE_LEN:
            self._originators.clear()
        self._originators[from_id] = hit
        return hit

    def _libp2p_signature_ok(self, msg: Any) -> bool:
        """py-libp2p's ``signature_validator`` (StrictSign: the originator's signature over
        ``libp2p-pubsub:`` + the message without key and signature), with the key taken from
        the peer id once per originator (:meth:`_originator`). A peer id that embeds no key
        (RSA) goes through the library's function, which reads ``msg.key``."""
        from libp2p.pubsub.pb import rpc_pb2
        from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX, signature_validator

        if msg.signature == b"":
            return False
        key = self._originator(msg.from_id).libp2p_key
        if key is None:
            return bool(signature_validator(msg))
        if key is False:  # the embedded key does not hash to the peer id
            return False
        unsigned = rpc_pb2.Message(data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id, seqno=msg.seqno)
        try:
            return bool(key.verify(PUBSUB_SIGNING_PREFIX.encode() + unsigned.SerializeToString(), msg.signature))
        except Exception:  # noqa: BLE001 - as the library: any failure is a bad signature
            return False

    def _validator(self, forwarder: ID, msg: Any, *, own: bool = False) -> bool:
        topics = list(msg.topicIDs)
        if len(topics) != 1:
            self._reject(forwarder, None, "multi-topic", topics)
            return False
        known = self._originator(msg.from_id)
        originator = known.peer_id
        mid = self._msg_id(msg)
        cached = self._reject_cache.get(mid)
        if cached is not None:
            self._reject(forwarder, originator, cached, topics)
            return False
        origin = known.pubkey
        reason, env = self.checker.check(topics[0], msg.data, origin, self.clock_ms(), own=own)
        if reason is not None:
            if reason in FORWARDER_REASONS or reason in FORWARDER_PAYLOAD_REASONS:  # deterministic
                self._reject_cache[mid] = reason
                if len(self._reject_cache) > REJECT_CACHE_LEN:
                    self._reject_cache.popitem(last=False)
            self._reject(forwarder, originator, reason, topics)
            return False
        self._pending[id(msg)] = env  # type: ignore[assignment]
        if len(self._pending) > 4096:  # validated but never notified (e.g. self-loop drop)
            self._pending.popitem(last=False)
        return True

    def _reject(self, forwarder: ID, originator: ID | None, reason: str, topics: list[str]) -> None:
        """Count a rejection by reason and against whoever ``blame`` names."""
        self.stats.rejected[reason] += 1
        on_forwarder, on_originator = blame(reason)
        if not on_forwarder:
            self._spare_p4 = forwarder  # py-libp2p's P4 for this message is not its fault
            self.stats.ignored_forwards += 1
        else:
            self._charge(forwarder)
            if reason == "bad-libp2p-signature":  # not scored by py-libp2p (pitfall 4)
                self._spare_p4 = None
                for t in topics:
                    self.router.scorer.on_invalid_message(forwarder, t)
        if on_originator and originator is not None and not (on_forwarder and originator == forwarder):
            self._charge(originator)

    def _charge(self, peer: ID) -> None:
        """One reject against ``peer`` (decaying); ban it at BAN_REJECTS."""
        if peer == self.host.get_id():
            return
        pid = peer.to_base58()
        if pid in self.stats.rejected_from or len(self.stats.rejected_from) < 1024:
            self.stats.rejected_from[pid] += 1
        now = time.monotonic()
        count, last = self._reject_counts.get(pid, (0.0, now))
        count = count * 0.5 ** ((now - last) / REJECT_DECAY_S) + 1.0
        self._reject_counts[pid] = (count, now)
        if count >= BAN_REJECTS and pid not in self._banned_until:
            self.ban(peer)

    def ban(self, peer: ID) -> None:
        """Blacklist ``peer`` in pubsub and drop its connection for BAN_DURATION_S."""
        pid = peer.to_base58()
        self._banned_until[pid] = time.monotonic() + BAN_DURATION_S
        self.stats.bans += 1
        self.pubsub.add_to_blacklist(peer)
        self.pubsub.manager.run_task(self._disconnect, peer)

    async def _disconnect(self, peer: ID) -> None:
        with trio.move_on_after(5):
            with contextlib.suppress(Exception):  # already gone is fine
                await self.host.disconnect(peer)

    def is_banned(self, peer: ID) -> bool:
        return peer.to_base58() in self._banned_until

    def reject_count(self, peer: ID) -> float:
        return self._reject_counts.get(peer.to_base58(), (0.0, 0.0))[0]

    def peer_score(self, peer: ID) -> float:
        return float(self.router.scorer.score(peer, [topic_name(self.chain_id, k) for k in self.kinds]))

    # -- delivery --------------------------------------------------------------------------
    def _deliver(self, msg: Any) -> None:
        env = self._pending.pop(id(msg), None)
        topics = list(msg.topicIDs)
        if len(topics) != 1:
            return
        kind = kind_of_topic(self.chain_id, topics[0])
        if kind is None or kind not in self._send:
            return
        if env is None:  # validated earlier under another object; decode again (rare)
            try:
                env = decode(msg.data, expected=GossipEnvelope)
            except DecodeError:
                return
        if env.origin == self.kp.pubkey:
            return  # our own publish: the core already has it
        d = Delivery(kind, env, self._originator(msg.from_id).b58, self.clock_ms())
        try:
            self._send[kind].send_nowait(d)
            self.stats.delivered[kind] += 1
        except trio.WouldBlock:
            self.stats.delivery_dropped[kind] += 1

    async def receive(self, kind: str) -> Delivery:
        return await self._recv[kind].receive()

    def receive_nowait(self, kind: str) -> Delivery | None:
        try:
            return self._recv[kind].receive_nowait()
        except trio.WouldBlock:
            return None

    # -- publishing ------------------------------------------------------------------------
    def seal(self, kind: str, payload: bytes) -> bytes:
        """Encode + sign an envelope; ValueError if it exceeds the topic's limit."""
        return self._seal(kind, payload)[1]

    def _seal(self, kind: str, payload: bytes) -> tuple[GossipEnvelope, bytes]:
        env, data = seal_wire(self.kp, topic_name(self.chain_id, kind), payload, self.clock_ms())
        if len(data) > TOPIC_LIMITS[kind]:
            raise ValueError(f"{kind} message of {len(data)} bytes exceeds limit {TOPIC_LIMITS[kind]}")
        return env, data

    def _outbound_full(self) -> bool:
        return any(len(q) >= OUTBOUND_HIGH_WATER for q in self.pubsub.peer_queues.values())

    async def publish(self, kind: str, payload: bytes) -> bytes:
        """Publish ``payload`` on ``kind``; returns the message id. Waits (bounded) while a
        peer's outbound queue is near full, instead of letting py-libp2p drop silently."""
        env, data = self._seal(kind, payload)
        check = self.checker.payload_checks.get(kind) if kind in OWN_CHECK_KINDS else None
        if check is not None and (reason := check(env)) is not None:
            self.stats.own_refused[reason] += 1
            return message_id(data)  # not sent (OWN_CHECK_KINDS)
        # one envelope, signed once (this once sealed the checked envelope a second time)
        return await self.publish_sealed(kind, data)

    async def publish_sealed(self, kind: str, data: bytes) -> bytes:
        if self._outbound_full():
            self.stats.publish_waits += 1
            with trio.move_on_after(PUBLISH_WAIT_MAX_S) as scope:
                # py-libp2p signals no event when its per-peer queues drain: poll them
                while self._outbound_full():  # noqa: ASYNC110
                    await trio.sleep(0.002)
            if scope.cancelled_caught:
                self.stats.publish_wait_timeouts += 1
        mid = message_id(data)
        self._publishing = (data, mid)  # taken by AmbientPubsub.publish before its first await
        await self.pubsub.publish(topic_name(self.chain_id, kind), data)
        self.stats.published[kind] += 1
        self.stats.outbound_rpc_dropped = self.router.dropped_rpcs
        return mid

    def mesh_sizes(self) -> dict[str, int]:
        return {k: len(self.router.mesh.get(topic_name(self.chain_id, k), ())) for k in self.kinds}

