"""Ledger cleanup below the root (ledger/cleanup.py) on a real RocksDB: what is purged and
what must stay, bounded size over a long run, the ledger tools on a cleaned ledger, and
LStake pruning that changes no answer that can still be asked."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.cli import main as cli_main
from ambient_p2p.core import codec
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.genesis import build_genesis
from ambient_p2p.core.lstake import (
    PRUNE_MARGIN_EPOCHS,
    SCHEDULE_LAG_EPOCHS,
    LStakeLedger,
    WorkKind,
    epoch_weights,
    schedule_for_epoch,
)
from ambient_p2p.core.messages import EpochParams, LStakeParams
from ambient_p2p.ledger.blockstore import COLUMN_FAMILIES, Blockstore, slot_key
from ambient_p2p.ledger.cleanup import (
    CLEANUP_INTERVAL_SLOTS,
    DEFAULT_KEEP_SLOTS,
    cleanup_due,
    cleanup_floor,
    purge_below,
)
from ambient_p2p.ledger.snapshot import SNAPSHOT_INTERVAL_SLOTS, load_latest_node_snapshot

from .ledger_chain import ROOT_LAG, census, run_chain
from .test_blockstore import leader_of, payloads, slot_shreds


def test_constants_are_consistent() -> None:
    # the newest snapshot is always inside the kept history, so cleanup is never held back
    assert SNAPSHOT_INTERVAL_SLOTS + ROOT_LAG < DEFAULT_KEEP_SLOTS
    assert CLEANUP_INTERVAL_SLOTS == 512  # agave DEFAULT_CLEANUP_SLOT_INTERVAL
    assert not cleanup_due(0, CLEANUP_INTERVAL_SLOTS) and cleanup_due(0, CLEANUP_INTERVAL_SLOTS + 1)


def _fill(bs: Blockstore, slots: range) -> None:
    for slot in slots:
        bs.insert_shreds(payloads(slot_shreds(slot, slot - 1, size=3_000)), leader_of)
    bs.set_roots(list(slots)[:-3])  # the last three stay unrooted


def _snapshot_at(bs: Blockstore, slot: int) -> None:
    """A placeholder node snapshot record: cleanup reads only which slots hold one."""
    bs.put_node_snapshot(slot, b"x")


def _slots_with_records(bs: Blockstore) -> dict[str, list[int]]:
    return {cf: list(bs.slots_in(cf)) for cf in COLUMN_FAMILIES}


def test_purge_below_purges_every_family_below_the_floor_and_keeps_the_rest(bs: Blockstore) -> None:
    _fill(bs, range(1, 41))
    bs.mark_dead(5, "x")
    bs.mark_dead(35, "y")
    bs._write({("duplicate_slots", slot_key(6)): b"p", ("orphans", slot_key(7)): b"\x01",
               ("bank_hashes", slot_key(8)): b"h", ("bank_snapshots", slot_key(9)): b"s"})
    _snapshot_at(bs, 10)
    _snapshot_at(bs, 30)
    before = _slots_with_records(bs)
    n = purge_below(bs, root=37, keep_slots=10)  # floor = min(27, 37, newest snapshot 30) = 27
    assert n == 27  # slots 0..26 had a meta (0: the placeholder parent of slot 1)
    after = _slots_with_records(bs)
    for cf in COLUMN_FAMILIES:
        assert after[cf] == [s for s in before[cf] if s >= 27], cf
    assert bs.node_snapshot_slots() == [30]
    assert bs.dead_slot(35) is not None and bs.slot_meta(40) is not None
    assert len(bs.slot_shred_payloads(27, data=True)) == len(bs.shred_index(27).data) > 0
    assert bs.is_pruned() and bs.lowest_slot() == 27 and bs.roots()[0] == 27


def test_purge_never_reaches_the_root_or_the_newest_snapshot(bs: Blockstore) -> None:
    _fill(bs, range(1, 21))
    assert purge_below(bs, root=15, keep_slots=0) == 0  # no snapshot yet: a restart would need genesis
    assert not bs.is_pruned()
    _snapshot_at(bs, 12)
    assert cleanup_floor(bs, 15, 0) == 12
    assert purge_below(bs, root=15, keep_slots=0) == 12  # slots 0..11
    assert bs.slot_meta(12) is not None and bs.is_root(12) and bs.node_snapshot_slots() == [12]
    _snapshot_at(bs, 18)
    assert purge_below(bs, root=15, keep_slots=0) == 3  # never past the root, even with a newer snapshot
    assert bs.lowest_slot() == 15 and bs.is_root(15)
    assert purge_below(bs, root=15, keep_slots=0) == 0  # idempotent
    with pytest.raises(ValueError, match="keep_slots"):
        purge_below(bs, root=15, keep_slots=-1)


def test_purge_catches_records_that_arrived_below_the_floor_since(bs: Blockstore) -> None:
    _fill(bs, range(1, 21))
    _snapshot_at(bs, 15)
    purge_below(bs, root=17, keep_slots=2)
    assert bs.lowest_slot() == 15
    # a late (repaired) slot far below the floor is stored again, then the next purge takes it
    bs.insert_shreds(payloads(slot_shreds(3, 2, size=3_000)), leader_of)
    assert bs.slot_meta(3) is not None
    assert purge_below(bs, root=17, keep_slots=2) == 2  # slot 3 and its placeholder parent 2
    assert bs.lowest_slot() == 15


def test_range_purge_equals_point_deletes(tmp_path: Path) -> None:
    """purge_slots' range deletes leave exactly what deleting every key one by one leaves."""
    stores = []
    for name in ("range", "point"):
        s = Blockstore.open(tmp_path / name)
        s.set_roots([0])
        _fill(s, range(1, 16))
        s.mark_dead(4, "x")
        stores.append(s)
    rng_bs, pt_bs = stores
    rng_bs.purge_slots(0, 9)
    keys = [(cf, k) for cf in COLUMN_FAMILIES for k, _v in pt_bs._iter_range(cf, 0, 10)]
    assert len(keys) > 100
    pt_bs._write({}, keys)
    for cf in COLUMN_FAMILIES:
        assert list(rng_bs._iter_all(cf)) == list(pt_bs._iter_all(cf)), cf
    for s in stores:
        s.close()


def test_slot_metas_from_a_start_slot(bs: Blockstore) -> None:
    _fill(bs, range(1, 30))
    assert [m.slot for m in bs.slot_metas(start=20)] == list(range(20, 30))
    assert [m.slot for m in bs.slot_metas(start=5, end=8)] == [5, 6, 7]
    assert [m.slot for m in bs.slot_metas()] == list(range(0, 30))
    assert bs.roots(start=20) == list(range(20, 27))
    assert (bs.lowest_slot(), bs.highest_slot(), bs.max_root()) == (0, 29, 26)


def test_read_only_open_of_a_ledger_without_the_node_snapshot_family(tmp_path: Path) -> None:
    """Ledgers written before node snapshots existed still open read-only (tools)."""
    from rocksdict import Options, Rdict

    p = tmp_path / "old" / "rocksdb"
    p.mkdir(parents=True)
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    old = [c for c in COLUMN_FAMILIES if c != "node_snapshots"]
    db = Rdict(str(p), options=opts, column_families={c: Options(raw_mode=True) for c in old})
    db.get_column_family("root").put(slot_key(0), b"\x01")
    db.close()
    with Blockstore.open(tmp_path / "old", read_only=True) as ro:
        assert ro.roots() == [0] and ro.node_snapshot_slots() == [] and ro.node_snapshot_raw(0) is None
    with Blockstore.open(tmp_path / "old") as rw:  # a writer adds the family
        rw.put_node_snapshot(3, b"x")
        assert rw.node_snapshot_slots() == [3]


def test_cleanup_keeps_the_ledger_bounded(tmp_path: Path) -> None:
    """2,000 slots, keep 256, cleanup every 256 roots: every column family holds at most
    keep + cleanup interval + the unrooted tip of slots; without cleanup, all of them."""
    slots, keep, interval = 2_000, 256, 256
    run = run_chain(tmp_path / "clean", slots, keep_slots=keep, cleanup_interval=interval)
    base = run_chain(tmp_path / "full", slots, keep_slots=None)
    per_cf, nbytes = census(tmp_path / "clean")
    full_cf, full_bytes = census(tmp_path / "full")
    bound = keep + interval + ROOT_LAG + 1
    assert run.purges >= 5 and run.purged >= slots - bound
    for cf in ("meta", "data_shred", "code_shred", "erasure_meta", "merkle_root_meta", "index", "bank_hashes"):
        assert keep + ROOT_LAG <= per_cf[cf] <= bound, (cf, per_cf[cf])
        assert full_cf[cf] >= slots, (cf, full_cf[cf])
    assert per_cf["root"] <= keep + interval and full_cf["root"] == slots - ROOT_LAG + 1
    assert per_cf["node_snapshots"] == 2 and full_cf["node_snapshots"] == 2
    assert nbytes < full_bytes * 0.5, (nbytes, full_bytes)
    # and the LStake buckets did not grow with the 7 epochs run
    assert run.book is not None and base.book is not None
    assert len({e for _i, e, _c, _s in run.book.ledger.buckets()}) <= run.genesis.lstake.medium_window_epochs + 3
    with Blockstore.open(tmp_path / "clean", read_only=True) as bs:
        snap = load_latest_node_snapshot(bs)
        assert snap is not None and bs.lowest_slot() is not None
        assert bs.lowest_slot() <= snap.slot <= run.root  # type: ignore[operator]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ledger_tools_on_a_cleaned_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_chain(tmp_path / "node" / "blockstore", 700, keep_slots=128, cleanup_interval=128)
    (tmp_path / "genesis.cbor").write_bytes(codec.encode(run.genesis))
    d = str(tmp_path / "node")
    with Blockstore.open(tmp_path / "node" / "blockstore", read_only=True) as bs:
        lowest, snaps = bs.lowest_slot(), bs.node_snapshot_slots()
        metas_above = sum(1 for _ in bs.slot_metas(start=snaps[0] + 1))
    assert lowest is not None and lowest > 0
    code, out, _err = _cli(capsys, "ledger", "verify", d, "--quiet", "--jobs", "1")
    assert code == 0, out
    assert f"history pruned below slot {lowest}" in out and f"node snapshot at slot {snaps[0]}" in out
    assert f"verified {metas_above} of {metas_above} slots" in out
    code, out, _err = _cli(capsys, "ledger", "show", d, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["pruned_below"] == lowest and shown["node_snapshots"] == snaps
    assert shown["slots"][0]["slot"] == lowest and shown["roots"][0] >= lowest
    code, _out, err = _cli(capsys, "ledger", "show", d, "--slot", "3")
    assert code == 2 and f"error: slot 3 was pruned: history is kept from slot {lowest}" in err
    # without any node snapshot left, verify refuses with the reason
    with Blockstore.open(tmp_path / "node" / "blockstore") as bs:
        bs._write({}, [("node_snapshots", slot_key(s)) for s in snaps])
    code, _out, err = _cli(capsys, "ledger", "verify", d, "--quiet", "--jobs", "1")
    assert code == 2 and err.strip() == (f"error: history pruned below slot {lowest} and no node snapshot kept: "
                                         "nothing can replay")


# ---------------------------------------------------------------------------------------
# LStake pruning
# ---------------------------------------------------------------------------------------
IDS = [Keypair.deterministic("prune-id", i).pubkey for i in range(4)]
_credit = st.tuples(st.sampled_from(IDS), st.integers(0, 40), st.sampled_from(list(WorkKind)), st.integers(0, 50),
                    st.booleans())


def _genesis(short: int, medium: int):  # type: ignore[no-untyped-def]
    return build_genesis(bootstrap=IDS[:2], creation_time_s=0, chain_id="prune", bootstrap_lstake=3,
                         epoch=EpochParams(slots_per_epoch=64, leader_slots=4),
                         lstake=LStakeParams(short, medium, 4000, 6000), model_name="none")


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(_credit, max_size=120), windows=st.tuples(st.integers(1, 4), st.integers(0, 6)),
       roots=st.lists(st.integers(0, 45), min_size=1, max_size=6))
def test_pruned_lstake_answers_every_askable_query_like_the_unpruned(
        ops: list[tuple[bytes, int, WorkKind, int, bool]], windows: tuple[int, int], roots: list[int]) -> None:
    """Credits and slashes arrive in any order; the root's epoch advances (prunes in between);
    every query that can still be asked at the last root gives the unpruned answer."""
    short, extra = windows
    genesis = _genesis(short, short + extra)
    full, pruned = LStakeLedger.from_genesis(genesis), LStakeLedger.from_genesis(genesis)
    roots = sorted(roots)
    chunks = [ops[i::len(roots)] for i in range(len(roots))]
    root_epoch = 0
    for root_epoch, chunk in zip(roots, chunks, strict=True):
        for ident, epoch, kind, amount, is_slash in chunk:
            # work is credited in epochs the root has not left behind (rooted slots, verdicts)
            epoch = max(epoch, root_epoch - PRUNE_MARGIN_EPOCHS)
            for led in (full, pruned):
                if is_slash:
                    led.slash(ident, epoch, amount)
                else:
                    led.credit(ident, epoch, kind, amount)
        pruned.prune(root_epoch)
    first = root_epoch - PRUNE_MARGIN_EPOCHS - SCHEDULE_LAG_EPOCHS
    for e in range(max(0, first), 50):
        assert pruned.snapshot(e) == full.snapshot(e), e
        for i in IDS:
            assert pruned.lstake(i, e) == full.lstake(i, e)
    for e in range(max(0, root_epoch - PRUNE_MARGIN_EPOCHS), 52):
        assert epoch_weights(genesis, pruned, e) == epoch_weights(genesis, full, e)
    assert {e for _i, e, _c, _s in pruned.buckets()} <= set(range(pruned.min_kept_epoch(root_epoch), 51))


def test_pruning_is_not_vacuous() -> None:
    """The floor is tight: one epoch older and a query that can still be asked changes."""
    genesis = _genesis(1, 3)
    led = LStakeLedger.from_genesis(genesis)
    root_epoch = 10
    floor = led.min_kept_epoch(root_epoch)
    for e in range(0, 12):
        led.credit(IDS[0], e, WorkKind.VOTES, 100 + e)
    full = LStakeLedger.from_genesis(genesis)
    for i, e, c, _s in led.buckets():
        full.restore_bucket(i, e, c, 0)
    assert led.prune(root_epoch) == floor
    ask = root_epoch - PRUNE_MARGIN_EPOCHS - SCHEDULE_LAG_EPOCHS
    assert led.lstake(IDS[0], ask) == full.lstake(IDS[0], ask)
    assert led.lstake(IDS[0], ask - 1) != full.lstake(IDS[0], ask - 1)  # no longer askable
    assert schedule_for_epoch(genesis, led, root_epoch) == schedule_for_epoch(genesis, full, root_epoch)
    rnd = random.Random(0)
    assert led.lstake(IDS[0], ask + rnd.randint(0, 5)) > 0


def test_purge_in_a_worker_thread_while_inserts_go_on(bs: Blockstore) -> None:
    """The cleanup service purges from a worker thread while the node inserts: no error, and
    every slot at or above the last floor is complete afterwards."""
    import threading

    batches = {slot: payloads(slot_shreds(slot, slot - 1, size=2_000)) for slot in range(1, 241)}
    inserted = [0]
    errors: list[BaseException] = []
    done = threading.Event()

    def cleaner() -> None:
        try:
            while not done.is_set():
                top = inserted[0]
                if top > 40:
                    _snapshot_at(bs, top - 20)
                    purge_below(bs, root=top - 20, keep_slots=10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    t = threading.Thread(target=cleaner)
    t.start()
    try:
        for slot, packets in batches.items():
            res = bs.insert_shreds(packets, leader_of)
            assert not res.rejected
            inserted[0] = slot
    finally:
        done.set()
        t.join()
    assert not errors, errors
    assert (bs.lowest_slot() or 0) > 0  # the cleaner did purge while inserts ran
    _snapshot_at(bs, 220)
    floor = cleanup_floor(bs, 220, 10)
    purge_below(bs, root=220, keep_slots=10)
    assert floor == 210 and bs.lowest_slot() == 210
    for slot in range(floor + 1, 241):
        m = bs.slot_meta(slot)
        assert m is not None and m.is_full and len(bs.shred_index(slot).data) == m.consumed, slot
