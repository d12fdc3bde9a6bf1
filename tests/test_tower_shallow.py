"""The shallow threshold check (spec/tower.md "Shallow threshold"): a vote whose 4-deep vote
lacks > 2/3 of LStake is refused, so a fork the cluster does not confirm (one side of a
partition) never locks a node out for more than 2^4 = 16 slots, and a 2|2 partition heals
within a few lockouts instead of 2^8 = 256 slots (issue 16; the namespace fault suite found
partition-era votes at confirmation count 8 holding finality for 90 s after the heal)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import crypto
from ambient_p2p.core.consensus import Consensus, SendVote, Vote
from ambient_p2p.core.tower import (
    INITIAL_LOCKOUT,
    VOTE_THRESHOLD_DEPTH,
    VOTE_THRESHOLD_DEPTH_SHALLOW,
    Tower,
)

KEYS = [crypto.Keypair.deterministic("shallow", i) for i in range(4)]
STAKES = {k.pubkey: 100 for k in KEYS}
TOTAL = 400
PRE = 30  # the common chain 1..PRE before the partition
HEAL = 150  # first slot after the partition heals


def test_shallow_threshold_refuses_the_fifth_unconfirmed_vote() -> None:
    t = Tower()
    for s in range(1, 5):
        t.record_vote(s)
    # voting 5 would push slot 1 to depth 4 and double it to 5: needs > 2/3 on slot 1
    assert t.check_threshold(5, lambda s: 0, 100)  # the depth-8 check alone allows it
    assert not t.check_thresholds(5, lambda s: 0, 100)
    assert not t.check_thresholds(5, lambda s: 66, 100)
    assert t.check_thresholds(5, lambda s: 67 if s == 1 else 0, 100)
    # a vote that leaves the 4-deep vote's count unchanged needs nothing (agave's skip)
    t2 = Tower()
    for s in range(1, 5):
        t2.record_vote(s)
    assert not t2.check_thresholds(5, lambda s: 0, 100)
    assert t2.check_thresholds(30, lambda s: 0, 100)  # 3 and 4 expired: 1 is 3 deep after


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=1, max_size=120), st.integers(0, 60))
def test_an_unconfirmed_vote_never_locks_past_16_slots(steps: list[tuple[int, bool]], confirmed_upto: int) -> None:
    """Votes on a line of slots (gaps so that votes expire); slots up to ``confirmed_upto``
    have > 2/3 of LStake, later ones none. Applying only the votes the two threshold checks
    allow, a vote on an unconfirmed slot never passes the shallow depth's confirmation count
    (lockout 2^4), and never the deep one's on any slot the checks did not see confirmed."""
    t = Tower()

    def voted(s: int) -> int:
        return TOTAL if s <= confirmed_upto else 0

    slot = 0
    for gap, try_vote in steps:
        slot += gap * gap  # gaps 1, 4, 9, 16: some votes expire, some stack
        if not try_vote or not t.check_thresholds(slot, voted, TOTAL):
            continue
        t.record_vote(slot)
        for v in t.votes:
            if v.slot > confirmed_upto:
                assert v.confirmation_count <= VOTE_THRESHOLD_DEPTH_SHALLOW, (v, t.votes)
                assert v.lockout <= INITIAL_LOCKOUT**VOTE_THRESHOLD_DEPTH_SHALLOW


def _bank(slot: int) -> bytes:
    return crypto.sha256(b"bank", slot.to_bytes(8, "big"))


def _partition_then_heal(check: Callable[[Tower, int, Callable[[int], int], int], bool] | None,
                         monkeypatch: pytest.MonkeyPatch) -> tuple[list[Consensus], dict[int, int]]:
    """4 equal nodes share slots 1..PRE; then {0,1} see only fork A (even slots, chained) and
    {2,3} only fork B (odd slots) until HEAL; after it every node sees every slot and vote,
    and new slots extend fork B. Returns the nodes and, per node, the first slot >= HEAL at
    which it voted on fork B."""
    if check is not None:
        monkeypatch.setattr(Tower, "check_thresholds", check)
    nodes = [Consensus(k, STAKES) for k in KEYS]
    parent: dict[int, int] = {}
    last = {0: PRE, 1: PRE}
    for s in range(1, HEAL + 60):
        if s <= PRE:
            parent[s] = s - 1
        elif s < HEAL:
            parent[s] = last[s % 2]
            last[s % 2] = s
        else:
            parent[s] = last[1]
            last[1] = s
    side = {0: 0, 1: 0, 2: 1, 3: 1}

    def fork_of(s: int) -> int | None:
        return None if s <= PRE else (s % 2 if s < HEAL else 1)

    first_b: dict[int, int] = {}
    pending: list[Vote] = []
    for s in range(1, HEAL + 60):
        healed = s >= HEAL
        for i, n in enumerate(nodes):
            if healed and s == HEAL:  # the other side's slots arrive (repair) at the heal
                for r in range(PRE + 1, HEAL):
                    if fork_of(r) != side[i]:
                        n.on_replayed(r, parent[r], _bank(r))
            if healed or fork_of(s) in (None, side[i]):
                n.on_replayed(s, parent[s], _bank(s))
        if healed:
            for v in pending:  # partition-era votes reach the other side at the heal
                for n in nodes:
                    n.on_vote(v)
            pending = []
        votes = []
        for i, n in enumerate(nodes):
            for eff in n.decide(now_ms=s):
                if isinstance(eff, SendVote):
                    votes.append((i, eff.vote))
                    if healed and fork_of(eff.vote.slot) == 1 and i not in first_b:
                        first_b[i] = eff.vote.slot
        for i, v in votes:
            for j, n in enumerate(nodes):
                if healed or side[i] == side[j]:
                    n.on_vote(v)
            if not healed:
                pending.append(v)
    return nodes, first_b


def test_a_2_2_partition_heals_within_a_shallow_lockout(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes, first_b = _partition_then_heal(None, monkeypatch)
    # every node votes on the surviving fork within the shallow lockout of the heal, and
    # finality moves past the heal
    assert sorted(first_b) == [0, 1, 2, 3], first_b
    assert max(first_b.values()) <= HEAL + INITIAL_LOCKOUT**VOTE_THRESHOLD_DEPTH_SHALLOW, first_b
    assert all(n.finalized_slot() >= HEAL for n in nodes), [n.finalized_slot() for n in nodes]


def test_without_the_shallow_check_the_same_heal_waits_out_deep_lockouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule is what bounds the heal: with the depth-8 check alone (the rule before issue
    16) the losing side stays locked out well past the shallow bound."""

    def deep_only(self: Tower, slot: int, voted: Callable[[int], int], total: int) -> bool:
        return self.check_threshold(slot, voted, total, VOTE_THRESHOLD_DEPTH)

    nodes, first_b = _partition_then_heal(deep_only, monkeypatch)
    late = [i for i in range(4) if first_b.get(i, 10**9) > HEAL + INITIAL_LOCKOUT**VOTE_THRESHOLD_DEPTH_SHALLOW]
    assert late == [0, 1], first_b  # fork A's side, locked out by its partition-era votes
    assert all(n.finalized_slot() < HEAL for n in nodes)
