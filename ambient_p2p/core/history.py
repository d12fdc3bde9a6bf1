"""What a node keeps of its ledger: when it snapshots and when it purges (normative text:
spec/blockstore.md "Cleanup" and "Node snapshots"; spec/node.md "Node policy"). Sans-IO:
the shell (node/validator.py) reports each new root and performs the effects.

Transition table (state: ``last_purge_root``, 0 at start, so a restarted node purges at its
first root past the interval; the previous root is the policy's ``root_written``):

| event                          | guard                                                  | effect / new state                      |
|--------------------------------|--------------------------------------------------------|-----------------------------------------|
| ``rooted(old, new, has_bank)`` | ``new // snapshot_interval > old // snapshot_interval`` | ``TakeSnapshot(new)``                   |
|                                | and the rooted bank is still held (``has_bank``)       |                                         |
|                                | ``new - last_purge_root > cleanup_interval``           | ``PurgeLedger(new, keep_slots)``;       |
|                                |                                                        | ``last_purge_root := new``              |
|                                | otherwise                                              | nothing                                 |

Restart (:func:`restart_refusal`, :func:`initial_roots`; ledger/restore.py reads the ledger):

| ledger                                               | the node restarts from                          |
|------------------------------------------------------|-------------------------------------------------|
| no root stored (an empty ledger)                     | genesis, after storing slot 0 as its root       |
| the newest readable node snapshot, of this genesis   | that snapshot's root                            |
| a newest node snapshot of another genesis            | nothing: refused, ``other-chain``               |
| no node snapshot, history not pruned                 | genesis (every stored slot replays)             |
| no node snapshot, history pruned                     | nothing: refused, ``pruned-without-snapshot``   |

``PurgeLedger(root, keep)`` asks the shell to delete every slot below ``root - keep``, never
the newest node snapshot or above (ledger/cleanup.py ``purge_below``; agave's
``blockstore_cleanup_service``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Slots of history kept below the root (agave counts shreds instead, 200M by default). At
#: 400 ms slots, 1024 slots are about 7 minutes, room for a restart and for peers' repair
#: requests; about 80 MB of a localnet's 64-shred slots.
DEFAULT_KEEP_SLOTS = 1024
#: Cleanup runs once the root has advanced this many slots since the last purge (agave
#: ``DEFAULT_CLEANUP_SLOT_INTERVAL``).
CLEANUP_INTERVAL_SLOTS = 512
#: A node stores a snapshot at the first root at or past each multiple of this many slots
#: (agave takes incremental snapshots every 100 slots and full ones every 25,000; ours hold
#: the whole bank, small on a test network, so one interval). A restart replays at most the
#: slots between the snapshot and the tip: with 64, about 64 + the tower's depth slots.
SNAPSHOT_INTERVAL_SLOTS = 64


def snapshot_due(old_root: int, new_root: int, interval: int = SNAPSHOT_INTERVAL_SLOTS) -> bool:
    """True when the root moving from ``old_root`` to ``new_root`` crossed a multiple of
    ``interval`` (so a node roots in jumps and still snapshots about every interval)."""
    return new_root // interval > old_root // interval


def cleanup_due(last_purge_root: int, root: int, interval: int = CLEANUP_INTERVAL_SLOTS) -> bool:
    """agave's trigger: the root has advanced more than ``interval`` slots since the root
    of the last purge."""
    return root - last_purge_root > interval


@dataclass(frozen=True)
class LedgerHistory:
    """What the node keeps of its ledger: a node snapshot at the first root past each
    multiple of ``snapshot_interval_slots``, and a cleanup once the root advanced more than
    ``cleanup_interval_slots`` since the last one, keeping ``keep_slots`` below the root."""

    keep_slots: int = DEFAULT_KEEP_SLOTS
    snapshot_interval_slots: int = SNAPSHOT_INTERVAL_SLOTS
    cleanup_interval_slots: int = CLEANUP_INTERVAL_SLOTS

    def __post_init__(self) -> None:
        if self.keep_slots < 0 or self.snapshot_interval_slots < 1 or self.cleanup_interval_slots < 1:
            raise ValueError(f"bad ledger history {self}")


@dataclass(frozen=True)
class TakeSnapshot:
    """Write a node snapshot of the rooted slot ``slot``."""

    slot: int


@dataclass(frozen=True)
class PurgeLedger:
    """Purge the ledger below ``root - keep_slots`` (off the ledger lock, in a worker)."""

    root: int
    keep_slots: int


HistoryEffect = TakeSnapshot | PurgeLedger


class Housekeeping:
    """The table above."""

    def __init__(self, history: LedgerHistory | None = None) -> None:
        self.history = history or LedgerHistory()
        self.last_purge_root = 0

    def rooted(self, old_root: int, new_root: int, *, has_bank: bool) -> list[HistoryEffect]:
        h = self.history
        out: list[HistoryEffect] = []
        if has_bank and snapshot_due(old_root, new_root, h.snapshot_interval_slots):
            out.append(TakeSnapshot(new_root))
        if cleanup_due(self.last_purge_root, new_root, h.cleanup_interval_slots):
            self.last_purge_root = new_root
            out.append(PurgeLedger(new_root, h.keep_slots))
        return out


def initial_roots(max_root: int | None) -> list[int]:
    """The roots an empty ledger (no root stored) gets before restarting: genesis."""
    return [0] if max_root is None else []


def restart_refusal(*, snapshot_genesis: bytes | None, genesis_hash: bytes, pruned: bool) -> str | None:
    """Why the ledger cannot restart (the restart table), or None. ``snapshot_genesis``:
    the genesis hash the newest readable node snapshot names (None: no snapshot)."""
    if snapshot_genesis is None:
        return "pruned-without-snapshot" if pruned else None
    return None if snapshot_genesis == genesis_hash else "other-chain"
