"""Whether the node may vote and produce: syncing, behind, isolated (normative text:
spec/node.md "Readiness").

Rules:

1. A node restarted with a tower holding votes starts ``Syncing``: it neither votes nor
   (for ``SYNC_TIMEOUT_SLOTS`` slot durations) produces. Only evidence ends it (a
   state-triggered rule evaluated after every event, as h11's keep-alive rules): a slot of
   another leader, starting after our start, frozen here while the node is not behind ->
   ``Live``. A node that hears nothing and votes on its own slots locks itself onto its own
   fork (observed); producing there is harmless, voting is not. A node that alone holds
   a supermajority of LStake ends syncing at once: no fork can be confirmed without its
   votes, and no other leader's slot may ever come (a lone node restarted from its
   ledger would otherwise sync forever).
2. *Behind* (a pure query of the inputs): a stored slot waits for its ancestors (an
   orphan), or a slot above ``best`` is being repaired, or a peer voted within
   ``BEHIND_WINDOW_MS`` for a slot above ``best`` that we have not replayed. What repair
   wants is an explicit input event (``RepairWanted``), not a side effect of a query.
3. *Isolated*: no slot of another leader replayed here while ``ISOLATION_SLOTS`` of their
   slots passed (looking back at most ``ISOLATION_SCAN_SLOTS``); never for a node holding
   a supermajority alone.
4. ``may_vote`` = Live and not behind and not isolated; ``may_produce`` = Live or the sync
   timeout passed (and not behind: the leader policy asks that separately).

Transition table, (state, event) -> next state:
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .slots import TransitionError

#: A syncing node may produce (not vote) after this many slot durations.
SYNC_TIMEOUT_SLOTS = 40
#: Isolated after this many slots of other leaders passed without one replayed here.
ISOLATION_SLOTS = 12
ISOLATION_SCAN_SLOTS = 96
#: A peer vote for an unreplayed slot above our best makes us behind for this long.
BEHIND_WINDOW_MS = 3_000


class Mode(enum.Enum):
    SYNCING = "syncing"
    LIVE = "live"


@dataclass(frozen=True)
class SlotFrozen:
    slot: int
    slot_start_ms: float  # wall clock
    own: bool


@dataclass(frozen=True)
class RepairWanted:
    """What the repair plan wants now: slots being repaired and whether orphans exist."""

    wanted: frozenset[int]
    orphans: bool


@dataclass(frozen=True)
class SlotDumped:
    slot: int


@dataclass(frozen=True)
class Rooted:
    root: int


Event = SlotFrozen | RepairWanted | SlotDumped | Rooted


@dataclass(frozen=True)
class SyncEnded:
    slot: int  # the fresh foreign slot that ended it (alone: the best slot)


M = Mode
TRANSITIONS: dict[tuple[Mode, type], Mode] = {
    (M.SYNCING, SlotFrozen): M.SYNCING,  # remembered if fresh and foreign
    (M.LIVE, SlotFrozen): M.LIVE,
    (M.SYNCING, RepairWanted): M.SYNCING,
    (M.LIVE, RepairWanted): M.LIVE,
    (M.SYNCING, SlotDumped): M.SYNCING,
    (M.LIVE, SlotDumped): M.LIVE,
    (M.SYNCING, Rooted): M.SYNCING,
    (M.LIVE, Rooted): M.LIVE,
}
#: State-triggered: (from, to, condition), evaluated by :meth:`Readiness.evaluate`.
STATE_TRIGGERED = [(M.SYNCING, M.LIVE, "a fresh foreign slot is frozen and the node is not behind"),
                   (M.SYNCING, M.LIVE, "the node alone holds a supermajority of LStake")]


class Readiness:
    def __init__(self, *, syncing: bool, started_ms: int, slot_ms: float) -> None:
        self.mode = M.SYNCING if syncing else M.LIVE
        self.started_ms = started_ms  # wall clock
        self.slot_ms = slot_ms
        self.last_foreign_slot = 0
        self.fresh: set[int] = set()  # fresh foreign slots frozen while syncing
        self.wanted: frozenset[int] = frozenset()
        self.orphans = False

    @property
    def syncing(self) -> bool:
        return self.mode is M.SYNCING

    def handle(self, ev: Event) -> None:
        nxt = TRANSITIONS.get((self.mode, type(ev)))
        if nxt is None:
            raise TransitionError("bad-readiness-transition", f"{type(ev).__name__} in {self.mode.value}")
        if isinstance(ev, SlotFrozen):
            if not ev.own:
                self.last_foreign_slot = max(self.last_foreign_slot, ev.slot)
                if self.syncing and ev.slot_start_ms >= self.started_ms:
                    self.fresh.add(ev.slot)
        elif isinstance(ev, RepairWanted):
            self.wanted, self.orphans = ev.wanted, ev.orphans
        elif isinstance(ev, SlotDumped):
            self.fresh.discard(ev.slot)
        elif isinstance(ev, Rooted):
            self.wanted = frozenset(s for s in self.wanted if s > ev.root)
            self.fresh = {s for s in self.fresh if s > ev.root}
        self.mode = nxt

    def evaluate(self, *, best: int, now_mono_ms: int, pending: Mapping[int, int],
                 alone_supermajority: bool = False) -> list[SyncEnded]:
        """The state-triggered rule 1."""
        if self.syncing and alone_supermajority:
            self.mode = M.LIVE
            self.fresh.clear()
            return [SyncEnded(best)]
        if self.syncing and self.fresh and not self.behind(best=best, now_mono_ms=now_mono_ms, pending=pending):
            self.mode = M.LIVE
            slot = min(self.fresh)
            self.fresh.clear()
            return [SyncEnded(slot)]
        return []

    # -- pure queries ---------------------------------------------------------------------
    def behind(self, *, best: int, now_mono_ms: int, pending: Mapping[int, int]) -> bool:
        """Rule 2. ``pending``: slot -> monotonic ms of its latest pending vote."""
        if self.orphans or any(w > best for w in self.wanted):
            return True
        return any(s > best and now_mono_ms - t < BEHIND_WINDOW_MS for s, t in pending.items())

    def isolated(self, *, current_slot: int, leader_of: Callable[[int], bytes | None], me: bytes,
                 alone_supermajority: bool) -> bool:
        """Rule 3."""
        if alone_supermajority:
            return False
        others = 0
        for s in range(current_slot - 2, max(self.last_foreign_slot, current_slot - 2 - ISOLATION_SCAN_SLOTS), -1):
            leader = leader_of(s)
            if leader is not None and leader != me:
                others += 1
                if others >= ISOLATION_SLOTS:
                    return True
        return False

    def may_produce(self, now_ms: int) -> bool:
        """Rule 4 (``now_ms``: wall clock)."""
        return not self.syncing or now_ms - self.started_ms > SYNC_TIMEOUT_SLOTS * self.slot_ms

    def no_vote_reason(self, *, behind: bool, isolated: bool) -> str | None:
        """Rule 4: why the node may not vote now (None: it may)."""
        if self.syncing:
            return "syncing"
        if behind:
            return "behind"
        if isolated:
            return "isolated"
        return None
