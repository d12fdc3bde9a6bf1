"""The leader schedule on a fork (spec/node.md "Leader schedule on a fork"; issue 16).

Without it the schedule of epoch E needed this node's root past the end of epoch E - 2, so
a finality stall of about two epochs stopped production for good. These tests pin:

* a fork's schedule exists for any slot its blocks extend to, however far above the root;
* it is exactly the schedule the root gives once the same blocks are rooted (the rule is
  "rooting, applied to the fork"), for random skip patterns and landed votes;
* two forks that differ below the basis boundary get their own schedules;
* the working fork answers only epochs whose basis boundary it has reached (beyond it:
  tests/test_newcomer_schedule.py).
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.schedule import ForkSlot, ScheduleBook
from ambient_p2p.core.work import WorkEvent
from ambient_p2p.devnet.genesis import localnet_genesis

KEYS = [Keypair.deterministic("fork-schedule", i) for i in range(4)]
SPE = 16
GENESIS = localnet_genesis("forksched", [k.pubkey for k in KEYS], creation_time_s=0, hashes_per_tick=20,
                           slots_per_epoch=SPE, leader_slots=2)


def _fork(book: ScheduleBook, slots: list[int], voters: dict[int, list[bytes]],
          work: dict[int, list[WorkEvent]] | None = None) -> list[ForkSlot]:
    """A fork of blocks at ``slots`` (ascending), each block id naming its ancestry."""
    out: list[ForkSlot] = []
    for s in slots:
        bid = bytes([len(out) % 256]) + s.to_bytes(8, "little") + (out[-1].block_id[:8] if out else b"")
        out.append(ForkSlot(s, bid, voters.get(s, []), (work or {}).get(s, [])))
    return out


def _rooted_book(slots: list[int], voters: dict[int, list[bytes]],
                 work: dict[int, list[WorkEvent]] | None = None) -> ScheduleBook:
    book = ScheduleBook(GENESIS)
    for s in slots:  # one root at a time, as a live node roots them
        book.on_rooted([s], s, lambda x: voters.get(x, []), lambda x: (work or {}).get(x, []))
    return book


def test_a_fork_has_leaders_far_beyond_root_plus_two_epochs() -> None:
    book = ScheduleBook(GENESIS)
    slots = list(range(1, 6 * SPE))
    fork = _fork(book, slots, {s: [k.pubkey for k in KEYS] for s in slots})
    far = 6 * SPE + 3  # epoch 6, the root still at 0
    assert book.leader(far) is None  # the root alone cannot say (the old rule: production halts)
    assert book.schedule(6) is None
    leader = book.leader(far, fork)
    assert leader in {k.pubkey for k in KEYS}
    book.working_fork = lambda: fork
    assert book.leader(far) == leader  # the working fork (tip in epoch 5) answers epoch 6
    assert book.vote_weights(6) is not None


def test_the_working_fork_answers_only_epochs_whose_boundary_it_reached() -> None:
    """(Beyond it only while nothing unreplayed is known there: tests/test_newcomer_schedule.py;
    this book is not told, as in the ledger tools.)"""
    book = ScheduleBook(GENESIS)
    fork = _fork(book, list(range(1, 3 * SPE - 1)), {})  # tip 46: epoch 2's end (boundary of epoch 4) not reached
    book.working_fork = lambda: fork
    assert book.schedule(3) is not None  # basis end of epoch 1 (slot 31) < tip
    assert book.schedule(4) is None  # basis end of epoch 2 (slot 47) > tip: the fork may still grow below it
    assert book.leader(4 * SPE, fork) is not None  # a block extending the fork past it settles it
    full = _fork(book, list(range(1, 3 * SPE)), {})  # tip 47 == the boundary: nothing can come below it
    book.working_fork = lambda: full
    assert book.schedule(4) == [book.leader(s, full) for s in range(4 * SPE, 5 * SPE)]


def test_rooted_epoch_gap_uses_the_rooted_chain() -> None:
    """Skipped slots spanning a whole epoch on the rooted chain: the next root's leader is
    still credited (the old rule credited nobody: the root had not passed the boundary)."""
    book = _rooted_book([1, 2, 3 * SPE + 1], {})
    assert sum(book.leader_credits.values()) == 3


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_fork_schedule_equals_the_schedule_once_rooted(data: Any) -> None:
    top = 6 * SPE
    slots = sorted(data.draw(st.sets(st.integers(1, top - 1), min_size=1, max_size=top - 1)))
    ids = [k.pubkey for k in KEYS]
    voters = {s: data.draw(st.lists(st.sampled_from(ids), max_size=4, unique=True)) for s in slots}
    work = {s: [WorkEvent(ids[s % 4], 10 * s, 0)] for s in slots if s % 7 == 0}
    fork_book = ScheduleBook(GENESIS)
    fork = _fork(fork_book, slots, voters, work)
    rooted = _rooted_book(slots, voters, work)
    for epoch in range(2, 7):
        expected = rooted.schedule(epoch, (), extends=True)
        assert expected is not None
        assert fork_book.schedule(epoch, fork, extends=True) == expected, epoch
        assert fork_book.vote_weights(epoch, fork, extends=True) == rooted.vote_weights(epoch, (), extends=True)
    # the fork-derived credits stayed off the book's own (rooted) ledger
    assert fork_book.ledger.snapshot(0) == ScheduleBook(GENESIS).ledger.snapshot(0)
    # and rooting the fork afterwards (root catching up) gives the same answers from the root
    for s in slots:
        fork_book.on_rooted([s], s, lambda x: voters.get(x, []), lambda x: work.get(x, []))
    for epoch in range(2, 7):
        assert fork_book.schedule(epoch, (), extends=True) == rooted.schedule(epoch, (), extends=True)


def test_two_forks_get_their_own_schedules() -> None:
    """Forks that differ below the boundary (one led only by key 0's slots surviving, the
    other by key 1's) get the schedules their own rooting would give, and they differ."""
    book = ScheduleBook(GENESIS)
    base = ScheduleBook(GENESIS)
    owners = {s: base.leader(s) for s in range(1, 2 * SPE)}
    a_slots = [s for s, k in owners.items() if k == KEYS[0].pubkey]
    b_slots = [s for s, k in owners.items() if k == KEYS[1].pubkey]
    fa, fb = _fork(book, a_slots, {}), _fork(book, b_slots, {})
    sa, sb = book.schedule(2, fa, extends=True), book.schedule(2, fb, extends=True)
    assert sa == _rooted_book(a_slots, {}).schedule(2, (), extends=True)
    assert sb == _rooted_book(b_slots, {}).schedule(2, (), extends=True)
    assert sa != sb
    assert sa is not None and sa.count(KEYS[0].pubkey) > sa.count(KEYS[1].pubkey)


def test_a_finality_stall_longer_than_two_epochs_does_not_stop_production(tmp_path: Any) -> None:
    """Four in-process validators on virtual time (tests/test_node.py's fake network), 16-slot
    epochs: two of them stop voting for 5 epochs (they still produce and replay), so 1/2 of
    LStake votes (< 2/3) and nothing can be rooted. Every node must keep producing past
    root + 2 epochs (the leaders come from the fork), and once the two vote again finality
    resumes on all four."""
    import trio
    from trio.testing import MockClock

    from ambient_p2p.core.lstake import epoch_of
    from ambient_p2p.node.services import run_services
    from ambient_p2p.node.validator import slot_duration_ms
    from tests.inproc import assert_one_rooted_chain, inproc_cluster, node_genesis, rooted_chains

    g = node_genesis(n=4, slots_per_epoch=SPE)
    net = inproc_cluster(tmp_path, g)
    slot_s = slot_duration_ms(g) / 1000
    seen: dict[str, Any] = {}
    muted: set[str] = set()
    for name in ("v2", "v3"):
        node = net.nodes[name]

        def decision(*a: Any, _name: str = name, _orig: Any = node.vote_decision) -> Any:
            return [] if _name in muted else _orig(*a)

        node.vote_decision = decision  # type: ignore[method-assign,assignment]

    async def main() -> None:
        async with trio.open_nursery() as n:
            for v in net.nodes.values():
                n.start_soon(run_services, v)
            await trio.sleep(2 * SPE * slot_s)
            muted.update({"v2", "v3"})
            await trio.sleep(5 * SPE * slot_s)
            seen["cut"] = {name: v.status()["consensus"] for name, v in net.nodes.items()}
            muted.clear()
            await trio.sleep(4 * SPE * slot_s)
            seen["end"] = {name: v.status()["consensus"] for name, v in net.nodes.items()}
            n.cancel_scope.cancel()

    try:
        trio.run(main, clock=MockClock(autojump_threshold=0))
        cut, end = seen["cut"], seen["end"]
        keys = ("slot", "processed", "root", "finalized", "last_vote", "isolated", "no_vote_reason", "dead")
        print({k: {f: c.get(f) for f in keys} for k, c in cut.items()})
        print({k: {f: c.get(f) for f in keys} for k, c in end.items()})
        for c in cut.values():
            # the root stalled, production went on more than 2 epochs past it
            assert epoch_of(c["processed"], SPE) > epoch_of(c["root"], SPE) + 2, c
        stalled = max(cut[name]["finalized"] for name in ("v0", "v1"))
        assert all(c["finalized"] > stalled for c in end.values()), ({k: c["finalized"] for k, c in end.items()},
                                                                     stalled)
        assert_one_rooted_chain(rooted_chains(list(net.nodes.values())))
    finally:
        net.close()


def test_a_shred_from_another_forks_leader_blames_nobody() -> None:
    """While the leader comes from the working fork (not final), a shred whose origin is not
    that leader may be another fork's leader: ignored (no charge), not ``not-leader``."""
    from ambient_p2p.core.codec import encode
    from ambient_p2p.net.gossip import blame, shreds_check
    from ambient_p2p.net.messages import ShredBatch, make_standin_shred, seal_envelope

    env = seal_envelope(KEYS[1], "t", encode(ShredBatch(shreds=(make_standin_shred(70, 0, size=300),))), 0)
    final = shreds_check(lambda _s: KEYS[0].pubkey, leader_final=lambda _s: True)
    forked = shreds_check(lambda _s: KEYS[0].pubkey, leader_final=lambda _s: False)
    assert final(env) == "not-leader" and blame("not-leader") == (False, True)
    assert forked(env) == "other-fork-leader" and blame("other-fork-leader") == (False, False)
    ok = seal_envelope(KEYS[0], "t", encode(ShredBatch(shreds=(make_standin_shred(70, 0, size=300),))), 0)
    assert forked(ok) is None
