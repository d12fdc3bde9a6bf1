"""PoH recorder (core/poh_recorder.py): tick / hash / record with agave's semantics, the
max tick height, the one-shot construction and the pacing arithmetic."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core.poh import Entry, Poh, check_slot_ticks, hash_transactions, verify_entries
from ambient_p2p.core.poh_recorder import MaxHeightReached, PohRecorder, record_slot_entries


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def fake_tx(seed: int, nsig: int = 1) -> bytes:
    """Smallest framing-valid legacy transaction with ``nsig`` distinct signatures (the core
    only reads signatures and lengths, spec/poh.md "Transaction framing")."""
    sigs = b"".join(sha(f"{seed}/{i}".encode()) * 2 for i in range(nsig))
    return bytes([nsig]) + sigs + bytes([nsig, 0, 0]) + bytes([1]) + sha(b"key") + sha(b"blockhash") + bytes([0])


# An op is ("hash", n) | ("tick",) | ("record", batch).
Op = tuple[Any, ...]

ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("hash"), st.integers(0, 40)),
        st.tuples(st.just("tick")),
        st.tuples(st.just("record"), st.lists(st.integers(0, 10_000), min_size=1, max_size=3)),
    ),
    max_size=40,
)


def reference(start: bytes, hpt: int, tps: int, gap: int, ops: Sequence[Op]) -> tuple[list[Entry], list[int]]:
    """An independent model written from the spec with plain hashlib: returns the slot's
    entries (completed with ticks) and the indices of the ops that must be refused."""
    h, since, in_tick, ticks = start, 0, 0, 0
    max_ticks = tps * gap
    out: list[Entry] = []
    refused: list[int] = []

    def do_tick() -> None:
        nonlocal h, since, in_tick, ticks
        left = hpt - in_tick  # includes the tick's own hash
        for _ in range(left):
            h = sha(h)
        out.append(Entry(since + left, h))
        since, in_tick, ticks = 0, 0, ticks + 1

    for i, op in enumerate(ops):
        if ticks == max_ticks:
            refused.append(i)
            continue
        if op[0] == "hash":
            k = min(op[1], hpt - 1 - in_tick)
            for _ in range(k):
                h = sha(h)
            since += k
            in_tick += k
        elif op[0] == "tick":
            do_tick()
        else:
            txs = tuple(fake_tx(s) for s in op[1])
            while in_tick == hpt - 1 and ticks < max_ticks:  # only the tick's hash is left: tick, retry
                do_tick()
            if ticks == max_ticks:
                refused.append(i)
                continue
            h = sha(h + hash_transactions(txs))
            out.append(Entry(since + 1, h, txs))
            since, in_tick = 0, in_tick + 1
    while ticks < max_ticks:
        do_tick()
    return out, refused


def run_recorder(rec: PohRecorder, ops: Sequence[Op]) -> tuple[list[Entry], list[int]]:
    refused = []
    for i, op in enumerate(ops):
        try:
            if op[0] == "hash":
                rec.hash(op[1])
            elif op[0] == "tick":
                rec.tick()
            else:
                rec.record_transactions([fake_tx(s) for s in op[1]])
        except MaxHeightReached:
            refused.append(i)
    while not rec.complete:
        rec.tick()
    return rec.take_entries(), refused


@settings(max_examples=300, deadline=None)
@given(
    start=st.binary(min_size=32, max_size=32),
    hpt=st.integers(1, 12),
    tps=st.integers(1, 4),
    gap=st.integers(1, 3),
    ops=ops_strategy,
)
def test_recorder_matches_reference_and_verifies(start: bytes, hpt: int, tps: int, gap: int, ops: list[Op]) -> None:
    rec = PohRecorder(start, hpt, tps, slot=10 + gap, parent_slot=10)
    got, refused = run_recorder(rec, ops)
    want, want_refused = reference(start, hpt, tps, gap, ops)
    assert got == want
    assert refused == want_refused
    check_slot_ticks(got, hpt, tps * gap)  # raises on a bad shape
    assert verify_entries(start, got, max_hashes_per_entry=hpt) is None
    assert rec.current_hash == got[-1].hash
    assert rec.tick_height == rec.max_tick_height == tps * gap
    assert sum(e.num_hashes for e in got) == rec.total_hashes == hpt * tps * gap


def one_shot_like_build_slot(start: bytes, hpt: int, tps: int, gap: int, batches: list[list[bytes]]) -> list[Entry]:
    """The loop of node/leader.py ``build_slot`` at 2f46f69, verbatim in substance."""
    poh = Poh(start, hpt)
    left = list(batches)
    entries: list[Entry] = []
    for _t in range(tps * gap):
        for _ in range(max(0, hpt - 1)):
            if not left:
                break
            e = poh.record_entry(left[0])
            if e is None:
                break
            entries.append(e)
            left.pop(0)
        entries.append(poh.tick_entry())
    if left:
        raise ValueError("did not fit")
    return entries


@settings(max_examples=200, deadline=None)
@given(
    start=st.binary(min_size=32, max_size=32),
    hpt=st.integers(1, 10),
    tps=st.integers(1, 4),
    gap=st.integers(1, 3),
    seeds=st.lists(st.lists(st.integers(0, 10_000), min_size=1, max_size=4), max_size=12),
)
def test_one_shot_equals_build_slot_construction(
    start: bytes, hpt: int, tps: int, gap: int, seeds: list[list[int]]
) -> None:
    batches = [[fake_tx(s) for s in b] for b in seeds]
    try:
        want = one_shot_like_build_slot(start, hpt, tps, gap, batches)
    except ValueError:
        with pytest.raises(MaxHeightReached):
            record_slot_entries(start, hpt, tps, 10 + gap, 10, batches)
        return
    assert record_slot_entries(start, hpt, tps, 10 + gap, 10, batches) == want


def test_record_is_refused_at_max_height_and_a_forced_tick_comes_first() -> None:
    start = bytes(32)
    rec = PohRecorder(start, 3, 2, slot=5, parent_slot=4)
    tx = [fake_tx(1)]
    r1 = rec.record_transactions(tx)
    r2 = rec.record_transactions(tx)
    assert (r1.num_hashes, r2.num_hashes) == (1, 1)
    assert rec.tick_due
    r3 = rec.record_transactions(tx)  # forces the first tick, then records after it
    out = rec.take_entries()
    assert [e.is_tick for e in out] == [False, False, True, False]
    assert out[2].num_hashes == 1
    assert out[3] == r3
    assert rec.tick_height == 1
    rec.hash(100)  # stops one short of the tick
    assert rec.tick_due
    assert rec.hashes_in_tick == 2
    with pytest.raises(MaxHeightReached) as exc:
        rec.record_transactions(tx)  # the forced tick is the slot's last: refused
    assert exc.value.reason == "max-height-reached"
    assert exc.value.slot == 5
    assert rec.complete
    assert [e.is_tick for e in rec.take_entries()] == [True]
    for op in (lambda: rec.tick(), lambda: rec.hash(1), lambda: rec.record_transactions(tx)):
        with pytest.raises(MaxHeightReached):
            op()
    assert rec.take_entries() == []  # nothing produced after the max height


def test_recorder_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PohRecorder(b"short", 4, 2, slot=2, parent_slot=1)
    with pytest.raises(ValueError, match="above its parent"):
        PohRecorder(bytes(32), 4, 2, slot=1, parent_slot=1)
    with pytest.raises(ValueError, match="hashes_per_tick"):
        PohRecorder(bytes(32), 0, 2, slot=2, parent_slot=1)
    rec = PohRecorder(bytes(32), 4, 2, slot=2, parent_slot=1)
    with pytest.raises(ValueError, match="needs transactions"):
        rec.record(bytes(32), [])  # an entry without transactions would be a tick
    with pytest.raises(ValueError, match="mixin"):
        rec.record(bytes(31), [fake_tx(0)])
    with pytest.raises(ValueError, match="max_num_hashes"):
        rec.hash(-1)
    assert rec.take_entries() == []
    assert rec.total_hashes == 0


@settings(max_examples=100, deadline=None)
@given(hpt=st.integers(1, 50), tps=st.integers(1, 4), dur=st.integers(1, 10**7), origin=st.integers(0, 10**12),
       batch=st.integers(1, 64))
def test_pacing_is_monotone_and_ticks_land_on_their_due_time(hpt: int, tps: int, dur: int, origin: int,
                                                            batch: int) -> None:
    rec = PohRecorder(bytes(32), hpt, tps, slot=2, parent_slot=1)
    last = origin
    while not rec.complete:
        due = rec.next_due_ns(origin, dur)
        assert due >= last
        last = due
        if rec.tick_due:
            assert due == rec.tick_due_ns(origin, dur) == origin + (rec.tick_height + 1) * dur
            rec.tick()
        else:
            assert due == origin + -(-rec.total_hashes * dur // hpt)
            assert rec.hashes_due_by(origin, dur, due) >= 1  # several hashes may share a due time
            assert rec.hashes_due_by(origin, dur, due - 1) == 0
            assert due <= rec.tick_due_ns(origin, dur)
            rec.hash(batch)
    assert last == origin + tps * dur
