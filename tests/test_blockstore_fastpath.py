"""insert_shreds' batch fast path (one ``scan_batch`` C call, then per-slot and per-FEC-set
bookkeeping) leaves exactly what the per-shred path leaves: the same InsertResult (counts,
rejections with their reasons and order, duplicates, completed slots), the same records in
each write batch (puts and deletes) and the same database, on random sequences of honest,
equivocating, forged, corrupted, truncated, relayed and repeated shreds over a small fork
tree, with roots set and leaders unknown. The fast path must also actually run on the
common case (a test that compares two copies of the slow path could not fail)."""

from __future__ import annotations

import contextlib
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient_p2p.core import codec
from ambient_p2p.core import shred as S
from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.ledger import blockstore as B
from ambient_p2p.ledger.blockstore import COLUMN_FAMILIES, Blockstore, InsertResult
from ambient_p2p.ledger.meta import (
    MAX_SLOT_CHILDREN,
    ErasureMeta,
    MerkleRootMeta,
    ShredIndex,
    SlotMeta,
    encode_meta,
    encode_meta_exact,
)

pytestmark = pytest.mark.skipif(S.scan_batch is None, reason="_native_shred not built (scripts/setup.sh)")

LEADER = Keypair.deterministic("fastpath-leader")
EVIL = Keypair.deterministic("fastpath-evil")


def _slot(slot: int, parent: int, seed: int, sizes: tuple[int, ...], kp: Keypair = LEADER) -> list[list[bytes]]:
    """A slot's FEC sets (each a list of 64 payloads: 32 data then 32 coding) from successive
    entry batches, the last one closing the slot (resigned)."""
    rng = random.Random(seed)
    sh = S.SlotShredder(kp, slot, parent, 1, sha256(b"chain", bytes([slot])))
    sets: list[list[bytes]] = []
    for i, size in enumerate(sizes):
        b = sh.add(rng.randbytes(size), reference_tick=i, is_last_in_slot=i == len(sizes) - 1)
        for k in range(0, len(b.data), 32):
            sets.append([s.payload for s in b.data[k : k + 32] + b.code[k : k + 32]])
    return sets


# versions of slots (a small fork tree, an equivocating copy, a wrong parent, a forger)
VERSIONS: list[list[list[bytes]]] = [
    _slot(1, 0, 1, (20_000, 100)),          # 0: slot 1, two FEC sets (second resigned)
    _slot(2, 1, 2, (100,)),                 # 1: slot 2 on 1
    _slot(3, 1, 3, (100, 100)),             # 2: slot 3 on 1 (fork)
    _slot(4, 2, 4, (100,)),                 # 3: slot 4 on 2
    _slot(2, 1, 99, (100,)),                # 4: slot 2 again, other data: equivocation
    _slot(3, 2, 3, (100, 100)),             # 5: slot 3 naming another parent
    _slot(4, 2, 4, (100,), kp=EVIL),        # 6: slot 4 signed by a non-leader
    _slot(6, 4, 6, (100,)),                 # 7: slot 6 on 4, skipping 5
    _slot(0, 0, 7, (100,)),                 # 8: slot 0 (the per-shred path only)
]


def _mutate(p: bytes, how: int, rng: random.Random) -> bytes:
    b = bytearray(p)
    if how == 1:  # relayed: a nonzero retransmitter signature where the variant has one
        v = S.ShredVariant.from_byte(b[S.OFFSET_VARIANT])
        if v.resigned:
            off = v.retransmitter_signature_offset
            b[off : off + 64] = rng.randbytes(64)
    elif how == 2:  # the repair nonce left on
        b += rng.randbytes(4)
    elif how == 3:  # a corrupted byte anywhere
        b[rng.randrange(len(b))] ^= 1 + rng.randrange(255)
    elif how == 4:  # a corrupted header byte
        b[rng.randrange(64, 89)] ^= 1 + rng.randrange(255)
    elif how == 5:  # truncated
        del b[rng.randrange(len(b)) :]
    elif how == 6:  # a forged signature
        b[:64] = rng.randbytes(64)
    return bytes(b)


@st.composite
def _batch(draw: Any) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 3))):
        sets = VERSIONS[draw(st.integers(0, len(VERSIONS) - 1))]
        fec = sets[draw(st.integers(0, len(sets) - 1))]
        keep = draw(st.sampled_from(["all", "data", "code", "some", "few"]))
        rng = random.Random(draw(st.integers(0, 2**32)))
        if keep == "all":
            picked = list(fec)
        elif keep == "data":
            picked = fec[:32]
        elif keep == "code":
            picked = fec[32:]
        else:
            picked = rng.sample(fec, 40 if keep == "some" else 5)
        if draw(st.booleans()):
            rng.shuffle(picked)
        out += picked
    rng = random.Random(draw(st.integers(0, 2**32)))
    if draw(st.booleans()):
        rng.shuffle(out)  # slots and sets interleaved
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        how = draw(st.integers(0, 6))
        i = rng.randrange(len(out))
        if draw(st.booleans()):
            out.insert(rng.randrange(len(out) + 1), _mutate(out[i], how, rng))  # an extra copy
        else:
            out[i] = _mutate(out[i], how, rng)
    return out


class _Recording(Blockstore):
    """Keeps every write batch's puts and deletes."""

    batches: list[tuple[dict[tuple[str, bytes], bytes], set[tuple[str, bytes]]]]

    def _write(self, writes: dict[tuple[str, bytes], bytes], deletes: Any = (), *, sync: bool = False,
               bulk: tuple[list[tuple[str, bytes]], list[bytes]] | None = None) -> None:
        deletes = list(deletes)
        puts = dict(zip(*bulk, strict=True)) if bulk is not None else {}
        assert not puts.keys() & writes.keys()  # a record is written once per batch
        self.batches.append(({**puts, **writes}, set(deletes)))
        super()._write(writes, deletes, sync=sync, bulk=bulk)


def _contents(bs: Blockstore) -> dict[str, dict[bytes, bytes]]:
    return {cf: dict(bs._iter_all(cf)) for cf in COLUMN_FAMILIES}


def _run(path: Path, fast: bool, roots: list[int], unknown: int | None, steps: list[tuple[list[bytes], bool, bool]],
         monkeypatch: pytest.MonkeyPatch) -> tuple[list[InsertResult], Any, Any, list[int]]:
    monkeypatch.setattr(B, "_FAST_PATH", fast)
    asked: list[int] = []

    def leader(slot: int) -> bytes | None:
        asked.append(slot)
        return None if slot == unknown else LEADER.pubkey

    with _Recording.open(path) as bs:
        bs.batches = []
        if roots:
            bs.set_roots(roots)
        results = [bs.insert_shreds(pk, leader, signatures_verified=pre, recover_missing=rec)
                   for pk, pre, rec in steps]
        return results, bs.batches, _contents(bs), asked


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(_batch(), st.booleans(), st.booleans()), min_size=1, max_size=4),
       roots=st.sampled_from([[], [0], [0, 1], [0, 2]]), unknown=st.sampled_from([None, None, 2, 4]))
def test_fast_path_matches_per_shred_path(steps: list[tuple[list[bytes], bool, bool]], roots: list[int],
                                          unknown: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fast = _run(Path(tmp) / "fast", True, roots, unknown, steps, monkeypatch)
        slow = _run(Path(tmp) / "slow", False, roots, unknown, steps, monkeypatch)
    assert fast[0] == slow[0]  # InsertResults, field by field and in order
    assert fast[1] == slow[1]  # every batch's puts and deletes
    assert fast[2] == slow[2]  # the database
    assert fast[3] == slow[3]  # leader_for_slot asked the same slots in the same order


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    calls: list[bool] = []
    real = Blockstore._insert_fast

    def counting(self: Blockstore, *args: Any) -> bool:
        ok = real(self, *args)
        calls.append(ok)
        return ok

    monkeypatch.setattr(Blockstore, "_insert_fast", counting)
    return calls


def test_fast_path_runs_on_the_common_case(tmp_path: Path, fast_calls: list[bool]) -> None:
    """Whole slots, then a slot delivered FEC set by FEC set, out of order, with relayed
    copies (nonzero retransmitter signatures) and one set recovered from coding shreds."""
    with Blockstore.open(tmp_path / "bs") as bs:
        bs.set_roots([0])
        r = bs.insert_shreds([p for s in VERSIONS[0] for p in s], lambda _s: LEADER.pubkey)
        assert r.inserted == 128 and r.completed_slots == [1] and not r.rejected
        r = bs.insert_shreds(VERSIONS[2][1], lambda _s: LEADER.pubkey)  # slot 3's last set first
        assert r.inserted == 64 and not r.completed_slots
        relayed = [_mutate(p, 1, random.Random(i)) for i, p in enumerate(VERSIONS[2][0][8:])]  # 24 data + 32 code
        r = bs.insert_shreds(relayed, lambda _s: LEADER.pubkey)
        assert r.inserted == 56 and r.recovered == 8 and r.completed_slots == [3]
        assert bs.slot_meta(3).is_connected and bs.slot_meta(1).is_connected  # type: ignore[union-attr]
    assert fast_calls == [True, True, True]


def test_fast_path_declines_and_per_shred_path_decides(tmp_path: Path, fast_calls: list[bool]) -> None:
    """An equivocating set after the honest one: scan_batch vouches for the batch, the stored
    root does not agree, so the per-shred path stores the duplicate proof."""
    with Blockstore.open(tmp_path / "bs") as bs:
        bs.insert_shreds(VERSIONS[0][0] + VERSIONS[0][1] + VERSIONS[1][0], lambda _s: LEADER.pubkey)
        r = bs.insert_shreds(VERSIONS[4][0], lambda _s: LEADER.pubkey)
        assert r.inserted == 0 and r.duplicates and bs.duplicate_proof(2) is not None
    assert fast_calls == [True, False]


_u32 = st.integers(0, 2**32 - 1)
_u64 = st.integers(0, 2**64 - 1)
_metas = st.one_of(
    st.builds(SlotMeta, _u64, _u32, _u32, st.none() | _u32, st.none() | _u64,
              st.lists(_u64, max_size=30).map(lambda v: tuple(sorted(v))), st.booleans(),
              st.lists(_u32, max_size=40).map(tuple)),
    st.builds(ShredIndex, _u64, st.lists(_u32, max_size=300).map(tuple), st.lists(_u32, max_size=10).map(tuple)),
    st.builds(ErasureMeta, _u32, st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1), _u32),
    st.builds(MerkleRootMeta, st.binary(min_size=32, max_size=32), _u32, st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(_metas)
def test_encode_meta_is_codec_encode(m: Any) -> None:
    """The insert path's encoder writes codec's bytes, and decoding them gives the record
    back with the same field types (what Blockstore._remember relies on)."""
    raw = encode_meta_exact(m)
    assert raw == codec.encode(m) == encode_meta(m)
    back = codec.decode(raw, type(m))
    assert back == m and [type(v) for v in back.__dict__.values()] == [type(v) for v in m.__dict__.values()]


def test_encode_meta_declines_what_codec_refuses() -> None:
    for bad in (SlotMeta(1, 2**32, 0), SlotMeta(1, 0, 0, next_slots=tuple(range(MAX_SLOT_CHILDREN + 1))),
                SlotMeta(1, 0, 0, next_slots=[2]),  # type: ignore[arg-type]
                ShredIndex(1, (True,)),  # type: ignore[arg-type]
                ErasureMeta(0, 2**16, 1, 0), MerkleRootMeta(b"x" * 31, 0, True), MerkleRootMeta(b"x" * 32, 0, 1)):  # type: ignore[arg-type]
        assert encode_meta_exact(bad) is None
        with contextlib.suppress(codec.EncodeError):  # codec refuses it, or encodes it (a list): the same bytes
            assert encode_meta(bad) == codec.encode(bad)


@settings(max_examples=300, deadline=None)
@given(v=st.lists(st.one_of(st.integers(-2, 2**64 + 2), st.booleans(), st.floats(allow_nan=False)), max_size=40)
       .map(tuple) | st.lists(st.integers(0, 2**64 - 1), max_size=40).map(tuple)
       | st.lists(st.integers(0, 300), max_size=40),
       bits=st.sampled_from([16, 32, 64]), max_items=st.sampled_from([5, 40]))
def test_compiled_uint_array_matches_python(v: Any, bits: int, max_items: int) -> None:
    """_native_shred.uint_array == meta.py's Python encoder: the same bytes, the same refusals."""
    from ambient_p2p.ledger import meta as M

    assert S.cbor_uint_array is not None
    assert S.cbor_uint_array(v, bits, max_items) == M._uint_list_py(v, bits, max_items)


def test_scan_batch_summary() -> None:
    """What scan_batch hands the fast path for an honest slot, and the batches it leaves to
    the per-shred path."""
    assert S.scan_batch is not None
    sets = VERSIONS[0]  # slot 1: FEC set 0 (DATA_COMPLETE at 31), FEC set 32 (resigned, LAST at 63)
    packets = [p for s in sets for p in s]
    packets[70] = _mutate(packets[70], 1, random.Random(1))  # relayed copy of a resigned data shred
    packets[3] += b"\x00\x01\x02\x03"  # the repair nonce left on
    got = S.scan_batch(packets)
    assert got is not None
    cks, payloads, data_keys, code_keys, slots = got
    shreds = [S.parse_shred(p) for p in packets]
    stored = [s if not s.variant.resigned else s.with_retransmitter_signature(bytes(64)) for s in shreds]
    assert payloads == [s.payload for s in stored]
    assert cks == [("data_shred" if s.is_data else "code_shred", B.shred_key(s.slot, s.index)) for s in shreds]
    assert data_keys == [k for (cf, k) in cks if cf == "data_shred"]
    assert code_keys == [k for (cf, k) in cks if cf == "code_shred"]
    [(slot, po, first_data, last_data, last_in, max_data, data_idx, code_idx, complete, fsets)] = slots
    assert (slot, po, first_data, last_data, last_in, max_data) == (1, 1, 0, 95, 63, 63)
    assert sorted(data_idx) == list(range(64)) and sorted(code_idx) == list(range(64))
    assert sorted(complete) == [31, 63]
    assert fsets == [(fec, shreds[k].merkle_root(), shreds[k].signature, shreds[k].index, True, 32, 32, fec)
                     for k, fec in ((0, 0), (64, 32))]
    # left to the per-shred path: a repeated key, one FEC set with two roots, slot 0, a
    # malformed packet, an empty batch
    assert S.scan_batch([*packets, packets[5]]) is None
    assert S.scan_batch(VERSIONS[1][0][:16] + VERSIONS[4][0][16:]) is None
    assert S.scan_batch(VERSIONS[8][0]) is None
    assert S.scan_batch([*packets[:5], packets[5][:100]]) is None
    assert S.scan_batch([*VERSIONS[3][0][:32], VERSIONS[0][1][31]]) is not None  # another slot's LAST: fine
    assert S.scan_batch([]) is None
