"""A leader's slot on the PoH clock (``--poh-clock service``; spec/node.md "Slot clock and
production", spec/poh.md "Service"; agave banking stage -> ``PohRecorder`` -> broadcast
stage).

The node's one :class:`~ambient_p2p.node.poh_service.PohService` (opened by the leader
service) hashes the slot in real time from the parent's last entry hash; its first hash
is due at the start of slot ``parent + 1`` and its last tick at the end of ``slot`` (ticks
already due when the leader starts, e.g. after waiting for a late parent, are caught up
flat out). Meanwhile:

* **intake**: every ``INTAKE_INTERVAL_S`` the leader takes the transactions and votes that
  arrived since it last looked (the first look is at the slot's start), executes them on
  the slot's bank (``select_transactions``, a worker thread) and records them,
  ``TXS_PER_ENTRY`` per entry, as PoH reaches them; it stops taking new ones
  ``INTAKE_STOP_TICKS`` ticks before the slot's end. Our Bank commits on execute (agave
  commits after PoH recorded), so a batch executed but refused (the last tick was out)
  or never recorded leaves a bank that does not match the slot: the leader then
  recomputes the bank from the recorded entries (``rebank``, what replay does);
* **broadcast**: the entries PoH publishes are shredded (``SlotStreamer``, chained FEC
  sets) at least every ``STREAM_INTERVAL_MS`` of ticks and gossiped at once, so peers hold
  most of the slot when its last tick is out;
* **end**: after the last tick the bank is frozen on the last entry hash, the shreds and
  bank-hash record are stored and the slot is ``Produced`` (as a one-shot build), then
  the leader decides (it normally votes on its own slot).

A slot that is not complete ``PRODUCE_OVERRUN_SLOTS`` slot durations after its end (a PoH
worker that cannot keep up, a broadcast stuck on the network) is **abandoned**: nothing is
stored, the slot is never produced again (no second version: no equivocation), and the
leader service goes on with the next slot, whose leader (another node, or this one) has
by then given up waiting for it (``LEADER_SKIP_GRACE_SLOTS``). Its transactions stay in
the pool. The shreds already gossiped make an incomplete slot at peers, which never
replays and is pruned below the root.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ..core.leader_policy import LEADER_SKIP_GRACE_SLOTS
from ..core.poh import Entry
from ..core.pools import tx_key
from ..core.vote_program import VoteTx
from .leader import MAX_TXS_PER_SLOT, MAX_VOTES_PER_SLOT, SlotStreamer, entry_batches, rebank, select_transactions

if TYPE_CHECKING:  # pragma: no cover
    from ..core.bank import Bank
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
#: ... and stops taking new ones this many ticks before the slot's end (a later record
#: would likely be refused: the last tick is out).
INTAKE_STOP_TICKS = 2
#: Entries are shredded and gossiped at least this often (ms of ticks): every publication
#: is at least one 32:32 FEC set (64 shreds), so not every entry gets its own.
STREAM_INTERVAL_MS = 200
#: A slot not complete this many slot durations after its end is abandoned (the next
#: leader stops waiting for it after LEADER_SKIP_GRACE_SLOTS from its own slot's start).
PRODUCE_OVERRUN_SLOTS = LEADER_SKIP_GRACE_SLOTS


@dataclass
class _InSlot:
    """What the leader put in its working slot so far."""

    included: list[bytes] = field(default_factory=list)  # recorded, in entry order
    dropped: list[bytes] = field(default_factory=list)
    landed_votes: dict[bytes, VoteTx] = field(default_factory=dict)  # executed votes that landed, by raw
    seen_txs: set[bytes] = field(default_factory=set)
    seen_votes: set[bytes] = field(default_factory=set)
    n_txs: int = 0
    n_votes: int = 0
    dirty: bool = False  # the bank executed a batch that is not (yet) recorded
    refused: int = 0


async def _intake(v: Validator, poh: PohService, slot: int, bank: Bank, st: _InSlot, stop_at: float) -> None:
    """Take what arrived, execute, record; until ``stop_at`` (trio time) or a refusal."""
    while trio.current_time() < stop_at:
        txs = [r for r in v.mempool.take(v.clock.mono_ms()) if tx_key(r) not in st.seen_txs]
        txs = txs[: MAX_TXS_PER_SLOT - st.n_txs]
        votes = [vt for vt in v.vote_pool.take() if vt.raw not in st.seen_votes][: MAX_VOTES_PER_SLOT - st.n_votes]
        if txs or votes:
            st.seen_txs.update(tx_key(r) for r in txs)
            st.seen_votes.update(vt.raw for vt in votes)
            st.n_txs += len(txs)
            st.n_votes += len(votes)
            st.dirty = True
            inc, drop, inc_votes = await v._thread("build", select_transactions, bank, txs, votes)
            st.dropped += drop
            st.landed_votes.update((vt.raw, vt) for vt in inc_votes)
            for batch in entry_batches(inc):
                if await poh.record(slot, batch) is None:
                    st.refused += 1
                    return  # the slot's last tick is out: the bank is rebuilt from the entries
                st.included += batch
            st.dirty = False
        await trio.sleep(INTAKE_INTERVAL_S)


async def _broadcast(v: Validator, poh: PohService, slot: int, streamer: SlotStreamer, ticks_per_run: int) -> None:
    """Shred the entries PoH publishes, every ``ticks_per_run`` ticks and at the last, and
    gossip them; returns when the slot is complete (or superseded)."""
    from .poh_service import SlotSuperseded

    pending: list[Entry] = []
    try:
        async for run in poh.stream(slot):
            pending += run
            ticks = sum(1 for e in pending if e.is_tick)
            if ticks >= ticks_per_run or streamer.ticks + ticks == streamer.max_ticks:
                packets = await v._thread("build", streamer.add, pending)
                pending = []
                if v.port is not None:
                    await v._publish([packets])
    except SlotSuperseded:
        return


async def produce_on_clock(v: Validator, poh: PohService, slot: int, parent: int) -> bool:
    """Produce ``slot`` on ``parent`` in real time (module docstring); True when produced,
    False when the parent went away first or the slot was abandoned."""
    from .validator import store_built_job

    async with v.ledger_lock:
        if not v.may_build(slot, parent):
            return False
        parent_res = v.banks[parent]
    g = v.genesis
    tick_ms = g.poh.target_tick_duration_us / 1000
    wall0, t0 = v.clock.wall_ms(), trio.current_time()

    def at(wall_ms: float) -> float:  # trio time of a slot-clock time
        return t0 + (wall_ms - wall0) / 1000

    origin_ms, end_ms = v.slot_start_ms(parent + 1), v.slot_start_ms(slot + 1)
    poh.start_slot(slot, parent, parent_res.last_entry_hash, origin_ns=poh.clock_ns() + int((origin_ms - wall0) * 1e6))
    bank = await v._thread("build", parent_res.bank.child, slot, v.kp.pubkey)
    streamer = SlotStreamer(v.kp, g, parent, parent_res, slot)
    st = _InSlot()
    with trio.move_on_at(at(end_ms + PRODUCE_OVERRUN_SLOTS * v.slot_ms)):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_intake, v, poh, slot, bank, st, at(end_ms - INTAKE_STOP_TICKS * tick_ms))
            await _broadcast(v, poh, slot, streamer, max(1, math.ceil(STREAM_INTERVAL_MS / tick_ms)))
            nursery.cancel_scope.cancel()  # the last tick is out (or the slot was superseded): no more intake
    if not streamer.complete:
        v.stats.produce_abandoned += 1
        log.warning("slot %d abandoned: not complete %.0f ms after its end (%d of %d ticks)", slot,
                    PRODUCE_OVERRUN_SLOTS * v.slot_ms, streamer.ticks, streamer.max_ticks)
        return False
    # the entries are what the slot holds; a batch executed but not recorded (refused, or
    # cut off by the end of the slot) means the bank must be recomputed from them
    recorded = [tx for e in streamer.entries for tx in e.transactions]
    if st.dirty or recorded != st.included:
        bank = await v._thread("build", rebank, parent_res, slot, v.kp.pubkey, streamer.entries)
    votes = [vt for raw in recorded if (vt := st.landed_votes.get(raw)) is not None]
    built = await v._thread("build", streamer.finish, bank, recorded, st.dropped, votes)
    async with v.ledger_lock:
        if not v.may_build(slot, parent):
            return False  # the parent was dumped or pruned during the slot
        res, metas = await v._thread("build", store_built_job, v.bs, built, v._leaders())
        v.commit_built(built, res, metas)
        await v._replay_ready()
        await v.decide()
    return True


def poh_status(v: Validator) -> dict[str, Any]:
    """Status fields of the leader's PoH clock."""
    out: dict[str, Any] = {"clock": v.poh_clock, "abandoned": v.stats.produce_abandoned}
    if v.poh is not None:
        recent = v.poh.recent_stats()
        out.update(late_reports=v.poh.late_reports, recent_slots=len(recent),
                   recent_late_ticks=sum(s.late_ticks for s in recent),
                   recent_max_lag_ms=round(max((s.max_lag_ns for s in recent), default=0) / 1e6, 1))
    return out
