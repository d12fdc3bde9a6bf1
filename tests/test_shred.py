"""Merkle shreds: agave layout constants, make/parse round trips, recovery, adversarial
packets."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient_p2p.core import shred as S
from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.core.shred import ShredError

LEADER = Keypair.deterministic("shred-test-leader")
OTHER = Keypair.deterministic("shred-test-other")
ROOT0 = sha256(b"chained root")


def make(data: bytes, *, last: bool = True, slot: int = 9, parent: int = 8, start: int = 0) -> S.ShredBatch:
    return S.make_shreds_from_data(LEADER, ROOT0, data, slot, parent, 3, 5, last, start, start)


@pytest.fixture(scope="module")
def batch() -> S.ShredBatch:
    return make(os.urandom(40_000))


def test_agave_layout_constants() -> None:
    # agave: const_assert_eq!(ShredData::SIZE_OF_PAYLOAD, 1203) and ShredCode 1228
    assert S.DATA_PAYLOAD_BYTES == 1203 and S.CODE_PAYLOAD_BYTES == 1228
    assert S.SIZE_OF_DATA_SHRED_HEADERS == 88 and S.SIZE_OF_CODING_SHRED_HEADERS == 89
    # agave merkle.rs tests: data and code capacities agree for every proof size
    for chained, resigned in ((False, False), (True, False), (True, True)):
        for proof_size in range(0x0F):
            d = S.ShredVariant(True, proof_size, chained, resigned)
            c = S.ShredVariant(False, proof_size, chained, resigned)
            assert d.capacity() == c.capacity() - (S.SIZE_OF_DATA_SHRED_HEADERS - S.SIZE_OF_SIGNATURE)
            assert d.shard_end - d.shard_start == c.shard_end - c.shard_start
            assert d.retransmitter_signature_offset + (64 if resigned else 0) == S.DATA_PAYLOAD_BYTES
            assert c.retransmitter_signature_offset + (64 if resigned else 0) == S.CODE_PAYLOAD_BYTES
    assert S.data_capacity(6, True, False) == 963 and S.data_capacity(6, True, True) == 899


def test_merkle_tree_sizes_match_agave() -> None:
    # agave merkle_tree.rs test_get_merkle_tree_size
    sizes = [0, 1, 3, 6, 7, 11, 12, 14, 15, 20, 21, 23, 24, 27, 28]
    for n, size in enumerate(sizes):
        assert len(S.make_merkle_tree([os.urandom(32) for _ in range(n)])) == size


@pytest.mark.parametrize("n", [1, 2, 3, 5, 19, 64, 73])
def test_merkle_proofs_round_trip(n: int) -> None:
    leaves = [os.urandom(32) for _ in range(n)]
    tree = S.make_merkle_tree(leaves)
    for i in range(n):
        proof = S.make_merkle_proof(i, n, tree)
        assert len(proof) == S.proof_size_for(n)
        assert S.get_merkle_root(i, leaves[i], proof) == tree[-1]
        if n > 1:
            assert S.get_merkle_root(i, leaves[(i + 1) % n], proof) != tree[-1]


def test_variant_bytes() -> None:
    assert S.ShredVariant(True, 6, True, False).to_byte() == 0x96
    assert S.ShredVariant(True, 6, True, True).to_byte() == 0xB6
    assert S.ShredVariant(False, 6, True, False).to_byte() == 0x66
    assert S.ShredVariant(False, 6, True, True).to_byte() == 0x76
    for b in (0x96, 0xB6, 0x66, 0x76):
        assert S.ShredVariant.from_byte(b).to_byte() == b
    for b, reason in ((0x5A, "legacy-variant"), (0xA5, "legacy-variant"), (0x46, "unchained-variant"),
                      (0x86, "unchained-variant"), (0x00, "bad-variant"), (0xF6, "bad-variant")):
        with pytest.raises(ShredError) as ei:
            S.ShredVariant.from_byte(b)
        assert ei.value.reason == reason


def test_made_shreds_have_agave_layout(batch: S.ShredBatch) -> None:
    d0, c0 = batch.data[0], batch.code[0]
    p = d0.payload
    assert len(p) == 1203 and len(c0.payload) == 1228
    assert p[64] == 0xB6  # the fixture batch is last in its slot: chained + resigned
    assert struct.unpack_from("<QIHI", p, 65) == (9, 0, 3, 0)
    assert struct.unpack_from("<HBH", p, 83) == (1, 5, 88 + 899)
    assert struct.unpack_from("<HHH", c0.payload, 83) == (32, 32, 0)
    root = d0.merkle_root()
    assert all(s.merkle_root() == root for s in batch.data[:32] + batch.code[:32])
    assert all(s.signature == LEADER.sign_raw(root) for s in batch.data[:32])
    assert batch.data[32].chained_merkle_root == root  # second set chains to the first
    assert d0.chained_merkle_root == ROOT0
    last = batch.data[-1]
    assert last.last_in_slot and last.data_complete and not batch.data[-2].data_complete
    assert last.retransmitter_signature == bytes(64)


def test_fixture_variant_is_resigned(batch: S.ShredBatch) -> None:
    assert batch.data[0].variant == S.ShredVariant(True, 6, True, True)
    nonlast = make(b"abc", last=False)
    assert nonlast.data[0].variant.to_byte() == 0x96 and nonlast.code[0].variant.to_byte() == 0x66
    assert nonlast.data[-1].data_complete and not nonlast.data[-1].last_in_slot


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=70_000), last=st.booleans())
def test_make_parse_deshred_round_trip(data: bytes, last: bool) -> None:
    b = make(data, last=last)
    assert len(b.data) % 32 == 0 and len(b.code) == len(b.data)
    for s in b.data + b.code:
        again = S.parse_shred(s.payload)
        assert again == s
        assert S.verify_shred(again, LEADER.pubkey) == s.merkle_root()
        assert S.parse_shred(s.payload + b"\x01\x02\x03\x04") == s  # repair nonce is ignored
    sets = S.deshred(list(b.data))
    assert len(sets) == 1 and sets[0][2] == data


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_recovery_from_any_32_of_64(batch: S.ShredBatch, data: st.DataObject) -> None:
    fec = list(batch.data[:32] + batch.code[:32])
    keep = data.draw(st.sets(st.integers(0, 63), min_size=32, max_size=64))
    present = [fec[i] for i in sorted(keep)]
    if all(s.is_data for s in present) and len(present) == 32:
        return  # nothing missing
    recovered = S.recover(present)
    assert len(recovered) == 64 - len(keep)
    got = {(s.is_data, s.index): s for s in present + recovered}
    for s in fec:
        assert got[(s.is_data, s.index)].payload == s.payload


def test_recovery_needs_enough_shreds_and_a_coding_shred(batch: S.ShredBatch) -> None:
    fec = list(batch.data[:32] + batch.code[:32])
    with pytest.raises(ShredError) as ei:
        S.recover(fec[:31] + fec[40:40])
    assert ei.value.reason == "too-few-parity-shreds"
    with pytest.raises(ShredError) as ei:
        S.recover(fec[:20] + fec[32:43])
    assert ei.value.reason == "too-few-shreds"


def test_recovery_rejects_corrupted_shard(batch: S.ShredBatch) -> None:
    fec = list(batch.data[:32] + batch.code[:32])
    c = bytearray(fec[40].payload)
    c[200] ^= 0xFF
    forged = S.Shred(**{**fec[40].__dict__, "payload": bytes(c)})
    with pytest.raises(ShredError) as ei:
        S.recover([*fec[:10], forged, *fec[41:63]])
    assert ei.value.reason == "merkle-root-mismatch"


def test_mixed_fec_sets_rejected(batch: S.ShredBatch) -> None:
    with pytest.raises(ShredError) as ei:
        S.recover([batch.data[0], batch.data[33], batch.code[0]])
    assert ei.value.reason == "fec-set-mismatch"


# --- adversarial packets -----------------------------------------------------------------
def flip(payload: bytes, offset: int) -> bytes:
    b = bytearray(payload)
    b[offset] ^= 0x01
    return bytes(b)


def test_forged_signature_rejected(batch: S.ShredBatch) -> None:
    s = batch.data[3]
    with pytest.raises(ShredError) as ei:
        S.verify_shred(s, OTHER.pubkey)
    assert ei.value.reason == "bad-signature"
    forged = S.parse_shred(OTHER.sign_raw(s.merkle_root()) + s.payload[64:])
    with pytest.raises(ShredError) as ei:
        S.verify_shred(forged, LEADER.pubkey)
    assert ei.value.reason == "bad-signature"


@pytest.mark.parametrize("which", ["data", "code"])
def test_bad_proof_or_payload_byte_rejected(batch: S.ShredBatch, which: str) -> None:
    s = batch.data[5] if which == "data" else batch.code[5]
    for off in (s.variant.proof_offset + 3, s.variant.shard_end - 10, s.variant.chained_root_offset):
        bad = S.parse_shred(flip(s.payload, off))
        with pytest.raises(ShredError) as ei:
            S.verify_shred(bad, LEADER.pubkey)
        assert ei.value.reason == "bad-signature"


def test_size_violations_rejected(batch: S.ShredBatch) -> None:
    d = batch.data[0].payload
    for packet, reason in ((d[:1202], "wrong-size"), (d[:40], "wrong-size"), (b"", "wrong-size"),
                           (d + bytes(30), "oversized"), (batch.code[0].payload + bytes(5), "oversized")):
        with pytest.raises(ShredError) as ei:
            S.parse_shred(packet)
        assert ei.value.reason == reason


def test_inconsistent_headers_rejected(batch: S.ShredBatch) -> None:
    d = bytearray(batch.data[0].payload)
    bad_flags = bytearray(d)
    bad_flags[85] = 0x80  # LAST_IN_SLOT high bit without DATA_COMPLETE
    bad_size = bytearray(d)
    struct.pack_into("<H", bad_size, 86, 88 + 900)
    bad_parent = bytearray(d)
    struct.pack_into("<H", bad_parent, 83, 0)
    wrong_variant = bytearray(d)
    wrong_variant[64] = 0x76  # claims to be a coding shred, but is 1203 bytes
    cases = [(bad_flags, "bad-flags"), (bad_size, "bad-data-size"), (bad_parent, "bad-parent"),
             (wrong_variant, "wrong-size")]
    c = bytearray(batch.code[0].payload)
    bad_pos = bytearray(c)
    struct.pack_into("<H", bad_pos, 87, 32)
    bad_nc = bytearray(c)
    struct.pack_into("<H", bad_nc, 85, 300)
    bad_proof_size = bytearray(c)
    bad_proof_size[64] = 0x75  # a 64-shred set needs 6 proof entries, not 5
    cases += [(bad_pos, "bad-coding-header"), (bad_nc, "bad-coding-header"), (bad_proof_size, "bad-proof-size")]
    for packet, reason in cases:
        with pytest.raises(ShredError) as ei:
            S.parse_shred(bytes(packet))
        assert ei.value.reason == reason, (reason, ei.value)


def test_slot_shredder_chains_batches() -> None:
    sh = S.SlotShredder(LEADER, 9, 8, 3, ROOT0)
    a = sh.add(b"first batch", reference_tick=10, is_last_in_slot=False)
    b = sh.add(os.urandom(30_000), reference_tick=64, is_last_in_slot=True)
    assert a.data[0].index == 0 and b.data[0].index == 32 and b.code[0].index == 32
    assert b.data[0].chained_merkle_root == a.merkle_root and a.data[0].chained_merkle_root == ROOT0
    assert a.data[-1].data_complete and not a.data[-1].last_in_slot and b.data[-1].last_in_slot
    assert a.data[0].reference_tick == 10 and b.data[0].reference_tick == 63  # saturates at 63
    sets = S.deshred(list(a.data + b.data))
    assert sets[0][2] == b"first batch" and len(sets) == 2
    with pytest.raises(ValueError, match='already has its LAST_IN_SLOT shred'):
        sh.add(b"more", reference_tick=0, is_last_in_slot=True)


def test_deshred_requires_contiguous_complete_runs(batch: S.ShredBatch) -> None:
    data = list(batch.data)
    with pytest.raises(ShredError) as ei:
        S.deshred(data[:5] + data[6:])
    assert ei.value.reason == "missing-shreds"
    with pytest.raises(ShredError) as ei:
        S.deshred(data[:40])
    assert ei.value.reason == "incomplete-data"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=1300), st.sampled_from([0x96, 0xB6, 0x66, 0x76, 0x5A, 0x86, 0x00]))
def test_arbitrary_packets_raise_only_shred_errors(blob: bytes, variant: int) -> None:
    """Fuzz: any bytes (with a plausible variant byte planted) either parse into a shred
    whose accessors all work, or raise ShredError; never another exception."""
    packet = bytearray(blob)
    if len(packet) > 64:
        packet[64] = variant
    try:
        s = S.parse_shred(bytes(packet))
    except ShredError:
        return
    assert len(s.merkle_node) == 32 and len(s.erasure_shard) == s.variant.shard_end - s.variant.shard_start
    try:
        assert s.describe()["slot"] == s.slot
        S.verify_shred(s, LEADER.pubkey)
    except ShredError:
        pass


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_shreds_never_verify_or_crash(batch: S.ShredBatch, data: st.DataObject) -> None:
    """Any single-byte change to a real shred outside its retransmitter field is rejected
    (by parsing or by the signature over the recomputed root)."""
    s = data.draw(st.sampled_from(list(batch.data[:4] + batch.code[:4] + batch.data[-2:])))
    limit = s.variant.retransmitter_signature_offset if s.variant.resigned else len(s.payload)
    off = data.draw(st.integers(0, limit - 1))
    delta = data.draw(st.integers(1, 255))
    p = bytearray(s.payload)
    p[off] ^= delta
    with pytest.raises(ShredError):
        S.verify_shred(S.parse_shred(bytes(p)), LEADER.pubkey)
