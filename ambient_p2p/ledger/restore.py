"""Validator restart from the newest node snapshot (spec/blockstore.md, "Node snapshots";
agave's ``bank_forks_utils::load_bank_forks`` from a local snapshot, then
``blockstore_processor`` replays the slots above it).

:func:`restore` reads; it neither replays nor writes (:func:`restore_job`, the validator's
start-up job, first stores an empty ledger's genesis root). It returns the snapshot's root, that
root's frozen :class:`SlotResult`, the rebuilt :class:`ScheduleBook`, the rooted-slot count,
and the stored slots above the root as the policy sorts them (core/slots.py
``classify_stored``: replayed as usual, parents first; dead; partial; led by this node).
Without a node snapshot it returns genesis (slot 0) and every full slot, exactly what a
start from an empty ledger replays, so callers need one path.

Slots above the snapshot's root that were rooted later (the root moves on between
snapshots) are in :attr:`Restored.roots_above`: they replay like the others and are
credited to the schedule book as they replay (``ScheduleBook.credit_replayed_root``), in
slot order, exactly as a node that never stopped credited them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core import slots as sl
from ..core.history import initial_roots, restart_refusal
from ..core.lstake import epoch_of
from ..core.messages import Genesis
from ..core.schedule import ScheduleBook
from .blockstore import Blockstore
from .meta import SlotMeta
from .producer import genesis_bank
from .replay import SlotResult
from .snapshot import NodeSnapshot, load_latest_node_snapshot, snapshot_slot_result


class RestoreError(Exception):
    """The ledger cannot be restarted from (snapshot of another chain, or history pruned
    without a snapshot to start from)."""


def stored_slot(m: SlotMeta, dead: bool = False) -> sl.StoredSlot:
    """The policy's view of a slot meta (core/slots.py ``StoredSlot``)."""
    return sl.StoredSlot(m.slot, m.parent_slot, m.is_full, m.received, dead)


@dataclass
class Restored:
    #: the root the node restarts from: the node snapshot's slot (0 without one)
    root: int
    #: that root's frozen result (the snapshot's bank, or the genesis bank)
    result: SlotResult
    #: the root's parent slot (0 for slot 0)
    parent: int
    book: ScheduleBook
    #: rooted slots in 1..root (the finality count the node reports)
    rooted_count: int
    #: the stored slots above ``root``, as the policy sorts them (core/slots.py ``classify_stored``)
    above: sl.StoredAbove
    #: stored roots above ``root``, ascending: replay them and credit each as it replays
    roots_above: list[int] = field(default_factory=list)
    snapshot: NodeSnapshot | None = None
    #: node snapshots passed over, "slot N: reason" (a version this node no longer speaks)
    skipped_snapshots: list[str] = field(default_factory=list)


def restore(bs: Blockstore, genesis: Genesis, identity: bytes) -> Restored:
    skipped: list[str] = []
    snap = load_latest_node_snapshot(bs, skipped)
    refused = restart_refusal(snapshot_genesis=None if snap is None else snap.genesis_hash,
                              genesis_hash=genesis.hash(), pruned=snap is None and bs.is_pruned())
    if refused == "pruned-without-snapshot":
        unreadable = f" (unreadable: {'; '.join(skipped)})" if skipped else ""
        raise RestoreError(f"history pruned below slot {bs.lowest_slot()} and no node snapshot to restart "
                           f"from{unreadable}")
    if refused is not None and snap is not None:
        raise RestoreError(f"the node snapshot at slot {snap.slot} belongs to another chain "
                           f"(genesis {snap.genesis_hash.hex()[:16]}...)")
    if snap is None:
        root, parent = 0, 0
        result = SlotResult(genesis_bank(genesis), genesis.hash(), genesis.hash(), 0, 0, 0)
        book = ScheduleBook(genesis)
        rooted_count = 0
    else:
        root, parent = snap.slot, snap.bank.parent_slot
        result = snapshot_slot_result(snap)
        book = ScheduleBook.from_state(genesis, snap.schedule)
        book.ledger.prune(epoch_of(root, book.spe))
        rooted_count = snap.rooted_slots
    stored = [stored_slot(m, m.is_full and bs.dead_slot(m.slot) is not None) for m in bs.slot_metas(start=root + 1)]
    above = sl.classify_stored(stored, lambda slot: book.leader(slot) == identity)
    return Restored(root, result, parent, book, rooted_count, above, list(bs.roots(root + 1)), snap, skipped)


def restore_job(bs: Blockstore, genesis: Genesis, identity: bytes) -> Restored:
    """The validator's start-up read (a worker thread): the restart base and the stored
    slots above it; an empty ledger first gets its genesis root (``initial_roots``)."""
    if roots := initial_roots(bs.max_root()):
        bs.set_roots(roots)
    return restore(bs, genesis, identity)
