"""Solana-style Merkle tree (agave merkle-tree crate semantics)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import merkle


def h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def test_known_shapes() -> None:
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = h(b"\0", a), h(b"\0", b), h(b"\0", c)
    assert merkle.merkle_root([a]) == la
    assert merkle.merkle_root([a, b]) == h(b"\1", la, lb)
    # odd level: the last node is paired with itself (agave)
    assert merkle.merkle_root([a, b, c]) == h(b"\1", h(b"\1", la, lb), h(b"\1", lc, lc))
    with pytest.raises(ValueError, match='at least one leaf'):
        merkle.merkle_root([])


@settings(max_examples=60, deadline=None)
@given(leaves=st.lists(st.binary(max_size=16), min_size=1, max_size=40), data=st.data())
def test_every_proof_verifies_and_tampering_fails(leaves: list[bytes], data: st.DataObject) -> None:
    root = merkle.merkle_root(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle.merkle_proof(leaves, i)
    assert len(proof.siblings) == merkle.proof_depth(len(leaves))
    assert merkle.verify_proof(root, leaves[i], proof, len(leaves))
    assert not merkle.verify_proof(root, leaves[i] + b"x", proof, len(leaves))
    if proof.siblings:
        j = data.draw(st.integers(0, len(proof.siblings) - 1))
        bad = list(proof.siblings)
        bad[j] = bytes(32) if bad[j] != bytes(32) else b"\1" * 32
        assert not merkle.verify_proof(root, leaves[i], merkle.MerkleProof(i, tuple(bad)), len(leaves))
        # a proof that is too short (an inner node passed off as a leaf) is refused
        assert not merkle.verify_proof(root, leaves[i], merkle.MerkleProof(i, proof.siblings[:-1]), len(leaves))
    assert not merkle.verify_proof(root, leaves[i], merkle.MerkleProof(len(leaves), proof.siblings), len(leaves))
