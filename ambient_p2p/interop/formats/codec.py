"""Codec vectors: canonical round-trips and must-reject malformations (spec/encoding.md).

``roundtrip/<case>``: input.cbor decodes, output.json is its JSON view (codec.to_json, nested
records as plain maps), and
re-encoding gives back input.cbor byte for byte.
``reject/<case>``: input.cbor must be rejected; meta.json names our reason code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from typing import Any

import cbor2
import numpy as np

from ...core import codec
from ...core.blobs import MAX_BLOB_BYTES, token_blob
from ...core.crypto import Keypair
from ...core.messages import Genesis, ModelSpec, NodeInfo, sign_message
from ...devnet.genesis import vectors_genesis
from ...registry import load_all_types
from .. import Case, Rejected

FORMAT = "codec"


def run(handler: str, data: bytes) -> Any:
    load_all_types()  # vectors may hold any layer's message
    try:
        obj = codec.decode(data)
    except codec.DecodeError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    if codec.encode(obj) != data:  # decode() guarantees this; vectors state it explicitly
        raise Rejected("non-canonical", "re-encoding differs")
    return _nested_plain(codec.to_json(obj))


# -- sample messages --------------------------------------------------------------------
def sample_genesis(n_nodes: int = 2, digest: bool = False) -> Genesis:
    return vectors_genesis(n_nodes, digest)


def sample_node_info() -> NodeInfo:
    kp = Keypair.deterministic("vectors/node", 0)
    info = NodeInfo(
        identity=kp.pubkey,
        genesis_hash=sample_genesis().hash(),
        addrs=("/ip4/127.0.0.1/tcp/8900", "/ip4/127.0.0.1/udp/8900/quic-v1"),
        wallclock_ms=1_767_225_600_000,
        software="ambient-p2p/0.1.0",
        signature=bytes(64),
    )
    signed: NodeInfo = sign_message(info, kp, "node-info")
    return signed


def _wire(msg: Any) -> list[Any]:
    """The decoded CBOR structure of a message (for building malformed variants)."""
    wire: list[Any] = cbor2.loads(codec.encode(msg))
    return wire


def _head(major: int, arg: int, width: int | None = None) -> bytes:
    """A CBOR head; ``width`` forces a (possibly non-shortest) argument size in bytes."""
    if width is None:
        if arg < 24:
            return bytes([major << 5 | arg])
        width = 1 if arg < 1 << 8 else 2 if arg < 1 << 16 else 4 if arg < 1 << 32 else 8
    ai = {0: None, 1: 24, 2: 25, 4: 26, 8: 27}[width]
    if ai is None:
        return bytes([major << 5 | arg])
    return bytes([major << 5 | ai]) + arg.to_bytes(width, "big")


def _raw_map(pairs: list[tuple[Any, bytes]]) -> bytes:
    """A map whose keys/values are given in order, values already encoded."""
    return _head(5, len(pairs)) + b"".join(cbor2.dumps(k) + v for k, v in pairs)


def _envelope(type_id: int, version: int, body_raw: bytes) -> bytes:
    return _head(4, 3) + cbor2.dumps(type_id) + cbor2.dumps(version) + body_raw


def _node_info_pairs() -> list[tuple[Any, bytes]]:
    body = _wire(sample_node_info())[2]
    return [(k, cbor2.dumps(body[k], canonical=True)) for k in sorted(body, key=lambda s: (len(s), s))]


def _with_body(mutate: Any, msg: Any = None) -> bytes:
    tid, ver, body = _wire(msg or sample_node_info())
    mutate(body)
    return cbor2.dumps([tid, ver, body], canonical=True)


def _reject_cases() -> list[tuple[str, str, str, bytes]]:
    """(name, reason, description, input)."""
    good = codec.encode(sample_node_info())
    tid, ver, _ = _wire(sample_node_info())
    pairs = _node_info_pairs()
    raw_body = _raw_map(pairs)
    assert _envelope(tid, ver, raw_body) == good  # the raw builders reproduce the real encoding

    def set_field(name: str, value: Any) -> Any:
        return lambda b: b.__setitem__(name, value)

    deep: Any = 0
    for _ in range(17):
        deep = [deep]
    return [
        ("empty", "truncated", "zero-length input", b""),
        ("truncated", "truncated", "a valid message with its last byte cut", good[:-1]),
        ("trailing-bytes", "trailing-bytes", "a valid message followed by one extra byte", good + b"\x00"),
        (
            "indefinite-array",
            "indefinite-length",
            "the envelope as an indefinite-length array",
            b"\x9f" + good[1:] + b"\xff",
        ),
        (
            "indefinite-bytes",
            "indefinite-length",
            "identity as an indefinite-length byte string of two chunks",
            _envelope(
                tid,
                ver,
                _raw_map(
                    [
                        (k, b"\x5f" + cbor2.dumps(v[:16]) + cbor2.dumps(v[16:]) + b"\xff")
                        if k == "identity"
                        else (k, cbor2.dumps(v))
                        for k, v in ((k, cbor2.loads(raw)) for k, raw in pairs)
                    ]
                ),
            ),
        ),
        (
            "non-shortest-int",
            "non-canonical",
            "type_id 2 encoded with a 1-byte argument (0x18 0x02)",
            _head(4, 3) + _head(0, tid, 1) + good[2:],
        ),
        (
            "non-shortest-length",
            "non-canonical",
            "the body map's length encoded in 2 bytes",
            _head(4, 3) + cbor2.dumps(tid) + cbor2.dumps(ver) + _head(5, len(pairs), 2) + raw_body[1:],
        ),
        (
            "duplicate-key",
            "duplicate-key",
            "the 'software' key appears twice",
            _envelope(
                tid,
                ver,
                _raw_map(sorted(pairs + [p for p in pairs if p[0] == "software"], key=lambda p: (len(p[0]), p[0]))),
            ),
        ),
        (
            "unsorted-keys",
            "unsorted-keys",
            "body keys in reverse order",
            _envelope(tid, ver, _raw_map(list(reversed(pairs)))),
        ),
        (
            "unknown-tag",
            "unknown-tag",
            "the body wrapped in tag 42",
            _head(4, 3) + cbor2.dumps(tid) + cbor2.dumps(ver) + _head(6, 42) + raw_body,
        ),
        (
            "datetime-tag",
            "unknown-tag",
            "wallclock_ms as a tag-1 epoch datetime",
            _with_body(set_field("wallclock_ms", cbor2.CBORTag(1, 1_767_225_600))),
        ),
        (
            "bignum",
            "unknown-tag",
            "wallclock_ms as a tag-2 bignum (2^64)",
            _with_body(set_field("wallclock_ms", 1 << 64)),
        ),
        (
            "float-for-int",
            "float",
            "wallclock_ms as the float 1.0",
            _with_body(set_field("wallclock_ms", 1.0)),
        ),
        (
            "float64-for-int",
            "float",
            "wallclock_ms as a float64",
            _envelope(
                tid,
                ver,
                _raw_map([(k, b"\xfb" + struct.pack(">d", 1.5) if k == "wallclock_ms" else v) for k, v in pairs]),
            ),
        ),
        ("nan", "nan", "wallclock_ms as NaN", _with_body(set_field("wallclock_ms", float("nan")))),
        ("undefined", "undefined", "software as 'undefined'", _with_body(set_field("software", cbor2.undefined))),
        (
            "simple-value",
            "simple-value",
            "software as simple value 99",
            _with_body(set_field("software", cbor2.CBORSimpleValue(99))),
        ),
        (
            "reserved-additional-info",
            "malformed",
            "an item head with reserved additional info 28",
            _head(4, 3) + b"\x1c" + good[2:],
        ),
        ("too-deep", "too-deep", "a body field nested 17 arrays deep", _with_body(set_field("software", deep))),
        (
            "oversized",
            "too-large",
            "a NodeInfo of more than its 4096-byte limit",
            _with_body(set_field("software", "x" * 5000)),
        ),
        ("unknown-type", "unknown-type", "type_id 0x7777 is not registered", cbor2.dumps([0x7777, 1, {}])),
        (
            "unsupported-version",
            "unsupported-version",
            "NodeInfo version 2",
            cbor2.dumps([tid, 2, _wire(sample_node_info())[2]], canonical=True),
        ),
        ("bad-envelope", "bad-envelope", "a two-element envelope", cbor2.dumps([tid, ver])),
        ("not-an-array", "bad-envelope", "a bare integer", cbor2.dumps(7)),
        ("unknown-field", "unknown-field", "an extra 'color' field", _with_body(set_field("color", 1))),
        ("missing-field", "missing-field", "no 'software' field", _with_body(lambda b: b.pop("software"))),
        ("wrong-type", "wrong-type", "identity as text", _with_body(set_field("identity", "x" * 32))),
        ("bool-for-int", "wrong-type", "wallclock_ms as true", _with_body(set_field("wallclock_ms", True))),
        ("null-field", "wrong-type", "software as null", _with_body(set_field("software", None))),
        ("negative-uint", "out-of-range", "wallclock_ms = -1", _with_body(set_field("wallclock_ms", -1))),
        (
            "wrong-length",
            "wrong-length",
            "identity of 31 bytes",
            _with_body(set_field("identity", bytes(31))),
        ),
        ("text-too-long", "too-large", "software of 65 bytes (limit 64)", _with_body(set_field("software", "v" * 65))),
        (
            "list-too-long",
            "too-large",
            "9 addrs (limit 8)",
            _with_body(set_field("addrs", ["/ip4/127.0.0.1/tcp/1"] * 9)),
        ),
        (
            "invalid-utf8",
            "invalid-utf8",
            "software as a text string holding 0xff",
            _envelope(tid, ver, _raw_map([(k, b"\x61\xff" if k == "software" else v) for k, v in pairs])),
        ),
        (
            "invalid-value",
            "invalid-value",
            "a genesis whose chain_id has upper-case letters",
            _with_body(set_field("chain_id", "Ambient"), sample_genesis()),
        ),
        (
            "nested-missing-field",
            "missing-field",
            "a genesis whose poh record lacks ticks_per_slot",
            _with_body(lambda b: b["poh"].pop("ticks_per_slot"), sample_genesis()),
        ),
        *_blob_reject_cases(),
        *_tpu_reject_cases(),
        *_stage_reject_cases(),
    ]


def _blob_reject_cases() -> list[tuple[str, str, str, bytes]]:
    """The limits of spec/blobs.md's wire types (the frame itself stays under its max size)."""
    from ...net import messages as m

    over = m.BlobResponse(13, _BLOB_HASH, _BLOB)
    return [
        (
            "blob-data-too-large",
            "too-large",
            f"BlobResponse data of MAX_BLOB_BYTES + 1 = {MAX_BLOB_BYTES + 1} bytes",
            _with_body(lambda b: b.__setitem__("data", bytes(MAX_BLOB_BYTES + 1)), over),
        ),
        (
            "blob-data-null",
            "wrong-type",
            "BlobResponse whose absent data is written as null (an optional field is omitted)",
            _with_body(lambda b: b.__setitem__("data", None), over),
        ),
        (
            "blob-hash-short",
            "wrong-length",
            "BlobRequest naming a 31-byte hash",
            _with_body(lambda b: b.__setitem__("sha256", _BLOB_HASH[:31]), m.BlobRequest(11, _BLOB_HASH)),
        ),
    ]


def _tpu_transfer() -> bytes:
    """A system transfer as a client sends it (spec/tpu.md): deterministic keys and blockhash."""
    from ...core.crypto import Keypair
    from ...ledger.producer import transfer_tx

    return transfer_tx(Keypair.deterministic("interop-tpu", 0), Keypair.deterministic("interop-tpu", 1).pubkey,
                       1_000, hashlib.sha256(b"interop tpu blockhash").digest())


def _tpu_roundtrips() -> list[tuple[str, str, Any]]:
    """The ``/ambient/tpu/1`` messages (spec/tpu.md)."""
    from ...net import messages as m

    return [
        ("tx-batch", "TxBatch holding one signed system transfer", m.TxBatch(21, (_tpu_transfer(),))),
        ("tx-batch-ack", "TxBatchAck: 61 admitted, 2 duplicate, 1 blockhash-expired",
         m.TxBatchAck(21, 61, ("duplicate", "blockhash-expired"), (2, 1))),
    ]


def _tpu_reject_cases() -> list[tuple[str, str, str, bytes]]:
    """The limits of spec/tpu.md's wire types."""
    from ...net import messages as m

    tx = _tpu_transfer()
    one = m.TxBatch(22, (tx,))
    return [
        ("tx-batch-too-many", "too-large", f"TxBatch of MAX_TXS_PER_TX_BATCH + 1 = {m.MAX_TXS_PER_TX_BATCH + 1} "
         "transactions", _with_body(lambda b: b.__setitem__("txs", [tx] * (m.MAX_TXS_PER_TX_BATCH + 1)), one)),
        ("tx-batch-tx-too-large", "too-large", f"TxBatch holding a {m.MAX_TPU_TX_BYTES + 1}-byte transaction",
         _with_body(lambda b: b.__setitem__("txs", [bytes(m.MAX_TPU_TX_BYTES + 1)]), one)),
        ("tx-batch-ack-mismatch", "invalid-value", "TxBatchAck with two reasons and one count",
         _with_body(lambda b: b.__setitem__("reasons", ["duplicate", "mempool-full"]),
                    m.TxBatchAck(22, 0, ("duplicate",), (3,)))),
    ]


_BLOB = token_blob([1, 11954, 11])  # spec/blobs.md: a prompt's token ids
_BLOB_HASH = hashlib.sha256(_BLOB).digest()


def _network_roundtrips() -> list[tuple[str, str, Any]]:
    """The request/response messages of spec/network.md section 3 (one "nonce + shreds" schema
    for repair answers, whole-slot answers and pushed shreds)."""
    from ...net import messages as m
    from .shred import _batch

    b = _batch(b"interop nonced shreds " * 30, True)
    shreds = (b.data[0].payload, b.data[1].payload, b.code[0].payload)
    return [
        ("repair-request", "RepairRequest kind 1 (highest)", m.RepairRequest(m.REPAIR_HIGHEST, 1000, 3, 0xDEADBEEF)),
        ("nonced-shreds", "NoncedShreds with two data and one coding shred", m.NoncedShreds(7, shreds)),
        ("nonced-shreds-empty", "NoncedShreds with no shreds (repair-slot: none held)", m.NoncedShreds(8, ())),
        ("slot-shreds-request", "SlotShredsRequest from index 5", m.SlotShredsRequest(1000, 5, 9)),
        ("shred-push-ack", "ShredPushAck", m.ShredPushAck(7, 2, 1)),
        ("blob-request", "BlobRequest for a prompt blob (spec/blobs.md)", m.BlobRequest(11, _BLOB_HASH)),
        ("blob-response", "BlobResponse carrying a token blob", m.BlobResponse(11, _BLOB_HASH, _BLOB)),
        ("blob-response-not-found", "BlobResponse without data: the responder does not hold it",
         m.BlobResponse(12, _BLOB_HASH)),
        ("blob-response-largest", f"BlobResponse with data of exactly MAX_BLOB_BYTES = {MAX_BLOB_BYTES} bytes",
         m.BlobResponse(14, hashlib.sha256(bytes(MAX_BLOB_BYTES)).digest(), bytes(MAX_BLOB_BYTES))),
    ]


def _nested_plain(view: Any, top: bool = True) -> Any:
    """The decoded view as spec/encoding.md defines it: a record nested in a message is a
    plain map, even when its type is also a message of its own (``codec.to_json`` wraps
    those in {type, type_id, version, body}), e.g. a StageChainFrame's ``leaf``."""
    wrapper = {"type", "type_id", "version", "body"}
    if isinstance(view, dict):
        if set(view) == wrapper:
            return {**view, "body": _nested_plain(view["body"], False)} if top else _nested_plain(view["body"], False)
        return {k: _nested_plain(v, False) for k, v in view.items()}
    if isinstance(view, list):
        return [_nested_plain(v, False) for v in view]
    return view


def _stage_leaf(pos: int) -> Any:
    from ...core import shard as sh

    row = [0.5, -1.25, 3.0, 1e-3]
    return sh.StageFingerprint(pos=pos, in_digest=hashlib.sha256(b"interop stage in").digest(),
                               out_digest=hashlib.sha256(b"interop stage out").digest(),
                               q=sh.quantize_row(np.array(row, dtype="<f4")))


def _stage_roundtrips() -> list[tuple[str, str, Any]]:
    """The chained-session messages of spec/shard.md "Chained sessions"."""
    from ...net import messages as m

    q = hashlib.sha256(b"interop stage query").digest()
    hidden = bytes(range(16)) * 2  # two rows of a 4-wide boundary
    return [
        ("stage-chain-frame-tokens", "StageChainFrame from the driver: two prompt tokens for the first stage",
         m.StageChainFrame(nonce=5, query=q, pos=0, rows=2, tokens=(1, 11954))),
        ("stage-chain-frame-leaf", "StageChainFrame from stage k to k+1: two rows of hidden bytes and stage k's leaf",
         m.StageChainFrame(nonce=5, query=q, pos=0, rows=2, hidden=hidden, leaf=_stage_leaf(0))),
        ("stage-results-request", "StageResultsRequest attaching a results stream",
         m.StageResultsRequest(nonce=6, query=q)),
        ("stage-leaves-request", "StageLeavesRequest from leaf 1", m.StageLeavesRequest(nonce=7, query=q, first=1)),
        ("stage-leaves-response", "StageLeavesResponse with two leaves from 1",
         m.StageLeavesResponse(nonce=7, first=1, leaves=(_stage_leaf(1), _stage_leaf(2)))),
    ]


def _stage_reject_cases() -> list[tuple[str, str, str, bytes]]:
    from ...net import messages as m

    q = hashlib.sha256(b"interop stage query").digest()
    frame = m.StageChainFrame(nonce=5, query=q, pos=0, rows=1, tokens=(7,))
    return [
        ("stage-chain-frame-tokens-with-leaf", "invalid-value", "StageChainFrame with tokens and a leaf (the driver "
         "has no leaf)", _with_body(lambda b: b.__setitem__("leaf", _wire(_stage_leaf(0))[2]), frame)),
        ("stage-chain-frame-both", "invalid-value", "StageChainFrame with tokens and hidden bytes",
         _with_body(lambda b: b.__setitem__("hidden", bytes(4)), frame)),
    ]


def _auction_bank_snapshot() -> Any:
    """A ledger record (spec/blockstore.md) whose bank holds auction accounts (spec/auction.md)."""
    from ...ledger.snapshot import bank_to_snapshot
    from . import auction

    chain = auction.Chain()
    chain.register(*auction.MINERS[:3])
    chain.request(auction.request_params())
    return bank_to_snapshot(chain.bank)


def _work_bank_snapshot() -> Any:
    """A ledger record whose bank holds work accounts and an epoch tally (spec/lstake.md
    "Work accounts in the bank", spec/rewards.md)."""
    from ...core.bank import Bank
    from ...core.crypto import Keypair
    from ...ledger.snapshot import bank_to_snapshot

    ids = [Keypair.deterministic("vectors/codec-work", i).pubkey for i in range(3)]
    bank = Bank.genesis(b"\x11" * 32, {ids[0]: 10**12}, ids[0], b"\x11" * 32, slots_per_epoch=16)
    for slot in (1, 2, 17):
        bank = bank.child(slot, ids[slot % 2])
        bank.credit_work(ids[1], tokens_served=64 * slot)
        bank.credit_work(ids[2], positions_validated=4)
        if slot == 17:
            bank.slash_work(ids[2], "absent")
        bank.freeze(bytes([slot]) * 32)
    return bank_to_snapshot(bank)


def cases() -> list[Case]:
    out = []
    roundtrips = [
        ("genesis-minimal", "genesis with one bootstrap node", sample_genesis(1)),
        ("genesis-model-digest", "genesis with 4 nodes and a model digest", sample_genesis(4, digest=True)),
        ("node-info", "a signed NodeInfo", sample_node_info()),
        (
            "model-unicode",
            "genesis whose model name is non-ASCII UTF-8",
            dataclasses.replace(sample_genesis(1), model=ModelSpec("modèle-λ", None)),
        ),
    ]
    roundtrips += _network_roundtrips()
    roundtrips += _tpu_roundtrips()
    roundtrips += _stage_roundtrips()
    roundtrips.append(("bank-snapshot-auction", "BankSnapshot v4 of a bank where register_miner (3 miners) and "
                       "request landed: its auction accounts sorted by address", _auction_bank_snapshot()))
    roundtrips.append(("bank-snapshot-work", "BankSnapshot v4 of a bank with work accounts (credits over two epochs, "
                       "a slash) and an epoch tally, each sorted by identity", _work_bank_snapshot()))
    for name, desc, msg in roundtrips:
        data = codec.encode(msg)
        out.append(Case("roundtrip", name, data, _nested_plain(codec.to_json(msg)), desc))
    for name, reason, desc, data in _reject_cases():
        out.append(Case("reject", name, data, None, desc, reason=reason))
    tid, ver, body = cbor2.loads(codec.encode(_work_bank_snapshot()))
    unsorted = cbor2.dumps([tid, ver, {**body, "work_accounts": list(reversed(body["work_accounts"]))}], canonical=True)
    out.append(Case("reject", "bank-snapshot-work-unsorted", unsorted, None,
                    "BankSnapshot v4 whose work accounts are not sorted by identity", reason="invalid-value"))
    return out
