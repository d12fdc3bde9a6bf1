"""The two pools a leader builds from (normative text: spec/node.md "Pools").

Rules:

Mempool (pending transactions)
1. A transaction is keyed by its first signature (bytes 1..65 of the wire form, after the
   compact-u16 count); a second copy of a key is ignored (dedupe), a transaction shorter
   than that is refused.
2. At most ``MAX_MEMPOOL`` entries: adding one more evicts the oldest.
3. ``take(now_ms)`` first expires entries older than ``MEMPOOL_TTL_MS`` (monotonic ms),
   then returns the rest in arrival order (deterministic).
4. After a slot is built, every transaction it included or refused is removed.

VotePool (the latest vote transaction of each voter with vote weight)
5. A voter's entry is replaced only by a vote for a higher slot; a vote below the last
   pruned root is refused.
6. ``take()`` returns the entries in voter order (deterministic).
7. After a slot is built, an included entry is removed unless a newer one replaced it.
8. ``prune(root)`` drops entries for slots below the root.

Transition tables, per entry, (state, event) -> next state:
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from .slots import TransitionError
from .vote_program import VoteTx

MAX_MEMPOOL = 4096
MEMPOOL_TTL_MS = 60_000
#: The first signature of a wire transaction: after the one-byte compact-u16 count.
_SIG = slice(1, 65)

MEMPOOL_TRANSITIONS: dict[tuple[str, str], str] = {
    ("absent", "add"): "pending",
    ("pending", "add"): "pending",  # dedupe: the first copy stays (its receipt time too)
    ("pending", "evict"): "absent",  # over MAX_MEMPOOL, oldest first
    ("pending", "expire"): "absent",  # older than MEMPOOL_TTL_MS at take()
    ("pending", "included"): "absent",
    ("absent", "included"): "absent",
}
VOTEPOOL_TRANSITIONS: dict[tuple[str, str], str] = {
    ("absent", "add"): "latest",
    ("absent", "add-below-root"): "absent",
    ("latest", "add-newer"): "latest",  # replaced
    ("latest", "add-not-newer"): "latest",  # ignored
    ("latest", "included"): "absent",
    ("latest", "included-replaced"): "latest",  # a newer vote arrived while building
    ("latest", "rooted-below"): "absent",
}


def tx_key(raw: bytes) -> bytes:
    if len(raw) < _SIG.stop:
        raise TransitionError("short-transaction", f"{len(raw)} bytes, no first signature")
    return raw[_SIG]


class Mempool:
    def __init__(self, cap: int = MAX_MEMPOOL, ttl_ms: int = MEMPOOL_TTL_MS) -> None:
        self.cap = cap
        self.ttl_ms = ttl_ms
        self._txs: collections.OrderedDict[bytes, tuple[bytes, int]] = collections.OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._txs)

    def add(self, raw: bytes, now_ms: int) -> bool:
        """Rules 1-2. True if the transaction is new here."""
        if len(raw) < _SIG.stop:
            return False
        key = raw[_SIG]
        if key in self._txs:
            return False
        self._txs[key] = (raw, now_ms)
        while len(self._txs) > self.cap:
            self._txs.popitem(last=False)
            self.evicted += 1
        return True

    def take(self, now_ms: int) -> list[bytes]:
        """Rule 3."""
        for k in [k for k, (_r, t) in self._txs.items() if now_ms - t > self.ttl_ms]:
            del self._txs[k]
            self.expired += 1
        return [r for r, _t in self._txs.values()]

    def received_ms(self, raw: bytes) -> int | None:
        e = self._txs.get(raw[_SIG])
        return None if e is None else e[1]

    def remove(self, raws: Iterable[bytes]) -> None:
        """Rule 4."""
        for raw in raws:
            self._txs.pop(raw[_SIG], None)


class VotePool:
    def __init__(self) -> None:
        self._latest: dict[bytes, VoteTx] = {}
        self.root = 0

    def __len__(self) -> int:
        return len(self._latest)

    def get(self, voter: bytes) -> VoteTx | None:
        return self._latest.get(voter)

    def add(self, vt: VoteTx) -> bool:
        """Rule 5. True if ``vt`` is now its voter's entry."""
        if vt.vote.slot < self.root:
            return False
        old = self._latest.get(vt.vote.voter)
        if old is None or old.vote.slot < vt.vote.slot:
            self._latest[vt.vote.voter] = vt
            return True
        return False

    def take(self) -> list[VoteTx]:
        """Rule 6."""
        return [self._latest[v] for v in sorted(self._latest)]

    def remove_included(self, included: Iterable[VoteTx]) -> None:
        """Rule 7."""
        for vt in included:
            if self._latest.get(vt.vote.voter) is vt:
                del self._latest[vt.vote.voter]

    def prune(self, root: int) -> None:
        """Rule 8."""
        self.root = max(self.root, root)
        self._latest = {v: vt for v, vt in self._latest.items() if vt.vote.slot >= root}
