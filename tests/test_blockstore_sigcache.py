"""The blockstore's per-Merkle-root signature cache (ledger/blockstore.py, insert_shreds):
one ed25519 check per (leader, root, signature), kept across inserts, and never a way
around the check: a forged signature carried by a shred with a valid Merkle proof of a
cached root, or the cached root and signature under another slot leader, or the same root
signed by another key, are all refused with ``bad-signature`` and store nothing."""

from __future__ import annotations

import random

import pytest

from ambient_p2p.core import shred as S
from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.core.shred import ShredBatch, make_shreds_from_data
from ambient_p2p.ledger.blockstore import VERIFIED_CACHE_MAX, Blockstore

LEADER = Keypair.deterministic("sigcache-leader")
OTHER = Keypair.deterministic("sigcache-other")


def _slot(kp: Keypair, slot: int = 1) -> ShredBatch:
    data = random.Random(slot).randbytes(30_000)  # same bytes for both keys: same roots
    return make_shreds_from_data(kp, sha256(b"root"), data, slot, slot - 1, 1, 0, True, 0, 0)


def _forge(payload: bytes, sig: bytes) -> bytes:
    return sig + payload[S.SIZE_OF_SIGNATURE:]  # the signature lies outside the Merkle leaf


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts the ed25519 checks verify_shred runs."""
    seen: list[bytes] = []
    real = S.verify_raw

    def counting(pk: bytes, msg: bytes, sig: bytes) -> bool:
        seen.append(msg)
        return real(pk, msg, sig)

    monkeypatch.setattr(S, "verify_raw", counting)
    return seen


def test_one_check_per_fec_set_across_inserts(bs: Blockstore, checks: list[bytes]) -> None:
    b = _slot(LEADER)
    shreds = list(b.data + b.code)
    sets = {s.fec_set_index for s in b.data}
    assert len(sets) >= 2
    half = len(shreds) // 2
    r1 = bs.insert_shreds([s.payload for s in shreds[:half:2]], lambda _s: LEADER.pubkey)
    r2 = bs.insert_shreds([s.payload for s in shreds[1::2] + shreds[half::2]], lambda _s: LEADER.pubkey)
    assert not r1.rejected and not r2.rejected
    assert r1.inserted + r2.inserted + r2.recovered == len(shreds)
    assert len(checks) == len(sets)  # once per FEC set root, not per shred, not per insert


def test_forged_signature_over_cached_root_is_refused(bs: Blockstore, checks: list[bytes]) -> None:
    b = _slot(LEADER)
    honest, victim = b.data[0], b.data[1]  # one FEC set, one root
    assert honest.merkle_root() == victim.merkle_root()
    r = bs.insert_shreds([honest.payload], lambda _s: LEADER.pubkey)
    assert r.inserted == 1
    forged = _forge(victim.payload, bytes(a ^ 0xFF for a in victim.signature))
    # the Merkle proof is intact: the forged shred proves the cached root
    assert S.parse_shred(forged).merkle_root() == honest.merkle_root()
    # across inserts (the cache kept the honest triple) and inside one insert after it
    for batch in ([forged], [b.data[2].payload, forged]):
        r = bs.insert_shreds(batch, lambda _s: LEADER.pubkey)
        assert [why.split(":")[0] for _p, why in r.rejected] == ["bad-signature"]
        assert r.rejected[0][0] == len(batch) - 1
        assert bs.get_data_shred(1, 1) is None
    assert not bs.duplicate_proof(1)


def test_cached_root_and_signature_under_another_leader_is_refused(bs: Blockstore) -> None:
    b = _slot(LEADER)
    assert bs.insert_shreds([b.data[0].payload], lambda _s: LEADER.pubkey).inserted == 1
    # the schedule now names another leader for slot 1 (e.g. a fork's schedule): the very
    # shred signature that passed, over the very root, is not that leader's
    r = bs.insert_shreds([b.data[1].payload], lambda _s: OTHER.pubkey)
    assert [why.split(":")[0] for _p, why in r.rejected] == ["bad-signature"]
    assert bs.get_data_shred(1, 1) is None


def test_same_root_signed_by_another_key_is_refused(bs: Blockstore) -> None:
    mine, theirs = _slot(LEADER), _slot(OTHER)
    assert mine.data[0].merkle_root() == theirs.data[0].merkle_root()
    assert mine.data[0].signature != theirs.data[0].signature
    r = bs.insert_shreds([mine.data[0].payload, theirs.data[1].payload, mine.data[2].payload],
                         lambda _s: LEADER.pubkey)
    assert [(p, why.split(":")[0]) for p, why in r.rejected] == [(1, "bad-signature")]
    assert r.inserted == 2 and bs.get_data_shred(1, 1) is None


def test_cache_is_bounded(bs: Blockstore) -> None:
    bs._verified.update((bytes(32), i.to_bytes(32, "big"), bytes(64)) for i in range(VERIFIED_CACHE_MAX + 1))
    b = _slot(LEADER)
    assert bs.insert_shreds([b.data[0].payload], lambda _s: LEADER.pubkey).inserted == 1
    assert len(bs._verified) == 1
