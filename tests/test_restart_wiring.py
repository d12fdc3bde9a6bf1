"""The validator restarts from its newest node snapshot and keeps its ledger bounded
(spec/node.md "Ledger history: restart, snapshots, cleanup"; spec/blockstore.md "Cleanup",
"Node snapshots and restart"), with a real Blockstore, through ``Validator.aload`` and the
cleanup service, not only ``restore()``.

Issue 11's acceptance ("a node that has run 20,000 slots restarts from its snapshot in under
10 s and its ledger stays bounded by the configured history") is
``test_acceptance_validator_restarts_20000_slots`` under ``-m slow``; a 1,000-slot version
runs in the default suite."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ambient_p2p.core import readiness as rd
from ambient_p2p.core import slots as sl
from ambient_p2p.core.codec import encode
from ambient_p2p.core.consensus import Vote
from ambient_p2p.core.crypto import ZERO_SIGNATURE, Keypair
from ambient_p2p.core.finality import Finality
from ambient_p2p.core.messages import sign_message
from ambient_p2p.core.shred import shred_variant_of
from ambient_p2p.core.tower import Lockout, Tower
from ambient_p2p.core.vote_program import parse_vote_transaction
from ambient_p2p.ledger.blockstore import Blockstore
from ambient_p2p.ledger.snapshot import load_latest_node_snapshot
from ambient_p2p.net.messages import GossipEnvelope, ShredBatch
from ambient_p2p.node.leader import build_slot
from ambient_p2p.node.services import cleanup_service
from ambient_p2p.node.validator import BLOCKSTORE_DIR, TOWER_FILE, LedgerHistory, Validator

from .ledger_chain import LEADER, run_chain
from .test_node import KEYS, _genesis

#: a short history so that snapshots and cleanups happen within a few hundred slots
SHORT = LedgerHistory(keep_slots=16, snapshot_interval_slots=32, cleanup_interval_slots=16)


def _lone(tmp_path: Path, history: LedgerHistory | None = None, spe: int = 32):  # type: ignore[no-untyped-def]
    g = _genesis(n=1, slots_per_epoch=spe)
    now = {"ms": 0}
    d = tmp_path / "v"
    d.mkdir()
    v = Validator(KEYS[0], g, d, clock_ms=lambda: now["ms"], history=history)
    v.load()
    return g, now, d, v


def _reopen(g, now, d, history: LedgerHistory | None = None) -> Validator:  # type: ignore[no-untyped-def]
    v = Validator(KEYS[0], g, d, clock_ms=lambda: now["ms"], history=history)
    v.load()
    return v


async def _settle(v: Validator) -> None:
    """Let the cleanup service finish what the last root started (its purge runs in a
    worker thread that holds the ``cleanup`` limiter)."""
    await trio.testing.wait_all_tasks_blocked()
    async with v.limiters["cleanup"]:  # free once the purge thread (if any) returned
        pass
    await trio.testing.wait_all_tasks_blocked()


async def _drive(v: Validator, now: dict[str, int], n: int, *, cleanup: bool = True,
                 metas_seen: list[int] | None = None) -> None:
    """The lone validator leads every slot (tests/test_node.py's driver), with the cleanup
    service running beside it; ``metas_seen`` gets the ledger's slot count after each slot."""
    async with trio.open_nursery() as nursery:
        if cleanup:
            nursery.start_soon(cleanup_service, v)
        for _ in range(n):
            slot = v.slot_at(now["ms"]) + 1
            now["ms"] = math.ceil(v.slot_start_ms(slot))
            await v.produce(slot, v.cons.processed_slot())
            await v.voting.drain()
            await _settle(v)
            if metas_seen is not None:
                metas_seen.append(sum(1 for _m in v.bs.slot_metas()))
        nursery.cancel_scope.cancel()


def _bank_hashes(v: Validator) -> dict[int, bytes | None]:
    return {s: r.bank.bank_hash for s, r in v.banks.items()}


def test_restart_from_the_snapshot_reaches_the_state_it_stopped_in(tmp_path: Path) -> None:
    """100 slots, 32-slot epochs: root 69, a snapshot at 64.
    The restarted validator starts at 64 (it replays 36 slots, not 100) and holds the same
    banks, schedule book, LStake table, vote weights and finality counts; then it goes on
    rooting, snapshotting and counting from there."""
    g, now, d, v = _lone(tmp_path)
    trio.run(_run, v, now, 100)
    assert v.cons.finalized_slot() == 69 and v.stats.snapshots == 1 and v.bs.node_snapshot_slots() == [64]
    st = v.status()["consensus"]
    before = (_bank_hashes(v), v.book.to_state(), v.lstake_table(), dict(v.cons.stakes), v.weights_epoch,
              st["finalized_slots"], st["rooted_slots"], v.cons.tower.votes)
    packet = build_slot(KEYS[0], g, 100, v.banks[100], 101, []).packets[0]  # epoch 3
    v.close()

    v2 = Validator(KEYS[0], g, d, clock_ms=lambda: now["ms"])
    check = v2.payload_checks()["shreds"]  # the node builds its gossip checks before the load
    v2.load()
    forged = GossipEnvelope("shreds", KEYS[1].pubkey, 0, encode(ShredBatch(shreds=(packet,))), ZERO_SIGNATURE)
    assert check(forged) == "not-leader"  # the restored book knows epoch 3's leader
    assert v2.stats.restored_from == 64 and v2.stats.replayed == 100 - 64  # not from genesis
    assert v2.slots.root == v2.cons.root == 69 and v2.cons.processed_slot() == 100
    s2 = v2.status()["consensus"]
    after = (_bank_hashes(v2), v2.book.to_state(), v2.lstake_table(), dict(v2.cons.stakes), v2.weights_epoch,
             s2["finalized_slots"], s2["rooted_slots"], v2.cons.tower.votes)
    assert after == before
    assert s2["ledger"]["restored_from"] == 64 and s2["ledger"]["snapshot_slot"] == 64
    assert s2["finalized_slots"] == 69  # every rooted slot since genesis, though 1..63 did not replay
    assert v2.ready.syncing  # a tower with votes: syncing until the next decision ...
    trio.run(_run, v2, now, 60)
    assert not v2.ready.syncing  # ... which ends it: this node alone holds a supermajority
    assert v2.cons.finalized_slot() == 129 and v2.status()["consensus"]["finalized_slots"] == 129
    assert v2.bs.node_snapshot_slots() == [64, 128] and v2.stats.snapshots == 1
    assert v2.bs.roots(60) == list(range(60, 130))
    v2.close()


async def _run(v: Validator, now: dict[str, int], n: int) -> None:
    await _drive(v, now, n, cleanup=False)


@pytest.mark.parametrize("tower", ["missing", "older"])
def test_a_tower_older_than_the_snapshot_is_rooted_at_the_snapshot(tmp_path: Path, tower: str) -> None:
    """Without its tower file, or with one older than the snapshot, the consensus root is
    the snapshot's root (else nothing above the snapshot could join fork choice): the node
    replays everything above it, votes again and goes on rooting; the roots stored above
    the snapshot stay counted and credited."""
    g, now, d, v = _lone(tmp_path)
    trio.run(_run, v, now, 40)
    old_tower = (d / TOWER_FILE).read_bytes()  # root 9
    trio.run(_run, v, now, 60)
    credits = dict(v.book.vote_credits)
    v.close()
    if tower == "missing":
        (d / TOWER_FILE).unlink()
    else:
        (d / TOWER_FILE).write_bytes(old_tower)
    v2 = _reopen(g, now, d)
    assert v2.cons.root == v2.cons.tower.root == 64
    assert v2.cons.tower.votes == [] and v2.cons.processed_slot() == 100
    assert v2.stats.replayed == 36 and dict(v2.book.vote_credits) == credits  # roots 65..69 credited
    assert v2.status()["consensus"]["rooted_slots"] == 69
    trio.run(_run, v2, now, 40)
    assert v2.cons.finalized_slot() > 69 and v2.bs.roots(60) == list(range(60, v2.cons.finalized_slot() + 1))
    assert v2.status()["consensus"]["rooted_slots"] == v2.cons.finalized_slot()
    v2.close()


def test_tower_rooted_at_least() -> None:
    t = Tower([Lockout(5, 3), Lockout(9, 2), Lockout(12, 1)], 2)
    assert t.rooted_at_least(2) is t and t.rooted_at_least(0) is t and t.rooted_at_least(1) is t
    assert t.rooted_at_least(9) == Tower([Lockout(12, 1)], 9)
    assert t.rooted_at_least(20) == Tower([], 20)
    assert Tower().rooted_at_least(0) == Tower() and Tower().rooted_at_least(4) == Tower([], 4)


def test_finality_counts_rooted_slots_older_than_its_list() -> None:
    f = Finality(b"me", [64, 65, 66], older_count=63, older_max=63)
    assert f.rooted_count == 66
    stakes = {b"me": 1}
    assert f.finalized_slot(66, stakes) == 66 and f.finalized_count(66, stakes) == 66
    f.on_voter_root(b"peer", 63)
    assert f.finalized_count(63, {b"me": 1, b"peer": 5}) == 63  # cap below the list: the older ones
    f.on_rooted([67])
    assert f.rooted_count == 67
    with pytest.raises(ValueError, match="overlap"):
        Finality(b"me", [64], older_count=64, older_max=64)


def test_readiness_alone_with_a_supermajority_ends_syncing() -> None:
    r = rd.Readiness(syncing=True, started_ms=0, slot_ms=400)
    assert r.evaluate(best=7, now_mono_ms=0, pending={}) == [] and r.syncing
    assert r.evaluate(best=7, now_mono_ms=0, pending={}, alone_supermajority=True) == [rd.SyncEnded(7)]
    assert not r.syncing and r.no_vote_reason(behind=False, isolated=False) is None


def test_dead_and_own_partial_slots_above_the_snapshot_stay_so(tmp_path: Path) -> None:
    """A slot recorded dead stays dead (not replayed); a slot of ours stored only in part
    (the node stopped while publishing it) is never built again: a second version of it
    would be an equivocation. The leader skips it and builds the next slot."""
    g, now, d, v = _lone(tmp_path)
    trio.run(_run, v, now, 100)
    built = build_slot(KEYS[0], g, 100, v.banks[100], 101, [])  # the node stops while publishing it
    data = [p for p in built.packets if shred_variant_of(p).is_data]
    res = v.bs.insert_shreds(data[:1], v.book.leader, signatures_verified=True)
    assert res.inserted == 1
    v.bs.mark_dead(99, "test: recorded dead")  # 100 descends from it: dead too on replay
    v.close()
    now["ms"] += int(v.slot_ms)  # the clock is in slot 101 now

    v2 = _reopen(g, now, d)
    assert v2.produced_before == set(range(70, 102))  # ours, stored above the root
    assert v2.slots.is_dead(99) and v2.slots.is_dead(100) and v2.cons.processed_slot() == 98
    assert v2.stats.replayed == 98 - 64
    trio.run(v2.produce, 101, 98)
    assert v2.stats.produced == 0 and v2.bs.duplicate_proof(101) is None  # not built again
    now["ms"] += int(v2.slot_ms)
    trio.run(v2.produce, 102, 98)
    assert v2.stats.produced == 1 and v2.slots.is_frozen(102) and v2.cons.processed_slot() == 102
    v2.close()


def test_cleanup_keeps_the_ledger_bounded_while_the_validator_runs_and_it_restarts(tmp_path: Path) -> None:
    """Keep 16 slots, cleanup every 16 of root progress, a snapshot every 32: over 250
    slots the ledger never holds more than keep + interval + the unrooted tip (+ the
    snapshot lag); nothing at or above the newest snapshot is purged; the cleaned ledger
    restarts from its snapshot, counts every rooted slot, and goes on."""
    g, now, d, v = _lone(tmp_path, SHORT)
    seen: list[int] = []
    trio.run(lambda: _drive(v, now, 250, metas_seen=seen))
    bound = SHORT.keep_slots + SHORT.cleanup_interval_slots + 32 + SHORT.snapshot_interval_slots
    assert max(seen) <= bound < 250 and v.stats.cleanups >= 10
    root, snaps = v.cons.finalized_slot(), v.bs.node_snapshot_slots()
    assert root == 219 and snaps == [192]  # 160 went with the purge below its floor
    lowest = v.bs.lowest_slot()
    assert lowest is not None and v.bs.is_pruned()
    assert root - SHORT.keep_slots - SHORT.cleanup_interval_slots - 1 <= lowest <= min(root - SHORT.keep_slots,
                                                                                       snaps[-1])
    st = v.status()["consensus"]
    assert st["ledger"]["cleanups"] == v.stats.cleanups and st["ledger"]["purged_slots"] == lowest  # slots 0..lowest-1
    table = v.lstake_table()
    v.close()

    v2 = _reopen(g, now, d, SHORT)
    assert v2.stats.restored_from == 192 and v2.stats.replayed == 250 - 192
    s2 = v2.status()["consensus"]
    assert s2["finalized_slots"] == st["finalized_slots"] == 219 and v2.lstake_table() == table
    trio.run(lambda: _drive(v2, now, 40, metas_seen=seen))
    assert v2.cons.finalized_slot() == 259 and max(seen) <= bound
    assert v2.status()["consensus"]["finalized_slots"] == 259
    v2.close()


def test_nothing_is_purged_before_a_snapshot_exists(tmp_path: Path) -> None:
    _g, now, _d, v = _lone(tmp_path, LedgerHistory(keep_slots=4, snapshot_interval_slots=10**6,
                                                 cleanup_interval_slots=4))
    trio.run(lambda: _drive(v, now, 60))
    assert v.stats.cleanups > 0 and v.stats.purged_slots == 0 and not v.bs.is_pruned()
    assert v.bs.node_snapshot_slots() == [] and v.bs.lowest_slot() == 0
    v.close()


def test_a_ledger_of_another_chain_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``ambient-p2p run --validator`` on a data directory whose node snapshot belongs to
    another genesis: one ``error:`` line, exit 2, no traceback."""
    from ambient_p2p.cli import main

    _g, now, d, v = _lone(tmp_path)
    trio.run(_run, v, now, 100)
    assert v.bs.node_snapshot_slots() == [64]  # else the node would not fail: it would run
    v.close()
    (d / TOWER_FILE).unlink()  # the CLI generates another identity in the directory
    other = _genesis(n=1, slots_per_epoch=32, hashes_per_tick=21)
    (tmp_path / "other.cbor").write_bytes(encode(other))
    capsys.readouterr()
    rc = main(["run", "--validator", "--no-rpc", "--genesis", str(tmp_path / "other.cbor"), "--ledger", str(d), "--quiet",
               "--listen", "/ip4/127.0.0.1/tcp/0"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "belongs to another chain" in lines[0], err


def test_ledger_keep_slots_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ambient_p2p.cli import main

    assert main(["run", "--ledger-keep-slots", "10", "--ledger", str(tmp_path)]) == 2
    assert "error: --ledger-keep-slots needs --validator" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--snapshot-interval-slots", "16"], "error: --snapshot-interval-slots needs --validator"),
    (["--validator", "--genesis", "G", "--snapshot-interval-slots", "0"],
     "error: --snapshot-interval-slots must be >= 1, not 0"),
    (["--ledger-keep-slots", "10"], "error: --ledger-keep-slots needs --validator"),
    (["--validator", "--genesis", "G", "--ledger-keep-slots", "-1"], "error: --ledger-keep-slots must be >= 0, not -1"),
])
def test_ledger_options_refuse_mistakes_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  args: list[str], message: str) -> None:
    from ambient_p2p.cli import main

    g = tmp_path / "g.cbor"
    g.write_bytes(encode(_genesis(n=1, slots_per_epoch=32, hashes_per_tick=21)))
    d = tmp_path / "ledger"
    argv = ["run", "--no-rpc", "--ledger", str(d), *[str(g) if a == "G" else a for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [message], err
    assert not d.exists()


# -- issue 11 acceptance through the validator --------------------------------------------
def _acceptance(tmp_path: Path, slots: int, keep: int, cleanup_interval: int, run_on: int,
                history: LedgerHistory) -> tuple[float, Validator]:
    """A ``slots``-slot ledger (tests/ledger_chain.py: the node's own slot builder, roots 32
    behind, a snapshot every 64, cleanup keeping ``keep``) opened by ``Validator.aload``:
    returns the restart's wall time (constructor + load) and the validator after it ran
    ``run_on`` more slots with its cleanup service."""
    d = tmp_path / "node"
    run = run_chain(d / BLOCKSTORE_DIR, slots, keep_slots=keep, cleanup_interval=cleanup_interval)
    assert run.tip is not None
    now = {"ms": 0}
    t0 = time.perf_counter()
    v = Validator(LEADER, run.genesis, d, clock_ms=lambda: now["ms"], history=history)
    now["ms"] = math.ceil(v.slot_start_ms(slots))  # the clock is in the chain's last slot
    v.load()
    seconds = time.perf_counter() - t0
    snap = load_latest_node_snapshot(v.bs)
    assert snap is not None and v.stats.restored_from == snap.slot >= slots - 32 - 64
    assert v.stats.replayed == slots - snap.slot  # only the slots above the snapshot replayed
    assert v.cons.processed_slot() == slots and v.banks[slots].bank.bank_hash == run.tip.bank.bank_hash
    assert v.status()["consensus"]["rooted_slots"] == run.rooted_count == run.root
    assert v.book.to_state() == run.book.to_state()  # type: ignore[union-attr]
    trio.run(lambda: _drive(v, now, run_on))
    assert v.cons.finalized_slot() == slots + run_on - 31
    return seconds, v


def _metas(bs: Blockstore) -> int:
    return sum(1 for _m in bs.slot_metas())


def test_acceptance_short_validator_restarts_from_snapshot_and_stays_bounded(tmp_path: Path) -> None:
    history = LedgerHistory(keep_slots=64, cleanup_interval_slots=32)
    seconds, v = _acceptance(tmp_path, 1000, keep=128, cleanup_interval=64, run_on=100, history=history)
    assert seconds < 10
    assert v.stats.cleanups >= 1 and _metas(v.bs) <= 64 + 32 + 64 + 32 + 1
    v.close()


@pytest.mark.slow
def test_acceptance_validator_restarts_20000_slots(tmp_path: Path) -> None:
    """Issue 11: a node that has run 20,000 slots (cleanup keeping 1,024) restarts from its
    snapshot through ``Validator.aload`` in under 10 s; then, running on with the default
    history, its own cleanup keeps the ledger bounded."""
    seconds, v = _acceptance(tmp_path, 20_000, keep=1024, cleanup_interval=512, run_on=600, history=LedgerHistory())
    print(f"validator restart after 20,000 slots: {seconds:.2f} s, replayed {v.stats.replayed} slots "
          f"from snapshot {v.stats.restored_from}; ledger {_metas(v.bs)} slots, {v.bs.disk_bytes()} bytes "
          f"after {v.stats.cleanups} cleanups")
    assert seconds < 10
    h = LedgerHistory()
    assert v.stats.cleanups >= 1 and _metas(v.bs) <= h.keep_slots + h.cleanup_interval_slots + 64 + 32 + 1
    v.close()


class _ScanAllTracker(sl.SlotTracker):
    """The state-triggered rules as first written: every FULL slot looked at after every
    event (O(full slots) per event: a 20,000-slot load from genesis took 192 s)."""

    def _settle(self) -> list[sl.Effect]:
        effects: list[sl.Effect] = []
        progress = True
        while progress:
            progress = False
            for slot in sorted(self.full):
                parent = self.parents.get(slot)
                if parent is None:
                    continue
                pst = self.state(parent)
                if pst is sl.SlotState.DEAD:
                    effects += self._die(slot, f"parent-dead: parent {parent} failed replay")
                    progress = True
                elif pst is sl.SlotState.FROZEN and self.leader_known(slot):
                    self._set(slot, sl.SlotState.REPLAYING)
                    effects.append(sl.Replay(slot, parent))
                    progress = True
        return effects


_SLOT = st.integers(1, 24)
#: (slot, parent) pairs: mostly the previous slot or a short skip back (chains form), any below
_LINK = st.tuples(_SLOT, st.one_of(st.integers(1, 3), st.integers(1, 24))).map(lambda t: (t[0], max(0, t[0] - t[1])))
_EVENT = st.one_of(
    st.builds(sl.ShredsStored, _SLOT, st.one_of(st.none(), st.integers(0, 23))),
    _LINK.map(lambda t: sl.Completed(*t)),
    _LINK.map(lambda t: sl.Completed(*t)),
    st.builds(sl.Replayed, _SLOT, st.sampled_from([b"a", b"b"])),
    st.builds(sl.ReplayFailed, _SLOT, st.just("bad")),
    st.tuples(_LINK, st.sampled_from([b"a", b"b"])).map(lambda t: sl.Produced(t[0][0], t[0][1], t[1])),
    st.builds(sl.DuplicateConfirmed, _SLOT, st.sampled_from([b"a", b"b"])),
    st.builds(sl.Rooted, st.integers(0, 12)),
    st.builds(lambda k: ("leaders", k), st.integers(0, 24)),
)


@given(st.integers(0, 24), st.lists(_EVENT, max_size=60))
@example(24, [sl.Completed(6, 5), sl.Rooted(5)])  # the root becomes frozen by the Rooted event
@example(5, [sl.Completed(7, 0), ("leaders", 24), sl.ShredsStored(9, None)])  # the leader becomes known
@settings(max_examples=500, deadline=None)
def test_incremental_settle_equals_the_full_scan(leaders_upto: int, events: list[object]) -> None:
    """core/slots.py's state-triggered rules look only at the FULL slots that became full or
    whose parent froze or died since (plus those waiting for their leader): the same effects
    and states as scanning every FULL slot after every event, for any event sequence,
    including a leader schedule that becomes known later."""
    known = {"upto": leaders_upto}  # slots above it have no known leader (yet)
    trackers = [cls(0, b"g", leader_known=lambda s: s <= known["upto"]) for cls in (sl.SlotTracker,
                                                                                  _ScanAllTracker)]
    for ev in events:
        if isinstance(ev, tuple):
            known["upto"] = ev[1]
            continue
        assert isinstance(ev, sl.Rooted | sl.ShredsStored | sl.Completed | sl.Replayed | sl.ReplayFailed
                          | sl.Produced | sl.DuplicateConfirmed)
        if isinstance(ev, sl.Completed | sl.Produced) and ev.parent >= ev.slot:
            continue
        out = []
        for t in trackers:
            try:
                out.append(t.handle(ev))
            except sl.TransitionError as exc:
                out.append([exc.reason])
        assert out[0] == out[1], ev
        assert trackers[0].states == trackers[1].states and trackers[0].full == trackers[1].full


def measure(slots: int, base: Path) -> None:  # pragma: no cover - measurement script
    """The restart of the same ``slots``-slot chain through ``Validator.aload``: from its
    newest node snapshot (cleanup keeping 1,024) against a replay from genesis (no snapshot,
    no cleanup), same run."""
    import shutil

    shutil.rmtree(base, ignore_errors=True)
    for name, keep, interval in (("snapshot", 1024, None), ("genesis", None, 10**9)):
        d = base / name
        kw = {} if interval is None else {"snapshot_interval": interval}
        run = run_chain(d / BLOCKSTORE_DIR, slots, keep_slots=keep, **kw)
        t0 = time.perf_counter()
        v = Validator(LEADER, run.genesis, d, clock_ms=lambda: 0)
        v.load()
        seconds = time.perf_counter() - t0
        assert run.tip is not None and v.banks[slots].bank.bank_hash == run.tip.bank.bank_hash
        print(f"{name}: Validator() + load() {seconds:.2f} s, from slot {v.stats.restored_from}, replayed "
              f"{v.stats.replayed} slots; ledger {_metas(v.bs)} slots, {v.bs.disk_bytes()} bytes")
        v.close()


if __name__ == "__main__":  # pragma: no cover
    import sys

    measure(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000, Path("/tmp/wire-restart-measure"))


# -- the tower lost (spec/tower.md "Restart without a tower", "Last vote refresh") ----------
THREE = KEYS[:3]


async def _slot(v: Validator, now: dict[str, int], g, s: int, parent: int,  # type: ignore[no-untyped-def]
                voters: list[Keypair]) -> None:
    """Slot ``s`` on ``parent``: built by its leader (this validator, or the test in the
    other nodes' names), then ``voters`` vote on it; the validator decides."""
    now["ms"] = math.ceil(v.slot_start_ms(s))
    leader = v.book.leader(s)
    if leader == v.kp.pubkey:
        await v.produce(s, parent)
    else:
        k = next(k for k in THREE if k.pubkey == leader)
        await v.ingest_shreds(build_slot(k, g, parent, v.banks[parent], s, []).packets)
    for k in voters:
        v.count_vote(sign_message(Vote(k.pubkey, s, v.banks[s].bank.bank_hash, None, now["ms"], bytes(64)), k, "vote"))
    async with v.ledger_lock:
        await v.decide()
    await v.voting.drain()


def _violations(v: Validator, old: list[Lockout], votes: list[int]) -> list[tuple[int, int]]:
    """(new vote, old vote) pairs where a new vote breaks an old lockout: it is not a
    descendant of the old vote while the old vote's lockout still runs (an oracle written
    from the lockout definition, not from core.tower)."""
    out = []
    for s in votes:
        anc, p = set(), v.slots.parent(s)
        while p is not None:
            anc.add(p)
            p = v.slots.parent(p) if p > v.slots.root else None
        out += [(s, o.slot) for o in old if o.slot not in anc and s <= o.slot + 2**o.confirmation_count]
    return out


def _fork_then_lose_the_tower(tmp_path: Path, guard: bool) -> tuple[Validator, list[Lockout], list[int]]:
    """Three nodes (this validator and two the test plays): one chain to slot 40, all voting
    on it; then the two others fork off at 38 (slot 41) and vote only on that fork, which this
    validator's lockouts keep it off. Its tower file is deleted; it restarts, and the others
    go on extending their fork. Returns (the restarted validator, its old lockouts, the slots
    it voted on after the restart, in order)."""
    g = _genesis(n=3, slots_per_epoch=128)
    now = {"ms": 0}
    d = tmp_path / "v"
    d.mkdir()
    v = Validator(KEYS[0], g, d, clock_ms=lambda: now["ms"])
    v.load()

    async def before() -> None:
        for s in range(1, 41):
            await _slot(v, now, g, s, s - 1, list(THREE[1:]))
        await _slot(v, now, g, 41, 38, list(THREE[1:]))

    trio.run(before)
    old = list(v.cons.tower.votes)
    assert old[-1].slot == 40 and v.cons.processed_slot() == 41  # the others' fork is heaviest ...
    assert v.last_no_vote_reason == "locked-out"  # ... and our lockouts keep us off it
    v.close()
    (d / TOWER_FILE).unlink()
    v2 = _reopen(g, now, d)
    assert v2.cons.tower.votes == [] and v2.cons.lost is not None and {39, 40, 41} <= set(v2.cons.lost.slots)
    if not guard:
        v2.cons.lost = None
    voted: list[int] = []

    async def after() -> None:
        for k in THREE[1:]:  # the others' latest votes, as gossip's push/pull delivers them again
            v2.count_vote(sign_message(Vote(k.pubkey, 41, v2.banks[41].bank.bank_hash, None, now["ms"], bytes(64)),
                                       k, "vote"))
        assert v2.cons.processed_slot() == 41
        async with v2.ledger_lock:
            await v2.decide()  # at once after the restart
        await v2.voting.drain()
        for s in range(42, 56):
            if (last := v2.cons.tower.last_voted_slot) is not None and last not in voted:
                voted.append(last)
            await _slot(v2, now, g, s, s - 1 if s > 42 else 41, list(THREE[1:]))
        if (last := v2.cons.tower.last_voted_slot) is not None and last not in voted:
            voted.append(last)

    trio.run(after)
    return v2, old, voted


def test_a_node_without_its_tower_never_votes_against_its_old_lockouts(tmp_path: Path) -> None:
    """Issue 16: the tower file is deleted after the node voted on slot 40 and the others
    forked off at 38. Restarted, it refuses to vote ("tower-unknown") until every vote it may
    have cast is an ancestor of the candidate or surely expired, then votes again with the
    others (and its old lockouts were never broken)."""
    v2, old, voted = _fork_then_lose_the_tower(tmp_path, guard=True)
    try:
        assert voted and _violations(v2, old, voted) == []
        # its first vote came only after the bounds on possible votes on 39 (39 + 2^2: 40
        # descends from it) and 40 (40 + 2^1) ran out
        assert voted[0] == 44
        assert voted == list(range(voted[0], 56))  # then on every slot, with the others
        assert v2.status()["consensus"]["last_vote"] == voted[-1]
    finally:
        v2.close()


def test_without_the_guard_the_same_restart_breaks_the_old_lockouts(tmp_path: Path) -> None:
    """The control: the scenario above, with the restart guard switched off, votes on the
    others' fork while its lost vote on 40 (or 39) still locks it out: the oracle sees it."""
    v2, old, voted = _fork_then_lose_the_tower(tmp_path, guard=False)
    try:
        assert voted[0] == 41 and (41, 40) in _violations(v2, old, voted)
    finally:
        v2.close()


def test_a_restarted_node_resends_its_last_vote_at_once(tmp_path: Path) -> None:
    """agave refresh_last_vote: restarted with its tower, the node re-sends the vote its
    tower last holds as soon as it replayed that slot (before it may vote anew: it is
    syncing), so that its LStake counts for its fork at once."""
    g, now, d, v = _lone(tmp_path)
    trio.run(_run, v, now, 12)
    last = v.cons.tower.last_voted_slot
    tower_bytes = (d / TOWER_FILE).read_bytes()
    v.close()
    v2 = _reopen(g, now, d)
    sent: list[bytes] = []

    class Port:
        async def publish(self, topic: str, data: bytes) -> None:
            sent.append(data)

    v2.port = Port()  # type: ignore[assignment]

    async def main() -> None:
        async with v2.ledger_lock:
            await v2.decide()
        await v2.voting.drain()

    try:
        assert v2.ready.syncing and v2.cons.forkchoice.latest_vote.get(KEYS[0].pubkey) != last
        trio.run(main)
        (raw,) = sent
        vt = parse_vote_transaction(raw)
        assert vt.vote.slot == last and vt.vote.voter == KEYS[0].pubkey
        assert vt.vote.bank_hash == v2.banks[last].bank.bank_hash
        assert v2.cons.forkchoice.latest_vote[KEYS[0].pubkey] == last and v2.vote_pool.get(KEYS[0].pubkey) == vt
        assert (d / TOWER_FILE).read_bytes() == tower_bytes  # the tower is unchanged
        assert v2.stats.votes_refreshed == 1 and v2.status()["consensus"]["votes_refreshed"] == 1
        trio.run(main)
        assert len(sent) == 1  # once
    finally:
        v2.close()
