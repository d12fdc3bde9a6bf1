"""The RPC's block and transaction index (spec/rpc.md "History"): what ``getTransaction``,
``getSignatureStatuses`` (``searchTransactionHistory``), ``getBlock`` and
``getSignaturesForAddress`` read.

The blockstore keeps shreds, roots and bank hashes, not execution results; agave's
TransactionStatusService writes them into the blockstore's ``TransactionStatus`` and
``AddressSignatures`` columns when a bank freezes. Here every frozen bank carries its own
``tx_log`` (core/bank.py: wire bytes, result, balances before and after), and this index
copies it when the node sees the slot frozen. Every indexed block is also written to the
blockstore (ledger/txstatus.py, by the RPC extension in a worker thread), and a restarted
node loads the newest :data:`MAX_INDEXED_BLOCKS` stored blocks back (:meth:`TxIndex.load`),
so history survives restarts. The index in memory is bounded (oldest evicted first):
history older than that is not served (``getTransaction`` answers null, ``getBlock``
-32001), though it stays on disk until ledger cleanup purges its slots.
It also keeps the last :data:`MAX_CACHED_BANKS` frozen banks by slot, so a commitment level
whose slot fork choice has already pruned (finalized, below the root) still has its bank.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...core.bank import TxRecord, TxResult, parse_transaction
from ...ledger.txstatus import BlockStatus, StoredBlock, TxStatus, cut_error

if TYPE_CHECKING:  # pragma: no cover
    from ...core.bank import Bank

#: Blocks whose transactions the index keeps (about 27 minutes of 400 ms slots).
MAX_INDEXED_BLOCKS = 4096
#: Frozen banks kept by slot for commitment reads (each holds a copy of the accounts).
MAX_CACHED_BANKS = 256


@dataclass(frozen=True)
class BlockRecord:
    slot: int
    parent_slot: int
    blockhash: bytes
    previous_blockhash: bytes
    block_height: int
    block_time_s: int
    txs: tuple[TxRecord, ...]


@dataclass(frozen=True)
class TxLocation:
    block: BlockRecord
    position: int

    @property
    def record(self) -> TxRecord:
        return self.block.txs[self.position]


def account_keys(rec: BlockRecord) -> list[tuple[bytes, ...]]:
    """Each transaction's account keys (a solders parse each: a restart's load runs it in a
    worker thread)."""
    return [parse_transaction(t.raw, verify_signatures=False).account_keys for t in rec.txs]


def to_stored(rec: BlockRecord) -> StoredBlock:
    """A block record as the blockstore keeps it (ledger/txstatus.py)."""
    header = BlockStatus(rec.slot, rec.parent_slot, rec.blockhash, rec.previous_blockhash, rec.block_height,
                         rec.block_time_s, len(rec.txs))
    return StoredBlock(header, tuple(
        TxStatus(rec.slot, i, t.raw, t.result.signature, t.result.fee, cut_error(t.result.error),
                 t.pre_balances, t.post_balances) for i, t in enumerate(rec.txs)))


def from_stored(b: StoredBlock) -> BlockRecord:
    h = b.header
    return BlockRecord(h.slot, h.parent_slot, h.blockhash, h.previous_blockhash, h.block_height, h.block_time_s,
                       tuple(TxRecord(t.raw, TxResult(t.signature, t.fee, t.error), t.pre_balances, t.post_balances)
                             for t in b.txs))


class TxIndex:
    """Blocks by slot, transactions by first signature and by account (see module docstring)."""

    def __init__(self, max_blocks: int = MAX_INDEXED_BLOCKS, max_banks: int = MAX_CACHED_BANKS) -> None:
        self.max_blocks, self.max_banks = max_blocks, max_banks
        self.blocks: dict[int, BlockRecord] = {}
        self.banks: collections.OrderedDict[int, Bank] = collections.OrderedDict()
        self.by_sig: dict[bytes, list[tuple[int, int]]] = {}
        self.by_addr: dict[bytes, list[tuple[int, int]]] = {}
        self.heights: dict[int, int] = {0: 0}
        self.evicted_below = 0  # slots below this may have been indexed once and dropped

    def add(self, bank: Bank, parent_blockhash: bytes, block_time_s: int) -> BlockRecord:
        """Index a frozen bank (once per slot; later calls return the first record)."""
        if bank.slot in self.blocks:
            return self.blocks[bank.slot]
        rec = BlockRecord(bank.slot, bank.parent_slot, bank.last_blockhash, parent_blockhash, self.height_of(bank),
                          block_time_s, tuple(bank.tx_log))
        self._insert(rec)
        self.banks[bank.slot] = bank
        while len(self.banks) > self.max_banks:
            self.banks.popitem(last=False)
        return rec

    def load(self, rec: BlockRecord, keys: list[tuple[bytes, ...]] | None = None) -> bool:
        """Index a block read back from the blockstore (a restart); False if the slot is
        indexed already (what this process saw frozen wins) or older than what was evicted.
        ``keys``: each transaction's account keys (:func:`account_keys`, computed off the
        event loop by the caller), else parsed here."""
        if rec.slot in self.blocks or rec.slot < self.evicted_below:
            return False
        self._insert(rec, keys)
        return True

    def _insert(self, rec: BlockRecord, keys: list[tuple[bytes, ...]] | None = None) -> None:
        self.blocks[rec.slot] = rec
        self.heights[rec.slot] = rec.block_height
        for i, (t, tx_keys) in enumerate(zip(rec.txs, keys if keys is not None else account_keys(rec),
                                              strict=True)):
            self.by_sig.setdefault(t.result.signature, []).append((rec.slot, i))
            for key in tx_keys:
                self.by_addr.setdefault(key, []).append((rec.slot, i))
        while len(self.blocks) > self.max_blocks:
            self._evict(min(self.blocks))

    def height_of(self, bank: Bank) -> int:
        """Block height: blocks (non-skipped slots) since genesis. Exact while the parent is
        known here; otherwise the count of the bank's recorded ancestors (exact below
        MAX_SLOT_HASHES blocks, the case of a node restarted on a young chain)."""
        if bank.slot == 0:
            return 0
        parent = self.heights.get(bank.parent_slot)
        return parent + 1 if parent is not None else len(bank.slot_hashes)

    def _evict(self, slot: int) -> None:
        rec = self.blocks.pop(slot)
        self.heights.pop(slot, None)
        self.evicted_below = max(self.evicted_below, slot + 1)
        for t in rec.txs:
            locs = self.by_sig.get(t.result.signature)
            if locs is not None:
                locs[:] = [x for x in locs if x[0] != slot]
                if not locs:
                    del self.by_sig[t.result.signature]
            for key in parse_transaction(t.raw, verify_signatures=False).account_keys:
                al = self.by_addr.get(key)
                if al is not None:
                    al[:] = [x for x in al if x[0] != slot]
                    if not al:
                        del self.by_addr[key]

    def locations(self, sig: bytes) -> list[TxLocation]:
        return [TxLocation(self.blocks[s], i) for s, i in self.by_sig.get(sig, []) if s in self.blocks]

    def address_locations(self, key: bytes) -> list[TxLocation]:
        """Newest first."""
        locs = sorted(self.by_addr.get(key, []), reverse=True)
        return [TxLocation(self.blocks[s], i) for s, i in locs if s in self.blocks]
