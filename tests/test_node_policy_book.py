"""Direct tests of the schedule book's crediting now that the policy holds the book
(core/node_policy.py ``NodePolicy.book``; issue 11: it left node/validator.py's
``_on_root``, ``aload`` and the ``CreditRoot`` effect). The reference is the sequence the
shell performed before the move, on a second book: the two books must hold the same state
after every step of a scripted run of roots, at a root and at a restart. No disk, no
network, no clock."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ambient_p2p.core import slots as sl
from ambient_p2p.core.lstake import epoch_of
from ambient_p2p.core.node_policy import NodePolicy
from ambient_p2p.core.schedule import ScheduleBook
from ambient_p2p.core.work import WorkEvent
from tests.inproc import KEYS, node_genesis
from tests.policy_doubles import FakeBank, FakeResult

SPE = 8  # short epochs: a run of 90 slots crosses eleven, and the LStake ledger prunes
G = node_genesis(n=4, slots_per_epoch=SPE)
ME = KEYS[0]


def _h(slot: int) -> bytes:
    return slot.to_bytes(32, "big")


def _voters(slot: int) -> list[bytes]:
    return [] if slot % 3 == 0 else [KEYS[slot % 4].pubkey, KEYS[(slot + 1) % 4].pubkey]


def _work(slot: int) -> list[WorkEvent]:
    return [WorkEvent(KEYS[slot % 4].pubkey, 10 * slot, slot)] if slot % 5 == 0 else []


def _res(slot: int, parent: int) -> FakeResult:
    return FakeResult(FakeBank(slot, _h(slot), landed_votes=[(v, parent) for v in _voters(slot)],
                               work_events=_work(slot)))


def _policy(book: ScheduleBook) -> NodePolicy[Any]:
    # the tracker only needs a known leader; crediting asks the book for the real one
    return NodePolicy(ME, {k.pubkey: 1 for k in KEYS[:4]}, None, genesis_hash=_h(0), slot_ms=400, genesis_ms=0,
                      started_ms=0, spe=SPE, leader_of=lambda s: KEYS[1].pubkey, vote_weights=lambda e: None,
                      book=book)


def _same(a: ScheduleBook, b: ScheduleBook) -> None:
    assert a.to_state() == b.to_state()
    assert a.ledger.pool_buckets() == b.ledger.pool_buckets()  # unpruned buckets included
    assert a.ledger.forfeits() == b.ledger.forfeits()
    assert (a.leader_credits, a.vote_credits) == (b.leader_credits, b.vote_credits)


def test_rooting_credits_the_book_in_chain_order_then_prunes_it() -> None:
    """``rooted(root, chain)`` credits ``chain`` to the book (leaders, landed voters, work)
    and prunes its LStake ledger to the root's epoch, exactly as the shell did after storing
    the roots; every seventh slot is skipped so chains jump."""
    p, ref = _policy(ScheduleBook(G)), ScheduleBook(G)
    assert p.book is not None
    p.banks[0] = FakeResult(FakeBank(0, _h(0)))
    parent = 0
    for s in range(1, 91):
        if s % 7 == 0:
            continue
        assert sl.Replay(s, parent) in p.stored([sl.Completed(s, parent)], [], 0)
        p.replayed(s, _res(s, parent), False, 0)
        parent = s
    rooted: list[int] = []
    prev = 0
    for root in (3, 10, 17, 30, 41, 55, 64, 79, 90):
        chain = [s for s in range(prev + 1, root + 1) if s % 7]
        p.rooted(root, chain, 0)
        ref.on_rooted(chain, root, _voters, _work)  # the shell's calls before the move
        ref.ledger.prune(epoch_of(root, SPE))
        _same(p.book, ref)
        assert p.book.credited_through == root
        rooted += chain
        prev = root
    # pinned independently of the reference: one leader credit per rooted slot, one vote
    # credit per landed vote (every genesis key has LStake), and the ledger pruned
    assert sum(p.book.leader_credits.values()) == len(rooted)
    assert p.book.vote_credits == Counter(v for s in rooted for v in _voters(s))
    floor = p.book.ledger.min_kept_epoch(epoch_of(90, SPE))
    assert floor > 0 and min(e for _i, e, *_ in p.book.ledger.pool_buckets()) >= floor


def test_restart_credits_ledger_roots_as_they_replay_then_the_rest_at_restarted() -> None:
    """Restarting from genesis with ledger roots above it: each root is credited the moment
    it freezes (so schedules beyond it are known to the replays that follow), nothing else
    is; ``restarted`` credits the roots that did not replay (slot 20 is stored partial) up
    to the ledger root. The book equals the one the shell's old calls built."""
    roots_above = [2, 5, 9, 12, 17, 20]
    parents = {s: s - 1 for s in range(1, 21)}
    above = sl.StoredAbove(replay=list(range(1, 20)), dead=[], partial=[20], parents=parents, produced=[])
    p, ref = _policy(ScheduleBook(G)), ScheduleBook(G)
    assert p.book is not None
    queue = [e for e in p.restart(0, FakeResult(FakeBank(0, _h(0))), roots_above=roots_above, above=above,
                                  rooted_count=0, base_parent=0, now_mono_ms=0) if isinstance(e, sl.Replay)]
    credited_at: dict[int, int] = {}
    while queue:
        r = queue.pop(0)
        out = p.replayed(r.slot, _res(r.slot, r.parent), False, 0)
        credited_at[r.slot] = p.book.credited_through
        if r.slot in roots_above:
            ref.credit_replayed_root(r.slot, [(v, r.parent) for v in _voters(r.slot)], _work(r.slot))
        _same(p.book, ref)
        queue += [e for e in out if isinstance(e, sl.Replay)]
    assert credited_at == {s: max((x for x in roots_above if x <= s), default=0) for s in range(1, 20)}
    p.restarted(0)
    ref.on_rooted(roots_above, 20, p.landed_voters, p.work_events)  # the shell's call before the move
    _same(p.book, ref)
    assert p.book.credited_through == 20
    assert p.loaded and p.loading_roots == set()
