"""Tower BFT state-transition vectors (spec/tower.md).

``vote-sequence/<case>``: input.json {parents: {slot: parent slot}, votes: [slot, ...]}; the
tower starts empty with the fork tree ``parents`` (slot 0 is the root of the tree). Each vote
is applied in order; a vote that is not newer than the last vote, not above the tower root,
or on a fork its lockouts forbid (``locked out``: after expiring, some remaining vote or the
root is not an ancestor of the voted slot) makes the whole input a must-reject.
Output: {"steps": [{"slot", "votes": [[slot, confirmation_count], ...] bottom first,
"root": slot | null, "new_root": slot | null}]}.
"""

from __future__ import annotations

import json
from typing import Any

from ...core.tower import Tower
from .. import Case, Rejected, case_from_run

FORMAT = "tower"


def _ancestors(parents: dict[int, int], slot: int) -> set[int]:
    out: set[int] = set()
    while slot in parents and len(out) <= len(parents):
        slot = parents[slot]
        out.add(slot)
    return out


def run(handler: str, data: bytes) -> Any:
    if handler != "vote-sequence":
        raise Rejected("unknown-handler", handler)
    try:
        v = json.loads(data)
        parents = {int(k): int(p) for k, p in v["parents"].items()}
        votes = [int(s) for s in v["votes"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Rejected("malformed", str(exc)) from None
    if any(p >= s or p < 0 for s, p in parents.items()) or len(votes) > 1000:
        raise Rejected("malformed", "every parent must be below its slot; at most 1000 votes")
    t = Tower()
    steps = []
    for s in votes:
        if s not in parents:
            raise Rejected("unknown-slot", f"slot {s} is not in the fork tree")
        last = t.last_voted_slot
        if last is not None and s <= last:
            raise Rejected("not-newer", f"vote on {s} is not newer than the last vote {last}")
        if t.root is not None and s <= t.root:
            raise Rejected("not-above-root", f"vote on {s} is not above the root {t.root}")
        if t.is_locked_out(s, _ancestors(parents, s)):
            raise Rejected("locked-out", f"vote on {s} violates a lockout (a conflicting fork)")
        new_root = t.record_vote(s)
        steps.append({"slot": s, "votes": [[x.slot, x.confirmation_count] for x in t.votes], "root": t.root,
                      "new_root": new_root})
    return {"steps": steps}


def _case(name: str, desc: str, parents: dict[int, int], votes: list[int]) -> Case:
    inp = {"parents": {str(k): p for k, p in sorted(parents.items())}, "votes": votes}
    data = (json.dumps(inp, indent=1, sort_keys=True) + "\n").encode()
    return case_from_run(run, "vote-sequence", name, data, desc, "input.json")


def _line(n: int) -> dict[int, int]:
    return {s: s - 1 for s in range(1, n + 1)}


def cases() -> list[Case]:
    # fork tree: 0-1-2-3-4-5 and a fork 2-6-7-...-12
    forked = {**_line(5), 6: 2, **{s: s - 1 for s in range(7, 13)}}
    return [
        _case("linear-5", "five consecutive votes: lockouts double as votes stack", _line(5), [1, 2, 3, 4, 5]),
        _case("linear-40-roots", "40 consecutive votes: the 32nd vote roots slot 1, then one root per vote",
              _line(40), list(range(1, 41))),
        _case("expire-on-gap", "votes 1,2,3 then 10: expired lockouts pop before the push",
              _line(10), [1, 2, 3, 10]),
        _case("switch-after-expiry", "votes on 3 and 4, then on 9 (fork via 2) once 3 and 4 expired",
              forked, [1, 2, 3, 4, 9]),
        _case("locked-out-fork", "votes on 3 and 4, then on 6 (fork via 2) while 3 is locked: must reject",
              forked, [1, 2, 3, 4, 6]),
        _case("not-newer", "a vote on a slot below the last vote: must reject", _line(5), [1, 3, 2]),
        _case("repeat", "the same slot twice: must reject", _line(5), [1, 2, 2]),
        _case("unknown-slot", "a vote on a slot outside the tree: must reject", _line(3), [1, 7]),
    ]
