"""Votes the consensus driver cannot count yet, and duplicate confirmation (normative
text: spec/node.md "Duplicate slots"; agave repair/cluster_slot_state_verifier.rs).

Rules:

1. A valid peer vote that the driver did not count is classified by what this node holds
   of the voted slot (``own``): ``Unknown`` (not replayed, above the root) -> kept as a
   *pending* vote (latest per voter per slot, at most ``MAX_PENDING_VOTE_SLOTS`` slots:
   the lowest slot is evicted first), counted when the slot freezes; ``Frozen(h)`` with
   another hash, or ``Dead`` -> kept as a *foreign* vote (a vote for another version).
2. When the foreign votes for one hash of a slot exceed ``DUPLICATE_THRESHOLD`` (52 %) of
   LStake (the one rule, :func:`core.tower.is_duplicate_confirmed`), that version is
   duplicate-confirmed: effect ``DumpSlot(slot, hash)`` once per (slot, hash).
3. A slot that freezes releases its pending votes (``CountVotes``); a slot that dies turns
   its pending votes into foreign votes (they name a version we do not have) and may
   thereby confirm another version (the A5 case: a dead own version is dumped too).
4. After a dump, the votes for the confirmed hash wait as pending votes (received now):
   they count once repair brings that version, and meanwhile make the node *behind*.
5. ``prune(root)`` drops everything at or below the root.

Transition table per (slot, voter) vote, keyed by (what we hold, event):
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from .consensus import Vote
from .slots import TransitionError
from .tower import is_duplicate_confirmed

_V = TypeVar("_V")

#: Slots for which votes wait (pending or foreign); the lowest slot is evicted first.
MAX_PENDING_VOTE_SLOTS = 1024


@dataclass(frozen=True)
class Unknown:
    """We hold no bank for the slot (not replayed yet)."""


@dataclass(frozen=True)
class FrozenAs:
    bank_hash: bytes


@dataclass(frozen=True)
class DeadHere:
    """Our version of the slot failed replay."""


Own = Unknown | FrozenAs | DeadHere


@dataclass(frozen=True)
class DumpSlot:
    slot: int
    bank_hash: bytes


@dataclass(frozen=True)
class CountVotes:
    votes: tuple[Vote, ...]


Effect = DumpSlot | CountVotes

#: (what we hold, event) -> (where the vote goes, effects)
TRANSITIONS: dict[tuple[str, str], tuple[str, tuple[type, ...]]] = {
    ("unknown", "vote"): ("pending", ()),
    ("frozen-other-hash", "vote"): ("foreign", (DumpSlot,)),  # DumpSlot once confirmed
    ("frozen-same-hash", "vote"): ("dropped", ()),  # the driver counted or refused it
    ("dead", "vote"): ("foreign", (DumpSlot,)),
    ("pending", "frozen"): ("counted", (CountVotes,)),
    ("pending", "dead"): ("foreign", (DumpSlot,)),
    ("foreign", "dumped"): ("pending", ()),  # confirming votes wait for the repaired version
    ("any", "rooted"): ("dropped", ()),
}


def _kind(own: Own, vote: Vote) -> str:
    if isinstance(own, Unknown):
        return "unknown"
    if isinstance(own, DeadHere):
        return "dead"
    if isinstance(own, FrozenAs):
        return "frozen-same-hash" if own.bank_hash == vote.bank_hash else "frozen-other-hash"
    raise TransitionError("bad-own-version", repr(own))


class DuplicateTracker:
    def __init__(self) -> None:
        self.root = 0
        self.pending: dict[int, dict[bytes, tuple[Vote, int]]] = {}  # slot -> voter -> (vote, received ms)
        self.foreign: dict[int, dict[bytes, Vote]] = {}  # slot -> voter -> vote
        self.dumped: set[tuple[int, bytes]] = set()

    def on_vote(self, vote: Vote, own: Own, now_ms: int, stakes: Mapping[bytes, int], total: int) -> list[Effect]:
        """Rule 1-2 for a vote the driver did not count (``now_ms``: monotonic)."""
        kind = _kind(own, vote)
        if vote.slot <= self.root or TRANSITIONS[(kind, "vote")][0] == "dropped":
            return []
        if kind == "unknown":
            per = self.pending.setdefault(vote.slot, {})
            old = per.get(vote.voter)
            if old is None or old[0].timestamp_ms <= vote.timestamp_ms:
                per[vote.voter] = (vote, now_ms)
            self._bound(self.pending)
            return []
        return self._foreign(vote, stakes, total)

    def _foreign(self, vote: Vote, stakes: Mapping[bytes, int], total: int) -> list[Effect]:
        per = self.foreign.setdefault(vote.slot, {})
        per[vote.voter] = vote
        self._bound(self.foreign)
        h = vote.bank_hash
        stake = sum(stakes.get(v, 0) for v, fv in per.items() if fv.bank_hash == h)
        if is_duplicate_confirmed(stake, total) and (vote.slot, h) not in self.dumped:
            self.dumped.add((vote.slot, h))
            return [DumpSlot(vote.slot, h)]
        return []

    @staticmethod
    def _bound(d: dict[int, _V]) -> None:
        while len(d) > MAX_PENDING_VOTE_SLOTS:
            del d[min(d)]

    def on_frozen(self, slot: int) -> list[Effect]:
        """Rule 3: the pending votes of ``slot`` are counted now (ascending voter)."""
        per = self.pending.pop(slot, {})
        return [CountVotes(tuple(v for _k, (v, _t) in sorted(per.items())))] if per else []

    def on_dead(self, slot: int, stakes: Mapping[bytes, int], total: int) -> list[Effect]:
        """Rule 3: pending votes of a slot that died here are votes for another version."""
        effects: list[Effect] = []
        for _voter, (vote, _t) in sorted(self.pending.pop(slot, {}).items()):
            effects += self._foreign(vote, stakes, total)
        return effects

    def on_dumped(self, slot: int, bank_hash: bytes, now_ms: int) -> None:
        """Rule 4."""
        per = self.pending.setdefault(slot, {})
        for v in self.foreign.pop(slot, {}).values():
            if v.bank_hash == bank_hash:
                per[v.voter] = (v, now_ms)
        if not per:
            del self.pending[slot]

    def pending_receipts(self) -> dict[int, int]:
        """Slot -> when its latest pending vote arrived (ms, monotonic): readiness input."""
        return {s: max(t for _v, t in per.values()) for s, per in self.pending.items() if per}

    def prune(self, root: int) -> None:
        """Rule 5."""
        self.root = max(self.root, root)
        self.pending = {s: p for s, p in self.pending.items() if s > root}
        self.foreign = {s: p for s, p in self.foreign.items() if s > root}
        self.dumped = {(s, h) for s, h in self.dumped if s > root}
