"""Reed-Solomon over GF(2^8): known answers from the reed-solomon-erasure crate and
recovery from every kind of subset."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import erasure


def test_field_tables_match_crate() -> None:
    # galois_8: generator 2, polynomial 0x11D -> 2^8 = 0x1D, exp table wraps at 255
    assert erasure.EXP_TABLE[0] == 1
    assert erasure.EXP_TABLE[8] == 0x1D
    assert erasure.EXP_TABLE[255] == 1
    for a in range(1, 256):
        assert erasure.gf_mul(a, erasure.gf_inv(a)) == 1
    assert erasure.gf_exp(0, 0) == 1 and erasure.gf_exp(0, 3) == 0
    assert erasure.gf_exp(2, 8) == 0x1D


def test_known_answer_from_crate_test_reconstruct() -> None:
    # reed-solomon-erasure src/tests/mod.rs `test_reconstruct`: RS(2, 2) of
    # [0,1,2],[3,4,5] has parity [6,11,12],[5,14,11].
    parity = erasure.encode([bytes([0, 1, 2]), bytes([3, 4, 5])], 2)
    assert parity == [bytes([6, 11, 12]), bytes([5, 14, 11])]
    rec = erasure.reconstruct([None, bytes([3, 4, 5]), bytes([6, 11, 12]), None], 2)
    assert rec == [bytes([0, 1, 2]), bytes([3, 4, 5]), bytes([6, 11, 12]), bytes([5, 14, 11])]


def test_encoding_matrix_is_systematic() -> None:
    m = erasure.encoding_matrix(32, 32)
    import numpy as np

    assert (m[:32] == np.eye(32, dtype=np.uint8)).all()


@settings(max_examples=40, deadline=None)
@given(
    num_data=st.integers(1, 32),
    num_parity=st.integers(1, 32),
    size=st.integers(1, 64),
    data=st.data(),
)
def test_any_num_data_subset_recovers(num_data: int, num_parity: int, size: int, data: st.DataObject) -> None:
    shards = [os.urandom(size) for _ in range(num_data)]
    full = shards + erasure.encode(shards, num_parity)
    total = num_data + num_parity
    keep = data.draw(st.sets(st.integers(0, total - 1), min_size=num_data, max_size=total))
    got = erasure.reconstruct([s if i in keep else None for i, s in enumerate(full)], num_data)
    assert got == full


def test_too_few_shards_rejected() -> None:
    shards = [os.urandom(8) for _ in range(4)]
    full = shards + erasure.encode(shards, 4)
    with pytest.raises(erasure.ErasureError) as ei:
        erasure.reconstruct([full[0], None, None, None, full[4], full[5], None, None], 4)
    assert ei.value.reason == "too-few-shards-present"


def test_shard_size_mismatch_rejected() -> None:
    with pytest.raises(erasure.ErasureError) as ei:
        erasure.encode([b"abc", b"ab"], 2)
    assert ei.value.reason == "incorrect-shard-size"


def test_bad_counts_rejected() -> None:
    with pytest.raises(erasure.ErasureError):
        erasure.encoding_matrix(0, 1)
    with pytest.raises(erasure.ErasureError):
        erasure.encoding_matrix(200, 57)


def test_known_answers_from_the_crate_compiled_to_wasm() -> None:
    """Parity produced by the reed-solomon-erasure crate itself (compiled to WASM, run under
    Node; generator script tests/data/rs_erasure_crate_kat.js), including RS(32,32)."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).parent / "data" / "rs_erasure_crate_kat.json").read_text())
    assert any(c["num_data"] == 32 and c["num_parity"] == 32 for c in doc["cases"])
    for c in doc["cases"]:
        d, p, size = c["num_data"], c["num_parity"], c["shard_size"]
        data = [bytes((i * 31 + j * 7 + 3) % 256 for j in range(size)) for i in range(d)]
        assert [x.hex() for x in erasure.encode(data, p)] == c["parity"], (d, p)
        full = data + [bytes.fromhex(x) for x in c["parity"]]
        holes: list[bytes | None] = [None if i < min(d, p) else s for i, s in enumerate(full)]
        assert erasure.reconstruct(holes, d) == full
