"""Joining a running network (spec/join.md): the pure rules a newcomer applies to what its
peers hand it, with no I/O (the shells in node/genesis_sync.py do the talking).

* :func:`genesis_from_answer`: the genesis bytes a peer answered ``/ambient/genesis/1``
  with, decoded strictly and checked against the hash the person expects (agave's
  ``--expected-genesis-hash``).
* :func:`join_phase_line`: the one progress line a person follows while the node joins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
#: The phases a joining node goes through, in order (``status()["join"]["phase"]``); a node
#: that runs no validator stays at ``gossip``.
PHASES = ("connecting", "genesis", "snapshot", "repair", "caught-up", "gossip")
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


# ---------------------------------------------------------------------------------------
# Snapshots from peers (spec/join.md "Snapshot sync")
# ---------------------------------------------------------------------------------------
#: Bytes per snapshot chunk (the last one may be shorter). A node snapshot is at most the
#: codec's 1 MiB message bound, so at most 16 chunks; 64 KiB keeps one chunk response well
#: under the shred-push frame and lets a newcomer spread the chunks over several peers.
SNAPSHOT_CHUNK_BYTES = 64 * 1024
#: Most chunks one snapshot may have (a 1 MiB snapshot has 16; room for growth).
MAX_SNAPSHOT_CHUNKS = 64
#: Largest snapshot a newcomer downloads.
MAX_SNAPSHOT_BYTES = SNAPSHOT_CHUNK_BYTES * MAX_SNAPSHOT_CHUNKS
#: Signing purpose of an attestation (spec/crypto.md).
ATTESTATION_PURPOSE = "snapshot"
#: A snapshot is trusted when attesters holding at least this fraction of the LStake the
#: newcomer can verify name it (Tower BFT's supermajority, spec/tower.md).
TRUST_NUMERATOR, TRUST_DENOMINATOR = 2, 3


@dataclass(frozen=True)
class Attestation:
    """``identity`` says: I rooted ``slot`` of the chain ``genesis_hash`` with bank hash
    ``bank_hash``, and my node snapshot of it is ``size`` bytes hashing to
    ``snapshot_hash``, cut into chunks of ``chunk_bytes`` whose sha256 are ``chunk_hashes``."""

    identity: bytes
    genesis_hash: bytes
    slot: int
    bank_hash: bytes
    snapshot_hash: bytes
    size: int
    chunk_bytes: int
    chunk_hashes: tuple[bytes, ...]
    signature: bytes

    def claim(self) -> tuple[int, bytes, bytes, int, int, tuple[bytes, ...]]:
        """What two attesters must agree on to attest the same snapshot."""
        return (self.slot, self.bank_hash, self.snapshot_hash, self.size, self.chunk_bytes, self.chunk_hashes)


def attestation_signing_bytes(a: Attestation) -> bytes:
    """The signed message (fixed layout, spec/join.md): genesis_hash || slot u64 LE ||
    bank_hash || snapshot_hash || size u32 LE || chunk_bytes u32 LE || chunk hashes."""
    return (a.genesis_hash + a.slot.to_bytes(8, "little") + a.bank_hash + a.snapshot_hash
            + a.size.to_bytes(4, "little") + a.chunk_bytes.to_bytes(4, "little") + b"".join(a.chunk_hashes))


def chunk_hashes(data: bytes, chunk_bytes: int = SNAPSHOT_CHUNK_BYTES) -> tuple[bytes, ...]:
    return tuple(sha256(data[i:i + chunk_bytes]) for i in range(0, len(data), chunk_bytes))


def attestation_problem(a: Attestation, genesis_hash: bytes) -> str | None:
    """Why ``a`` cannot count (a reason code), or None. Checks shape, chain and signature;
    whether the signer has stake is the trust rule's business."""
    from .crypto import verify

    if a.genesis_hash != genesis_hash:
        return "wrong-chain"
    if not 0 < a.size <= MAX_SNAPSHOT_BYTES or not 0 < a.chunk_bytes <= SNAPSHOT_CHUNK_BYTES:
        return "bad-size"
    if len(a.chunk_hashes) != -(-a.size // a.chunk_bytes):
        return "bad-chunks"
    if any(len(h) != 32 for h in (a.bank_hash, a.snapshot_hash, *a.chunk_hashes)):
        return "bad-hash"
    if not verify(a.identity, ATTESTATION_PURPOSE, attestation_signing_bytes(a), a.signature):
        return "bad-signature"
    return None


@dataclass(frozen=True)
class TrustedSnapshot:
    """The snapshot a newcomer downloads: the claim, who attested it (their stake) and the
    identities that offered to serve it."""

    attestation: Attestation
    attested_stake: int
    total_stake: int
    servers: tuple[bytes, ...]


def choose_snapshot(attestations: list[Attestation], stakes: dict[bytes, int],
                    genesis_hash: bytes) -> tuple[TrustedSnapshot | None, dict[str, int]]:
    """The anchor check of the trust rule (spec/join.md): the best claim of
    :func:`ranked_snapshots` (or None) and the count of attestations refused per reason."""
    ranked, refused = ranked_snapshots(attestations, stakes, genesis_hash)
    return (ranked[0] if ranked else None), refused


def ranked_snapshots(attestations: list[Attestation], stakes: dict[bytes, int],
                     genesis_hash: bytes) -> tuple[list[TrustedSnapshot], dict[str, int]]:
    """The anchor check (spec/join.md "Trust rule", step 1): among valid attestations, group
    by claim; one attestation per identity per claim counts, weighted by the identity's
    LStake in ``stakes`` (the anchor: genesis's bootstrap LStake). A claim passes when its
    attesters hold >= 2/3 of the total. Returns the passing claims best first (the highest
    slot; ties: the most stake, then the smaller snapshot hash), ``servers`` holding every
    attester with a valid attestation (those without anchor LStake too: they count in the
    epoch check, and serve chunks that are checked by hash), and the count of attestations refused per reason. Each must still pass
    :func:`epoch_stake_problem` once its snapshot is downloaded."""
    refused: dict[str, int] = {}
    total = sum(stakes.values())
    by_claim: dict[tuple[int, bytes, bytes, int, int, tuple[bytes, ...]], dict[bytes, Attestation]] = {}
    for a in attestations:
        why = attestation_problem(a, genesis_hash)
        if why is not None:
            refused[why] = refused.get(why, 0) + 1
            continue
        if stakes.get(a.identity, 0) <= 0:  # counts nothing here, but is an attester for the epoch check
            refused["no-stake"] = refused.get("no-stake", 0) + 1
        by_claim.setdefault(a.claim(), {})[a.identity] = a
    passing: list[TrustedSnapshot] = []
    for signers in by_claim.values():
        weight = sum(max(0, stakes.get(i, 0)) for i in signers)
        if total <= 0 or weight <= 0 or weight * TRUST_DENOMINATOR < total * TRUST_NUMERATOR:
            continue
        first = next(iter(signers.values()))
        passing.append(TrustedSnapshot(first, weight, total, tuple(sorted(signers))))
    return sorted(passing, key=_rank, reverse=True), refused


def epoch_stake_problem(attesters: Iterable[bytes], weights: Mapping[bytes, int]) -> str | None:
    """The epoch check (spec/join.md "Trust rule", step 2), run on a downloaded snapshot
    before it is installed: ``weights`` is the LStake that weighs the votes of the
    snapshot's own epoch as the snapshot's schedule book records it (what the node would
    vote and schedule leaders by once it installs it). The claim's ``attesters`` must hold
    >= 2/3 of it: attesters whose LStake the snapshot itself says has left them (LStake
    held only in genesis, faded or forfeited) cannot certify it on their own. Returns
    ``no-epoch-stake`` (the table is empty) or ``stale-attesters``, else None."""
    w = {k: v for k, v in weights.items() if v > 0}
    total = sum(w.values())
    if total <= 0:
        return "no-epoch-stake"
    held = sum(w.get(i, 0) for i in set(attesters))
    if held * TRUST_DENOMINATOR < total * TRUST_NUMERATOR:
        return "stale-attesters"
    return None


def _rank(t: TrustedSnapshot) -> tuple[int, int, int]:
    return (t.attestation.slot, t.attested_stake, -int.from_bytes(t.attestation.snapshot_hash, "big"))


def chunk_problem(a: Attestation, index: int, data: bytes) -> str | None:
    """Why chunk ``index`` of the attested snapshot is not ``data`` (None: it is)."""
    if not 0 <= index < len(a.chunk_hashes):
        return "bad-index"
    want = min(a.chunk_bytes, a.size - index * a.chunk_bytes)
    if len(data) != want:
        return "bad-length"
    if sha256(data) != a.chunk_hashes[index]:
        return "chunk-mismatch"
    return None
