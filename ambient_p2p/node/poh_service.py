"""The PoH service: a leader's Proof-of-History clock (spec/poh.md, "Service"; agave
``poh/src/poh_service.rs`` ``PohService::tick_producer`` / ``record_or_hash`` and
``poh/src/poh_recorder.rs``).

A worker hashes the working slot's chain continuously with a core
:class:`~ambient_p2p.core.poh_recorder.PohRecorder`, paced to the genesis
``target_tick_duration_us``: hash ``J`` of the slot is not done before ``origin + J *
tick_duration / hashes_per_tick`` and tick ``k`` is not published before ``origin + k *
tick_duration``; when ahead it sleeps (waiting on its command pipe, so a record arriving
meanwhile is served at once), when behind it hashes flat out and reports it. The leader
mixes transaction batches in as they arrive (:meth:`PohService.record`, agave
``TransactionRecorder::record``); records are refused once the slot's last tick is out
(agave ``MaxHeightReached``). Entries stream back in chain order
(:meth:`PohService.stream`) and the whole slot is available when its last tick lands
(:meth:`PohService.slot_entries`); ``node/leader.py`` ``SlotStreamer`` (during the slot)
or ``build_slot_from_entries`` (at its end, both re-exported here) turn them into the same
``BuiltSlot`` that ``build_slot`` returns.

The worker runs in a **process** by default: CPython holds the GIL while hashing 32-byte
inputs, so a hashing thread takes the interpreter from the trio loop for up to a switch
interval at a time (measured in spec/poh.md). ``mode="thread"`` runs the same loop in a
thread (for the measurement); ``mode="inline"`` runs it as a trio task on trio's clock,
for tests under ``trio.testing.MockClock`` (it hashes on the event loop: never in a node).

Unlike agave, the service idles when it has no working slot: our slot clock is wall time
(spec/node.md), so PoH only has to make a leader's own slot take its real duration and
order the transactions recorded in it.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal

import trio

from ..core.messages import PohParams
from ..core.poh import Entry, hash_transactions
from ..core.poh_recorder import MaxHeightReached, PohRecorder
from .leader import BuiltSlot, SlotStreamer, build_slot_from_entries

__all__ = ["BuiltSlot", "PohService", "PohSlotStats", "SlotStreamer", "SlotSuperseded", "build_slot_from_entries",
           "record_slot"]

log = logging.getLogger(__name__)

#: Hashes per uninterrupted batch (agave ``DEFAULT_HASHES_PER_BATCH`` is 64 for Rust):
#: ~0.25 ms of CPython hashing, the worst delay a record waits for the worker to look up.
DEFAULT_HASHES_PER_BATCH = 1_024
#: Transaction bytes :meth:`PohService.record_many` keeps in flight to the worker: well
#: below a Linux pipe's 64 KiB buffer in each direction (the entries coming back carry the
#: same transactions), so neither side's blocking write can wait on the other's.
RECORD_WINDOW_BYTES = 16_384
#: How far hashing may run ahead of the clock: a worker ahead of schedule hashes what is
#: due in the next 1 ms and sleeps until then (one wake-up per ms, not one per hash).
HASH_AHEAD_NS = 1_000_000
#: A tick published more than this many tick durations after its due time is *late*; the
#: first late tick of a slot is reported (log warning + ``PohSlotStats``).
LATE_TICK_FACTOR = 1
#: Finished slots whose stats and entries the service keeps.
KEEP_SLOTS = 16

Mode = Literal["process", "thread", "inline"]


@dataclass
class PohSlotStats:
    """How the worker kept time for one working slot (times in ns on the worker's clock)."""

    slot: int
    ticks: int = 0
    hashes: int = 0
    records: int = 0
    refused: int = 0
    catchup_ticks: int = 0  # ticks already due when the slot was started (origin in the past)
    late_ticks: int = 0  # other ticks published more than LATE_TICK_FACTOR tick durations late
    max_lag_ns: int = 0  # worst (publish time - due time) over the slot's other ticks
    busy_ns: int = 0  # time spent hashing
    idle_ns: int = 0  # time spent waiting because ahead of schedule
    started_ns: int = 0
    finished_ns: int = 0


# ---------------------------------------------------------------------------------------
# The worker loop (runs in the worker process/thread, or as a trio task for tests)
# ---------------------------------------------------------------------------------------
# Commands (service -> worker):
#   ("start", gen, slot, parent_slot, start_hash, hashes_per_tick, ticks_per_slot, tick_ns, origin_ns)
#   ("record", rid, gen, mixin, transactions)
#   ("retarget", old_gen, gen, slot, parent_slot, start_hash, hashes_per_tick, ticks_per_slot,
#    tick_ns, origin_ns)                  the working slot ``old_gen`` becomes ``gen``, a later
#                                         slot on its parent, or (if it completed or took a
#                                         record meanwhile) ``gen`` starts afresh
#   ("stop",)
# Events (worker -> service), sent as lists:
#   ("ready",)                             once, when the worker is up
#   ("entries", gen, [(entry, tick_height, publish_ns), ...])
#   ("recorded", rid, entry | None)       after the "entries" event holding the record
#   ("late", gen, tick_height, lag_ns)     first late tick of a working slot
#   ("done", gen, PohSlotStats)            the slot's last tick is out
#   ("retargeted", gen, kept)             answer to "retarget": kept the ticks, or started afresh
Msg = tuple[Any, ...]


class PohLoop:
    """The service's hashing loop, driven by an injected clock: ``handle`` a command,
    ``step`` when ``wait_ns`` says 0. Returns events for the service.

    Hashes run at most ``ahead_ns`` ahead of their due time (so a worker ahead of schedule
    wakes about once per ``ahead_ns``, not once per hash); a tick is never published before
    its due time, and a record that would force the tick early (only the tick's last hash
    left) waits for it (at most ``ahead_ns``)."""

    def __init__(self, hashes_per_batch: int = DEFAULT_HASHES_PER_BATCH, ahead_ns: int = HASH_AHEAD_NS) -> None:
        if hashes_per_batch < 1:
            raise ValueError("hashes_per_batch must be >= 1")
        self.batch = hashes_per_batch
        self.ahead_ns = ahead_ns
        self.rec: PohRecorder | None = None
        self.gen = -1
        self.origin_ns = 0
        self.tick_ns = 1
        self.stats: PohSlotStats | None = None
        self._records: list[tuple[int, bytes, tuple[bytes, ...]]] = []  # waiting for the tick
        self._reported_late = False

    def handle(self, msg: Msg, now_ns: int) -> list[Msg]:
        kind = msg[0]
        if kind == "start":
            _, gen, slot, parent, start_hash, hpt, tps, tick_ns, origin_ns = msg
            out: list[Msg] = [("recorded", rid, None) for rid, _m, _t in self._records]
            self._records = []
            self.rec = PohRecorder(start_hash, hpt, tps, slot=slot, parent_slot=parent)
            self.gen, self.tick_ns, self.origin_ns = gen, tick_ns, origin_ns
            self.stats = PohSlotStats(slot, started_ns=now_ns)
            self._reported_late = False
            return out
        if kind == "retarget":
            _, old_gen, gen, slot, parent, start_hash, hpt, tps, tick_ns, origin_ns = msg
            rec = self.rec
            if (rec is not None and old_gen == self.gen and self.stats is not None and not rec.complete
                    and not rec.records):
                rec.retarget(slot)  # keep the ticks hashed so far: they start the later slot
                self.gen = gen
                self.stats.slot = slot
                # records still waiting for the old slot's own ticks were never in the chain
                dropped: list[Msg] = [("recorded", rid, None) for rid, _m, _t in self._records]
                self._records = []
                return [("retargeted", gen, True), *dropped]
            # the old slot completed (or took a record) before this arrived: start afresh
            out = self.handle(("start", gen, slot, parent, start_hash, hpt, tps, tick_ns, origin_ns), now_ns)
            return [("retargeted", gen, False), *out]
        if kind == "record":
            _, rid, gen, mixin, txs = msg
            if self.rec is None or gen != self.gen:
                return [("recorded", rid, None)]  # not the working slot (agave: MaxHeightReached)
            self._records.append((rid, mixin, txs))
            return self._serve_records(now_ns)
        raise ValueError(f"unknown PoH command {kind!r}")

    def _records_blocked(self, now_ns: int) -> bool:
        """Recording now would force a tick before its due time, or the chain has not yet
        reached the slot's own ticks (records land in the slot's own time, as agave records
        only into the working bank; the skipped slots' ticks stay ticks alone, so a prepared
        slot can still be retargeted)."""
        rec = self.rec
        assert rec is not None
        if not rec.complete and rec.tick_height < rec.max_tick_height - rec.ticks_per_slot:
            return True
        return not rec.complete and rec.tick_due and now_ns < rec.tick_due_ns(self.origin_ns, self.tick_ns)

    def _serve_records(self, now_ns: int) -> list[Msg]:
        rec, stats = self.rec, self.stats
        assert rec is not None
        assert stats is not None
        done: list[Msg] = []
        while self._records and not self._records_blocked(now_ns):
            if rec.tick_due and not rec.complete:
                rec.tick()  # due now: tick here, so the recorder never ticks on its own
                continue
            rid, mixin, txs = self._records.pop(0)
            try:
                entry: Entry | None = rec.record(mixin, txs)
                stats.records += 1
            except MaxHeightReached:
                entry = None
                stats.refused += 1
            done.append(("recorded", rid, entry))
        return [*self._flush(now_ns), *done]

    def wait_ns(self, now_ns: int) -> int | None:
        """ns until the next step is due (0: step now); None when there is nothing to do."""
        rec = self.rec
        if rec is None:
            return None
        if self._records and not self._records_blocked(now_ns):
            return 0
        if rec.complete:
            return None
        return max(0, rec.next_due_ns(self.origin_ns, self.tick_ns) - now_ns)

    def step(self, now_ns: int, clock_ns: Callable[[], int] = time.monotonic_ns) -> list[Msg]:
        """Serve waiting records, or do the tick when it is due, or hash what is due by
        ``now + ahead`` (at most one batch). ``clock_ns`` times the work."""
        rec, stats = self.rec, self.stats
        if rec is None or stats is None:
            return []
        if self._records and not self._records_blocked(now_ns):
            return self._serve_records(now_ns)
        if rec.complete:
            return []
        t0 = clock_ns()
        if rec.tick_due:
            rec.tick()
        else:
            due = rec.hashes_due_by(self.origin_ns, self.tick_ns, now_ns + self.ahead_ns)
            rec.hash(max(1, min(self.batch, due)))
        stats.busy_ns += clock_ns() - t0
        return self._flush(now_ns)

    def _flush(self, now_ns: int) -> list[Msg]:
        rec, stats = self.rec, self.stats
        assert rec is not None
        assert stats is not None
        entries = rec.take_entries()
        if not entries:
            return []
        out: list[Msg] = []
        batch = []
        ticks_before = rec.tick_height - sum(1 for e in entries if e.is_tick)
        th = ticks_before
        for e in entries:
            if e.is_tick:
                th += 1
                due = self.origin_ns + th * self.tick_ns
                lag = now_ns - due
                stats.ticks += 1
                if due <= stats.started_ns:
                    stats.catchup_ticks += 1  # due before the slot was started: not a pacing fault
                else:
                    stats.max_lag_ns = max(stats.max_lag_ns, lag)
                if due > stats.started_ns and lag > LATE_TICK_FACTOR * self.tick_ns:
                    stats.late_ticks += 1
                    if not self._reported_late:
                        self._reported_late = True
                        out.append(("late", self.gen, th, lag))
            batch.append((e, th, now_ns))
        out.insert(0, ("entries", self.gen, batch))
        if rec.complete:
            stats.hashes = rec.total_hashes
            stats.finished_ns = now_ns
            out.append(("done", self.gen, stats))
        return out


def _worker_main(conn: Connection, hashes_per_batch: int) -> None:
    """Worker thread/process: serve commands, hash when due, sleep (in ``poll``) when ahead."""
    loop = PohLoop(hashes_per_batch)
    clock = time.monotonic_ns
    try:
        conn.send([("ready",)])
        while True:
            now = clock()
            wait = loop.wait_ns(now)
            timeout = None if wait is None else wait / 1e9
            t0 = clock()
            ready = conn.poll(timeout)
            if wait and loop.stats is not None:
                loop.stats.idle_ns += clock() - t0
            if ready:
                msg = conn.recv()
                if msg[0] == "stop":
                    return
                out = loop.handle(msg, clock())
            else:
                out = loop.step(clock())
            if out:
                conn.send(out)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return  # the service went away


# ---------------------------------------------------------------------------------------
# The service (trio side)
# ---------------------------------------------------------------------------------------
@dataclass
class _SlotState:
    gen: int
    slot: int
    parent_slot: int
    start_hash: bytes
    origin_ns: int = 0
    recorded: bool = False  # a record landed in it (then it cannot be retargeted)
    entries: list[Entry] = field(default_factory=list)
    publish_ns: list[int] = field(default_factory=list)  # worker clock, per entry
    done: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)
    stats: PohSlotStats | None = None
    superseded: bool = False


class SlotSuperseded(Exception):
    """The working slot was restarted (``start_slot`` again, e.g. on a new parent) before
    it completed: its entries so far are void."""


class PohWorkerExited(RuntimeError):
    """The worker process/thread is gone (crashed or killed): the service cannot go on."""


class PohService:
    """Use as ``async with PohService.open(genesis.poh) as poh:``; then per leader slot
    ``poh.start_slot(...)``, ``await poh.record(slot, txs)`` as batches arrive, and ``await
    poh.slot_entries(slot)`` (or ``async for es in poh.stream(slot)``)."""

    def __init__(self, params: PohParams, mode: Mode, hashes_per_batch: int) -> None:
        self.params = params
        self.mode = mode
        self.hashes_per_batch = hashes_per_batch
        self._gen = 0
        self._rid = 0
        self._slots: dict[int, _SlotState] = {}  # gen -> state
        self._by_slot: dict[int, _SlotState] = {}  # slot -> latest state
        self._pending: dict[int, tuple[trio.Event, list[Entry | None]]] = {}
        self._conn: Connection | None = None
        self._inline: PohLoop | None = None
        self._wake = trio.Event()
        self.late_reports = 0
        #: retargeted generation -> the generation its entries carry over to, until the
        #: worker answers "retargeted"
        self._carry: dict[int, int] = {}

    # -- lifecycle -----------------------------------------------------------------
    @classmethod
    @asynccontextmanager
    async def open(
        cls, params: PohParams, *, mode: Mode = "process", hashes_per_batch: int = DEFAULT_HASHES_PER_BATCH
    ) -> AsyncIterator[PohService]:
        svc = cls(params, mode, hashes_per_batch)
        async with trio.open_nursery() as nursery:
            if mode == "inline":
                svc._inline = PohLoop(hashes_per_batch)
                nursery.start_soon(svc._run_inline)
                try:
                    yield svc
                finally:
                    nursery.cancel_scope.cancel()
                return
            parent, child = multiprocessing.Pipe(duplex=True)
            worker: multiprocessing.process.BaseProcess | threading.Thread
            if mode == "process":
                # spawn, not fork: the parent runs trio and threads that must not be forked
                worker = multiprocessing.get_context("spawn").Process(
                    target=_worker_main, args=(child, hashes_per_batch), name="ambient-poh", daemon=True
                )
            else:
                worker = threading.Thread(
                    target=_worker_main, args=(child, hashes_per_batch), name="ambient-poh", daemon=True
                )
            worker.start()
            svc._conn = parent
            try:
                # a spawned worker takes a few hundred ms to import: wait for it, or the first
                # slot's origin would already be in the past
                await trio.lowlevel.wait_readable(parent.fileno())
                if parent.recv() != [("ready",)]:
                    raise RuntimeError("PoH worker did not start")
                nursery.start_soon(svc._read_events)
                yield svc
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    with suppress(BrokenPipeError, OSError):
                        parent.send(("stop",))
                    await trio.to_thread.run_sync(worker.join, 5.0)
                    if isinstance(worker, multiprocessing.process.BaseProcess) and worker.is_alive():
                        worker.kill()
                    parent.close()
                    child.close()

    def clock_ns(self) -> int:
        """The clock ``origin_ns`` is measured on (trio's clock in inline mode)."""
        if self.mode == "inline":
            return int(trio.current_time() * 1e9)
        return time.monotonic_ns()

    def origin_for_wall_ms(self, wall_ms: float) -> int:
        """``origin_ns`` for a slot-clock time in ms since the Unix epoch (e.g. the start of
        the slot after the parent: ``genesis_ms + (parent_slot + 1) * slot_ms``)."""
        return self.clock_ns() + int((wall_ms - time.time() * 1000) * 1e6)

    # -- commands ------------------------------------------------------------------
    def start_slot(self, slot: int, parent_slot: int, start_hash: bytes, *, origin_ns: int | None = None) -> bool:
        """Start (or restart, superseding the previous working slot) hashing ``slot`` on
        ``parent_slot`` from ``start_hash``. Tick ``k`` of the slot (``k`` from 1 to
        ``ticks_per_slot * (slot - parent_slot)``) is due at ``origin_ns + k *
        tick_duration``; ``origin_ns`` defaults to now. An origin in the past makes the
        worker hash flat out until it has caught up (the ticks already due at the start count
        as ``catchup_ticks``, not as late).

        Starting the working slot again on the same parent and hash is a no-op (returns
        False; the first origin stays), and starting a *later* slot on that parent and hash
        while the working slot holds only ticks retargets it (its ticks so far become the
        later slot's skipped-slot ticks; nothing is hashed again): a leader *prepares* its next slot as soon as the
        parent it will build on is frozen, so the ticks of the slots skipped in between are
        hashed as they pass, in real time, and not all at once when its slot begins (agave's
        PohService keeps hashing on the heaviest bank after ``reset`` the same way; without
        it a leader ``G`` slots after its parent must hash ``G`` slots of ticks at its start,
        which at 32 x 2,000 hashes a slot and a long gap took longer than the slot)."""
        if slot <= parent_slot:
            raise ValueError(f"slot {slot} must be above its parent {parent_slot}")
        cur = self._by_slot.get(slot)
        if (cur is not None and cur.gen == self._gen and not cur.done.is_set()
                and (cur.parent_slot, cur.start_hash) == (parent_slot, start_hash)):
            return False
        work = self._slots.get(self._gen)
        retarget = (work is not None and not work.done.is_set() and not work.recorded and work.slot < slot
                    and (work.parent_slot, work.start_hash) == (parent_slot, start_hash))
        self._gen += 1
        for st in self._slots.values():
            if not st.done.is_set():
                st.superseded = True
                st.done.set()
                changed, st.changed = st.changed, trio.Event()
                changed.set()
        for rid, (ev, box) in list(self._pending.items()):
            box.append(None)
            ev.set()
            del self._pending[rid]
        state = _SlotState(self._gen, slot, parent_slot, start_hash)
        self._slots[self._gen] = state
        self._by_slot[slot] = state
        p = self.params
        if retarget:
            # a later slot on the same parent (the prepared one passed unbuilt): the worker
            # keeps the ticks hashed so far, this slot's skipped-slot ticks; their entries
            # (received and still in flight) carry over until the worker says whether it
            # could ("retargeted"), else it starts afresh with the usual origin
            assert work is not None
            state.entries, state.publish_ns = list(work.entries), list(work.publish_ns)
            self._carry[work.gen] = state.gen
            origin = work.origin_ns
            self._trim()
            self._send(("retarget", work.gen, self._gen, slot, parent_slot, start_hash, p.hashes_per_tick,
                        p.ticks_per_slot, p.target_tick_duration_us * 1_000, origin))
            return True
        self._trim()
        origin = self.clock_ns() if origin_ns is None else origin_ns
        state.origin_ns = origin
        self._send(("start", self._gen, slot, parent_slot, start_hash, p.hashes_per_tick, p.ticks_per_slot,
                    p.target_tick_duration_us * 1_000, origin))
        return True

    def working(self, slot: int) -> tuple[int, bytes] | None:
        """(parent slot, start hash) of ``slot`` while it is the running working slot."""
        cur = self._by_slot.get(slot)
        if cur is None or cur.gen != self._gen or cur.done.is_set():
            return None
        return cur.parent_slot, cur.start_hash

    async def record(self, slot: int, transactions: Sequence[bytes]) -> Entry | None:
        """Mix ``transactions`` into ``slot``'s PoH; their entry, or None when refused
        (not the working slot, or its last tick is out: agave ``MaxHeightReached``)."""
        if not transactions:
            raise ValueError("a record needs transactions")
        state = self._by_slot.get(slot)
        if state is None or state.done.is_set():
            return None
        mixin = hash_transactions(transactions)
        self._rid += 1
        rid = self._rid
        ev, box = trio.Event(), list[Entry | None]()
        self._pending[rid] = (ev, box)
        self._send(("record", rid, state.gen, mixin, tuple(transactions)))
        await ev.wait()
        if box[0] is not None:
            state.recorded = True
        return box[0]

    async def record_many(self, slot: int, batches: Sequence[Sequence[bytes]]) -> list[Entry | None]:
        """:meth:`record` for successive ``batches`` (each a non-empty entry's transactions),
        pipelined: every record is sent to the worker at once and the replies awaited
        together, so a leader's slot costs one worker round trip per window of records, not one
        per entry (on a loaded machine each round trip waits for the worker to be scheduled);
        at most ``RECORD_WINDOW_BYTES`` of transactions are in flight at once.
        The worker serves records in order and refusals are monotone (not the working slot,
        or its last tick out), so the result is the recorded entries, then ``None`` for each
        refused batch."""
        if any(not b for b in batches):
            raise ValueError("a record needs transactions")
        state = self._by_slot.get(slot)
        if state is None or state.done.is_set():
            return [None] * len(batches)
        out: list[Entry | None] = []
        i = 0
        while i < len(batches):
            # a window of at most RECORD_WINDOW_BYTES in flight: the pipe's send blocks the
            # event loop, and a worker blocked writing its entries back (they carry the same
            # transactions) while we block writing records to it would be a deadlock
            waits: list[tuple[trio.Event, list[Entry | None]]] = []
            size = 0
            while i < len(batches) and (not waits or size + sum(map(len, batches[i])) <= RECORD_WINDOW_BYTES):
                txs = batches[i]
                size += sum(map(len, txs))
                self._rid += 1
                ev, box = trio.Event(), list[Entry | None]()
                self._pending[self._rid] = (ev, box)
                waits.append((ev, box))
                self._send(("record", self._rid, state.gen, hash_transactions(txs), tuple(txs)))
                i += 1
            for ev, box in waits:
                await ev.wait()
                out.append(box[0])
        if any(e is not None for e in out):
            state.recorded = True
        return out

    async def slot_entries(self, slot: int) -> list[Entry]:
        """All of ``slot``'s entries, once its last tick is out. Raises
        :class:`SlotSuperseded` if the slot was restarted, KeyError if never started."""
        state = self._by_slot[slot]
        await state.done.wait()
        if state.superseded:
            raise SlotSuperseded(slot)
        return list(state.entries)

    async def stream(self, slot: int) -> AsyncIterator[list[Entry]]:
        """Yield ``slot``'s entries in chain order as they are produced, in runs, until its
        last tick (raises :class:`SlotSuperseded` if it is restarted meanwhile)."""
        state = self._by_slot[slot]
        sent = 0
        while True:
            changed = state.changed  # replaced (after being set) on every update
            if state.superseded:
                raise SlotSuperseded(slot)
            if len(state.entries) > sent:
                run = state.entries[sent:]
                sent += len(run)
                yield run
                continue
            if state.done.is_set():
                return
            await changed.wait()

    def stats(self, slot: int) -> PohSlotStats | None:
        st = self._by_slot.get(slot)
        return None if st is None else st.stats

    def recent_stats(self) -> list[PohSlotStats]:
        """Stats of the finished working slots the service still keeps, oldest first."""
        return [st.stats for _gen, st in sorted(self._slots.items()) if st.stats is not None]

    def publish_times_ns(self, slot: int) -> list[int]:
        """When the worker published each of ``slot``'s entries (its clock)."""
        return list(self._by_slot[slot].publish_ns)

    # -- plumbing ------------------------------------------------------------------
    def _trim(self) -> None:
        while len(self._slots) > KEEP_SLOTS:
            gen = min(self._slots)
            st = self._slots.pop(gen)
            if self._by_slot.get(st.slot) is st:
                del self._by_slot[st.slot]

    def _send(self, msg: Msg) -> None:
        if self._inline is not None:
            self._dispatch(self._inline.handle(msg, self.clock_ns()))
            self._wake.set()
            return
        assert self._conn is not None, "use PohService.open()"
        self._conn.send(msg)

    def _dispatch(self, events: list[Msg]) -> None:
        for ev in events:
            kind = ev[0]
            if kind == "recorded":
                pending = self._pending.pop(ev[1], None)
                if pending is not None:
                    pending[1].append(ev[2])
                    pending[0].set()
                continue
            if kind == "retargeted":
                for old in [g for g, new in self._carry.items() if new == ev[1]]:
                    del self._carry[old]
                target = self._slots.get(ev[1])
                if target is not None and not ev[2]:  # the worker started afresh
                    target.entries.clear()
                    target.publish_ns.clear()
                continue
            if kind == "entries" and ev[1] in self._carry:  # the retargeted slot's prefix
                target = self._slots.get(self._carry[ev[1]])
                if target is not None:
                    for entry, _th, t in ev[2]:
                        target.entries.append(entry)
                        target.publish_ns.append(t)
                    changed, target.changed = target.changed, trio.Event()
                    changed.set()
            state = self._slots.get(ev[1])
            if state is None:
                continue
            changed, state.changed = state.changed, trio.Event()
            changed.set()
            if kind == "entries":
                for entry, _th, t in ev[2]:
                    state.entries.append(entry)
                    state.publish_ns.append(t)
            elif kind == "late":
                self.late_reports += 1
                log.warning("PoH behind: slot %d tick %d published %.1f ms after its due time",
                            state.slot, ev[2], ev[3] / 1e6)
            elif kind == "done":
                state.stats = ev[2]
                state.done.set()

    async def _read_events(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            await trio.lowlevel.wait_readable(conn.fileno())
            while conn.poll():
                try:
                    events = conn.recv()
                except EOFError:
                    raise PohWorkerExited("the PoH worker closed its pipe") from None
                self._dispatch(events)

    async def _run_inline(self) -> None:
        loop = self._inline
        assert loop is not None
        while True:
            now = self.clock_ns()
            wait = loop.wait_ns(now)
            if wait is None or wait > 0:
                self._wake = trio.Event()
                t0 = now
                with trio.move_on_after(math.inf if wait is None else wait / 1e9):
                    await self._wake.wait()
                if wait is not None and loop.stats is not None:
                    loop.stats.idle_ns += self.clock_ns() - t0
                continue
            self._dispatch(loop.step(now, self.clock_ns))
            await trio.lowlevel.checkpoint()


async def record_slot(
    poh: PohService,
    slot: int,
    parent_slot: int,
    start_hash: bytes,
    batches: Sequence[Sequence[bytes]],
    *,
    origin_ns: int | None = None,
) -> list[Entry]:
    """A leader's whole slot on the clock: start ``slot`` on ``parent_slot``, record
    ``batches`` in order now, and return the entries once the slot's last tick is out (its
    real duration after ``origin_ns``). Raises :class:`MaxHeightReached` if a batch is
    refused (the bank executed it, so the slot would not match the bank) and
    :class:`SlotSuperseded` if the slot is restarted meanwhile."""
    poh.start_slot(slot, parent_slot, start_hash, origin_ns=origin_ns)
    for batch in batches:
        if await poh.record(slot, batch) is None:
            raise MaxHeightReached(slot, poh.params.ticks_per_slot * (slot - parent_slot))
    return await poh.slot_entries(slot)
