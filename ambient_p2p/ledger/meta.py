"""Blockstore metadata records, stored as canonical CBOR messages (type ids 0x0100-0x01FF,
the ledger's range in spec/encoding.md). Layout and meaning: spec/blockstore.md.

They mirror agave's ``blockstore_meta.rs`` (SlotMeta, ErasureMeta, MerkleRootMeta, Index,
DuplicateSlotProof) with Ambient's encoding instead of bincode: these bytes never leave a
node, so only the meaning has to match agave, not the bytes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cbor2

from ..core import codec
from ..core.auction import BID_ACCOUNT_BYTES, MINER_ACCOUNT_BYTES, QUERY_ACCOUNT_BYTES
from ..core.codec import Bool, Bytes, List, Opt, Rec, Text, UInt, fld, message, record
from ..core.constants import PACKET_DATA_BYTES
from ..core.logit_pool import DIFFICULTY_ACCOUNT_BYTES, DISPUTE_ACCOUNT_BYTES, POOL_ACCOUNT_BYTES
from ..core.shred import cbor_uint_array
from ..core.work import WORK_ACCOUNT_BYTES

MAX_SLOT_CHILDREN = 1024
MAX_SHREDS_PER_SLOT = 32_768
REASON_MAX_BYTES = 512


@message(type_id=0x0100, version=1, max_size=1 << 20)
@dataclass(frozen=True)
class SlotMeta:
    """Progress of one slot. ``consumed``: data shreds 0..consumed-1 are all present;
    ``received``: one past the highest data shred index seen; ``last_index``: index of
    the LAST_IN_SLOT shred once seen; ``parent_slot``: from the data shreds (absent for a
    placeholder made because a child named this slot as its parent)."""

    slot: int = fld(UInt(64))
    consumed: int = fld(UInt(32))
    received: int = fld(UInt(32))
    last_index: int | None = fld(Opt(UInt(32)), default=None)
    parent_slot: int | None = fld(Opt(UInt(64)), default=None)
    next_slots: tuple[int, ...] = fld(List(UInt(64), MAX_SLOT_CHILDREN), default=())
    is_connected: bool = fld(Bool(), default=False)
    completed_data_indexes: tuple[int, ...] = fld(List(UInt(32), MAX_SHREDS_PER_SLOT), default=())

    @property
    def is_full(self) -> bool:
        return self.last_index is not None and self.consumed == self.last_index + 1


@message(type_id=0x0101, version=1, max_size=256)
@dataclass(frozen=True)
class ErasureMeta:
    """Shape of one FEC set, learned from its first coding shred (agave ErasureMeta)."""

    fec_set_index: int = fld(UInt(32))
    num_data: int = fld(UInt(16))
    num_coding: int = fld(UInt(16))
    first_coding_index: int = fld(UInt(32))


@message(type_id=0x0102, version=1, max_size=256)
@dataclass(frozen=True)
class MerkleRootMeta:
    """The Merkle root first seen for a FEC set and which shred brought it (agave
    MerkleRootMeta); a different root for the same set proves equivocation."""

    merkle_root: bytes = fld(Bytes(32, exact=True))
    first_received_index: int = fld(UInt(32))
    first_received_is_data: bool = fld(Bool())


@message(type_id=0x0103, version=1, max_size=1 << 20)
@dataclass(frozen=True)
class ShredIndex:
    """Which data and coding shred indexes of a slot are stored (agave Index)."""

    slot: int = fld(UInt(64))
    data: tuple[int, ...] = fld(List(UInt(32), MAX_SHREDS_PER_SLOT), default=())
    coding: tuple[int, ...] = fld(List(UInt(32), MAX_SHREDS_PER_SLOT), default=())


@message(type_id=0x0104, version=1, max_size=8192)
@dataclass(frozen=True)
class DuplicateSlotProof:
    """Two signed shreds of the same slot that cannot both be honest (agave
    DuplicateSlotProof): same index with different bytes, different Merkle roots for one
    FEC set, conflicting erasure configs, or a shred past the slot's last index."""

    slot: int = fld(UInt(64))
    kind: str = fld(Text(64))
    shred1: bytes = fld(Bytes(PACKET_DATA_BYTES))
    shred2: bytes = fld(Bytes(PACKET_DATA_BYTES))


@message(type_id=0x0105, version=1, max_size=1024)
@dataclass(frozen=True)
class DeadSlot:
    """Replay rejected this slot; ``reason`` says why (code: detail)."""

    slot: int = fld(UInt(64))
    reason: str = fld(Text(REASON_MAX_BYTES))


@message(type_id=0x0106, version=1, max_size=512)
@dataclass(frozen=True)
class BankHashRecord:
    """The bank hash replay computed for a slot, and what it was built on."""

    slot: int = fld(UInt(64))
    parent_slot: int = fld(UInt(64))
    bank_hash: bytes = fld(Bytes(32, exact=True))
    last_blockhash: bytes = fld(Bytes(32, exact=True))
    signature_count: int = fld(UInt(64))
    transaction_count: int = fld(UInt(64))


# ---------------------------------------------------------------------------------------
# The four records every shred insert writes, encoded without the generic walk
# ---------------------------------------------------------------------------------------
def _hd(major: int, n: int) -> bytes:
    """A CBOR item head in shortest form (what cbor2 writes, canonical or not)."""
    b = major << 5
    if n < 24:
        return bytes((b | n,))
    if n < 0x100:
        return bytes((b | 24, n))
    if n < 0x10000:
        return bytes((b | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((b | 26,)) + n.to_bytes(4, "big")
    return bytes((b | 27,)) + n.to_bytes(8, "big")


def _key(name: str) -> bytes:
    return _hd(3, len(name)) + name.encode()


def _uint_list_py(v: tuple[int, ...], bits: int, max_items: int) -> bytes | None:
    """The CBOR array of a tuple codec's ``List(UInt(bits), max_items)`` accepts (and
    decodes to an equal tuple); None for anything else."""
    if not (type(v) is tuple and len(v) <= max_items and (
            not v or (set(map(type, v)) == {int} and min(v) >= 0 and max(v) >> bits == 0))):
        return None
    if len(v) < 8:
        return _hd(4, len(v)) + b"".join([_hd(0, x) for x in v])
    return cbor2.dumps(list(v))  # an array of uints: the same bytes, in C


#: the same in one C call where _native_shred is built (tests/test_blockstore_fastpath.py)
_uint_list = cbor_uint_array or _uint_list_py


def _u(v: object, bits: int) -> bool:
    return type(v) is int and v >= 0 and v >> bits == 0


def _envelope(cls: type, nfields: int) -> bytes:
    mt = codec.message_type_of(cls)
    return b"\x83" + _hd(0, mt.type_id) + _hd(0, mt.version) + _hd(5, nfields)


# canonical map key order (cbor2 canonical: shorter encoded key first, then bytewise)
_K = {name: _key(name) for name in ("slot", "consumed", "received", "last_index", "parent_slot", "next_slots",
                                    "is_connected", "completed_data_indexes", "data", "coding", "fec_set_index",
                                    "num_data", "num_coding", "first_coding_index", "merkle_root",
                                    "first_received_index", "first_received_is_data")}


def _ordered(*names: str) -> tuple[str, ...]:
    return tuple(sorted(names, key=lambda n: (len(_K[n]), _K[n])))


_SLOT_META_ORDER = _ordered("slot", "consumed", "received", "last_index", "parent_slot", "next_slots",
                            "is_connected", "completed_data_indexes")
_SHRED_INDEX_ORDER = _ordered("slot", "data", "coding")
_ERASURE_META_ORDER = _ordered("fec_set_index", "num_data", "num_coding", "first_coding_index")
_MERKLE_ROOT_META_ORDER = _ordered("merkle_root", "first_received_index", "first_received_is_data")
# the keys in the canonical orders encode_meta_exact writes them in (checked here at import)
_K_SLOT, _K_CONSUMED, _K_RECEIVED, _K_LAST_INDEX, _K_NEXT_SLOTS, _K_PARENT_SLOT, _K_IS_CONNECTED, _K_COMPLETED = (
    _K[n] for n in _SLOT_META_ORDER)
_K_DATA, _K_SLOT_2, _K_CODING = (_K[n] for n in _SHRED_INDEX_ORDER)
_K_NUM_DATA, _K_NUM_CODING, _K_FEC_SET_INDEX, _K_FIRST_CODING_INDEX = (_K[n] for n in _ERASURE_META_ORDER)
_K_MERKLE_ROOT, _K_FIRST_RECEIVED_INDEX, _K_FIRST_RECEIVED_IS_DATA = (_K[n] for n in _MERKLE_ROOT_META_ORDER)
if (_SLOT_META_ORDER, _SHRED_INDEX_ORDER, _ERASURE_META_ORDER, _MERKLE_ROOT_META_ORDER) != (
        ("slot", "consumed", "received", "last_index", "next_slots", "parent_slot", "is_connected",
         "completed_data_indexes"), ("data", "slot", "coding"),
        ("num_data", "num_coding", "fec_set_index", "first_coding_index"),
        ("merkle_root", "first_received_index", "first_received_is_data")):
    raise ImportError("ledger/meta.py: encode_meta_exact's key order is not the canonical order")
_ENV = {(cls, n): _envelope(cls, n) for cls, ns in ((SlotMeta, (6, 7, 8)), (ShredIndex, (3,)), (ErasureMeta, (4,)),
                                                  (MerkleRootMeta, (3,))) for n in ns}
_BOOL = {False: b"\xf4", True: b"\xf5"}


def encode_meta(obj: object) -> bytes:
    """``codec.encode(obj)``, byte for byte (through :func:`encode_meta_exact` where it can)."""
    raw = encode_meta_exact(obj)
    return codec.encode(obj) if raw is None else raw


def encode_meta_exact(obj: object) -> bytes | None:
    """``codec.encode(obj)``, byte for byte, for the records every shred insert writes
    (SlotMeta, ShredIndex, ErasureMeta, MerkleRootMeta), without codec's generic per-field
    walk (tests/test_blockstore_fastpath.py compares the two). None for anything else, and
    for a record whose fields are not exactly the types ``codec.decode`` returns (ints,
    bools, 32-byte ``bytes``, tuples of ints, in range): so ``codec.decode`` of a returned
    encoding gives back an equal record with the same field types."""
    cls = type(obj)
    if cls is SlotMeta:
        m: SlotMeta = obj  # type: ignore[assignment]
        next_slots = _uint_list(m.next_slots, 64, MAX_SLOT_CHILDREN)
        completed = _uint_list(m.completed_data_indexes, 32, MAX_SHREDS_PER_SLOT)
        last_index, parent_slot = m.last_index, m.parent_slot
        if not (_u(m.slot, 64) and _u(m.consumed, 32) and _u(m.received, 32)
                and (last_index is None or _u(last_index, 32)) and (parent_slot is None or _u(parent_slot, 64))
                and type(m.is_connected) is bool and next_slots is not None and completed is not None):
            return None
        return b"".join((
            _ENV[(SlotMeta, 6 + (last_index is not None) + (parent_slot is not None))],
            _K_SLOT, _hd(0, m.slot), _K_CONSUMED, _hd(0, m.consumed), _K_RECEIVED, _hd(0, m.received),
            b"" if last_index is None else _K_LAST_INDEX + _hd(0, last_index),
            _K_NEXT_SLOTS, next_slots,
            b"" if parent_slot is None else _K_PARENT_SLOT + _hd(0, parent_slot),
            _K_IS_CONNECTED, _BOOL[m.is_connected], _K_COMPLETED, completed))
    if cls is ShredIndex:
        i: ShredIndex = obj  # type: ignore[assignment]
        data = _uint_list(i.data, 32, MAX_SHREDS_PER_SLOT)
        coding = _uint_list(i.coding, 32, MAX_SHREDS_PER_SLOT)
        if not (_u(i.slot, 64) and data is not None and coding is not None):
            return None
        return b"".join((_ENV[(ShredIndex, 3)], _K_DATA, data, _K_SLOT, _hd(0, i.slot), _K_CODING, coding))
    if cls is ErasureMeta:
        e: ErasureMeta = obj  # type: ignore[assignment]
        if not (_u(e.fec_set_index, 32) and _u(e.num_data, 16) and _u(e.num_coding, 16)
                and _u(e.first_coding_index, 32)):
            return None
        return b"".join((_ENV[(ErasureMeta, 4)], _K_NUM_DATA, _hd(0, e.num_data), _K_NUM_CODING, _hd(0, e.num_coding),
                         _K_FEC_SET_INDEX, _hd(0, e.fec_set_index), _K_FIRST_CODING_INDEX,
                         _hd(0, e.first_coding_index)))
    if cls is MerkleRootMeta:
        r: MerkleRootMeta = obj  # type: ignore[assignment]
        root = r.merkle_root
        if not (type(root) is bytes and len(root) == 32 and _u(r.first_received_index, 32)
                and type(r.first_received_is_data) is bool):
            return None
        return b"".join((_ENV[(MerkleRootMeta, 3)], _K_MERKLE_ROOT, b"\x58\x20", root, _K_FIRST_RECEIVED_INDEX,
                         _hd(0, r.first_received_index), _K_FIRST_RECEIVED_IS_DATA,
                         _BOOL[r.first_received_is_data]))
    return None


MAX_SNAPSHOT_ACCOUNTS = 16_384
MAX_SNAPSHOT_BLOCKHASHES = 300
MAX_SNAPSHOT_SIGNATURES = 16_384


@record
@dataclass(frozen=True)
class AccountBalance:
    pubkey: bytes = fld(Bytes(32, exact=True))
    lamports: int = fld(UInt(64))


@record
@dataclass(frozen=True)
class ProcessedSignature:
    signature: bytes = fld(Bytes(64, exact=True))
    slot: int = fld(UInt(64))


@record
@dataclass(frozen=True)
class SlotHash:
    slot: int = fld(UInt(64))
    bank_hash: bytes = fld(Bytes(32, exact=True))


@record
@dataclass(frozen=True)
class LastVote:
    voter: bytes = fld(Bytes(32, exact=True))
    slot: int = fld(UInt(64))


MAX_SNAPSHOT_SLOT_HASHES = 512
MAX_SNAPSHOT_VOTERS = 16_384
#: Auction accounts a snapshot holds (spec/auction.md, spec/logit_pool.md). Worst case, all
#: of them of the largest kind: 704 x about 1,420 encoded bytes (address, 1,368 data bytes,
#: CBOR keys) = about 1.0 MB, inside the one 1 MiB message ceiling the whole snapshot shares
#: (a bank whose state exceeds it cannot be snapshotted: chunking is future work,
#: spec/blockstore.md; the node then keeps its older snapshot and says so).
MAX_SNAPSHOT_AUCTION_ACCOUNTS = 704
#: The largest account of the auction program, of every kind it stores (today a dispute).
MAX_AUCTION_ACCOUNT_BYTES = max(QUERY_ACCOUNT_BYTES, BID_ACCOUNT_BYTES, MINER_ACCOUNT_BYTES, POOL_ACCOUNT_BYTES,
                                DIFFICULTY_ACCOUNT_BYTES, DISPUTE_ACCOUNT_BYTES)


@record
@dataclass(frozen=True)
class AuctionAccountData:
    """One account of the auction program: its address and fixed-layout data."""

    address: bytes = fld(Bytes(32, exact=True))
    data: bytes = fld(Bytes(MAX_AUCTION_ACCOUNT_BYTES))


#: Work accounts a snapshot holds (one per identity that did Logit Pool work): 2,048 x
#: about 200 encoded bytes = 0.4 MB, sharing the 1 MiB ceiling (a chunked format is future
#: work, as for accounts).
MAX_SNAPSHOT_WORK_ACCOUNTS = 2_048
MAX_SNAPSHOT_TALLY = 4_096


@record
@dataclass(frozen=True)
class WorkAccountData:
    """One work-credit account (core/work.py): its identity and fixed-layout data."""

    identity: bytes = fld(Bytes(32, exact=True))
    data: bytes = fld(Bytes(WORK_ACCOUNT_BYTES, exact=True))


@record
@dataclass(frozen=True)
class TallyEntry:
    """Leader slots and landed votes of one identity in the bank's tally epoch."""

    identity: bytes = fld(Bytes(32, exact=True))
    leader_slots: int = fld(UInt(64))
    votes: int = fld(UInt(64))


#: The largest account data a snapshot carries (the whole snapshot shares the 1 MiB
#: message ceiling; the genesis programs' data is carried by reference, ``genesis_data``).
MAX_SNAPSHOT_ACCOUNT_DATA_BYTES = 1 << 20


@record
@dataclass(frozen=True)
class AccountMetaData:
    """The non-lamport fields of one account that is not a plain system account without data
    (spec/bank.md "Accounts"). ``genesis_data``: ``data`` is empty here and is the data of the
    genesis program account at ``pubkey`` (core/svm.py ``genesis_programs``), which every
    node holds, so snapshots do not carry the programs' ELF bytes."""

    pubkey: bytes = fld(Bytes(32, exact=True))
    owner: bytes = fld(Bytes(32, exact=True))
    executable: bool = fld(Bool())
    rent_epoch: int = fld(UInt(64))
    data: bytes = fld(Bytes(MAX_SNAPSHOT_ACCOUNT_DATA_BYTES))
    genesis_data: bool = fld(Bool())


@message(type_id=0x0107, version=5, max_size=1 << 20)
@dataclass(frozen=True)
class BankSnapshot:
    """A frozen bank's full state (spec/bank.md, "Persistence"): enough to continue
    producing or replaying from ``slot`` without replaying from genesis. Bounded by the
    1 MiB message ceiling (about 16k accounts); a chunked format is future work.
    v3 added ``auction_accounts`` (sorted by address, no duplicates: one encoding per
    state); v4 the work-credit state (``slots_per_epoch``, ``work_accounts``,
    ``tally_epoch``, ``epoch_tally``, sorted by identity); v5 full accounts (``account_meta``,
    sorted by pubkey). v2, v3 and v4 records still read, as
    banks without the later fields (:func:`decode_bank_snapshot`)."""

    slot: int = fld(UInt(64))
    parent_slot: int = fld(UInt(64))
    bank_hash: bytes = fld(Bytes(32, exact=True))
    leader: bytes = fld(Bytes(32, exact=True))
    accounts: tuple[AccountBalance, ...] = fld(List(Rec(AccountBalance), MAX_SNAPSHOT_ACCOUNTS))
    blockhashes: tuple[bytes, ...] = fld(List(Bytes(32, exact=True), MAX_SNAPSHOT_BLOCKHASHES))
    status_cache: tuple[ProcessedSignature, ...] = fld(List(Rec(ProcessedSignature), MAX_SNAPSHOT_SIGNATURES))
    slot_hashes: tuple[SlotHash, ...] = fld(List(Rec(SlotHash), MAX_SNAPSHOT_SLOT_HASHES))
    last_votes: tuple[LastVote, ...] = fld(List(Rec(LastVote), MAX_SNAPSHOT_VOTERS))
    auction_accounts: tuple[AuctionAccountData, ...] = fld(
        List(Rec(AuctionAccountData), MAX_SNAPSHOT_AUCTION_ACCOUNTS), default=())
    slots_per_epoch: int = fld(UInt(64), default=0)
    work_accounts: tuple[WorkAccountData, ...] = fld(
        List(Rec(WorkAccountData), MAX_SNAPSHOT_WORK_ACCOUNTS), default=())
    tally_epoch: int = fld(UInt(64), default=0)
    epoch_tally: tuple[TallyEntry, ...] = fld(List(Rec(TallyEntry), MAX_SNAPSHOT_TALLY), default=())
    account_meta: tuple[AccountMetaData, ...] = fld(List(Rec(AccountMetaData), MAX_SNAPSHOT_ACCOUNTS), default=())

    def __post_init__(self) -> None:
        for name, keys in (("auction_accounts", [a.address for a in self.auction_accounts]),
                           ("account_meta", [m.pubkey for m in self.account_meta]),
                           ("work_accounts", [w.identity for w in self.work_accounts]),
                           ("epoch_tally", [t.identity for t in self.epoch_tally])):
            if any(a >= b for a, b in itertools.pairwise(keys)):
                raise ValueError(f"{name} must be sorted without duplicates")


#: The BankSnapshot version before auction accounts existed.
BANK_SNAPSHOT_V2 = 2
#: The BankSnapshot version before the work-credit state existed.
BANK_SNAPSHOT_V3 = 3
#: The BankSnapshot version before full accounts (owner, data, executable, rent epoch).
BANK_SNAPSHOT_V4 = 4
#: Fields each older version lacks (read as their defaults: empty, 0).
_ADDED_AFTER: dict[int, dict[str, object]] = {
    BANK_SNAPSHOT_V2: {"auction_accounts": [], "slots_per_epoch": 0, "work_accounts": [], "tally_epoch": 0,
                       "epoch_tally": [], "account_meta": []},
    BANK_SNAPSHOT_V3: {"slots_per_epoch": 0, "work_accounts": [], "tally_epoch": 0, "epoch_tally": [],
                       "account_meta": []},
    BANK_SNAPSHOT_V4: {"account_meta": []},
}


def decode_bank_snapshot(raw: bytes) -> BankSnapshot:
    """Decode a stored ``BankSnapshot``: the current version, or a v2/v3 record, read as a
    bank without the fields added later (auction accounts; the work-credit state). A record
    that lost some shows as ``snapshot-mismatch`` when replay compares it with the replayed
    bank (the state hash covers them). Anything else fails as :func:`codec.decode` does."""
    try:
        decoded: BankSnapshot = codec.decode(raw, BankSnapshot)
        return decoded
    except codec.DecodeError as exc:
        if exc.reason != "unsupported-version":
            raise
        value = cbor2.loads(raw)  # well-formed and an envelope: codec.decode checked both
        type_id, version, body = value
        added = _ADDED_AFTER.get(version)
        if added is None or not isinstance(body, dict) or any(k in body for k in added):
            raise
        # an old body is the current body without the added fields: decode it with their
        # defaults, then require the input to be the canonical encoding of that value
        full = {**body, **added}
        current = codec.message_type_of(BankSnapshot).version
        snap: BankSnapshot = codec.decode(cbor2.dumps([type_id, current, full], canonical=True), BankSnapshot)
        if cbor2.dumps([type_id, version, body], canonical=True) != bytes(raw):
            raise codec.DecodeError("non-canonical", "input is not the canonical encoding of its value", "$") from None
        return snap
