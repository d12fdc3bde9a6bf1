"""Node snapshots (ledger/snapshot.py) and restart from them (ledger/restore.py): the record
round-trips and rejects inconsistent state; a node restarted from its snapshot reaches the
same banks, schedule book and finality count as one that never stopped, quickly, on a
cleaned ledger; the acceptance run (20,000 slots, restart < 10 s) under -m slow."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from ambient_p2p.core import codec
from ambient_p2p.core.codec import DecodeError
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.lstake import WorkKind, epoch_of
from ambient_p2p.core.schedule import ScheduleBook
from ambient_p2p.ledger.blockstore import Blockstore, slot_key
from ambient_p2p.ledger.cleanup import DEFAULT_KEEP_SLOTS
from ambient_p2p.ledger.restore import RestoreError, restore
from ambient_p2p.ledger.snapshot import (
    MAX_NODE_SNAPSHOTS,
    SNAPSHOT_INTERVAL_SLOTS,
    NodeSnapshot,
    load_latest_node_snapshot,
    load_node_snapshot,
    snapshot_due,
)

from .ledger_chain import LEADER, ROOT_LAG, census, chain_genesis, restart, run_chain

OTHER = Keypair.deterministic("snapshot-other")


def test_snapshot_due_at_interval_boundaries() -> None:
    assert snapshot_due(63, 64, 64) and not snapshot_due(64, 127, 64) and snapshot_due(100, 300, 64)
    assert not snapshot_due(5, 5, 64)


def _book(genesis, through: int) -> ScheduleBook:  # type: ignore[no-untyped-def]
    book = ScheduleBook(genesis)
    for s in range(1, through + 1):
        book.on_rooted([s], s, lambda s: [LEADER.pubkey] if s % 3 == 0 else [])
    book.ledger.credit(OTHER.pubkey, epoch_of(through, book.spe), WorkKind.INFERENCE_TOKENS, 7)
    book.ledger.slash(LEADER.pubkey, epoch_of(through, book.spe), 5)
    return book


def test_schedule_book_state_round_trip() -> None:
    genesis = chain_genesis()
    through = 12 * 256 + 17
    book = _book(genesis, through)
    again = ScheduleBook.from_state(genesis, book.to_state())
    assert again.to_state() == book.to_state()
    assert again.credited_through == through and again.leader_credits == book.leader_credits
    assert again.vote_credits == book.vote_credits and sum(again.vote_credits.values()) > 0
    root_epoch = epoch_of(through, book.spe)
    for e in range(root_epoch - 1, root_epoch + 3):
        assert again.schedule(e) == book.schedule(e), e
        assert again.vote_weights(e) == book.vote_weights(e), e
    # the state is pruned to the root's epoch: fewer buckets than the live book holds
    assert len(book.to_state().lstake) < len(book.ledger.buckets())


def test_node_snapshot_record_round_trip_and_checks(tmp_path: Path) -> None:
    run = run_chain(tmp_path / "l", 150, keep_slots=None)
    with Blockstore.open(tmp_path / "l") as bs:
        snap = load_latest_node_snapshot(bs)
        assert snap is not None and snap.slot == 64 * (run.root // 64)
        assert codec.message_type_of(NodeSnapshot).type_id == 0x0108
        raw = codec.encode(snap)
        assert codec.decode(raw, NodeSnapshot) == snap and len(raw) < 64 * 1024
        assert snap.rooted_slots == snap.slot and snap.genesis_hash == run.genesis.hash()
        bad_bank = replace(snap.bank, slot=snap.slot + 1)
        with pytest.raises(ValueError, match="bank of slot"):
            replace(snap, bank=bad_bank)
        # a stored record that breaks an invariant is refused on load, with a reason
        forged = replace(snap)
        object.__setattr__(forged, "schedule", replace(snap.schedule, credited_through=snap.slot - 1))
        bs.put_node_snapshot(snap.slot + 1000, codec.encode(forged))
        with pytest.raises(DecodeError) as exc:
            load_node_snapshot(bs, snap.slot + 1000)
        assert exc.value.reason == "invalid-value"


def test_only_the_newest_snapshots_are_kept(tmp_path: Path) -> None:
    run = run_chain(tmp_path / "l", 5 * SNAPSHOT_INTERVAL_SLOTS + ROOT_LAG + 1, keep_slots=None)
    assert run.snapshots == 5
    with Blockstore.open(tmp_path / "l", read_only=True) as bs:
        slots = bs.node_snapshot_slots()
    assert slots == [4 * SNAPSHOT_INTERVAL_SLOTS, 5 * SNAPSHOT_INTERVAL_SLOTS][-MAX_NODE_SNAPSHOTS:]


def _never_stopped(genesis, slots: int):  # type: ignore[no-untyped-def]
    """The schedule book and rooted count of a node that ran the whole chain."""
    book = ScheduleBook(genesis)
    for r in range(1, slots - ROOT_LAG + 1):
        book.on_rooted([r], r, lambda _s: [])
    return book, slots - ROOT_LAG


def test_restart_from_snapshot_on_a_cleaned_ledger(tmp_path: Path) -> None:
    """2,000 slots, keep 256: the restart reads the snapshot, replays only the slots above it
    and reaches the tip bank of the node that never stopped, the same schedule book and the
    same rooted-slot count; well under the 10 s budget."""
    slots = 2_000
    run = run_chain(tmp_path / "l", slots, keep_slots=256, cleanup_interval=256)
    r, frozen, t_restore, t_replay = restart(tmp_path / "l", run.genesis)
    assert r.snapshot is not None and r.root == SNAPSHOT_INTERVAL_SLOTS * (run.root // SNAPSHOT_INTERVAL_SLOTS)
    assert r.above.replay == list(range(r.root + 1, slots + 1)) and r.above.dead == []
    assert r.roots_above == list(range(r.root + 1, run.root + 1))
    assert r.above.produced == list(range(r.root + 1, slots + 1))  # all ours: never produce them again
    assert run.tip is not None and frozen[slots].bank.bank_hash == run.tip.bank.bank_hash
    assert frozen[slots].bank.state_hash() == run.tip.bank.state_hash()
    assert r.rooted_count == run.rooted_count
    book, rooted = _never_stopped(run.genesis, slots)
    assert r.rooted_count == rooted
    assert r.book.credited_through == book.credited_through == run.root
    assert r.book.to_state() == book.to_state()
    assert len(r.above.replay) <= SNAPSHOT_INTERVAL_SLOTS + ROOT_LAG
    assert t_restore + t_replay < 10.0, (t_restore, t_replay)
    per_cf, _bytes = census(tmp_path / "l")
    assert per_cf["meta"] <= 256 + 256 + ROOT_LAG + 1


def test_restore_without_snapshot_starts_from_genesis(tmp_path: Path) -> None:
    run = run_chain(tmp_path / "l", 40, keep_slots=None)  # rooted up to 8: no snapshot yet
    with Blockstore.open(tmp_path / "l", read_only=True) as bs:
        r = restore(bs, run.genesis, OTHER.pubkey)
    assert r.snapshot is None and r.root == 0 and r.rooted_count == 0
    assert r.result.last_entry_hash == run.genesis.hash() and r.result.bank.slot == 0
    assert r.above.replay == list(range(1, 41)) and r.roots_above == list(range(0 + 1, 9))
    assert r.above.produced == []  # OTHER led no slot
    _r, frozen, _a, _b = restart(tmp_path / "l", run.genesis)
    assert run.tip is not None and frozen[40].bank.bank_hash == run.tip.bank.bank_hash


def test_restore_refuses_another_chain_and_a_pruned_ledger_without_snapshot(tmp_path: Path) -> None:
    run = run_chain(tmp_path / "l", 200, keep_slots=64, cleanup_interval=64)
    from ambient_p2p.devnet.genesis import ledger_genesis

    with Blockstore.open(tmp_path / "l") as bs:
        with pytest.raises(RestoreError, match="another chain"):
            restore(bs, ledger_genesis(), LEADER.pubkey)
        for s in bs.node_snapshot_slots():
            bs._write({}, [("node_snapshots", slot_key(s))])
        with pytest.raises(RestoreError, match=f"history pruned below slot {bs.lowest_slot()}"):
            restore(bs, run.genesis, LEADER.pubkey)


def test_a_dead_slot_above_the_snapshot_is_reported_not_replayed(tmp_path: Path) -> None:
    run = run_chain(tmp_path / "l", 120, keep_slots=None)
    with Blockstore.open(tmp_path / "l") as bs:
        bs.mark_dead(110, "bad-poh: test")
        r = restore(bs, run.genesis, LEADER.pubkey)
    assert r.root == 64 and 110 in r.above.dead and 110 not in r.above.replay and 111 in r.above.replay


@pytest.mark.slow
def test_acceptance_20000_slots_restart_under_10s_and_bounded_ledger(tmp_path: Path) -> None:
    """issue 11: a node that has run 20,000 slots restarts from its snapshot in under 10 s
    and its ledger stays bounded by the configured history (DEFAULT_KEEP_SLOTS, cleanup every
    CLEANUP_INTERVAL_SLOTS), against the same run without cleanup."""
    slots = 20_000
    run = run_chain(tmp_path / "clean", slots, keep_slots=DEFAULT_KEEP_SLOTS)
    base = run_chain(tmp_path / "full", slots, keep_slots=None)
    t0 = time.perf_counter()
    r, frozen, t_restore, t_replay = restart(tmp_path / "clean", run.genesis)
    total = time.perf_counter() - t0
    per_cf, nbytes = census(tmp_path / "clean")
    full_cf, full_bytes = census(tmp_path / "full")
    print(f"\nrestart after {slots} slots: restore {t_restore * 1000:.1f} ms + replay of {len(r.above.replay)} slots "
          f"{t_replay:.2f} s = {total:.2f} s; ledger {per_cf['meta']} slots / {nbytes} bytes with cleanup, "
          f"{full_cf['meta']} slots / {full_bytes} bytes without")
    assert total < 10.0
    assert run.tip is not None and frozen[slots].bank.bank_hash == run.tip.bank.bank_hash
    assert r.book.to_state() == _never_stopped(run.genesis, slots)[0].to_state()
    bound = DEFAULT_KEEP_SLOTS + 512 + ROOT_LAG + 1
    for cf in ("meta", "data_shred", "code_shred", "index", "bank_hashes"):
        assert per_cf[cf] <= bound and full_cf[cf] >= slots, cf
    assert nbytes < full_bytes / 4
    assert base.book is not None and len(base.book.ledger.buckets()) <= 2 * (run.genesis.lstake.medium_window_epochs + 3)
