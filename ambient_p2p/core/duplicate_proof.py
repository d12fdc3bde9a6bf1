"""Checking a duplicate-slot proof (normative text: spec/blockstore.md "Checking a
duplicate-slot proof"; agave ``gossip/src/duplicate_shred.rs`` ``check_shreds``).

A proof is two shred payloads of one slot, both signed by the slot's leader, that cannot both
belong to one honest version of the slot, and the *kind* of conflict they show. The
blockstore stores the first one it meets per slot (``DuplicateSlotProof`` in
``duplicate_slots``); anyone holding the leader's key can check it with
:func:`check_duplicate_proof` alone, without the rest of the ledger. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtocolError
from .shred import SIZE_OF_SIGNATURE, Shred, ShredError, parse_shred, verify_shred

#: The conflicts a proof can show, in the order the blockstore's insert meets them
#: (spec/blockstore.md "Insert"): ``shred1`` is the stored shred, ``shred2`` the new one.
DUPLICATE_KINDS: tuple[str, ...] = (
    "same-index-different-payload",
    "merkle-root-conflict",
    "index-past-last-in-slot",
    "last-in-slot-below-received",
    "erasure-config-conflict",
)

_ZERO_SIGNATURE = bytes(SIZE_OF_SIGNATURE)


class DuplicateProofError(ProtocolError):
    """The proof does not prove equivocation; ``reason`` is a stable code (spec/blockstore.md)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)


@dataclass(frozen=True)
class CheckedProof:
    slot: int
    kind: str
    shows: tuple[str, ...]  # every kind the pair shows, in DUPLICATE_KINDS order
    merkle_roots: tuple[bytes, bytes]


def _shred(payload: bytes, slot: int, leader: bytes, which: str) -> tuple[Shred, bytes]:
    try:
        s = parse_shred(payload)
    except ShredError as exc:
        raise DuplicateProofError("malformed-shred", f"{which}: {exc.reason}") from None
    if len(payload) != len(s.payload):
        raise DuplicateProofError("malformed-shred", f"{which}: {len(payload)} bytes, its variant has {len(s.payload)}")
    if s.slot != slot:
        raise DuplicateProofError("slot-mismatch", f"{which} is of slot {s.slot}, the proof names slot {slot}")
    try:
        root = verify_shred(s, leader)
    except ShredError:
        raise DuplicateProofError("bad-signature", f"{which} is not signed by the slot leader") from None
    if s.variant.resigned:  # a transport artefact outside the leaf: relayed copies compare equal
        s = s.with_retransmitter_signature(_ZERO_SIGNATURE)
    return s, root


def conflicts(a: Shred, b: Shred, root_a: bytes, root_b: bytes) -> tuple[str, ...]:
    """Every kind of conflict between ``a`` (shred1) and ``b`` (shred2), both of one slot."""
    shows = []
    if a.is_data == b.is_data and a.index == b.index and a.payload != b.payload:
        shows.append("same-index-different-payload")
    if a.fec_set_index == b.fec_set_index and root_a != root_b:
        shows.append("merkle-root-conflict")
    if a.is_data and b.is_data:
        if a.last_in_slot and b.index > a.index:
            shows.append("index-past-last-in-slot")
        if b.last_in_slot and a.index > b.index:
            shows.append("last-in-slot-below-received")
    if not a.is_data and not b.is_data and a.fec_set_index == b.fec_set_index:
        config_a = (a.num_data_shreds, a.num_coding_shreds, a.first_coding_index)
        config_b = (b.num_data_shreds, b.num_coding_shreds, b.first_coding_index)
        if config_a != config_b:
            shows.append("erasure-config-conflict")
    return tuple(shows)


def check_duplicate_proof(slot: int, kind: str, shred1: bytes, shred2: bytes, leader: bytes) -> CheckedProof:
    """Accept the proof iff both payloads are well-formed shreds of ``slot`` signed by
    ``leader`` (the slot's scheduled leader), they differ once the retransmitter signature
    field is zeroed, and the pair shows ``kind``. Raises :class:`DuplicateProofError`."""
    if kind not in DUPLICATE_KINDS:
        raise DuplicateProofError("unknown-kind", repr(kind)[:80])
    a, root_a = _shred(shred1, slot, leader, "shred1")
    b, root_b = _shred(shred2, slot, leader, "shred2")
    if a.payload == b.payload:
        raise DuplicateProofError("same-shred", "the two shreds are one shred (up to the retransmitter signature)")
    shows = conflicts(a, b, root_a, root_b)
    if kind not in shows:
        raise DuplicateProofError("not-a-conflict", f"the shreds do not show {kind} (they show {list(shows) or 'none'})")
    return CheckedProof(slot, kind, shows, (root_a, root_b))
