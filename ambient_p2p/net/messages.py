"""Wire messages of the networking layer (type ids 0x0200-0x02FF; spec/network.md).

Everything a node sends over gossipsub or a request/response stream is one canonical-CBOR
message from this module, decoded with :func:`ambient_p2p.core.codec.decode` (strict; only
``DecodeError``). The gossip envelope carries an Ambient-domain signature (purpose
``gossip``) on top of libp2p's own message signature: libp2p's signature is over its
protobuf framing and only means something inside gossipsub, while ours covers the topic
(so chain id and kind) and the payload, and can be re-verified by anything that stores or
relays the envelope outside libp2p.

Request/response messages are *not* signed: the Noise channel already authenticates the
peer that opened the stream, and responses are only ever matched to that stream.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..core import crypto
from ..core.blobs import MAX_BLOB_BYTES
from ..core.codec import Bool, Bytes, List, Opt, Rec, Text, UInt, encode, fld, message, record
from ..core.constants import PACKET_DATA_BYTES
from ..core.crypto import ZERO_SIGNATURE
from ..core.pol import LogitFingerprint
from ..core.shard import StageCommitment, StageFingerprint

#: Largest payload any gossip topic admits (the shreds topic; see gossip.TOPIC_LIMITS).
MAX_GOSSIP_PAYLOAD_BYTES = 128 * 1024
#: Envelope overhead allowance (topic name, origin, timestamps, signature, CBOR heads).
GOSSIP_ENVELOPE_OVERHEAD_BYTES = 512
#: Shreds in one gossip batch / one repair response (one FEC set is at most 32+32).
MAX_SHREDS_PER_BATCH = 64
#: Request/response limits.
MAX_REPAIR_ORPHAN_SLOTS = 16
MAX_POL_POSITIONS = 64
MAX_POL_OPENING_BYTES = 4096
MAX_PEERS_IN_LIST = 64
MAX_MULTIADDR_CHARS = 256


@message(type_id=0x0200, version=1, max_size=MAX_GOSSIP_PAYLOAD_BYTES + GOSSIP_ENVELOPE_OVERHEAD_BYTES)
@dataclass(frozen=True)
class GossipEnvelope:
    """One gossip message. ``signature`` is by ``origin`` for purpose ``gossip`` over the
    canonical encoding with the signature zeroed; ``origin`` must be the key of the libp2p
    peer that published it (checked by the topic validator)."""

    topic: str = fld(Text(96))
    origin: bytes = fld(Bytes(32, exact=True))
    wallclock_ms: int = fld(UInt(64))
    payload: bytes = fld(Bytes(MAX_GOSSIP_PAYLOAD_BYTES))
    signature: bytes = fld(Bytes(64, exact=True))


@message(type_id=0x0201, version=1, max_size=MAX_SHREDS_PER_BATCH * (PACKET_DATA_BYTES + 3) + 64)
@dataclass(frozen=True)
class ShredBatch:
    """The payload of the shreds topic: a bounded batch of shred packets (gossiping each
    1232-byte shred alone would cap a py-libp2p node near 0.7 MB/s; see spec)."""

    shreds: tuple[bytes, ...] = fld(List(Bytes(PACKET_DATA_BYTES), MAX_SHREDS_PER_BATCH))


# -- request / response -------------------------------------------------------------------
REPAIR_SHRED = 0  # the shred at (slot, index)
REPAIR_HIGHEST = 1  # the highest-index shred we hold of slot, at or above index
REPAIR_ORPHAN = 2  # the highest shred of slot and of up to MAX_REPAIR_ORPHAN_SLOTS ancestors
REPAIR_KINDS = (REPAIR_SHRED, REPAIR_HIGHEST, REPAIR_ORPHAN)


@message(type_id=0x0210, version=1, max_size=128)
@dataclass(frozen=True)
class RepairRequest:
    kind: int = fld(UInt(8))
    slot: int = fld(UInt(64))
    index: int = fld(UInt(32))
    nonce: int = fld(UInt(32))

    def __post_init__(self) -> None:
        if self.kind not in REPAIR_KINDS:
            raise ValueError(f"unknown repair kind {self.kind}")


@message(type_id=0x0211, version=1, max_size=MAX_SHREDS_PER_BATCH * (PACKET_DATA_BYTES + 3) + 64)
@dataclass(frozen=True)
class NoncedShreds:
    """A request/response nonce and up to 64 shred packets: the one schema of every
    "nonce + shreds" exchange (spec/network.md). The protocol id says what it means: the
    response of ``/ambient/repair/1`` and ``/ambient/repair-slot/1`` (empty for
    repair-slot when the responder holds none), the request of ``/ambient/shred-push/1``."""

    nonce: int = fld(UInt(32))
    shreds: tuple[bytes, ...] = fld(List(Bytes(PACKET_DATA_BYTES), MAX_SHREDS_PER_BATCH))


#: The names this schema had before it was shared (kept for importers).
RepairResponse = NoncedShreds
SlotShredsResponse = NoncedShreds
ShredPush = NoncedShreds


@message(type_id=0x0212, version=1, max_size=1024)
@dataclass(frozen=True)
class PolOpenRequest:
    """Ask a miner to open positions of a PoL commitment (Merkle root of fingerprints)."""

    commitment: bytes = fld(Bytes(32, exact=True))
    positions: tuple[int, ...] = fld(List(UInt(32), MAX_POL_POSITIONS))
    nonce: int = fld(UInt(32))

    def __post_init__(self) -> None:
        if not self.positions:
            raise ValueError("at least one position")
        if len(set(self.positions)) != len(self.positions):
            raise ValueError("positions repeat")


@message(type_id=0x0213, version=1, max_size=MAX_POL_POSITIONS * (MAX_POL_OPENING_BYTES + 5) + 64)
@dataclass(frozen=True)
class PolOpenResponse:
    """Openings in request order (format owned by spec/pol.md; opaque here)."""

    nonce: int = fld(UInt(32))
    openings: tuple[bytes, ...] = fld(List(Bytes(MAX_POL_OPENING_BYTES), MAX_POL_POSITIONS))


@message(type_id=0x0214, version=1, max_size=512)
@dataclass(frozen=True)
class ErrorResponse:
    """Sent instead of a response. ``code`` is one of :data:`ERROR_CODES`."""

    nonce: int = fld(UInt(32))
    code: str = fld(Text(32))
    detail: str = fld(Text(256))


ERROR_CODES = frozenset({"bad-request", "rate-limited", "not-found", "too-large", "unavailable", "internal"})
#: the stage protocol's own codes (spec/shard.md "Session protocol")
STAGE_ERROR_CODES = frozenset({"session-exists", "no-session", "bad-position", "busy", "wrong-stage"})


@message(type_id=0x0215, version=1, max_size=64)
@dataclass(frozen=True)
class PeersRequest:
    nonce: int = fld(UInt(32))


@message(type_id=0x0216, version=1, max_size=MAX_PEERS_IN_LIST * (MAX_MULTIADDR_CHARS + 3) + 64)
@dataclass(frozen=True)
class PeersResponse:
    """Dialable ``/.../p2p/<id>`` addresses of peers the responder is connected to."""

    nonce: int = fld(UInt(32))
    addrs: tuple[str, ...] = fld(List(Text(MAX_MULTIADDR_CHARS), MAX_PEERS_IN_LIST))
    note: str | None = fld(Opt(Text(64)), default=None)


@message(type_id=0x0217, version=1, max_size=128)
@dataclass(frozen=True)
class SlotShredsRequest:
    """Whole-slot repair (``/ambient/repair-slot/1``): the responder's data shreds of
    ``slot`` with index >= ``first_index``, ascending, at most :data:`MAX_SHREDS_PER_BATCH`."""

    slot: int = fld(UInt(64))
    first_index: int = fld(UInt(32))
    nonce: int = fld(UInt(32))


@message(type_id=0x0218, version=1, max_size=64)
@dataclass(frozen=True)
class ShredPushAck:
    """Answer to a shred push: how many pushed shreds the verified insert kept / refused."""

    nonce: int = fld(UInt(32))
    inserted: int = fld(UInt(32))
    rejected: int = fld(UInt(32))


@message(type_id=0x0219, version=1, max_size=128)
@dataclass(frozen=True)
class BlobRequest:
    """Ask a peer for the blob whose sha256 is ``sha256`` (``/ambient/blob/1``, spec/blobs.md)."""

    nonce: int = fld(UInt(32))
    sha256: bytes = fld(Bytes(32, exact=True))


@message(type_id=0x021A, version=1, max_size=MAX_BLOB_BYTES + 128)
@dataclass(frozen=True)
class BlobResponse:
    """The blob's bytes, or no ``data`` field when the responder does not hold it. The
    requester keeps ``data`` only if ``sha256(data) == sha256`` == the hash it asked for."""

    nonce: int = fld(UInt(32))
    sha256: bytes = fld(Bytes(32, exact=True))
    data: bytes | None = fld(Opt(Bytes(MAX_BLOB_BYTES)), default=None)


# -- TPU ingress (spec/tpu.md) ---------------------------------------------------------------
#: Transactions in one ``/ambient/tpu/1`` request (agave's QUIC TPU streams one per
#: transaction; one libp2p stream per batch amortises the stream setup instead).
MAX_TXS_PER_TX_BATCH = 64
#: The largest wire transaction (one packet, as agave's PACKET_DATA_SIZE).
MAX_TPU_TX_BYTES = PACKET_DATA_BYTES
#: Distinct refusal reasons one acknowledgement may list.
MAX_TPU_REASONS = 16


@message(type_id=0x0220, version=1, max_size=MAX_TXS_PER_TX_BATCH * (MAX_TPU_TX_BYTES + 3) + 64)
@dataclass(frozen=True)
class TxBatch:
    """A batch of wire transactions sent straight to a (current or next) leader
    (``/ambient/tpu/1``, spec/tpu.md). Not signed: each transaction carries its own
    signatures, and the Noise channel names the sender."""

    nonce: int = fld(UInt(32))
    txs: tuple[bytes, ...] = fld(List(Bytes(MAX_TPU_TX_BYTES), MAX_TXS_PER_TX_BATCH))


@message(type_id=0x0221, version=1, max_size=MAX_TPU_REASONS * 40 + 64)
@dataclass(frozen=True)
class TxBatchAck:
    """What the leader did with a batch: ``admitted`` to its mempool; the rest refused,
    counted per reason (``reasons[i]`` refused ``counts[i]`` times; spec/tpu.md)."""

    nonce: int = fld(UInt(32))
    admitted: int = fld(UInt(32))
    reasons: tuple[str, ...] = fld(List(Text(32), MAX_TPU_REASONS), default=())
    counts: tuple[int, ...] = fld(List(UInt(32), MAX_TPU_REASONS), default=())

    def __post_init__(self) -> None:
        if len(self.reasons) != len(self.counts):
            raise ValueError("reasons and counts differ in length")


# -- envelope signing -----------------------------------------------------------------------


def envelope_signing_bytes(env: GossipEnvelope) -> bytes:
    return encode(dataclasses.replace(env, signature=ZERO_SIGNATURE))


def seal_envelope(kp: crypto.Keypair, topic: str, payload: bytes, wallclock_ms: int) -> GossipEnvelope:
    """Build and sign an envelope for ``payload`` on ``topic``."""
    env = GossipEnvelope(topic=topic, origin=kp.pubkey, wallclock_ms=wallclock_ms, payload=payload, signature=ZERO_SIGNATURE)
    return dataclasses.replace(env, signature=kp.sign("gossip", envelope_signing_bytes(env)))


def envelope_signature_ok(env: GossipEnvelope) -> bool:
    return crypto.verify(env.origin, "gossip", envelope_signing_bytes(env), env.signature)


def shred_key(shred: bytes) -> tuple[int, int] | None:
    """(slot, index) from a shred's common header (agave layout: signature 64, variant 1,
    slot u64 LE, index u32 LE), or None if the packet is too short to hold one."""
    if len(shred) < 77 or len(shred) > PACKET_DATA_BYTES:
        return None
    return int.from_bytes(shred[65:73], "little"), int.from_bytes(shred[73:77], "little")


def make_standin_shred(
    slot: int, index: int, body: bytes = b"", size: int = PACKET_DATA_BYTES, parent_offset: int = 1
) -> bytes:
    """A stand-in data shred with agave's header layout (common header: zero signature and
    variant, slot, index, version 0, fec_set_index 0; data header: parent_offset, flags 0,
    size) for tests and benchmarks until the ledger's shreds land."""
    head = (
        bytes(65)
        + slot.to_bytes(8, "little")
        + index.to_bytes(4, "little")
        + bytes(6)
        + min(parent_offset, slot).to_bytes(2, "little")
        + bytes(1)
        + size.to_bytes(2, "little")
    )
    pkt = (head + body)[:size]
    return pkt + bytes(size - len(pkt))


# -- joining a network (spec/join.md; issue 20) ---------------------------------------------
#: The most genesis bytes a ``GenesisResponse`` carries: the codec's 1 MiB message bound
#: less the response's own fields (a genesis of a few KiB in practice).
MAX_GENESIS_RESPONSE_BYTES = (1 << 20) - 128


@message(type_id=0x0230, version=1, max_size=64)
@dataclass(frozen=True)
class GenesisRequest:
    """Ask a peer for its chain's genesis (``/ambient/genesis/1``, spec/join.md)."""

    nonce: int = fld(UInt(32))


@message(type_id=0x0231, version=1, max_size=1 << 20)
@dataclass(frozen=True)
class GenesisResponse:
    """The canonical encoding of the responder's ``Genesis`` (0x0001), or no ``genesis``
    field when it runs without one (a gossip-only node). The requester hashes exactly these
    bytes (core/join.py ``genesis_from_answer``)."""

    nonce: int = fld(UInt(32))
    genesis: bytes | None = fld(Opt(Bytes(MAX_GENESIS_RESPONSE_BYTES)), default=None)


#: Snapshot sync (spec/join.md "Snapshot sync"): attestations a node hands out, and chunks.
MAX_SNAPSHOT_OFFERS = 4
MAX_SNAPSHOT_CHUNK_HASHES = 64
MAX_SNAPSHOT_CHUNK_BYTES = 64 * 1024


@record
@dataclass(frozen=True)
class SnapshotAttestation:
    """A node's signed statement about a rooted snapshot it serves (core/join.py
    ``Attestation``; signed bytes in spec/join.md, purpose ``snapshot``)."""

    identity: bytes = fld(Bytes(32, exact=True))
    genesis_hash: bytes = fld(Bytes(32, exact=True))
    slot: int = fld(UInt(64))
    bank_hash: bytes = fld(Bytes(32, exact=True))
    snapshot_hash: bytes = fld(Bytes(32, exact=True))
    size: int = fld(UInt(32))
    chunk_bytes: int = fld(UInt(32))
    chunk_hashes: tuple[bytes, ...] = fld(List(Bytes(32, exact=True), MAX_SNAPSHOT_CHUNK_HASHES))
    signature: bytes = fld(Bytes(64, exact=True))


@message(type_id=0x0232, version=1, max_size=64)
@dataclass(frozen=True)
class SnapshotOffersRequest:
    """Ask a peer which rooted node snapshots it serves (``/ambient/snapshot-offers/1``)."""

    nonce: int = fld(UInt(32))


@message(type_id=0x0233, version=1, max_size=MAX_SNAPSHOT_OFFERS * (MAX_SNAPSHOT_CHUNK_HASHES * 34 + 320) + 64)
@dataclass(frozen=True)
class SnapshotOffers:
    """The responder's attestations, newest first (empty: it serves none)."""

    nonce: int = fld(UInt(32))
    offers: tuple[SnapshotAttestation, ...] = fld(List(Rec(SnapshotAttestation), MAX_SNAPSHOT_OFFERS))


@message(type_id=0x0234, version=1, max_size=128)
@dataclass(frozen=True)
class SnapshotChunkRequest:
    """Chunk ``index`` of the snapshot whose sha256 is ``snapshot_hash``
    (``/ambient/snapshot-chunk/1``)."""

    nonce: int = fld(UInt(32))
    snapshot_hash: bytes = fld(Bytes(32, exact=True))
    index: int = fld(UInt(32))


@message(type_id=0x0235, version=1, max_size=MAX_SNAPSHOT_CHUNK_BYTES + 128)
@dataclass(frozen=True)
class SnapshotChunk:
    """The chunk's bytes (checked by the requester against the attested chunk hash)."""

    nonce: int = fld(UInt(32))
    index: int = fld(UInt(32))
    data: bytes = fld(Bytes(MAX_SNAPSHOT_CHUNK_BYTES))


# -- sharded inference: the stage session protocol (spec/shard.md, type ids 0x0240-0x024F) ---
#: most rows (sequence positions) one forward frame may carry; a longer prompt is sent as
#: several frames (spec/shard.md "Frames")
MAX_STAGE_FRAME_ROWS = 1024
#: Longest libp2p peer id text a chained open names (base58 of an identity multihash: ~52).
MAX_PEER_ID_CHARS = 128
#: most hidden-state (or logits) bytes one frame may carry: a message is at most 1 MiB
#: (core/codec.py MAX_MESSAGE_BYTES); 1,000,000 bytes = 434 SmolLM2 rows of 576 floats
MAX_STAGE_FRAME_BYTES = 1_000_000


@message(type_id=0x0240, version=1, max_size=2048)
@dataclass(frozen=True)
class StageOpenRequest:
    """Open a session for ``query`` on a stage serving layers ``start:end`` of ``model_id``.
    ``max_positions`` bounds the session's KV cache (prompt + output tokens); sampling
    parameters are the query's (the last stage picks the token); ``want_logits`` asks the
    last stage to return the last row's float32 logits too (tests and benchmarks)."""

    nonce: int = fld(UInt(32))
    query: bytes = fld(Bytes(32, exact=True))
    model_id: bytes = fld(Bytes(32, exact=True))
    start: int = fld(UInt(16))
    end: int = fld(UInt(16))
    prompt_len: int = fld(UInt(32))
    max_positions: int = fld(UInt(32))
    temp_milli: int = fld(UInt(32))
    sample_seed: bytes = fld(Bytes(32, exact=True))
    prompt_hash: bytes = fld(Bytes(32, exact=True))
    want_logits: bool = fld(Bool(), default=False)
    # A chained session (spec/shard.md "Chained sessions"): frames arrive on
    # ``/ambient/stage-chain/1`` from ``prev_peer`` (absent: the driver itself) and the
    # outputs go on to ``next_peer`` at ``next_addrs`` (absent: the last stage, whose results
    # go back to the driver on ``/ambient/stage-results/1``). Absent ``chain``: relay mode.
    chain: bool | None = fld(Opt(Bool()), default=None)
    prev_peer: str | None = fld(Opt(Text(MAX_PEER_ID_CHARS)), default=None)
    next_peer: str | None = fld(Opt(Text(MAX_PEER_ID_CHARS)), default=None)
    next_addrs: tuple[str, ...] | None = fld(Opt(List(Text(MAX_MULTIADDR_CHARS), 4)), default=None)

    def __post_init__(self) -> None:
        if not self.chain and (self.prev_peer or self.next_peer or self.next_addrs):
            raise ValueError("prev/next peers belong to a chained session")
        if bool(self.next_peer) != bool(self.next_addrs):
            raise ValueError("next_peer and next_addrs come together")


@message(type_id=0x0241, version=1, max_size=256)
@dataclass(frozen=True)
class StageOpenResponse:
    nonce: int = fld(UInt(32))
    hidden_size: int = fld(UInt(32))
    total: int = fld(UInt(16))
    stage: bytes = fld(Bytes(32, exact=True))  # the key that will sign the commitment
    tier: int = fld(UInt(8))
    vocab: int = fld(UInt(32))  # the model's vocabulary (the driver's PoL commitment names it)


def _check_frame_rows(rows: int, tokens: tuple[int, ...], hidden: bytes) -> None:
    """The row rules stage frames share (relay and chained): 1..MAX_STAGE_FRAME_ROWS rows,
    either tokens (one per row) or hidden bytes."""
    if not 1 <= rows <= MAX_STAGE_FRAME_ROWS:
        raise ValueError(f"rows must be 1..{MAX_STAGE_FRAME_ROWS}")
    if bool(tokens) == bool(hidden):
        raise ValueError("a frame carries either tokens or hidden bytes")
    if tokens and len(tokens) != rows:
        raise ValueError("one token per row")


@message(type_id=0x0242, version=1, max_size=MAX_STAGE_FRAME_BYTES + 4 * MAX_STAGE_FRAME_ROWS + 256)
@dataclass(frozen=True)
class StageForwardRequest:
    """One frame at sequence positions ``pos .. pos + rows - 1``: token ids (first stage)
    or ``rows x hidden_size`` float32 little-endian values (other stages)."""

    nonce: int = fld(UInt(32))
    query: bytes = fld(Bytes(32, exact=True))
    pos: int = fld(UInt(32))
    rows: int = fld(UInt(32))
    tokens: tuple[int, ...] = fld(List(UInt(32), MAX_STAGE_FRAME_ROWS), default=())
    hidden: bytes = fld(Bytes(MAX_STAGE_FRAME_BYTES), default=b"")

    def __post_init__(self) -> None:
        _check_frame_rows(self.rows, self.tokens, self.hidden)


@message(type_id=0x0243, version=1, max_size=MAX_STAGE_FRAME_BYTES + 2048)
@dataclass(frozen=True)
class StageForwardResponse:
    """The boundary: ``hidden`` (rows x hidden_size float32 LE) from every stage but the last;
    the last stage returns only its boundary's last row (the row its PoL leaf quantizes),
    ``fp``, the final-logits fingerprint of that row (its token is the one the query's
    sampling rule picks; absent for a prompt frame that is not the prompt's last), and
    ``logits`` (that row's float32 logits) when the session asked."""

    nonce: int = fld(UInt(32))
    pos: int = fld(UInt(32))
    rows: int = fld(UInt(32))
    hidden: bytes = fld(Bytes(MAX_STAGE_FRAME_BYTES), default=b"")
    fp: LogitFingerprint | None = fld(Opt(Rec(LogitFingerprint)), default=None)
    logits: bytes = fld(Bytes(MAX_STAGE_FRAME_BYTES), default=b"")

    def __post_init__(self) -> None:
        if bool(self.logits) and self.fp is None:
            raise ValueError("logits come only with the last stage's fingerprint")


@message(type_id=0x0244, version=1, max_size=128)
@dataclass(frozen=True)
class StageCloseRequest:
    """End a session; ``num_tokens > 0`` asks for the stage commitment over frames
    ``0..num_tokens-1`` (0: abandon, no commitment)."""

    nonce: int = fld(UInt(32))
    query: bytes = fld(Bytes(32, exact=True))
    num_tokens: int = fld(UInt(32))


@message(type_id=0x0245, version=1, max_size=1024)
@dataclass(frozen=True)
class StageCloseResponse:
    nonce: int = fld(UInt(32))
    commitment: StageCommitment | None = fld(Opt(Rec(StageCommitment)), default=None)


@message(type_id=0x0246, version=1, max_size=512)
@dataclass(frozen=True)
class StageAnnounce:
    """Gossip: a node serves layers ``start:end`` of ``model_id`` at ``tokens_per_s_milli``
    (decode steps per second x 1000, measured at start-up). Signed by the gossip envelope."""

    model_id: bytes = fld(Bytes(32, exact=True))
    start: int = fld(UInt(16))
    end: int = fld(UInt(16))
    total: int = fld(UInt(16))
    tokens_per_s_milli: int = fld(UInt(32))
    addrs: tuple[str, ...] = fld(List(Text(MAX_MULTIADDR_CHARS), 4), default=())


# -- chained stage sessions (spec/shard.md "Chained sessions") ---------------------------------
#: Hidden bytes one chain frame may carry: room is left for the sender's leaf (a
#: StageFingerprint is at most 65,792 bytes) under the frame limit, so that prompt frames
#: are cut the same way in both modes (spec/shard.md "Frames").
MAX_CHAIN_HIDDEN_BYTES = MAX_STAGE_FRAME_BYTES - 65_792


@message(type_id=0x0247, version=1, max_size=MAX_STAGE_FRAME_BYTES + 4 * MAX_STAGE_FRAME_ROWS + 512)
@dataclass(frozen=True)
class StageChainFrame:
    """One forward frame on ``/ambient/stage-chain/1``, written by the driver (to the first
    stage: ``tokens``) or by stage k to stage k+1 (``hidden``: its output bytes for the
    frame). ``leaf`` is the sender's leaf when this frame ends one (stage k >= 0 sending on;
    never from the driver): the receiver checks it against the bytes it got before it runs
    the frame (``broken-link``). ``nonce`` is the driver's, carried unchanged down the
    chain; the last stage's result for the frame bears it."""

    nonce: int = fld(UInt(32))
    query: bytes = fld(Bytes(32, exact=True))
    pos: int = fld(UInt(32))
    rows: int = fld(UInt(32))
    tokens: tuple[int, ...] = fld(List(UInt(32), MAX_STAGE_FRAME_ROWS), default=())
    hidden: bytes = fld(Bytes(MAX_CHAIN_HIDDEN_BYTES), default=b"")
    leaf: StageFingerprint | None = fld(Opt(Rec(StageFingerprint)), default=None)

    def __post_init__(self) -> None:
        _check_frame_rows(self.rows, self.tokens, self.hidden)
        if self.tokens and self.leaf is not None:
            raise ValueError("token frames come from the driver, which has no leaf")


@message(type_id=0x0248, version=1, max_size=128)
@dataclass(frozen=True)
class StageResultsRequest:
    """The first and only frame the driver writes on ``/ambient/stage-results/1``: attach
    this stream to the driver's chained session for ``query``. The stage then writes, on
    the same stream, one ``StageForwardResponse`` per frame (the last stage only) and an
    ``ErrorResponse`` (nonce: the frame's) when the session fails at this stage."""

    nonce: int = fld(UInt(32))
    query: bytes = fld(Bytes(32, exact=True))


@message(type_id=0x0249, version=1, max_size=128)
@dataclass(frozen=True)
class StageLeavesRequest:
    """Ask an open session for its leaves from output position ``first`` on (the driver of
    a chained session, before close: it never saw the middle boundaries)."""

    nonce: int = fld(UInt(32))
    query: bytes = fld(Bytes(32, exact=True))
    first: int = fld(UInt(32))


@message(type_id=0x024A, version=1, max_size=1 << 20)
@dataclass(frozen=True)
class StageLeavesResponse:
    """Leaves ``first ..`` in order: as many as the session holds, cut where their encodings
    would pass MAX_STAGE_FRAME_BYTES (at least one when any is left; none past the end)."""

    nonce: int = fld(UInt(32))
    first: int = fld(UInt(32))
    leaves: tuple[StageFingerprint, ...] = fld(List(Rec(StageFingerprint), 4096), default=())
