"""The compiled shred Merkle root (core/_native_shred.c) against the pure-Python one.

The C function remembers what the previous call hashed at each proof level and returns the
previous result when the rest of the computation is provably the same; these tests feed it
sequences built to make that memory lie if its conditions were too loose: siblings that
share their upper path, shreds that differ in exactly one proof entry at each level, the
same hashed bytes under another index, other proof sizes, proofs too short for the
position, random bytes. Every call must equal the memo-less Python root."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import shred as S
from ambient_p2p.core.crypto import Keypair, sha256

pytestmark = pytest.mark.skipif(S.MERKLE_ROOT_BACKEND != "openssl", reason="_native_shred not built (scripts/setup.sh)")

LEADER = Keypair.deterministic("native-merkle-leader")


def _py(payload: bytes, off: int, size: int, index: int) -> bytes | None:
    try:
        return S._merkle_root_of_py(payload, off, size, index, None)
    except S.ShredError as exc:
        if exc.reason != "bad-proof":
            raise
        return None


def _c(payload: bytes, off: int, size: int, index: int) -> bytes | None:
    from ambient_p2p.core._native_shred import merkle_root

    return merkle_root(payload, off, size, index)


def _args(s: S.Shred) -> tuple[bytes, int, int, int]:
    return s.payload, s.variant.proof_offset, s.variant.proof_size, s.erasure_shard_index


def _fec_set(data_len: int = 40_000) -> list[S.Shred]:
    b = S.make_shreds_from_data(LEADER, sha256(b"r"), os.urandom(data_len), 5, 4, 1, 0, True, 0, 0)
    return list(b.data + b.code)


def _flip_entry(s: S.Shred, level: int) -> tuple[bytes, int, int, int]:
    payload, off, size, index = _args(s)
    b = bytearray(payload)
    b[off + level * S.SIZE_OF_MERKLE_PROOF_ENTRY] ^= 0x01
    return bytes(b), off, size, index


def test_in_order_sets_match_and_share_one_root() -> None:
    shreds = _fec_set()
    roots = set()
    for s in shreds + shreds[::-1]:
        r = _c(*_args(s))
        assert r == _py(*_args(s)) == s.merkle_root()
        roots.add((s.fec_set_index, r))
    assert len(roots) == len({s.fec_set_index for s in shreds})


def test_one_changed_proof_entry_at_each_level_is_never_served_from_memory() -> None:
    shreds = _fec_set()
    for s in shreds[:64]:
        for level in range(s.variant.proof_size):
            _c(*_args(s))  # the honest sibling path is in memory now
            forged = _flip_entry(s, level)
            assert _c(*forged) == _py(*forged) != s.merkle_root()
            # and the next honest call is not polluted by the forged one
            assert _c(*_args(s)) == s.merkle_root()


def test_same_bytes_other_index_or_other_proof_size() -> None:
    s = _fec_set()[3]
    payload, off, size, index = _args(s)
    seq = [(payload, off, size, index), (payload, off, size, index ^ 1), (payload, off, size, index + 64),
           (payload, off, size, index), (payload, off, size - 1, index), (payload, off, size - 1, index >> 1),
           (payload, off + 20, size - 1, index), (payload, off, 0, 0), (payload, off, 0, 1), (payload, off, size, index)]
    for a in seq:
        assert _c(*a) == _py(*a)
    assert _c(payload, off, size, index + 64) is None  # too short for the position


def test_bad_arguments_raise_instead_of_reading_out_of_bounds() -> None:
    s = _fec_set()[0]
    payload, off, size, index = _args(s)
    for bad in ((payload, 63, size, index), (payload, len(payload) - 10, 1, 0), (payload, off, 16, index),
                (payload, off, -1, index)):
        with pytest.raises(ValueError, match=r"proof_size|proof_offset"):
            _c(*bad)
    with pytest.raises(OverflowError):
        _c(payload, off, size, -1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 15), st.integers(0, 70),
                          st.lists(st.tuples(st.integers(64, 1227), st.integers(0, 255)), max_size=2)),
                min_size=1, max_size=24),
       st.randoms(use_true_random=False))
def test_random_sequences_match_python(ops: list[tuple[int, int, int, list[tuple[int, int]]]],
                                       rnd: random.Random) -> None:
    base = _FEC
    for which, size, index, flips in ops:
        s = base[which * 9 % len(base)]
        payload = bytearray(s.payload)
        for i, v in flips:
            if i < len(payload):
                payload[i] = v
        off = s.variant.proof_offset
        size = min(size, (len(payload) - off) // S.SIZE_OF_MERKLE_PROOF_ENTRY)
        args = (bytes(payload), off, size, index if rnd.random() < 0.5 else s.erasure_shard_index)
        assert _c(*args) == _py(*args)


_FEC = _fec_set() if S.MERKLE_ROOT_BACKEND == "openssl" else []


def _python_parse(packet: bytes) -> S.Shred | None:
    saved = S._c_parse
    S._c_parse = None
    try:
        return S.parse_shred(packet)
    except S.ShredError:
        return None
    finally:
        S._c_parse = saved


def test_native_parse_accepts_exactly_what_python_accepts() -> None:
    """Every header field of a data and a coding shred set to boundary values: the C parse
    builds the very Shred the Python path builds, or returns None where Python refuses."""
    from ambient_p2p.core._native_shred import parse

    assert S._c_parse is parse
    shreds = _fec_set()
    one_set = _fec_set(500)
    fields = [(65, 8), (73, 4), (77, 2), (79, 4), (83, 2), (85, 1), (86, 2), (85, 2), (87, 2)]
    values = [0, 1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 255, 256, 257, 1000, 1032, 1119, 1120, 32767, 32768,
              65535, 2**32 - 1]
    accepted = refused = 0
    for s in (shreds[0], shreds[5], shreds[63], shreds[64], shreds[100], one_set[0], one_set[-1]):
        for off, width in fields:
            for v in values:
                if v >= 1 << (8 * width):
                    continue
                b = bytearray(s.payload)
                b[off:off + width] = v.to_bytes(width, "little")
                for pkt in (bytes(b), bytes(b) + b"\0\0\0\0", bytes(b[:-1])):
                    py, c = _python_parse(pkt), parse(pkt, S._VARIANTS, S.Shred)
                    if py is None:
                        assert c is None
                        refused += 1
                    else:
                        assert c is not None and type(c) is S.Shred
                        assert list(c.__dict__.items()) == list(py.__dict__.items())
                        accepted += 1
    assert accepted > 300 and refused > 300


def test_native_parse_variant_bytes() -> None:
    from ambient_p2p.core._native_shred import parse

    base = _fec_set()
    for s in (base[0], base[64]):
        for vb in range(256):
            pkt = s.payload[:64] + bytes([vb]) + s.payload[65:]
            py = _python_parse(pkt)
            c = parse(pkt, S._VARIANTS, S.Shred)
            assert (c is None) == (py is None) or (py is not None and c is None and vb not in S._VARIANTS)
            if c is not None:
                assert c.__dict__ == py.__dict__  # type: ignore[union-attr]
