"""The fast erasure paths (vectorised Gauss-Jordan, reduced k x k decode of only the missing
data rows) give exactly the bytes of the crate's algorithm: invert the whole matrix of the
first d present rows with a row-by-row elimination, multiply, re-encode missing parity. The
reference below is that algorithm written plainly; inputs include inconsistent (random, not
a codeword) shard sets, where the crate's choice of rows decides the bytes. The ISA-L kernel
(core/_native_ec.c, the default where built) is checked against the numpy kernel on the same
inputs, both ways of recovery, every error reason and malformed direct calls."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import erasure


def _ref_invert(m: np.ndarray) -> np.ndarray:
    n = m.shape[0]
    work = np.concatenate([m.astype(np.uint8), np.eye(n, dtype=np.uint8)], axis=1)
    for r in range(n):
        if work[r, r] == 0:
            s = r + 1 + int(np.nonzero(work[r + 1 :, r])[0][0])
            work[[r, s]] = work[[s, r]]
        work[r] = erasure.MUL_TABLE[erasure.gf_inv(int(work[r, r]))][work[r]]
        for other in range(n):
            f = int(work[other, r])
            if other != r and f:
                work[other] ^= erasure.MUL_TABLE[f][work[r]]
    return work[:, n:].copy()


def _ref_mul(coefs: np.ndarray, shards: np.ndarray) -> np.ndarray:
    out = np.zeros((coefs.shape[0], shards.shape[1]), dtype=np.uint8)
    for i in range(coefs.shape[0]):
        for j in range(coefs.shape[1]):
            out[i] ^= erasure.MUL_TABLE[int(coefs[i, j])][shards[j]]
    return out


def _ref_reconstruct(shards: list[bytes | None], d: int) -> list[bytes]:
    total = len(shards)
    m = erasure.encoding_matrix(d, total - d)
    present = [i for i, s in enumerate(shards) if s is not None]
    used = present[:d]
    sub = np.array([list(shards[i]) for i in used], dtype=np.uint8)  # type: ignore[arg-type]
    data = _ref_mul(_ref_invert(m[used]), sub)
    par = _ref_mul(m[d:], data)
    return [bytes(data[i]) if i < d else bytes(par[i - d]) for i in range(total)]


@st.composite
def _loss_case(draw: st.DrawFn) -> tuple[list[bytes | None], int]:
    d = draw(st.integers(1, 12))
    p = draw(st.integers(1, 12))
    length = draw(st.integers(1, 40))
    consistent = draw(st.booleans())
    raw = [draw(st.binary(min_size=length, max_size=length)) for _ in range(d + p)]
    if consistent:
        raw = raw[:d] + erasure.encode(raw[:d], p)
    lost = draw(st.lists(st.integers(0, d + p - 1), unique=True, max_size=p))
    return [None if i in lost else s for i, s in enumerate(raw)], d


@settings(max_examples=300, deadline=None)
@given(_loss_case())
def test_reconstruct_matches_full_inverse_reference(case: tuple[list[bytes | None], int]) -> None:
    shards, d = case
    got = erasure.reconstruct(shards, d)
    want = _ref_reconstruct(shards, d)
    # Present shards come back as given; missing ones as the crate's algorithm computes them.
    for i, s in enumerate(shards):
        assert got[i] == (s if s is not None else want[i])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20), st.randoms(use_true_random=False))
def test_gf_invert_matches_row_by_row_elimination(n: int, rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    m = erasure.encoding_matrix(n, n)
    rows = sorted(rnd.sample(range(2 * n), n))
    inv = erasure.gf_invert(m[rows])
    assert (inv == _ref_invert(m[rows])).all()
    assert (erasure.gf_matmul(inv, m[rows]) == np.eye(n, dtype=np.uint8)).all()


def test_rs32_cold_patterns_match_reference() -> None:
    import os
    import random

    rnd = random.Random(32)
    data = [os.urandom(64) for _ in range(32)]
    full = data + erasure.encode(data, 32)
    for _ in range(8):
        lost = set(rnd.sample(range(64), 32))
        holes: list[bytes | None] = [None if i in lost else s for i, s in enumerate(full)]
        assert erasure.reconstruct(holes, 32) == full == _ref_reconstruct(holes, 32)


# --- The ISA-L kernel (core/_native_ec.c) against the numpy kernel -------------------------

try:
    from ambient_p2p.core import _native_ec as _native
except ImportError:
    _native = None  # type: ignore[assignment]
needs_native = pytest.mark.skipif(_native is None, reason="ISA-L module not built (scripts/setup.sh)")


def test_isal_module_built_where_libisal_exists() -> None:
    """scripts/setup.sh builds it when ISA-L's headers are present; then encode/reconstruct
    must use it (a silent numpy fallback costs 5-10x)."""
    if not Path("/usr/include/isa-l/erasure_code.h").exists() or shutil.which("gcc") is None:
        pytest.skip("no libisal-dev or gcc here")
    assert erasure.BACKEND == "isa-l"


@needs_native
@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 300), st.randoms(use_true_random=False))
def test_isal_encode_equals_numpy(d: int, p: int, length: int, rnd: random.Random) -> None:
    data = [rnd.randbytes(length) for _ in range(d)]
    want = erasure.encode_numpy(data, p)
    assert erasure.encode(data, p) == want
    assert erasure.encode(tuple(data), p) == want
    assert erasure.encode([bytearray(x) for x in data], p) == want
    assert erasure.encode(np.frombuffer(b"".join(data), dtype=np.uint8).reshape(d, length), p) == want


@needs_native
@pytest.mark.parametrize(("d", "p"), [(1, 255), (255, 1), (128, 128), (32, 32), (67, 3)])
def test_isal_extreme_shapes_equal_numpy(d: int, p: int) -> None:
    rnd = random.Random(d * 1000 + p)
    data = [rnd.randbytes(97) for _ in range(d)]
    full = data + erasure.encode(data, p)
    assert full[d:] == erasure.encode_numpy(data, p)
    for _ in range(3):
        lost = set(rnd.sample(range(d + p), min(p, rnd.randint(1, p))))
        holes: list[bytes | None] = [None if i in lost else s for i, s in enumerate(full)]
        assert erasure.reconstruct(holes, d) == full == erasure.reconstruct_numpy(holes, d)


@needs_native
@settings(max_examples=150, deadline=None)
@given(_loss_case())
def test_isal_reconstruct_equals_numpy_also_inconsistent(case: tuple[list[bytes | None], int]) -> None:
    """Also for shard sets that are not a codeword: both take the crate's rows, so the
    (wrong) bytes agree and the Merkle check downstream rejects them the same way."""
    shards, d = case
    assert erasure.reconstruct(shards, d) == erasure.reconstruct_numpy(shards, d)


@settings(max_examples=100, deadline=None)
@given(_loss_case())
def test_numpy_reconstruct_matches_full_inverse_reference(case: tuple[list[bytes | None], int]) -> None:
    shards, d = case
    got = erasure.reconstruct_numpy(shards, d)
    want = _ref_reconstruct(shards, d)
    for i, s in enumerate(shards):
        assert got[i] == (s if s is not None else want[i])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 20), st.randoms(use_true_random=False))
def test_gf_invert_numpy_matches_reference(n: int, rnd: random.Random) -> None:
    m = erasure.encoding_matrix(n, n)
    rows = sorted(rnd.sample(range(2 * n), n))
    assert (erasure.gf_invert_numpy(m[rows]) == _ref_invert(m[rows])).all()


@pytest.mark.parametrize("fn", ["reconstruct", "reconstruct_numpy"])
@pytest.mark.parametrize(
    ("shards", "reason"),
    [
        ([b"ab", b"cd", None, b"e"], "incorrect-shard-size"),
        ([b"ab", None, b"cd", b"efg"], "incorrect-shard-size"),
        ([b"", b"", None, None], "empty-shard"),
        ([b"ab", None, None, None], "too-few-shards-present"),
        ([b"ab", b"cd", b"ef", b"g"], "incorrect-shard-size"),
    ],
)
def test_reconstruct_reasons_same_on_both_kernels(fn: str, shards: list[bytes | None], reason: str) -> None:
    with pytest.raises(erasure.ErasureError) as exc:
        getattr(erasure, fn)(shards, 2)
    assert exc.value.reason == reason


@pytest.mark.parametrize("fn", ["encode", "encode_numpy"])
@pytest.mark.parametrize(
    ("shards", "p", "reason"),
    [
        ([b"ab", b"c"], 2, "incorrect-shard-size"),
        ([b"", b""], 2, "empty-shard"),
        ([b"ab"] * 200, 57, "too-many-shards"),
        ([b"ab"], 0, "too-few-parity-shards"),
    ],
)
def test_encode_reasons_same_on_both_kernels(fn: str, shards: list[bytes], p: int, reason: str) -> None:
    with pytest.raises(erasure.ErasureError) as exc:
        getattr(erasure, fn)(shards, p)
    assert exc.value.reason == reason


@needs_native
def test_isal_module_rejects_malformed_calls() -> None:
    """Direct calls with inconsistent arguments raise instead of reading out of bounds."""
    assert _native is not None
    tables = _native.init_tables(2, 2, bytes([1, 2, 3, 4]))
    assert len(tables) == 32 * 2 * 2
    bad: list[tuple[tuple[object, ...], type[Exception]]] = [
        ((tables, 3, 2, [b"a", b"b", b"c"]), ValueError),  # tables for k=2 used with k=3
        ((tables, 2, 2, [b"a"]), ValueError),  # fewer shards than k
        ((tables, 2, 2, [b"a", b"bc"]), ValueError),  # lengths differ
        ((tables, 2, 2, [b"", b""]), ValueError),  # empty
        ((tables, 2, 2, [b"a", None]), TypeError),  # not a buffer
        ((tables, 2, 2, b"abc"), ValueError),  # one buffer, not a multiple of k
        ((tables, 0, 2, [b"a"]), ValueError),
        ((tables, 2, 300, [b"a", b"b"]), ValueError),
    ]
    for args, exc in bad:
        with pytest.raises(exc):
            _native.encode(*args)
    with pytest.raises(ValueError, match="rows \\* k"):
        _native.init_tables(2, 2, b"abc")
    with pytest.raises(ValueError, match="n \\* n"):
        _native.invert(b"abc", 2)
    assert _native.invert(bytes(4), 2) is None  # singular
    assert _native.invert(bytes([1, 0, 0, 1]), 2) == bytes([1, 0, 0, 1])
