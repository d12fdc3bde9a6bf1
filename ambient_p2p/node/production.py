"""Slot production (normative text: spec/node.md "Slot clock and production"; agave banking
stage -> ``PohRecorder`` -> broadcast stage). :func:`produce` builds an own slot at once in
a worker thread, or, when the leader service opened the node's PoH clock
(``--poh-clock service``), in real time (:func:`produce_on_clock`): intake executes what
arrived every ``INTAKE_INTERVAL_S`` and records it on the clock; broadcast shreds and
gossips the entries as PoH publishes them; after the last tick the slot is stored and
``Produced``. A slot not complete ``PRODUCE_OVERRUN_SLOTS`` after its end is abandoned
(never produced again: no second version). Whether to build is the policy's
(``NodePolicy.leader``, ``may_build``)."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..core import leader_policy as lp
from ..core.poh import Entry
from ..ledger.producer import open_bank
from ..net.port import publish_shreds
from .leader import (
    MAX_TXS_PER_SLOT,
    MAX_VOTES_PER_SLOT,
    BuiltSlot,
    SlotStreamer,
    build_variants,
    entry_batches,
    rebank,
    select_transactions,
)
from .port import NetPort

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from ..core.bank import Bank
    from ..ledger.replay import SlotResult
    from .poh_service import PohService
    from .validator import Validator

log = logging.getLogger(__name__)

#: ``--poh-clock``: ``service`` = slots on the real PoH clock (this module), ``instant`` = the
#: whole slot computed at once when the leader builds it (``leader.build_slot``).
POH_CLOCKS = ("service", "instant")
#: Measured on the 4-node localnet (spec/node.md "Measurements").
DEFAULT_POH_CLOCK = "service"
#: The leader looks for new transactions and votes this often during its slot.
INTAKE_INTERVAL_S = 0.02


class ProducerStrategy(Protocol):
    """How a built slot leaves the node: honest by default; the equivocation harness is
    ``ambient_p2p/devnet/equivocate.py``."""

    def variants(self, built: BuiltSlot, parent: SlotResult,
                 rebuild: Callable[[list[bytes]], BuiltSlot]) -> list[list[bytes]]: ...

    async def deliver(self, slot: int, variants: list[list[bytes]], port: NetPort) -> bool: ...

    def status(self) -> dict[str, Any]: ...


class HonestProducer:
    def variants(self, built: BuiltSlot, parent: SlotResult,
                 rebuild: Callable[[list[bytes]], BuiltSlot]) -> list[list[bytes]]:
        return [built.packets]

    async def deliver(self, slot: int, variants: list[list[bytes]], port: NetPort) -> bool:
        return False

    def status(self) -> dict[str, Any]:
        return {}


async def produce(v: Validator, slot: int, parent: int) -> None:
    """Build ``slot`` on ``parent``: on the PoH clock when the leader service opened one
    (an equivocating producer strategy keeps the one-shot build), else at once in a
    worker thread; store it, deliver it, decide."""
    if v.poh is not None and isinstance(v.producer, HonestProducer):
        await produce_on_clock(v, v.poh, slot, parent)
        return
    async with v.ledger_lock:
        if (taken := v.take_for_build(slot, parent, v.clock.mono_ms())) is None:
            return
        txs, votes, parent_res = taken
        built, variants = await v._thread("build", build_variants, v.kp, v.genesis, parent, parent_res, slot,
                                          txs, votes, v.producer.variants)
        await v.store_built(built)
    if v.port is not None and not await v.producer.deliver(slot, variants, v.port):
        await publish_shreds(v.port.publish, variants)
    async with v.ledger_lock:
        await v.decide()


async def _intake(v: Validator, poh: PohService, slot: int, bank: Bank, st: lp.SlotIntake, stop_at: float) -> None:
    """Take what arrived, execute, record (the intake rules: ``leader_policy.SlotIntake``);
    until ``stop_at`` (trio time) or a refusal."""
    while trio.current_time() < stop_at:
        txs, votes, verified = v.take_for_intake(st, v.clock.mono_ms())
        if txs or votes:
            inc, drop, inc_votes = await v._thread("build", partial(select_transactions, verified=verified),
                                                   bank, txs, votes)
            st.executed(drop, inc_votes)
            batches = entry_batches(inc)
            st.recorded(batches, [e is not None for e in await poh.record_many(slot, batches)])
            if st.stopped:
                return
        await trio.sleep(INTAKE_INTERVAL_S)


async def _broadcast(v: Validator, poh: PohService, slot: int, streamer: SlotStreamer, ticks_per_run: int) -> None:
    """Shred the entries PoH publishes, every ``ticks_per_run`` ticks and at the last, and
    gossip them; returns when the slot is complete (or superseded)."""
    from .poh_service import SlotSuperseded

    pending: list[Entry] = []
    try:
        async for run in poh.stream(slot):
            pending += run
            if lp.publish_due(sum(1 for e in pending if e.is_tick), streamer.ticks, streamer.max_ticks, ticks_per_run):
                packets = await v._thread("build", streamer.add, pending)
                pending = []
                if v.port is not None:
                    await publish_shreds(v.port.publish, [packets])
    except SlotSuperseded:
        return


def prepare_on_clock(v: Validator, slot: int, parent: int) -> bool:
    """Start ``slot``'s PoH on ``parent`` before the slot begins (``NodePolicy.prepare``):
    the ticks of the slots skipped since the parent are then hashed as they pass, not all at
    once when the slot starts (a leader many slots after its parent could not hash them in
    time: spec/poh.md "Preparing the next slot"). :func:`produce_on_clock` starting the
    same slot on the same parent adopts it. True when the PoH (re)started."""
    poh = v.poh
    if poh is None or not isinstance(v.producer, HonestProducer):
        return False
    start_hash = v.banks[parent].last_entry_hash
    if not lp.poh_start_needed(poh.working(slot), parent, start_hash):
        return False
    return _start_poh(v, poh, slot, parent, start_hash, v.clock.wall_ms())[0]


def _start_poh(v: Validator, poh: PohService, slot: int, parent: int, start_hash: bytes,
               wall_ms: int) -> tuple[bool, lp.SlotPlan]:
    """(Re)start ``slot``'s PoH on ``parent``, its origin on the slot clock (``slot_plan``)."""
    plan = lp.slot_plan(slot, parent, genesis_ms=v.genesis_ms, slot_ms=v.slot_ms,
                        tick_ms=v.genesis.poh.target_tick_duration_us / 1000)
    return poh.start_slot(slot, parent, start_hash,
                          origin_ns=lp.poh_origin_ns(poh.clock_ns(), plan.origin_ms, wall_ms)), plan


async def produce_on_clock(v: Validator, poh: PohService, slot: int, parent: int) -> bool:
    """Produce ``slot`` on ``parent`` in real time (module docstring); True when produced,
    False when the parent went away first or the slot was abandoned."""
    async with v.ledger_lock:
        if not v.may_build(slot, parent):
            return False
        parent_res = v.banks[parent]
    g, wall0, t0 = v.genesis, v.clock.wall_ms(), trio.current_time()
    plan = _start_poh(v, poh, slot, parent, parent_res.last_entry_hash, wall0)[1]

    def at(wall_ms: float) -> float:  # trio time of a slot-clock time
        return t0 + (wall_ms - wall0) / 1000

    bank = await v._thread("build", open_bank, g, parent_res.bank, slot, v.kp.pubkey)
    streamer = SlotStreamer(v.kp, g, parent, parent_res, slot)
    st = lp.SlotIntake(MAX_TXS_PER_SLOT, MAX_VOTES_PER_SLOT)
    with trio.move_on_at(at(plan.abandon_ms)):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_intake, v, poh, slot, bank, st, at(plan.intake_stop_ms))
            await _broadcast(v, poh, slot, streamer, plan.ticks_per_publish)
            nursery.cancel_scope.cancel()  # the last tick is out (or the slot was superseded): no more intake
    if not streamer.complete:
        v.stats.produce_abandoned += 1
        log.warning("slot %d abandoned: not complete %.0f ms after its end (%d of %d ticks)", slot,
                    plan.abandon_ms - plan.end_ms, streamer.ticks, streamer.max_ticks)
        return False
    recorded = [tx for e in streamer.entries for tx in e.transactions]  # what the slot holds
    if st.must_rebank(recorded):
        bank = await v._thread("build", rebank, g, parent_res, slot, v.kp.pubkey, streamer.entries)
    built = await v._thread("build", streamer.finish, bank, recorded, st.dropped, st.votes_in(recorded))
    async with v.ledger_lock:
        if not v.may_build(slot, parent):
            return False  # the parent was dumped or pruned during the slot
        await v.store_built(built)
        await v.decide()
    return True
