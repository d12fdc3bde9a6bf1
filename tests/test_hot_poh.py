"""The compiled PoH chain (``core/_native_poh.c``, one OpenSSL call per batch) gives exactly the
digests of the Python loop and of the committed interop vectors, refuses bad arguments with an
exception instead of hashing something else, and is built wherever its toolchain exists."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import poh

VECTORS = Path(__file__).resolve().parent.parent / "interop" / "poh" / "hash_n"

try:
    from ambient_p2p.core import _native_poh as native
except ImportError:
    native = None  # type: ignore[assignment]
needs_native = pytest.mark.skipif(native is None, reason="native PoH module not built (scripts/setup.sh)")


def _plain(start: bytes, n: int) -> bytes:
    h = start
    for _ in range(n):
        h = hashlib.sha256(h).digest()
    return h


def test_native_module_built_where_toolchain_exists() -> None:
    """scripts/setup.sh builds it when gcc and OpenSSL's headers are present; then
    :func:`poh.hash_n` must be using it (a silent fallback would cost 4x)."""
    if shutil.which("gcc") is None or not Path("/usr/include/openssl/sha.h").exists():
        pytest.skip("no gcc or libssl-dev here")
    assert poh.HASH_N_BACKEND == "openssl"


def test_native_shred_module_built_where_toolchain_exists() -> None:
    """The same for core/_native_shred.c (shred Merkle roots and the parse accept path):
    tests/test_hot_shred_merkle.py skips itself without the module, so a silently failed
    build must fail here."""
    if shutil.which("gcc") is None or not Path("/usr/include/openssl/sha.h").exists():
        pytest.skip("no gcc or libssl-dev here")
    from ambient_p2p.core import shred

    assert shred.MERKLE_ROOT_BACKEND == "openssl"


def test_native_pol_kernel_built_where_gcc_exists() -> None:
    """The same for core/_native_pol.c (the PoL fingerprint kernel, needs only gcc and libm):
    tests/test_hot_pol.py skips its kernel tests without it."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc here")
    import importlib

    assert importlib.util.find_spec("ambient_p2p.core._native_pol") is not None


@needs_native
@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 600))
def test_native_equals_python_loop(start: bytes, n: int) -> None:
    want = _plain(start, n)
    assert native is not None
    assert native.hash_n(start, n) == want
    assert poh.hash_n_py(start, n) == want
    assert poh.hash_n(start, n) == want


def test_interop_vectors_both_paths() -> None:
    cases = sorted(VECTORS.iterdir())
    assert cases, "interop/poh/hash_n has no vectors"
    for case in cases:
        req = json.loads((case / "input.json").read_text())
        want = bytes.fromhex(json.loads((case / "output.json").read_text())["hash"])
        start, n = bytes.fromhex(req["start"]), int(req["n"])
        if native is not None:
            assert native.hash_n(start, n) == want, case.name
        assert poh.hash_n_py(start, n) == want, case.name
        assert poh.hash_n(start, n) == want, case.name


@needs_native
def test_long_batch_releases_nothing_wrong() -> None:
    """A batch long enough to release the GIL (>= 256) still chains exactly."""
    start = b"\x5a" * 32
    assert native.hash_n(start, 4097) == poh.hash_n_py(start, 4097)
    # Any buffer of 32 bytes is accepted (bytearray, memoryview) and not modified.
    buf = bytearray(start)
    assert native.hash_n(buf, 300) == native.hash_n(memoryview(start), 300) == poh.hash_n_py(start, 300)
    assert buf == start


@needs_native
@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((b"\x00" * 31, 1), ValueError),
        ((b"\x00" * 33, 1), ValueError),
        ((b"\x00" * 32, -1), ValueError),
        ((b"\x00" * 32, 1 << 70), OverflowError),
        (("0" * 32, 1), TypeError),
        ((b"\x00" * 32, 1.5), TypeError),
        ((b"\x00" * 32,), TypeError),
    ],
)
def test_native_rejects_bad_arguments(args: tuple[object, ...], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        native.hash_n(*args)


def test_dispatch_keeps_python_semantics_outside_the_native_domain() -> None:
    """``hash_n`` only calls C for n > 0 and 32-byte starts; n == 0 returns the start itself."""
    s = b"\x01" * 32
    assert poh.hash_n(s, 0) is s
    odd = b"\x02" * 7
    assert poh.hash_n(odd, 3) == _plain(odd, 3)
