"""Joining a running network (spec/join.md): the pure rules a newcomer applies to what its
peers hand it, with no I/O (the shells in node/genesis_sync.py do the talking).

* :func:`genesis_from_answer`: the genesis bytes a peer answered ``/ambient/genesis/1``
  with, decoded strictly and checked against the hash the person expects (agave's
  ``--expected-genesis-hash``).
* :func:`join_phase_line`: the one progress line a person follows while the node joins.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import codec
from .crypto import sha256
from .errors import ProtocolError
from .messages import Genesis

#: Largest genesis a peer may hand over (the ``Genesis`` message's own max_size: 1 MiB).
MAX_GENESIS_BYTES = 1 << 20
#: A genesis hash is a sha256 digest, written as 64 lowercase hex digits.
GENESIS_HASH_HEX_CHARS = 64


class JoinRejected(ProtocolError):
    """A peer's answer was refused (``reason``: ``not-found``, ``non-canonical``,
    ``genesis-mismatch`` or the codec's decode reason)."""


def parse_genesis_hash(text: str) -> bytes:
    """``--expected-genesis-hash`` as bytes: 64 hex digits (either case). ValueError otherwise."""
    t = text.strip()
    if len(t) != GENESIS_HASH_HEX_CHARS:
        raise ValueError(f"a genesis hash is {GENESIS_HASH_HEX_CHARS} hex digits, not {len(t)} characters")
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise ValueError("a genesis hash is hex digits 0-9a-f") from None


def genesis_from_answer(raw: bytes | None, expected_hash: bytes | None) -> Genesis:
    """The genesis in a peer's answer: ``raw`` must be the canonical encoding of a
    ``Genesis`` (decode, re-encode, same bytes: the hash is over exactly these bytes), and
    when ``expected_hash`` is given, ``sha256(raw)`` must equal it."""
    if raw is None:
        raise JoinRejected("not-found", "the peer holds no genesis")
    if len(raw) > MAX_GENESIS_BYTES:
        raise JoinRejected("too-large", f"{len(raw)} bytes > {MAX_GENESIS_BYTES}")
    try:
        g = codec.decode(raw, expected=Genesis)
    except codec.DecodeError as exc:
        raise JoinRejected(exc.reason, str(exc)) from None
    if codec.encode(g) != raw:
        raise JoinRejected("non-canonical", "the genesis bytes are not the canonical encoding")
    if expected_hash is not None and sha256(raw) != expected_hash:
        raise JoinRejected("genesis-mismatch",
                           f"genesis hash {sha256(raw).hex()} is not the expected {expected_hash.hex()}")
    return g


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------
#: The phases a joining node goes through, in order (``status()["join"]["phase"]``).
PHASES = ("connecting", "genesis", "snapshot", "repair", "caught-up")
#: Slots behind the cluster at which a node reports itself caught up (issue 20's
#: acceptance: within 2 slots) and, past it, ``behind`` in getHealth.
CAUGHT_UP_MAX_LAG_SLOTS = 2


@dataclass(frozen=True)
class JoinProgress:
    """What a joining node knows about its progress (all fields optional but ``phase``)."""

    phase: str
    genesis_hash: bytes | None = None
    chain_id: str | None = None
    bytes_done: int = 0
    bytes_total: int = 0
    elapsed_ms: int = 0
    local_slot: int | None = None
    cluster_slot: int | None = None

    @property
    def lag_slots(self) -> int | None:
        if self.local_slot is None or self.cluster_slot is None:
            return None
        return max(0, self.cluster_slot - self.local_slot)

    def rate_bytes_per_s(self) -> float:
        return self.bytes_done * 1000 / self.elapsed_ms if self.elapsed_ms > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate_bytes_per_s()
        if rate <= 0 or self.bytes_total <= 0:
            return None
        return max(0, self.bytes_total - self.bytes_done) / rate


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - loop returns


def join_phase_line(p: JoinProgress) -> str:
    """The progress line for ``p`` (``join: <phase> ...``), the same words as ``status``."""
    if p.phase == "connecting":
        return "join: connecting"
    if p.phase == "genesis":
        gh = p.genesis_hash.hex() if p.genesis_hash else "?"
        return f"join: genesis {gh} chain {p.chain_id or '?'}"
    if p.phase == "snapshot":
        eta = p.eta_s()
        return (f"join: snapshot {_size(p.bytes_done)}/{_size(p.bytes_total)} "
                f"{_size(p.rate_bytes_per_s())}/s eta {'?' if eta is None else f'{eta:.0f} s'}")
    lag = p.lag_slots
    lag_s = "?" if lag is None else str(lag)
    if p.phase == "repair":
        return f"join: repair slot {p.local_slot if p.local_slot is not None else '?'} slots-left {lag_s}"
    return f"join: caught-up slot {p.local_slot if p.local_slot is not None else '?'} lag {lag_s}"
