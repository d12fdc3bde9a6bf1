"""Duplicate-slot proofs (spec/blockstore.md "Checking a duplicate-slot proof"): every proof
the real blockstore stores is accepted by the pure checker, and a proof that does not show
its kind, or whose shreds are not both the leader's of that slot, is refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.core.duplicate_proof import DUPLICATE_KINDS, CheckedProof, DuplicateProofError, check_duplicate_proof
from ambient_p2p.core.shred import ShredBatch, make_shreds_from_data
from ambient_p2p.ledger.blockstore import Blockstore

LEADER = Keypair.deterministic("duplicate-proof-test-leader")
SLOT = 9


def _version(data: bytes, code_index: int = 0) -> ShredBatch:
    return make_shreds_from_data(LEADER, sha256(b"parent"), data, SLOT, SLOT - 1, 1, 0, True, 0, code_index)


SMALL = _version(b"small version")  # one FEC set, LAST_IN_SLOT at 31
LONG = _version(bytes((i * 31 + 7) % 256 for i in range(40_000)))  # two sets, LAST at 63
RENUMBERED = _version(b"small version", code_index=5)
VERSIONS = (SMALL, LONG, RENUMBERED)
ALL = [s for v in VERSIONS for s in (*v.data, *v.code)]


def _check(slot: int, kind: str, a: bytes, b: bytes) -> tuple[CheckedProof | None, str | None]:
    """(the checked proof, None) or (None, the reject reason)."""
    try:
        return check_duplicate_proof(slot, kind, a, b, LEADER.pubkey), None
    except DuplicateProofError as exc:
        return None, exc.reason


def _leader(_slot: int) -> bytes:
    return LEADER.pubkey


@pytest.mark.parametrize(
    ("first", "then", "kind"),
    [
        ([s.payload for s in SMALL.data], [LONG.data[4].payload], "same-index-different-payload"),
        ([SMALL.data[0].payload], [LONG.data[1].payload], "merkle-root-conflict"),
        ([s.payload for s in SMALL.data], [LONG.data[40].payload], "index-past-last-in-slot"),
        ([LONG.data[40].payload], [SMALL.data[31].payload], "last-in-slot-below-received"),
        ([SMALL.code[0].payload], [RENUMBERED.code[1].payload], "merkle-root-conflict"),
    ],
    ids=["same-index", "root", "past-last", "below-received", "renumbered-coding"],
)
def test_every_proof_the_blockstore_stores_is_accepted(tmp_path: Path, first: list[bytes], then: list[bytes], kind: str) -> None:
    with Blockstore.open(tmp_path / "ledger") as bs:
        assert not bs.insert_shreds(first, _leader).duplicates
        assert bs.insert_shreds(then, _leader).duplicates == [(SLOT, kind)]
        proof = bs.duplicate_proof(SLOT)
    assert proof is not None and proof.kind == kind
    checked = check_duplicate_proof(proof.slot, proof.kind, proof.shred1, proof.shred2, LEADER.pubkey)
    assert kind in checked.shows


def test_erasure_config_conflict_is_shown_by_coding_shreds_of_one_set() -> None:
    p = check_duplicate_proof(SLOT, "erasure-config-conflict", SMALL.code[0].payload, RENUMBERED.code[0].payload, LEADER.pubkey)
    assert p.shows == ("merkle-root-conflict", "erasure-config-conflict")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(i=st.integers(0, len(ALL) - 1), j=st.integers(0, len(ALL) - 1), kind=st.sampled_from(DUPLICATE_KINDS))
def test_a_kind_is_accepted_iff_the_pair_shows_it(i: int, j: int, kind: str) -> None:
    a, b = ALL[i], ALL[j]
    if a.payload == b.payload:
        with pytest.raises(DuplicateProofError) as exc:
            check_duplicate_proof(SLOT, kind, a.payload, b.payload, LEADER.pubkey)
        assert exc.value.reason == "same-shred"
        return
    same_version = any(a in (*v.data, *v.code) and b in (*v.data, *v.code) for v in VERSIONS)
    p, reason = _check(SLOT, kind, a.payload, b.payload)
    accepted = p is not None
    assert accepted or reason == "not-a-conflict"
    assert p is None or kind in p.shows
    # an oracle written from the kinds' definitions
    expect = {
        "same-index-different-payload": a.is_data == b.is_data and a.index == b.index,
        "merkle-root-conflict": a.fec_set_index == b.fec_set_index and a.merkle_root() != b.merkle_root(),
        "index-past-last-in-slot": a.is_data and b.is_data and a.last_in_slot and b.index > a.index,
        "last-in-slot-below-received": a.is_data and b.is_data and b.last_in_slot and a.index > b.index,
        "erasure-config-conflict": not a.is_data and not b.is_data and a.fec_set_index == b.fec_set_index
        and (a.first_coding_index, a.num_coding_shreds) != (b.first_coding_index, b.num_coding_shreds),
    }[kind]
    assert accepted == expect
    if same_version:  # one honest version never proves anything
        assert not accepted


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from(["shred1", "shred2"]), pos=st.integers(0, 1227), bit=st.integers(0, 7))
def test_a_flipped_bit_rejects_unless_it_is_the_retransmitter_field(which: str, pos: int, bit: int) -> None:
    s1, s2 = bytearray(SMALL.data[3].payload), bytearray(LONG.data[3].payload)
    target = s1 if which == "shred1" else s2
    pos %= len(target)
    target[pos] ^= 1 << bit
    var = SMALL.data[3].variant
    off = var.retransmitter_signature_offset
    p, reason = _check(SLOT, "same-index-different-payload", bytes(s1), bytes(s2))
    if p is None:
        assert reason in ("bad-signature", "malformed-shred", "slot-mismatch")
        assert not off <= pos < off + 64
    else:
        assert off <= pos < off + 64, f"a flip at {pos} went unnoticed"
        assert p.shows == ("same-index-different-payload", "merkle-root-conflict")


def test_rejections_name_their_reason() -> None:
    other = Keypair.deterministic("someone else")
    a, b = SMALL.data[3].payload, LONG.data[3].payload
    cases = [
        ((SLOT, "parent-mismatch", a, b, LEADER.pubkey), "unknown-kind"),
        ((SLOT + 1, "merkle-root-conflict", a, b, LEADER.pubkey), "slot-mismatch"),
        ((SLOT, "merkle-root-conflict", a, b, other.pubkey), "bad-signature"),
        ((SLOT, "merkle-root-conflict", b"", b, LEADER.pubkey), "malformed-shred"),
        ((SLOT, "merkle-root-conflict", a, b + b"\x00", LEADER.pubkey), "malformed-shred"),
        ((SLOT, "merkle-root-conflict", a, a, LEADER.pubkey), "same-shred"),
        ((SLOT, "index-past-last-in-slot", a, b, LEADER.pubkey), "not-a-conflict"),
    ]
    for args, reason in cases:
        with pytest.raises(DuplicateProofError) as exc:
            check_duplicate_proof(*args)
        assert exc.value.reason == reason, args[1]
