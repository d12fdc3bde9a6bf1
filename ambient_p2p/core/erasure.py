"""Reed-Solomon erasure coding over GF(2^8), bit-compatible with the ``reed-solomon-erasure``
crate (``galois_8`` field) that agave uses for shreds (normative text: spec/shred.md,
section "Erasure coding").

The code, exactly as the crate builds it:

* field GF(2^8) with reducing polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11D) and generator 2
  (crate ``galois_8.rs``: ``GENERATING_POLYNOMIAL = 29`` = 0x1D with the x^8 term implied);
* ``exp(a, n)`` = a^n with ``exp(a, 0) = 1`` (also for a = 0) and ``exp(0, n > 0) = 0``;
* encoding matrix = ``V * inverse(V[0:d, 0:d])`` where ``V`` is the (d+p) x d Vandermonde
  matrix ``V[r][c] = exp(r, c)`` (crate ``core.rs: build_matrix`` and
  ``matrix.rs: vandermonde``). Its top d rows are the identity, so the code is systematic:
  shards 0..d-1 are the data itself and shards d..d+p-1 are parity;
* reconstruction takes the *first d present shards in index order*, inverts the
  corresponding rows of the encoding matrix, rebuilds missing data shards, then re-encodes
  missing parity shards (crate ``core.rs: reconstruct_internal``). With consistent inputs
  the result does not depend on which shards were chosen; we follow the crate's choice so
  that even inconsistent (malicious) inputs produce the same bytes as agave, which the
  Merkle-root check then rejects.

Speed: when the optional compiled kernel ``_native_ec`` is built (scripts/setup.sh, against
Intel ISA-L), the matrix products run in ISA-L's ``ec_encode_data`` (SIMD) and matrix
inversion in its ``gf_invert_matrix``, driven with *our* coefficient matrices, so the bytes
are the crate's (ISA-L's field is the same GF(2^8) mod 0x11D; the inverse is unique).
Without it, the inner product is a table-driven numpy kernel: for every data shard ``j`` a
precomputed 256-row table holds ``coef[i][j] * x`` for all parity rows ``i`` (padded to a
multiple of 8 bytes and viewed as uint64), so one ``take`` gathers all parity rows for a
whole shard and the accumulation is a 64-bit XOR. :data:`BACKEND` says which one runs;
``encode_numpy``/``reconstruct_numpy`` always take the numpy path (the tests compare the
two). Measured with ``ambient-p2p bench erasure``. Pure functions; no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from .errors import ProtocolError

try:  # optional compiled ISA-L kernel (scripts/setup.sh builds it when libisal-dev is present)
    from ._native_ec import encode as _isal_encode
    from ._native_ec import init_tables as _isal_init_tables
    from ._native_ec import invert as _isal_invert

    #: Which kernel :func:`encode` and :func:`reconstruct` use: ``"isa-l"`` or ``"numpy"``.
    BACKEND = "isa-l"
except ImportError:  # not built: the numpy kernel below gives the same bytes, slower
    BACKEND = "numpy"

GF_POLYNOMIAL = 0x11D
GF_GENERATOR = 2
GF_ORDER = 256
#: The crate refuses more than 256 shards in total for GF(2^8).
MAX_TOTAL_SHARDS = 256

U8Array = npt.NDArray[np.uint8]


class ErasureError(ProtocolError, ValueError):
    """Erasure coding cannot proceed. ``reason`` is a stable code (spec/shred.md)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)


def _build_tables() -> tuple[list[int], list[int], U8Array]:
    exp = [0] * 510
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= GF_POLYNOMIAL
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    exp_np = np.array(exp, dtype=np.uint8)
    log_np = np.array(log, dtype=np.int64)
    mul = np.zeros((256, 256), dtype=np.uint8)
    mul[1:, 1:] = exp_np[log_np[1:, None] + log_np[None, 1:]]
    return exp, log, mul


EXP_TABLE, LOG_TABLE, MUL_TABLE = _build_tables()
#: MUL_TABLE flattened: entry (a << 8) | b is a * b.
_MUL_FLAT: U8Array = MUL_TABLE.reshape(-1)


def gf_mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return EXP_TABLE[LOG_TABLE[a] + LOG_TABLE[b]]


def gf_inv(a: int) -> int:
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return EXP_TABLE[(255 - LOG_TABLE[a]) % 255]


def gf_exp(a: int, n: int) -> int:
    """a^n as the crate defines it (``galois_8::exp``)."""
    if n == 0:
        return 1
    if a == 0:
        return 0
    return EXP_TABLE[(LOG_TABLE[a] * n) % 255]


def vandermonde(rows: int, cols: int) -> U8Array:
    return np.array([[gf_exp(r, c) for c in range(cols)] for r in range(rows)], dtype=np.uint8)


def gf_matmul(a: U8Array, b: U8Array) -> U8Array:
    """Matrix product over GF(2^8) (small matrices: used to build coding matrices)."""
    prod = MUL_TABLE[a[:, :, None], b[None, :, :]]  # (n, k, m)
    out: U8Array = np.bitwise_xor.reduce(prod, axis=1).astype(np.uint8)
    return out


def gf_invert(m: U8Array) -> U8Array:
    """Inverse of a square matrix; raises ErasureError if the matrix is singular (cannot
    happen for row subsets of the Vandermonde-derived matrix). ISA-L's ``gf_invert_matrix``
    when built, else :func:`gf_invert_numpy` (the inverse is unique: same bytes)."""
    n = m.shape[0]
    if BACKEND == "isa-l" and n > 0:
        inv = _isal_invert(np.ascontiguousarray(m, dtype=np.uint8).tobytes(), n)
        if inv is None:
            raise ErasureError("singular-matrix", "decode matrix is not invertible")
        return np.frombuffer(inv, dtype=np.uint8).reshape(n, n).copy()
    return gf_invert_numpy(m)


def gf_invert_numpy(m: U8Array) -> U8Array:
    """Inverse of a square matrix by Gauss-Jordan elimination in numpy; raises ErasureError
    if the matrix is singular."""
    n = m.shape[0]
    work = np.concatenate([m.astype(np.uint8), np.eye(n, dtype=np.uint8)], axis=1)
    for r in range(n):
        if work[r, r] == 0:
            below = np.nonzero(work[r + 1 :, r])[0]
            if below.size == 0:
                raise ErasureError("singular-matrix", "decode matrix is not invertible")
            s = r + 1 + int(below[0])
            work[[r, s]] = work[[s, r]]
        row = MUL_TABLE[gf_inv(int(work[r, r]))].take(work[r])
        # Eliminate column r from every other row at once: one gather of factor x pivot-row
        # products from the flattened table instead of a Python loop over rows (cold
        # recovery inverts a fresh matrix per loss pattern; this keeps it a few numpy calls).
        factors = work[:, r].astype(np.intp)
        factors[r] = 0
        factors <<= 8
        work ^= _MUL_FLAT.take(factors[:, None] + row)
        work[r] = row
    return work[:, n:].copy()


@functools.lru_cache(maxsize=256)
def encoding_matrix(num_data: int, num_parity: int) -> U8Array:
    """The crate's (d+p) x d systematic encoding matrix."""
    check_counts(num_data, num_parity)
    v = vandermonde(num_data + num_parity, num_data)
    top_inv = gf_invert(v[:num_data])
    return gf_matmul(v, top_inv)


def check_counts(num_data: int, num_parity: int) -> None:
    if num_data < 1:
        raise ErasureError("too-few-data-shards", "need at least one data shard")
    if num_parity < 1:
        raise ErasureError("too-few-parity-shards", "need at least one parity shard")
    if num_data + num_parity > MAX_TOTAL_SHARDS:
        raise ErasureError("too-many-shards", f"{num_data + num_parity} > {MAX_TOTAL_SHARDS}")


def _coef_tables(coefs: U8Array) -> npt.NDArray[np.uint64]:
    """For an r x d coefficient matrix, tables[j][x] = (coef[0][j]*x, ..., coef[r-1][j]*x)
    padded to a multiple of 8 bytes and viewed as uint64 words."""
    r, d = coefs.shape
    width = r + (-r) % 8
    t = np.zeros((d, 256, width), dtype=np.uint8)
    t[:, :, :r] = MUL_TABLE[coefs.T].transpose(0, 2, 1)
    return t.view(np.uint64)


@functools.lru_cache(maxsize=256)
def _parity_tables(num_data: int, num_parity: int) -> npt.NDArray[np.uint64]:
    return _coef_tables(encoding_matrix(num_data, num_parity)[num_data:])


def _apply(tables: npt.NDArray[np.uint64], rows: int, shards: U8Array) -> U8Array:
    """rows x L output of (coefficients encoded in ``tables``) times the d x L ``shards``:
    one gather of every (shard j, byte x) table row, then one XOR reduction over j (two
    numpy calls instead of 2d, which matters at 1 KB shards)."""
    d = shards.shape[0]
    flat = tables.reshape(d * 256, -1)
    # Row j*256 + x of the flattened tables; widen in place (one cast, one in-place add)
    # rather than a mixed uint8 + intp broadcast add, which numpy runs ~2x slower.
    idx = shards.astype(np.intp)
    idx += _row_offsets(d)
    acc = np.bitwise_xor.reduce(flat.take(idx, axis=0), axis=0)
    out: U8Array = acc.view(np.uint8)[:, :rows].T.copy()
    return out


@functools.lru_cache(maxsize=64)
def _row_offsets(d: int) -> npt.NDArray[np.intp]:
    return (np.arange(d, dtype=np.intp) * 256)[:, None]


def _check_lengths(shards: Sequence[bytes]) -> None:
    lengths = {len(s) for s in shards}
    if len(lengths) != 1:
        raise ErasureError("incorrect-shard-size", f"shards differ in length: {sorted(lengths)}")
    if 0 in lengths:
        raise ErasureError("empty-shard", "shards must not be empty")


def _as_matrix(shards: Sequence[bytes] | U8Array) -> U8Array:
    if isinstance(shards, np.ndarray):
        return shards
    _check_lengths(shards)
    return np.frombuffer(b"".join(bytes(s) for s in shards), dtype=np.uint8).reshape(len(shards), -1)


def encode(data_shards: Sequence[bytes] | U8Array, num_parity: int) -> list[bytes]:
    """Parity shards for ``data_shards`` (all the same length)."""
    if BACKEND == "isa-l":
        if isinstance(data_shards, np.ndarray):
            num_data = data_shards.shape[0]
            if data_shards.ndim != 2 or data_shards.shape[1] == 0:
                raise ErasureError("empty-shard", "shards must not be empty")
            check_counts(num_data, num_parity)
            data_arg: list[bytes] | U8Array = np.ascontiguousarray(data_shards, dtype=np.uint8)
        else:
            data_arg = data_shards if isinstance(data_shards, list) else list(data_shards)
            num_data = len(data_arg)
            check_counts(num_data, num_parity)
            _check_lengths(data_arg)
        return _isal_encode(_parity_isal_tables(num_data, num_parity), num_data, num_parity, data_arg)
    return encode_numpy(data_shards, num_parity)


def encode_numpy(data_shards: Sequence[bytes] | U8Array, num_parity: int) -> list[bytes]:
    """:func:`encode` on the numpy kernel whether or not ISA-L is built."""
    data = _as_matrix(data_shards)
    num_data = data.shape[0]
    check_counts(num_data, num_parity)
    parity = _apply(_parity_tables(num_data, num_parity), num_parity, data)
    return [row.tobytes() for row in parity]


@functools.lru_cache(maxsize=1024)
def _decode_tables(num_data: int, num_parity: int, used: tuple[int, ...]) -> npt.NDArray[np.uint64]:
    """numpy tables for the coefficients of :func:`_decode_coefs`."""
    return _coef_tables(_decode_coefs(num_data, num_parity, used, gf_invert_numpy)[1])


@functools.lru_cache(maxsize=256)
def _parity_isal_tables(num_data: int, num_parity: int) -> bytes:
    return _isal_init_tables(num_data, num_parity, encoding_matrix(num_data, num_parity)[num_data:].tobytes())


def _decode_coefs(num_data: int, num_parity: int, used: tuple[int, ...],
                  invert: Callable[[U8Array], U8Array] = gf_invert) -> tuple[list[int], U8Array]:
    """(missing data shards, k x d coefficients over the ``used`` shards in ``used`` order
    that rebuild them): only the rows of ``inverse(encoding_matrix[used])`` that are needed.

    The crate inverts the whole d x d matrix; the inverse is unique, so computing only the
    rows we need gives the same coefficients and the same bytes. ``used`` holds every present
    data shard (they come first in index order) as identity rows, so with k data shards
    missing and Q the k parity rows used, x_missing = A (y_Q ^ P_Q,present x_present) where
    A = inverse(P_Q,missing) is only k x k (GF(2^8): subtraction is XOR)."""
    used_set = set(used)
    missing = [i for i in range(num_data) if i not in used_set]
    parity_rows = [u for u in used if u >= num_data]
    k = len(missing)
    present = [u for u in used if u < num_data]
    p_q = encoding_matrix(num_data, num_parity)[parity_rows]
    a = invert(p_q[:, missing])
    coefs = np.zeros((k, num_data), dtype=np.uint8)
    col = {u: c for c, u in enumerate(used)}
    coefs[:, [col[u] for u in parity_rows]] = a
    if present:
        coefs[:, [col[u] for u in present]] = gf_matmul(a, np.ascontiguousarray(p_q[:, present]))
    return missing, coefs


@functools.lru_cache(maxsize=1024)
def _recovery_isal_tables(num_data: int, num_parity: int, present: tuple[int, ...]) -> tuple[bytes, int]:
    """ISA-L tables of one coefficient matrix over the first d present shards that yields
    every missing shard at once, missing data rows first then missing parity rows (ISA-L's
    own decode recipe), and the row count. A missing parity row q is E[q] times the data,
    where the missing data are the rows of :func:`_decode_coefs` and the present data are
    used shards themselves: E[q, missing] * coefs, plus E[q, present] on their columns. The
    crate instead re-encodes parity from the rebuilt data: the same linear map, same bytes."""
    used = present[:num_data]
    present_set = set(present)
    total = num_data + num_parity
    missing, coefs = _decode_coefs(num_data, num_parity, used)
    missing_parity = [i for i in range(num_data, total) if i not in present_set]
    rows = [coefs] if missing else []
    if missing_parity:
        e = encoding_matrix(num_data, num_parity)[missing_parity]
        pc = gf_matmul(np.ascontiguousarray(e[:, missing]), coefs) if missing else \
            np.zeros((len(missing_parity), num_data), dtype=np.uint8)
        col = {u: c for c, u in enumerate(used)}
        present_data = [u for u in used if u < num_data]
        if present_data:
            pc[:, [col[u] for u in present_data]] ^= e[:, present_data]
        rows.append(pc)
    matrix = np.concatenate(rows, axis=0)
    return _isal_init_tables(num_data, matrix.shape[0], matrix.tobytes()), matrix.shape[0]


def clear_decode_cache() -> None:
    """Forget cached decode matrices (benchmarks of cold recovery call this)."""
    _decode_tables.cache_clear()
    _recovery_isal_tables.cache_clear()


def reconstruct(shards: Sequence[bytes | None], num_data: int) -> list[bytes]:
    """Fill in every missing (``None``) shard of a d+p set; return all d+p shards.

    Raises ErasureError ``too-few-shards-present`` when fewer than ``num_data`` are given."""
    if BACKEND != "isa-l":
        return reconstruct_numpy(shards, num_data)
    total = len(shards)
    num_parity = total - num_data
    check_counts(num_data, num_parity)
    present = tuple(i for i, s in enumerate(shards) if s is not None)
    if len(present) < num_data:
        raise ErasureError("too-few-shards-present", f"{len(present)} of {total} present, need {num_data}")
    given: list[bytes] = [shards[i] for i in present]  # type: ignore[misc]
    if len(present) == total:
        _check_lengths(given)
        return [bytes(s) for s in given]
    _check_lengths(given[:num_data])  # the shards used first, then the rest: numpy's order of reasons
    if any(len(s) != len(given[0]) for s in given[num_data:]):
        raise ErasureError("incorrect-shard-size", "present shards differ in length")
    tables, rows = _recovery_isal_tables(num_data, num_parity, present)
    rebuilt = iter(_isal_encode(tables, num_data, rows, given[:num_data]))
    # Missing data rows come first, then missing parity rows: both in index order.
    return [bytes(s) if s is not None else next(rebuilt) for s in shards]


def reconstruct_numpy(shards: Sequence[bytes | None], num_data: int) -> list[bytes]:
    """:func:`reconstruct` on the numpy kernel whether or not ISA-L is built."""
    total = len(shards)
    num_parity = total - num_data
    check_counts(num_data, num_parity)
    present = [i for i, s in enumerate(shards) if s is not None]
    if len(present) < num_data:
        raise ErasureError("too-few-shards-present", f"{len(present)} of {total} present, need {num_data}")
    if len(present) == total:
        _as_matrix([s for s in shards if s is not None])  # size check only
        return [bytes(s) for s in shards if s is not None]
    used = tuple(present[:num_data])
    sub = _as_matrix([shards[i] for i in used])  # type: ignore[misc]
    if any(len(shards[i]) != sub.shape[1] for i in present):  # type: ignore[arg-type]
        raise ErasureError("incorrect-shard-size", "present shards differ in length")
    out: list[bytes | None] = list(shards)
    missing_data = [i for i in range(num_data) if shards[i] is None]
    if missing_data:
        data = _apply(_decode_tables(num_data, num_parity, used), len(missing_data), sub)
        for row, i in enumerate(missing_data):
            out[i] = data[row].tobytes()
    missing_parity = [i for i in range(num_data, total) if shards[i] is None]
    if missing_parity:
        full = _as_matrix([out[i] for i in range(num_data)])  # type: ignore[misc]
        parity = _apply(_parity_tables(num_data, num_parity), num_parity, full)
        for i in missing_parity:
            out[i] = parity[i - num_data].tobytes()
    return [bytes(s) for s in out]  # type: ignore[arg-type]
