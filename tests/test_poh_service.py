"""The PoH service (node/poh_service.py): pacing under trio's MockClock (inline mode), late
reporting, max height and restart, one short real-time run of the process worker, and a
slot recorded by the service that replays like a slot from ``build_slot``.

``.venv/bin/python -m tests.test_poh_service --measure 5`` prints the event-loop stall figures of
spec/poh.md (thread vs process worker)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.messages import PohParams
from ambient_p2p.core.poh import Entry, check_slot_ticks, verify_entries
from ambient_p2p.core.poh_recorder import MaxHeightReached, record_slot_entries
from ambient_p2p.core.schedule import ScheduleBook
from ambient_p2p.devnet.genesis import localnet_genesis as validator_genesis
from ambient_p2p.devnet.users import user_keypairs
from ambient_p2p.ledger.blockstore import Blockstore
from ambient_p2p.ledger.producer import genesis_bank, transfer_tx
from ambient_p2p.ledger.replay import SlotResult, replay_slot
from ambient_p2p.node.leader import build_slot
from ambient_p2p.node.poh_service import (
    PohLoop,
    PohService,
    SlotStreamer,
    SlotSuperseded,
    build_slot_from_entries,
    record_slot,
)
from tests.test_poh_recorder import fake_tx

MS = 1_000_000  # ns


def run_mock(fn: Callable[[], Awaitable[None]]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


# ---------------------------------------------------------------------------------------
# Pacing on trio's virtual clock
# ---------------------------------------------------------------------------------------
def test_ticks_are_published_on_their_due_time_and_records_land_where_the_clock_is() -> None:
    hpt, tps, tick_us = 50, 4, 10_000  # 0.2 ms per hash

    async def main() -> None:
        async with PohService.open(PohParams(hpt, tps, tick_us), mode="inline", hashes_per_batch=1) as poh:
            origin = poh.clock_ns()
            poh.start_slot(7, 6, bytes(32), origin_ns=origin)
            await trio.sleep(0.0251)  # 25.1 ms: hashes done at 0.0, 0.2, ..., 25.0 ms
            entry = await poh.record(7, [fake_tx(1)])
            assert entry is not None
            # 2 ticks (10, 20 ms), then hashes at 20.0 .. 25.0 ms (26 of them), then the record
            assert entry.num_hashes == 27
            entries = await poh.slot_entries(7)
            assert poh.clock_ns() == origin + tps * tick_us * 1000  # the slot took its 40 ms
            times = poh.publish_times_ns(7)
            ticks = [t for e, t in zip(entries, times, strict=True) if e.is_tick]
            assert ticks == [origin + k * tick_us * 1000 for k in range(1, tps + 1)]
            check_slot_ticks(entries, hpt, tps)
            assert verify_entries(bytes(32), entries) is None
            st = poh.stats(7)
            assert st is not None
            assert st.late_ticks == 0
            assert st.records == 1
            assert st.ticks == tps
            assert poh.late_reports == 0
            # it waited between hashes instead of spinning: the whole slot was idle time
            assert st.idle_ns == tps * tick_us * 1000

    run_mock(main)


def test_a_slot_started_after_its_origin_catches_up_without_calling_it_late() -> None:
    hpt, tps, tick_us = 20, 8, 5_000

    async def main() -> None:
        async with PohService.open(PohParams(hpt, tps, tick_us), mode="inline") as poh:
            now = poh.clock_ns()
            poh.start_slot(3, 2, bytes(32), origin_ns=now - 5 * tick_us * 1000)  # 5 ticks already due
            entries = await poh.slot_entries(3)
            st = poh.stats(3)
            assert st is not None
            assert st.catchup_ticks == 5  # ticks 1..5 come out at once, at `now`
            assert st.late_ticks == 0
            assert poh.late_reports == 0
            times = [t for e, t in zip(entries, poh.publish_times_ns(3), strict=True) if e.is_tick]
            assert times[:5] == [now] * 5
            assert times[5:] == [now + k * tick_us * 1000 for k in (1, 2, 3)]
            assert verify_entries(bytes(32), entries) is None

    run_mock(main)


def test_a_worker_that_got_no_cpu_reports_its_late_ticks_once() -> None:
    """The loop is sans-IO in time: feed it the times a starved worker would see."""
    tick = 10 * MS
    loop = PohLoop(hashes_per_batch=1_000)
    assert loop.handle(("start", 1, 2, 1, bytes(32), 10, 6, tick, 0), 0) == []
    assert loop.wait_ns(0) == 0
    loop.step(0)  # hashes due by 1 ms: 2 of tick 1's 10
    assert loop.wait_ns(0) == 2 * MS // 10 * 10  # next hash due at 2 ms
    events = loop.step(35 * MS)  # starved until 35 ms: catch up the hashes of tick 1
    assert events == []
    events = loop.step(35 * MS)  # tick 1 (due 10 ms) is 25 ms late
    late = [e for e in events if e[0] == "late"]
    assert late == [("late", 1, 1, 25 * MS)]
    while loop.wait_ns(35 * MS) == 0:  # ticks 2 (15 ms late) and 3 (5 ms: not > 1 tick)
        events += loop.step(35 * MS)
    assert [e for e in events if e[0] == "late"] == late  # reported once per slot
    assert loop.stats is not None
    assert loop.stats.late_ticks == 2  # ticks 1 (25 ms) and 2 (15 ms)
    assert loop.stats.max_lag_ns == 25 * MS
    assert loop.stats.catchup_ticks == 0
    assert loop.stats.ticks == 3


def test_a_record_never_forces_a_tick_before_its_due_time() -> None:
    hpt, tps, tick_us = 10, 2, 10_000  # 1 ms per hash; hashing runs up to 1 ms ahead

    async def main() -> None:
        async with PohService.open(PohParams(hpt, tps, tick_us), mode="inline") as poh:
            origin = poh.clock_ns()
            poh.start_slot(2, 1, bytes(32), origin_ns=origin)
            await trio.sleep(0.0095)  # the first tick's last hash is all that is left
            t0 = poh.clock_ns()
            entry = await poh.record(2, [fake_tx(1)])
            assert poh.clock_ns() - t0 == MS // 2  # it waited for the tick at 10 ms
            entries = await poh.slot_entries(2)
            assert entries[0].is_tick
            assert entries[1] == entry
            assert entry is not None
            assert entry.num_hashes == 1
            times = poh.publish_times_ns(2)
            assert times[:2] == [origin + 10 * MS] * 2
            assert verify_entries(bytes(32), entries) is None
        # one hash per tick leaves no room for a record: it waits tick after tick, then is refused
        async with PohService.open(PohParams(1, 3, tick_us), mode="inline") as poh:
            origin = poh.clock_ns()
            poh.start_slot(2, 1, bytes(32), origin_ns=origin)
            assert await poh.record(2, [fake_tx(2)]) is None
            assert poh.clock_ns() == origin + 3 * tick_us * 1000
            assert poh.publish_times_ns(2) == [origin + k * tick_us * 1000 for k in (1, 2, 3)]

    run_mock(main)


def test_record_slot_takes_the_slot_duration_and_carries_every_batch() -> None:
    async def main() -> None:
        async with PohService.open(PohParams(100, 4, 10_000), mode="inline") as poh:
            origin = poh.clock_ns() + 3 * MS
            batches = [[fake_tx(i), fake_tx(100 + i)] for i in range(5)]
            entries = await record_slot(poh, 6, 4, b"\x02" * 32, batches, origin_ns=origin)
            assert poh.clock_ns() == origin + 2 * 4 * 10 * MS  # 2 slots of ticks since parent 4
            assert [list(e.transactions) for e in entries if e.transactions] == batches
            check_slot_ticks(entries, 100, 8)
            assert verify_entries(b"\x02" * 32, entries) is None
        async with PohService.open(PohParams(2, 1, 10_000), mode="inline") as poh:
            with pytest.raises(MaxHeightReached):  # one record fits a 2-hash, 1-tick slot
                await record_slot(poh, 2, 1, bytes(32), [[fake_tx(1)], [fake_tx(2)]])

    run_mock(main)


def test_records_after_the_last_tick_and_for_other_slots_are_refused() -> None:
    async def main() -> None:
        async with PohService.open(PohParams(10, 2, 1_000), mode="inline") as poh:
            poh.start_slot(4, 3, bytes(32))
            assert await poh.record(5, [fake_tx(1)]) is None  # not the working slot
            assert await poh.record(4, [fake_tx(1)]) is not None
            entries = await poh.slot_entries(4)
            assert await poh.record(4, [fake_tx(2)]) is None  # max height reached
            assert sum(len(e.transactions) for e in entries) == 1
            with pytest.raises(ValueError, match="needs transactions"):
                await poh.record(4, [])

    run_mock(main)


def test_restarting_the_slot_on_a_new_parent_voids_the_old_one() -> None:
    async def main() -> None:
        async with PohService.open(PohParams(10, 4, 10_000), mode="inline") as poh:
            poh.start_slot(9, 8, bytes(32))
            await poh.record(9, [fake_tx(1)])
            await trio.sleep(0.015)
            got: list[Entry] = []
            outcome: list[str] = []

            async def watch() -> None:
                try:
                    async for run in poh.stream(9):
                        got.extend(run)
                    outcome.append("completed")
                except SlotSuperseded:
                    outcome.append("superseded")

            async with trio.open_nursery() as n:
                n.start_soon(watch)
                await trio.sleep(0.001)
                poh.start_slot(9, 7, b"\x01" * 32)  # a better parent arrived
            assert outcome == ["superseded"]
            assert got
            assert got[0].transactions
            entries = await poh.slot_entries(9)
            check_slot_ticks(entries, 10, 4 * 2)  # 2 slots since parent 7
            assert verify_entries(b"\x01" * 32, entries) is None
            assert not any(e.transactions for e in entries)

    run_mock(main)


def test_a_prepared_slot_hashes_the_skipped_slots_as_they_pass_and_restarting_it_is_a_no_op() -> None:
    """A leader starts its slot 12 as soon as parent 8 is frozen: the 3 skipped slots' ticks
    are published on their due times (none late, none catch-up), starting it again at its
    own slot start changes nothing, and only a different parent supersedes it."""
    hpt, tps, tick_us = 20, 4, 10_000

    async def main() -> None:
        async with PohService.open(PohParams(hpt, tps, tick_us), mode="inline", hashes_per_batch=4) as poh:
            origin = poh.clock_ns()
            assert poh.start_slot(12, 8, bytes(32), origin_ns=origin)
            assert poh.working(12) == (8, bytes(32))
            await trio.sleep(3 * tps * tick_us / 1e6)  # the skipped slots 9-11 pass
            assert not poh.start_slot(12, 8, bytes(32), origin_ns=poh.clock_ns())  # its start: no-op
            entry = await poh.record(12, [fake_tx(1)])
            assert entry is not None
            entries = await poh.slot_entries(12)
            check_slot_ticks(entries, hpt, tps * 4)
            assert verify_entries(bytes(32), entries) is None
            stats = poh.stats(12)
            assert stats is not None and stats.catchup_ticks == 0 and stats.late_ticks == 0
            # ticks 13..16 (slot 12's own) after the record: it landed in slot 12's time
            assert [e.is_tick for e in entries].index(False) == 3 * tps
            assert poh.working(12) is None  # done
            assert poh.start_slot(16, 12, b"\x02" * 32)
            assert poh.start_slot(16, 13, b"\x03" * 32)  # a different parent supersedes
            entries = await poh.slot_entries(16)
            check_slot_ticks(entries, hpt, tps * 3)
            assert verify_entries(b"\x03" * 32, entries) is None

    run_mock(main)


def test_a_prepared_slot_that_passes_unbuilt_is_retargeted_without_hashing_again() -> None:
    """Slot 12 prepared on parent 8 passes unbuilt (its leader was behind); starting slot 16
    on the same parent keeps the ticks already hashed: slot 16's entries are the same chain
    from parent 8's hash, with no catch-up (a restart would hash 8 slots of ticks at once)."""
    hpt, tps, tick_us = 20, 4, 10_000

    async def main() -> None:
        async with PohService.open(PohParams(hpt, tps, tick_us), mode="inline", hashes_per_batch=4) as poh:
            origin = poh.clock_ns()
            assert poh.start_slot(12, 8, bytes(32), origin_ns=origin)
            await trio.sleep(3.55 * tps * tick_us / 1e6)  # into slot 11: 14 of slot 12's 16 ticks
            before = list(poh._by_slot[12].entries)
            assert poh.start_slot(16, 8, bytes(32), origin_ns=poh.clock_ns())  # retargeted
            assert poh.working(16) == (8, bytes(32)) and poh.working(12) is None
            entries = await poh.slot_entries(16)
            assert entries[:len(before)] == before and len(before) == 14
            check_slot_ticks(entries, hpt, tps * 8)
            assert verify_entries(bytes(32), entries) is None
            stats = poh.stats(16)
            assert stats is not None and stats.catchup_ticks == 0 and stats.late_ticks == 0

    run_mock(main)


def test_a_record_waits_for_the_slots_own_ticks() -> None:
    """Slot 2 on parent 0: the first 4 ticks are skipped slot 1's; a record sent at once
    lands right after them (agave records only into the working bank), never among them."""
    loop = PohLoop(hashes_per_batch=1000)
    assert loop.handle(("start", 1, 2, 0, bytes(32), 200, 4, 5_000_000, 0), 0) == []
    assert loop.handle(("record", 7, 1, bytes(32), (b"x",)), 0) == []  # waits
    t, landed = 0, None
    for _ in range(10_000):
        w = loop.wait_ns(t)
        if w is None:
            break
        t += w
        for ev in loop.step(t):
            if ev[0] == "recorded":
                landed = (t, loop.rec.tick_height if loop.rec else None)
    assert landed == (20_000_000, 4)


def test_a_retarget_that_finds_the_old_slot_complete_starts_afresh() -> None:
    """The worker completed the old slot before the retarget arrived: it starts the new slot
    from the parent's hash (and says so), it never stretches a finished slot."""
    loop = PohLoop(hashes_per_batch=1000)
    loop.handle(("start", 1, 3, 2, bytes(32), 5, 2, 1_000, 0), 0)
    while not (loop.rec and loop.rec.complete):
        loop.step(10**9)
    out = loop.handle(("retarget", 1, 2, 5, 2, bytes(32), 5, 2, 1_000, 0), 10**9)
    assert out[0] == ("retargeted", 2, False)
    assert loop.gen == 2 and loop.rec is not None and loop.rec.slot == 5 and loop.rec.tick_height == 0
    fresh = PohLoop(hashes_per_batch=1000)
    fresh.handle(("start", 1, 3, 2, bytes(32), 5, 2, 1_000, 0), 0)
    fresh.step(10**9)
    assert fresh.handle(("retarget", 1, 2, 5, 2, bytes(32), 5, 2, 1_000, 0), 10**9) == [("retargeted", 2, True)]
    assert fresh.rec is not None and fresh.rec.max_tick_height == 2 * 3 and fresh.gen == 2


def test_poh_loop_rejects_unknown_commands() -> None:
    with pytest.raises(ValueError, match="unknown PoH command"):
        PohLoop().handle(("bogus",), 0)
    with pytest.raises(ValueError, match="hashes_per_batch"):
        PohLoop(0)
    assert PohLoop().wait_ns(0) is None  # no working slot: nothing to do, no spinning


# ---------------------------------------------------------------------------------------
# Real time: the process worker
# ---------------------------------------------------------------------------------------
def test_process_worker_ticks_at_the_target_rate_and_its_entries_verify() -> None:
    hpt, tps, tick_us = 2_000, 8, 12_500  # 100 ms slot
    tick_ns = tick_us * 1000

    async def main() -> None:
        async with PohService.open(PohParams(hpt, tps, tick_us), mode="process") as poh:
            origin = poh.clock_ns() + 50 * MS
            start = b"\x07" * 32
            poh.start_slot(2, 1, start, origin_ns=origin)
            recorded = []
            for i in range(6):
                await trio.sleep(0.015)
                e = await poh.record(2, [fake_tx(i)])
                assert e is not None
                recorded.append(e)
            entries = await poh.slot_entries(2)
            done = poh.clock_ns()
        check_slot_ticks(entries, hpt, tps)
        assert verify_entries(start, entries) is None
        assert [e for e in entries if e.transactions] == recorded
        times = [t for e, t in zip(entries, poh.publish_times_ns(2), strict=True) if e.is_tick]
        dues = [origin + k * tick_ns for k in range(1, tps + 1)]
        # never early; late by at most 4 ticks on a busy shared 2-core machine
        assert all(d <= t <= d + 4 * tick_ns for t, d in zip(times, dues, strict=True)), [
            (t - d) / MS for t, d in zip(times, dues, strict=True)
        ]
        assert done - dues[-1] < 100 * MS
        st = poh.stats(2)
        assert st is not None
        assert st.hashes == hpt * tps
        assert st.busy_ns < 0.5 * tps * tick_ns  # it slept between ticks, not spun

    trio.run(main)


def test_thread_worker_produces_the_same_chain() -> None:
    async def main() -> list:  # type: ignore[type-arg]
        async with PohService.open(PohParams(100, 4, 2_000), mode="thread") as poh:
            poh.start_slot(2, 1, bytes(32))
            return await poh.slot_entries(2)

    entries = trio.run(main)
    check_slot_ticks(entries, 100, 4)
    assert verify_entries(bytes(32), entries) is None


# ---------------------------------------------------------------------------------------
# From the service's entries to a slot that replays
# ---------------------------------------------------------------------------------------
KEYS = [Keypair.deterministic("test-node", i) for i in range(4)]


def test_a_slot_recorded_by_the_service_replays_like_build_slot(tmp_path: Path) -> None:
    g = validator_genesis("pohtest", [k.pubkey for k in KEYS], creation_time_s=0, hashes_per_tick=200,
                          ticks_per_slot=4, tick_duration_us=5_000, slots_per_epoch=32)
    book = ScheduleBook(g)
    users = user_keypairs(g.chain_id)
    parent = SlotResult(genesis_bank(g), g.hash(), g.hash(), 0, 0, 0)
    slot = 2
    leader = next(k for k in KEYS if k.pubkey == book.leader(slot))
    txs = [transfer_tx(users[i], users[(i + 1) % 4].pubkey, 5 + i, parent.bank.last_blockhash) for i in range(4)]

    # same inputs, recorded at once: byte-identical to build_slot
    reference = build_slot(leader, g, 0, parent, slot, txs)
    bank = parent.bank.child(slot, leader.pubkey)
    for tx in txs:
        bank.process_transactions([tx])
    one_shot = record_slot_entries(parent.last_entry_hash, 200, 4, slot, 0, [txs])
    same = build_slot_from_entries(leader, g, 0, parent, slot, bank, one_shot, txs)
    assert same.packets == reference.packets
    assert same.record == reference.record

    # recorded by the real-time service as they "arrive", two batches at different times
    async def main() -> list:  # type: ignore[type-arg]
        async with PohService.open(g.poh, mode="process") as poh:
            poh.start_slot(slot, 0, parent.last_entry_hash)
            assert await poh.record(slot, txs[:2]) is not None  # waits for slot 2's own ticks (20 ms)
            await trio.sleep(0.01)
            assert await poh.record(slot, txs[2:]) is not None
            return await poh.slot_entries(slot)

    entries = trio.run(main)
    bank = parent.bank.child(slot, leader.pubkey)
    for tx in txs:
        bank.process_transactions([tx])
    built = build_slot_from_entries(leader, g, 0, parent, slot, bank, entries, txs)
    assert built.result.last_entry_hash != reference.result.last_entry_hash  # a real clock
    with Blockstore.open(tmp_path / "bs") as bs:
        res = bs.insert_shreds(built.packets, book.leader)
        assert not res.rejected
        assert res.completed_slots == [slot]
        replayed = replay_slot(bs, g, parent, slot, leader.pubkey)
    assert replayed.bank.bank_hash == built.record.bank_hash
    assert replayed.transactions == 4
    assert replayed.entries == len(entries)
    with pytest.raises(ValueError, match="transactions"):  # entries not carrying what the bank executed
        build_slot_from_entries(leader, g, 0, parent, slot, parent.bank.child(slot, leader.pubkey), entries, txs[:2])


def test_a_slot_streamed_while_it_is_recorded_replays(tmp_path: Path) -> None:
    g = validator_genesis("pohtest", [k.pubkey for k in KEYS], creation_time_s=0, hashes_per_tick=50,
                          ticks_per_slot=8, tick_duration_us=5_000, slots_per_epoch=32)
    book = ScheduleBook(g)
    users = user_keypairs(g.chain_id)
    parent = SlotResult(genesis_bank(g), g.hash(), g.hash(), 0, 0, 0)
    slot = 3  # slots 1-2 skipped: 3 x 8 ticks
    leader = next(k for k in KEYS if k.pubkey == book.leader(slot))
    txs = [transfer_tx(users[i], users[(i + 1) % 4].pubkey, 9 + i, parent.bank.last_blockhash) for i in range(4)]
    bank = parent.bank.child(slot, leader.pubkey)
    for tx in txs:
        bank.process_transactions([tx])
    streamer = SlotStreamer(leader, g, 0, parent, slot)
    published: list[list[bytes]] = []

    async def main() -> None:
        async with PohService.open(g.poh, mode="inline") as poh:
            poh.start_slot(slot, 0, parent.last_entry_hash)

            async def leader_records() -> None:
                for tx in txs:  # one batch every 8 ms, in the slot's own 40 ms (the first waits for them)
                    assert await poh.record(slot, [tx]) is not None
                    await trio.sleep(0.008)

            async with trio.open_nursery() as n:
                n.start_soon(leader_records)
                pending: list[Entry] = []
                async for run in poh.stream(slot):
                    pending += run
                    if sum(e.is_tick for e in pending) >= 4 or streamer.ticks + sum(
                        e.is_tick for e in pending
                    ) == streamer.max_ticks:
                        published.append(streamer.add(pending))
                        pending = []
                assert not pending

    run_mock(main)
    assert len(published) == 6  # 24 ticks, published every 4
    with pytest.raises(ValueError, match="ticks"):
        streamer.add([streamer.entries[-1]])  # nothing goes after the last tick
    built = streamer.finish(bank, txs)
    assert built.packets == [p for run in published for p in run]
    with Blockstore.open(tmp_path / "bs") as bs:
        res = bs.insert_shreds(built.packets, book.leader)
        assert not res.rejected
        assert res.completed_slots == [slot]
        replayed = replay_slot(bs, g, parent, slot, leader.pubkey)
    assert replayed.bank.bank_hash == built.record.bank_hash
    assert replayed.last_root == built.result.last_root
    assert replayed.transactions == 4


# ---------------------------------------------------------------------------------------
# Measurement (not a test): the trio loop with the worker in a thread vs a process
# ---------------------------------------------------------------------------------------
def _work_unit() -> None:
    """~0.5 ms of pure-Python work standing in for the node's own event-loop work."""
    x = 0
    for i in range(20_000):
        x ^= i * 7
    del x


async def _measure(params: PohParams | None, mode: str, seconds: float) -> dict[str, float]:
    """Runs a leader that records 8 batches per slot, a 1 ms sleep probe (stall = the
    largest gap between its wake-ups beyond 1 ms) and a task doing work units with a
    checkpoint after each (event-loop throughput); ``params=None``: no PoH (baseline)."""
    gaps: list[float] = []
    rec_lat: list[float] = []
    slot_lens: list[float] = []
    units = 0
    period = 0.001
    stop = time.monotonic() + seconds

    async def probe() -> None:
        last = time.monotonic()
        while time.monotonic() < stop:
            await trio.sleep(period)
            now = time.monotonic()
            gaps.append(now - last - period)
            last = now

    async def worker() -> None:
        nonlocal units
        while time.monotonic() < stop:
            _work_unit()
            units += 1
            await trio.lowlevel.checkpoint()

    async def leader(poh: PohService) -> None:
        slot, start = 1, bytes(32)
        slot_s = poh.params.slot_duration_us / 1e6
        while time.monotonic() < stop:
            t0 = time.monotonic()
            poh.start_slot(slot + 1, slot, start)
            for i in range(8):  # 8 batches per slot, as they "arrive"
                await trio.sleep(slot_s / 10)
                t = time.monotonic()
                await poh.record(slot + 1, [fake_tx(slot * 10 + i)])
                rec_lat.append(time.monotonic() - t)
            es = await poh.slot_entries(slot + 1)
            slot_lens.append(time.monotonic() - t0)
            slot, start = slot + 1, es[-1].hash

    late = 0
    async with trio.open_nursery() as n:
        n.start_soon(probe)
        n.start_soon(worker)
        if params is not None:
            async with PohService.open(params, mode=mode) as poh:  # type: ignore[arg-type]
                stop = time.monotonic() + seconds  # from when the worker is up
                await leader(poh)
                late = sum(st.late_ticks for st in poh.recent_stats())
    gaps.sort()
    out = {
        "stall_max_ms": gaps[-1] * 1e3,
        "stall_p99_ms": gaps[int(0.99 * (len(gaps) - 1))] * 1e3,
        "loop_units_per_s": units / seconds,
    }
    if params is not None:
        rec_lat.sort()
        slot_lens.sort()
        out |= {
            "record_p50_ms": rec_lat[len(rec_lat) // 2] * 1e3,
            "record_max_ms": rec_lat[-1] * 1e3,
            "slot_p50_ms": slot_lens[len(slot_lens) // 2] * 1e3,
            "late_ticks_last16_slots": late,
        }
    return out


def measure(seconds: float = 5.0, rounds: int = 3) -> None:
    """Each case ``rounds`` times, interleaved (the machine is shared), medians printed."""
    import statistics

    logging.getLogger("ambient_p2p.node.poh_service").setLevel(logging.ERROR)
    cases: list[tuple[str, PohParams | None, str]] = [("baseline (no PoH)", None, "-")]
    for name, params in (
        ("localnet (2000 h/tick, 32 ticks, 12.5 ms)", PohParams(2_000, 32, 12_500)),
        ("mainnet-like (62500 h/tick, 64 ticks, 6.25 ms)", PohParams(62_500, 64, 6_250)),
    ):
        cases += [(name, params, "thread"), (name, params, "process")]
    results: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(cases))}
    for _ in range(rounds):
        for i, (_name, case_params, mode) in enumerate(cases):
            results[i].append(trio.run(_measure, case_params, mode, seconds))
    base = statistics.median(r["loop_units_per_s"] for r in results[0])
    for i, (name, _params, mode) in enumerate(cases):
        med = {k: statistics.median(r[k] for r in results[i]) for k in results[i][0]}
        med["loop_throughput_vs_baseline"] = med["loop_units_per_s"] / base
        print(f"{name:48s} {mode:8s} " + " ".join(f"{k}={v:.2f}" for k, v in med.items()), flush=True)


if __name__ == "__main__":
    if "--measure" in sys.argv:
        measure(float(sys.argv[sys.argv.index("--measure") + 1]) if len(sys.argv) > 2 else 5.0)


def test_record_many_pipelines_batches_in_order_and_refuses_a_suffix() -> None:
    """``record_many`` (the leader's intake, one worker round trip per round): the batches
    land as successive entries in order, each holding its own transactions; once the
    slot's last tick is out every later batch is refused (None), never an earlier one."""
    hpt, tps, tick_us = 50, 4, 10_000

    async def main() -> None:
        async with PohService.open(PohParams(hpt, tps, tick_us), mode="inline", hashes_per_batch=1) as poh:
            poh.start_slot(5, 4, bytes(32), origin_ns=poh.clock_ns())
            await trio.sleep(0.012)
            batches = [[fake_tx(i), fake_tx(i + 100)] for i in range(5)]
            got = await poh.record_many(5, batches)
            assert all(e is not None for e in got)
            assert [list(e.transactions) for e in got if e is not None] == batches
            entries = await poh.slot_entries(5)
            recorded = [e for e in entries if not e.is_tick]
            assert recorded == got
            assert verify_entries(bytes(32), entries) is None
            # the slot is complete: every batch is refused, none recorded
            assert await poh.record_many(5, [[fake_tx(9)], [fake_tx(10)]]) == [None, None]
            with pytest.raises(ValueError, match="needs transactions"):
                await poh.record_many(5, [[fake_tx(11)], []])

    run_mock(main)


@pytest.mark.slow
def test_record_many_through_the_worker_pipe_never_deadlocks_on_large_slots() -> None:
    """Hundreds of KiB of records through the real process worker's pipe: ``record_many``
    keeps at most RECORD_WINDOW_BYTES in flight, so the event loop's blocking pipe write and
    the worker's write of the entries coming back never wait on each other (sending every
    record at once did: a 1,000 tx/s localnet leader froze). Run in a thread so a deadlock
    fails the test instead of hanging it."""
    import threading

    batches = [[fake_tx(8 * i + k, nsig=8) for k in range(8)] for i in range(120)]  # ~560 B each, ~540 KB
    result: dict[str, object] = {}

    async def main() -> None:
        async with PohService.open(PohParams(50, 8, 250_000)) as poh:  # a 2 s slot
            poh.start_slot(3, 2, bytes(32), origin_ns=poh.clock_ns())
            result["got"] = await poh.record_many(3, batches)

    t = threading.Thread(target=trio.run, args=(main,), daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), "record_many deadlocked on the worker pipe"
    got = result["got"]
    assert isinstance(got, list) and len(got) == len(batches)
    n = sum(1 for e in got if e is not None)
    assert n > 0 and all(e is None for e in got[n:])  # a recorded prefix, then refusals
    assert [list(e.transactions) for e in got[:n]] == batches[:n]
