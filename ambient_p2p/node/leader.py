"""Block production for one leader slot (spec/node.md "Production").

The leader builds slot ``slot`` on a frozen parent (the fork-choice tip): a child bank,
PoH continuing from the parent's last entry hash with ``ticks_per_slot`` ticks (times the
number of slots since the parent: a slot carries the ticks of skipped slots, as agave) of
``hashes_per_tick`` hashes, the transactions it selected as entries of ``TXS_PER_ENTRY``,
then the entries cut into chained 32:32 Merkle FEC sets signed by the leader.

* :func:`select_transactions` decides what goes in: vote transactions first (agave reserves
  block space for votes), and only those that land on this fork (a vote for another fork,
  or one not newer than its voter's last landed vote, would only cost its voter a fee);
  then the pending transactions the bank accepts, one at a time (a refused one is dropped,
  it would make the block invalid). It executes them on the slot's bank.
* :class:`SlotStreamer` shreds a slot's entries as they are produced (the leader on the
  PoH clock publishes during its slot, agave's broadcast stage) and ``finish`` freezes the
  bank on the last entry hash: the one copy of the shredding tail.
  :func:`build_slot_from_entries` is the same for entries that are all there.
* :func:`build_slot` (:func:`build_variants`: with a producer strategy's versions) is the one-shot build (``--poh-clock instant``, the equivocation
  harness, tests): select, record every batch as early as it fits
  (``core.poh_recorder.record_slot_entries``), ticks to the end, shred.

The result is exactly what replay (ledger/replay.py) accepts from any other node, which is
why the leader keeps the frozen result instead of replaying its own slot.

Pure: no clock, no disk, no network.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

from ..core.bank import Bank, BlockError
from ..core.constants import SHRED_VERSION, TXS_PER_ENTRY
from ..core.crypto import Keypair
from ..core.messages import Genesis
from ..core.poh import Entry, check_slot_ticks, serialize_entries
from ..core.poh_recorder import record_slot_entries
from ..core.shred import SlotShredder
from ..core.vote_program import VoteTx
from ..ledger.meta import BankHashRecord
from ..ledger.producer import open_bank
from ..ledger.replay import SlotResult

#: Most transactions one slot takes from the pending pool: 1,000 transfers/s need 400 at
#: 400 ms slots, 800 at 800 ms (issue 17); a 1,024-transfer slot is ~220 KB, 7 FEC sets.
MAX_TXS_PER_SLOT = 1024
#: Most vote transactions one slot takes (one per voter; on top of MAX_TXS_PER_SLOT).
MAX_VOTES_PER_SLOT = 1024


@dataclass
class BuiltSlot:
    slot: int
    parent: int
    packets: list[bytes]  # data shreds then coding shreds (payloads), FEC set after FEC set
    result: SlotResult
    record: BankHashRecord
    included: list[bytes]  # transactions that made it into the slot
    dropped: list[bytes]  # transactions the bank refused (they would make the block invalid)
    included_votes: list[VoteTx]  # the vote transactions among ``included`` that landed


#: A producer strategy's versions of a built slot: (built, parent, rebuild with other
#: transactions) -> the shred lists to send.
Variants = Callable[[BuiltSlot, SlotResult, Callable[[list[bytes]], BuiltSlot]], list[list[bytes]]]


def select_transactions(
    bank: Bank,
    txs: Sequence[bytes],
    votes: Sequence[VoteTx] = (),
    *,
    max_txs: int = MAX_TXS_PER_SLOT,
    max_votes: int = MAX_VOTES_PER_SLOT,
    verified: Container[bytes] = frozenset(),
) -> tuple[list[bytes], list[bytes], list[VoteTx]]:
    """Execute on ``bank`` (the slot's unfrozen bank) the votes that land on this fork, then
    the transactions it accepts, one at a time; ``(included, dropped, included_votes)``:
    ``included`` in execution order (votes first), which is the order they must be
    recorded in. Transactions in ``verified`` had their signatures checked at admission
    (node/tpu.py): they are executed without checking again."""
    included: list[bytes] = []
    dropped: list[bytes] = []
    included_votes: list[VoteTx] = []
    for vt in list(votes)[: max(0, max_votes)]:
        if bank.vote_error(vt.vote) is not None:
            continue
        try:  # a VoteTx's signatures were verified when it was parsed (or made)
            (res,) = bank.process_transactions([vt.raw], verify_signatures=False)
        except BlockError:
            continue  # e.g. its blockhash is not on this fork
        included.append(vt.raw)
        if res.error is None:
            included_votes.append(vt)
    for raw in list(txs)[: max(0, max_txs)]:
        try:  # one at a time: a refused transaction must not take the others with it
            bank.process_transactions([raw], verify_signatures=raw not in verified)
            included.append(raw)
        except BlockError:
            dropped.append(raw)
    return included, dropped, included_votes


def entry_batches(included: Sequence[bytes]) -> list[list[bytes]]:
    """``included`` cut into the transaction lists of successive entries."""
    return [list(included[i : i + TXS_PER_ENTRY]) for i in range(0, len(included), TXS_PER_ENTRY)]


def rebank(genesis: Genesis, parent: SlotResult, slot: int, leader: bytes, entries: Sequence[Entry]) -> Bank:
    """The slot's bank recomputed from its entries, as replay does: for a leader whose bank
    executed a batch that PoH then refused (its slot's last tick was out), so the executed
    bank no longer matches the recorded slot (our Bank commits on execute; agave commits
    only what PoH recorded)."""
    bank = open_bank(genesis, parent.bank, slot, leader)
    for e in entries:
        if e.transactions:
            bank.process_transactions(e.transactions, verify_signatures=False)
    return bank


class SlotStreamer:
    """Shreds a slot's entries while they are produced, so a leader can publish during its
    slot instead of at its end (agave's broadcast stage): ``add`` each run of entries in
    order and publish the packets it returns; after the run holding the slot's last tick,
    ``finish`` gives the ``BuiltSlot``. Each ``add`` is at least one 32:32 FEC set (64
    shreds), so a leader batches runs (every few ticks) rather than adding every entry.
    The FEC sets chain from the parent's last one; ``reference_tick`` is the tick count so
    far; the run that holds the slot's last tick is ``LAST_IN_SLOT``."""

    def __init__(self, kp: Keypair, genesis: Genesis, parent_slot: int, parent: SlotResult, slot: int) -> None:
        if slot <= parent_slot:
            raise ValueError(f"slot {slot} must be above its parent {parent_slot}")
        self.genesis = genesis
        self.kp = kp
        self.parent_slot = parent_slot
        self.parent = parent
        self.slot = slot
        self.max_ticks = genesis.poh.ticks_per_slot * (slot - parent_slot)
        self.shredder = SlotShredder(kp, slot, parent_slot, SHRED_VERSION, parent.last_root)
        self.entries: list[Entry] = []
        self.packets: list[bytes] = []
        self.ticks = 0

    @property
    def complete(self) -> bool:
        return self.shredder.finished

    def add(self, entries: Sequence[Entry]) -> list[bytes]:
        """Shred ``entries`` (the next ones of the slot, in order); returns their packets."""
        if not entries:
            return []
        ticks = self.ticks + sum(1 for e in entries if e.is_tick)
        if self.shredder.finished or ticks > self.max_ticks:
            raise ValueError(f"more than {self.max_ticks} ticks in slot {self.slot}, or entries after the last")
        last = ticks == self.max_ticks and entries[-1].is_tick
        sb = self.shredder.add(serialize_entries(entries), reference_tick=ticks, is_last_in_slot=last)
        self.entries.extend(entries)
        self.ticks = ticks
        packets = [sh.payload for sh in sb.data] + [sh.payload for sh in sb.code]
        self.packets.extend(packets)
        return packets

    def finish(
        self,
        bank: Bank,
        included: Sequence[bytes],
        dropped: Sequence[bytes] = (),
        included_votes: Sequence[VoteTx] = (),
    ) -> BuiltSlot:
        """Freeze ``bank`` (the child bank of the parent in which the leader executed
        ``included``, in entry order) on the last entry hash; the slot's ``BuiltSlot``.
        Refuses (``PohError``) entries that replay would reject for their shape, and
        (ValueError) entries whose transactions are not ``included``."""
        if not self.shredder.finished:
            raise ValueError(f"slot {self.slot} is not complete: {self.ticks} of {self.max_ticks} ticks")
        check_slot_ticks(self.entries, self.genesis.poh.hashes_per_tick, self.max_ticks)
        recorded = [tx for e in self.entries for tx in e.transactions]
        if recorded != list(included):
            raise ValueError(f"entries carry {len(recorded)} transactions, not the {len(included)} the bank executed")
        last_hash = self.entries[-1].hash
        bank_hash = bank.freeze(last_hash)
        result = SlotResult(bank, last_hash, self.shredder.merkle_root, len(self.entries), len(recorded), 0)
        rec = BankHashRecord(self.slot, self.parent_slot, bank_hash, last_hash, bank.signature_count,
                             bank.transaction_count)
        return BuiltSlot(self.slot, self.parent_slot, list(self.packets), result, rec, list(included),
                         list(dropped), list(included_votes))


def build_slot_from_entries(
    kp: Keypair,
    genesis: Genesis,
    parent_slot: int,
    parent: SlotResult,
    slot: int,
    bank: Bank,
    entries: Sequence[Entry],
    included: Sequence[bytes],
    dropped: Sequence[bytes] = (),
    included_votes: Sequence[VoteTx] = (),
) -> BuiltSlot:
    """The ``BuiltSlot`` of a whole slot's ``entries`` (e.g. what a PoH recorder produced):
    shredded in one run by :class:`SlotStreamer`, ``bank`` frozen on the last entry hash
    (see :meth:`SlotStreamer.finish` for what it refuses)."""
    check_slot_ticks(entries, genesis.poh.hashes_per_tick, genesis.poh.ticks_per_slot * (slot - parent_slot))
    streamer = SlotStreamer(kp, genesis, parent_slot, parent, slot)
    streamer.add(entries)
    return streamer.finish(bank, included, dropped, included_votes)


def build_variants(kp: Keypair, genesis: Genesis, parent_slot: int, parent: SlotResult, slot: int,
                   txs: Sequence[bytes], votes: Sequence[VoteTx], variants: Variants) -> tuple[BuiltSlot, list[list[bytes]]]:
    """:func:`build_slot`, and the versions of it a producer strategy sends
    (node/production.py ``ProducerStrategy.variants``: the honest one sends the slot)."""
    built = build_slot(kp, genesis, parent_slot, parent, slot, txs, votes)
    return built, variants(built, parent, lambda t: build_slot(kp, genesis, parent_slot, parent, slot, t))


def build_slot(
    kp: Keypair,
    genesis: Genesis,
    parent_slot: int,
    parent: SlotResult,
    slot: int,
    txs: Sequence[bytes] = (),
    votes: Sequence[VoteTx] = (),
) -> BuiltSlot:
    """Produce ``slot`` on top of ``parent`` (the frozen result of ``parent_slot``) at once:
    every batch recorded as early as it fits, then the ticks (raises ``MaxHeightReached``
    if ``hashes_per_tick`` is so small that not every batch fits)."""
    if slot <= parent_slot:
        raise ValueError(f"slot {slot} must be above its parent {parent_slot}")
    bank = open_bank(genesis, parent.bank, slot, kp.pubkey)
    included, dropped, included_votes = select_transactions(bank, txs, votes)
    entries = record_slot_entries(parent.last_entry_hash, genesis.poh.hashes_per_tick, genesis.poh.ticks_per_slot,
                                  slot, parent_slot, entry_batches(included))
    return build_slot_from_entries(kp, genesis, parent_slot, parent, slot, bank, entries, included, dropped,
                                   included_votes)
