"""Unit tests of the node shell pieces that need no network: production -> replay round
trip, replay from data shreds alone (what repair fetches), LStake credits from roots and
schedule availability, the durable tower file, and a single-process validator that
produces, votes and roots on its own (one identity holds all LStake)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.lstake import CREDIT_PER_LEADER_SLOT, CREDIT_PER_VOTE
from ambient_p2p.core.readiness import SlotFrozen
from ambient_p2p.core.schedule import ScheduleBook
from ambient_p2p.core.shred import DATA_PAYLOAD_BYTES
from ambient_p2p.core.tower import Tower, TowerError
from ambient_p2p.devnet.users import user_keypairs
from ambient_p2p.ledger.blockstore import Blockstore, shred_key
from ambient_p2p.ledger.producer import genesis_bank, transfer_tx
from ambient_p2p.ledger.replay import SlotRejected, SlotResult, replay_slot
from ambient_p2p.ledger.tower_storage import read_tower, write_tower
from ambient_p2p.node.leader import build_slot
from ambient_p2p.node.services import repair_plan
from ambient_p2p.node.validator import Validator, slot_duration_ms
from tests.inproc import (
    KEYS,
    assert_one_rooted_chain,
    inproc_cluster,
    loaded_validator,
    rooted_chains,
    run_cluster,
    statuses,
)
from tests.inproc import node_genesis as _genesis


def _root(genesis) -> SlotResult:  # type: ignore[no-untyped-def]
    return SlotResult(genesis_bank(genesis), genesis.hash(), genesis.hash(), 0, 0, 0)


def test_built_slot_replays_to_the_same_bank_hash(tmp_path: Path) -> None:
    g = _genesis()
    book = ScheduleBook(g)
    users = user_keypairs(g.chain_id)
    parent = _root(g)
    slot = 5
    leader = next(k for k in KEYS if k.pubkey == book.leader(slot))
    good = transfer_tx(users[0], users[1].pubkey, 7, parent.bank.last_blockhash)
    broke = transfer_tx(Keypair.deterministic("nobody"), users[1].pubkey, 7, parent.bank.last_blockhash)
    built = build_slot(leader, g, 0, parent, slot, [good, broke, good])
    assert built.included == [good] and len(built.dropped) == 2  # no funds; already processed
    with Blockstore.open(tmp_path / "bs") as bs:
        res = bs.insert_shreds(built.packets, book.leader)
        assert not res.rejected and res.completed_slots == [slot]
        replayed = replay_slot(bs, g, parent, slot, leader.pubkey)
    assert replayed.bank.bank_hash == built.record.bank_hash == built.result.bank.bank_hash
    assert replayed.last_root == built.result.last_root
    assert replayed.transactions == 1
    # slots 1-4 were skipped: slot 5 carries their ticks too (agave), 5 x ticks_per_slot
    assert replayed.entries == 5 * g.poh.ticks_per_slot + 1  # + the transaction entry


def test_a_slot_without_the_ticks_of_skipped_slots_is_dead(tmp_path: Path) -> None:
    from ambient_p2p.core.poh import Poh, serialize_entries
    from ambient_p2p.core.shred import make_shreds_from_data

    g = _genesis()
    book = ScheduleBook(g)
    parent = _root(g)
    leader = next(k for k in KEYS if k.pubkey == book.leader(5))
    poh = Poh(parent.last_entry_hash, g.poh.hashes_per_tick)
    entries = [poh.tick_entry() for _ in range(g.poh.ticks_per_slot)]  # one slot's ticks, not five
    sb = make_shreds_from_data(leader, parent.last_root, serialize_entries(entries), 5, 0, 1,
                               g.poh.ticks_per_slot, True, 0, 0)
    with Blockstore.open(tmp_path / "bs") as bs:
        assert bs.insert_shreds([x.payload for x in sb.data], book.leader).completed_slots == [5]
        with pytest.raises(SlotRejected, match="too-few-ticks"):
            replay_slot(bs, g, parent, 5, leader.pubkey)


def test_replay_from_data_shreds_alone_and_missing_data_is_named(tmp_path: Path) -> None:
    g = _genesis()
    book = ScheduleBook(g)
    leader = next(k for k in KEYS if k.pubkey == book.leader(1))
    built = build_slot(leader, g, 0, _root(g), 1)
    data = [p for p in built.packets[: len(built.packets) // 2]]
    with Blockstore.open(tmp_path / "bs") as bs:
        assert bs.insert_shreds(data, book.leader).completed_slots == [1]
        assert replay_slot(bs, g, _root(g), 1, leader.pubkey).bank.bank_hash == built.record.bank_hash
        bs._cf["data_shred"].delete(shred_key(1, 3))
        with pytest.raises(SlotRejected, match="missing-shreds"):
            replay_slot(bs, g, _root(g), 1, leader.pubkey)


def test_schedule_needs_rooted_snapshot_and_credits_leaders_once() -> None:
    g = _genesis(slots_per_epoch=32)
    book = ScheduleBook(g)
    assert book.leader(40) is not None  # epoch 1 uses genesis LStake
    assert book.schedule(2) is None  # needs every slot of epoch 0 decided
    rooted = [1, 2, 3, 5, 8, 13, 21, 31]
    book.on_rooted(rooted, 31)
    book.on_rooted(rooted, 31)  # idempotent
    assert book.schedule(2) is not None
    table = book.ledger.snapshot(0)
    for k in KEYS:
        led = sum(1 for s in rooted if book.leader(s) == k.pubkey)
        # bootstrap 1 + (0.5 short + 0.5 medium) x credits
        assert table.get(k.pubkey, 0) == 1 + led * CREDIT_PER_LEADER_SLOT


def test_landed_votes_credit_only_voters_with_lstake() -> None:
    g = _genesis(n=2, slots_per_epoch=32)
    book = ScheduleBook(g)
    stranger = Keypair.deterministic("stranger").pubkey
    landed = {3: [KEYS[0].pubkey, KEYS[1].pubkey, stranger], 4: [KEYS[1].pubkey]}
    book.on_rooted([3, 4], 4, lambda s: landed.get(s, []))
    assert book.vote_credits == {KEYS[0].pubkey: 1, KEYS[1].pubkey: 2}
    assert stranger not in book.ledger.snapshot(0)  # fees do not buy LStake
    assert book.vote_weights(2) is None  # epoch 0 is not decided yet
    book.on_rooted([31], 31)
    w = book.vote_weights(2)
    assert w is not None and w == book.ledger.snapshot(0) and w[KEYS[1].pubkey] > w[KEYS[0].pubkey] - 64


def test_vote_weights_follow_the_epoch_snapshot_across_restart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """32-slot epochs: once the root enters epoch E >= 2 the votes are weighed by the LStake
    snapshot at the end of E - 2 (credits from leader slots and landed votes), the same
    snapshot the schedule uses; a restarted node derives the same weights and credits."""
    g, now, d, v = _lone_validator(tmp_path, 32)

    trio.run(_run_slots, v, now, 100)  # root = 69: epoch 2
    assert v.cons.finalized_slot() == 69 and v.weights_epoch == 2
    expect = v.book.ledger.snapshot(0)
    assert dict(v.cons.stakes) == expect and expect[KEYS[0].pubkey] > 1
    table, credits = v.lstake_table(), dict(v.book.vote_credits)
    assert credits[KEYS[0].pubkey] == 68  # rooted slots 2..69 each carry a landed vote
    v.close()
    v2 = Validator(KEYS[0], g, d, clock_ms=lambda: now["ms"])
    v2.load()
    assert v2.weights_epoch == 2 and dict(v2.cons.stakes) == expect
    assert v2.lstake_table() == table and dict(v2.book.vote_credits) == credits
    v2.close()

    # an operator's full replay of the node's ledger (ledger verify on the data directory)
    # derives the schedule as the node does: epoch 2's slots verify only because the rooted
    # slots of epoch 0 were credited as they replayed (else: unknown-leader)
    from ambient_p2p.cli import main
    from ambient_p2p.core.codec import encode

    assert main(["ledger", "verify", str(d), "--quiet", "--jobs", "1"]) == 2  # no genesis anywhere
    (tmp_path / "genesis.cbor").write_bytes(encode(g))
    capsys.readouterr()
    assert main(["ledger", "verify", str(d), "--quiet", "--jobs", "1"]) == 0
    assert "verified 100 of 100 slots" in capsys.readouterr().out
    other = _genesis(n=1, slots_per_epoch=32, hashes_per_tick=21)
    (tmp_path / "other.cbor").write_bytes(encode(other))
    assert main(["ledger", "verify", str(d), "--quiet", "--jobs", "1", "--genesis", str(tmp_path / "other.cbor")]) == 1


def test_tower_file_round_trip_and_foreign_tower_refused(tmp_path: Path) -> None:
    t = Tower()
    for s in (1, 2, 3):
        t.record_vote(s)
    path = tmp_path / "tower.cbor"
    write_tower(path, t.to_record(KEYS[0]))
    back = read_tower(path, KEYS[0].pubkey)
    assert back is not None and back.votes == t.votes and back.root == t.root
    with pytest.raises(TowerError):
        read_tower(path, KEYS[1].pubkey)
    assert read_tower(tmp_path / "absent", KEYS[0].pubkey) is None


def _lone_validator(tmp_path: Path, slots_per_epoch: int):  # type: ignore[no-untyped-def]
    """One identity holding all LStake, on a fake clock: (genesis, clock, data dir, loaded validator)."""
    g = _genesis(n=1, slots_per_epoch=slots_per_epoch)
    now = {"ms": 0}
    d = tmp_path / "v"
    d.mkdir()
    v = Validator(KEYS[0], g, d, clock_ms=lambda: now["ms"])
    v.load()
    return g, now, d, v


async def _run_slots(v: Validator, now: dict[str, int], n: int) -> None:
    """A lone validator leads every slot: advance its fake clock a slot at a time and build."""
    for _ in range(n):
        now["ms"] += int(v.slot_ms)
        await v.produce(v.slot_at(now["ms"]), v.cons.processed_slot())
        await v.voting.drain()  # the voting service: tower durable, then the vote goes out


def test_single_validator_produces_votes_roots_and_restarts(tmp_path: Path) -> None:
    """One identity with all LStake: every slot is its own; with a fake clock it builds
    slot after slot, votes on each, roots after 32 votes, writes roots and the tower; a
    new Validator on the same directory rebuilds the same state from disk."""
    g, now, d, v = _lone_validator(tmp_path, 64)

    trio.run(_run_slots, v, now, 40)
    assert v.stats.produced == 40 and v.stats.votes_out == 40
    assert v.cons.finalized_slot() == 40 - 31
    assert v.finalized_slot() == 9  # all LStake is ours: the supermajority root is our root
    roots = v.bs.roots()
    assert roots == list(range(0, 10))
    hashes = {r: v.bs.bank_hash(r).bank_hash for r in roots[1:]}  # type: ignore[union-attr]
    last_vote = v.cons.tower.last_voted_slot
    assert v.stats.votes_included == 39 and v.book.vote_credits[KEYS[0].pubkey] == 8
    v.close()
    v2 = Validator(KEYS[0], g, d, clock_ms=lambda: now["ms"])
    v2.load()
    assert v2.cons.finalized_slot() == 9 and v2.cons.tower.last_voted_slot == last_vote
    assert v2.cons.processed_slot() == 40 and v2.stats.replayed == 40
    assert {r: v2.bs.bank_hash(r).bank_hash for r in v2.bs.roots()[1:]} == hashes  # type: ignore[union-attr]
    # rooted slots 1..9 were led by us; slots 2..9 each carry our landed vote for the slot before
    credits = {KEYS[0].pubkey: 1 + 9 * CREDIT_PER_LEADER_SLOT + 8 * CREDIT_PER_VOTE}
    assert v.book.ledger.snapshot(0) == credits  # credited live ...
    assert v2.book.ledger.snapshot(0) == credits  # ... and again from the replayed chain on restart
    assert v2.book.vote_credits[KEYS[0].pubkey] == 8 and v2.stats.votes_landed == 39
    v2.close()
    shutil.rmtree(d)


def _validator(tmp_path: Path, n: int = 4) -> Validator:
    g = _genesis(n=n)
    d = tmp_path / "v"
    d.mkdir(exist_ok=True)
    v = Validator(KEYS[0], g, d, clock_ms=lambda: 10**9)
    v.load()
    return v


def test_vote_gossip_check_rejects_foreign_origin_unstaked_and_garbage(tmp_path: Path) -> None:
    from ambient_p2p.core.codec import encode
    from ambient_p2p.core.consensus import Vote
    from ambient_p2p.core.messages import sign_message
    from ambient_p2p.core.vote_program import vote_transaction
    from ambient_p2p.net.messages import seal_envelope

    v = _validator(tmp_path)
    try:
        def env(kp: Keypair, payload: bytes):  # type: ignore[no-untyped-def]
            return seal_envelope(kp, "t", payload, 0)

        def vtx(kp: Keypair, vote: Vote) -> bytes:
            return vote_transaction(kp, vote, bytes(32))

        vote_check = v.payload_checks()["votes"]  # the votes topic's gossip check
        good = sign_message(Vote(KEYS[1].pubkey, 5, bytes(32), None, 0, bytes(64)), KEYS[1], "vote")
        assert vote_check(env(KEYS[1], vtx(KEYS[1], good))) is None
        assert vote_check(env(KEYS[2], vtx(KEYS[1], good))) == "vote-origin-mismatch"
        assert vote_check(env(KEYS[1], b"\x00garbage")) == "bad-transaction"
        assert vote_check(env(KEYS[1], encode(good))) == "bad-transaction"  # a bare Vote is not a transaction
        stranger = Keypair.deterministic("stranger")
        unstaked = sign_message(Vote(stranger.pubkey, 5, bytes(32), None, 0, bytes(64)), stranger, "vote")
        assert vote_check(env(stranger, vtx(stranger, unstaked))) == "no-lstake"
        forged = Vote(KEYS[1].pubkey, 6, bytes(32), None, 0, good.signature)
        assert vote_check(env(KEYS[1], vtx(KEYS[1], forged))) == "vote-bad-signature"
        raw = bytearray(vtx(KEYS[1], good))
        raw[70] ^= 1  # inside the signed message: the transaction signature fails
        assert vote_check(env(KEYS[1], bytes(raw))) == "bad-signature"
    finally:
        v.close()


def test_txs_gossip_check_accepts_signed_transactions_only(tmp_path: Path) -> None:
    from ambient_p2p.net.messages import seal_envelope

    v = _validator(tmp_path)
    try:
        users = user_keypairs(v.genesis.chain_id)
        good = transfer_tx(users[0], users[1].pubkey, 5, bytes(32))
        check = v.payload_checks()["txs"]
        assert check(seal_envelope(KEYS[1], "t", good, 0)) is None
        tampered = bytearray(good)
        tampered[-1] ^= 1  # the lamports: the signature no longer matches
        assert check(seal_envelope(KEYS[1], "t", bytes(tampered), 0)) == "bad-signature"
        assert check(seal_envelope(KEYS[1], "t", b"\x01" + bytes(10), 0)) == "bad-transaction"
        assert check(seal_envelope(KEYS[1], "t", good + bytes(1232), 0)) == "oversized"
    finally:
        v.close()


def test_vote_for_unknown_slot_waits_and_makes_node_behind(tmp_path: Path) -> None:
    from ambient_p2p.core.consensus import Vote
    from ambient_p2p.core.messages import sign_message

    v = _validator(tmp_path)
    try:
        assert not v.behind()
        vote = sign_message(Vote(KEYS[1].pubkey, 7, bytes(32), None, 0, bytes(64)), KEYS[1], "vote")
        v.count_vote(vote)
        assert 7 in v.dups.pending and v.behind()
    finally:
        v.close()


def test_losing_duplicate_version_is_dumped_and_the_confirmed_one_repaired(tmp_path: Path) -> None:
    """This node holds version A of slot 1 (an equivocating leader sent it A only); the
    cluster built slot 2 on version B, so slot 2 dies here. Once > 52% of LStake votes for
    B's bank hash at slot 1, the node dumps A (blockstore and memory), revives slot 2, and
    wants slot 1 again; repair then brings B and both replay (agave's dump and repair)."""
    from ambient_p2p.core.consensus import Vote
    from ambient_p2p.core.messages import sign_message

    v = _validator(tmp_path)
    try:
        g = v.genesis
        book = ScheduleBook(g)
        users = user_keypairs(g.chain_id)
        lead1 = next(k for k in KEYS if k.pubkey == book.leader(1))
        lead2 = next(k for k in KEYS if k.pubkey == book.leader(5))  # another leader turn
        a = build_slot(lead1, g, 0, _root(g), 1)
        b = build_slot(lead1, g, 0, _root(g), 1, [transfer_tx(users[0], users[1].pubkey, 3, g.hash())])
        b5 = build_slot(lead2, g, 1, b.result, 5)
        hash_b = b.record.bank_hash
        assert hash_b != a.record.bank_hash
        trio.run(v.ingest_shreds, a.packets)
        trio.run(v.ingest_shreds, b5.packets)
        assert v.cons.bank_hashes[1] == a.record.bank_hash and v.slots.is_dead(5)  # built on B: dies here
        voters = [k for k in KEYS if k.pubkey != v.kp.pubkey]
        for i, k in enumerate(voters):
            v.count_vote(sign_message(Vote(k.pubkey, 1, hash_b, None, 10 + i, bytes(64)), k, "vote"))
            assert v.stats.dumped == (1 if i >= 2 else 0)  # 2/4 = 50% is not > 52%; 3/4 is
        assert v.bs.slot_meta(1) is None and 1 not in v.banks and 1 not in v.cons.bank_hashes
        assert not v.slots.is_dead(5) and v.bs.dead_slot(5) is None
        assert 1 in repair_plan(v)[0] and v.behind()  # repair will fetch it; no voting meanwhile
        trio.run(v.ingest_shreds, b.packets)  # what repair returns: the confirmed version
        assert v.banks[1].bank.bank_hash == hash_b and v.banks[5].bank.bank_hash == b5.record.bank_hash
        assert all(v.cons.forkchoice.latest_vote[k.pubkey] == 1 for k in voters)  # the votes count now
        assert v.cons.processed_slot() == 5
    finally:
        v.close()


def test_pushed_shreds_take_the_verified_insert_path_and_replay(tmp_path: Path) -> None:
    from ambient_p2p.node.repair import ShredPush

    v = _validator(tmp_path)
    try:
        g = v.genesis
        book = ScheduleBook(g)
        leader = next(k for k in KEYS if k.pubkey == book.leader(1))
        built = build_slot(leader, g, 0, _root(g), 1)
        data = [p for p in built.packets if len(p) == DATA_PAYLOAD_BYTES]
        ack = trio.run(v.handle_push, None, ShredPush(7, tuple(data)))
        assert (ack.nonce, ack.inserted, ack.rejected) == (7, len(data), 0)
        assert v.banks[1].bank.bank_hash == built.record.bank_hash
        impostor = next(k for k in KEYS if k.pubkey != book.leader(2))
        forged = build_slot(impostor, g, 1, v.banks[1], 2)  # not slot 2's leader
        ack = trio.run(v.handle_push, None, ShredPush(8, tuple(p for p in forged.packets if len(p) == DATA_PAYLOAD_BYTES)))
        assert ack.inserted == 0 and ack.rejected > 0 and not v.slots.is_frozen(2)
    finally:
        v.close()


def test_a_node_that_replays_no_other_leaders_slots_is_isolated(tmp_path: Path) -> None:
    g = _genesis()  # 4 equal identities, 32-slot epochs: slots < 64 use genesis LStake
    (tmp_path / "v").mkdir()
    v = Validator(KEYS[0], g, tmp_path / "v", clock_ms=lambda: int(60 * slot_duration_ms(g)))
    v.load()
    try:
        cur = v.slot_at(v.clock.wall_ms())
        assert v.isolated() and v.status()["consensus"]["isolated"]
        v.ready.handle(SlotFrozen(cur - 3, v.slot_start_ms(cur - 3), own=False))  # another leader's slot
        assert not v.isolated()
    finally:
        v.close()
    (tmp_path / "lone").mkdir()
    g, now, _d, lone = _lone_validator(tmp_path / "lone", 64)
    try:
        now["ms"] = 10**6
        assert not lone.isolated()  # all LStake is ours: nobody else to hear from
    finally:
        lone.close()


def test_slot_repair_handler_serves_data_shreds_from_index(tmp_path: Path) -> None:
    from ambient_p2p.node.repair import SlotShredsRequest, slot_repair_handler

    g = _genesis()
    book = ScheduleBook(g)
    leader = next(k for k in KEYS if k.pubkey == book.leader(1))
    built = build_slot(leader, g, 0, _root(g), 1)
    with Blockstore.open(tmp_path / "bs") as bs:
        bs.insert_shreds(built.packets, book.leader)
        h = slot_repair_handler(bs)
        resp = h(None, SlotShredsRequest(1, 30, 9))  # type: ignore[arg-type]
        assert resp.nonce == 9 and resp.shreds == tuple(built.packets[30:32])
        assert h(None, SlotShredsRequest(2, 0, 1)).shreds == ()  # type: ignore[arg-type]


def test_a_dead_own_version_is_dumped_once_another_is_confirmed_and_repaired(tmp_path: Path) -> None:
    """Review A5 (agave cluster_slot_state_verifier: (Dead, DuplicateConfirmed) ->
    RepairDuplicateConfirmedVersion). An equivocating leader sent this node an invalid
    version of slot 1 (too few ticks: dead here); > 52 % of LStake votes the valid
    version's bank hash. The node purges its version, clears the dead mark, wants the slot
    again, and replays the confirmed version that repair brings."""
    from ambient_p2p.core.consensus import Vote
    from ambient_p2p.core.messages import sign_message
    from ambient_p2p.core.poh import Poh, serialize_entries
    from ambient_p2p.core.shred import make_shreds_from_data

    v = _validator(tmp_path)
    try:
        g = v.genesis
        book = ScheduleBook(g)
        lead1 = next(k for k in KEYS if k.pubkey == book.leader(1))
        parent = _root(g)
        poh = Poh(parent.last_entry_hash, g.poh.hashes_per_tick)
        entries = [poh.tick_entry() for _ in range(g.poh.ticks_per_slot - 1)]  # one tick short
        bad = make_shreds_from_data(lead1, parent.last_root, serialize_entries(entries), 1, 0, 1,
                                    g.poh.ticks_per_slot, True, 0, 0)
        good = build_slot(lead1, g, 0, parent, 1)
        trio.run(v.ingest_shreds, [x.payload for x in bad.data])
        assert v.slots.is_dead(1) and "too-few-ticks" in v.bs.dead_slot(1).reason  # type: ignore[union-attr]
        voters = [k for k in KEYS if k.pubkey != v.kp.pubkey]
        for i, k in enumerate(voters):
            v.count_vote(sign_message(Vote(k.pubkey, 1, good.record.bank_hash, None, 10 + i, bytes(64)), k, "vote"))
            assert v.stats.dumped == (1 if i >= 2 else 0)
        assert v.bs.dead_slot(1) is None and v.bs.slot_meta(1) is None and not v.slots.is_dead(1)
        assert 1 in repair_plan(v)[0] and v.behind()
        trio.run(v.ingest_shreds, good.packets)
        assert v.banks[1].bank.bank_hash == good.record.bank_hash and v.cons.processed_slot() == 1
        assert all(v.cons.forkchoice.latest_vote[k.pubkey] == 1 for k in voters)
    finally:
        v.close()


def test_voting_service_makes_the_tower_durable_before_the_vote_leaves(tmp_path: Path) -> None:
    """agave voting_service.rs: the tower on disk already holds the vote when the vote is
    handed on (own vote pool, gossip), and a full queue drops and counts instead of blocking."""
    from ambient_p2p.core.consensus import Vote
    from ambient_p2p.core.messages import sign_message
    from ambient_p2p.core.vote_program import parse_vote_transaction, vote_transaction
    from ambient_p2p.node.voting import VOTE_QUEUE_LEN, VoteOp, VotingService

    seen: list[int | None] = []

    async def on_durable(vt) -> None:  # type: ignore[no-untyped-def]
        t = read_tower(tmp_path / "tower.cbor", KEYS[0].pubkey)
        seen.append(None if t is None else t.last_voted_slot)
        assert vt.vote.slot == t.last_voted_slot  # type: ignore[union-attr]

    svc = VotingService(tmp_path / "tower.cbor", on_durable)
    tower = Tower()
    for slot in (1, 2, 3):
        tower.record_vote(slot)
        vote = sign_message(Vote(KEYS[0].pubkey, slot, bytes(32), None, 0, bytes(64)), KEYS[0], "vote")
        vt = parse_vote_transaction(vote_transaction(KEYS[0], vote, bytes(32)))
        assert svc.submit(VoteOp(tower.to_record(KEYS[0]), vt))
    trio.run(svc.drain)
    assert seen == [1, 2, 3] and svc.written == 3
    for _ in range(VOTE_QUEUE_LEN):
        svc.submit(VoteOp(tower.to_record(KEYS[0]), None))
    assert not svc.submit(VoteOp(tower.to_record(KEYS[0]), None)) and svc.dropped == 1


def test_leader_service_sleeps_to_slot_boundaries_under_a_mock_clock(tmp_path: Path) -> None:
    """The leader task on virtual time (trio MockClock): a lone validator leads every slot;
    it builds each slot once, on the previous one, waking about once per slot (no 10 ms
    polling), with the stall monitor reporting."""
    from trio.testing import MockClock

    from ambient_p2p.core import node_policy
    from ambient_p2p.node import services

    g = _genesis(n=1, slots_per_epoch=64)
    v = loaded_validator(KEYS[0], g, tmp_path / "v")
    decisions: list[int] = []
    stall: dict[str, object] = {}
    real = node_policy.leader_decision

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        decisions.append(a[1])
        return real(*a, **kw)

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(services.leader_service, v)
            n.start_soon(v.voting.run)
            n.start_soon(services.stall_monitor, v)
            await trio.sleep(20.5 * v.slot_ms / 1000)
            stall.update(v.status()["consensus"]["loop_stall_ms"])
            n.cancel_scope.cancel()

    node_policy.leader_decision = counting  # type: ignore[assignment]
    try:
        trio.run(main, clock=MockClock(autojump_threshold=0))
    finally:
        node_policy.leader_decision = real  # type: ignore[assignment]
        v.close()
    assert v.stats.produced == 20 and sorted(v.slots.own) == list(range(1, 21))
    assert decisions == list(range(1, 21))  # one decision per slot: it slept in between
    assert v.cons.tower.last_voted_slot == 20 and stall["n"] == len(v.loop_stall) > 0


def test_repair_first_step_runs_inline_without_offload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``offload=False`` (the in-process tests) repair's first step (which shreds of
    the wanted slots are stored) runs inline on the trio thread, like every other offloadable
    step: in a worker thread the MockClock's autojump would move virtual time while it runs,
    so machine load would change the interleaving."""
    from trio.testing import MockClock

    from ambient_p2p.net.reqresp import ReqRespError
    from ambient_p2p.node import services

    v = loaded_validator(KEYS[0], _genesis(n=1), tmp_path / "v")
    threaded: list[Any] = []

    async def recording(fn: Any, *args: Any, **_kw: Any) -> Any:
        threaded.append(fn)
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", recording)
    asked: list[list[int]] = []
    real_consumed = services.consumed_job

    def consumed(bs: Blockstore, slots: list[int]) -> dict[int, int | None]:
        asked.append(list(slots))
        return real_consumed(bs, slots)

    monkeypatch.setattr(services, "consumed_job", consumed)

    class SilentPeer:  # one peer that never answers a repair request
        def peers(self) -> list[str]:
            return ["p"]

        async def request(self, *_a: Any, **_kw: Any) -> Any:
            raise ReqRespError("timeout", "test")

    v.port = SilentPeer()  # type: ignore[assignment]
    monkeypatch.setattr(v, "repair_plan", lambda now_ms: ([5], None))

    async def main() -> None:
        with trio.move_on_after(3 * services.REPAIR_INTERVAL_S):
            await services.repair_service(v)

    trio.run(main, clock=MockClock(autojump_threshold=0))
    assert asked and all(a == [5] for a in asked)  # the step ran, every round
    assert threaded == []  # and never in a worker thread


def test_four_validators_in_process_finalize_one_chain_and_a_cut_node_catches_up(tmp_path: Path) -> None:
    """All services (ingest, replay, leader, repair, voting) of four validators on virtual
    time with an in-process network: they take turns as leader, vote, root the same chain;
    a node cut off for 24 slots becomes isolated (``no_vote_reason``), and
    after the cut heals repairs what it missed and roots the same chain. (It stalled about 3
    runs in 10, every node "behind" for good, until core/slots.py pruned the cut node's whole
    fork at the root instead of leaving its slots as orphans no repair could bring back:
    tests/test_slots_offfork.py.)"""
    _cut_and_heal(tmp_path)


@pytest.mark.slow
def test_cut_and_heal_survives_slow_repair_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cut-and-heal run with every repair round's worker-thread step taking up to 6 s of
    virtual time (what a loaded machine does to the real thread under the mock clock's
    autojump): before core/slots.py pruned whole forks at the root, every such run stalled
    after the heal (10 of 10 seeds, every node "behind" on phantom orphans for good)."""
    import random

    rng = random.Random(2)

    from ambient_p2p.node import services

    real = Validator._thread
    hits: list[int] = []

    async def slow_step(self: Validator, kind: str, fn: Any, *args: Any) -> Any:
        if fn is services.consumed_job:  # repair's first step (inline here: offload=False)
            hits.append(1)
            await trio.sleep(6.0 * rng.random())
        return await real(self, kind, fn, *args)

    monkeypatch.setattr(Validator, "_thread", slow_step)
    _cut_and_heal(tmp_path)
    assert hits  # the delay was exercised (a renamed or bypassed step would make this test vacuous)


def _cut_and_heal(tmp_path: Path) -> None:
    g = _genesis(n=4, slots_per_epoch=64)
    net = inproc_cluster(tmp_path, g)
    slot_s = slot_duration_ms(g) / 1000
    seen: dict[str, Any] = {}

    async def script() -> None:
        await trio.sleep(30 * slot_s)
        net.cut.add("v3")
        await trio.sleep(24 * slot_s)
        seen["cut"] = net.nodes["v3"].status()["consensus"]
        net.cut.clear()
        await trio.sleep(60 * slot_s)
        seen["end"] = statuses(net)

    try:
        run_cluster(net, script)
        cut, end = seen["cut"], seen["end"]
        # isolated (after ISOLATION_SLOTS of other leaders' slots passed unseen), so it may not vote
        assert cut["isolated"] and cut["no_vote_reason"] == "isolated"
        assert cut["finalized"] == 0  # no supermajority of reported roots reaches a cut node
        assert all(c["finalized"] > 60 for c in end.values()), {k: c["finalized"] for k, c in end.items()}
        assert not end["v3"]["isolated"] and end["v3"]["repaired_shreds"] > 0
        assert_one_rooted_chain(rooted_chains(list(net.nodes.values())))
    finally:
        net.close()


def test_four_validators_pay_epoch_rewards_identically_and_their_ledgers_verify(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """32-slot epochs, four validators on virtual time for 100 slots: the first rooted bank
    of epochs 1 and 2 pays the closing epoch's rewards (spec/rewards.md "In the bank") with
    the same bank hash on every node; the payout is the epoch's issuance split exactly
    (leader and voting shares paid in full by slots led and votes landed on the fork, the
    unearned Logit Pool share not issued, no other lamport created or lost); a full replay
    of each node's ledger (``ledger verify``) reproduces every bank hash."""
    from trio.testing import MockClock

    from ambient_p2p.cli import main
    from ambient_p2p.core.auction import INCINERATOR_ID
    from ambient_p2p.core.bank import Bank, child_bank
    from ambient_p2p.core.codec import encode
    from ambient_p2p.core.lstake import LStakeLedger, epoch_weights
    from ambient_p2p.ledger.replay import replay
    from ambient_p2p.node.services import run_services

    spe = 32
    g = _genesis(n=4, slots_per_epoch=spe)
    net = inproc_cluster(tmp_path, g)
    dirs = [v.data_dir for v in net.nodes.values()]
    slot_s = slot_duration_ms(g) / 1000

    async def main_() -> None:
        async with trio.open_nursery() as n:
            for v in net.nodes.values():
                n.start_soon(run_services, v)
            await trio.sleep(100 * slot_s)
            n.cancel_scope.cancel()

    try:
        trio.run(main_, clock=MockClock(autojump_threshold=0))
        chains = rooted_chains(list(net.nodes.values()))
    finally:
        net.close()
    top = assert_one_rooted_chain(chains)
    assert top >= 2 * spe, top  # every node rooted past the epoch-2 boundary
    common = {s: h for s, h in chains[0].items() if s <= top}

    # replay node 0's ledger as ``ledger verify`` does (schedule credited from stored roots)
    from ambient_p2p.commands.ledger import _validator_schedule
    from ambient_p2p.ledger.producer import genesis_bank
    from ambient_p2p.ledger.replay import SlotResult

    banks: dict[int, Bank] = {}
    with Blockstore.open(dirs[0] / "blockstore", read_only=True) as bs:
        leader_for_slot, on_replayed = _validator_schedule(g, bs)
        start = SlotResult(genesis_bank(g), g.hash(), g.hash(), 0, 0, 0)
        start.bank.lstake_provider = leader_for_slot.__self__.vote_weights
        banks[0] = start.bank

        def seen(slot: int, res: SlotResult) -> None:
            on_replayed(slot, res)
            banks[slot] = res.bank

        report = replay(bs, g, leader_for_slot=leader_for_slot, on_replayed=seen, start=(0, start))
    assert report.ok
    roots = sorted(s for s in common)
    weights0 = epoch_weights(g, LStakeLedger.from_genesis(g), 0)
    paid = []
    for prev, slot in zip([0, *roots], roots):
        b = banks[slot]
        assert b.bank_hash == common[slot]  # replay agrees with every node
        r = b.epoch_rewards
        if r is None:
            assert b.epoch == banks[prev].epoch
            continue
        paid.append((slot // spe, r.epoch))
        parent = banks[prev]
        lp, lead, vote = r.pools
        assert r.issuance > 0 and lp + lead + vote == r.issuance
        fork = [s for s in [0, *roots] if s < slot and banks[s].epoch == r.epoch and s > 0]
        led: dict[bytes, int] = {}
        for s in fork:
            led[banks[s].leader] = led.get(banks[s].leader, 0) + 1
        assert r.payouts[0] == {}  # no miner, no validator draw: the Logit Pool share is not issued
        assert sum(r.payouts[1].values()) == lead and set(r.payouts[1]) == set(led)
        assert sum(r.payouts[2].values()) == vote > 0 and set(r.payouts[2]) <= set(weights0)
        assert r.paid == lead + vote and r.unissued == lp
        # the boundary moves exactly ``paid`` into the earners' balances, before any transaction
        fresh = child_bank(parent, slot, b.leader, g.poh.slot_duration_us,
                           lambda e: epoch_weights(g, LStakeLedger.from_genesis(g), e) if e < 2 else None)
        assert fresh.epoch_rewards == r
        supply = {k: v for k, v in parent.accounts.items() if k != INCINERATOR_ID}
        assert sum(v for k, v in fresh.accounts.items() if k != INCINERATOR_ID) == sum(supply.values()) + r.paid
        totals = r.totals()
        assert all(fresh.balance(k) == parent.balance(k) + totals.get(k, 0) for k in set(fresh.accounts) | set(totals))
    assert paid == [(1, 0), (2, 1)]

    (tmp_path / "genesis.cbor").write_bytes(encode(g))
    for d in dirs:
        capsys.readouterr()
        assert main(["ledger", "verify", str(d), "--quiet", "--jobs", "1", "--genesis",
                     str(tmp_path / "genesis.cbor")]) == 0, capsys.readouterr().out
