"""RocksDB blockstore on a real database in tmp_path: inserts, metas, recovery on insert,
duplicate proofs, rejection without side effects, read-only open, locking, crash safety."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.core.shred import ShredBatch, make_shreds_from_data
from ambient_p2p.ledger.blockstore import Blockstore, BlockstoreError, shred_key

LEADER = Keypair.deterministic("blockstore-test-leader")
EVIL = Keypair.deterministic("blockstore-test-evil")
REPO = Path(__file__).resolve().parents[1]


def leader_of(_slot: int) -> bytes:
    return LEADER.pubkey


def slot_shreds(slot: int, parent: int, size: int = 30_000, seed: int = 0, kp: Keypair = LEADER) -> ShredBatch:
    data = random.Random(seed * 1_000_003 + slot).randbytes(size)
    return make_shreds_from_data(kp, sha256(b"root", bytes([slot % 256])), data, slot, parent, 1, 0, True, 0, 0)


def payloads(b: ShredBatch) -> list[bytes]:
    return [s.payload for s in b.data + b.code]


def test_insert_full_slot_and_metas(bs: Blockstore) -> None:
    b = slot_shreds(1, 0)
    res = bs.insert_shreds(payloads(b), leader_of)
    assert res.inserted == 128 and not res.rejected and res.completed_slots == [1]
    m = bs.slot_meta(1)
    assert m is not None
    assert (m.consumed, m.received, m.last_index, m.parent_slot) == (64, 64, 63, 0)
    assert m.is_full and m.is_connected and m.completed_data_indexes == (63,)
    assert bs.slot_meta(0).next_slots == (1,)  # type: ignore[union-attr]
    assert bs.get_data_shred(1, 5) == b.data[5].payload
    assert bs.get_code_shred(1, 40) == b.code[40].payload
    idx = bs.shred_index(1)
    assert idx.data == tuple(range(64)) and idx.coding == tuple(range(64))
    assert [e.fec_set_index for e in bs.erasure_metas(1)] == [0, 32]
    # keys are slot u64 BE || index u32 BE: numeric order == byte order
    assert shred_key(1, 256) > shred_key(1, 255) and shred_key(2, 0) > shred_key(1, 2**32 - 1)


def test_reinsert_is_idempotent(bs: Blockstore) -> None:
    b = slot_shreds(1, 0)
    bs.insert_shreds(payloads(b), leader_of)
    res = bs.insert_shreds(payloads(b), leader_of)
    assert res.inserted == 0 and res.already_present == 128 and not res.duplicates


def test_recovery_on_insert_from_32_of_64(bs: Blockstore) -> None:
    b = slot_shreds(1, 0)
    fec0 = list(b.data[:32] + b.code[:32])
    keep = random.Random(7).sample(fec0, 32)
    if all(s.is_data for s in keep):
        keep[0] = b.code[0]
    res = bs.insert_shreds([s.payload for s in keep] + [s.payload for s in b.data[32:] + b.code[32:]], leader_of)
    assert res.recovered == 32 and not res.rejected
    for s in fec0:
        stored = bs.get_data_shred(1, s.index) if s.is_data else bs.get_code_shred(1, s.index)
        assert stored == s.payload
    assert bs.slot_meta(1).is_full  # type: ignore[union-attr]


def test_out_of_order_and_orphans(bs: Blockstore) -> None:
    b3 = slot_shreds(3, 2)
    bs.insert_shreds(payloads(b3)[:10], leader_of)
    m3 = bs.slot_meta(3)
    assert m3 is not None and m3.consumed == 10 and not m3.is_full
    assert bs.is_orphan(2)  # parent of 3 has no shreds yet
    bs.insert_shreds(payloads(b3)[10:], leader_of)
    assert bs.slot_meta(3).is_full and not bs.slot_meta(3).is_connected  # type: ignore[union-attr]
    b2 = slot_shreds(2, 1)
    bs.insert_shreds(payloads(b2), leader_of)
    assert not bs.is_orphan(2) and bs.is_orphan(1)
    bs.insert_shreds(payloads(slot_shreds(1, 0)), leader_of)
    assert all(bs.slot_meta(s).is_connected for s in (1, 2, 3))  # type: ignore[union-attr]


def test_invalid_shreds_rejected_without_state_change(bs: Blockstore) -> None:
    b = slot_shreds(1, 0)
    forged = slot_shreds(1, 0, kp=EVIL)
    truncated = b.data[0].payload[:500]
    corrupt = bytearray(b.data[1].payload)
    corrupt[300] ^= 1
    res = bs.insert_shreds([truncated, bytes(corrupt), forged.data[2].payload, b"\xff" * 1203], leader_of)
    assert [r.split(":")[0] for _i, r in res.rejected] == ["wrong-size", "bad-signature", "bad-signature", "bad-variant"]
    assert res.inserted == 0
    assert bs.slot_meta(1) is None and bs.get_data_shred(1, 1) is None and bs.get_data_shred(1, 2) is None
    res = bs.insert_shreds([b.data[0].payload], lambda _s: None)
    assert res.rejected[0][1].startswith("unknown-leader")


def test_equivocation_stores_duplicate_proof(bs: Blockstore) -> None:
    a = slot_shreds(1, 0, seed=1)
    b = slot_shreds(1, 0, seed=2)  # same slot, different content, same leader: equivocation
    bs.insert_shreds(payloads(a), leader_of)
    res = bs.insert_shreds([b.data[4].payload], leader_of)
    assert res.duplicates == [(1, "same-index-different-payload")]
    proof = bs.duplicate_proof(1)
    assert proof is not None and proof.kind == "same-index-different-payload"
    assert {proof.shred1, proof.shred2} == {a.data[4].payload, b.data[4].payload}
    assert bs.get_data_shred(1, 4) == a.data[4].payload  # the first one is kept


def test_relayed_copies_with_retransmitter_signatures_are_not_equivocation(bs: Blockstore) -> None:
    b = slot_shreds(1, 0)  # last batch of the slot: resigned
    relayed_a = b.data[3].with_retransmitter_signature(EVIL.sign_raw(b.data[3].merkle_root()))
    relayed_b = b.data[3].with_retransmitter_signature(LEADER.sign_raw(b.data[3].merkle_root()))
    res = bs.insert_shreds([relayed_a.payload], leader_of)
    assert res.inserted == 1
    assert bs.get_data_shred(1, 3) == b.data[3].payload  # stored with the field zeroed
    res = bs.insert_shreds([relayed_b.payload], leader_of)
    assert res.already_present == 1 and not res.duplicates and bs.duplicate_proof(1) is None


def test_merkle_root_conflict_is_duplicate(tmp_path: Path) -> None:
    with Blockstore.open(tmp_path / "l") as store:
        a = slot_shreds(5, 4, seed=1)
        b = slot_shreds(5, 4, seed=2)
        store.insert_shreds([a.data[0].payload], leader_of)
        res = store.insert_shreds([b.data[1].payload], leader_of)  # another root for FEC set 0
        assert res.duplicates == [(5, "merkle-root-conflict")]
        assert store.get_data_shred(5, 1) is None
        assert store.duplicate_proof(5).kind == "merkle-root-conflict"  # type: ignore[union-attr]


def test_shred_past_last_index_is_duplicate(bs: Blockstore) -> None:
    small = make_shreds_from_data(LEADER, sha256(b"x"), b"tiny", 7, 6, 1, 0, True, 0, 0)
    bs.insert_shreds([s.payload for s in small.data], leader_of)
    longer = make_shreds_from_data(LEADER, sha256(b"y"), os.urandom(40_000), 7, 6, 1, 0, True, 0, 0)
    res = bs.insert_shreds([longer.data[40].payload], leader_of)
    assert res.duplicates == [(7, "index-past-last-in-slot")]


def test_close_reopen_and_read_only(tmp_path: Path) -> None:
    path = tmp_path / "l"
    b = slot_shreds(1, 0)
    with Blockstore.open(path) as store:
        store.insert_shreds(payloads(b), leader_of)
        with pytest.raises(BlockstoreError, match="lock"):
            Blockstore.open(path)  # RocksDB LOCK held by the open instance
    with Blockstore.open(path, read_only=True) as ro:
        assert ro.get_data_shred(1, 63) == b.data[63].payload
        assert ro.slot_meta(1).is_full  # type: ignore[union-attr]
        with pytest.raises(BlockstoreError, match="read-only"):
            ro.insert_shreds(payloads(b), leader_of)
    with Blockstore.open(path) as again:  # LOCK released by close
        assert again.shred_index(1).data == tuple(range(64))
    with pytest.raises(BlockstoreError):
        Blockstore.open(tmp_path / "missing", read_only=True)


def test_missing_data_indexes_for_repair(bs: Blockstore) -> None:
    assert bs.missing_data_indexes(1) == [0]
    b = slot_shreds(1, 0)
    bs.insert_shreds([s.payload for s in b.data if s.index not in (3, 4, 10, 40)], leader_of)
    assert bs.missing_data_indexes(1) == [3, 4, 10, 40]
    assert bs.missing_data_indexes(1, limit=2) == [3, 4]
    bs.insert_shreds([b.data[i].payload for i in (3, 4, 10, 40)], leader_of)
    assert bs.missing_data_indexes(1) == []
    bs.insert_shreds([s.payload for s in slot_shreds(2, 1).data[:5]], leader_of)
    assert bs.missing_data_indexes(2) == [5]  # tail unknown: ask for the next index


def test_purge_slots(bs: Blockstore) -> None:
    for slot in (1, 2, 3):
        bs.insert_shreds(payloads(slot_shreds(slot, slot - 1)), leader_of)
    bs.mark_dead(2, "x")
    bs.purge_slots(1, 2)
    for slot in (1, 2):
        assert bs.slot_meta(slot) is None and bs.get_data_shred(slot, 0) is None
        assert bs.get_code_shred(slot, 5) is None and bs.dead_slot(slot) is None
        assert bs.erasure_metas(slot) == [] and bs.shred_index(slot).data == ()
    assert bs.slot_meta(3) is not None and bs.get_data_shred(3, 63) is not None


def test_dead_slots_and_bank_hashes(bs: Blockstore) -> None:
    from ambient_p2p.ledger.meta import BankHashRecord

    bs.mark_dead(4, "bad-poh: entry 3")
    assert bs.dead_slot(4).reason == "bad-poh: entry 3"  # type: ignore[union-attr]
    bs.put_bank_hash(BankHashRecord(4, 3, b"h" * 32, b"b" * 32, 2, 1))
    assert bs.bank_hash(4).bank_hash == b"h" * 32  # type: ignore[union-attr]
    assert bs.roots() == [0]


CHILD = textwrap.dedent(
    """
    import hashlib, os, random, sys
    from ambient_p2p.core.crypto import Keypair, sha256
    from ambient_p2p.core.shred import make_shreds_from_data
    from ambient_p2p.ledger.blockstore import Blockstore
    path, first_slot, log_path, ready_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    kp = Keypair.deterministic("blockstore-test-leader")
    log = open(log_path, "a")
    with Blockstore.open(path) as bs:
        for slot in range(first_slot, first_slot + 1000):
            if slot == first_slot + 1:
                open(ready_path, "w").close()  # one slot in: inserts are under way
            b = make_shreds_from_data(kp, sha256(b"r"), os.urandom(20000), slot, slot - 1, 1, 0, True, 0, 0)
            ps = [s for s in b.data + b.code]
            random.shuffle(ps)
            for i in range(0, len(ps), 7):
                chunk = ps[i:i + 7]
                bs.insert_shreds([s.payload for s in chunk], lambda _s: kp.pubkey)
                for s in chunk:  # only after insert_shreds returned
                    log.write(f"{s.slot} {s.index} {int(s.is_data)} {hashlib.sha256(s.payload).hexdigest()}\\n")
                log.flush()
    """
)


@pytest.mark.parametrize("rounds", [pytest.param(5, id="5-kills"), pytest.param(20, id="20-kills", marks=pytest.mark.slow)])
def test_sigkill_during_inserts_loses_nothing_that_returned(tmp_path: Path, rounds: int) -> None:
    """Acceptance: SIGKILL a producing process at random points 20 times (``-m slow``; 5 in
    the default run); after each, the blockstore reopens and every shred whose insert had
    returned is present and intact."""
    path = tmp_path / "l"
    log_path = tmp_path / "log.txt"
    rng = random.Random(2024)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    checked = 0
    for round_ in range(rounds):
        ready = tmp_path / f"ready-{round_}"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(1 + 1000 * round_), str(log_path),
                                 str(ready)], env=env, cwd=REPO)
        deadline = time.monotonic() + 60  # a loaded machine can take long to import and open
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), f"round {round_}: child never started inserting (rc={proc.poll()})"
        time.sleep(rng.random() * 0.5)  # kill at a random point of the insert stream
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Blockstore.open(path) as store:  # must reopen (LOCK is advisory; released on death)
            for line in log_path.read_text().splitlines():
                slot, index, is_data, digest = line.split()
                got = (store.get_data_shred if is_data == "1" else store.get_code_shred)(int(slot), int(index))
                assert got is not None, f"round {round_}: shred {line} lost"
                assert hashlib.sha256(got).hexdigest() == digest, f"round {round_}: shred {line} corrupted"
                checked += 1
    assert checked > 0
