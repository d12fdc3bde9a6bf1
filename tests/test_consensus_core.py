"""Sans-IO consensus core: LStake accounting and leader schedule, Tower BFT rules, fork
choice (spec/lstake.md, spec/tower.md)."""

from __future__ import annotations

import collections
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import codec, crypto
from ambient_p2p.core.forkchoice import ForkChoice, ForkChoiceError
from ambient_p2p.core.lstake import (
    BOOTSTRAP_FADE_UNITS,
    CREDIT_PER_LEADER_SLOT,
    LStakeError,
    LStakeLedger,
    WorkKind,
    leader_schedule,
    schedule_for_epoch,
    schedule_seed,
    stake_weighted_sample,
)
from ambient_p2p.core.tower import MAX_LOCKOUT_HISTORY, Lockout, Tower, TowerError, TowerRecord
from ambient_p2p.interop.formats.codec import sample_genesis

A, B, C, D = (bytes([i]) * 32 for i in range(1, 5))


# -- LStake ------------------------------------------------------------------------------
def test_lstake_windows_and_slashes() -> None:
    g = sample_genesis(2)
    led = LStakeLedger.from_genesis(g)
    node = g.bootstrap_nodes[0].identity
    base = g.bootstrap_nodes[0].lstake
    p = g.lstake
    assert led.lstake(node, 0) == base
    led.credit(node, 0, WorkKind.INFERENCE_TOKENS, 1000)
    # the network's Logit Pool work fades the bootstrap LStake (spec/lstake.md)
    faded = base * BOOTSTRAP_FADE_UNITS // (BOOTSTRAP_FADE_UNITS + 1000)
    assert faded < base and led.pool_work(0) == 1000
    # inside both windows: short and medium weights together make the full credit
    assert led.lstake(node, 0) == faded + 1000
    # past the short window only the medium weight counts
    assert led.lstake(node, p.short_window_epochs) == faded + 1000 * p.medium_weight_bps // 10_000
    # past the medium window the credit has expired (and the bootstrap is whole again)
    assert led.lstake(node, p.medium_window_epochs) == base
    led.slash(node, 0, 400)
    assert led.lstake(node, 0) == faded + 600
    led.slash(node, 0, 10_000)
    assert led.lstake(node, 0) == faded  # work never goes negative; bootstrap remains
    assert led.credit(D, 3, WorkKind.LEADER_SLOTS, 2) == 2 * CREDIT_PER_LEADER_SLOT
    assert led.snapshot(3)[D] == 2 * CREDIT_PER_LEADER_SLOT
    with pytest.raises(LStakeError):
        led.credit(D, 0, WorkKind.VOTES, -1)
    with pytest.raises(LStakeError):
        led.slash(b"short", 0, 1)


def test_leader_schedule_deterministic_and_order_independent() -> None:
    w = {A: 10, B: 20, C: 30}
    seed = schedule_seed(bytes(32), 7)
    s1 = leader_schedule(w, seed, 64, 4)
    s2 = leader_schedule(dict(reversed(list(w.items()))), seed, 64, 4)
    assert s1 == s2 and len(s1) == 64
    assert all(len(set(s1[i : i + 4])) == 1 for i in range(0, 64, 4))
    assert leader_schedule(w, schedule_seed(bytes(32), 8), 64, 4) != s1
    assert D not in leader_schedule({**w, D: 0}, seed, 64, 4)
    with pytest.raises(LStakeError):
        leader_schedule({A: 0}, seed, 64, 4)


def test_leader_schedule_is_weighted() -> None:
    w = {A: 1, B: 3}
    counts = collections.Counter(leader_schedule(w, schedule_seed(b"x" * 32, 0), 4000, 1))
    assert 0.70 < counts[B] / 4000 < 0.80  # expect 0.75; 4000 draws: sd ~0.007


def test_schedule_uses_lstake_two_epochs_back() -> None:
    g = sample_genesis(2)
    led = LStakeLedger.from_genesis(g)
    newcomer = crypto.Keypair.deterministic("newcomer").pubkey
    led.credit(newcomer, 5, WorkKind.INFERENCE_TOKENS, 10**12)  # overwhelming work in epoch 5
    assert newcomer not in schedule_for_epoch(g, led, 6)
    assert set(schedule_for_epoch(g, led, 7)) == {newcomer}


def test_weighted_sample_without_replacement() -> None:
    picked = stake_weighted_sample({A: 5, B: 5, C: 5, D: 0}, b"s" * 32, 10)
    assert sorted(picked) == sorted([A, B, C])


# -- Tower -------------------------------------------------------------------------------
def test_consecutive_votes_double_lockouts_and_root() -> None:
    t = Tower()
    for s in range(1, 5):
        t.record_vote(s)
    assert [(v.slot, v.confirmation_count) for v in t.votes] == [(1, 4), (2, 3), (3, 2), (4, 1)]
    for s in range(5, MAX_LOCKOUT_HISTORY + 1):
        assert t.record_vote(s) is None
    assert t.root is None and len(t.votes) == MAX_LOCKOUT_HISTORY
    assert t.record_vote(MAX_LOCKOUT_HISTORY + 1) == 1
    assert t.root == 1 and t.votes[0].slot == 2


def test_expired_votes_pop() -> None:
    t = Tower()
    t.record_vote(1)  # lockout 2: locks slots up to 3
    t.record_vote(2)  # now (1,2),(2,1)
    t.record_vote(10)  # 2 expired at 4, 1 expired at 5
    assert [v.slot for v in t.votes] == [10]


def test_vote_must_be_newer() -> None:
    t = Tower()
    t.record_vote(5)
    with pytest.raises(TowerError):
        t.record_vote(5)
    assert t.is_locked_out(4, set())


def test_lockout_blocks_conflicting_fork() -> None:
    t = Tower()
    t.record_vote(1)
    t.record_vote(2)  # (1, conf 2) locks until 5; (2, conf 1) until 4
    # slot 3 on a fork off slot 1 (not descending from 2): locked out by vote 2
    assert t.is_locked_out(3, {0, 1})
    assert not t.is_locked_out(3, {0, 1, 2})
    # far in the future every lockout has expired: switching is allowed
    assert not t.is_locked_out(100, {0})


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=1, max_size=60))
def test_tower_never_votes_against_its_lockouts(steps: list[tuple[int, bool]]) -> None:
    """Random fork trees: whenever the tower accepts a vote, every vote it still holds
    (and its root) is an ancestor of the new slot, i.e. no conflicting lockout is live."""
    parent: dict[int, int] = {0: -1}
    slot = 0
    t = Tower()
    for gap, fork in steps:
        new = slot + gap
        # extend either the last slot or a random earlier slot (a fork)
        par = slot if not fork else max(0, slot - gap)
        while par not in parent:
            par -= 1
        parent[new] = par
        slot = new
        anc = set()
        p = parent[new]
        while p >= 0:
            anc.add(p)
            p = parent[p]
        if not t.is_locked_out(new, anc):
            t.record_vote(new)
            assert all(v.slot in anc or v.slot == new for v in t.votes)
            assert t.root is None or t.root in anc
        slots = [v.slot for v in t.votes]
        confs = [v.confirmation_count for v in t.votes]
        assert slots == sorted(set(slots)) and len(slots) <= MAX_LOCKOUT_HISTORY
        assert all(a > b for a, b in itertools.pairwise(confs))


def test_threshold_check_at_depth_8() -> None:
    t = Tower()
    for s in range(1, 8):
        t.record_vote(s)
    assert t.check_threshold(8, lambda s: 0, 100)  # 8 votes after it: no vote 8 deep yet
    t.record_vote(8)
    assert not t.check_threshold(9, lambda s: 0, 100)  # slot 1 would deepen: needs > 2/3
    assert t.check_threshold(9, lambda s: 67 if s == 1 else 0, 100)
    for s in range(9, 12):
        t.record_vote(s)
    assert not t.check_threshold(12, lambda s: 66, 100)
    assert t.check_threshold(12, lambda s: 67, 100)


def test_switch_threshold() -> None:
    t = Tower()
    t.record_vote(5)
    assert t.check_switch(6, {0, 5}, 0, 100)  # same fork: free
    assert not t.check_switch(6, {0}, 38, 100)
    assert t.check_switch(6, {0}, 39, 100)


def test_tower_persistence_roundtrip_and_forgery() -> None:
    kp = crypto.Keypair.deterministic("tower")
    t = Tower()
    for s in (1, 2, 3, 7):
        t.record_vote(s)
    data = codec.encode(t.to_record(kp))
    back = Tower.from_record(codec.decode(data, TowerRecord), kp.pubkey)
    assert back == t
    other = crypto.Keypair.deterministic("other")
    with pytest.raises(TowerError):
        Tower.from_record(codec.decode(data, TowerRecord), other.pubkey)
    rec = codec.decode(data, TowerRecord)
    forged = TowerRecord(rec.identity, rec.root, rec.votes[:-1], rec.signature)
    with pytest.raises(TowerError):
        Tower.from_record(forged, kp.pubkey)
    bad = Tower([Lockout(3, 1), Lockout(2, 1)]).to_record(kp)
    with pytest.raises(TowerError, match="increasing"):
        Tower.from_record(bad, kp.pubkey)


# -- fork choice -------------------------------------------------------------------------
def _fc() -> ForkChoice:
    fc = ForkChoice(0, {A: 40, B: 30, C: 20, D: 10})
    for s, p in [(1, 0), (2, 1), (3, 1), (4, 2), (5, 3)]:
        fc.add_slot(s, p)
    return fc


def test_heaviest_subtree() -> None:
    fc = _fc()
    assert fc.best_slot() == 4  # no votes: ties go to the lower slot at each fork
    fc.add_vote(B, 5)
    fc.add_vote(C, 5)
    fc.add_vote(A, 4)
    assert fc.subtree_stake(3) == 50 and fc.subtree_stake(2) == 40
    assert fc.best_slot() == 5
    assert fc.is_confirmed(1) and not fc.is_confirmed(3)
    assert not fc.add_vote(B, 3)  # older than B's latest vote: ignored
    assert not fc.add_vote(b"\x09" * 32, 5)  # unknown voter
    fc.add_vote(D, 4)
    assert fc.subtree_stake(2) == fc.subtree_stake(3) == 50
    assert fc.best_slot() == 4  # a tie goes to the lower slot (2)


def test_duplicate_slot_ineligible_until_confirmed() -> None:
    fc = _fc()
    fc.add_vote(B, 5)
    assert fc.best_slot() == 5
    fc.mark_duplicate(3)
    assert fc.best_slot() == 4  # 3 and its subtree are out until > 52% confirm it
    fc.add_vote(C, 5)  # 50%: not yet
    assert not fc.is_duplicate_confirmed(3) and fc.best_slot() == 4
    fc.add_vote(D, 5)  # 60%
    assert fc.is_duplicate_confirmed(3)
    assert fc.best_slot() == 5


def test_fork_choice_rejects_bad_events_and_prunes() -> None:
    fc = _fc()
    with pytest.raises(ForkChoiceError):
        fc.add_slot(9, 8)  # orphan
    with pytest.raises(ForkChoiceError):
        fc.add_slot(4, 3)  # equivocating parent for a known slot
    with pytest.raises(ForkChoiceError):
        fc.add_slot(1, 2)
    fc.add_vote(A, 4)
    fc.set_root(3)
    assert fc.root == 3 and set(fc.parent) == {3, 5} and A not in fc.latest_vote
    with pytest.raises(ForkChoiceError):
        fc.set_root(4)


def test_switch_counts_stake_locked_on_a_third_fork() -> None:
    """Three forks off slot 1: our last vote on 2 (fork a, 20%), 30% voted 3 (fork b), 35%
    voted 5 (fork c, via 4; the heaviest). Switching to c needs > 38% locked on forks other
    than ours: b and c together hold 65% (agave counts every other fork), although c alone
    holds only 35%. Found by the simulator (tests/test_sim.py, seed 1): with only the
    candidate's fork counted, no node could switch and finality stopped."""
    from ambient_p2p.core.consensus import Consensus, SendVote

    me, b, c, d = (crypto.Keypair.deterministic("third-fork", i) for i in range(4))
    stakes = {me.pubkey: 20, b.pubkey: 30, c.pubkey: 35, d.pubkey: 15}
    n = Consensus(me, stakes)
    n.on_replayed(1, 0, bytes([1]) * 32)
    n.on_replayed(2, 1, bytes([2]) * 32)
    assert [e.vote.slot for e in n.decide(now_ms=0) if isinstance(e, SendVote)] == [2]
    for s, p in ((3, 1), (4, 1), (5, 4)):
        n.on_replayed(s, p, bytes([s]) * 32)
    assert n.on_block_votes([(b.pubkey, 3), (c.pubkey, 5)]) == 2
    fc = n.forkchoice
    assert fc.best_slot() == 5 and not n.tower.is_locked_out(5, fc.ancestors(5))
    assert [e.vote.slot for e in n.decide(now_ms=0) if isinstance(e, SendVote)] == [5]
    assert fc.other_fork_stake(2) == 20 + 30 + 35  # our own vote has moved to c as well


def test_switch_ignores_stake_whose_lockout_ended_before_the_last_vote() -> None:
    """A latest vote on another fork counts only while it can still lock its voter at our
    last vote: above it (agave's gossip votes), or within the shortest lockout (2 slots)."""
    fc = ForkChoice(0, {A: 40, B: 30, C: 20, D: 10})
    for s, p in [(1, 0), (2, 1), (3, 1), (9, 3), (10, 2), (12, 10)]:
        fc.add_slot(s, p)
    fc.add_vote(A, 12)  # our fork: never counts
    fc.add_vote(B, 3)  # other fork, 3 + 2 < 10: its lockout ended before our last vote (10)
    fc.add_vote(C, 9)  # other fork, 9 + 2 >= 10: counts
    assert fc.other_fork_stake(10) == 20
    fc.add_vote(B, 9)
    assert fc.other_fork_stake(10) == 50
    fc.add_vote(D, 1)  # an ancestor of our last vote: same fork
    assert fc.other_fork_stake(10) == 50
    assert fc.other_fork_stake(9) == 40 + 0  # from fork b: A on 12 > 9 counts; ancestors 3, 1 do not
