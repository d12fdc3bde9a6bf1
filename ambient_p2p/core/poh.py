"""Proof of History: the hash chain, ticks, entries and their verification, exactly as
agave (normative text: spec/poh.md; sources followed: agave ``entry/src/poh.rs``,
``entry/src/entry.rs``, ``merkle-tree/src/merkle_tree.rs``).

Rules, in one place:

* hashing: ``hash = sha256(hash)``; recording a mixin: ``hash = sha256(hash || mixin)``;
* an entry ``{num_hashes, hash, transactions}`` says "``num_hashes`` hashes after the
  previous entry's hash, the last of which mixed in the transactions, give ``hash``";
  a *tick* is an entry with no transactions (its last hash is a plain hash);
* the mixin of a transaction entry is the Merkle root (0x00 leaf / 0x01 node prefixes, odd
  node paired with itself) over the signatures of all its transactions, in order
  (agave ``hash_transactions``); an entry with no signatures mixes in 32 zero bytes;
* ``next_hash(start, n, txs)``: if n == 0 and no txs: ``start``; else hash n-1 times, then
  tick (no txs) or record the mixin (txs);
* a slot holds exactly ``ticks_per_slot`` ticks, ends with a tick, and the hashes between
  consecutive ticks (counting every entry's ``num_hashes``) sum to ``hashes_per_tick``.

Entries serialize as agave's bincode ``Entry``: ``num_hashes: u64 LE``, ``hash: [u8; 32]``,
``transactions: u64 LE count`` followed by each transaction's Solana wire bytes; a batch of
entries (what data shreds carry) is a bincode ``Vec<Entry>``: ``u64 LE count`` then the
entries. Transactions stay opaque bytes here: the core only needs their signatures and
lengths, which it reads from the wire format itself (spec/poh.md, "Transaction framing"),
so PoH verification does not need solders.

Verification is embarrassingly parallel: each entry only needs the previous entry's hash.
:func:`verify_entries` takes an optional ``map`` (for example a process pool's ``map``) and
reports the first bad entry. Pure functions; no I/O.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .constants import PACKET_DATA_BYTES
from .crypto import SIGNATURE_BYTES
from .errors import ProtocolError
from .merkle import merkle_root

HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)
#: bincode ``Vec`` length prefix and ``u64`` sizes.
U64_BYTES = 8
#: Serialized size of an entry with no transactions (num_hashes + hash + tx count).
ENTRY_HEADER_BYTES = U64_BYTES + HASH_BYTES + U64_BYTES
#: Smallest valid legacy transaction: 1 signature + header + 1 key + blockhash + 0 ixs.
MIN_TRANSACTION_BYTES = 1 + SIGNATURE_BYTES + 3 + 1 + 32 + HASH_BYTES + 1
#: Entries per deserialized batch we accept (bounds memory on hostile input).
MAX_ENTRIES_PER_BATCH = 1 << 16
#: Transactions per entry we accept (agave bounds it by the data size; so do we, loosely).
MAX_TRANSACTIONS_PER_ENTRY = 1 << 14
#: Mainnet parameters (agave ``clock.rs``), for reference and tests: 62,500 hashes per
#: tick, 64 ticks per slot, 160 ticks per second (6.25 ms ticks, 400 ms slots).
MAINNET_HASHES_PER_TICK = 62_500
MAINNET_TICKS_PER_SLOT = 64
MAINNET_TICK_DURATION_US = 6_250


class PohError(ProtocolError, ValueError):
    """Malformed entries or a chain that does not verify. ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str, entry_index: int | None = None) -> None:
        self.entry_index = entry_index
        super().__init__(reason, detail, f" (entry {entry_index})" if entry_index is not None else "")


# ---------------------------------------------------------------------------------------
# Hash chain
# ---------------------------------------------------------------------------------------
def _fast_sha256() -> Callable[[bytes], Any]:
    """CPython's built-in SHA-256 (``_sha256``; ``_sha2`` from 3.12) has ~1.6x less per-call
    overhead than OpenSSL's EVP behind ``hashlib.sha256`` for 32-byte inputs, which is all
    the PoH loop does. Same function, same digests; fall back to hashlib if absent."""
    for name in ("_sha2", "_sha256"):
        try:
            mod = __import__(name)
            return mod.sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


_SHA256 = _fast_sha256()


#: The unbound ``digest`` of the hash object type: ``digest(sha(h))`` skips the per-call
#: attribute lookup of ``sha(h).digest()``.
_DIGEST: Callable[[Any], bytes] = type(_SHA256(b"")).digest


def hash_n_py(start: bytes, n: int) -> bytes:
    """``n`` sequential sha256 hashes of ``start`` in Python (the fallback of :func:`hash_n`).

    Unrolled by 8 over ``itertools.repeat`` with the unbound digest: about 4% more hashes/s
    than the plain ``for _ in range(n): h = sha(h).digest()`` loop on CPython 3.11; the
    remaining cost per hash is the hash object's allocation, not the loop."""
    h = start
    sha = _SHA256
    dg = _DIGEST
    blocks, rest = divmod(n, 8)
    for _ in itertools.repeat(None, blocks):
        h = dg(sha(dg(sha(dg(sha(dg(sha(dg(sha(dg(sha(dg(sha(dg(sha(h))))))))))))))))
    for _ in itertools.repeat(None, rest):
        h = dg(sha(h))
    return h


try:  # optional compiled chain (scripts/setup.sh builds it against OpenSSL's libcrypto)
    from ._native_poh import hash_n as _c_hash_n

    #: Which implementation :func:`hash_n` runs: ``"openssl"`` (one C call per batch) or ``"python"``.
    HASH_N_BACKEND = "openssl"
except ImportError:  # not built: the Python loop gives the same digests, about 4x slower
    HASH_N_BACKEND = "python"


def hash_n(start: bytes, n: int) -> bytes:
    """``n`` sequential sha256 hashes of ``start`` (the PoH inner loop): one C call into
    OpenSSL's SHA-256 for the whole batch when the native module is built (the GIL is
    released for long batches), else :func:`hash_n_py`. Same digests either way
    (tests/test_hot_poh.py; ``ambient-p2p bench poh`` measures both)."""
    if HASH_N_BACKEND == "openssl" and n > 0 and len(start) == HASH_BYTES:
        return _c_hash_n(start, n)
    return hash_n_py(start, n)


def hash_with_mixin(h: bytes, mixin: bytes) -> bytes:
    return hashlib.sha256(h + mixin).digest()


def read_short_u16(buf: bytes, pos: int) -> tuple[int, int]:
    """Solana ``short_vec`` length (compact-u16): 7 bits per byte, little-endian groups,
    at most 3 bytes, value <= 0xFFFF, no redundant trailing zero byte (agave rejects
    aliases). Returns (value, position after it)."""
    value = 0
    for i in range(3):
        if pos + i >= len(buf):
            raise PohError("truncated-transaction", "input ends inside a compact-u16")
        b = buf[pos + i]
        if i == 2 and b > 0x03:
            raise PohError("bad-transaction", "compact-u16 overflows u16")
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if i > 0 and b == 0:
                raise PohError("bad-transaction", "compact-u16 is not in its shortest form")
            return value, pos + i + 1
    raise PohError("bad-transaction", "compact-u16 longer than 3 bytes")


def _need(buf: bytes, pos: int, n: int) -> int:
    if pos + n > len(buf):
        raise PohError("truncated-transaction", f"needs {n} more byte(s) at offset {pos}")
    return pos + n


def transaction_extent(buf: bytes, pos: int) -> tuple[int, list[bytes]]:
    """Parse the framing of one Solana wire transaction (legacy or v0) starting at ``pos``.

    Returns (end offset, its signatures). Only framing is checked here (lengths, version
    prefix); meaning (keys, instructions, signature validity) is the bank's job."""
    start = pos
    nsig, pos = read_short_u16(buf, pos)
    if nsig == 0:
        raise PohError("bad-transaction", "a transaction needs at least one signature")
    end = _need(buf, pos, nsig * SIGNATURE_BYTES)
    sigs = [buf[pos + i * SIGNATURE_BYTES : pos + (i + 1) * SIGNATURE_BYTES] for i in range(nsig)]
    pos = end
    _need(buf, pos, 1)
    versioned = bool(buf[pos] & 0x80)
    if versioned:
        if buf[pos] & 0x7F != 0:
            raise PohError("bad-transaction", f"unsupported message version {buf[pos] & 0x7F}")
        pos += 1
    pos = _need(buf, pos, 3)  # header: num_required_signatures, ro signed, ro unsigned
    nkeys, pos = read_short_u16(buf, pos)
    pos = _need(buf, pos, nkeys * 32 + HASH_BYTES)  # account keys + recent blockhash
    nix, pos = read_short_u16(buf, pos)
    for _ in range(nix):
        pos = _need(buf, pos, 1)  # program id index
        nacc, pos = read_short_u16(buf, pos)
        pos = _need(buf, pos, nacc)
        ndata, pos = read_short_u16(buf, pos)
        pos = _need(buf, pos, ndata)
    if versioned:
        nlookups, pos = read_short_u16(buf, pos)
        for _ in range(nlookups):
            pos = _need(buf, pos, 32)
            nw, pos = read_short_u16(buf, pos)
            pos = _need(buf, pos, nw)
            nr, pos = read_short_u16(buf, pos)
            pos = _need(buf, pos, nr)
    if pos - start > PACKET_DATA_BYTES:
        raise PohError("bad-transaction", f"transaction of {pos - start} bytes exceeds {PACKET_DATA_BYTES}")
    return pos, sigs


def transaction_signatures(tx: bytes) -> list[bytes]:
    end, sigs = transaction_extent(tx, 0)
    if end != len(tx):
        raise PohError("bad-transaction", f"{len(tx) - end} trailing byte(s) after the transaction")
    return sigs


def hash_transactions(transactions: Sequence[bytes]) -> bytes:
    """agave ``entry::hash_transactions``: Merkle root over every signature of every
    transaction in order; 32 zero bytes when there are none."""
    sigs = [s for tx in transactions for s in transaction_signatures(tx)]
    if not sigs:
        return ZERO_HASH
    return merkle_root(sigs)


# ---------------------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One PoH entry. ``transactions`` are Solana wire-format transactions (bytes)."""

    num_hashes: int
    hash: bytes
    transactions: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.num_hashes < 1 << 64:
            raise ValueError("num_hashes must fit u64")
        if len(self.hash) != HASH_BYTES:
            raise ValueError(f"entry hash must be {HASH_BYTES} bytes")

    @property
    def is_tick(self) -> bool:
        return not self.transactions

    def serialize(self) -> bytes:
        return b"".join(
            [struct.pack("<Q", self.num_hashes), self.hash, struct.pack("<Q", len(self.transactions)), *self.transactions]
        )

    def verify(self, start_hash: bytes) -> bool:
        return next_hash(start_hash, self.num_hashes, self.transactions) == self.hash


def next_hash(start_hash: bytes, num_hashes: int, transactions: Sequence[bytes]) -> bytes:
    """agave ``entry::next_hash``: the hash an entry must carry after ``start_hash``."""
    if num_hashes == 0 and not transactions:
        return start_hash
    h = hash_n(start_hash, max(num_hashes - 1, 0))
    if not transactions:
        return hashlib.sha256(h).digest()
    return hash_with_mixin(h, hash_transactions(transactions))


def serialize_entries(entries: Iterable[Entry]) -> bytes:
    """bincode ``Vec<Entry>``."""
    items = list(entries)
    return struct.pack("<Q", len(items)) + b"".join(e.serialize() for e in items)


def deserialize_entries(data: bytes) -> list[Entry]:
    """Strict inverse of :func:`serialize_entries`: rejects truncation, trailing bytes,
    absurd counts and malformed transaction framing with a :class:`PohError`."""
    if len(data) < U64_BYTES:
        raise PohError("truncated-entries", "no entry count")
    (count,) = struct.unpack_from("<Q", data, 0)
    if count > MAX_ENTRIES_PER_BATCH or count * ENTRY_HEADER_BYTES > len(data) - U64_BYTES:
        raise PohError("bad-entries", f"entry count {count} cannot fit in {len(data)} bytes")
    pos = U64_BYTES
    out = []
    for i in range(count):
        if pos + ENTRY_HEADER_BYTES > len(data):
            raise PohError("truncated-entries", "input ends inside an entry header", i)
        num_hashes, h, ntx = struct.unpack_from("<Q32sQ", data, pos)
        pos += ENTRY_HEADER_BYTES
        if ntx > MAX_TRANSACTIONS_PER_ENTRY or ntx * MIN_TRANSACTION_BYTES > len(data) - pos:
            raise PohError("bad-entries", f"transaction count {ntx} cannot fit", i)
        txs = []
        for _ in range(ntx):
            try:
                end, _sigs = transaction_extent(data, pos)
            except PohError as exc:
                raise PohError(exc.reason, exc.detail, i) from None
            txs.append(bytes(data[pos:end]))
            pos = end
        out.append(Entry(num_hashes, bytes(h), tuple(txs)))
    if pos != len(data):
        raise PohError("trailing-bytes", f"{len(data) - pos} byte(s) after the last entry")
    return out


# ---------------------------------------------------------------------------------------
# The generator (a leader's PoH clock)
# ---------------------------------------------------------------------------------------
class Poh:
    """agave ``Poh``: a hash chain that counts down ``hashes_per_tick``.

    ``record`` is refused (returns None) when only the tick's own hash is left, exactly as
    agave does, so that every tick ends on a plain hash."""

    def __init__(self, start_hash: bytes, hashes_per_tick: int) -> None:
        if len(start_hash) != HASH_BYTES:
            raise ValueError("start hash must be 32 bytes")
        if hashes_per_tick < 1:
            raise ValueError("hashes_per_tick must be >= 1")
        self.hash = start_hash
        self.hashes_per_tick = hashes_per_tick
        self.num_hashes = 0
        self.remaining_hashes = hashes_per_tick
        self.tick_number = 0

    def hash_some(self, max_num_hashes: int) -> bool:
        """Hash up to ``max_num_hashes`` times, stopping one short of the tick. Returns True
        when the caller must tick next."""
        n = min(max(self.remaining_hashes - 1, 0), max_num_hashes)
        self.hash = hash_n(self.hash, n)
        self.num_hashes += n
        self.remaining_hashes -= n
        return self.remaining_hashes == 1

    def record(self, mixin: bytes) -> tuple[int, bytes] | None:
        if self.remaining_hashes == 1:
            return None
        self.hash = hash_with_mixin(self.hash, mixin)
        num_hashes = self.num_hashes + 1
        self.num_hashes = 0
        self.remaining_hashes -= 1
        return num_hashes, self.hash

    def tick(self) -> tuple[int, bytes] | None:
        self.hash = hashlib.sha256(self.hash).digest()
        self.num_hashes += 1
        self.remaining_hashes -= 1
        if self.remaining_hashes != 0:
            return None
        num_hashes = self.num_hashes
        self.num_hashes = 0
        self.remaining_hashes = self.hashes_per_tick
        self.tick_number += 1
        return num_hashes, self.hash

    def record_entry(self, transactions: Sequence[bytes]) -> Entry | None:
        rec = self.record(hash_transactions(transactions))
        return None if rec is None else Entry(rec[0], rec[1], tuple(transactions))

    def tick_entry(self) -> Entry:
        """Finish the current tick (hashing what is left of it) and return the tick entry."""
        self.hash_some(self.remaining_hashes)
        rec = self.tick()
        if rec is None:  # hash_some left exactly one hash, so tick() completes
            raise AssertionError("PoH tick did not complete")
        return Entry(rec[0], rec[1])


# ---------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------
#: Default bound on one entry's ``num_hashes`` during verification, so that a hostile
#: entry cannot make a verifier hash for ever (callers pass the slot's real bound,
#: ``hashes_per_tick``; :func:`check_slot_ticks` enforces it exactly).
DEFAULT_MAX_HASHES_PER_ENTRY = 1 << 24

Job = tuple[int, bytes, tuple[tuple[int, bytes, tuple[bytes, ...]], ...], int]


def _verify_chunk(job: Job) -> int | None:
    """Verify a run of entries given the hash before it; index of the first bad one."""
    first_index, start, items, max_hashes = job
    prev = start
    for k, (num_hashes, h, txs) in enumerate(items):
        if num_hashes > max_hashes:
            return first_index + k
        try:
            ok = next_hash(prev, num_hashes, txs) == h
        except PohError:
            ok = False
        if not ok:
            return first_index + k
        prev = h
    return None


MapFn = Callable[[Callable[[Job], int | None], Sequence[Job]], Iterable[int | None]]


def verify_entries(
    start_hash: bytes,
    entries: Sequence[Entry],
    *,
    map_fn: MapFn | None = None,
    chunks: int = 1,
    max_hashes_per_entry: int = DEFAULT_MAX_HASHES_PER_ENTRY,
) -> int | None:
    """Index of the first entry whose hash does not follow from its predecessor (the first
    from ``start_hash``), or None if the chain verifies. ``map_fn`` (e.g. a process pool's
    ``map``) runs ``chunks`` independent pieces in parallel; results are the same either
    way. An entry claiming more than ``max_hashes_per_entry`` hashes counts as bad without
    being hashed."""
    if not entries:
        return None
    chunks = max(1, min(chunks, len(entries)))
    size = -(-len(entries) // chunks)
    jobs: list[Job] = []
    for c in range(0, len(entries), size):
        prev = start_hash if c == 0 else entries[c - 1].hash
        items = tuple((e.num_hashes, e.hash, e.transactions) for e in entries[c : c + size])
        jobs.append((c, prev, items, max_hashes_per_entry))
    results = (map_fn or map)(_verify_chunk, jobs)
    bad = [r for r in results if r is not None]
    return min(bad) if bad else None


def check_slot_ticks(entries: Sequence[Entry], hashes_per_tick: int, ticks_per_slot: int) -> None:
    """agave ``verify_tick_hash_count`` plus the slot-shape rules: exactly
    ``ticks_per_slot`` ticks, each closing exactly ``hashes_per_tick`` hashes, and the
    slot ends with a tick. Raises PohError naming the first offending entry."""
    hashes = 0
    ticks = 0
    for i, e in enumerate(entries):
        hashes += e.num_hashes
        if e.is_tick:
            if hashes != hashes_per_tick:
                raise PohError("bad-tick-hash-count", f"tick closes {hashes} hashes, expected {hashes_per_tick}", i)
            hashes = 0
            ticks += 1
            if ticks > ticks_per_slot:
                raise PohError("too-many-ticks", f"more than {ticks_per_slot} ticks in the slot", i)
        elif hashes >= hashes_per_tick:
            raise PohError("bad-tick-hash-count", f"entry runs past the tick boundary ({hashes} hashes)", i)
    if ticks != ticks_per_slot:
        raise PohError("too-few-ticks", f"{ticks} ticks, expected {ticks_per_slot}")
    if not entries or not entries[-1].is_tick:
        raise PohError("trailing-entry", "slot does not end with a tick")
