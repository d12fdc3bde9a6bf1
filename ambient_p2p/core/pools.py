"""The two pools a leader builds from (normative text: spec/node.md "Pools").

Rules:

Mempool (pending transactions; spec/tpu.md "Mempool admission")
1. A transaction is keyed by its first signature (bytes 1..65 of the wire form, after the
   compact-u16 count); a second copy of a key is refused as ``duplicate``, a transaction
   shorter than that as ``short-transaction``.
2. Given the tip bank (the node's best frozen bank), a transaction whose recent blockhash
   is not among the tip's last ``MAX_PROCESSING_AGE`` blockhashes is refused as
   ``blockhash-expired``, one whose first signature is in the tip's status cache as
   ``already-processed``, and one whose key landed in a slot this node replayed or built
   (``landed``, remembered for ``LANDED_MEMORY`` keys) as ``already-processed`` too. These
   checks are pure byte lookups and run *before* any signature work (:meth:`precheck`).
3. At most ``MAX_MEMPOOL`` entries: one more is refused as ``mempool-full`` (never an
   eviction: evicting under a flood turns the flood into a liveness attack, issue 17).
   Every refusal is counted by reason in ``dropped``.
4. ``take(now_ms)`` first expires entries older than ``MEMPOOL_TTL_MS`` (monotonic ms),
   then returns the rest in arrival order (deterministic).
5. After a slot is built, every transaction it included or refused is removed; after any
   slot is replayed, every transaction it holds is removed (``landed``), whoever led it.

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
import hashlib
from collections.abc import Container, Iterable, Sequence
from typing import Protocol

from .bank import MAX_PROCESSING_AGE
from .slots import TransitionError
from .vote_program import VoteTx

#: Pending transactions kept; one more is refused (``mempool-full``). 8 slots' worth at the
#: leader's per-slot cap of 1024 (node/leader.py ``MAX_TXS_PER_SLOT``).
MAX_MEMPOOL = 8192
MEMPOOL_TTL_MS = 60_000
#: Keys of transactions that landed in a replayed or built slot, remembered so that a late
#: copy (gossip fallback, a client retry) is refused before signature work; oldest first out.
LANDED_MEMORY = 65_536
#: Digests of transactions whose signatures this node verified at admission, remembered so
#: that replay of a slot holding the same bytes skips the ed25519 work (once per node).
VERIFIED_MEMORY = 65_536
#: The first signature of a wire transaction: after the one-byte compact-u16 count.
_SIG = slice(1, 65)
#: Why a transaction was refused or removed without landing (``Mempool.dropped`` keys).
DROP_REASONS = ("short-transaction", "malformed-transaction", "duplicate", "already-processed",
                "blockhash-expired", "mempool-full", "expired", "bad-signature", "refused-by-bank")

MEMPOOL_TRANSITIONS: dict[tuple[str, str], str] = {
    ("absent", "add"): "pending",
    ("absent", "add-refused"): "absent",  # expired blockhash, already processed, pool full
    ("pending", "add"): "pending",  # dedupe: the first copy stays (its receipt time too)
    ("pending", "expire"): "absent",  # older than MEMPOOL_TTL_MS at take()
    ("pending", "included"): "absent",
    ("pending", "landed"): "absent",  # in a slot this node replayed (any leader's)
    ("absent", "included"): "absent",
    ("absent", "landed"): "absent",
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


def _compact_u16(raw: bytes, i: int) -> tuple[int, int]:
    """Solana's compact-u16 at ``raw[i:]``: (value, next index)."""
    val = shift = 0
    for k in range(3):
        if i + k >= len(raw):
            raise TransitionError("malformed-transaction", "truncated compact-u16")
        b = raw[i + k]
        val |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return val, i + k + 1
    raise TransitionError("malformed-transaction", "compact-u16 longer than 3 bytes")


def recent_blockhash_of(raw: bytes) -> bytes:
    """The recent blockhash of a wire transaction (legacy or v0), read from its bytes
    without parsing or verifying anything else; ``TransitionError`` when it is not there."""
    nsig, i = _compact_u16(raw, 0)
    i += 64 * nsig
    if i < len(raw) and raw[i] & 0x80:  # versioned message prefix
        i += 1
    i += 3  # header
    nkeys, i = _compact_u16(raw, i)
    i += 32 * nkeys
    if i + 32 > len(raw):
        raise TransitionError("malformed-transaction", "no recent blockhash")
    return bytes(raw[i:i + 32])


class TipBank(Protocol):
    """What admission reads of the node's best frozen bank (core/bank.py ``Bank``)."""

    slot: int
    blockhashes: list[bytes]
    status_cache: dict[bytes, int]


class Mempool:
    def __init__(self, cap: int = MAX_MEMPOOL, ttl_ms: int = MEMPOOL_TTL_MS,
                 landed_memory: int = LANDED_MEMORY) -> None:
        self.cap = cap
        self.ttl_ms = ttl_ms
        self.landed_memory = landed_memory
        self._txs: collections.OrderedDict[bytes, tuple[bytes, int]] = collections.OrderedDict()
        self._verified: set[bytes] = set()  # keys whose signatures the shell verified
        self._verified_raw: collections.OrderedDict[bytes, None] = collections.OrderedDict()  # sha256(raw)
        self._landed: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._recent: tuple[int, int, frozenset[bytes]] = (-1, -1, frozenset())
        self.dropped: collections.Counter[str] = collections.Counter()
        self.landed_removed = 0  # pending entries removed because they landed in a replayed slot

    @property
    def expired(self) -> int:
        return self.dropped["expired"]

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, raw: bytes) -> bool:
        return raw[_SIG] in self._txs

    def _recent_hashes(self, tip: TipBank) -> frozenset[bytes]:
        slot, n, cached = self._recent
        if slot != tip.slot or n != len(tip.blockhashes):
            cached = frozenset(tip.blockhashes[-MAX_PROCESSING_AGE:])
            self._recent = (tip.slot, len(tip.blockhashes), cached)
        return cached

    def precheck(self, raw: bytes, tip: TipBank | None = None) -> str | None:
        """Rules 1-3 without counting: the reason ``raw`` would be refused, or None. Byte
        lookups only (no parse, no signature)."""
        if len(raw) < _SIG.stop:
            return "short-transaction"
        key = raw[_SIG]
        if key in self._txs:
            return "duplicate"
        if key in self._landed:
            return "already-processed"
        if tip is not None:
            try:
                bh = recent_blockhash_of(raw)
            except TransitionError:
                return "malformed-transaction"
            if bh not in self._recent_hashes(tip):
                return "blockhash-expired"
            if key in tip.status_cache:
                return "already-processed"
        if len(self._txs) >= self.cap:
            return "mempool-full"
        return None

    def refuse(self, reason: str, n: int = 1) -> None:
        """Count ``n`` transactions refused for ``reason`` outside :meth:`add` (e.g. a bad
        signature found by the shell's verifier)."""
        self.dropped[reason] += n

    def add(self, raw: bytes, now_ms: int, tip: TipBank | None = None, *, verified: bool = False) -> bool:
        """Rules 1-3. True if the transaction is new here and admitted; else the refusal
        is counted in ``dropped``. ``verified``: the caller checked its signatures, so the
        leader executes it without checking again (:meth:`is_verified`)."""
        reason = self.precheck(raw, tip)
        if reason is not None:
            self.dropped[reason] += 1
            return False
        key = raw[_SIG]
        self._txs[key] = (raw, now_ms)
        if verified:
            self._verified.add(key)
            self._verified_raw[hashlib.sha256(raw).digest()] = None
            while len(self._verified_raw) > VERIFIED_MEMORY:
                self._verified_raw.popitem(last=False)
        return True

    def verified_before(self, raw: bytes) -> bool:
        """These exact bytes were admitted with ``verified`` (pending or not, among the last
        ``VERIFIED_MEMORY``): replay may skip their signature check. Safe to call from a
        worker thread (one dict lookup)."""
        return hashlib.sha256(raw).digest() in self._verified_raw

    def is_verified(self, raw: bytes) -> bool:
        """Admitted with ``verified`` (and still pending)."""
        return raw[_SIG] in self._verified

    def _drop(self, key: bytes) -> bool:
        self._verified.discard(key)
        return self._txs.pop(key, None) is not None

    def take(self, now_ms: int, limit: int | None = None, exclude: Container[bytes] = ()) -> list[bytes]:
        """Rule 4; at most ``limit`` entries whose key is not in ``exclude`` (a leader's
        intake skips what it already took this slot). Entries are in arrival order with
        non-decreasing receipt times, so expiry pops from the front only."""
        while self._txs:
            k, (_r, t) = next(iter(self._txs.items()))
            if now_ms - t <= self.ttl_ms:
                break
            self._drop(k)
            self.dropped["expired"] += 1
        out: list[bytes] = []
        if limit is not None and limit <= 0:
            return out
        for k, (r, _t) in self._txs.items():
            if k in exclude:
                continue
            out.append(r)
            if limit is not None and len(out) >= limit:
                break
        return out

    def received_ms(self, raw: bytes) -> int | None:
        e = self._txs.get(raw[_SIG])
        return None if e is None else e[1]

    def remove(self, raws: Iterable[bytes]) -> None:
        """Rule 5, for transactions a slot refused (they leave without being remembered)."""
        for raw in raws:
            self._drop(raw[_SIG])

    def landed(self, raws: Sequence[bytes]) -> int:
        """Rule 5: ``raws`` are in a slot this node replayed or built. They leave the pool
        and are remembered as processed; returns how many were pending here."""
        n = 0
        for raw in raws:
            if len(raw) < _SIG.stop:
                continue
            key = raw[_SIG]
            if self._drop(key):
                n += 1
            self._landed[key] = None
            self._landed.move_to_end(key)
        while len(self._landed) > self.landed_memory:
            self._landed.popitem(last=False)
        self.landed_removed += n
        return n


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
