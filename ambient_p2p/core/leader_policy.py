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

``Skip`` and ``Build`` end the slot for this leader (``NodePolicy.leader`` asks once per
slot of its own, then answers ``Skip("decided")``; other leaders' slots: ``Skip("not-leader")``);
``WaitForParent`` is asked again when replay freezes a slot or at ``until_ms`` (the grace
deadline), whichever comes first.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Wait this fraction of a slot for the previous slot before building on the best fork.
LEADER_SKIP_GRACE_SLOTS = 0.75


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
