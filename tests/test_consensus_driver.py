"""The sans-IO consensus driver run as an in-process cluster (the multi-process version of
these scenarios belongs to the node; these pin the protocol rules)."""

from __future__ import annotations

import pytest

from ambient_p2p.core import codec, crypto
from ambient_p2p.core.consensus import Consensus, Effect, NewRoot, PersistTower, SendVote, Vote, VoteRejected
from ambient_p2p.core.messages import sign_message
from ambient_p2p.core.tower import Tower, TowerRecord

KEYS = [crypto.Keypair.deterministic("driver", i) for i in range(4)]
STAKES = {k.pubkey: 100 for k in KEYS}


def bank_hash(slot: int, fork: str = "") -> bytes:
    return crypto.sha256(b"bank", fork.encode(), slot.to_bytes(8, "big"))


def run_chain(
    nodes: list[Consensus], live: list[int], slots: range, parent_of=lambda s: s - 1
) -> dict[int, list[Effect]]:
    """Every live node replays each slot, decides, and hears every vote; returns each
    node's effects in order."""
    effects: dict[int, list[Effect]] = {i: [] for i in live}
    for s in slots:
        for i in live:
            nodes[i].on_replayed(s, parent_of(s), bank_hash(s))
        votes = []
        for i in live:
            for eff in nodes[i].decide(now_ms=s):
                effects[i].append(eff)
                if isinstance(eff, SendVote):
                    votes.append(eff.vote)
        for v in votes:
            for i in live:
                nodes[i].on_vote(v)
    return effects


def test_four_nodes_finalize_and_agree() -> None:
    nodes = [Consensus(k, STAKES) for k in KEYS]
    run_chain(nodes, [0, 1, 2, 3], range(1, 61))
    roots = {n.finalized_slot() for n in nodes}
    assert len(roots) == 1 and roots.pop() >= 20
    for n in nodes:
        assert n.confirmed_slot() >= 55
        assert n.processed_slot() == 60


def test_three_of_four_keep_finalizing() -> None:
    nodes = [Consensus(k, STAKES) for k in KEYS]
    run_chain(nodes, [0, 1, 2], range(1, 61))
    assert all(nodes[i].finalized_slot() >= 20 for i in range(3))
    assert nodes[3].finalized_slot() == 0


def test_two_of_four_cannot_finalize() -> None:
    nodes = [Consensus(k, STAKES) for k in KEYS]
    run_chain(nodes, [0, 1], range(1, 81))
    for i in (0, 1):
        assert nodes[i].finalized_slot() == 0  # threshold check stops the towers deepening
        assert nodes[i].confirmed_slot() == 0
        assert len(nodes[i].tower.votes) <= 9


def test_restart_from_persisted_tower_resumes_without_violation() -> None:
    nodes = [Consensus(k, STAKES) for k in KEYS]
    effects = run_chain(nodes, [0, 1, 2, 3], range(1, 41))
    saved = {i: codec.encode([e for e in effs if isinstance(e, PersistTower)][-1].record) for i, effs in effects.items()}
    # node 3 crashes and restarts from disk
    tower = Tower.from_record(codec.decode(saved[3], TowerRecord), KEYS[3].pubkey)
    assert tower == nodes[3].tower
    restarted = Consensus(KEYS[3], STAKES, tower=tower)
    assert restarted.finalized_slot() == nodes[3].finalized_slot()
    # it cannot vote on anything at or below its last vote
    last = tower.last_voted_slot
    assert last is not None
    # before catching up (replaying root..last again) it must not vote: its own lockouts
    # are on slots it has not re-replayed, so the next slot looks like another fork
    restarted.on_replayed(last + 1, restarted.root, bank_hash(last + 1))
    assert restarted.decide(now_ms=0) == []
    restarted = Consensus(KEYS[3], STAKES, tower=tower)
    for s in range(restarted.root + 1, last + 2):
        restarted.on_replayed(s, s - 1, bank_hash(s))
    for k, n in zip(KEYS[:3], nodes[:3], strict=True):
        v = n.tower.last_voted_slot
        assert v is not None
        restarted.on_vote(sign_message(Vote(k.pubkey, v, bank_hash(v), n.tower.root, 0, bytes(64)), k, "vote"))
    effs = restarted.decide(now_ms=0)
    assert any(isinstance(e, SendVote) and e.vote.slot == last + 1 for e in effs)


def test_forks_converge_and_never_root_conflicting_slots() -> None:
    nodes = [Consensus(k, STAKES) for k in KEYS]
    run_chain(nodes, [0, 1, 2, 3], range(1, 5))
    # a fork at slot 5: node 0 sees 5 (parent 4); nodes 1-3 see 6 (parent 4) first
    nodes[0].on_replayed(5, 4, bank_hash(5))
    for i in (1, 2, 3):
        nodes[i].on_replayed(6, 4, bank_hash(6))
    votes = [e.vote for n in nodes for e in n.decide(now_ms=5) if isinstance(e, SendVote)]
    for n in nodes:  # everyone eventually replays both forks
        n.on_replayed(5, 4, bank_hash(5)) if 5 not in n.bank_hashes else None
        n.on_replayed(6, 4, bank_hash(6)) if 6 not in n.bank_hashes else None
        for v in votes:
            n.on_vote(v)
    assert nodes[0].tower.last_voted_slot == 5 and nodes[1].tower.last_voted_slot == 6
    # the chain continues on top of 6 only: node 0 must switch (75% > 38% on the other
    # fork) once its lockout on 5 expires, and everyone roots the same chain
    run_chain(nodes, [0, 1, 2, 3], range(7, 80), parent_of=lambda s: 6 if s == 7 else s - 1)
    roots = {n.finalized_slot() for n in nodes}
    assert len(roots) == 1 and roots.pop() > 6
    for n in nodes:
        assert 5 not in n.forkchoice.ancestors(n.finalized_slot()) and n.finalized_slot() != 5


def test_duplicate_slot_not_voted_until_confirmed() -> None:
    n = Consensus(KEYS[0], STAKES)
    n.on_replayed(1, 0, bank_hash(1))
    n.on_duplicate(1)
    assert n.decide(now_ms=1) == []
    for k in KEYS[1:]:
        v = sign_message(Vote(k.pubkey, 1, bank_hash(1), None, 1, bytes(64)), k, "vote")
        n.on_vote(v)
    effs = n.decide(now_ms=2)
    assert any(isinstance(e, SendVote) and e.vote.slot == 1 for e in effs)


def test_bad_votes_rejected() -> None:
    n = Consensus(KEYS[0], STAKES)
    n.on_replayed(1, 0, bank_hash(1))
    k = KEYS[1]
    good = sign_message(Vote(k.pubkey, 1, bank_hash(1), None, 1, bytes(64)), k, "vote")
    forged = Vote(k.pubkey, 1, bank_hash(1), None, 2, good.signature)  # altered after signing
    with pytest.raises(VoteRejected, match="bad-signature"):
        n.on_vote(forged)
    outsider = crypto.Keypair.deterministic("outsider")
    with pytest.raises(VoteRejected, match="no-lstake"):
        n.on_vote(sign_message(Vote(outsider.pubkey, 1, bank_hash(1), None, 1, bytes(64)), outsider, "vote"))
    wrong_domain = Vote(k.pubkey, 1, bank_hash(1), None, 1, bytes(64))
    wrong_domain = Vote(k.pubkey, 1, bank_hash(1), None, 1, k.sign("gossip", codec.encode(wrong_domain)))
    with pytest.raises(VoteRejected, match="bad-signature"):
        n.on_vote(wrong_domain)
    # a vote for a bank hash that differs from ours does not count for fork choice
    other = sign_message(Vote(k.pubkey, 1, bank_hash(1, "other"), None, 1, bytes(64)), k, "vote")
    assert n.on_vote(other) is False
    assert n.on_vote(good) is True
    assert n.on_vote(good) is False  # replay of the same vote: no double counting


def test_new_root_effect_emitted_once_per_root() -> None:
    nodes = [Consensus(k, STAKES) for k in KEYS]
    effects = run_chain(nodes, [0, 1, 2, 3], range(1, 45))
    roots = [e.slot for e in effects[0] if isinstance(e, NewRoot)]
    assert roots == sorted(set(roots)) and roots and roots[-1] == nodes[0].finalized_slot()



def test_leader_builds_on_its_own_fork_while_locked_out_of_the_heavier_one() -> None:
    """Node 0 voted 1 and 2; the other three vote for fork 0 -> 3. Fork choice now says 3,
    but a block on 3 is one node 0 could not vote on (lockouts on 1 and 2): as a leader
    it builds on its own fork's tip (agave's reset bank), and on 3 once no lockout binds."""
    n = Consensus(KEYS[0], STAKES)
    for s in (1, 2):
        n.on_replayed(s, s - 1, bank_hash(s))
        assert any(isinstance(e, SendVote) for e in n.decide(now_ms=s))
    n.on_replayed(3, 0, bank_hash(3, "b"))
    for kp in KEYS[1:]:
        assert n.on_vote(sign_message(Vote(kp.pubkey, 3, bank_hash(3, "b"), None, 3, bytes(64)), kp, "vote"))
    assert n.processed_slot() == 3
    assert n.build_parent(4) == 2  # slot 2 is locked until 2 + 2 = 4; slot 1 until 1 + 4 = 5
    assert n.build_parent(6) == 3  # both lockouts expired: the heaviest fork again
    fresh = Consensus(KEYS[1], STAKES)
    fresh.on_replayed(1, 0, bank_hash(1))
    assert fresh.build_parent(2) == 1  # no votes yet: the best slot


def test_votes_landed_in_blocks_steer_fork_choice_without_gossip() -> None:
    """A node that heard no gossip votes replays two forks; the votes carried by the blocks
    of fork b (landed: the bank checked them against fork b's hashes) make b the best."""
    n = Consensus(KEYS[0], STAKES)
    n.on_replayed(1, 0, bank_hash(1))
    n.on_replayed(2, 0, bank_hash(2, "b"))
    n.on_replayed(3, 2, bank_hash(3, "b"))
    assert n.processed_slot() == 1  # no votes: ties go to the lower slot
    assert n.on_block_votes([(KEYS[1].pubkey, 2), (KEYS[2].pubkey, 2)]) == 2
    assert n.processed_slot() == 3
    assert n.on_block_votes([(KEYS[1].pubkey, 2)]) == 0  # not newer: ignored
    stranger = crypto.Keypair.deterministic("nobody").pubkey
    assert n.on_block_votes([(stranger, 3), (KEYS[3].pubkey, 0)]) == 0  # no LStake; at the root


def test_dump_slot_forgets_the_version_and_its_descendants_only() -> None:
    n = Consensus(KEYS[0], STAKES)
    for s, p in ((1, 0), (2, 1), (3, 2), (4, 1)):
        n.on_replayed(s, p, bank_hash(s))
    assert n.on_block_votes([(KEYS[1].pubkey, 3), (KEYS[2].pubkey, 4)]) == 2
    assert n.dump_slot(2) == {2, 3}
    fc = n.forkchoice
    assert set(fc.parent) == {0, 1, 4} and 2 not in fc.children[1] and set(n.bank_hashes) == {1, 4}
    assert fc.latest_vote == {KEYS[2].pubkey: 4}  # the vote inside the dumped subtree is gone
    assert n.processed_slot() == 4
    assert n.dump_slot(0) == set() and n.dump_slot(99) == set()  # never the root; unknown: no-op
