"""Replay and the ledger CLI end to end on real RocksDB ledgers: erasure recovery,
corruption detection (the slot is named with a reason), PoH and transaction failures."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from ambient_p2p.cli import main
from ambient_p2p.core import codec
from ambient_p2p.core.poh import Entry, Poh, serialize_entries
from ambient_p2p.core.shred import make_shreds_from_data, parse_shred
from ambient_p2p.devnet.genesis import ledger_genesis
from ambient_p2p.devnet.users import ledger_leader_keypair as leader_keypair
from ambient_p2p.devnet.users import ledger_user_keypairs as user_keypairs
from ambient_p2p.ledger.blockstore import Blockstore, shred_key
from ambient_p2p.ledger.producer import GENESIS_FILE, produce, read_genesis, transfer_tx
from ambient_p2p.ledger.replay import replay

HPT, TPS = 20, 8


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ledger") / "l"
    genesis = ledger_genesis(hashes_per_tick=HPT, ticks_per_slot=TPS)
    produce(path, 4, genesis=genesis, leader=leader_keypair(), users=user_keypairs(16), txs_per_slot=24)
    return path


def copy(ledger: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(ledger, dst)
    return dst


def run_replay(path: Path) -> dict[int, str | None]:
    with Blockstore.open(path, read_only=True) as bs:
        report = replay(bs, read_genesis(path))
    return {o.slot: o.reason for o in report.outcomes}


def test_produced_ledger_replays(ledger: Path) -> None:
    assert run_replay(ledger) == {1: None, 2: None, 3: None, 4: None}


def test_any_32_of_64_deleted_per_fec_set_still_replays(ledger: Path, tmp_path: Path) -> None:
    path = copy(ledger, tmp_path)
    rng = random.Random(11)
    with Blockstore.open(path) as bs:
        db_data, db_code = bs._cf["data_shred"], bs._cf["code_shred"]
        for slot in (1, 2, 3, 4):
            for fec in (0, 32):
                victims = rng.sample([(True, i) for i in range(fec, fec + 32)] +
                                     [(False, i) for i in range(fec, fec + 32)], 32)
                for is_data, i in victims:
                    (db_data if is_data else db_code).delete(shred_key(slot, i))
    assert run_replay(path) == {1: None, 2: None, 3: None, 4: None}


def test_all_coding_or_all_data_deleted_still_replays(ledger: Path, tmp_path: Path) -> None:
    path = copy(ledger, tmp_path)
    with Blockstore.open(path) as bs:
        for i in range(32):
            bs._cf["code_shred"].delete(shred_key(2, i))  # slot 2, FEC set 0: data only
        for i in range(32, 64):
            bs._cf["data_shred"].delete(shred_key(3, i))  # slot 3, FEC set 32: coding only
    assert run_replay(path) == {1: None, 2: None, 3: None, 4: None}


def test_data_gap_without_coding_is_named(ledger: Path, tmp_path: Path) -> None:
    path = copy(ledger, tmp_path)
    with Blockstore.open(path) as bs:
        for i in range(32):
            bs._cf["code_shred"].delete(shred_key(2, i))
        bs._cf["data_shred"].delete(shred_key(2, 9))
    assert (run_replay(path)[2] or "").startswith("missing-shreds: data shred 9 missing")


def test_whole_fec_set_missing_is_named(ledger: Path, tmp_path: Path) -> None:
    path = copy(ledger, tmp_path)
    with Blockstore.open(path) as bs:
        for i in range(32):
            bs._cf["code_shred"].delete(shred_key(2, i))
            bs._cf["data_shred"].delete(shred_key(2, i))
    assert run_replay(path)[2] == "missing-shreds: no shred of the FEC set starting at data shred 0"


def test_33_missing_is_named(ledger: Path, tmp_path: Path) -> None:
    path = copy(ledger, tmp_path)
    with Blockstore.open(path) as bs:
        for i in range(32, 64):
            bs._cf["data_shred"].delete(shred_key(2, i))
        bs._cf["code_shred"].delete(shred_key(2, 40))
    out = run_replay(path)
    assert out[1] is None and out[2] is not None and out[2].startswith("too-few-shreds")
    assert out[3] is not None and out[3].startswith("parent-dead")


@pytest.mark.parametrize("seed", range(8))
def test_one_corrupted_byte_names_the_slot(ledger: Path, tmp_path: Path, seed: int) -> None:
    path = copy(ledger, tmp_path)
    rng = random.Random(seed)
    slot = rng.choice([1, 2, 3, 4])
    is_data = rng.random() < 0.5
    index = rng.randrange(64)
    cf = "data_shred" if is_data else "code_shred"
    with Blockstore.open(path) as bs:
        payload = bytearray(bs._cf[cf][shred_key(slot, index)])
        off = rng.randrange(len(payload))  # any byte, the retransmitter signature field included
        payload[off] ^= 1 << rng.randrange(8)
        bs._cf[cf][shred_key(slot, index)] = bytes(payload)
    out = run_replay(path)
    assert out[slot] is not None and not out[slot].startswith("parent-dead"), (slot, off, out)
    assert all(out[s] is None for s in range(1, slot))


def test_corrupted_retransmitter_field_is_named(ledger: Path, tmp_path: Path) -> None:
    path = copy(ledger, tmp_path)
    with Blockstore.open(path) as bs:
        k = shred_key(3, 50)  # second FEC set: the last batch of the slot is resigned
        s = parse_shred(bs._cf["code_shred"][k])
        assert s.variant.resigned
        p = bytearray(s.payload)
        p[s.variant.retransmitter_signature_offset + 5] ^= 0x10
        bs._cf["code_shred"][k] = bytes(p)
    assert (run_replay(path)[3] or "").startswith("bad-retransmitter-field: coding shred 50")


def _write_slot(path: Path, entries: list[Entry]) -> None:
    """A one-slot ledger whose (signed, well-formed) shreds carry ``entries``."""
    genesis = ledger_genesis(hashes_per_tick=HPT, ticks_per_slot=TPS)
    path.mkdir(parents=True)
    (path / GENESIS_FILE).write_bytes(codec.encode(genesis))
    leader = leader_keypair()
    b = make_shreds_from_data(leader, genesis.hash(), serialize_entries(entries), 1, 0, 1, TPS, True, 0, 0)
    with Blockstore.open(path) as bs:
        bs.set_roots([0])
        res = bs.insert_shreds([s.payload for s in b.data + b.code], lambda _s: leader.pubkey)
        assert not res.rejected


def _good_entries(txs: list[bytes]) -> list[Entry]:
    genesis = ledger_genesis(hashes_per_tick=HPT, ticks_per_slot=TPS)
    p = Poh(genesis.hash(), HPT)
    out: list[Entry] = []
    for t in range(TPS):
        if t == 2 and txs:
            e = p.record_entry(txs)
            assert e is not None
            out.append(e)
        out.append(p.tick_entry())
    return out


def test_bad_poh_marks_slot_dead(tmp_path: Path) -> None:
    entries = _good_entries([])
    entries[5] = Entry(entries[5].num_hashes, b"\x13" * 32)
    _write_slot(tmp_path / "l", entries)
    assert run_replay(tmp_path / "l")[1] == "bad-poh: entry 5 does not follow from its predecessor's hash"


def test_bad_tick_count_marks_slot_dead(tmp_path: Path) -> None:
    _write_slot(tmp_path / "l", _good_entries([])[:-1])
    assert (run_replay(tmp_path / "l")[1] or "").startswith("too-few-ticks")


def test_invalid_transaction_marks_slot_dead_and_is_recorded(tmp_path: Path) -> None:
    genesis = ledger_genesis(hashes_per_tick=HPT, ticks_per_slot=TPS)
    u = user_keypairs(2)
    tx = transfer_tx(u[0], u[1].pubkey, 5, b"\x42" * 32)  # unknown blockhash
    _write_slot(tmp_path / "l", _good_entries([tx]))
    with Blockstore.open(tmp_path / "l") as bs:
        report = replay(bs, genesis, mark_dead=True)
        assert report.outcomes[0].reason is not None and report.outcomes[0].reason.startswith("blockhash-not-found")
        dead = bs.dead_slot(1)
        assert dead is not None and dead.reason.startswith("blockhash-not-found")


def test_cli_produce_verify_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "cli")
    assert main(["ledger", "produce", "--slots", "3", "--ledger", path, "--hashes-per-tick", str(HPT),
                 "--ticks-per-slot", str(TPS), "--txs-per-slot", "8"]) == 0
    assert main(["ledger", "verify", path, "--quiet", "--jobs", "2"]) == 0
    assert "verified 3 of 3 slots" in capsys.readouterr().out
    assert main(["ledger", "show", path]) == 0
    assert main(["ledger", "show", path, "--slot", "2"]) == 0
    out = capsys.readouterr().out
    assert "slot 2 parent 1" in out and "transactions" in out
    with Blockstore.open(path) as bs:
        k = shred_key(2, 7)
        p = bytearray(bs._cf["data_shred"][k])
        p[100] ^= 0x40
        bs._cf["data_shred"][k] = bytes(p)
    assert main(["ledger", "verify", path, "--quiet", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "slot 2: DEAD: bad-signature: data shred 7" in out
    assert main(["ledger", "produce", "--slots", "1", "--ledger", path]) == 2  # refuses to overwrite
    assert main(["ledger", "verify", str(tmp_path / "nothing")]) == 2
    assert main(["ledger"]) == 2


@pytest.mark.slow
def test_acceptance_50_slots_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ledger produce --slots 50` then `ledger verify` with the default (localnet) PoH."""
    path = str(tmp_path / "l50")
    assert main(["ledger", "produce", "--slots", "50", "--ledger", path]) == 0
    with Blockstore.open(path) as bs:
        rng = random.Random(5)
        for slot in range(1, 51):
            fec = rng.choice([0, 32])
            for is_data, i in rng.sample([(True, i) for i in range(fec, fec + 32)] +
                                         [(False, i) for i in range(fec, fec + 32)], 32):
                bs._cf["data_shred" if is_data else "code_shred"].delete(shred_key(slot, i))
    assert main(["ledger", "verify", path, "--quiet"]) == 0
    assert "verified 50 of 50 slots" in capsys.readouterr().out


def test_bank_snapshot_persisted_and_checked(ledger: Path, tmp_path: Path) -> None:
    import dataclasses

    from ambient_p2p.ledger.meta import AccountBalance
    from ambient_p2p.ledger.snapshot import bank_to_snapshot, snapshot_to_bank

    with Blockstore.open(ledger, read_only=True) as bs:
        snap = bs.latest_bank_snapshot()
        assert snap is not None and snap.slot == 4
        assert bank_to_snapshot(snapshot_to_bank(snap)) == snap  # lossless round trip
        report = replay(bs, read_genesis(ledger))
        assert report.last_bank is not None and report.last_bank.state_hash() == snapshot_to_bank(snap).state_hash()
    path = copy(ledger, tmp_path)
    with Blockstore.open(path) as bs:
        a = snap.accounts[0]
        forged = dataclasses.replace(snap, accounts=(AccountBalance(a.pubkey, a.lamports + 1), *snap.accounts[1:]))
        bs.put_bank_snapshot(forged)
    assert (run_replay(path)[4] or "").startswith("snapshot-mismatch")


def test_forged_transaction_signature_marks_slot_dead(tmp_path: Path) -> None:
    genesis = ledger_genesis(hashes_per_tick=HPT, ticks_per_slot=TPS)
    u = user_keypairs(2)
    tx = bytearray(transfer_tx(u[0], u[1].pubkey, 5, genesis.hash()))
    tx[-1] ^= 0x01  # lamports changed after signing
    _write_slot(tmp_path / "l", _good_entries([bytes(tx)]))
    assert (run_replay(tmp_path / "l")[1] or "").startswith("bad-signature: entry 2")


def test_valid_transaction_slot_replays(tmp_path: Path) -> None:
    genesis = ledger_genesis(hashes_per_tick=HPT, ticks_per_slot=TPS)
    u = user_keypairs(2)
    _write_slot(tmp_path / "l", _good_entries([transfer_tx(u[0], u[1].pubkey, 5, genesis.hash())]))
    assert run_replay(tmp_path / "l") == {1: None}


def test_a_produced_multi_epoch_ledger_pays_each_epoch_once_and_verifies(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """8-slot epochs, 20 slots (epochs 0, 1, 2): the first bank of epochs 1 and 2 pays the
    closing epoch's rewards (spec/rewards.md "In the bank"), the producer and a full replay
    agree on every bank hash (``ledger verify`` exits 0), and the payout moves exactly the
    leader and voting shares' earned lamports into balances: the chain's lamports grow by
    ``paid`` at a boundary and by nothing elsewhere (no fees: no transactions)."""
    from ambient_p2p.core.auction import INCINERATOR_ID
    from ambient_p2p.ledger.replay import SlotResult

    spe = 8
    path = tmp_path / "l"
    genesis = ledger_genesis(hashes_per_tick=HPT, ticks_per_slot=TPS, slots_per_epoch=spe)
    produced = produce(path, 20, genesis=genesis, leader=leader_keypair(), users=user_keypairs(4), txs_per_slot=0)
    banks: dict[int, SlotResult] = {}
    with Blockstore.open(path, read_only=True) as bs:
        report = replay(bs, read_genesis(path), on_replayed=lambda s, r: banks.__setitem__(s, r))
    assert report.ok and sorted(banks) == list(range(1, 21))
    assert {p.slot: p.bank_hash for p in produced} == {s: r.bank.bank_hash for s, r in banks.items()}
    leader = leader_keypair().pubkey

    def supply(slot: int) -> int:
        return sum(v for k, v in banks[slot].bank.accounts.items() if k != INCINERATOR_ID)

    paid_epochs = []
    for slot in range(2, 21):
        r = banks[slot].bank.epoch_rewards
        if r is None:
            assert supply(slot) == supply(slot - 1)
            continue
        paid_epochs.append((slot, r.epoch))
        lp, lead, vote = r.pools
        assert r.issuance > 0 and lp + lead + vote == r.issuance
        # no miner, no vote: only the leader share is issued, all of it to the one leader
        assert r.payouts == ({}, {leader: lead}, {}) and r.paid == lead > 0
        assert supply(slot) == supply(slot - 1) + r.paid
        assert banks[slot].bank.balance(leader) == banks[slot - 1].bank.balance(leader) + r.paid
    assert paid_epochs == [(8, 0), (16, 1)]
    capsys.readouterr()
    assert main(["ledger", "verify", str(path), "--quiet", "--jobs", "1"]) == 0
    assert "verified 20 of 20 slots" in capsys.readouterr().out


def test_a_replayer_without_the_closing_epochs_vote_weights_marks_the_boundary_slot_dead(tmp_path: Path) -> None:
    """The first bank of an epoch needs the closing epoch's vote weights (the rewards'
    voting share); a replayer whose source does not know them refuses that slot with
    ``unknown-vote-weights`` instead of guessing, and its descendants are parent-dead."""
    from ambient_p2p.ledger.producer import genesis_bank
    from ambient_p2p.ledger.replay import SlotResult

    path = tmp_path / "l"
    genesis = ledger_genesis(hashes_per_tick=HPT, ticks_per_slot=TPS, slots_per_epoch=4)
    produce(path, 6, genesis=genesis, leader=leader_keypair(), users=user_keypairs(2), txs_per_slot=0)
    start = SlotResult(genesis_bank(genesis), genesis.hash(), genesis.hash(), 0, 0, 0)
    start.bank.lstake_provider = lambda _epoch: None
    with Blockstore.open(path, read_only=True) as bs:
        report = replay(bs, genesis, start=(0, start))
    reasons = {o.slot: o.reason for o in report.outcomes}
    assert {s: reasons[s] for s in (1, 2, 3)} == {1: None, 2: None, 3: None}
    assert (reasons[4] or "").startswith("unknown-vote-weights: ") and "epoch 0" in (reasons[4] or "")
    assert all((reasons[s] or "").startswith("parent-dead") for s in (5, 6))
