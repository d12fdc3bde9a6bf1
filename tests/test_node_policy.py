"""The validator's policy machines in core/ (spec/node.md "Slot lifecycle", "Readiness",
"Duplicate slots", "Pools", "Commitment"), without disk, network or clock: one test per
transition-table row, guards and state-triggered rules, and hypothesis state machines with
invariants checked independently of the machines' own bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ambient_p2p.core import duplicates as dup
from ambient_p2p.core import readiness as rd
from ambient_p2p.core import slots as sl
from ambient_p2p.core.consensus import Consensus, NotVoted, PersistTower, SendVote, Vote
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.finality import ROOT_HISTORY_LEN, Finality
from ambient_p2p.core.leader_policy import LEADER_SKIP_GRACE_SLOTS, Build, Skip, WaitForParent, leader_decision
from ambient_p2p.core.pools import Mempool, VotePool
from ambient_p2p.core.slots import SlotState as S

H0, HA, HB = b"\x00" * 32, b"\xaa" * 32, b"\xbb" * 32
KEYS = [Keypair.deterministic("policy", i) for i in range(4)]
STAKES = {k.pubkey: 1 for k in KEYS}


# -- SlotTracker ----------------------------------------------------------------------------
SLOT, HELD_PARENT = 10, 5  # HELD_PARENT stays partial, so a FULL slot on it waits


def _tracker() -> sl.SlotTracker:
    t = sl.SlotTracker(0, H0)
    t.handle(sl.ShredsStored(HELD_PARENT, 0))
    return t


def _bring(t: sl.SlotTracker, state: S) -> None:
    """Drive SLOT into ``state``."""
    if state is S.ABSENT:
        return
    if state is S.PARTIAL:
        t.handle(sl.ShredsStored(SLOT, 0))
    elif state is S.FULL:
        t.handle(sl.Completed(SLOT, HELD_PARENT))
    elif state is S.REPLAYING:
        assert t.handle(sl.Completed(SLOT, 0)) == [sl.Replay(SLOT, 0)]
    elif state is S.FROZEN:
        _bring(t, S.REPLAYING)
        t.handle(sl.Replayed(SLOT, HA))
    elif state is S.DEAD:
        _bring(t, S.REPLAYING)
        t.handle(sl.ReplayFailed(SLOT, "bad-x"))
    elif state is S.DUMPED:
        _bring(t, S.FROZEN)
        t.handle(sl.DuplicateConfirmed(SLOT, HB))
    assert t.state(SLOT) is state


def _event(kind: type, state: S) -> sl.Event:
    parent = HELD_PARENT if state in (S.FULL, S.DUMPED, S.ABSENT, S.PARTIAL) else 0
    return {
        sl.ShredsStored: lambda: sl.ShredsStored(SLOT, parent),
        sl.Completed: lambda: sl.Completed(SLOT, parent),
        sl.Replayed: lambda: sl.Replayed(SLOT, HA),
        sl.ReplayFailed: lambda: sl.ReplayFailed(SLOT, "bad-y"),
        sl.Produced: lambda: sl.Produced(SLOT, 0, HA),
        sl.LoadedDead: lambda: sl.LoadedDead(SLOT, 0),
        sl.DuplicateConfirmed: lambda: sl.DuplicateConfirmed(SLOT, HB),
    }[kind]()


@pytest.mark.parametrize(("key", "row"), list(sl.TRANSITIONS.items()),
                         ids=[f"{s.value}-{e.__name__}" for s, e in sl.TRANSITIONS])
def test_slot_transition_row(key: tuple[S, type], row: tuple[S | None, tuple[type, ...]]) -> None:
    state, kind = key
    nxt, kinds = row
    t = _tracker()
    _bring(t, state)
    effects = t.handle(_event(kind, state))
    assert t.state(SLOT) is (nxt or state)
    assert {type(e) for e in effects} <= set(kinds)
    assert set(kinds) - {sl.ClearDead} <= {type(e) for e in effects}  # ClearDead only if something died


def test_slot_events_outside_the_table_raise_and_pruned_slots_ignore() -> None:
    t = _tracker()
    _bring(t, S.PARTIAL)
    with pytest.raises(sl.TransitionError) as e:
        t.handle(sl.Replayed(SLOT, HA))
    assert e.value.reason == "bad-slot-transition"
    t2 = _tracker()
    _bring(t2, S.FROZEN)
    with pytest.raises(sl.TransitionError):
        t2.handle(sl.Produced(SLOT, 0, HA))
    t2.handle(sl.Rooted(SLOT))
    assert t2.state(3) is S.PRUNED and t2.handle(sl.Completed(3, 0)) == []


def test_frozen_dump_guard_keeps_the_confirmed_version() -> None:
    t = _tracker()
    _bring(t, S.FROZEN)
    assert t.handle(sl.DuplicateConfirmed(SLOT, HA)) == [] and t.is_frozen(SLOT)


def test_parents_replay_before_children_and_dead_parents_kill_children() -> None:
    t = sl.SlotTracker(0, H0)
    assert t.handle(sl.Completed(3, 2)) == []  # parent unknown: waits
    assert t.handle(sl.Completed(4, 3)) == []
    assert t.repair_candidates(100) == ({2}, {2})  # 2 is an orphan: named, nothing held
    assert t.handle(sl.Completed(2, 0)) == [sl.Replay(2, 0)]
    assert t.handle(sl.Replayed(2, HA)) == [sl.SlotFrozen(2, 0, HA), sl.Replay(3, 2)]
    assert t.handle(sl.ReplayFailed(3, "bad-z")) == [sl.MarkDead(3, "bad-z"),
                                                     sl.MarkDead(4, "parent-dead: parent 3 failed replay")]
    assert t.dead_slots() == [3, 4] and t.repair_candidates(100) == (set(), set())


def test_unknown_leader_waits_until_a_root_makes_it_known() -> None:
    known: set[int] = set()
    t = sl.SlotTracker(0, H0, leader_known=lambda s: s in known)
    assert t.handle(sl.Completed(1, 0)) == [] and t.state(1) is S.FULL
    known.add(1)
    assert t.handle(sl.Rooted(0)) == [sl.Replay(1, 0)]


def test_dump_purges_what_froze_on_our_version_and_revives_what_died_on_it() -> None:
    t = sl.SlotTracker(0, H0)
    for s, p in ((1, 0), (2, 1), (5, 1), (6, 5)):
        t.handle(sl.Completed(s, p))
        if s != 5:
            t.handle(sl.Replayed(s, HA)) if s != 6 else None
    t.handle(sl.ReplayFailed(5, "bad-chained-merkle-root"))  # built on the other version of 1
    assert t.is_dead(6)
    eff = t.handle(sl.DuplicateConfirmed(1, HB))
    assert eff == [sl.Purge((1, 2)), sl.ClearDead(5), sl.ClearDead(6), sl.RepairSlot(1, HB)]
    assert t.state(1) is S.DUMPED and t.state(2) is S.ABSENT and t.state(5) is S.FULL
    assert 1 in t.repair_candidates(100)[0]
    assert t.handle(sl.Completed(1, 0)) == [sl.Replay(1, 0)]  # the confirmed version arrives
    assert t.handle(sl.Replayed(1, HB))[1:] == [sl.Replay(5, 1)]


def test_a5_dead_own_version_is_dumped_and_repaired() -> None:
    """agave cluster_slot_state_verifier: (Dead, DuplicateConfirmed(h)) ->
    RepairDuplicateConfirmedVersion. Our version of slot 1 died; votes confirm hash B."""
    t = sl.SlotTracker(0, H0)
    d = dup.DuplicateTracker()
    t.handle(sl.Completed(1, 0))
    t.handle(sl.ReplayFailed(1, "bad-chained-merkle-root"))
    effects: list[Any] = []
    for i, k in enumerate(KEYS[1:]):
        v = Vote(k.pubkey, 1, HB, None, i, bytes(64))
        effects += d.on_vote(v, dup.DeadHere(), 100, STAKES, 4)
        assert len(effects) == (1 if i >= 2 else 0)  # 3/4 > 52 %, 2/4 is not
    assert effects == [dup.DumpSlot(1, HB)]
    out = t.handle(sl.DuplicateConfirmed(1, HB))
    assert out == [sl.Purge((1,)), sl.ClearDead(1), sl.RepairSlot(1, HB)]
    d.on_dumped(1, HB, 200)
    assert set(d.pending_receipts()) == {1} and 1 in t.repair_candidates(10)[0]
    assert d.on_vote(Vote(KEYS[0].pubkey, 1, HB, None, 9, bytes(64)), dup.DeadHere(), 1, STAKES, 4) == []  # once


def test_votes_pending_on_a_slot_that_then_dies_count_for_its_other_version() -> None:
    d = dup.DuplicateTracker()
    for k in KEYS[1:]:
        assert d.on_vote(Vote(k.pubkey, 7, HB, None, 0, bytes(64)), dup.Unknown(), 5, STAKES, 4) == []
    assert d.on_dead(7, STAKES, 4) == [dup.DumpSlot(7, HB)] and d.pending_receipts() == {}


# -- DuplicateTracker rows ------------------------------------------------------------------
def test_duplicate_rows() -> None:
    d = dup.DuplicateTracker()
    v = Vote(KEYS[1].pubkey, 3, HB, None, 5, bytes(64))
    assert d.on_vote(v, dup.Unknown(), 10, STAKES, 4) == [] and d.pending_receipts() == {3: 10}  # unknown
    older = Vote(KEYS[1].pubkey, 3, HA, None, 4, bytes(64))
    d.on_vote(older, dup.Unknown(), 11, STAKES, 4)
    assert d.pending[3][KEYS[1].pubkey][0] is v  # latest per voter per slot
    assert d.on_frozen(3) == [dup.CountVotes((v,))] and d.pending == {}  # pending -> frozen
    assert d.on_vote(v, dup.FrozenAs(HB), 12, STAKES, 4) == [] and d.foreign == {}  # same hash: dropped
    assert d.on_vote(v, dup.FrozenAs(HA), 12, STAKES, 4) == [] and 3 in d.foreign  # other hash: foreign
    d.prune(3)
    assert d.foreign == {} and d.on_vote(v, dup.Unknown(), 13, STAKES, 4) == [] and d.pending == {}


def test_pending_votes_are_bounded_lowest_first() -> None:
    d = dup.DuplicateTracker()
    for s in range(1, dup.MAX_PENDING_VOTE_SLOTS + 11):
        d.on_vote(Vote(KEYS[1].pubkey, s, HA, None, 0, bytes(64)), dup.Unknown(), 0, STAKES, 4)
    assert len(d.pending) == dup.MAX_PENDING_VOTE_SLOTS and min(d.pending) == 11


# -- Readiness -----------------------------------------------------------------------------
def test_readiness_rows_and_sync_end() -> None:
    r = rd.Readiness(syncing=True, started_ms=1000, slot_ms=100)
    assert r.may_produce(1000 + rd.SYNC_TIMEOUT_SLOTS * 100) is False
    assert r.may_produce(1001 + rd.SYNC_TIMEOUT_SLOTS * 100) is True
    r.handle(rd.SlotFrozen(5, 900, own=False))  # older than our start: no evidence
    assert r.evaluate(best=5, now_mono_ms=0, pending={}) == [] and r.syncing
    r.handle(rd.SlotFrozen(11, 1100, own=True))  # our own: no evidence
    assert r.evaluate(best=11, now_mono_ms=0, pending={}) == [] and r.syncing
    r.handle(rd.SlotFrozen(12, 1200, own=False))
    r.handle(rd.RepairWanted(frozenset({14}), orphans=False))  # behind: stays syncing
    assert r.evaluate(best=12, now_mono_ms=0, pending={}) == [] and r.no_vote_reason(behind=False, isolated=False) == "syncing"
    r.handle(rd.RepairWanted(frozenset(), orphans=False))
    assert r.evaluate(best=12, now_mono_ms=0, pending={}) == [rd.SyncEnded(12)] and not r.syncing
    assert r.no_vote_reason(behind=False, isolated=False) is None
    assert r.no_vote_reason(behind=True, isolated=False) == "behind"
    assert r.no_vote_reason(behind=False, isolated=True) == "isolated"
    r.handle(rd.SlotDumped(12))
    r.handle(rd.Rooted(20))
    assert r.mode is rd.Mode.LIVE and set(rd.TRANSITIONS) == {(m, e) for m in rd.Mode for e in
                                                             (rd.SlotFrozen, rd.RepairWanted, rd.SlotDumped, rd.Rooted)}


def test_behind_is_a_pure_query() -> None:
    r = rd.Readiness(syncing=False, started_ms=0, slot_ms=100)
    assert not r.behind(best=5, now_mono_ms=10_000, pending={})
    assert r.behind(best=5, now_mono_ms=10_000, pending={7: 10_000 - rd.BEHIND_WINDOW_MS + 1})
    assert not r.behind(best=5, now_mono_ms=10_000, pending={7: 10_000 - rd.BEHIND_WINDOW_MS})  # stale
    assert not r.behind(best=7, now_mono_ms=10_000, pending={7: 10_000})  # not above best
    r.handle(rd.RepairWanted(frozenset({3}), orphans=False))
    assert not r.behind(best=5, now_mono_ms=0, pending={}) and r.behind(best=2, now_mono_ms=0, pending={})
    r.handle(rd.RepairWanted(frozenset(), orphans=True))
    assert r.behind(best=100, now_mono_ms=0, pending={}) and r.behind(best=100, now_mono_ms=0, pending={})


def test_isolation_counts_other_leaders_slots() -> None:
    me, other = b"m" * 32, b"o" * 32
    r = rd.Readiness(syncing=False, started_ms=0, slot_ms=100)
    lead = lambda s: me if s % 2 else other  # noqa: E731
    assert r.isolated(current_slot=60, leader_of=lead, me=me, alone_supermajority=False)
    assert not r.isolated(current_slot=60, leader_of=lead, me=me, alone_supermajority=True)
    r.handle(rd.SlotFrozen(57, 0, own=False))
    assert not r.isolated(current_slot=60, leader_of=lead, me=me, alone_supermajority=False)
    # ISOLATION_SLOTS of other leaders' slots must pass: 2 * 12 slots later with alternating leaders
    assert r.isolated(current_slot=57 + 2 + 2 * rd.ISOLATION_SLOTS, leader_of=lead, me=me, alone_supermajority=False)
    assert not r.isolated(current_slot=57 + 2 * rd.ISOLATION_SLOTS, leader_of=lead, me=me, alone_supermajority=False)


# -- leader policy -------------------------------------------------------------------------
def test_leader_decision_rows() -> None:
    kw: dict[str, Any] = {"start_ms": 1000.0, "slot_ms": 100.0, "best_frozen": True, "best_is_own": False,
                          "behind": False, "may_produce": True}
    assert leader_decision(1000, 10, 10, **kw) == Skip("parent-ahead")
    assert leader_decision(1000, 10, 9, **{**kw, "best_frozen": False}) == WaitForParent("parent-not-frozen")
    assert leader_decision(1000, 10, 9, **{**kw, "behind": True}) == WaitForParent("behind")
    assert leader_decision(1000, 10, 9, **{**kw, "may_produce": False}) == WaitForParent("syncing")
    assert leader_decision(1000, 10, 9, **kw) == Build(9, 10)
    assert leader_decision(1000, 10, 7, **{**kw, "best_is_own": True}) == Build(7, 10)
    deadline = 1000 + LEADER_SKIP_GRACE_SLOTS * 100
    assert leader_decision(1000, 10, 7, **kw) == WaitForParent("grace", deadline)
    assert leader_decision(int(deadline), 10, 7, **kw) == Build(7, 10)


# -- finality ------------------------------------------------------------------------------
def test_finality_needs_a_supermajority_of_reported_roots() -> None:
    f = Finality(KEYS[0].pubkey, [0, 1, 2, 3, 5, 8])
    assert f.finalized_slot(8, STAKES) == 0  # only our root reported: 1/4
    f.on_voter_root(KEYS[1].pubkey, 6)
    assert f.finalized_slot(8, STAKES) == 0  # 2/4 is no supermajority
    f.on_voter_root(KEYS[2].pubkey, 3)
    assert f.finalized_slot(8, STAKES) == 3  # 3/4 reached at root 3 (8, 6, 3)
    f.on_voter_root(KEYS[3].pubkey, 7)
    assert f.finalized_slot(8, STAKES) == 5  # 8, 7, 6: cap 6 -> our highest rooted slot <= 6
    f.on_voter_root(KEYS[2].pubkey, 2)  # lower reports are ignored
    assert f.voter_roots[KEYS[2].pubkey] == 3
    f.on_voter_root(KEYS[2].pubkey, 9)
    assert f.finalized_slot(6, STAKES) == 5 and f.finalized_count(6, STAKES) == 4  # own root 6 caps it
    f.prune({KEYS[0].pubkey: 1})
    assert f.voter_roots == {}


def test_finality_root_history_is_bounded() -> None:
    f = Finality(KEYS[0].pubkey)
    f.on_rooted(range(1, ROOT_HISTORY_LEN + 101))
    assert len(f.history) == ROOT_HISTORY_LEN and f.rooted_count == ROOT_HISTORY_LEN + 100
    assert f.finalized_slot(ROOT_HISTORY_LEN + 100, {KEYS[0].pubkey: 1}) == ROOT_HISTORY_LEN + 100
    assert f._rooted_at_or_below(100) == (100, 100)  # dropped: the last dropped is 100
    assert f._rooted_at_or_below(50) == (0, 0)  # unknown now: conservative


# -- Consensus no-vote reasons -------------------------------------------------------------
def test_decide_reports_why_it_did_not_vote() -> None:
    c = Consensus(KEYS[0], STAKES)
    assert c.try_vote(0) == NotVoted("no-candidate", 0) and c.decide(0) == [] and c.last_no_vote_reason == "no-candidate"
    c.forkchoice.add_slot(1, 0)  # in fork choice, no bank hash
    assert c.try_vote(0) == NotVoted("not-replayed", 1)
    c.on_replayed(2, 1, HA)
    c.bank_hashes[1] = HA
    effects = c.decide(0)
    assert [type(e) for e in effects] == [PersistTower, SendVote] and c.last_no_vote_reason is None
    assert c.try_vote(0) == NotVoted("already-voted", 2)
    c.on_replayed(3, 1, HB)  # a sibling fork of 2 at the same weight
    for k in KEYS[1:]:
        c.forkchoice.add_vote(k.pubkey, 3)
    assert c.try_vote(0) == NotVoted("locked-out", 3)


# -- pools ---------------------------------------------------------------------------------
def _tx(i: int) -> bytes:
    return b"\x01" + i.to_bytes(64, "big") + b"body"


def test_mempool_rows() -> None:
    m = Mempool(cap=3, ttl_ms=100)
    assert m.add(_tx(1), 0) and not m.add(_tx(1), 5) and m.received_ms(_tx(1)) == 0  # dedupe keeps the first
    assert not m.add(b"\x01short", 0)
    m.add(_tx(2), 50)
    m.add(_tx(3), 60)
    assert not m.add(_tx(4), 70)  # over the cap: refused, counted; nothing evicted (spec/tpu.md)
    assert m.take(80) == [_tx(1), _tx(2), _tx(3)] and m.dropped["mempool-full"] == 1
    assert m.take(105) == [_tx(2), _tx(3)] and m.expired == 1  # 1 is 105 ms old
    m.remove([_tx(3), _tx(9)])
    assert m.take(105) == [_tx(2)]


class _VT:
    def __init__(self, voter: bytes, slot: int) -> None:
        self.vote = Vote(voter, slot, HA, None, 0, bytes(64))


def test_vote_pool_rows() -> None:
    p = VotePool()
    a1, a2, b1 = _VT(b"a" * 32, 1), _VT(b"a" * 32, 2), _VT(b"b" * 32, 1)
    assert p.add(b1) and p.add(a1) and p.add(a2) and not p.add(a1)  # type: ignore[arg-type]
    assert p.take() == [a2, b1]
    taken = p.take()
    p.add(_VT(b"b" * 32, 3))  # type: ignore[arg-type]  # newer while building
    p.remove_included(taken)
    assert [vt.vote.slot for vt in p.take()] == [3]
    p.prune(4)
    assert len(p) == 0


class MempoolMachine(RuleBasedStateMachine):
    """Cap and TTL hold whatever the sequence; take() is in arrival order of the live ones."""

    def __init__(self) -> None:
        super().__init__()
        self.m = Mempool(cap=8, ttl_ms=50)
        self.now = 0
        self.model: dict[bytes, int] = {}  # key -> received

    @rule(i=st.integers(0, 20))
    def add(self, i: int) -> None:
        raw = _tx(i)
        if self.m.add(raw, self.now):
            self.model[raw] = self.now

    @rule(dt=st.integers(0, 30))
    def tick(self, dt: int) -> None:
        self.now += dt

    @rule()
    def take(self) -> None:
        got = self.m.take(self.now)
        assert all(self.now - self.model[r] <= 50 for r in got)  # TTL
        assert [self.model[r] for r in got] == sorted(self.model[r] for r in got)
        assert len(set(got)) == len(got)

    @rule(i=st.integers(0, 20))
    def include(self, i: int) -> None:
        self.m.remove([_tx(i)])

    @invariant()
    def capped(self) -> None:
        assert len(self.m) <= 8


class SlotMachine(RuleBasedStateMachine):
    """Random inserts, replay results, own slots, duplicate confirmations and roots."""

    def __init__(self) -> None:
        super().__init__()
        self.t = sl.SlotTracker(0, H0)
        self.replaying: set[int] = set()
        self.marked_dead: set[int] = set()

    def _run(self, ev: sl.Event) -> None:
        for e in self.t.handle(ev):
            if isinstance(e, sl.Replay):
                assert self.t.is_frozen(e.parent) and e.slot > e.parent
                self.replaying.add(e.slot)
            elif isinstance(e, sl.MarkDead):
                self.marked_dead.add(e.slot)
            elif isinstance(e, sl.ClearDead):
                self.marked_dead.discard(e.slot)
            elif isinstance(e, sl.Purge):
                self.marked_dead -= set(e.slots)

    @rule(slot=st.integers(1, 30), back=st.integers(1, 4), full=st.booleans())
    def insert(self, slot: int, back: int, full: bool) -> None:
        parent = max(0, slot - back)
        st_ = self.t.state(slot)
        if st_ in (S.PRUNED,):
            return
        if full:
            self._run(sl.Completed(slot, self.t.parent(slot) if self.t.parent(slot) is not None else parent))
        else:
            self._run(sl.ShredsStored(slot, parent))

    @precondition(lambda self: any(self.t.state(s) is S.REPLAYING for s in self.replaying))
    @rule(data=st.data(), ok=st.booleans())
    def replay_result(self, data: st.DataObject, ok: bool) -> None:
        slot = data.draw(st.sampled_from(sorted(s for s in self.replaying if self.t.state(s) is S.REPLAYING)))
        self._run(sl.Replayed(slot, HA) if ok else sl.ReplayFailed(slot, "bad"))

    @rule(slot=st.integers(1, 30))
    def produce(self, slot: int) -> None:
        frozen = [s for s in self.t.frozen_slots() if s < slot]
        if self.t.state(slot) in (S.ABSENT, S.PARTIAL, S.FULL) and frozen:
            self._run(sl.Produced(slot, max(frozen), HA))

    @rule(slot=st.integers(1, 30))
    def confirm_other(self, slot: int) -> None:
        self._run(sl.DuplicateConfirmed(slot, HB))

    @rule(data=st.data())
    def root(self, data: st.DataObject) -> None:
        frozen = [s for s in self.t.frozen_slots() if s > self.t.root]
        if frozen:
            self._run(sl.Rooted(data.draw(st.sampled_from(frozen))))

    @invariant()
    def consistent(self) -> None:
        t = self.t
        frozen, dead = set(t.frozen_slots()), set(t.dead_slots())
        assert not frozen & dead
        for s in frozen - {t.root}:
            p = t.parent(s)
            assert p is not None and (p in frozen or p <= t.root), (s, p)
        assert t.full == {s for s, x in t.states.items() if x is S.FULL}
        assert t.partial == {s for s, x in t.states.items() if x is S.PARTIAL}
        assert all(s >= t.root for s in t.states) and t.is_frozen(t.root)
        assert {s for s in self.marked_dead if s > t.root} == {s for s in dead if t.reasons.get(s) != "loaded"}


class VotePoolMachine(RuleBasedStateMachine):
    """One entry per voter, always its highest-slot vote seen since it last left; take() in
    voter order; nothing below the root survives a prune."""

    def __init__(self) -> None:
        super().__init__()
        self.p = VotePool()
        self.best: dict[bytes, int] = {}  # model: voter -> highest slot added since it left
        self.root = 0

    @rule(v=st.integers(0, 5), slot=st.integers(0, 40))
    def add(self, v: int, slot: int) -> None:
        voter = bytes([v]) * 32
        self.p.add(_VT(voter, slot))  # type: ignore[arg-type]
        if slot >= self.root and (voter not in self.best or slot > self.best[voter]):
            self.best[voter] = slot

    @rule(n=st.integers(0, 6))
    def include(self, n: int) -> None:
        taken = self.p.take()[:n]
        self.p.remove_included(taken)
        for vt in taken:
            del self.best[vt.vote.voter]

    @rule(r=st.integers(0, 40))
    def prune(self, r: int) -> None:
        self.root = max(self.root, r)
        self.p.prune(self.root)
        self.best = {v: s for v, s in self.best.items() if s >= self.root}

    @invariant()
    def latest_per_voter(self) -> None:
        got = self.p.take()
        assert [vt.vote.voter for vt in got] == sorted(self.best)
        assert all(vt.vote.slot == self.best[vt.vote.voter] >= self.root for vt in got)


TestVotePoolMachine = VotePoolMachine.TestCase
TestVotePoolMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestMempoolMachine = MempoolMachine.TestCase
TestMempoolMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestSlotMachine = SlotMachine.TestCase
TestSlotMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# -- the spec's tables are the code's ------------------------------------------------------
_SPEC = __import__("pathlib").Path(__file__).resolve().parent.parent / "spec" / "node.md"


def test_spec_constants_match_the_code() -> None:
    import importlib
    import re

    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \| ([a-z_/]+\.py) \|", _SPEC.read_text(), re.M)
    assert len(rows) >= 25
    for name, value, where in rows:
        mod = importlib.import_module("ambient_p2p." + where.removesuffix(".py").replace("/", "."))
        expect = 10**12 if value.strip() == "10^12" else float(value)
        assert getattr(mod, name) == expect, (name, where)


def test_spec_slot_table_is_the_code_table() -> None:
    import re

    text = _SPEC.read_text().split("## Slot lifecycle", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([a-z]+) \| `(\w+)` \| ([a-z]+) \| (.+) \|$", text, re.M)
    code = {(s.value, e.__name__): ((n or s).value, ", ".join(f"`{k.__name__}`" for k in ks) or "-")
            for (s, e), (n, ks) in sl.TRANSITIONS.items()}
    assert {(a, b): (c, d) for a, b, c, d in rows} == code


def test_repair_plan_from_the_tracker_without_a_scan() -> None:
    t = sl.SlotTracker(0, H0)
    t.handle(sl.ShredsStored(3, 2))  # partial; names 2 (an orphan: nothing held)
    t.handle(sl.Completed(5, 0))  # full, replaying: not wanted
    t.handle(sl.ShredsStored(30, 29))  # too recent: at or above the horizon
    plan, orphans, wanted = sl.repair_plan(t, current_slot=20, voted_slots=[4, 5, 19, 0], probe=False)
    # 5 is held; 19 not < horizon 19; 3 is a stale partial slot (more than STALE_PARTIAL_SLOTS
    # old, nothing built on it): asked for, but only its missing parent 2 makes us behind
    assert plan == [2, 3, 4] and orphans == {2} and wanted == {2}
    plan, _o, _w = sl.repair_plan(t, current_slot=20, voted_slots=[], probe=True)
    assert plan == [2, 3, 15, 16, 17, 18]  # recent clock slots probed while syncing / isolated
    many = sl.SlotTracker(0, H0)
    for s in range(1, 100):
        many.handle(sl.ShredsStored(s, s - 1))
    assert sl.repair_plan(many, current_slot=200, voted_slots=[], probe=False)[0] == list(range(1, 33))


def test_a_stale_partial_slot_nothing_builds_on_does_not_make_the_node_behind() -> None:
    """A leader that gave up mid-slot leaves shreds that never complete: repair still asks
    for them, but after STALE_PARTIAL_SLOTS they no longer feed "behind" (else every node
    holding them waits forever); a slot built on it makes it count again."""
    t = sl.SlotTracker(0, H0)
    t.handle(sl.ShredsStored(12, 0))  # the abandoned slot
    cur = 12 + sl.STALE_PARTIAL_SLOTS + 1
    plan, _o, wanted = sl.repair_plan(t, current_slot=cur, voted_slots=[], probe=False)
    assert plan == [12] and wanted == set()
    plan, _o, wanted = sl.repair_plan(t, current_slot=cur - 1, voted_slots=[], probe=False)
    assert plan == [12] and wanted == {12}  # still recent: it may yet complete
    t.handle(sl.ShredsStored(14, 12))  # somebody built on it: we are behind again
    recent_child = 14 + sl.STALE_PARTIAL_SLOTS
    plan, _o, wanted = sl.repair_plan(t, current_slot=recent_child, voted_slots=[], probe=False)
    assert 12 in plan and wanted == {12, 14}
    # a chain of partial slots a killed leader left, each naming the previous as parent, once
    # all of it is stale: asked for, but nobody waits "behind" on it (issue 16 kill loop)
    plan, _o, wanted = sl.repair_plan(t, current_slot=recent_child + 1, voted_slots=[], probe=False)
    assert plan == [12, 14] and wanted == set()
    t.handle(sl.Completed(20, 14))  # a complete block on the chain: it is needed again
    plan, _o, wanted = sl.repair_plan(t, current_slot=40, voted_slots=[], probe=False)
    assert {12, 14} <= wanted


def _dup_row(key: tuple[str, str]) -> None:
    """Drive one DuplicateTracker table row and check where the vote went."""
    d = dup.DuplicateTracker()
    votes = [Vote(k.pubkey, 7, HB, None, i, bytes(64)) for i, k in enumerate(KEYS[1:])]
    held, event = key
    if event == "vote":
        own: Any = {"unknown": dup.Unknown(), "frozen-other-hash": dup.FrozenAs(HA),
                    "frozen-same-hash": dup.FrozenAs(HB), "dead": dup.DeadHere()}[held]
        effects = [e for v in votes for e in d.on_vote(v, own, 1, STAKES, 4)]
        where = {"pending": 7 in d.pending, "foreign": 7 in d.foreign,
                 "dropped": 7 not in d.pending and 7 not in d.foreign}
        assert where[dup.TRANSITIONS[key][0]]
        assert [type(e) for e in effects] == list(dup.TRANSITIONS[key][1])  # 3 of 4 voters: confirmed
        return
    for v in votes:
        d.on_vote(v, dup.Unknown(), 1, STAKES, 4)
    if key == ("pending", "frozen"):
        assert d.on_frozen(7) == [dup.CountVotes(tuple(sorted(votes, key=lambda v: v.voter)))] and not d.pending
    elif key == ("pending", "dead"):
        assert d.on_dead(7, STAKES, 4) == [dup.DumpSlot(7, HB)] and 7 in d.foreign and not d.pending
    elif key == ("foreign", "dumped"):
        d.on_dead(7, STAKES, 4)
        d.on_dumped(7, HB, 9)
        assert d.pending_receipts() == {7: 9} and 7 not in d.foreign
    elif key == ("any", "rooted"):
        d.prune(7)
        assert not d.pending and not d.foreign
    else:  # pragma: no cover
        raise AssertionError(key)


@pytest.mark.parametrize("key", list(dup.TRANSITIONS), ids=["-".join(k) for k in dup.TRANSITIONS])
def test_duplicate_transition_row(key: tuple[str, str]) -> None:
    _dup_row(key)


@settings(max_examples=200, deadline=None)
@given(best=st.integers(0, 50), now=st.integers(0, 20_000), syncing=st.booleans(),
       pending=st.dictionaries(st.integers(0, 60), st.integers(0, 20_000), max_size=6),
       wanted=st.frozensets(st.integers(0, 60), max_size=4), orphans=st.booleans())
def test_never_may_vote_while_a_fresh_vote_names_a_slot_above_best(
        best: int, now: int, syncing: bool, pending: dict[int, int], wanted: frozenset[int], orphans: bool) -> None:
    r = rd.Readiness(syncing=syncing, started_ms=0, slot_ms=100)
    r.handle(rd.RepairWanted(wanted, orphans))
    fresh_unknown = any(s > best and 0 <= now - t < rd.BEHIND_WINDOW_MS for s, t in pending.items())
    behind = r.behind(best=best, now_mono_ms=now, pending=pending)
    if fresh_unknown or orphans or any(w > best for w in wanted):
        assert behind and r.no_vote_reason(behind=behind, isolated=False) is not None
    reason = r.no_vote_reason(behind=behind, isolated=False)
    assert (reason is None) == (not syncing and not behind)


def test_a_replay_on_a_fork_the_root_forgot_is_stale() -> None:
    """Found by SlotMachine: 18 replays on 17; the root moves to 1, which 17 does not
    descend from, so 17 is forgotten; 18's result must not freeze it on a forgotten parent."""
    t = sl.SlotTracker(0, H0)
    t.handle(sl.Produced(1, 0, HA))
    t.handle(sl.Produced(17, 0, HB))
    assert t.handle(sl.Completed(18, 17)) == [sl.Replay(18, 17)]
    t.handle(sl.Rooted(1))
    assert t.state(17) is S.PRUNED and t.state(18) is S.PRUNED  # off the root's fork (core/slots.py rule 6)
    assert t.handle(sl.Replayed(18, HA)) == [] and not t.is_frozen(18)


# -- ledger facts: insert events and the restart's sorting (core/slots.py) -------------------
def test_stored_event_per_slot_meta() -> None:
    assert sl.stored_event(sl.StoredSlot(7, 6, full=True, received=4)) == sl.Completed(7, 6)
    assert sl.stored_event(sl.StoredSlot(7, 6, full=False, received=2)) == sl.ShredsStored(7, 6)
    assert sl.stored_event(sl.StoredSlot(7, None, full=False, received=1)) == sl.ShredsStored(7, None)
    # full without a parent (cannot come from valid shreds) is only "stored"; nothing stored: no event
    assert sl.stored_event(sl.StoredSlot(7, None, full=True, received=4)) == sl.ShredsStored(7, None)
    assert sl.stored_event(sl.StoredSlot(7, None, full=False, received=0)) is None


def _stored_ledger() -> list[sl.StoredSlot]:
    """Above a base at 10: 11 full, 12 dead, 13 partial, 14 full on 11 (led by us), 15 a
    meta with no data shred (coding shreds only), 16 partial with no known parent."""
    return [sl.StoredSlot(11, 10, True, 4), sl.StoredSlot(12, 11, True, 4, dead=True),
            sl.StoredSlot(13, 12, False, 2), sl.StoredSlot(14, 11, True, 4), sl.StoredSlot(15, 14, False, 0),
            sl.StoredSlot(16, None, False, 1)]


def test_classify_stored_for_a_restart() -> None:
    above = sl.classify_stored(_stored_ledger(), is_own=lambda s: s in (13, 14, 15))
    assert above.replay == [11, 14] and above.dead == [12] and above.partial == [13, 16]
    # slots this node led and holds shreds of: never built again (15 holds no data shred)
    assert above.produced == [13, 14]
    assert above.parents == {11: 10, 12: 11, 13: 12, 14: 11, 15: 14, 16: None}


def test_restart_events_rows() -> None:
    above = sl.classify_stored(_stored_ledger(), is_own=lambda _s: False)
    # tower root 10 (the base): every full slot replays, dead stays dead, partial is tracked
    assert sl.restart_events(above, root=10, roots_above=[]) == [
        sl.Completed(11, 10), sl.LoadedDead(12, 11), sl.ShredsStored(13, 12), sl.Completed(14, 11),
        sl.ShredsStored(16, None)]
    # a tower rooted at 14 above the base: slots at or below it replay only when the ledger
    # rooted them (their banks rebuild the fork up to the tower root); partial ones are forgotten
    assert sl.restart_events(above, root=14, roots_above=[11]) == [
        sl.Completed(11, 10), sl.LoadedDead(12, 11), sl.ShredsStored(16, None)]


def test_restart_events_drive_the_tracker_to_replay_parents_first() -> None:
    above = sl.classify_stored(_stored_ledger(), is_own=lambda _s: False)
    t = sl.SlotTracker(10, H0)
    effects = [e for ev in sl.restart_events(above, root=10, roots_above=[]) for e in t.handle(ev)]
    assert effects == [sl.Replay(11, 10)]  # 14 waits for its parent 11 to freeze
    assert t.state(12) is S.DEAD and t.state(13) is S.PARTIAL and t.state(14) is S.FULL
    assert t.handle(sl.Replayed(11, HA)) == [sl.SlotFrozen(11, 10, HA), sl.Replay(14, 11)]
