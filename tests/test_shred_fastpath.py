"""The blockstore's fast paths in core/shred.py give exactly what the reference code gives:
parse_shred vs Shred(...) + _sanitize_data/_sanitize_code, and the memoized
Shred.merkle_root vs get_merkle_root over the leaf and the proof."""

from __future__ import annotations

import contextlib
import os
import random

import pytest

from ambient_p2p.core import shred as S
from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.core.shred import ShredError

LEADER = Keypair.deterministic("shred-fastpath-leader")


def _reference_parse(packet: bytes) -> S.Shred:
    """parse_shred as it was written before the fast path (same checks, same order)."""
    packet = bytes(packet)
    if len(packet) > S.PACKET_DATA_BYTES:
        raise ShredError("oversized", f"{len(packet)} bytes exceeds the {S.PACKET_DATA_BYTES}-byte packet")
    variant = S.shred_variant_of(packet)
    if len(packet) < variant.payload_size:
        raise ShredError("wrong-size", f"{len(packet)} bytes, a {'data' if variant.is_data else 'coding'} "
                         f"shred is {variant.payload_size}")
    payload = packet[: variant.payload_size]
    variant.capacity()
    sig, _v, slot, index, version, fec = S._COMMON.unpack_from(payload, 0)
    if variant.is_data:
        po, flags, size = S._DATA_HDR.unpack_from(payload, S.SIZE_OF_COMMON_SHRED_HEADER)
        s = S.Shred(payload, variant, sig, slot, index, version, fec, parent_offset=po, flags=flags, size=size)
        S._sanitize_data(s)
    else:
        nd, nc, pos = S._CODE_HDR.unpack_from(payload, S.SIZE_OF_COMMON_SHRED_HEADER)
        s = S.Shred(payload, variant, sig, slot, index, version, fec, num_data_shreds=nd, num_coding_shreds=nc,
                    position=pos)
        S._sanitize_code(s)
    return s


def _outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(*args))
    except ShredError as exc:
        return ("err", exc.reason, exc.detail)


def _packets(rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    for slot, last in ((3, False), (4, True)):
        b = S.make_shreds_from_data(LEADER, sha256(b"r"), os.urandom(rng.choice([10, 40_000])), slot, slot - 1, 1,
                                    0, last, 0, 0)
        out += [s.payload for s in b.data + b.code]
    mutated = []
    for p in out:
        b = bytearray(p)
        for _ in range(rng.randint(1, 3)):
            i = rng.choice([rng.randrange(len(b)), rng.randrange(64, 89), rng.randrange(len(b) - 200, len(b))])
            b[i] = rng.randrange(256)
        mutated.append(bytes(b))
        mutated.append(bytes(b[: rng.randrange(len(b) + 1)]))
        mutated.append(bytes(b) + os.urandom(rng.randrange(1, 40)))
    return out + mutated


def test_parse_shred_matches_reference() -> None:
    rng = random.Random(7)
    pkts = _packets(rng)
    pkts += [os.urandom(n) for n in (0, 64, 65, 100, 1203, 1228, 1232, 1233)]
    pkts += [bytes([0] * 64 + [v]) + os.urandom(1200) for v in range(256)]
    oks = 0
    for p in pkts:
        for arg in (p, bytearray(p), memoryview(p)):
            new, ref = _outcome(S.parse_shred, arg), _outcome(_reference_parse, arg)
            assert new == ref
            if new[0] == "ok":
                assert new[1].__dict__ == ref[1].__dict__ and list(new[1].__dict__) == list(ref[1].__dict__)
                oks += 1
    assert oks > 300  # both accept and reject paths were exercised


@pytest.mark.parametrize("backend", ["python", "openssl"])
def test_memoized_merkle_root_matches_reference(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend == "openssl" and S.MERKLE_ROOT_BACKEND != "openssl":
        pytest.skip("_native_shred not built (scripts/setup.sh)")
    monkeypatch.setattr(S, "MERKLE_ROOT_BACKEND", backend)
    rng = random.Random(11)
    shreds = []
    for p in _packets(rng):
        with contextlib.suppress(ShredError):
            shreds.append(S.parse_shred(p))
    rng.shuffle(shreds)
    memo: S.MerkleMemo = {}
    for s in shreds + shreds:
        ref = _outcome(S.get_merkle_root, s.erasure_shard_index, s.merkle_node, s.merkle_proof)
        assert _outcome(s.merkle_root, memo) == ref
        assert _outcome(s.merkle_root) == ref
    if backend == "python":
        assert memo  # the memo path ran (the compiled root shares work by itself, no memo)
