"""Direct tests of the rules that left the validator shell in the third cut (issue 11,
spec/node.md "What the shell still does"): which queued replay runs and on what (leader on
the fork through the parent, the parent's bank), the vote-weight provider a frozen bank
carries and the frozen leader table worker threads check shreds against, a gossip
delivery's votes and transactions, a written or refused snapshot, what a one-shot build
takes, and the status's leader and LStake table. Each rule is compared with the formula
the shell used before the move. No disk, no network, no clock."""

from __future__ import annotations

from typing import Any

from ambient_p2p.core import slots as sl
from ambient_p2p.core.consensus import Vote
from ambient_p2p.core.crypto import encode_address
from ambient_p2p.core.lstake import epoch_of
from ambient_p2p.core.messages import sign_message
from ambient_p2p.core.node_policy import NodePolicy, ReplayJob
from ambient_p2p.core.node_report import lstake_rows
from ambient_p2p.core.schedule import ScheduleBook
from ambient_p2p.core.vote_program import vote_transaction
from tests.inproc import KEYS, node_genesis
from tests.policy_doubles import FakeBank, FakeResult

SPE = 8
G = node_genesis(n=4, slots_per_epoch=SPE)
ME = KEYS[0]
SLOT_MS = 400


def _h(slot: int) -> bytes:
    return slot.to_bytes(32, "big")


def _policy(book: ScheduleBook | None = None, leader_of: Any = lambda s: KEYS[1].pubkey) -> NodePolicy[Any]:
    p: NodePolicy[Any] = NodePolicy(ME, {k.pubkey: 1 for k in KEYS[:4]}, None, genesis_hash=_h(0), slot_ms=SLOT_MS,
                                    genesis_ms=0, started_ms=0, spe=SPE, leader_of=leader_of,
                                    vote_weights=lambda e: {ME.pubkey: 7}, book=book)
    p.banks[0] = FakeResult(FakeBank(0, _h(0)))
    return p


def _queue(p: NodePolicy[Any], slot: int, parent: int) -> sl.Replay:
    r = sl.Replay(slot, parent)
    assert r in p.stored([sl.Completed(slot, parent)], [], 0)
    return r


def _freeze(p: NodePolicy[Any], slot: int, parent: int, landed: list[tuple[bytes, int]] | None = None) -> None:
    _queue(p, slot, parent)
    p.replayed(slot, FakeResult(FakeBank(slot, _h(slot), landed_votes=landed or [])), False, 0)


# -- the replay job ---------------------------------------------------------------------------
def test_replay_job_rows() -> None:
    """Current -> the job (leader, parent's result); superseded -> nothing; a missing
    leader or parent bank (cannot happen) -> the slot fails ``no-leader-or-parent``."""
    p = _policy()
    r = _queue(p, 1, 0)
    assert p.replay_job(r, 0) == (ReplayJob(1, p.banks[0], KEYS[1].pubkey), [])
    assert p.replay_job(sl.Replay(1, 7), 0) == (None, [])  # another parent: superseded
    assert p.replay_job(sl.Replay(9, 0), 0) == (None, [])  # never queued: not replaying
    p.leader_of = lambda s: None  # the schedule lost the leader after the tracker checked it
    job, fx = p.replay_job(r, 0)
    assert job is None and sl.MarkDead(1, "no-leader-or-parent") in fx and p.slots.is_dead(1)
    q = _policy()
    r2 = _queue(q, 1, 0)
    del q.banks[0]  # the parent's bank went away
    job, fx = q.replay_job(r2, 0)
    assert job is None and sl.MarkDead(1, "no-leader-or-parent") in fx
    assert q.replay_job(r2, 0) == (None, [])  # dead now: no second failure


def test_replay_job_leader_is_the_books_on_the_fork_through_the_parent() -> None:
    """With a schedule book, the leader is ``book.leader(slot, fork_at(parent, credited))``
    (the shell's old lookup), not the root's schedule."""
    book = ScheduleBook(G)
    p = _policy(book)
    parent = 0
    for s in range(1, 3 * SPE):
        _freeze(p, s, parent, landed=[(KEYS[s % 3].pubkey, parent)])
        parent = s
    r = _queue(p, 3 * SPE, parent)
    job, fx = p.replay_job(r, 0)
    assert fx == [] and job is not None
    assert job.leader == book.leader(r.slot, p.fork_at(r.parent, book.credited_through))
    assert job.parent is p.banks[parent] and job.slot == r.slot


# -- the vote-weight provider and the frozen leader table -----------------------------------
def test_frozen_banks_carry_the_fork_weights_of_the_book_in_use() -> None:
    book = ScheduleBook(G)
    p = _policy(book)
    parent = 0
    for s in range(1, 2 * SPE + 3):
        _freeze(p, s, parent, landed=[(KEYS[s % 4].pubkey, parent)])
        parent = s
    for slot in (5, parent):  # a bank below the tip sees its own fork, not the working one
        bank = p.banks[slot].bank
        for e in range(6):
            expect = book.vote_weights(e, p.fork_at(slot, book.credited_through), extends=True)
            assert bank.lstake_provider(e) == p.fork_weights(slot)(e) == expect
    assert p.banks[parent].bank.lstake_provider(4) is not None  # beyond the tip's boundary: the block extends it
    assert p.banks[5].bank.lstake_provider(2) != book.vote_weights(2, p.working_fork(0), extends=True)
    bank = p.banks[parent].bank
    other = ScheduleBook(G)
    other.credited_through = 5  # a restart's book: the provider reads the book in use then
    p.book = other
    assert bank.lstake_provider(2) == other.vote_weights(2, p.fork_at(parent, 5), extends=True)
    bare = _policy()
    _freeze(bare, 1, 0)
    assert not hasattr(bare.banks[1].bank, "lstake_provider")  # no book: the banks' own weights
    assert bare.fork_weights(1)(3) == {ME.pubkey: 7}  # ``vote_weights``


def test_restart_base_bank_carries_the_provider() -> None:
    book = ScheduleBook(G)
    p = _policy(book)
    base = FakeResult(FakeBank(4, _h(4)))
    p.restart(4, base, roots_above=[], above=sl.StoredAbove([], [], [], {}, []), rooted_count=1, base_parent=3, now_mono_ms=0)
    assert base.bank.lstake_provider(0) == book.vote_weights(0, [], extends=True)


def test_frozen_leaders_follow_the_clock_and_the_root() -> None:
    book = ScheduleBook(G)
    p = _policy(book)
    book.working_fork = lambda: p.working_fork(book.credited_through)  # as the shell wires it
    book.unreplayed_above = lambda tip: None  # nothing unreplayed: the working fork answers any epoch
    for now in (0, SLOT_MS * SPE * 2 + 1, SLOT_MS * SPE * 9):
        leaders = p.frozen_leaders(now)
        ref = book.frozen_leaders(p.schedule_epochs(epoch_of(p.slot_at(now), SPE)))
        assert [leaders(s) for s in range(1, 12 * SPE)] == [ref(s) for s in range(1, 12 * SPE)]
    clock_leader = book.leader(9 * SPE)
    assert clock_leader is not None and p.frozen_leaders(SLOT_MS * SPE * 9)(9 * SPE) == clock_leader  # the clock's epoch
    assert p.frozen_leaders(0)(9 * SPE) is None  # not asked for at slot 0
    bare = _policy()
    assert bare.frozen_leaders(0) is bare.leader_of


# -- gossip deliveries ------------------------------------------------------------------------
def test_delivered_votes_and_transactions() -> None:
    from ambient_p2p.devnet.users import user_keypairs
    from ambient_p2p.ledger.producer import transfer_tx

    p = _policy()
    _freeze(p, 1, 0)
    vote = sign_message(Vote(KEYS[1].pubkey, 1, _h(1), None, 0, bytes(64)), KEYS[1], "vote")
    raw = vote_transaction(KEYS[1], vote, b"\x07" * 32)
    assert p.delivered("votes", raw, 5) == []
    assert p.stats.votes_in == 1 and len(p.vote_pool) == 1 and p.cons.forkchoice.latest_vote[KEYS[1].pubkey] == 1
    assert p.delivered("votes", b"\x00garbage", 5) == [] and p.stats.votes_in == 1  # not a vote: ignored
    payer, to = user_keypairs("policy-jobs")[:2]
    tx = transfer_tx(payer, to.pubkey, 5, b"\x07" * 32)
    assert p.delivered("txs", tx, 6) == [] and len(p.mempool) == 1 and p.mempool.is_verified(tx)
    assert p.delivered("shreds", b"x", 7) == [] and len(p.mempool) == 1 and p.stats.votes_in == 1
    unknown = sign_message(Vote(KEYS[2].pubkey, 2, _h(2), None, 0, bytes(64)), KEYS[2], "vote")
    p.delivered("votes", vote_transaction(KEYS[2], unknown, b"\x07" * 32), 8)
    assert 2 in p.dups.pending  # a vote for a slot not here yet waits


# -- snapshots, the one-shot build, the status ----------------------------------------------
def test_snapshot_saved_counts() -> None:
    p = _policy()
    p.snapshot_saved(8, None)
    assert (p.stats.snapshots, p.stats.snapshot_failures, p.stats.snapshot_slot) == (1, 0, 8)
    p.snapshot_saved(16, "bank-too-large")
    assert (p.stats.snapshots, p.stats.snapshot_failures, p.stats.snapshot_slot) == (1, 1, 8)  # the older stays


def test_take_for_build_only_while_may_build_holds() -> None:
    from ambient_p2p.devnet.users import user_keypairs
    from ambient_p2p.ledger.producer import transfer_tx

    p = _policy()
    _freeze(p, 1, 0)
    payer, to = user_keypairs("policy-jobs")[:2]
    tx = transfer_tx(payer, to.pubkey, 5, b"\x07" * 32)
    assert p.add_tx(tx, 1, verified=True)
    vote = sign_message(Vote(KEYS[1].pubkey, 1, _h(1), None, 0, bytes(64)), KEYS[1], "vote")
    p.delivered("votes", vote_transaction(KEYS[1], vote, b"\x07" * 32), 1)
    assert p.take_for_build(1, 0, 2) is None and p.take_for_build(2, 5, 2) is None  # frozen / unknown parent
    p.produced_before = {2}
    assert p.take_for_build(2, 1, 2) is None and len(p.mempool) == 1 and len(p.vote_pool) == 1  # untouched
    p.produced_before = set()
    taken = p.take_for_build(2, 1, 2)
    assert taken is not None
    txs, votes, parent = taken
    assert txs == [tx] and [v.vote for v in votes] == [vote] and parent is p.banks[1]


def test_report_names_the_leader_and_the_lstake_table() -> None:
    book = ScheduleBook(G)
    p = _policy(book, leader_of=book.leader)
    parent = 0
    for s in range(1, SPE + 2):
        _freeze(p, s, parent)
        parent = s
    p.rooted(SPE, list(range(1, SPE + 1)), 0)  # the book credits leaders 1..8
    assert sum(book.leader_credits.values()) == SPE
    r = p.report(SLOT_MS * 3, 0)
    assert r["leader"] == encode_address(book.leader(3))  # type: ignore[arg-type]
    assert r["lstake"] == p.lstake_table() == lstake_rows(p.cons.stakes, book.leader_credits, book.vote_credits)
    assert list(r)[-2:] == ["leader", "lstake"]  # status puts its own figures after them
    none = _policy(leader_of=lambda s: None)
    assert none.report(0, 0)["leader"] is None and none.lstake_table() == lstake_rows(none.cons.stakes, {}, {})


def test_leader_final_only_from_the_roots_schedule() -> None:
    """The shreds check blames a wrong leader only when the slot's schedule comes from the
    root (``ScheduleBook.available``), as the shell's old lambda asked the book."""
    book = ScheduleBook(G)
    p = _policy(book)
    assert [p.leader_final(s) for s in (1, SPE, 2 * SPE - 1, 2 * SPE, 5 * SPE)] == [True, True, True, False, False]
    assert [p.leader_final(s) for s in range(6 * SPE)] == [book.available(epoch_of(s, SPE)) for s in range(6 * SPE)]
    book.credited_through = 2 * SPE - 1  # epoch 1 fully rooted: epoch 3's basis is final
    assert p.leader_final(3 * SPE) and not p.leader_final(4 * SPE)
    assert not _policy().leader_final(1)  # no book: never final


# -- the policy's parameters, its book's hooks, the PoH-clock intake, the restart's snapshot --
def test_genesis_args_are_the_shells_old_parameters() -> None:
    import dataclasses

    from ambient_p2p.core.leader_policy import slot_duration_ms
    from ambient_p2p.core.node_policy import genesis_args

    g = dataclasses.replace(G, creation_time_s=1_700_000_000)
    heavy = dataclasses.replace(g.bootstrap_nodes[1], lstake=5)
    g = dataclasses.replace(g, bootstrap_nodes=(g.bootstrap_nodes[0], heavy, *g.bootstrap_nodes[2:]))
    args = genesis_args(g)
    assert args == {"stakes": {n.identity: n.lstake for n in g.bootstrap_nodes if n.lstake > 0},
                    "genesis_hash": g.hash(), "slot_ms": slot_duration_ms(g), "genesis_ms": 1_700_000_000_000,
                    "spe": ScheduleBook(g).spe}
    assert args["stakes"][heavy.identity] == 5 and len(args["stakes"]) == 4 and args["spe"] == SPE
    p = NodePolicy(ME, tower=None, started_ms=0, leader_of=lambda s: None, vote_weights=lambda e: None, **args)
    assert p.slot_at(1_700_000_000_000 + 3 * int(args["slot_ms"])) == 3 and p.stakes == args["stakes"]


def test_use_book_wires_the_books_fork_views_to_the_policy() -> None:
    now = [0]
    p = _policy()
    book = ScheduleBook(G)
    p.use_book(book, lambda: now[0])
    assert p.book is book and book.working_fork is not None and book.unreplayed_above is not None
    _freeze(p, 1, 0)
    _freeze(p, 2, 1)
    assert book.working_fork() == p.working_fork(book.credited_through) and [f.slot for f in book.working_fork()] == [1, 2]
    book.credited_through = 1  # the book's floor as it stands when it asks
    assert [f.slot for f in book.working_fork()] == [2]
    assert book.unreplayed_above(2) is None
    p.stored([sl.ShredsStored(5, 4)], [], 0)  # 5 held, names 4
    assert book.unreplayed_above(2) is None  # the policy's memo, at the clock the shell gave
    now[0] = 10_000  # the book reads the shell's clock when it asks: the memo has aged
    assert book.unreplayed_above(2) == 4


def test_take_for_intake_takes_within_the_intake_rules_and_names_the_verified() -> None:
    from ambient_p2p.core.leader_policy import SlotIntake
    from ambient_p2p.devnet.users import user_keypairs
    from ambient_p2p.ledger.producer import transfer_tx

    p = _policy()
    _freeze(p, 1, 0)
    payer, to = user_keypairs("policy-jobs")[:2]
    txs = [transfer_tx(payer, to.pubkey, 5 + i, b"\x07" * 32) for i in range(3)]
    assert p.add_tx(txs[0], 1, verified=True) and p.add_tx(txs[1], 1) and p.add_tx(txs[2], 1, verified=True)
    vote = sign_message(Vote(KEYS[1].pubkey, 1, _h(1), None, 0, bytes(64)), KEYS[1], "vote")
    p.delivered("votes", vote_transaction(KEYS[1], vote, b"\x07" * 32), 1)
    st = SlotIntake(max_txs=2, max_votes=4)
    got, votes, verified = p.take_for_intake(st, 2)
    assert got == txs[:2] and [v.vote for v in votes] == [vote] and verified == {txs[0]}  # room for 2
    assert st.tx_room == 0
    assert p.take_for_intake(st, 3) == ([], [], frozenset())  # no room left; nothing twice


def test_restart_reports_the_snapshot_it_started_from() -> None:
    above = sl.StoredAbove([], [], [], {}, [])
    p = _policy()
    p.stats.snapshot_slot = 99  # whatever was there before
    p.restart(4, FakeResult(FakeBank(4, _h(4))), roots_above=[], above=above, rooted_count=1, base_parent=3,
              now_mono_ms=0, from_snapshot=True)
    assert p.stats.snapshot_slot == 4 and p.stats.restored_from == 4
    q = _policy()
    q.stats.snapshot_slot = 99
    q.restart(0, FakeResult(FakeBank(0, _h(0))), roots_above=[], above=above, rooted_count=0, base_parent=0,
              now_mono_ms=0)
    assert q.stats.snapshot_slot is None  # from genesis: no snapshot yet


# -- the voting service's tower write goes through the shell's one thread door --------------
def test_voting_service_writes_the_tower_through_the_given_runner_before_the_vote(tmp_path: Any) -> None:
    """``VotingService(run=...)``: the validator passes ``_thread("tower")`` (one place for
    worker threads, their limiter and timings); the write still completes before the vote
    leaves, and a refreshed vote (no record) writes nothing."""
    import trio

    from ambient_p2p.core.node_policy import CastVote
    from ambient_p2p.core.tower import Tower
    from ambient_p2p.core.vote_program import parse_vote_transaction
    from ambient_p2p.ledger.tower_storage import read_tower
    from ambient_p2p.node.voting import VotingService

    log: list[Any] = []

    async def run(fn: Any, *args: Any) -> Any:
        log.append(("write", fn.__name__))
        return fn(*args)

    async def out(vt: Any) -> None:
        t = read_tower(tmp_path / "t.cbor", ME.pubkey)
        log.append(("out", vt.vote.slot, None if t is None else t.last_voted_slot))

    svc = VotingService(tmp_path / "t.cbor", out, run)
    tower = Tower()
    tower.record_vote(3)
    vote = sign_message(Vote(ME.pubkey, 3, _h(3), None, 0, bytes(64)), ME, "vote")
    vt = parse_vote_transaction(vote_transaction(ME, vote, b"\x07" * 32))
    assert svc.submit(CastVote(tower.to_record(ME), vt)) and svc.submit(CastVote(None, vt))
    trio.run(svc.drain)
    assert log == [("write", "write_tower"), ("out", 3, 3), ("out", 3, 3)] and svc.written == 1


def test_repair_is_planned_only_with_a_peer_to_ask() -> None:
    """Without peers no plan, and readiness hears nothing (not "behind" for it); with one,
    the plan of ``repair_plan``, which feeds readiness."""
    p = _policy()
    _freeze(p, 1, 0)
    p.stored([sl.ShredsStored(3, 2)], [], 0)  # 3 names 2, unknown here: an orphan to ask for
    now = SLOT_MS * 8
    assert p.repair_wanted(now, 0) == ([], None) and not p.behind(now)
    plan, orphan = p.repair_wanted(now, 2)
    assert (plan, orphan) == p.repair_plan(now) and orphan == 2 and 2 in plan and p.behind(now)
