"""Snapshot sync (issue 20, spec/join.md "Snapshot sync"): the trust rule, the chunk checks,
the parallel download that avoids lying servers, and the wire messages.

The download is driven through its ``fetch`` seam by servers that answer from real
attestations over real snapshot bytes: an honest one, one that flips a byte of every chunk,
one whose requests fail. The multi-process version (lying validators in a live localnet) is
in tests/test_join_multiproc.py.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import codec
from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.core.join import (
    MAX_SNAPSHOT_CHUNKS,
    SNAPSHOT_CHUNK_BYTES,
    Attestation,
    TrustedSnapshot,
    attestation_problem,
    choose_snapshot,
    chunk_problem,
)
from ambient_p2p.net.messages import SnapshotChunk, SnapshotOffers
from ambient_p2p.net.reqresp import ReqRespError
from ambient_p2p.node.snapshot_sync import (
    SnapshotSyncError,
    SyncReport,
    attest,
    download,
    to_core,
    to_wire,
)

GENESIS = sha256(b"test genesis")
KEYS = [Keypair.deterministic("join-snapshot", i) for i in range(6)]
RAW = bytes(random.Random(1).getrandbits(8) for _ in range(5 * 1024 + 17))  # 6 chunks of 1 KiB
BANK = sha256(b"bank")


def _att(i: int, *, raw: bytes = RAW, slot: int = 128, bank: bytes = BANK, chunk: int = 1024,
         genesis: bytes = GENESIS) -> Attestation:
    return attest(KEYS[i], genesis, slot, bank, raw, chunk)


def _stakes(n: int = 4) -> dict[bytes, int]:
    return {k.pubkey: 100 for k in KEYS[:n]}


# -- the trust rule ------------------------------------------------------------------------------
def test_two_thirds_of_the_stake_makes_a_snapshot_trusted_and_fewer_does_not() -> None:
    t, refused = choose_snapshot([_att(0), _att(1), _att(2)], _stakes(), GENESIS)
    assert t is not None and t.attested_stake == 300 and t.total_stake == 400 and not refused
    assert set(t.servers) == {KEYS[i].pubkey for i in range(3)}
    t, _ = choose_snapshot([_att(0), _att(1)], _stakes(), GENESIS)
    assert t is None  # 200 of 400 < 2/3


def test_a_lying_minority_cannot_get_its_bank_hash_trusted() -> None:
    liar = _att(3, bank=sha256(b"a bank no supermajority rooted"))
    t, _ = choose_snapshot([_att(0), _att(1), _att(2), liar], _stakes(), GENESIS)
    assert t is not None and t.attestation.bank_hash == BANK and KEYS[3].pubkey not in t.servers
    # the liar's claim alone, repeated, still counts its stake once
    t, _ = choose_snapshot([liar] * 10 + [_att(0)], _stakes(), GENESIS)
    assert t is None


def test_refused_attestations_are_counted_by_reason() -> None:
    forged = dataclasses.replace(_att(0), signature=bytes(64))
    stolen = dataclasses.replace(_att(1), identity=KEYS[2].pubkey)  # signed by 1, claims to be 2
    other_chain = _att(2, genesis=sha256(b"another chain"))
    outsider = _att(5)  # no LStake in genesis
    bad_chunks = dataclasses.replace(_att(3), chunk_hashes=_att(3).chunk_hashes[:-1])
    t, refused = choose_snapshot([forged, stolen, other_chain, outsider, bad_chunks], _stakes(), GENESIS)
    assert t is None
    assert refused == {"bad-signature": 2, "wrong-chain": 1, "no-stake": 1, "bad-chunks": 1}


def test_the_newest_trusted_snapshot_wins() -> None:
    old = [_att(i, slot=64) for i in range(4)]
    new = [_att(i, slot=128) for i in range(3)]
    newest_untrusted = [_att(0, slot=192)]
    t, _ = choose_snapshot(old + new + newest_untrusted, _stakes(), GENESIS)
    assert t is not None and t.attestation.slot == 128


@settings(max_examples=200, deadline=None)
@given(stakes=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=6),
       signers=st.sets(st.integers(min_value=0, max_value=5)))
def test_trusted_exactly_when_signers_hold_two_thirds(stakes: list[int], signers: set[int]) -> None:
    table = {KEYS[i].pubkey: s for i, s in enumerate(stakes)}
    atts = [_att(i) for i in sorted(signers)]
    t, _ = choose_snapshot(atts, table, GENESIS)
    weight = sum(stakes[i] for i in signers if i < len(stakes))
    total = sum(stakes)
    assert (t is not None) == (total > 0 and weight > 0 and 3 * weight >= 2 * total)


# -- chunks --------------------------------------------------------------------------------------
def test_chunk_checks() -> None:
    a = _att(0)
    assert len(a.chunk_hashes) == 6
    for i in range(6):
        assert chunk_problem(a, i, RAW[i * 1024:(i + 1) * 1024]) is None
    assert chunk_problem(a, 0, b"\x00" + RAW[1:1024]) == "chunk-mismatch"
    assert chunk_problem(a, 5, RAW[5 * 1024:] + b"\x00") == "bad-length"
    assert chunk_problem(a, 6, b"") == "bad-index"
    assert attestation_problem(a, GENESIS) is None


def test_attestation_bounds() -> None:
    big = dataclasses.replace(_att(0), size=SNAPSHOT_CHUNK_BYTES * MAX_SNAPSHOT_CHUNKS + 1)
    assert attestation_problem(big, GENESIS) == "bad-size"
    zero_chunk = dataclasses.replace(_att(0), chunk_bytes=0)
    assert attestation_problem(zero_chunk, GENESIS) == "bad-size"


# -- the download --------------------------------------------------------------------------------
def _servers(kinds: dict[int, str]) -> tuple[TrustedSnapshot, dict[bytes, int]]:
    atts = [_att(i) for i in kinds]
    t, _ = choose_snapshot(atts, {KEYS[i].pubkey: 100 for i in kinds}, GENESIS)
    assert t is not None
    calls: dict[bytes, int] = {}
    return t, calls


def _fetcher(kinds: dict[int, str], calls: dict[bytes, int]) -> object:
    by_key = {KEYS[i].pubkey: k for i, k in kinds.items()}

    async def fetch(server: bytes, index: int) -> bytes:
        calls[server] = calls.get(server, 0) + 1
        await trio.sleep(0.001 * random.random())
        data = RAW[index * 1024:(index + 1) * 1024]
        kind = by_key[server]
        if kind == "corrupt":
            return bytes([data[0] ^ 0xFF]) + data[1:]
        if kind == "fail":
            raise ReqRespError("timeout", "no answer")
        return data

    return fetch


@pytest.mark.parametrize("bad", ["corrupt", "fail"])
def test_a_bad_server_is_avoided_and_the_download_completes_from_honest_ones(bad: str) -> None:
    kinds = {0: "honest", 1: bad, 2: "honest"}
    t, calls = _servers(kinds)
    report = SyncReport()
    seen: list[tuple[int, int]] = []
    raw = trio.run(download, t, _fetcher(kinds, calls), report, lambda d, n: seen.append((d, n)),
                   random.Random(3))
    assert raw == RAW
    assert list(report.avoided) == [KEYS[1].pubkey.hex()]
    assert report.avoided[KEYS[1].pubkey.hex()].startswith("chunk-mismatch" if bad == "corrupt" else "request-failed")
    assert calls[KEYS[1].pubkey] <= 2  # dropped after its first answers (two requests in flight)
    assert KEYS[1].pubkey.hex() not in report.chunks_by_server
    assert sum(report.chunks_by_server.values()) == 6
    assert seen[-1] == (len(RAW), len(RAW))


def test_several_servers_share_the_chunks() -> None:
    kinds = {0: "honest", 1: "honest", 2: "honest"}
    t, calls = _servers(kinds)
    report = SyncReport()
    assert trio.run(download, t, _fetcher(kinds, calls), report, None, random.Random(5)) == RAW
    assert len(report.chunks_by_server) == 3 and not report.avoided


def test_only_bad_servers_is_an_error_never_bad_bytes() -> None:
    kinds = {0: "corrupt", 1: "fail", 2: "corrupt"}
    t, calls = _servers(kinds)
    with pytest.raises(SnapshotSyncError):
        trio.run(download, t, _fetcher(kinds, calls), SyncReport(), None, random.Random(7))


# -- the wire ------------------------------------------------------------------------------------
def test_offers_and_chunks_roundtrip_strictly() -> None:
    offers = SnapshotOffers(nonce=9, offers=tuple(to_wire(_att(i)) for i in range(4)))
    back = codec.decode(codec.encode(offers), expected=SnapshotOffers)
    assert back == offers and [to_core(w) for w in back.offers] == [_att(i) for i in range(4)]
    chunk = SnapshotChunk(nonce=1, index=0, data=RAW[:1024])
    assert codec.decode(codec.encode(chunk), expected=SnapshotChunk) == chunk
    with pytest.raises(codec.EncodeError):
        codec.encode(SnapshotChunk(nonce=1, index=0, data=bytes(SNAPSHOT_CHUNK_BYTES + 1)))
    with pytest.raises(codec.DecodeError):
        codec.decode(codec.encode(offers)[:-1], expected=SnapshotOffers)
