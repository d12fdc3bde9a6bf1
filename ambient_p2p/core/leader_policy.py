"""When a leader builds its slot, and on what (normative text: spec/node.md "Slot clock
and production"; agave banking_stage/decision_maker.rs is a pure function of injected
predicates in the same way).

Rules, for the current clock slot ``slot`` (start ``start_ms``, wall clock), when the
schedule names this node and it has not decided ``slot`` yet, with ``best`` = the slot the
consensus driver says to build on:

| condition (first that holds)                                    | decision                        |
|-----------------------------------------------------------------|---------------------------------|
| ``best >= slot`` (someone is ahead of our clock)                | ``Skip("parent-ahead")``        |
| ``best`` is not frozen here                                     | ``WaitForParent("parent-not-frozen")`` |
| behind                                                          | ``WaitForParent("behind")``     |
| syncing and the sync timeout has not passed                     | ``WaitForParent("syncing")``    |
| ``best == slot - 1`` or ``best`` is our own slot                | ``Build(best, slot)``           |
| ``now >= start + LEADER_SKIP_GRACE_SLOTS * slot_ms``            | ``Build(best, slot)`` (previous leader late or absent: its slots are skipped) |
| otherwise                                                       | ``WaitForParent("grace", until)`` |

Production on the PoH clock (``node/production.py`` performs it; :func:`slot_plan`,
:func:`publish_due`, :func:`must_rebank`):

| rule                                   | value                                                         |
|----------------------------------------|---------------------------------------------------------------|
| PoH's first hash                       | the start of slot ``parent + 1`` (skipped slots hashed too)   |
| intake (take, execute, record) stops   | ``INTAKE_STOP_TICKS`` ticks before the slot's end             |
| shred + gossip a run of entries when   | ``ticks_per_publish`` ticks are pending, or the last tick is  |
| ``ticks_per_publish``                  | ``ceil(STREAM_INTERVAL_MS / tick_ms)`` (at least 1)           |
| abandon (never produce) when not done  | ``PRODUCE_OVERRUN_SLOTS`` slot durations after the slot's end |
| recompute the bank from the entries if | a batch executed was not recorded, or the recorded            |
|                                        | transactions differ from those executed                       |

When the leader asks again (:func:`next_wake_ms`; the shell sleeps until then or until a
slot freezes, whichever comes first):

| decision            | wake at                                                                   |
|---------------------|---------------------------------------------------------------------------|
| ``Build``           | at once (after the build; on the PoH clock that is the slot's end)        |
| ``WaitForParent``   | the soonest of: the next slot's start, ``until_ms``, ``now + LEADER_WAIT_RECHECK_MS`` |
| ``Skip``            | the next slot's start                                                     |

What the leader takes into its slot on the PoH clock (:class:`SlotIntake`, one per slot):

| event                              | rule / new state                                               |
|------------------------------------|----------------------------------------------------------------|
| ``take(txs, votes)``               | transactions: the mempool's, at most ``tx_room`` (cap minus taken) and none taken before (``seen_txs``); votes: those not taken before, at most the vote cap minus taken; anything taken marks the intake ``dirty`` (executed, not yet recorded) |
| ``executed(dropped, landed)``      | refused transactions kept as ``dropped``; landed votes by raw bytes |
| ``recorded(batches, accepted)``    | batches PoH recorded, in order, are in the slot (``included``); at the first refused one (the last tick is out) the intake stops (``stopped``), later batches are not in the slot and ``dirty`` stays; all recorded: ``dirty`` clears |

Whether the working PoH is kept (:func:`poh_start_needed`): a slot to prepare or build whose
PoH already runs on the same parent from the same hash is adopted; otherwise PoH (re)starts
it (superseding any other working slot).

``Skip`` and ``Build`` end the slot for this leader (``NodePolicy.leader`` asks once per
slot of its own, then answers ``Skip("decided")``; other leaders' slots: ``Skip("not-leader")``);
``WaitForParent`` is asked again when replay freezes a slot or at ``until_ms`` (the grace
deadline), whichever comes first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .messages import Genesis
from .pools import tx_key
from .vote_program import VoteTx

#: Wait this fraction of a slot for the previous slot before building on the best fork.
LEADER_SKIP_GRACE_SLOTS = 0.75
#: On the PoH clock the leader takes no new transactions this many ticks before its slot's
#: end (a later record would likely be refused: the last tick is out).
INTAKE_STOP_TICKS = 2
#: Entries are shredded and gossiped at least this often (ms of ticks): every publication
#: is at least one 32:32 FEC set (64 shreds), so not every entry gets its own.
STREAM_INTERVAL_MS = 200
#: A slot not complete this many slot durations after its end is abandoned (the next
#: leader stops waiting for it after LEADER_SKIP_GRACE_SLOTS from its own slot's start).
PRODUCE_OVERRUN_SLOTS = LEADER_SKIP_GRACE_SLOTS
#: While waiting for a parent in its own slot, the leader re-decides at least this often
#: (readiness can change without a freeze, e.g. a pending vote ages out).
LEADER_WAIT_RECHECK_MS = 50


def slot_duration_ms(genesis: Genesis) -> float:
    """The slot clock's slot (spec/node.md "Slot clock and production")."""
    return genesis.poh.ticks_per_slot * genesis.poh.target_tick_duration_us / 1000.0


@dataclass(frozen=True)
class SlotPlan:
    """When a leader on the PoH clock does what in its slot (wall ms; the table above)."""

    origin_ms: float
    intake_stop_ms: float
    end_ms: float
    abandon_ms: float
    ticks_per_publish: int


def slot_plan(slot: int, parent: int, *, genesis_ms: float, slot_ms: float, tick_ms: float) -> SlotPlan:
    end = genesis_ms + (slot + 1) * slot_ms
    return SlotPlan(genesis_ms + (parent + 1) * slot_ms, end - INTAKE_STOP_TICKS * tick_ms, end,
                    end + PRODUCE_OVERRUN_SLOTS * slot_ms, max(1, math.ceil(STREAM_INTERVAL_MS / tick_ms)))


def publish_due(pending_ticks: int, published_ticks: int, max_ticks: int, ticks_per_publish: int) -> bool:
    return pending_ticks >= ticks_per_publish or published_ticks + pending_ticks == max_ticks


def must_rebank(executed_unrecorded: bool, recorded: Sequence[bytes], executed: Sequence[bytes]) -> bool:
    return executed_unrecorded or list(recorded) != list(executed)


@dataclass(frozen=True)
class Build:
    parent: int
    slot: int


@dataclass(frozen=True)
class WaitForParent:
    reason: str
    until_ms: float | None = None  # re-decide at this wall time at the latest


@dataclass(frozen=True)
class Skip:
    reason: str


Decision = Build | WaitForParent | Skip


def leader_decision(
    now_ms: int,
    slot: int,
    best: int,
    *,
    start_ms: float,
    slot_ms: float,
    best_frozen: bool,
    best_is_own: bool,
    behind: bool,
    may_produce: bool,
) -> Decision:
    if best >= slot:
        return Skip("parent-ahead")
    if not best_frozen:
        return WaitForParent("parent-not-frozen")
    if behind:
        return WaitForParent("behind")
    if not may_produce:
        return WaitForParent("syncing")
    if best == slot - 1 or best_is_own:
        return Build(best, slot)
    deadline = start_ms + LEADER_SKIP_GRACE_SLOTS * slot_ms
    if now_ms >= deadline:
        return Build(best, slot)
    return WaitForParent("grace", deadline)


def next_wake_ms(now_ms: float, decision: Decision, next_slot_start_ms: float) -> float:
    """When the leader asks again (the wake table above); a freeze may wake it sooner."""
    if isinstance(decision, Build):
        return now_ms
    if isinstance(decision, WaitForParent):
        until = math.inf if decision.until_ms is None else decision.until_ms
        return min(next_slot_start_ms, until, now_ms + LEADER_WAIT_RECHECK_MS)
    return next_slot_start_ms


def poh_start_needed(working: tuple[int, bytes] | None, parent: int, start_hash: bytes) -> bool:
    """PoH must (re)start a slot unless it already runs it on ``parent`` from ``start_hash``
    (``working``: the running slot's parent and start hash, None when not running)."""
    return working != (parent, start_hash)


def poh_origin_ns(clock_ns: int, origin_ms: float, now_ms: float) -> int:
    """``origin_ns`` on the PoH clock (whose reading now is ``clock_ns``) of the slot-clock
    time ``origin_ms``, the wall clock reading ``now_ms`` now."""
    return clock_ns + int((origin_ms - now_ms) * 1e6)


def gossip_batches(variants: Sequence[Sequence[bytes]], per_message: int) -> list[list[bytes]]:
    """A built slot's shreds as gossip messages of at most ``per_message`` shreds each, the
    variants interleaved message by message (an equivocating producer's versions race)."""
    chunks = [[list(v[i:i + per_message]) for i in range(0, len(v), per_message)] for v in variants]
    return [c[i] for i in range(max((len(c) for c in chunks), default=0)) for c in chunks if i < len(c)]


@dataclass
class SlotIntake:
    """What a leader on the PoH clock put in its working slot so far (the intake table)."""

    max_txs: int
    max_votes: int
    included: list[bytes] = field(default_factory=list)  # recorded, in entry order
    dropped: list[bytes] = field(default_factory=list)
    landed_votes: dict[bytes, VoteTx] = field(default_factory=dict)  # executed votes that landed, by raw
    seen_txs: set[bytes] = field(default_factory=set)
    seen_votes: set[bytes] = field(default_factory=set)
    n_txs: int = 0
    n_votes: int = 0
    dirty: bool = False  # the bank executed a batch that is not (yet) recorded
    refusals: int = 0

    @property
    def tx_room(self) -> int:
        return self.max_txs - self.n_txs

    @property
    def stopped(self) -> bool:
        return self.refusals > 0

    def take(self, txs: Sequence[bytes], votes: Sequence[VoteTx]) -> tuple[list[bytes], list[VoteTx]]:
        """``txs`` from the mempool (asked for ``tx_room`` excluding ``seen_txs``) and the
        vote pool's ``votes``: what this round executes."""
        txs = [r for r in txs if tx_key(r) not in self.seen_txs][: self.tx_room]
        new_votes = [vt for vt in votes if vt.raw not in self.seen_votes][: self.max_votes - self.n_votes]
        if txs or new_votes:
            self.seen_txs.update(tx_key(r) for r in txs)
            self.seen_votes.update(vt.raw for vt in new_votes)
            self.n_txs += len(txs)
            self.n_votes += len(new_votes)
            self.dirty = True
        return txs, new_votes

    def executed(self, dropped: Sequence[bytes], landed: Sequence[VoteTx]) -> None:
        self.dropped += dropped
        self.landed_votes.update((vt.raw, vt) for vt in landed)

    def recorded(self, batches: Sequence[Sequence[bytes]], accepted: Sequence[bool]) -> None:
        """PoH's answers (``accepted``) to the take's ``batches``, in order."""
        for batch, ok in zip(batches, accepted, strict=True):
            if not ok:
                self.refusals += 1
                return  # the slot's last tick is out: the bank is rebuilt from the entries
            self.included += batch
        self.dirty = False

    def must_rebank(self, recorded: Sequence[bytes]) -> bool:
        """The bank must be recomputed from the slot's entries (:func:`must_rebank`)."""
        return must_rebank(self.dirty, recorded, self.included)

    def votes_in(self, recorded: Sequence[bytes]) -> list[VoteTx]:
        """The landed votes the slot holds, in its order."""
        return [vt for raw in recorded if (vt := self.landed_votes.get(raw)) is not None]
