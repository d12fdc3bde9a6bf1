"""The validator's ledger jobs (spec/node.md "Services"): what its worker threads run, disk
and CPU only, touching no policy and no trio. Each returns what the trio thread hands the
policy (node/validator.py): the insert's facts per touched slot, a replay's result, the
slots a repair round reads. Also the ledger's side of the policy's slot effects and the
control commands' reads (trio thread: single small writes and reads). Restart reads are in
ledger/restore.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core import codec
from ..core import slots as sl
from ..core.messages import Genesis
from ..core.node_policy import touched_slots
from .blockstore import Blockstore, InsertResult
from .meta import BankHashRecord
from .replay import SlotRejected, SlotResult, replay_slot
from .restore import stored_slot
from .snapshot import NodeSnapshot, save_node_snapshot

#: the policy's facts of an insert: per touched slot, ``Completed`` or ``ShredsStored``
Stored = list[sl.ShredsStored | sl.Completed]
Leaders = Callable[[int], bytes | None]


def insert_job(bs: Blockstore, packets: list[bytes], leaders: Leaders, verified: bool) -> tuple[InsertResult, Stored]:
    """Insert; the policy's facts: per touched slot, ``Completed`` or ``ShredsStored``."""
    res = bs.insert_shreds(packets, leaders, signatures_verified=verified)
    metas = (bs.slot_meta(s) for s in touched_slots(packets, (i for i, _r in res.rejected), res.completed_slots))
    return res, [e for m in metas if m is not None and (e := sl.stored_event(stored_slot(m))) is not None]


def replay_job(bs: Blockstore, genesis: Genesis, parent: SlotResult, slot: int, leader: bytes,
               known_verified: Callable[[bytes], bool] | None = None) -> tuple[SlotResult | str, bool]:
    """Replay ``slot`` (its shreds verified at insert), record its bank hash once; the
    result or the rejection's reason, and whether a duplicate proof is stored for it."""
    try:
        res = replay_slot(bs, genesis, parent, slot, leader, shreds_verified=True, known_verified=known_verified)
    except SlotRejected as exc:
        return str(exc), False
    b = res.bank
    assert b.bank_hash is not None
    if bs.bank_hash(slot) is None:
        bs.put_bank_hash(BankHashRecord(slot, parent.bank.slot, b.bank_hash, b.last_blockhash,
                                        b.signature_count, b.transaction_count))
    return res, bs.duplicate_proof(slot) is not None


def store_built_job(bs: Blockstore, record: BankHashRecord, packets: list[bytes],
                    leaders: Leaders) -> tuple[InsertResult, Stored]:
    """Store an own slot (bank-hash record, shreds through the verified insert)."""
    bs.put_bank_hash(record)
    res, events = insert_job(bs, packets, leaders, True)
    if res.rejected:
        raise AssertionError(f"own shreds rejected: {res.rejected[:2]}")
    return res, events


def consumed_job(bs: Blockstore, slots: list[int]) -> dict[int, int | None]:
    """Per slot, its data shreds stored contiguously from 0 (None: no meta): what a repair
    round asks from."""
    return {s: (m.consumed if (m := bs.slot_meta(s)) is not None else None) for s in slots}


def save_snapshot_job(bs: Blockstore, snap: NodeSnapshot) -> str | None:
    """Write a node snapshot; the reason when it cannot be (the bank outgrew one record,
    spec/blockstore.md: the older snapshot stays)."""
    try:
        save_node_snapshot(bs, snap)
    except codec.EncodeError as exc:
        return str(exc)
    return None


#: the policy's slot effects that are ledger writes
LedgerEffect = sl.MarkDead | sl.Purge | sl.ClearDead


def write_slot_effect(bs: Blockstore, e: LedgerEffect) -> None:
    """Perform one of the policy's ledger effects (core/slots.py): a dead slot's mark (its
    reason cut to 500 bytes), a dumped slot's purge, a repaired slot's dead mark cleared."""
    if isinstance(e, sl.MarkDead):
        bs.mark_dead(e.slot, e.reason[:500])
    elif isinstance(e, sl.Purge):
        for s in e.slots:
            bs.purge_slots(s, s)
    else:
        bs.clear_dead(e.slot)


def chain_rows(bs: Blockstore, lo: int) -> list[tuple[int, bytes | None]]:
    """The stored roots from ``lo`` with their bank hashes (the ``chain`` control command)."""
    return [(r, rec.bank_hash if (rec := bs.bank_hash(r)) else None) for r in bs.roots(lo)]


def slot_facts(bs: Blockstore, slot: int) -> dict[str, Any]:
    """What the ledger knows of ``slot`` (the ``slot_info`` control command's fields)."""
    rec, proof, dead = bs.bank_hash(slot), bs.duplicate_proof(slot), bs.dead_slot(slot)
    return {"bank_hash": rec.bank_hash if rec else None, "last_blockhash": rec.last_blockhash if rec else None,
            "parent": rec.parent_slot if rec else None, "rooted": bs.is_root(slot),
            "dead_reason": dead.reason if dead else None, "duplicate_proof": proof.kind if proof else None}
