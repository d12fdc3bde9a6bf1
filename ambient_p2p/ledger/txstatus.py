"""The RPC's transaction history in the blockstore (spec/rpc.md "History"), so that
``getTransaction``, ``getSignatureStatuses`` (``searchTransactionHistory``),
``getSignaturesForAddress`` and ``getBlock`` answer for slots from before a restart.

agave's TransactionStatusService writes, when a bank freezes, a ``TransactionStatus``
record per (signature, slot) and an ``AddressSignatures`` record per (address, slot,
signature) into blockstore columns (``ledger/src/blockstore.rs``,
``write_transaction_status``). Ours keeps two column families, both keyed by the slot first
(big-endian), so that ledger cleanup's range purge (:meth:`Blockstore.purge_slots`) drops a
slot's history together with its shreds, as agave's cleanup does::

    block_status  slot u64                 -> BlockStatus (header: parent, hashes, height, time, tx count)
    tx_status     slot u64 || position u32 -> TxStatus (wire bytes, fee, error, balances)

The by-signature and by-address lookups are rebuilt in memory from these records when the
node starts (node/rpc/txindex.py ``TxIndex.load``): every key of both families begins with
the slot, so no record of ours can be cut in half by a slot-range purge, and agave's
primary-index rotation is not needed.

Records are written by the node's RPC extension in a worker thread, one RocksDB batch per
group of frozen slots with a WAL fsync (:func:`put_blocks`); a block header is written in the
same batch as its transactions, so a block whose header reads back has all its
transactions. Reads decode strictly: a record that does not decode, or whose key disagrees
with its contents, or a header whose transaction count disagrees with the stored
transactions, is a :class:`TxStatusError` (the block is then not served rather than served
wrong).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..core import codec
from ..core.codec import Bytes, List, Opt, Text, UInt, fld, message
from ..core.constants import PACKET_DATA_BYTES
from .blockstore import Blockstore, slot_key

BLOCK_STATUS_CF = "block_status"
TX_STATUS_CF = "tx_status"
#: Account keys of one transaction: its message indexes them with one byte.
MAX_TX_ACCOUNT_KEYS = 256
#: A transaction error as the bank words it (core/bank.py TxResult.error), UTF-8 bytes;
#: a longer one is cut (the RPC maps it to Solana's error shape by its leading words).
MAX_TX_ERROR_BYTES = 1024


class TxStatusError(Exception):
    """A stored history record that does not decode or does not agree with its key."""


@message(type_id=0x0109, version=1, max_size=512)
@dataclass(frozen=True)
class BlockStatus:
    """One frozen block as the RPC reports it (agave ``getBlock``'s header fields)."""

    slot: int = fld(UInt(64))
    parent_slot: int = fld(UInt(64))
    blockhash: bytes = fld(Bytes(32, exact=True))
    previous_blockhash: bytes = fld(Bytes(32, exact=True))
    block_height: int = fld(UInt(64))
    block_time_s: int = fld(UInt(64))
    tx_count: int = fld(UInt(32))


@message(type_id=0x010A, version=1, max_size=8192)
@dataclass(frozen=True)
class TxStatus:
    """One processed transaction (agave ``TransactionStatusMeta``, the fields we have):
    its wire bytes, fee, error, and its account keys' balances before and after."""

    slot: int = fld(UInt(64))
    position: int = fld(UInt(32))
    raw: bytes = fld(Bytes(PACKET_DATA_BYTES))
    signature: bytes = fld(Bytes(64, exact=True))
    fee: int = fld(UInt(64))
    error: str | None = fld(Opt(Text(MAX_TX_ERROR_BYTES)), default=None)
    pre_balances: tuple[int, ...] = fld(List(UInt(64), MAX_TX_ACCOUNT_KEYS), default=())
    post_balances: tuple[int, ...] = fld(List(UInt(64), MAX_TX_ACCOUNT_KEYS), default=())


@dataclass(frozen=True)
class StoredBlock:
    header: BlockStatus
    txs: tuple[TxStatus, ...]


_TX_KEY = struct.Struct(">QI")


def cut_error(error: str | None) -> str | None:
    """``error`` cut to :data:`MAX_TX_ERROR_BYTES` UTF-8 bytes (on a character boundary)."""
    if error is None:
        return None
    return error.encode("utf-8", "surrogatepass")[:MAX_TX_ERROR_BYTES].decode("utf-8", "ignore")


def put_blocks(bs: Blockstore, blocks: Iterable[StoredBlock]) -> int:
    """Write ``blocks`` (headers and transactions) in one batch with a WAL fsync; returns
    the number of blocks written. Raises BlockstoreError (disk full, read-only)."""
    writes: dict[tuple[str, bytes], bytes] = {}
    n = 0
    for b in blocks:
        if b.header.tx_count != len(b.txs):
            raise ValueError(f"block {b.header.slot}: header counts {b.header.tx_count} transactions, has {len(b.txs)}")
        for i, t in enumerate(b.txs):
            if (t.slot, t.position) != (b.header.slot, i):
                raise ValueError(f"block {b.header.slot}: transaction {i} is keyed {t.slot}/{t.position}")
            writes[(TX_STATUS_CF, _TX_KEY.pack(t.slot, t.position))] = codec.encode(t)
        writes[(BLOCK_STATUS_CF, slot_key(b.header.slot))] = codec.encode(b.header)
        n += 1
    if writes:
        bs.cf_write(writes, sync=True)
    return n


def _decode(raw: bytes, cls: type[codec.T], where: str) -> codec.T:
    try:
        return codec.decode(raw, cls)
    except codec.DecodeError as exc:
        raise TxStatusError(f"{where}: {exc}") from None


def read_block(bs: Blockstore, slot: int) -> StoredBlock | None:
    """The stored block at ``slot`` (None: none stored). Raises TxStatusError,
    BlockstoreCorruption."""
    raw = bs.cf_get(BLOCK_STATUS_CF, slot_key(slot))
    if raw is None:
        return None
    return _with_txs(bs, _header(slot_key(slot), raw))


def _header(key: bytes, raw: bytes) -> BlockStatus:
    h = _decode(raw, BlockStatus, f"{BLOCK_STATUS_CF} record {key.hex()}")
    if len(key) != 8 or slot_key(h.slot) != key:
        raise TxStatusError(f"{BLOCK_STATUS_CF} record keyed {key.hex()} holds slot {h.slot}")
    return h


def _with_txs(bs: Blockstore, h: BlockStatus) -> StoredBlock:
    txs: list[TxStatus] = []
    for k, v in bs.cf_prefix(TX_STATUS_CF, slot_key(h.slot)):
        if len(k) != _TX_KEY.size:
            raise TxStatusError(f"{TX_STATUS_CF} key {k.hex()} is not slot||position")
        slot, pos = _TX_KEY.unpack(k)
        t = _decode(v, TxStatus, f"{TX_STATUS_CF} record {slot}/{pos}")
        if (t.slot, t.position) != (slot, pos) or pos != len(txs):
            raise TxStatusError(f"{TX_STATUS_CF} record keyed {slot}/{pos} holds {t.slot}/{t.position}")
        txs.append(t)
    if len(txs) != h.tx_count:
        raise TxStatusError(f"block {h.slot}: header counts {h.tx_count} transactions, {len(txs)} stored")
    return StoredBlock(h, tuple(txs))


def block_slots(bs: Blockstore, start: int = 0) -> list[int]:
    """Slots with a stored block header, ascending."""
    return [struct.unpack(">Q", k)[0] for k, _v in bs.cf_slots(BLOCK_STATUS_CF, start) if len(k) == 8]


def newest_blocks(bs: Blockstore, limit: int) -> Iterator[StoredBlock]:
    """The newest ``limit`` stored blocks, oldest first (what the RPC's index loads at start)."""
    slots = block_slots(bs)[-limit:] if limit > 0 else []
    for s in slots:
        b = read_block(bs, s)
        if b is not None:
            yield b
