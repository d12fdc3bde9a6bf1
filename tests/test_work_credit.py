"""Work credits in the bank (spec/lstake.md "Work accounts in the bank") and LStake from
validated work: the API the Logit Pool calls, its rollback with the instruction, the bank
hash, snapshots, and the LStake formula's properties (bootstrap fade, forfeiture)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import auction, codec, work
from ambient_p2p.core.auction_tx import register_miner_transaction
from ambient_p2p.core.bank import Bank, work_delta_hash
from ambient_p2p.core.lstake import (
    BOOTSTRAP_FADE_UNITS,
    CREDIT_PER_VALIDATED_POSITION,
    LStakeLedger,
    WorkKind,
    schedule_for_epoch,
)
from ambient_p2p.core.schedule import ScheduleBook
from ambient_p2p.devnet.users import ledger_user_keypairs
from ambient_p2p.interop.formats.codec import sample_genesis
from ambient_p2p.ledger.meta import BankSnapshot, decode_bank_snapshot
from ambient_p2p.ledger.snapshot import bank_to_snapshot, snapshot_to_bank

U = ledger_user_keypairs(3)
LEADER = b"L" * 32
GH = b"G" * 32
MINER, VAL1, VAL2, OTHER = (bytes([i]) * 32 for i in range(1, 5))
SPE = 8


def _genesis_bank(spe: int = SPE) -> Bank:
    return Bank.genesis(GH, {U[0].pubkey: 10**12, U[1].pubkey: 10**9, U[2].pubkey: 10**9}, LEADER, GH, slots_per_epoch=spe)


def _round_trip(bank: Bank) -> Bank:
    return snapshot_to_bank(decode_bank_snapshot(codec.encode(bank_to_snapshot(bank))))


# -- the API ------------------------------------------------------------------------------
def test_credit_and_slash_update_the_account_and_the_events() -> None:
    b = _genesis_bank().child(20, LEADER)  # epoch 2
    b.credit_work(MINER, tokens_served=64)
    b.credit_work(VAL1, positions_validated=4)
    b.credit_work(MINER, tokens_served=6, positions_validated=1)
    acc = b.work_account(MINER)
    assert acc is not None and (acc.epoch, acc.tokens_served, acc.positions_validated) == (2, 70, 1)
    assert (acc.total_tokens_served, acc.total_positions_validated, acc.slashes) == (70, 1, 0)
    b.slash_work(MINER, "result-rejected")
    acc = b.work_account(MINER)
    assert acc is not None and (acc.tokens_served, acc.positions_validated, acc.slashes) == (0, 0, 1)
    assert acc.flags & work.Flag.SLASHED_THIS_EPOCH and acc.last_slash_slot == 20
    assert acc.total_tokens_served == 70  # lifetime totals stay: history is not rewritten
    assert [(e.identity, e.tokens_served, e.positions_validated, e.reason) for e in b.work_events] == [
        (MINER, 64, 0, None), (VAL1, 0, 4, None), (MINER, 6, 1, None), (MINER, 0, 0, "result-rejected")]
    assert b.work_modified == {MINER, VAL1}
    # the layout is the spec's: kind, version, identity at 80
    raw = b.work_accounts[MINER]
    assert len(raw) == work.WORK_ACCOUNT_BYTES == 128 and raw[0] == 4 and raw[1] == 1 and raw[80:112] == MINER


@pytest.mark.parametrize(("call", "match"), [
    (lambda b: b.credit_work(MINER, tokens_served=-1), "must be >= 0"),
    (lambda b: b.credit_work(b"short", tokens_served=1), "32-byte"),
    (lambda b: b.slash_work(MINER, "lazy"), "unknown slash reason"),
    (lambda b: b.slash_work(MINER, ""), "unknown slash reason"),
])
def test_bad_calls_are_refused_and_write_nothing(call: Any, match: str) -> None:
    b = _genesis_bank().child(1, LEADER)
    with pytest.raises(work.WorkError, match=match):
        call(b)
    assert b.work_accounts == {} and b.work_events == [] and not b.work_modified


def test_zero_credit_writes_nothing_and_the_bank_hashes_as_before() -> None:
    g = _genesis_bank()
    a, b = g.child(1, LEADER), g.child(1, LEADER)
    b.credit_work(MINER)
    assert b.work_accounts == {} and b.work_events == []
    assert a.freeze(b"e" * 32) == b.freeze(b"e" * 32)


def test_work_credit_enters_the_bank_hash_only_when_written() -> None:
    g = _genesis_bank()
    plain, credited, other = g.child(1, LEADER), g.child(1, LEADER), g.child(1, LEADER)
    credited.credit_work(MINER, tokens_served=5)
    other.credit_work(MINER, tokens_served=6)
    h = {plain.freeze(b"e" * 32), credited.freeze(b"e" * 32), other.freeze(b"e" * 32)}
    assert len(h) == 3
    # the component is the spec's: sha256(domain || identity || len || data)
    assert work_delta_hash({MINER: credited.work_accounts[MINER]}) != work_delta_hash({MINER: other.work_accounts[MINER]})
    # a child that writes nothing does not re-hash the parent's accounts
    c1, c2 = credited.child(2, LEADER), plain.child(2, LEADER)
    c1.freeze(b"f" * 32)
    assert not c1.work_modified and c1.work_accounts == credited.work_accounts and c2.work_accounts == {}


def test_an_instruction_error_rolls_work_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The auction program credits, then fails: accounts, events and modified set roll back,
    the fee stays (the path the Logit Pool's settlement will take)."""
    b = _genesis_bank().child(1, LEADER)
    b.credit_work(VAL2, positions_validated=1)  # an earlier, committed credit in the slot
    before = (dict(b.work_accounts), list(b.work_events), set(b.work_modified))

    def settle_then_fail(view: Any, slot: int, metas: Any, data: bytes) -> None:
        view.credit_work(MINER, tokens_served=64)
        view.credit_work(VAL2, positions_validated=4)
        view.slash_work(VAL1, "absent")
        raise auction.AuctionError("auction-bad-data", "fails after crediting")

    monkeypatch.setattr(auction, "process_instruction", settle_then_fail)
    res = b.process_transactions([register_miner_transaction(U[0], GH)])
    assert res[0].error is not None and "fails after crediting" in res[0].error
    assert (b.work_accounts, b.work_events, b.work_modified) == before

    def bad_reason(view: Any, slot: int, metas: Any, data: bytes) -> None:
        view.credit_work(MINER, tokens_served=64)
        view.slash_work(VAL1, "not-a-reason")  # a program bug: the instruction fails, replay goes on

    monkeypatch.setattr(auction, "process_instruction", bad_reason)
    res = b.process_transactions([register_miner_transaction(U[2], GH)])
    assert res[0].error is not None and res[0].error.startswith("work-credit-refused")
    assert (b.work_accounts, b.work_events, b.work_modified) == before

    def settle(view: Any, slot: int, metas: Any, data: bytes) -> None:
        view.credit_work(MINER, tokens_served=64)

    monkeypatch.setattr(auction, "process_instruction", settle)
    res = b.process_transactions([register_miner_transaction(U[1], GH)])
    assert res[0].error is None and b.work_account(MINER) is not None and len(b.work_events) == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 1000), st.integers(0, 50),
                          st.booleans()), max_size=40))
def test_counters_never_negative_totals_never_fall(ops: list[tuple[int, int, int, int, bool]]) -> None:
    ids = [MINER, VAL1, VAL2, OTHER]
    slot = 1
    bank = _genesis_bank().child(slot, LEADER)
    totals = dict.fromkeys(ids, (0, 0, 0))
    for who, dslot, tokens, positions, is_slash in sorted(ops, key=lambda o: o[1]):
        if dslot + 1 > slot:
            bank.freeze(bytes([slot % 256]) * 32)
            slot = dslot + 1
            bank = bank.child(slot, LEADER)
        if is_slash:
            bank.slash_work(ids[who], "fraud-proven")
        else:
            bank.credit_work(ids[who], tokens_served=tokens, positions_validated=positions)
        for i in ids:
            acc = bank.work_account(i)
            if acc is None:
                continue
            fields = (acc.tokens_served, acc.positions_validated, acc.slashes, acc.total_tokens_served,
                      acc.total_positions_validated, acc.total_slashes)
            assert all(f >= 0 for f in fields)
            now = (acc.total_tokens_served, acc.total_positions_validated, acc.total_slashes)
            assert all(n >= t for n, t in zip(now, totals[i], strict=True))
            assert acc.tokens_served <= acc.total_tokens_served and acc.epoch == bank.epoch
            totals[i] = now
    # and the whole state survives a snapshot round trip
    bank.freeze(b"z" * 32)
    assert _round_trip(bank).state_hash() == bank.state_hash()


# -- snapshots ---------------------------------------------------------------------------
def test_snapshot_round_trip_keeps_work_state_and_the_next_slot_hashes_the_same() -> None:
    b = _genesis_bank().child(9, LEADER)  # epoch 1
    b.credit_work(MINER, tokens_served=64)
    b.slash_work(VAL1, "accepted-fraud")
    b.freeze(b"e" * 32)
    r = _round_trip(b)
    assert (r.work_accounts, r.epoch_tally, r.tally_epoch, r.slots_per_epoch) == (
        b.work_accounts, b.epoch_tally, b.tally_epoch, b.slots_per_epoch)
    assert r.state_hash() == b.state_hash()
    n1, n2 = b.child(10, LEADER), r.child(10, LEADER)
    for n in (n1, n2):
        n.credit_work(MINER, tokens_served=1)
    assert n1.freeze(b"f" * 32) == n2.freeze(b"f" * 32)


def test_a_v3_snapshot_reads_as_no_work_state_and_is_caught_by_the_state_hash() -> None:
    import cbor2

    b = _genesis_bank().child(3, LEADER)
    b.credit_work(MINER, tokens_served=64)
    b.freeze(b"e" * 32)
    snap = bank_to_snapshot(b)
    _t, _v, body = cbor2.loads(codec.encode(snap))
    for k in ("slots_per_epoch", "work_accounts", "tally_epoch", "epoch_tally", "account_meta"):
        del body[k]
    v3 = cbor2.dumps([0x0107, 3, body], canonical=True)
    with pytest.raises(codec.DecodeError) as exc:
        codec.decode(v3, BankSnapshot)
    assert exc.value.reason == "unsupported-version"
    old = decode_bank_snapshot(v3)
    assert old.work_accounts == () and old.slots_per_epoch == 0
    assert snapshot_to_bank(old).state_hash() != b.state_hash()  # the loss shows as snapshot-mismatch
    # a v3 record that carries a v4 field is refused
    with pytest.raises(codec.DecodeError):
        decode_bank_snapshot(cbor2.dumps([0x0107, 3, {**body, "work_accounts": []}], canonical=True))


def test_snapshot_work_lists_must_be_sorted() -> None:
    from dataclasses import replace

    from ambient_p2p.ledger.meta import WorkAccountData

    b = _genesis_bank().child(3, LEADER)
    b.credit_work(MINER, tokens_served=1)
    b.credit_work(VAL1, tokens_served=1)
    b.freeze(b"e" * 32)
    snap = bank_to_snapshot(b)
    with pytest.raises(ValueError, match="sorted"):
        replace(snap, work_accounts=tuple(reversed(snap.work_accounts)))
    with pytest.raises(ValueError, match="another identity"):
        snapshot_to_bank(replace(snap, work_accounts=(WorkAccountData(OTHER, snap.work_accounts[0].data),)))


# -- LStake from work ------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10**12), st.integers(0, 10**9), st.integers(0, 10**9))
def test_bootstrap_fade_is_monotone_and_whole_without_pool_work(boot: int, p1: int, p2: int) -> None:
    g = sample_genesis(1)
    led = LStakeLedger(g.lstake, {MINER: boot})
    lo, hi = sorted((p1, p2))
    assert led.bootstrap_at(MINER, 0, 0) == boot
    assert led.bootstrap_at(MINER, 0, hi) <= led.bootstrap_at(MINER, 0, lo) <= boot
    assert led.bootstrap_at(MINER, 0, hi) == boot * BOOTSTRAP_FADE_UNITS // (BOOTSTRAP_FADE_UNITS + hi)


def test_leader_slots_and_votes_do_not_fade_the_bootstrap() -> None:
    g = sample_genesis(2)
    led = LStakeLedger.from_genesis(g)
    node = g.bootstrap_nodes[0].identity
    led.credit(node, 0, WorkKind.LEADER_SLOTS, 100)
    led.credit(node, 0, WorkKind.VOTES, 100)
    assert led.pool_work(0) == 0 and led.bootstrap_at(node, 0) == g.bootstrap_nodes[0].lstake


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 12), st.sampled_from(list(WorkKind)),
                          st.integers(0, 10**6)), max_size=30),
       st.integers(0, 2), st.integers(0, 12))
def test_forfeit_never_raises_lstake_and_zeroes_the_window(ops: list[tuple[int, int, WorkKind, int]],
                                                           who: int, at: int) -> None:
    g = sample_genesis(1)
    ids = [MINER, VAL1, VAL2]
    led = LStakeLedger(g.lstake, {})
    for i, e, kind, amount in ops:
        led.credit(ids[i], e, kind, amount)
    before = {e: led.lstake(ids[who], e) for e in range(0, 20)}
    pool_before = led.pool_work(at)
    led.forfeit(ids[who], at)
    for e in range(0, 20):
        assert 0 <= led.lstake(ids[who], e) <= before[e]
        if e < at:  # history is never rewritten: schedules fixed from older snapshots stand
            assert led.lstake(ids[who], e) == before[e]
    assert led.window_total(ids[who], at, g.lstake.medium_window_epochs) == 0
    assert led.lstake(ids[who], at) == 0
    assert led.pool_work(at) <= pool_before


def test_work_events_of_rooted_slots_become_lstake_and_a_slash_reaches_the_schedule() -> None:
    g = sample_genesis(2)
    spe = g.epoch.slots_per_epoch
    book = ScheduleBook(g)
    m = g.bootstrap_nodes[1].identity
    events = {
        2: [work.WorkEvent(m, 1000, 0), work.WorkEvent(VAL1, 0, 8)],
        spe + 3: [work.WorkEvent(m, 0, 0, "fraud-proven")],
    }
    book.on_rooted([2], 2, None, lambda s: events.get(s, []))
    assert book.ledger.window_total(m, 0, 1) >= 1000
    assert book.ledger.lstake(VAL1, 0) == 8 * CREDIT_PER_VALIDATED_POSITION
    # a replay of the same root books nothing twice
    book.on_rooted([2], 2, None, lambda s: events.get(s, []))
    assert book.ledger.lstake(VAL1, 0) == 8 * CREDIT_PER_VALIDATED_POSITION
    assert m in schedule_for_epoch(g, book.ledger, 2)
    book.on_rooted([spe + 3], spe + 3, None, lambda s: events.get(s, []))
    assert book.ledger.window_total(m, 1, g.lstake.medium_window_epochs) == 0
    # the slash rooted in epoch 1 is in the snapshot of epoch 1, which schedules epoch 3;
    # the snapshot of epoch 0 (epoch 2's schedule, already fixed) is unchanged
    assert book.ledger.lstake(m, 1) == 0 < book.ledger.lstake(m, 0)  # work and bootstrap forfeited
    assert book.ledger.lstake(m, 1 + g.lstake.medium_window_epochs) == book.ledger.bootstrap_at(m, 70) > 0
    assert m in schedule_for_epoch(g, book.ledger, 2)
    st_ = book.to_state()
    assert [(f.identity, f.epoch) for f in st_.forfeits] == [(m, 1)]
    back = ScheduleBook.from_state(g, st_)
    assert back.ledger.pool_buckets() == book.ledger.pool_buckets()
    assert back.ledger.snapshot(1) == book.ledger.snapshot(1) and back.ledger.snapshot(0) == book.ledger.snapshot(0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 30), st.sampled_from(list(WorkKind)),
                          st.integers(0, 10**5), st.booleans()), max_size=60),
       st.integers(0, 30))
def test_pruning_keeps_every_askable_answer_with_forfeits(
        ops: list[tuple[int, int, WorkKind, int, bool]], root_epoch: int) -> None:
    """Pruned and unpruned ledgers agree on every LStake and P(E) that can still be asked
    (spec/lstake.md "Pruning"), forfeits and the bootstrap rule included."""
    from ambient_p2p.core.lstake import PRUNE_MARGIN_EPOCHS, SCHEDULE_LAG_EPOCHS
    from ambient_p2p.core.messages import LStakeParams

    params = LStakeParams(2, 5, 5000, 5000)
    ids = [MINER, VAL1, VAL2]
    full, pruned = LStakeLedger(params, {MINER: 7, VAL1: 10**6}), LStakeLedger(params, {MINER: 7, VAL1: 10**6})
    for i, e, kind, amount, is_forfeit in ops:
        for led in (full, pruned):
            if is_forfeit:
                led.forfeit(ids[i], e)
            else:
                led.credit(ids[i], e, kind, amount)
    pruned.prune(root_epoch)
    for e in range(max(0, root_epoch - PRUNE_MARGIN_EPOCHS - SCHEDULE_LAG_EPOCHS), 40):
        assert pruned.snapshot(e) == full.snapshot(e), e
        assert pruned.pool_work(e) == full.pool_work(e)


def _as_v3(snap: BankSnapshot) -> bytes:
    import cbor2

    _t, _v, body = cbor2.loads(codec.encode(snap))
    for k in ("slots_per_epoch", "work_accounts", "tally_epoch", "epoch_tally", "account_meta"):
        del body[k]
    return cbor2.dumps([0x0107, 3, body], canonical=True)


def test_a_ledger_with_a_v3_bank_snapshot_still_replays_and_a_forged_one_does_not(tmp_path: Any) -> None:
    """An upgrade must not mark good slots dead: a bank snapshot written before the work
    state (v3) is compared without it when the bank has no work accounts."""
    import dataclasses

    from ambient_p2p.devnet.genesis import ledger_genesis
    from ambient_p2p.devnet.users import ledger_leader_keypair
    from ambient_p2p.ledger.blockstore import Blockstore, slot_key
    from ambient_p2p.ledger.meta import AccountBalance
    from ambient_p2p.ledger.producer import produce, read_genesis
    from ambient_p2p.ledger.replay import replay
    from ambient_p2p.ledger.snapshot import snapshot_matches

    path = tmp_path / "l"
    produce(path, 3, genesis=ledger_genesis(hashes_per_tick=4, ticks_per_slot=8), leader=ledger_leader_keypair(),
            users=ledger_user_keypairs(4), txs_per_slot=4)
    with Blockstore.open(path) as bs:
        snap = bs.latest_bank_snapshot()
        assert snap is not None and snap.slots_per_epoch > 0 and snap.epoch_tally  # the node's banks know epochs
        bs._write({("bank_snapshots", slot_key(snap.slot)): _as_v3(snap)})
        assert bs.bank_snapshot(snap.slot) is not None
        report = replay(bs, read_genesis(path))
        assert report.ok and [o.reason for o in report.outcomes] == [None, None, None]
        a = snap.accounts[0]
        forged = dataclasses.replace(snap, accounts=(AccountBalance(a.pubkey, a.lamports + 1), *snap.accounts[1:]))
        bs._write({("bank_snapshots", slot_key(snap.slot)): _as_v3(forged)})
        report = replay(bs, read_genesis(path))
        assert (report.outcomes[-1].reason or "").startswith("snapshot-mismatch")
    # a bank with work accounts is never matched by a record without them
    b = _genesis_bank().child(3, LEADER)
    b.credit_work(MINER, tokens_served=1)
    b.freeze(b"e" * 32)
    assert snapshot_matches(bank_to_snapshot(b), b)
    assert not snapshot_matches(decode_bank_snapshot(_as_v3(bank_to_snapshot(b))), b)
