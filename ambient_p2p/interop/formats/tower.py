"""Tower BFT state-transition vectors (spec/tower.md).

``vote-sequence/<case>``: input.json {parents: {slot: parent slot}, votes: [slot, ...]}; the
tower starts empty with the fork tree ``parents`` (slot 0 is the root of the tree). Each vote
is applied in order; a vote that is not newer than the last vote, not above the tower root,
or on a fork its lockouts forbid (``locked out``: after expiring, some remaining vote or the
root is not an ancestor of the voted slot) makes the whole input a must-reject.
Output: {"steps": [{"slot", "votes": [[slot, confirmation_count], ...] bottom first,
"root": slot | null, "new_root": slot | null}]}.

``switch-stake/<case>``: input.json {parents: {slot: parent slot}, stakes: {voter: LStake},
latest_votes: {voter: slot}, last_vote: slot}; fork choice rooted at slot 0 holds the tree
and each voter's latest vote. Output {"other_fork_stake", "total_stake", "switch_allowed"}:
the LStake locked out on forks other than ``last_vote``'s (spec/tower.md "Switch
threshold") and whether it exceeds 38% of the total. A vote or last vote on a slot outside
the tree is a must-reject (``unknown-slot``).

``fork-choice/<case>``: input.json {parents, stakes, latest_votes, duplicates: [slot, ...]};
fork choice rooted at slot 0 holds the tree, each voter's latest vote and a duplicate proof
for each listed slot. Output {"weights": {slot: subtree LStake} for every slot of the tree,
"total_stake", "best_slot", "confirmed": [slots > 2/3], "duplicate_confirmed": [listed slots
> 52%]} (spec/tower.md "Fork choice"). A duplicate outside the tree is a must-reject
(``unknown-slot``).
"""

from __future__ import annotations

import json
from typing import Any

from ...core.forkchoice import ForkChoice
from ...core.tower import Lockout, Tower
from .. import Case, Rejected, case_from_run

FORMAT = "tower"


def _ancestors(parents: dict[int, int], slot: int) -> set[int]:
    out: set[int] = set()
    while slot in parents and len(out) <= len(parents):
        slot = parents[slot]
        out.add(slot)
    return out


def _switch_stake(data: bytes) -> Any:
    try:
        v = json.loads(data)
        parents = {int(k): int(p) for k, p in v["parents"].items()}
        stakes = {str(k): int(s) for k, s in v["stakes"].items()}
        latest = {str(k): int(s) for k, s in v["latest_votes"].items()}
        last = int(v["last_vote"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Rejected("malformed", str(exc)) from None
    if any(p >= s or p < 0 for s, p in parents.items()) or any(s <= 0 for s in stakes.values()):
        raise Rejected("malformed", "every parent must be below its slot; stakes must be positive")
    fc = ForkChoice(0, {k.encode(): s for k, s in stakes.items()})
    for s in sorted(parents):
        if parents[s] not in fc.parent:
            raise Rejected("malformed", f"parent {parents[s]} of {s} is not in the tree")
        fc.add_slot(s, parents[s])
    for voter, slot in sorted(latest.items()):
        if slot not in fc.parent:
            raise Rejected("unknown-slot", f"latest vote of {voter} on {slot} is not in the tree")
        if voter not in stakes:
            raise Rejected("malformed", f"voter {voter} has no stake")
        fc.add_vote(voter.encode(), slot)
    if last not in fc.parent:
        raise Rejected("unknown-slot", f"last vote {last} is not in the tree")
    other = fc.other_fork_stake(last)
    # a candidate off the last vote's fork: the switch check decides on the stake alone
    allowed = Tower([Lockout(last, 1)]).check_switch(last + 1, set(), other, fc.total_stake)
    return {"other_fork_stake": other, "total_stake": fc.total_stake, "switch_allowed": allowed}


def _load_fork_choice(v: dict[str, Any]) -> tuple[ForkChoice, dict[str, int]]:
    """The fork choice of a switch-stake or fork-choice input (slot 0 is the root)."""
    parents = {int(k): int(p) for k, p in v["parents"].items()}
    stakes = {str(k): int(s) for k, s in v["stakes"].items()}
    latest = {str(k): int(s) for k, s in v["latest_votes"].items()}
    if any(p >= s or p < 0 for s, p in parents.items()) or any(s <= 0 for s in stakes.values()):
        raise Rejected("malformed", "every parent must be below its slot; stakes must be positive")
    fc = ForkChoice(0, {k.encode(): s for k, s in stakes.items()})
    for s in sorted(parents):
        if parents[s] not in fc.parent:
            raise Rejected("malformed", f"parent {parents[s]} of {s} is not in the tree")
        fc.add_slot(s, parents[s])
    for voter, slot in sorted(latest.items()):
        if voter not in stakes:
            raise Rejected("malformed", f"voter {voter} has no stake")
        fc.add_vote(voter.encode(), slot)  # a vote outside the tree counts for nothing
    return fc, latest


def _fork_choice(data: bytes) -> Any:
    try:
        v = json.loads(data)
        fc, _ = _load_fork_choice(v)
        duplicates = [int(s) for s in v["duplicates"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Rejected("malformed", str(exc)) from None
    for s in duplicates:
        if s not in fc.parent:
            raise Rejected("unknown-slot", f"duplicate {s} is not in the tree")
        fc.mark_duplicate(s)
    weights = fc.subtree_stakes()
    return {
        "weights": {str(s): weights[s] for s in sorted(weights)},
        "total_stake": fc.total_stake,
        "best_slot": fc.best_slot(),
        "confirmed": [s for s in sorted(weights) if fc.is_confirmed(s)],
        "duplicate_confirmed": [s for s in sorted(fc.duplicates) if fc.is_duplicate_confirmed(s)],
    }


def run(handler: str, data: bytes) -> Any:
    if handler == "switch-stake":
        return _switch_stake(data)
    if handler == "fork-choice":
        return _fork_choice(data)
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


def _switch_case(name: str, desc: str, parents: dict[int, int], stakes: dict[str, int],
                 latest: dict[str, int], last: int) -> Case:
    inp = {"parents": {str(k): p for k, p in sorted(parents.items())}, "stakes": stakes,
           "latest_votes": latest, "last_vote": last}
    data = (json.dumps(inp, indent=1, sort_keys=True) + "\n").encode()
    return case_from_run(run, "switch-stake", name, data, desc, "input.json")


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
        *_switch_cases(),
        *_fork_choice_cases(),
    ]


def _fc_case(name: str, desc: str, parents: dict[int, int], stakes: dict[str, int], latest: dict[str, int],
             duplicates: list[int]) -> Case:
    inp = {"parents": {str(k): p for k, p in sorted(parents.items())}, "stakes": stakes, "latest_votes": latest,
           "duplicates": duplicates}
    data = (json.dumps(inp, indent=1, sort_keys=True) + "\n").encode()
    return case_from_run(run, "fork-choice", name, data, desc, "input.json")


def _fork_choice_cases() -> list[Case]:
    # 0-1-2-3-4 and forks 1-5-6, 2-7
    tree = {1: 0, 2: 1, 3: 2, 4: 3, 5: 1, 6: 5, 7: 2}
    st = {"a": 40, "b": 30, "c": 20, "d": 10}
    return [
        _fc_case("no-votes", "no votes: every weight 0, ties go to the lower slot down to a leaf", tree, st, {}, []),
        _fc_case("heaviest-subtree", "30 + 20 on fork 5-6 outweigh 40 on 4: the best slot is 6", tree, st,
                 {"a": 4, "b": 6, "c": 5}, []),
        _fc_case("subtree-not-tip", "weights add up whole subtrees: 1 -> 2 (40 + 30 + 10 from 4, 7, 3) over 5 (20), then 3 (50) over 7 (30)", tree,
                 st, {"a": 4, "b": 7, "c": 6, "d": 3}, []),
        _fc_case("tie-lower-slot", "equal weights on 3 and 7 under 2: the lower slot wins", tree,
                 {"a": 10, "b": 10}, {"a": 3, "b": 7}, []),
        _fc_case("unknown-vote-ignored", "a latest vote on a slot outside the tree counts for nothing", tree, st,
                 {"a": 99, "b": 6}, []),
        _fc_case("duplicate-ineligible", "5 is a duplicate with 50% on its subtree (not > 52%): 5 and 6 are "
                 "ineligible, the best slot is the heaviest other path", tree, st, {"a": 5, "d": 6, "b": 4}, [5]),
        _fc_case("duplicate-confirmed", "5 is a duplicate with 60% on its subtree (> 52%): eligible again", tree, st,
                 {"a": 6, "c": 5, "b": 4}, [5]),
        _fc_case("duplicate-blocks-subtree", "3 is an unconfirmed duplicate: the walk stops at 2 although 4 is "
                 "heaviest below it", {1: 0, 2: 1, 3: 2, 4: 3}, st, {"a": 4}, [3]),
        _fc_case("duplicate-root", "the root 0 is an unconfirmed duplicate (40%): the best slot is the root",
                 tree, st, {"a": 4}, [0]),
        _fc_case("confirmed-levels", "70% on the chain to 3: 0..3 confirmed (> 2/3), 4 is not", tree, st,
                 {"a": 3, "b": 4}, []),
        _fc_case("unknown-duplicate", "a duplicate proof for a slot outside the tree: must reject", tree, st,
                 {"a": 4}, [9]),
    ]


def _switch_cases() -> list[Case]:
    # three forks off slot 1: a = 1-2, b = 1-3, c = 1-4-5; and 2-10-12, 3-9 for the lockout cases
    three = {1: 0, 2: 1, 3: 1, 4: 1, 5: 4}
    stakes = {"me": 20, "b": 30, "c": 35, "d": 15}
    tree = {1: 0, 2: 1, 3: 1, 9: 3, 10: 2, 12: 10}
    st4 = {"a": 40, "b": 30, "c": 20, "d": 10}
    return [
        _switch_case("third-fork-counts", "last vote on 2 (fork a); 30% on fork b, 35% on fork c: 65% on other "
                     "forks, switching allowed although no single fork holds 38%", three, stakes,
                     {"me": 2, "b": 3, "c": 5}, 2),
        _switch_case("own-fork-never-counts", "votes on the last vote, its ancestors and descendants do not count",
                     three, stakes, {"me": 2, "b": 1, "c": 2, "d": 0}, 2),
        _switch_case("expired-lockout-ignored", "a vote on 3 (other fork) is 7 below the last vote 10: its shortest "
                     "lockout ended; a vote on 9 (within 2) counts", tree, st4, {"a": 12, "b": 3, "c": 9}, 10),
        _switch_case("newer-vote-counts", "votes above the last vote on another fork count outright (agave's gossip "
                     "votes)", tree, st4, {"a": 12, "b": 9, "c": 9}, 9),
        _switch_case("at-threshold-not-enough", "exactly 38% on other forks is not more than 38%", three,
                     {"me": 62, "b": 38}, {"me": 2, "b": 3}, 2),
        _switch_case("unknown-last-vote", "the last vote is not in the tree: must reject", three, stakes,
                     {"b": 3}, 7),
    ]
