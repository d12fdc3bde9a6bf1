"""Block production for one leader slot (spec/node.md "Production").

The leader builds slot ``slot`` on a frozen parent (the fork-choice tip): a child bank,
PoH continuing from the parent's last entry hash with ``ticks_per_slot`` ticks (times the
number of slots since the parent: a slot carries the ticks of skipped slots, as agave) of
``hashes_per_tick`` hashes, the pending transactions that execute as entries in the first
ticks, then the entries cut into chained 32:32 Merkle FEC sets signed by the leader.
Vote transactions go first (agave reserves block space for votes), and only those that
land on this fork: a vote for another fork, or one not newer than its voter's last landed
vote, would only cost its voter a fee. The
result is exactly what replay (ledger/replay.py) accepts from any other node, which is
why the leader keeps the frozen result instead of replaying its own slot.

Pure: no clock, no disk, no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..core.bank import BlockError
from ..core.constants import SHRED_VERSION, TXS_PER_ENTRY
from ..core.crypto import Keypair
from ..core.messages import Genesis
from ..core.poh import Entry, Poh, serialize_entries
from ..core.shred import make_shreds_from_data
from ..core.vote_program import VoteTx
from ..ledger.meta import BankHashRecord
from ..ledger.replay import SlotResult

#: Most transactions one slot takes from the pending pool.
MAX_TXS_PER_SLOT = 256
#: Most vote transactions one slot takes (one per voter; on top of MAX_TXS_PER_SLOT).
MAX_VOTES_PER_SLOT = 1024


@dataclass
class BuiltSlot:
    slot: int
    parent: int
    packets: list[bytes]  # data shreds then coding shreds (payloads)
    result: SlotResult
    record: BankHashRecord
    included: list[bytes]  # transactions that made it into the slot
    dropped: list[bytes]  # transactions the bank refused (they would make the block invalid)
    included_votes: list[VoteTx]  # the vote transactions among ``included`` that landed


def build_slot(
    kp: Keypair,
    genesis: Genesis,
    parent_slot: int,
    parent: SlotResult,
    slot: int,
    txs: Sequence[bytes] = (),
    votes: Sequence[VoteTx] = (),
) -> BuiltSlot:
    """Produce ``slot`` on top of ``parent`` (the frozen result of ``parent_slot``)."""
    if slot <= parent_slot:
        raise ValueError(f"slot {slot} must be above its parent {parent_slot}")
    hpt, tps = genesis.poh.hashes_per_tick, genesis.poh.ticks_per_slot
    bank = parent.bank.child(slot, kp.pubkey)
    poh = Poh(parent.last_entry_hash, hpt)
    included: list[bytes] = []
    dropped: list[bytes] = []
    included_votes: list[VoteTx] = []
    for vt in list(votes)[:MAX_VOTES_PER_SLOT]:
        if bank.vote_error(vt.vote) is not None:
            continue
        try:  # a VoteTx's signatures were verified when it was parsed (or made)
            (res,) = bank.process_transactions([vt.raw], verify_signatures=False)
        except BlockError:
            continue  # e.g. its blockhash is not on this fork
        included.append(vt.raw)
        if res.error is None:
            included_votes.append(vt)
    for raw in list(txs)[:MAX_TXS_PER_SLOT]:
        try:  # one at a time: a refused transaction must not take the others with it
            bank.process_transactions([raw])
            included.append(raw)
        except BlockError:
            dropped.append(raw)
    batches = [included[i : i + TXS_PER_ENTRY] for i in range(0, len(included), TXS_PER_ENTRY)]
    entries: list[Entry] = []
    for _t in range(tps * (slot - parent_slot)):
        # at most (hpt - 1) records fit in one tick (each record is one hash)
        for _ in range(max(0, hpt - 1)):
            if not batches:
                break
            e = poh.record_entry(batches[0])
            if e is None:
                break
            entries.append(e)
            batches.pop(0)
        entries.append(poh.tick_entry())
    if batches:  # hpt so small that not every batch fitted: leave them for the next slot
        left = {t for b in batches for t in b}
        raise ValueError(f"{len(left)} transactions did not fit the slot's PoH (hashes_per_tick {hpt})")
    bank_hash = bank.freeze(entries[-1].hash)
    sb = make_shreds_from_data(kp, parent.last_root, serialize_entries(entries), slot, parent_slot,
                               SHRED_VERSION, tps, True, 0, 0)
    packets = [s.payload for s in sb.data] + [s.payload for s in sb.code]
    ntx = sum(len(e.transactions) for e in entries)
    result = SlotResult(bank, entries[-1].hash, sb.merkle_root, len(entries), ntx, 0)
    rec = BankHashRecord(slot, parent_slot, bank_hash, entries[-1].hash, bank.signature_count, bank.transaction_count)
    return BuiltSlot(slot, parent_slot, packets, result, rec, included, dropped, included_votes)
