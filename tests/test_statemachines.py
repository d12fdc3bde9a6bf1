"""Hypothesis state machines for the consensus core (issue 11 item 7; review T3/T4): Tower
against an independent lockout oracle, ForkChoice against brute-force answers, and a cluster
of Consensus drivers under random forks and vote delivery orders."""

from __future__ import annotations

import itertools
from fractions import Fraction

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ambient_p2p.core import codec, crypto
from ambient_p2p.core.consensus import Consensus, NewRoot, PersistTower, SendVote, Vote
from ambient_p2p.core.forkchoice import ForkChoice
from ambient_p2p.core.tower import (
    DUPLICATE_THRESHOLD,
    INITIAL_LOCKOUT,
    MAX_LOCKOUT_HISTORY,
    Tower,
    TowerRecord,
)
from tests.sim import LockoutOracle

MACHINE_SETTINGS = settings(
    max_examples=60, stateful_step_count=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _ancestors(parent: dict[int, int | None], slot: int) -> set[int]:
    out: set[int] = set()
    p = parent.get(slot)
    while p is not None:
        out.add(p)
        p = parent.get(p)
    return out


# ---------------------------------------------------------------------------------------
# Tower
# ---------------------------------------------------------------------------------------
class TowerMachine(RuleBasedStateMachine):
    """Random fork trees and votes. The oracle (tests/sim.py ``LockoutOracle``) keeps each
    vote's expiry slot = slot + 2^confirmations, computed as 1 + the most votes ever stacked
    on it, not by ``core.tower``; it rejects a vote that lands on a slot not descending from
    an unexpired earlier vote or the root."""

    def __init__(self) -> None:
        super().__init__()
        self.parent: dict[int, int | None] = {0: None}
        self.tip = 0
        self.tower = Tower()
        self.oracle = LockoutOracle()
        self.roots: list[int] = []
        self.kp = crypto.Keypair.deterministic("statemachine-tower")

    @rule(gap=st.integers(1, 3), fork_back=st.integers(0, 6))
    def add_slot(self, gap: int, fork_back: int) -> None:
        """A new slot on the tip (fork_back = 0) or on an earlier slot (a fork)."""
        top = max(self.parent)
        par = self.tip
        for _ in range(fork_back):
            p = self.parent[par]
            if p is None or (self.tower.root is not None and p < self.tower.root):
                break
            par = p
        self.parent[top + gap] = par
        self.tip = top + gap

    @rule(data=st.data())
    def vote(self, data: st.DataObject) -> None:
        last = self.tower.last_voted_slot
        floor = max(last if last is not None else 0, self.tower.root or 0)
        choices = sorted(s for s in self.parent if s > floor)
        if not choices:
            return
        # favour the newest slots so towers grow deep enough to root
        slot = data.draw(st.sampled_from(choices[-4:]) | st.sampled_from(choices))
        anc = _ancestors(self.parent, slot)
        if self.tower.is_locked_out(slot, anc):
            return
        before = [(v.slot, v.confirmation_count) for v in self.tower.votes]
        new_root = self.tower.record_vote(slot)
        oracle_root = self.oracle.vote(slot, lambda s: s == slot or s in anc)  # raises on a lockout breach
        assert new_root == oracle_root, (before, slot)
        if new_root is not None:
            assert not self.roots or new_root > self.roots[-1]
            self.roots.append(new_root)

    @rule()
    def vote_on_tip(self) -> None:
        self.vote_slot(self.tip)

    @rule(k=st.integers(1, 12))
    def healthy_run(self, k: int) -> None:
        """k slots in a row, each extending the tip and voted on (how towers get deep)."""
        for _ in range(k):
            top = max(self.parent) + 1
            self.parent[top] = self.tip
            self.tip = top
            anc = _ancestors(self.parent, top)
            on_my_fork = all(v.slot in anc for v in self.tower.votes) and (
                self.tower.root is None or self.tower.root in anc
            )
            # not vacuous: a slot extending every vote in the tower is never locked out
            assert not on_my_fork or not self.tower.is_locked_out(top, anc)
            self.vote_slot(top)

    def vote_slot(self, slot: int) -> None:
        last = self.tower.last_voted_slot
        if (last is not None and slot <= last) or (self.tower.root is not None and slot <= self.tower.root):
            return
        anc = _ancestors(self.parent, slot)
        if self.tower.is_locked_out(slot, anc):
            return
        new_root = self.tower.record_vote(slot)
        assert new_root == self.oracle.vote(slot, lambda s: s == slot or s in anc)
        if new_root is not None:
            assert not self.roots or new_root > self.roots[-1]
            self.roots.append(new_root)

    @rule()
    def persist_and_restore(self) -> None:
        rec = codec.decode(codec.encode(self.tower.to_record(self.kp)), TowerRecord)
        self.tower = Tower.from_record(rec, self.kp.pubkey)

    def teardown(self) -> None:
        event(f"tower roots: {'some' if self.roots else 'none'}")

    @invariant()
    def matches_the_oracle(self) -> None:
        votes = self.tower.votes
        assert len(votes) <= MAX_LOCKOUT_HISTORY
        assert [(v.slot, v.confirmation_count) for v in votes] == [tuple(e) for e in self.oracle.stack]
        assert self.tower.root == self.oracle.root
        slots = [v.slot for v in votes]
        assert slots == sorted(set(slots))
        assert self.tower.root is None or not slots or slots[0] > self.tower.root
        for v in votes:
            assert v.lockout == INITIAL_LOCKOUT**v.confirmation_count


TestTower = TowerMachine.TestCase
TestTower.settings = settings(MACHINE_SETTINGS, stateful_step_count=150)


# ---------------------------------------------------------------------------------------
# ForkChoice
# ---------------------------------------------------------------------------------------
VOTERS = [bytes([i]) * 32 for i in range(1, 5)]


class ForkChoiceMachine(RuleBasedStateMachine):
    """Model: the parent map, latest votes, duplicates and stakes kept here; every answer of
    ``ForkChoice`` is compared with a brute-force computation over the model."""

    def __init__(self) -> None:
        super().__init__()
        self.stakes = {v: 10 * (i + 1) for i, v in enumerate(VOTERS)}
        self.fc = ForkChoice(0, dict(self.stakes))
        self.parent: dict[int, int | None] = {0: None}
        self.latest: dict[bytes, int] = {}
        self.dups: set[int] = set()
        self.top = 0

    def _slots(self) -> list[int]:
        return sorted(self.parent)

    @rule(data=st.data(), gap=st.integers(1, 3))
    def add_slot(self, data: st.DataObject, gap: int) -> None:
        par = data.draw(st.sampled_from(self._slots()))
        self.top += gap
        self.fc.add_slot(self.top, par)
        self.parent[self.top] = par

    @rule(data=st.data(), voter=st.sampled_from(VOTERS))
    def add_vote(self, data: st.DataObject, voter: bytes) -> None:
        slot = data.draw(st.sampled_from(self._slots()))
        counted = self.fc.add_vote(voter, slot)
        expect = voter not in self.latest or self.latest[voter] < slot
        assert counted == expect
        if expect:
            self.latest[voter] = slot

    @rule(data=st.data())
    def mark_duplicate(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self._slots()))
        self.fc.mark_duplicate(slot)
        self.dups.add(slot)

    @precondition(lambda self: len(self.parent) > 1)
    @rule(data=st.data())
    def set_root(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self._slots()))
        self.fc.set_root(slot)
        keep = {s for s in self.parent if s == slot or slot in _ancestors(self.parent, s)}
        self.parent = {s: (p if s != slot else None) for s, p in self.parent.items() if s in keep}
        self.latest = {v: s for v, s in self.latest.items() if s in keep}
        self.dups &= keep
        assert set(self.fc.parent) == keep and self.fc.root == slot

    @precondition(lambda self: len(self.parent) > 1)
    @rule(data=st.data())
    def remove_subtree(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self._slots()))
        gone = self.fc.remove_subtree(slot)
        if slot == self.fc.root:
            assert gone == set()
            return
        expect = {s for s in self.parent if s == slot or slot in _ancestors(self.parent, s)}
        assert gone == expect
        self.parent = {s: p for s, p in self.parent.items() if s not in gone}
        self.latest = {v: s for v, s in self.latest.items() if s not in gone}
        self.dups -= gone

    @rule(new=st.lists(st.integers(1, 100), min_size=len(VOTERS), max_size=len(VOTERS)))
    def set_stakes(self, new: list[int]) -> None:
        self.stakes = dict(zip(VOTERS, new, strict=True))
        self.fc.stakes = dict(self.stakes)

    # -- brute force ------------------------------------------------------------------------
    def _weight(self, slot: int) -> int:
        return sum(
            self.stakes[v] for v, s in self.latest.items() if s == slot or slot in _ancestors(self.parent, s)
        )

    def _eligible(self, slot: int) -> bool:
        total = sum(self.stakes.values())
        for s in {slot} | _ancestors(self.parent, slot):
            if s in self.dups and not Fraction(self._weight(s), total) > DUPLICATE_THRESHOLD:
                return False
        return True

    @invariant()
    def structure_matches_the_model(self) -> None:
        assert self.fc.parent == self.parent
        for s in self.parent:
            kids = {c for c, q in self.parent.items() if q == s}
            assert self.fc.children[s] == kids
            assert self.fc.ancestors(s) == _ancestors(self.parent, s)
        assert self.fc.latest_vote == self.latest
        assert all(s in self.fc.parent for s in self.fc.latest_vote.values())  # latest votes name known slots
        assert self.fc.duplicates == self.dups

    @invariant()
    def weights_are_brute_force_sums(self) -> None:
        w = self.fc.subtree_stakes()
        for s in self.parent:
            assert w[s] == self.fc.subtree_stake(s) == self._weight(s)

    @invariant()
    def best_slot_is_the_heaviest_eligible_leaf(self) -> None:
        best = self.fc.best_slot()
        root = self.fc.root
        node = root
        if self._eligible(root):  # reference walk: heaviest eligible child, ties to the lower slot
            while True:
                kids = [c for c, p in self.parent.items() if p == node and self._eligible(c)]
                if not kids:
                    break
                node = max(kids, key=lambda c: (self._weight(c), -c))
        assert best == node
        assert best == root or self._eligible(best)
        assert not any(p == best and self._eligible(c) for c, p in self.parent.items())


TestForkChoice = ForkChoiceMachine.TestCase
TestForkChoice.settings = MACHINE_SETTINGS


# ---------------------------------------------------------------------------------------
# The Consensus driver, several nodes
# ---------------------------------------------------------------------------------------
KEYS = [crypto.Keypair.deterministic("statemachine-cluster", i) for i in range(4)]
NODE_STAKES = {k.pubkey: s for k, s in zip(KEYS, (40, 30, 20, 10), strict=True)}


def _bank(slot: int) -> bytes:
    return crypto.sha256(b"sm-bank", slot.to_bytes(8, "big"))


class ClusterMachine(RuleBasedStateMachine):
    """Four drivers share one block tree (one version per slot) but each replays the blocks
    delivered to it, in its own order; votes wait in a pool and are delivered to any node in
    any order, late, or never. Invariants: no tower breaks a lockout (oracle per node), each
    node's NewRoot strictly increases, and all rooted slots lie on one chain."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes = [Consensus(k, NODE_STAKES) for k in KEYS]
        self.parent: dict[int, int | None] = {0: None}
        self.top = 0
        self.delivered: list[set[int]] = [{0} for _ in KEYS]
        self.replayed: list[set[int]] = [{0} for _ in KEYS]
        self.pool: list[Vote] = []
        self.oracles = [LockoutOracle() for _ in KEYS]
        self.roots: list[list[int]] = [[] for _ in KEYS]
        self.tower_records: list[TowerRecord | None] = [None for _ in KEYS]

    @rule(data=st.data(), gap=st.integers(1, 2), to=st.sets(st.integers(0, 3), min_size=1))
    def new_block(self, data: st.DataObject, gap: int, to: set[int]) -> None:
        """A leader builds on the best slot of some node (sometimes an older slot: a fork)."""
        i = data.draw(st.integers(0, 3))
        par = self.nodes[i].processed_slot()
        if data.draw(st.booleans()) and self.nodes[i].forkchoice.parent.get(par) is not None:
            par = self.nodes[i].forkchoice.parent[par]  # type: ignore[assignment]
        self.top = max(self.top, par) + gap
        self.parent[self.top] = par
        for j in to:
            self.delivered[j].add(self.top)
            self._replay(j)

    @rule(j=st.integers(0, 3))
    def catch_up(self, j: int) -> None:
        """Repair: node j receives every block."""
        self.delivered[j] = set(self.parent)
        self._replay(j)

    def _replay(self, j: int) -> None:
        n = self.nodes[j]
        for s in sorted(self.delivered[j] - self.replayed[j]):
            p = self.parent[s]
            if p in self.replayed[j] and (p in n.forkchoice.parent):
                n.on_replayed(s, p, _bank(s))
                self.replayed[j].add(s)

    @rule(j=st.integers(0, 3))
    def decide(self, j: int) -> None:
        for eff in self.nodes[j].decide(now_ms=0):
            if isinstance(eff, PersistTower):
                self.tower_records[j] = eff.record
            elif isinstance(eff, SendVote):
                s = eff.vote.slot
                chain = {s} | _ancestors(self.parent, s)
                self.oracles[j].vote(s, chain.__contains__)  # raises on a lockout breach
                self.pool.append(eff.vote)
            elif isinstance(eff, NewRoot):
                assert not self.roots[j] or eff.slot > self.roots[j][-1]
                assert eff.slot == self.nodes[j].tower.root
                self.roots[j].append(eff.slot)

    @precondition(lambda self: bool(self.pool))
    @rule(data=st.data(), to=st.sets(st.integers(0, 3), min_size=1))
    def deliver_vote(self, data: st.DataObject, to: set[int]) -> None:
        vote = data.draw(st.sampled_from(self.pool))
        for j in to:
            self.nodes[j].on_vote(vote)

    @rule(j=st.integers(0, 3))
    def restart(self, j: int) -> None:
        """Crash and restart from the persisted tower; everything else is lost."""
        rec = self.tower_records[j]
        tower = Tower() if rec is None else Tower.from_record(
            codec.decode(codec.encode(rec), TowerRecord), KEYS[j].pubkey
        )
        self.nodes[j] = Consensus(KEYS[j], NODE_STAKES, tower=tower)
        self.replayed[j] = {self.nodes[j].root}
        self.delivered[j] = {s for s in self.delivered[j] if s >= self.nodes[j].root}
        self._replay(j)

    @rule()
    def healthy_slot(self) -> None:
        """One slot of a healthy cluster: a block on node 0's best slot reaches everyone,
        every node decides, every vote reaches everyone (what roots slots)."""
        par = self.nodes[0].processed_slot()
        self.top = max(self.top, par) + 1
        self.parent[self.top] = par
        for j in range(4):
            self.delivered[j].add(self.top)
            self._replay(j)
        start = len(self.pool)
        for j in range(4):
            self.decide(j)
        for vote in self.pool[start:]:
            for n in self.nodes:
                n.on_vote(vote)

    def teardown(self) -> None:
        event(f"cluster roots: {'some' if any(self.roots) else 'none'}")

    @invariant()
    def roots_on_one_chain(self) -> None:
        rooted = sorted({r for rs in self.roots for r in rs})
        for a, b in itertools.pairwise(rooted):
            assert a in _ancestors(self.parent, b), (a, b)

    @invariant()
    def towers_within_bounds(self) -> None:
        for n in self.nodes:
            assert len(n.tower.votes) <= MAX_LOCKOUT_HISTORY
            assert all(s in n.forkchoice.parent for s in n.forkchoice.latest_vote.values())


TestCluster = ClusterMachine.TestCase
TestCluster.settings = settings(MACHINE_SETTINGS, stateful_step_count=120)
