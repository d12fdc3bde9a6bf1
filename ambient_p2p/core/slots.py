"""The slot lifecycle as a sans-IO state machine (normative text: spec/node.md "Slot
lifecycle"; agave: replay_stage.rs and repair/cluster_slot_state_verifier.rs).

Rules (everything that moves a slot between states is in this file):

1. A slot is tracked from the first insert that stores one of its shreds (``Partial``);
   the insert that completes it makes it ``Full``.
2. A ``Full`` slot whose parent is ``Frozen`` (and whose leader is known) is replayed:
   it becomes ``Replaying`` and the shell is told ``Replay(slot, parent)``. Parents are
   always frozen before their children (this is a state-triggered rule, evaluated after
   every event until nothing changes, as h11's ``STATE_TRIGGERED_TRANSITIONS``).
3. Replay ends ``Frozen(hash)`` (effect ``SlotFrozen``) or ``Dead(reason)`` (effect
   ``MarkDead``). A ``Full`` slot whose parent is ``Dead`` dies too (``parent-dead``).
4. The node's own slots are ``Frozen`` when built (``Produced``): the built bank is the
   replay result.
5. When the cluster duplicate-confirms another version of a slot (> 52 % of LStake voted a
   bank hash we do not have), our version is dumped whether it froze to another hash or
   died (agave: ``(Frozen(h'), DuplicateConfirmed(h))`` and ``(Dead,
   DuplicateConfirmed(h))`` both give ``RepairDuplicateConfirmedVersion``): the slot and
   every frozen descendant are purged (``Purge``), descendants that died on top of our
   version are revived (``ClearDead``, back to ``Full``), the slot becomes ``Dumped`` and
   is repaired (``RepairSlot``). Shreds of the confirmed version revive it (``Partial`` /
   ``Full``). A child replaying on a dumped slot goes back to ``Full``; its result, when
   it comes, is stale and ignored (as results for dumped or forgotten slots are).
6. ``Rooted(root)`` forgets every slot at or below the root (``Pruned``) and every slot
   whose known ancestry leaves the root's fork (its parent is below the root or already
   off the fork): those are ``Pruned`` too, unlinked, until the root passes them; a slot
   stored later that names such a parent joins them at once; dead slots stay dead. A slot
   whose ancestry is not known yet (no parent named, or a chain ending at a slot we hold
   nothing of) stays. A replay running on a slot so pruned is stale (its result is
   ignored, rule 7). Nothing here grows without bound. (Forgetting only the frozen ones,
   while their children kept naming them, made them look like orphans: the repair plan
   wanted them, readiness said "behind" for good, and repair could never bring them back,
   since the blockstore already held them whole and an insert that stores nothing new
   gives no event: a cut-and-heal cluster stopped producing, tests/test_slots_offfork.py.)
7. An event for a ``Pruned`` slot (at or below the root, or off its fork) is ignored; an
   event whose (state, event) pair is not in the table raises :class:`TransitionError`.

The shell keeps the set of incomplete slots here, fed by insert results, so the repair
plan (:meth:`SlotTracker.repair_candidates`) never scans the blockstore.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass


class TransitionError(ValueError):
    """An event that the state machine's table does not allow (a ``ProtocolError``-shaped
    error: a stable ``reason`` and a ``detail``)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class SlotState(enum.Enum):
    ABSENT = "absent"  # not tracked (no shred stored), above the root
    PARTIAL = "partial"
    FULL = "full"
    REPLAYING = "replaying"
    FROZEN = "frozen"
    DEAD = "dead"
    DUMPED = "dumped"
    PRUNED = "pruned"  # at or below the root, or off the root's fork (rule 6)


# -- events -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShredsStored:
    """An insert stored shreds of ``slot`` (parent as the shreds name it, None if unknown)."""

    slot: int
    parent: int | None


@dataclass(frozen=True)
class Completed:
    """An insert completed ``slot`` (every data shred up to the last is stored)."""

    slot: int
    parent: int


@dataclass(frozen=True)
class Replayed:
    slot: int
    bank_hash: bytes


@dataclass(frozen=True)
class ReplayFailed:
    slot: int
    reason: str


@dataclass(frozen=True)
class Produced:
    """This node built ``slot`` on ``parent``; the built bank froze to ``bank_hash``."""

    slot: int
    parent: int
    bank_hash: bytes


@dataclass(frozen=True)
class LoadedDead:
    """Start-up: the blockstore records ``slot`` as dead (already persisted)."""

    slot: int
    parent: int


@dataclass(frozen=True)
class DuplicateConfirmed:
    """More than 52 % of LStake voted ``bank_hash`` for ``slot``."""

    slot: int
    bank_hash: bytes


@dataclass(frozen=True)
class Rooted:
    root: int


Event = ShredsStored | Completed | Replayed | ReplayFailed | Produced | LoadedDead | DuplicateConfirmed | Rooted


# -- effects ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Replay:
    slot: int
    parent: int


@dataclass(frozen=True)
class SlotFrozen:
    slot: int
    parent: int
    bank_hash: bytes


@dataclass(frozen=True)
class MarkDead:
    slot: int
    reason: str


@dataclass(frozen=True)
class Purge:
    slots: tuple[int, ...]


@dataclass(frozen=True)
class ClearDead:
    slot: int


@dataclass(frozen=True)
class RepairSlot:
    slot: int
    bank_hash: bytes


Effect = Replay | SlotFrozen | MarkDead | Purge | ClearDead | RepairSlot

S = SlotState
#: Event-triggered transitions: (state, event type) -> (next state, effect types). A
#: next state of None means "unchanged". Rows with a guard say so in ``GUARDS``.
TRANSITIONS: dict[tuple[SlotState, type], tuple[SlotState | None, tuple[type, ...]]] = {
    (S.ABSENT, ShredsStored): (S.PARTIAL, ()),
    (S.PARTIAL, ShredsStored): (None, ()),
    (S.FULL, ShredsStored): (None, ()),
    (S.REPLAYING, ShredsStored): (None, ()),
    (S.FROZEN, ShredsStored): (None, ()),
    (S.DEAD, ShredsStored): (None, ()),
    (S.DUMPED, ShredsStored): (S.PARTIAL, ()),  # the confirmed version arrives
    (S.ABSENT, Completed): (S.FULL, ()),
    (S.PARTIAL, Completed): (S.FULL, ()),
    (S.DUMPED, Completed): (S.FULL, ()),
    (S.FULL, Completed): (None, ()),
    (S.REPLAYING, Completed): (None, ()),
    (S.FROZEN, Completed): (None, ()),
    (S.DEAD, Completed): (None, ()),
    (S.REPLAYING, Replayed): (S.FROZEN, (SlotFrozen,)),
    (S.DUMPED, Replayed): (None, ()),  # a replay result for the version dumped meanwhile
    (S.ABSENT, Replayed): (None, ()),  # ... or for a slot forgotten meanwhile
    (S.FULL, Replayed): (None, ()),  # ... or replayed on a parent dumped meanwhile
    (S.REPLAYING, ReplayFailed): (S.DEAD, (MarkDead,)),
    (S.DUMPED, ReplayFailed): (None, ()),
    (S.ABSENT, ReplayFailed): (None, ()),
    (S.FULL, ReplayFailed): (None, ()),
    (S.ABSENT, Produced): (S.FROZEN, (SlotFrozen,)),
    (S.PARTIAL, Produced): (S.FROZEN, (SlotFrozen,)),
    (S.FULL, Produced): (S.FROZEN, (SlotFrozen,)),  # our own shreds completed it first
    (S.ABSENT, LoadedDead): (S.DEAD, ()),
    (S.FROZEN, DuplicateConfirmed): (S.DUMPED, (Purge, ClearDead, RepairSlot)),  # guard: other hash
    (S.DEAD, DuplicateConfirmed): (S.DUMPED, (Purge, ClearDead, RepairSlot)),  # A5
    (S.ABSENT, DuplicateConfirmed): (None, ()),
    (S.PARTIAL, DuplicateConfirmed): (None, ()),
    (S.FULL, DuplicateConfirmed): (None, ()),
    (S.REPLAYING, DuplicateConfirmed): (None, ()),  # decided again on the replay result
    (S.DUMPED, DuplicateConfirmed): (None, ()),
}
#: Rows whose effects depend on a guard (documented, tested).
GUARDS = {
    (S.FROZEN, DuplicateConfirmed): "no change when our bank hash is the confirmed one",
}
#: State-triggered transitions, applied after every event until none applies.
STATE_TRIGGERED: dict[str, tuple[SlotState, SlotState, tuple[type, ...]]] = {
    "parent frozen, leader known": (S.FULL, S.REPLAYING, (Replay,)),
    "parent dead": (S.FULL, S.DEAD, (MarkDead,)),
}


# -- facts read from the ledger ------------------------------------------------------------
@dataclass(frozen=True)
class StoredSlot:
    """What the ledger holds of one slot (its slot meta and dead mark), as the shell reads
    it after an insert or at start-up."""

    slot: int
    parent: int | None  # as the stored shreds name it (None: no shred says yet)
    full: bool  # every data shred up to the last is stored
    received: int  # one past the highest data shred index stored (0: none)
    dead: bool = False


def stored_event(s: StoredSlot) -> ShredsStored | Completed | None:
    """The tracker's event for a slot an insert touched (rule 1): ``Completed`` once full
    with a known parent, ``ShredsStored`` while it holds shreds, None when it holds none."""
    if s.full and s.parent is not None:
        return Completed(s.slot, s.parent)
    return ShredsStored(s.slot, s.parent) if s.received > 0 else None


@dataclass
class StoredAbove:
    """The stored slots above a restart base, sorted by what the restart does with them
    (:func:`classify_stored`)."""

    #: full, not dead, ascending (parents before children): replayed
    replay: list[int]
    #: recorded dead: they stay dead (``LoadedDead``)
    dead: list[int]
    #: shreds but not full, ascending: repair completes them
    partial: list[int]
    #: the parent each stored slot names (None: no shred says yet)
    parents: dict[int, int | None]
    #: slots with shreds whose scheduled leader is this node: it produced them before it
    #: stopped and must never produce them again (a second version is an equivocation)
    produced: list[int]


def classify_stored(stored: Iterable[StoredSlot], is_own: Callable[[int], bool]) -> StoredAbove:
    """Sort ``stored`` (ascending) for a restart; ``is_own(slot)``: this node leads it."""
    out = StoredAbove([], [], [], {}, [])
    for s in stored:
        if s.received > 0 and is_own(s.slot):
            out.produced.append(s.slot)
        out.parents[s.slot] = s.parent
        if not s.full:
            if s.received > 0:
                out.partial.append(s.slot)
        else:
            (out.dead if s.dead else out.replay).append(s.slot)
    return out


def restart_events(above: StoredAbove, *, root: int, roots_above: Iterable[int]) -> list[Event]:
    """The tracker's events for the stored slots above a restart base whose tower root is
    ``root``: dead slots stay dead; full slots above the root (or rooted in the ledger above
    the base) are ``Completed`` and so replay; partial slots above the root are tracked for
    repair. Ascending."""
    rooted, dead, replay = set(roots_above), set(above.dead), set(above.replay)
    out: list[Event] = []
    for slot in sorted(dead | replay | set(above.partial)):
        parent = above.parents.get(slot)
        if slot in dead:
            out.append(LoadedDead(slot, parent or 0))
        elif slot in replay:
            if parent is not None and (slot > root or slot in rooted):
                out.append(Completed(slot, parent))
        elif slot > root:
            out.append(ShredsStored(slot, parent))
    return out


class SlotTracker:
    """Every slot above the root that this node holds something of, with its state."""

    def __init__(self, root: int, root_hash: bytes, leader_known: Callable[[int], bool] = lambda _s: True) -> None:
        self.root = root
        self.leader_known = leader_known
        self.states: dict[int, SlotState] = {root: S.FROZEN}
        self.parents: dict[int, int] = {}
        self.children: dict[int, set[int]] = {}
        self.hashes: dict[int, bytes] = {root: root_hash}
        self.reasons: dict[int, str] = {}
        self.own: set[int] = set()  # slots this node produced
        self.full: set[int] = set()  # state FULL (waiting for the parent / the leader)
        #: FULL slots the state-triggered rules must look at: newly full, or whose parent
        #: froze or died since (the rules never scan every full slot: a node loading or
        #: catching up holds thousands of them, and each event would cost O(full))
        self._check: set[int] = set()
        self._await_leader: set[int] = set()  # FULL, parent frozen, leader not known yet
        self.partial: set[int] = set()  # state PARTIAL: the incremental incomplete set
        self.dumped: dict[int, bytes] = {}  # state DUMPED: slot -> hash to repair
        #: slots above the root known not to descend from it (rule 6): Pruned, unlinked
        self.off_fork: set[int] = set()

    # -- queries --------------------------------------------------------------------------
    def state(self, slot: int) -> SlotState:
        if slot in self.states:
            return self.states[slot]
        return S.PRUNED if slot <= self.root or slot in self.off_fork else S.ABSENT

    def is_frozen(self, slot: int) -> bool:
        return self.states.get(slot) is S.FROZEN

    def is_dead(self, slot: int) -> bool:
        return self.states.get(slot) is S.DEAD

    def frozen_hash(self, slot: int) -> bytes | None:
        return self.hashes.get(slot) if self.is_frozen(slot) else None

    def parent(self, slot: int) -> int | None:
        return self.parents.get(slot)

    def frozen_slots(self) -> list[int]:
        return sorted(s for s, st in self.states.items() if st is S.FROZEN)

    def dead_slots(self) -> list[int]:
        return sorted(s for s, st in self.states.items() if st is S.DEAD)

    def repair_candidates(self, horizon: int) -> tuple[set[int], set[int]]:
        """(wanted, orphans) above the root and below ``horizon``: partial and dumped slots,
        and slots a tracked child names as parent while we hold nothing of them (orphans:
        repair asks for their highest shreds to learn their ancestry). O(tracked slots)."""
        orphans = {p for p in self.children if self.root < p < horizon and p not in self.states}
        wanted = {s for s in self.partial | set(self.dumped) if self.root < s < horizon} | orphans
        return wanted, orphans

    # -- events ---------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Effect]:
        if isinstance(event, Rooted):
            self.prune(event.root)
            return self._settle()
        slot = event.slot
        if slot <= self.root or slot in self.off_fork:
            return []  # rule 7: the root and below, and what left its fork, are settled
        st = self.state(slot)
        if (isinstance(event, ShredsStored | Completed) and st in (S.ABSENT, S.PARTIAL, S.DUMPED)
                and event.parent is not None and self._off_fork(event.parent)):
            self._cut((slot,))  # rule 6: it names a parent off the root's fork
            return self._settle()
        row = TRANSITIONS.get((st, type(event)))
        if row is None:
            raise TransitionError("bad-slot-transition", f"slot {slot}: {type(event).__name__} in state {st.value}")
        nxt, kinds = row
        effects = self._apply(st, event)
        if nxt is not None and not (st is S.FROZEN and self.states.get(slot) is S.FROZEN):
            assert self.state(slot) is nxt, (st, event, self.state(slot))
        assert all(type(e) in kinds for e in effects), (st, event, effects)
        return effects + self._settle()

    def _set(self, slot: int, st: SlotState) -> None:
        old = self.states.get(slot)
        if old is S.FULL:
            self.full.discard(slot)
        elif old is S.PARTIAL:
            self.partial.discard(slot)
        elif old is S.DUMPED:
            self.dumped.pop(slot, None)
        self.states[slot] = st
        if st is S.FULL:
            self.full.add(slot)
            self._check.add(slot)
        elif st is S.PARTIAL:
            self.partial.add(slot)
        elif st is S.FROZEN or st is S.DEAD:
            self._check.update(self.children.get(slot, ()))

    def _link(self, slot: int, parent: int | None) -> None:
        if parent is None or self.parents.get(slot) == parent:
            return
        old = self.parents.get(slot)
        if old is not None:
            self._unlink_child(old, slot)
        self.parents[slot] = parent
        self.children.setdefault(parent, set()).add(slot)

    def _unlink_child(self, parent: int, slot: int) -> None:
        """``slot`` no longer names ``parent``; a parent nothing names leaves ``children``
        (an empty entry would still make it an orphan in :meth:`repair_candidates`)."""
        kids = self.children.get(parent)
        if kids is not None:
            kids.discard(slot)
            if not kids:
                del self.children[parent]

    def _apply(self, st: SlotState, ev: Event) -> list[Effect]:
        # Once a slot is full its parent is fixed: shreds naming another parent later are a
        # duplicate version (the blockstore keeps the proof), not a new ancestry.
        if isinstance(ev, ShredsStored):
            if st in (S.ABSENT, S.PARTIAL, S.DUMPED):
                self._link(ev.slot, ev.parent)
            if st in (S.ABSENT, S.DUMPED):
                self._set(ev.slot, S.PARTIAL)
            return []
        if isinstance(ev, Completed):
            if st in (S.ABSENT, S.PARTIAL, S.DUMPED):
                self._link(ev.slot, ev.parent)
                self._set(ev.slot, S.FULL)
            return []
        if isinstance(ev, Replayed):
            if st is not S.REPLAYING:
                return []
            self._set(ev.slot, S.FROZEN)
            self.hashes[ev.slot] = ev.bank_hash
            return [SlotFrozen(ev.slot, self.parents[ev.slot], ev.bank_hash)]
        if isinstance(ev, ReplayFailed):
            if st is not S.REPLAYING:
                return []
            return self._die(ev.slot, ev.reason)
        if isinstance(ev, Produced):
            self._link(ev.slot, ev.parent)
            self._set(ev.slot, S.FROZEN)
            self.hashes[ev.slot] = ev.bank_hash
            self.own.add(ev.slot)
            return [SlotFrozen(ev.slot, ev.parent, ev.bank_hash)]
        if isinstance(ev, LoadedDead):
            self._link(ev.slot, ev.parent)
            self._set(ev.slot, S.DEAD)
            self.reasons[ev.slot] = "loaded"
            return []
        if isinstance(ev, DuplicateConfirmed):
            if st is S.FROZEN and self.hashes.get(ev.slot) != ev.bank_hash:
                return self._dump(ev.slot, ev.bank_hash)
            if st is S.DEAD:
                return self._dump(ev.slot, ev.bank_hash)
            return []
        raise AssertionError(ev)  # pragma: no cover

    def _die(self, slot: int, reason: str) -> list[Effect]:
        self._set(slot, S.DEAD)
        self.reasons[slot] = reason
        self.hashes.pop(slot, None)
        return [MarkDead(slot, reason)]

    def _descendants(self, slot: int) -> list[int]:
        out: list[int] = []
        stack = [slot]
        while stack:
            for c in self.children.get(stack.pop(), ()):
                out.append(c)
                stack.append(c)
        return sorted(out)

    def _dump(self, slot: int, confirmed: bytes) -> list[Effect]:
        """Rule 5: purge our version and what froze on it; revive what died on it."""
        gone = [slot]
        revived: list[int] = []
        for d in self._descendants(slot):
            st = self.states.get(d)
            if st is S.FROZEN and self.parents.get(d) in gone:
                gone.append(d)
            elif st is S.DEAD:
                revived.append(d)
            elif st is S.REPLAYING and self.parents.get(d) in gone:
                self._set(d, S.FULL)  # its replay ran on our version: the result is stale
        was_dead = self.states.get(slot) is S.DEAD
        for d in gone:
            self._forget(d)
        self._set(slot, S.DUMPED)
        self.dumped[slot] = confirmed
        old_parent = self.parents.pop(slot, None)  # the confirmed version may name another
        if old_parent is not None:
            self._unlink_child(old_parent, slot)
        for d in revived:
            self._set(d, S.FULL)
            self.reasons.pop(d, None)
        effects: list[Effect] = [Purge(tuple(gone))]
        effects += [ClearDead(d) for d in ([slot] if was_dead else []) + revived]
        effects.append(RepairSlot(slot, confirmed))
        return effects

    def _forget(self, slot: int) -> None:
        st = self.states.pop(slot, None)
        if st is S.FULL:
            self.full.discard(slot)
        elif st is S.PARTIAL:
            self.partial.discard(slot)
        self.dumped.pop(slot, None)
        self.hashes.pop(slot, None)
        self.reasons.pop(slot, None)
        self.own.discard(slot)

    def _off_fork(self, parent: int) -> bool:
        """A child of ``parent`` cannot descend from the root (rule 6)."""
        return parent in self.off_fork or parent < self.root

    def _cut(self, slots: Iterable[int]) -> None:
        """Rule 6: ``slots`` and every descendant leave the tracker for ``off_fork``,
        unlinked (nothing names them as parent any more: not orphans, never repaired).
        Dead slots stay (dead: nothing they name is wanted) until the root passes them."""
        stack = list(slots)
        while stack:
            s = stack.pop()
            if s in self.off_fork or self.states.get(s) is S.DEAD:
                continue  # a dead slot stays dead (what it names is never wanted) until the root passes it
            self.off_fork.add(s)
            stack.extend(self.children.pop(s, ()))
            self._forget(s)
            self._await_leader.discard(s)
            self._check.discard(s)
            p = self.parents.pop(s, None)
            if p is not None:
                self._unlink_child(p, s)

    def _settle(self) -> list[Effect]:
        """The state-triggered rules, to a fixed point (parents before children)."""
        effects: list[Effect] = []
        progress = True
        while progress:
            progress = False
            candidates = (self._check | self._await_leader) & self.full
            self._check, self._await_leader = set(), set()
            for slot in sorted(candidates):
                parent = self.parents.get(slot)
                if parent is None:
                    continue
                pst = self.state(parent)
                if pst is S.DEAD:
                    effects += self._die(slot, f"parent-dead: parent {parent} failed replay")
                    progress = True
                elif pst is S.FROZEN and self.leader_known(slot):
                    self._set(slot, S.REPLAYING)
                    effects.append(Replay(slot, parent))
                    progress = True
                elif pst is S.FROZEN:
                    self._await_leader.add(slot)
        return effects

    def prune(self, root: int) -> None:
        """Rule 6: forget everything at or below ``root`` (``root`` itself stays, frozen)."""
        if root <= self.root:
            return
        for s in [s for s in self.states if s < root]:
            self._forget(s)
            self.parents.pop(s, None)
        self.parents = {s: p for s, p in self.parents.items() if s > root}
        self.children = {p: {c for c in kids if c > root} for p, kids in self.children.items() if p >= root}
        self.children = {p: k for p, k in self.children.items() if k}
        self.root = root
        if self.states.get(root) is not S.FROZEN:
            self._forget(root)
            self.states[root] = S.FROZEN
            self._check.update(self.children.get(root, ()))
        self.off_fork = {s for s in self.off_fork if s > root}
        # slots whose known parent is below the root (or off its fork) can never be built
        # on or voted for: they and their descendants leave the tracker (rule 6); a replay
        # running on one is stale and its result ignored (rule 7)
        self._cut([s for s, p in self.parents.items() if self._off_fork(p)])


#: Slots requested per repair round (lowest first), before the probes.
REPAIR_SLOTS_PER_ROUND = 32
#: While syncing or isolated, each round also probes this many recent clock slots.
SYNC_PROBE_SLOTS = 4
#: A partial slot that nothing builds on stops making the node "behind" this many slots
#: after it: a leader that died or gave up mid-slot (its PoH late at start-up, a SIGKILL)
#: leaves shreds that can never complete, and every node holding them would otherwise wait
#: for them forever (observed: a 400 ms localnet whose first leader abandoned slot 12 never
#: produced a slot). Repair keeps asking for it; a child or a peer's vote brings it back.
STALE_PARTIAL_SLOTS = 8
_LACKING = (S.ABSENT, S.PARTIAL, S.DUMPED)


def repair_plan(tracker: SlotTracker, *, current_slot: int, voted_slots: Iterable[int],
                probe: bool) -> tuple[list[int], set[int], set[int]]:
    """What repair asks for this round: (slots, orphans, wanted-by-the-tracker).

    Slots above the root and at least a slot in the past (below ``current_slot - 1``) that
    we lack: partial, dumped and orphan slots (the tracker's incremental sets) and slots
    peers voted for (``voted_slots``: the pending votes), lowest first, at most
    ``REPAIR_SLOTS_PER_ROUND``; then, when ``probe`` (syncing or isolated), the recent
    clock slots ``current_slot - SYNC_PROBE_SLOTS - 1 .. current_slot - 2`` that we lack, so
    a node whose gossip is not reaching it learns the network's tip. The third value is
    readiness's ``RepairWanted`` input: orphans, dumped slots, and partial slots that a
    tracked slot names as parent (unless every such child is itself a stale partial slot) or
    that are recent (within ``STALE_PARTIAL_SLOTS`` of ``current_slot``); a stale partial
    slot nothing but stale partial slots builds on is asked for but does not make the node
    behind."""
    root, horizon = tracker.root, current_slot - 1
    wanted, orphans = tracker.repair_candidates(horizon)
    # stale: an old partial slot whose children (if any) are all stale partial slots too, a
    # chain a killed leader left behind (each of its slots partial, each naming the previous
    # as parent: seen in the kill-loop fault suite, where every survivor waited "behind" on
    # it until the killed node came back); highest first, so a child is decided before its parent
    stale: set[int] = set()
    for s in sorted(tracker.partial, reverse=True):
        if s < current_slot - STALE_PARTIAL_SLOTS and s in wanted and tracker.children.get(s, set()) <= stale:
            stale.add(s)
    lacking = set(wanted) | {s for s in voted_slots if root < s < horizon and tracker.state(s) in _LACKING}
    plan = sorted(lacking)[:REPAIR_SLOTS_PER_ROUND]
    if probe:
        plan += [s for s in range(current_slot - SYNC_PROBE_SLOTS - 1, current_slot - 1)
                 if s > root and tracker.state(s) in _LACKING and s not in plan]
    return plan, orphans, wanted - stale

