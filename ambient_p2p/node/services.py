"""The validator's services, one trio task each (spec/node.md "Services"; agave splits its
validator the same way): ingest (gossip deliveries -> votes, pool, shred queue), replay
(shred queue -> insert -> replay -> decide), leader (slot clock ->
``leader_decision`` -> build), repair (the repair plan -> requests -> ledger), voting
(node/voting.py: tower durable, then the vote), cleanup (purge below the root), and a
loop-stall monitor. They share the validator's machines under its ``ledger_lock``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..core.codec import DecodeError, decode
from ..core.leader_policy import Build
from ..core.repair import AskOrphan, repair_round
from ..ledger.cleanup import purge_below
from ..ledger.jobs import consumed_job
from ..net.messages import REPAIR_ORPHAN, RepairRequest, ShredBatch
from ..net.port import request_all
from ..net.reqresp import PROTO_REPAIR
from .production import prepare_on_clock
from .repair import PROTO_REPAIR_SLOT, SlotShredsRequest

if TYPE_CHECKING:  # pragma: no cover
    from .validator import Validator

INGEST_BATCH_WAIT_S = 0.01
INGEST_BATCH_MAX = 256
#: Shred batches (a gossip burst, a repair round) waiting for insert + replay: ingest and
#: repair ``await send`` into it, so they slow down when replay is busy (back-pressure).
SHRED_QUEUE_LEN = 64
REPAIR_INTERVAL_S = 0.3
REPAIR_PARALLEL = 16
REPAIR_TIMEOUT_S = 3.0
#: The stall monitor's period; lateness = how much later than this it woke.
STALL_PROBE_S = 0.01


async def run_services(v: Validator) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ingest_service, v)
        nursery.start_soon(replay_service, v)
        nursery.start_soon(leader_service, v)
        nursery.start_soon(repair_service, v)
        nursery.start_soon(v.voting.run)
        nursery.start_soon(cleanup_service, v)
        nursery.start_soon(stall_monitor, v)


async def ingest_service(v: Validator) -> None:
    while True:
        batch = [await v.inbox_recv.receive()]
        await trio.sleep(INGEST_BATCH_WAIT_S)  # let a burst accumulate: one replay + decide pass
        while len(batch) < INGEST_BATCH_MAX:
            try:
                batch.append(v.inbox_recv.receive_nowait())
            except trio.WouldBlock:
                break
        packets: list[bytes] = []
        async with v.ledger_lock:
            for item in batch:
                if item.kind == "shreds":
                    try:
                        packets.extend(decode(item.envelope.payload, expected=ShredBatch).shreds)
                    except DecodeError:
                        continue
                else:
                    v.perform(v.delivered(item.kind, item.envelope.payload, v.clock.mono_ms()))
        async with v.ledger_lock:
            await v.decide()
        if packets:
            v.stats.shreds_in += len(packets)
            await v.shreds_send.send((packets, "gossip"))


async def replay_service(v: Validator) -> None:
    """Insert (verified) and replay shred batches from ingest and repair, then decide."""
    async for packets, source in v.shreds_recv:
        res = await v.ingest_shreds(packets)
        if source == "repair":
            v.stats.repaired_shreds += res.inserted + res.recovered
        async with v.ledger_lock:
            await v.decide()


async def leader_service(v: Validator) -> None:
    """With ``--poh-clock service``, opens the node's PoH clock (one worker process, kept
    for the node's life) for ``Validator.produce``; then the leader loop."""
    if v.poh_clock == "service" and v.poh is None:
        from .poh_service import PohService

        async with PohService.open(v.genesis.poh) as poh:
            v.poh = poh
            try:
                await _leader_loop(v)
            finally:
                v.poh = None
    else:
        await _leader_loop(v)


async def _leader_loop(v: Validator) -> None:
    """Asks the pure leader policy what to do and when to ask again (``leader_step``);
    sleeps until then or a freeze. On the PoH clock a build lasts until
    the end of its slot (at most ``leader_policy.PRODUCE_OVERRUN_SLOTS`` past it: then abandoned),
    so the next slot's decision comes after it, on the slot it produced."""
    while True:
        now = v.clock.wall_ms()
        step = v.leader_step(now, v.clock.mono_ms())
        if isinstance(step.decision, Build):
            await v.produce(step.decision.slot, step.decision.parent)
            continue
        if step.prepare is not None:
            prepare_on_clock(v, *step.prepare)
        with trio.move_on_after(max(0.0, (step.wake_ms - now) / 1000)):
            await v.frozen_event.wait()


def repair_plan(v: Validator) -> tuple[list[int], int | None]:
    return v.repair_plan(v.clock.wall_ms())


async def repair_service(v: Validator) -> None:
    while True:
        with trio.move_on_after(REPAIR_INTERVAL_S):
            await v.repair_now.wait()
        v.repair_now = trio.Event()
        peers = v.port.peers() if v.port is not None else []
        wanted, orphan = v.repair_wanted(v.clock.wall_ms(), len(peers))
        # a disk read: a worker thread, or inline without offload (a thread would let a
        # MockClock jump while it runs, so load would change the in-process interleaving)
        consumed = await v._thread("disk", consumed_job, v.bs, wanted) if wanted else {}
        asks = repair_round(wanted, orphan, consumed, len(peers), v.rng)
        if not asks or v.port is None:
            continue
        v.stats.repair_requests += len(asks)
        jobs = [(peers[i], PROTO_REPAIR, RepairRequest(REPAIR_ORPHAN, a.slot, 0, a.nonce)) if isinstance(a, AskOrphan)
                else (peers[i], PROTO_REPAIR_SLOT, SlotShredsRequest(a.slot, a.first_index, a.nonce)) for i, a in asks]
        resps = await request_all(v.port.request, jobs, parallel=REPAIR_PARALLEL, timeout_s=REPAIR_TIMEOUT_S)
        if got := [s for r in resps for s in r.shreds]:
            await v.shreds_send.send((got, "repair"))


async def cleanup_service(v: Validator) -> None:
    """agave's blockstore_cleanup_service: performs the newest ``PurgeLedger`` the policy
    asked for (core/history.py): ``purge_below`` (never the root, never the newest node
    snapshot or above) in a worker thread, without the ledger lock (RocksDB range deletes
    and compaction run beside inserts: tests/test_cleanup.py)."""
    while True:
        while v.pending_purge is None:
            await v.root_event.wait()
        p, v.pending_purge = v.pending_purge, None
        v.stats.purged_slots += await v._thread("cleanup", purge_below, v.bs, p.root, p.keep_slots)
        v.stats.cleanups += 1


async def stall_monitor(v: Validator) -> None:
    """Event-loop stall: how late a 10 ms sleep wakes (a long synchronous step delays it)."""
    while True:
        t0 = trio.current_time()
        await trio.sleep(STALL_PROBE_S)
        v.loop_stall.append(max(0.0, (trio.current_time() - t0 - STALL_PROBE_S) * 1000))
