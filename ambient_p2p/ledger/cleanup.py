"""Ledger cleanup: purge the blockstore below the root, keeping a configured history
(normative text: spec/blockstore.md, "Cleanup"), after agave's
``ledger/src/blockstore_cleanup_service.rs``.

agave's service wakes once the root has advanced ``DEFAULT_CLEANUP_SLOT_INTERVAL`` (512)
slots since its last purge, estimates the live data shreds from the SST files' entry counts
and, above a shred budget (``DEFAULT_MAX_LEDGER_SHREDS``), purges ``[0, lowest_cleanup_slot]``
with one range delete per column family (``blockstore_purge.rs``), never past the root.

Ours keeps a number of *slots* instead of shreds (our slots are small and of similar size,
and a slot count is what a restart and repair reason about), and never purges past the
newest node snapshot, which a restart replays from (ledger/snapshot.py): the snapshot's
slot and everything above it stay. Sync and blocking: the validator runs it in a worker
thread (``trio.to_thread.run_sync``), never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

# when to purge is the sans-IO policy's (core/history.py); its names stay importable here
from ..core.history import CLEANUP_INTERVAL_SLOTS as CLEANUP_INTERVAL_SLOTS
from ..core.history import DEFAULT_KEEP_SLOTS as DEFAULT_KEEP_SLOTS
from ..core.history import cleanup_due as cleanup_due
from .blockstore import COLUMN_FAMILIES, Blockstore


@dataclass(frozen=True)
class PurgePlan:
    """What :func:`purge_below` would delete: slots ``lowest..floor - 1``."""

    lowest: int
    floor: int


def cleanup_floor(bs: Blockstore, root: int, keep_slots: int) -> int:
    """The lowest slot that must stay: ``root - keep_slots``, but never above the root and
    never above the newest node snapshot (a restart starts there); 0 without a snapshot
    (nothing can be purged until one exists)."""
    if keep_slots < 0:
        raise ValueError("keep_slots must be >= 0")
    snaps = bs.node_snapshot_slots()
    newest = snaps[-1] if snaps else 0
    return max(0, min(root - keep_slots, root, newest))


def plan_purge(bs: Blockstore, root: int, keep_slots: int) -> PurgePlan | None:
    floor = cleanup_floor(bs, root, keep_slots)
    lowest = _lowest_record_slot(bs)
    if lowest is None or lowest >= floor:
        return None
    return PurgePlan(lowest, floor)


def purge_below(bs: Blockstore, root: int, keep_slots: int, *, compact: bool = True) -> int:
    """Purge every column family's records of the slots below ``root - keep_slots`` (clamped
    by :func:`cleanup_floor`: never the root or above, never the newest node snapshot or
    above). Returns the number of slots purged (slots that had a meta or a shred index).

    One batch of range deletes (:meth:`Blockstore.purge_slots`: one tombstone per column
    family, a batch of constant size however many slots and shreds it covers), from the
    lowest stored slot, so shreds of old slots that arrived since the last purge go too.
    With ``compact`` the purged key range is compacted at once so that the disk space comes
    back now (see :meth:`Blockstore.compact_slots`)."""
    plan = plan_purge(bs, root, keep_slots)
    if plan is None:
        return 0
    count = _count_slots(bs, plan.lowest, plan.floor)
    bs.purge_slots(0, plan.floor - 1)
    if compact:
        bs.compact_slots(0, plan.floor - 1)
    return count


def _lowest_record_slot(bs: Blockstore) -> int | None:
    """Lowest slot with any record in a slot-keyed family that cleanup purges (shreds
    without a meta, e.g. coding shreds of a slot with no data yet, count too)."""
    lows = [s for cf in COLUMN_FAMILIES if cf != "node_snapshots" and (s := bs.first_slot_in(cf)) is not None]
    return min(lows) if lows else None


def _count_slots(bs: Blockstore, lo: int, hi: int) -> int:
    """Distinct slots in ``lo..hi - 1`` with a meta or a shred index (keys only)."""
    return len(set(bs.slots_in("meta", lo, hi)) | set(bs.slots_in("index", lo, hi)))
