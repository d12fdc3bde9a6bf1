"""core/slots.py rule 6: slots whose known ancestry leaves the root's fork are pruned,
links and all, so the repair plan never wants them and readiness never waits on them.

Found by the in-process cut-and-heal test (tests/test_node.py, issue 16): after the heal a
root moved past the fork the cut node had built; the tracker forgot the fork's frozen slots
but their tracked children still named them, so they looked like orphans. Every node held
them whole in its blockstore (repair brought nothing new: no insert event), so each node
stayed "behind" for good, the scheduled leader waited for its parent, and the cluster
stopped producing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import slots as sl

S = sl.SlotState
H0, HA, HB = b"\x00" * 32, b"\xaa" * 32, b"\xbb" * 32


def _wanted(t: sl.SlotTracker, current_slot: int = 100) -> tuple[set[int], set[int]]:
    """(readiness's wanted, orphans) from the repair plan."""
    _plan, orphans, wanted = sl.repair_plan(t, current_slot=current_slot, voted_slots=(), probe=False)
    return wanted, orphans


def _forked() -> sl.SlotTracker:
    """Root 0; the main fork 1 <- 2; a side fork 0 <- 3 <- 4 (frozen) <- 5 (full, its
    replay running) <- 6 (full, waiting)."""
    t = sl.SlotTracker(0, H0)
    t.handle(sl.Produced(1, 0, HA))
    t.handle(sl.Produced(2, 1, HA))
    t.handle(sl.Produced(3, 0, HB))
    t.handle(sl.Produced(4, 3, HB))
    assert t.handle(sl.Completed(5, 4)) == [sl.Replay(5, 4)]
    assert t.handle(sl.ShredsStored(6, 5)) == [] and t.state(6) is S.PARTIAL
    t.handle(sl.Completed(6, 5))
    return t


def test_a_root_past_a_side_fork_leaves_no_phantom_orphan() -> None:
    """Before the fix: 3 and 4 (frozen) were forgotten, 5 and 6 stayed full naming them, so
    4 was an orphan the repair plan wanted forever (readiness: "behind")."""
    t = _forked()
    t.handle(sl.Rooted(1))
    assert _wanted(t) == (set(), set())
    assert t.repair_candidates(100) == (set(), set())
    assert all(t.state(s) is S.PRUNED for s in (3, 4, 5, 6)) and t.is_frozen(2)
    # the replay running on the pruned fork is stale; more of the fork is ignored
    assert t.handle(sl.Replayed(5, HB)) == [] and not t.is_frozen(5)
    assert t.handle(sl.Completed(7, 6)) == [] and t.handle(sl.ShredsStored(8, 4)) == []
    assert t.state(7) is S.PRUNED and t.state(8) is S.PRUNED and _wanted(t) == (set(), set())


def test_a_slot_naming_a_parent_below_the_root_is_pruned_at_once() -> None:
    t = sl.SlotTracker(0, H0)
    for s in (1, 2, 3):
        t.handle(sl.Produced(s, s - 1, HA))
    t.handle(sl.Rooted(2))
    assert t.handle(sl.ShredsStored(9, 1)) == [] and t.state(9) is S.PRUNED  # forks off below the root
    assert t.handle(sl.Completed(10, 9)) == [] and t.state(10) is S.PRUNED
    assert _wanted(t) == (set(), set())
    # a partial slot whose parent is learnt later leaves then
    t.handle(sl.ShredsStored(12, None))
    assert _wanted(t, current_slot=14)[0] == {12}
    t.handle(sl.Completed(12, 1))
    assert t.state(12) is S.PRUNED and _wanted(t, current_slot=14) == (set(), set())


def test_a_true_orphan_stays_wanted_and_the_root_passing_clears_the_pruned_set() -> None:
    t = sl.SlotTracker(0, H0)
    t.handle(sl.Produced(1, 0, HA))
    t.handle(sl.Completed(5, 4))  # 4: nothing held, ancestry unknown: an orphan to repair
    t.handle(sl.Produced(2, 0, HB))
    t.handle(sl.Rooted(1))
    assert t.state(2) is S.PRUNED and t.off_fork == {2}
    assert _wanted(t) == ({4}, {4}) and t.state(5) is S.FULL
    t.handle(sl.Completed(4, 1))
    assert t.state(4) is S.REPLAYING
    t.handle(sl.Replayed(4, HA))
    t.handle(sl.Replayed(5, HA))
    t.handle(sl.Rooted(5))
    assert t.off_fork == set()


def test_a_duplicate_shred_naming_a_pruned_parent_does_not_prune_a_frozen_slot() -> None:
    """Once full a slot's parent is fixed: a later shred naming another parent is a
    duplicate version (the blockstore's proof), not a new ancestry."""
    t = sl.SlotTracker(0, H0)
    for s in (1, 2, 3):
        t.handle(sl.Produced(s, s - 1, HA))
    t.handle(sl.Rooted(2))
    assert t.handle(sl.ShredsStored(3, 1)) == [] and t.is_frozen(3)


def test_dead_slots_off_the_fork_stay_dead() -> None:
    t = sl.SlotTracker(0, H0)
    t.handle(sl.Produced(1, 0, HA))
    t.handle(sl.Produced(2, 0, HB))
    t.handle(sl.Completed(3, 2))
    assert t.handle(sl.ReplayFailed(3, "bad")) == [sl.MarkDead(3, "bad")]
    t.handle(sl.Rooted(1))
    assert t.is_dead(3) and t.state(2) is S.PRUNED and _wanted(t) == (set(), set())


_SLOT = st.integers(1, 24)
_EVENT = st.one_of(
    st.tuples(st.just("stored"), _SLOT, st.one_of(st.none(), st.integers(0, 23))),
    st.tuples(st.just("completed"), _SLOT, st.integers(1, 4)),
    st.tuples(st.just("replayed"), _SLOT, st.booleans()),
    st.tuples(st.just("produced"), _SLOT, st.just(0)),
    st.tuples(st.just("confirm"), _SLOT, st.just(0)),
    st.tuples(st.just("root"), st.integers(0, 30), st.just(0)),
)


@given(st.lists(_EVENT, max_size=80))
@settings(max_examples=300, deadline=None)
def test_nothing_tracked_names_a_pruned_parent_and_orphans_are_never_pruned(events: list[tuple]) -> None:
    """For any event sequence (a node's own slots built on its frozen slots, roots on frozen
    slots): no tracked slot names a parent below the root or off its fork, every orphan
    the repair plan wants is a slot we could still use, and a slot is never both."""
    t = sl.SlotTracker(0, H0)
    for kind, slot, arg in events:
        if kind == "stored" and (arg is None or arg < slot):
            t.handle(sl.ShredsStored(slot, arg))
        elif kind == "completed":
            parent = t.parent(slot) if t.parent(slot) is not None else max(0, slot - arg)
            if parent < slot:
                t.handle(sl.Completed(slot, parent))
        elif kind == "replayed" and t.state(slot) is S.REPLAYING:
            t.handle(sl.Replayed(slot, HA) if arg else sl.ReplayFailed(slot, "bad"))
        elif kind == "produced" and t.state(slot) in (S.ABSENT, S.PARTIAL, S.FULL):
            frozen = [s for s in t.frozen_slots() if s < slot]
            if frozen:
                t.handle(sl.Produced(slot, max(frozen), HA))
        elif kind == "confirm":
            t.handle(sl.DuplicateConfirmed(slot, HB))
        elif kind == "root":
            frozen = [s for s in t.frozen_slots() if s > t.root]
            if frozen:
                t.handle(sl.Rooted(frozen[slot % len(frozen)]))
        assert not set(t.states) & t.off_fork
        assert all(s > t.root for s in t.off_fork)
        for s in t.states:
            p = t.parent(s)
            if s != t.root and p is not None and not t.is_dead(s):
                assert p >= t.root and p not in t.off_fork, (s, p, t.root)
        wanted, orphans = t.repair_candidates(100)
        assert not (wanted | orphans) & t.off_fork
        # an orphan is named by a slot we still track (not a leftover link)
        assert all(any(c in t.states for c in t.children.get(o, ())) for o in orphans), orphans
