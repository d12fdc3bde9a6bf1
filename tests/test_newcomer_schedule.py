"""A whole epoch without a block must not leave later epochs without leaders (found by the
newcomer test, tests/test_newcomer_multiproc.py: four nodes loading the model on a loaded
machine produced nothing for more than an epoch of 32, then 128 slots, and the chain never
produced again, every node showing ``leader=-``; issue 16's genesis written long before the
first node starts is the same case). The working fork answers an epoch whose basis boundary
it has not reached only while the node knows of no unreplayed slot between its tip and that
boundary (spec/node.md "Leader schedule on a fork"): a stalled cluster resumes, a node that
has heard of the blocks it missed does not guess leaders from its stale tip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.schedule import ForkSlot, ScheduleBook
from ambient_p2p.devnet.genesis import localnet_genesis

KEYS = [Keypair.deterministic("newcomer-schedule", i) for i in range(4)]
GENESIS = localnet_genesis("newcomer-schedule", [k.pubkey for k in KEYS], slots_per_epoch=32, creation_time_s=1)
SPE = 32


def _book(tip: int, unreplayed: list[int] | None = None) -> ScheduleBook:
    """Rooted through slot 20, a working fork of blocks 21..``tip``; ``unreplayed``: the
    slots above the tip this node holds or has heard of but not replayed (None: unset)."""
    book = ScheduleBook(GENESIS)
    book.credited_through = 20  # rooted through slot 20 (epoch 0)
    fork = [ForkSlot(s, bytes([s]) * 32, (), ()) for s in range(21, tip + 1)]
    book.working_fork = lambda: fork
    if unreplayed is not None:
        book.unreplayed_above = lambda t: min((s for s in unreplayed if s > t), default=None)
    return book


def test_slots_past_a_whole_epoch_without_blocks_still_have_leaders() -> None:
    book = _book(tip=50, unreplayed=[])  # the last block is slot 50 of epoch 1; epochs 2 and 3 had none
    for slot in (3 * SPE, 4 * SPE, 4 * SPE + 7, 5 * SPE + 1):  # epochs 3-5: bases end at slots 63, 95, 127
        assert book.leader(slot) is not None, slot
    # the leader is the one a block extending the working fork gets on replay, so every node
    # at this tip agrees with the block's replay
    fork = book.working_fork()  # type: ignore[misc]
    assert all(book.leader(s) == book.leader(s, fork) for s in range(3 * SPE, 6 * SPE))
    # and the resuming block (or votes for it) above a boundary changes nothing
    resumed = _book(tip=50, unreplayed=[4 * SPE + 7])
    assert [resumed.leader(s) for s in range(3 * SPE, 4 * SPE + 8)] == [book.leader(s) for s in
                                                                         range(3 * SPE, 4 * SPE + 8)]
    assert resumed.leader(5 * SPE + 1) == book.leader(5 * SPE + 1)  # epoch 5: basis end 127 < 135
    assert resumed.leader(6 * SPE + 1) is None  # epoch 6: basis end 159 spans the unreplayed slot 135


def test_a_node_that_heard_of_missed_blocks_gets_no_leaders_from_its_stale_tip() -> None:
    """A node cut off at slot 50 while the cluster went on hears, after the heal, of a slot
    it has not replayed in epoch 2 (a peer's vote for it, its shreds, a child naming it):
    the schedules whose basis spans that slot are unknown here (no guessed leader for
    production or the shred check) until it repairs and replays up to it; epochs whose basis
    its fork has reached keep their leaders, and a block's own fork (replay) still answers."""
    stale = _book(tip=50, unreplayed=[70])
    fresh = _book(tip=50, unreplayed=[])
    fork = stale.working_fork()  # type: ignore[misc]
    # epochs 4 and 5 (bases end at 95 and 127, beyond slot 70): no leader, nothing to lead on
    assert all(stale.leader(s) is None for s in range(4 * SPE, 6 * SPE))
    assert stale.schedule(4) is None and stale.vote_weights(5) is None
    # epochs 1-3 keep theirs: 2 from the fork's own blocks, 3 (basis end 63 < 70) as a block
    # on the tip would have it
    assert all(stale.leader(s) == fresh.leader(s) is not None for s in range(SPE, 4 * SPE))
    # a block that names its parent is replayed on that parent's fork, whatever the node heard
    assert all(stale.leader(s, fork) == fresh.leader(s) is not None for s in range(4 * SPE, 6 * SPE))
    # once it has replayed up to slot 70 (its fork's tip), the fork answers again
    caught_up = _book(tip=70, unreplayed=[])
    assert caught_up.leader(4 * SPE) is not None


def test_a_node_that_cannot_tell_what_it_missed_does_not_extrapolate() -> None:
    """Without the validator's ``unreplayed_above`` (ledger tools, a book not wired to a
    node) the working fork answers only epochs whose basis boundary it has reached."""
    book = _book(tip=50)
    assert book.leader(3 * SPE) is None and book.schedule(4) is None
    assert _book(tip=63).leader(3 * SPE) is not None  # the tip at the boundary: its basis is complete


def test_work_credited_in_epoch_e_weighs_votes_and_schedules_leaders_from_e_plus_2() -> None:
    """The newcomer's path in the schedule book (spec/join.md "A newcomer earns its place"):
    no genesis LStake, a verified answer settles in a rooted slot of epoch 1; from epoch 3
    it has a vote weight and leader terms, its landed votes are credited from then on, not
    before."""
    from ambient_p2p.core.work import WorkEvent

    newcomer = Keypair.deterministic("newcomer-schedule/newcomer", 0).pubkey
    assert newcomer not in {n.identity for n in GENESIS.bootstrap_nodes}
    book = ScheduleBook(GENESIS)
    settled = SPE + 3  # a slot of epoch 1

    def work(s: int) -> list[WorkEvent]:
        return [WorkEvent(newcomer, 50_000, 0)] if s == settled else []

    def landed(s: int) -> list[bytes]:
        return [newcomer]  # it votes all along; only weighted epochs credit it

    book.on_rooted(list(range(1, 2 * SPE + 10)), 2 * SPE + 9, landed, work)
    assert newcomer not in (book.vote_weights(2) or {})  # epoch 2: the snapshot at the end of epoch 0
    assert book.vote_credits[newcomer] == 0  # its votes of epochs 0-2 counted nothing
    w3 = book.vote_weights(3)
    assert w3 is not None and w3.get(newcomer, 0) > 0  # epoch 3: the snapshot at the end of epoch 1
    assert book.ledger.lstake(newcomer, 1) > 0 and book.ledger.lstake(newcomer, 0) == 0
    sched = book.schedule(3)
    assert sched is not None and newcomer in sched  # 50,000 tokens outweigh 4 x 16 leader slots
    book.on_rooted(list(range(2 * SPE + 10, 3 * SPE + 5)), 3 * SPE + 4, landed, work)
    assert book.vote_credits[newcomer] == 5  # slots 96..100 of epoch 3 landed its votes


def test_four_validators_resume_after_two_epochs_without_a_block(tmp_path: Path) -> None:
    """Four in-process validators on virtual time (tests/inproc.py), 16-slot epochs: they
    produce and vote for 20 slots, then no leader builds for 40 slots (a loaded machine:
    the last block in epoch 1, none in epochs 2 and 3 before the clock reaches epoch 3,
    whose basis, the end of epoch 1, the fork never reached). Production resumes on the
    working fork's schedule (every node at that tip computes the same leaders), every node
    replays and votes again, and finality moves past the stall on one chain. Before the
    rule no node had a leader for epoch 3 and the chain never produced again."""
    import trio

    from ambient_p2p.core.leader_policy import Skip
    from ambient_p2p.node.validator import slot_duration_ms
    from tests.inproc import assert_one_rooted_chain, inproc_cluster, node_genesis, rooted_chains, run_cluster, statuses

    spe = 16
    g = node_genesis(n=4, slots_per_epoch=spe)
    net = inproc_cluster(tmp_path, g)
    slot_s = slot_duration_ms(g) / 1000
    paused: list[bool] = [False]
    for node in net.nodes.values():
        def decide(now: int, now_mono: int, _orig: Any = node.leader) -> Any:
            return Skip("paused") if paused[0] else _orig(now, now_mono)

        node.leader = decide  # type: ignore[method-assign]
    seen: dict[str, Any] = {}

    async def script() -> None:
        await trio.sleep(20 * slot_s)
        paused[0] = True
        await trio.sleep(40 * slot_s)
        seen["stall"] = statuses(net)
        paused[0] = False
        # resumed: up to 80 slots (virtual time) for every node to finalize past the stall;
        # at 400 ms slots the last node's tower roots a few slots later than at 800 ms
        for _ in range(80):
            await trio.sleep(slot_s)
            seen["end"] = statuses(net)
            if all(c["processed"] > 60 and c["finalized"] > 60 for c in seen["end"].values()):
                break

    try:
        run_cluster(net, script)
        stall, end = seen["stall"], seen["end"]
        keys = ("slot", "processed", "root", "finalized", "isolated", "no_vote_reason")
        print({k: {f: c.get(f) for f in keys} for k, c in stall.items()})
        print({k: {f: c.get(f) for f in keys} for k, c in end.items()})
        tip = max(c["processed"] for c in stall.values())
        assert tip < 2 * spe - 1, tip  # the working fork never reached epoch 3's basis boundary (slot 31)
        assert all(c["slot"] >= 3 * spe for c in stall.values())  # the clock is in epoch 3
        assert all(c["processed"] > 60 and c["finalized"] > 60 for c in end.values()), end
        assert_one_rooted_chain(rooted_chains(list(net.nodes.values())))
    finally:
        net.close()
