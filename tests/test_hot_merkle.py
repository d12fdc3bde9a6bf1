"""The root-only Merkle path (built-in SHA-256, no kept levels) gives the same root as the
level-by-level tree built from :func:`hash_leaf` / :func:`hash_node` (agave semantics: odd
levels pair the last node with itself)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import merkle


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=70))
def test_root_matches_levels(leaves: list[bytes]) -> None:
    root = merkle.merkle_root(leaves)
    assert root == merkle._levels(leaves)[-1][0]
    for i in {0, len(leaves) - 1, len(leaves) // 2}:
        assert merkle.verify_proof(root, leaves[i], merkle.merkle_proof(leaves, i), len(leaves))


def test_known_small_trees() -> None:
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = (merkle.hash_leaf(x) for x in (a, b, c))
    assert merkle.merkle_root([a]) == la
    assert merkle.merkle_root([a, b]) == merkle.hash_node(la, lb)
    assert merkle.merkle_root([a, b, c]) == merkle.hash_node(merkle.hash_node(la, lb), merkle.hash_node(lc, lc))
    assert merkle.merkle_root([bytearray(b"a"), memoryview(b"b")]) == merkle.hash_node(la, lb)


def test_empty_tree_has_no_root() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        merkle.merkle_root([])
