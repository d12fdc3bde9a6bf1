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

``Skip`` and ``Build`` end the slot for this leader (``NodePolicy.leader`` asks once per
slot of its own, then answers ``Skip("decided")``; other leaders' slots: ``Skip("not-leader")``);
``WaitForParent`` is asked again when replay freezes a slot or at ``until_ms`` (the grace
deadline), whichever comes first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
