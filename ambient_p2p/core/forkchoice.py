"""Heaviest-subtree fork choice weighted by LStake (spec/tower.md), after agave's
``HeaviestSubtreeForkChoice``.

State: a tree of slots (each with its parent) rooted at the node's root, the latest vote of
each validator, and each validator's LStake for the epoch. The weight of a slot's subtree
is the LStake of validators whose latest vote lies in it. The best slot is found by walking
from the root to the heaviest child (ties: the lower slot) until a leaf.

Duplicate (equivocated) slots: once the blockstore holds a proof that a slot's leader
produced two versions, the slot and its descendants are ineligible until the slot is
*duplicate-confirmed*: > 52% of LStake voted on it (our version) or a descendant.

Pure: events in (add_slot, add_vote, mark_duplicate, set_root), answers out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from .tower import INITIAL_LOCKOUT, SUPERMAJORITY, is_duplicate_confirmed


class ForkChoiceError(ValueError):
    pass


@dataclass
class ForkChoice:
    root: int
    stakes: Mapping[bytes, int]
    parent: dict[int, int | None] = field(default_factory=dict)
    children: dict[int, set[int]] = field(default_factory=dict)
    latest_vote: dict[bytes, int] = field(default_factory=dict)
    duplicates: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.parent.setdefault(self.root, None)
        self.children.setdefault(self.root, set())

    @property
    def total_stake(self) -> int:
        return sum(self.stakes.values())

    # -- events ---------------------------------------------------------------------------
    def add_slot(self, slot: int, parent: int) -> None:
        if slot in self.parent:
            if self.parent[slot] != parent:
                raise ForkChoiceError(f"slot {slot} already has parent {self.parent[slot]}, not {parent}")
            return
        if parent not in self.parent:
            raise ForkChoiceError(f"parent {parent} of slot {slot} is unknown (orphan)")
        if slot <= parent:
            raise ForkChoiceError(f"slot {slot} must be greater than its parent {parent}")
        self.parent[slot] = parent
        self.children[slot] = set()
        self.children[parent].add(slot)

    def add_vote(self, voter: bytes, slot: int) -> bool:
        """Record ``voter``'s latest vote; older or unknown-slot votes are ignored (False)."""
        if voter not in self.stakes or slot not in self.parent:
            return False
        prev = self.latest_vote.get(voter)
        if prev is not None and prev >= slot:
            return False
        self.latest_vote[voter] = slot
        return True

    def mark_duplicate(self, slot: int) -> None:
        self.duplicates.add(slot)

    def set_root(self, new_root: int) -> None:
        """Prune everything not descended from ``new_root``."""
        if new_root not in self.parent:
            raise ForkChoiceError(f"new root {new_root} is unknown")
        if not self.is_ancestor(self.root, new_root):
            raise ForkChoiceError(f"new root {new_root} does not descend from root {self.root}")
        keep = self.subtree(new_root)
        self.parent = {s: (p if s != new_root else None) for s, p in self.parent.items() if s in keep}
        self.children = {s: {c for c in cs if c in keep} for s, cs in self.children.items() if s in keep}
        self.latest_vote = {v: s for v, s in self.latest_vote.items() if s in keep}
        self.duplicates &= keep
        self.root = new_root

    def remove_subtree(self, slot: int) -> set[int]:
        """Forget ``slot`` and its descendants (a dumped duplicate version); latest votes
        inside it are dropped. Returns the removed slots. The root cannot be removed."""
        if slot == self.root or slot not in self.parent:
            return set()
        gone = self.subtree(slot)
        p = self.parent[slot]
        if p is not None:
            self.children[p].discard(slot)
        for s in gone:
            del self.parent[s]
            del self.children[s]
        self.latest_vote = {v: s for v, s in self.latest_vote.items() if s not in gone}
        self.duplicates -= gone
        return gone

    # -- queries --------------------------------------------------------------------------
    def ancestors(self, slot: int) -> set[int]:
        out = set()
        p = self.parent.get(slot)
        while p is not None:
            out.add(p)
            p = self.parent.get(p)
        return out

    def is_ancestor(self, a: int, b: int) -> bool:
        return a == b or a in self.ancestors(b)

    def subtree(self, slot: int) -> set[int]:
        out, stack = set(), [slot]
        while stack:
            s = stack.pop()
            out.add(s)
            stack.extend(self.children.get(s, ()))
        return out

    def subtree_stakes(self) -> dict[int, int]:
        """Every slot's subtree stake in one pass (children are always higher slots, so a
        descending sweep adds each slot's weight to its parent): O(n log n) instead of
        one traversal per slot."""
        w = dict.fromkeys(self.parent, 0)
        for v, s in self.latest_vote.items():
            if s in w:
                w[s] += self.stakes[v]
        for s in sorted(w, reverse=True):
            p = self.parent[s]
            if p is not None:
                w[p] += w[s]
        return w

    def subtree_stake(self, slot: int) -> int:
        """LStake of validators whose latest vote is ``slot`` or a descendant of it."""
        sub = self.subtree(slot)
        return sum(self.stakes[v] for v, s in self.latest_vote.items() if s in sub)

    def is_duplicate_confirmed(self, slot: int) -> bool:
        return is_duplicate_confirmed(self.subtree_stake(slot), self.total_stake)

    def is_eligible(self, slot: int) -> bool:
        """False if ``slot`` or an ancestor is an unconfirmed duplicate."""
        if not self.duplicates:
            return True
        for s in {slot} | self.ancestors(slot):
            if s in self.duplicates and not self.is_duplicate_confirmed(s):
                return False
        return True

    def is_confirmed(self, slot: int) -> bool:
        total = self.total_stake
        return total > 0 and Fraction(self.subtree_stake(slot), total) > SUPERMAJORITY

    def best_slot(self) -> int:
        """Walk from the root to the heaviest eligible child. One weight pass: the walk only
        enters eligible slots, so a child is eligible iff it is not an unconfirmed duplicate
        (and the root is not one), which is :meth:`is_eligible` without re-walking ancestors."""
        w = self.subtree_stakes()
        total = self.total_stake

        def confirmed_or_clean(s: int) -> bool:
            return s not in self.duplicates or is_duplicate_confirmed(w[s], total)

        node = self.root
        if not confirmed_or_clean(node):
            return node
        children, dups = self.children, self.duplicates
        while True:
            kids = children.get(node)
            if not kids:
                return node
            if len(kids) == 1 and not dups:  # the common case: a chain
                (node,) = kids
                continue
            eligible = [c for c in kids if confirmed_or_clean(c)]
            if not eligible:
                return node
            node = max(eligible, key=lambda c: (w[c], -c))

    def other_fork_stake(self, last_vote: int, candidate: int | None = None) -> int:
        """LStake locked out on forks other than ``last_vote``'s (the switch threshold's
        count, agave ``Tower::make_check_switch_threshold_decision``): validators whose latest
        vote ``v`` is neither ``last_vote``, an ancestor nor a descendant of it, and is locked
        out at ``last_vote``: ``v > last_vote`` (agave counts such gossip votes outright) or
        ``v + INITIAL_LOCKOUT >= last_vote`` (the shortest lockout interval of a vote on ``v``
        reaches ``last_vote``: agave's lockout-interval count). The fork ``v`` is on need
        not be the candidate's: stake on a third fork counts too, so ``candidate`` (kept for
        callers) does not change the answer."""
        anc = self.ancestors(last_vote)
        sub = self.subtree(last_vote)
        return sum(
            self.stakes[voter]
            for voter, v in self.latest_vote.items()
            if v not in anc and v not in sub and (v > last_vote or v + INITIAL_LOCKOUT >= last_vote)
        )
