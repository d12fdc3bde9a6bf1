"""Finality as this node reports it (normative text: spec/node.md "Commitment").

Rules:

1. ``Rooted(chain)``: the tower rooted ``chain`` (ascending slots above the previous root).
   The node remembers its rooted slots (at most ``ROOT_HISTORY_LEN``, oldest dropped; the
   count of all rooted slots is kept). A node restarted from a snapshot starts with the
   snapshot's count of older rooted slots as dropped ones.
2. ``VoterRoot(voter, root)``: the highest tower root each peer reported in its votes
   (a lower one is ignored).
3. *Finalized* (Solana's finalized commitment): walk the reported roots (ours = our tower
   root) from the highest down, adding their voters' LStake; at the first that makes a
   supermajority (> 2/3 of LStake), cap it by our own root and answer the highest of our
   rooted slots at or below it (0 if none). Our own root alone is the *root*.
4. ``prune(stakes)``: reported roots of identities without vote weight are dropped.
5. *Cluster root*: the same walk without the cap by our own root nor our rooted list: the
   highest slot that > 2/3 of LStake reported as rooted at or above (0 if none); it lifts
   the restart guard of a node that lost its tower (spec/tower.md).

Transition table (event -> effect on state):
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Mapping, Sequence

from .tower import is_supermajority

#: Rooted slots remembered for the finalized query (older ones count, not listed).
ROOT_HISTORY_LEN = 8192

TRANSITIONS: dict[str, str] = {
    "Rooted(chain)": "append chain to the root history (bounded), count += len(chain)",
    "VoterRoot(voter, root)": "voter_roots[voter] = max(old, root)",
    "prune(stakes)": "drop voter_roots of identities without weight",
}


class Finality:
    def __init__(self, me: bytes, rooted: Sequence[int] = (), *, older_count: int = 0, older_max: int = 0) -> None:
        """``rooted``: our rooted slots. A node restarted from a snapshot knows the rooted
        slots below ``rooted`` only by their count ``older_count`` and the highest of them
        ``older_max`` (every ancestor of a root is rooted: the snapshot root's parent);
        they count as slots dropped from the history."""
        self.me = me
        roots = sorted(r for r in rooted if r > 0)
        if older_count and roots and older_max >= roots[0]:
            raise ValueError(f"older rooted slots up to {older_max} overlap the listed roots from {roots[0]}")
        self.rooted_count = len(roots) + older_count
        self.history: collections.deque[int] = collections.deque(roots[-ROOT_HISTORY_LEN:], maxlen=ROOT_HISTORY_LEN)
        self.dropped_count = len(roots) - len(self.history) + older_count
        self.dropped_max = roots[-ROOT_HISTORY_LEN - 1] if len(roots) > ROOT_HISTORY_LEN else (
            older_max if older_count else 0)
        self.voter_roots: dict[bytes, int] = {}

    def on_rooted(self, chain: Sequence[int]) -> None:
        """Rule 1."""
        for s in chain:
            if s <= 0 or (self.history and s <= self.history[-1]):
                continue
            if len(self.history) == ROOT_HISTORY_LEN:
                self.dropped_max = self.history[0]
                self.dropped_count += 1
            self.history.append(s)
            self.rooted_count += 1

    def on_voter_root(self, voter: bytes, root: int | None) -> None:
        """Rule 2."""
        if root is not None and root > self.voter_roots.get(voter, -1):
            self.voter_roots[voter] = root

    def prune(self, stakes: Mapping[bytes, int]) -> None:
        """Rule 4."""
        self.voter_roots = {v: r for v, r in self.voter_roots.items() if v in stakes}

    def _rooted_at_or_below(self, cap: int) -> tuple[int, int]:
        """(highest rooted slot <= cap, how many rooted slots are <= it)."""
        h = list(self.history)
        i = bisect.bisect_right(h, cap)
        if i:
            return h[i - 1], self.dropped_count + i
        return (self.dropped_max, self.dropped_count) if cap >= self.dropped_max else (0, 0)

    def finalized_slot(self, own_root: int, stakes: Mapping[bytes, int]) -> int:
        """Rule 3."""
        return self._finalized(own_root, stakes)[0]

    def finalized_count(self, own_root: int, stakes: Mapping[bytes, int]) -> int:
        """How many of our rooted slots (above 0) are finalized."""
        return self._finalized(own_root, stakes)[1]

    def cluster_root(self, own_root: int, stakes: Mapping[bytes, int]) -> int:
        """Rule 5."""
        return self._walk(own_root, stakes) or 0

    def _walk(self, own_root: int, stakes: Mapping[bytes, int]) -> int | None:
        reported = [(own_root, stakes.get(self.me, 0))]
        reported += [(r, stakes.get(v, 0)) for v, r in self.voter_roots.items() if v != self.me]
        total = sum(stakes.values())
        acc = 0
        for r, w in sorted(reported, reverse=True):
            acc += w
            if is_supermajority(acc, total):
                return r
        return None

    def _finalized(self, own_root: int, stakes: Mapping[bytes, int]) -> tuple[int, int]:
        r = self._walk(own_root, stakes)
        return (0, 0) if r is None else self._rooted_at_or_below(min(r, own_root))
