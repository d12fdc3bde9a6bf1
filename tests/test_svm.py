"""The SVM in the bank (spec/svm.md): SPL Token end to end through ``Bank.process_transactions``,
failures with the fee charged and the logs recorded, the genesis programs, compute-budget
fees, full accounts in snapshots and the bank hash."""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path

import pytest

from ambient_p2p.core import svm
from ambient_p2p.core.bank import LAMPORTS_PER_SIGNATURE, Bank, accounts_hash
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.devnet import spl
from ambient_p2p.ledger.snapshot import bank_to_snapshot, snapshot_matches, snapshot_to_bank

GH = hashlib.sha256(b"tests/svm/genesis").digest()
LEADER = Keypair.deterministic("tests/svm/leader")
ALICE, BOB, MINT = (Keypair.deterministic("tests/svm/user", i) for i in range(3))
FUNDS = 10**12


def genesis(**kw: object) -> Bank:
    return Bank.genesis(GH, {ALICE.pubkey: FUNDS, BOB.pubkey: FUNDS}, LEADER.pubkey, GH,
                        programs=svm.genesis_programs())


def run(bank: Bank, slot: int, txs: list[bytes]) -> tuple[Bank, list[object]]:
    child = bank.child(slot, LEADER.pubkey)
    res = child.process_transactions(txs)
    child.freeze(hashlib.sha256(f"tests/svm/entry/{slot}".encode()).digest())
    return child, list(res)


def token_setup(bank: Bank) -> tuple[Bank, bytes, bytes]:
    """Slot 1: ALICE creates MINT, both ATAs, mints 1,000,000 to hers."""
    a_ata = spl.associated_token_address(ALICE.pubkey, MINT.pubkey)
    b_ata = spl.associated_token_address(BOB.pubkey, MINT.pubkey)
    bh = bank.last_blockhash
    txs = [
        spl.tx(ALICE, spl.create_mint(ALICE.pubkey, MINT.pubkey, ALICE.pubkey), bh, [MINT]),
        spl.tx(ALICE, [spl.create_ata(ALICE.pubkey, ALICE.pubkey, MINT.pubkey),
                       spl.create_ata(ALICE.pubkey, BOB.pubkey, MINT.pubkey)], bh),
        spl.tx(ALICE, [spl.mint_to(MINT.pubkey, a_ata, ALICE.pubkey, 1_000_000)], bh),
    ]
    child, res = run(bank, 1, txs)
    assert [r.error for r in res] == [None, None, None]  # type: ignore[attr-defined]
    return child, a_ata, b_ata


def test_genesis_programs_are_present_at_their_mainnet_addresses() -> None:
    b = genesis()
    for pid in svm.GENESIS_PROGRAM_IDS:
        acc = b.account(pid)
        assert acc is not None and acc[1].executable, pid
    token = b.account(svm.SPL_TOKEN_PROGRAM_ID)
    assert token is not None and token[1].owner == svm.BPF_LOADER_UPGRADEABLE_ID
    programdata = b.account(token[1].data[4:36])
    assert programdata is not None and len(programdata[1].data) > 10_000  # the ELF
    # the programs enter slot 0's bank hash
    bare = Bank.genesis(GH, {ALICE.pubkey: FUNDS, BOB.pubkey: FUNDS}, LEADER.pubkey, GH)
    assert bare.bank_hash != b.bank_hash


def test_spl_token_end_to_end_through_the_bank() -> None:
    b0 = genesis()
    b1, a_ata, b_ata = token_setup(b0)
    mint = b1.account(MINT.pubkey)
    assert mint is not None and mint[1].owner == svm.SPL_TOKEN_PROGRAM_ID and spl.mint_supply(mint[1].data) == 1_000_000
    ata = b1.account(a_ata)
    assert ata is not None and spl.token_amount(ata[1].data) == 1_000_000
    assert ata[1].data[32:64] == ALICE.pubkey and ata[1].data[:32] == MINT.pubkey

    bh = b1.last_blockhash
    b2, res = run(b1, 2, [
        spl.tx(ALICE, [spl.transfer(a_ata, b_ata, ALICE.pubkey, 250_000)], bh),
        spl.tx(BOB, [spl.burn(b_ata, MINT.pubkey, BOB.pubkey, 50_000)], bh),
    ])
    assert [r.error for r in res] == [None, None]  # type: ignore[attr-defined]
    assert spl.token_amount(b2.account(a_ata)[1].data) == 750_000  # type: ignore[index]
    assert spl.token_amount(b2.account(b_ata)[1].data) == 200_000  # type: ignore[index]
    assert spl.mint_supply(b2.account(MINT.pubkey)[1].data) == 950_000  # type: ignore[index]
    token = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
    assert res[0].logs[0] == f"Program {token} invoke [1]" and res[0].logs[-1] == f"Program {token} success"  # type: ignore[attr-defined]
    assert res[0].compute_units > 0  # type: ignore[attr-defined]

    # a transfer of more tokens than held: the fee is charged, nothing else changes, the
    # error and the program's logs are recorded
    bh = b2.last_blockhash
    before_alice, before_bob = b2.balance(ALICE.pubkey), b2.account(b_ata)
    b3, res = run(b2, 3, [spl.tx(ALICE, [spl.transfer(a_ata, b_ata, ALICE.pubkey, 10**9)], bh)])
    r = res[0]
    # spl-token TokenError::InsufficientFunds = 1
    assert r.error == "svm-error: InstructionError((0, Tagged(InstructionErrorCustom(1))))"  # type: ignore[attr-defined]
    assert r.logs[-1] == f"Program {token} failed: custom program error: 0x1"  # type: ignore[attr-defined]
    assert r.fee == LAMPORTS_PER_SIGNATURE  # type: ignore[attr-defined]
    assert b3.balance(ALICE.pubkey) == before_alice - LAMPORTS_PER_SIGNATURE
    assert b3.account(b_ata) == before_bob
    assert spl.token_amount(b3.account(a_ata)[1].data) == 750_000  # type: ignore[index]
    assert b3.tx_log[0].result is r


def test_a_failing_instruction_rolls_back_the_whole_transaction() -> None:
    """The first instruction (a lamport transfer) succeeds, the second fails: neither lands."""
    b1, a_ata, b_ata = token_setup(genesis())
    carol = Keypair.deterministic("tests/svm/carol").pubkey
    b2, res = run(b1, 2, [spl.tx(ALICE, [spl.system_transfer(ALICE.pubkey, carol, 777),
                                         spl.transfer(a_ata, b_ata, ALICE.pubkey, 10**9)], b1.last_blockhash)])
    assert res[0].error is not None  # type: ignore[attr-defined]
    assert b2.balance(carol) == 0 and b2.account(carol) is None
    assert b2.balance(ALICE.pubkey) == b1.balance(ALICE.pubkey) - LAMPORTS_PER_SIGNATURE


def test_an_unknown_program_fails_the_instruction_not_the_block() -> None:
    b0 = genesis()
    nowhere = Keypair.deterministic("tests/svm/no-program").pubkey
    ix = spl._ix(nowhere, [(ALICE.pubkey, True, True)], b"\x01")
    b1, res = run(b0, 1, [spl.tx(ALICE, [ix], b0.last_blockhash)])
    assert res[0].error is not None and res[0].fee == LAMPORTS_PER_SIGNATURE  # type: ignore[attr-defined]
    assert b1.balance(ALICE.pubkey) == FUNDS - LAMPORTS_PER_SIGNATURE


def test_compute_unit_price_is_charged_as_agave_does() -> None:
    from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price

    b0 = genesis()
    carol = Keypair.deterministic("tests/svm/carol").pubkey
    ixs = [set_compute_unit_limit(10_000), set_compute_unit_price(1_500_000),
           spl.system_transfer(ALICE.pubkey, carol, svm.RENT_EXEMPT_MINIMUM_NO_DATA)]
    b1, res = run(b0, 1, [spl.tx(ALICE, ixs, b0.last_blockhash)])
    fee = LAMPORTS_PER_SIGNATURE + (10_000 * 1_500_000 + 999_999) // 1_000_000
    assert res[0].error is None and res[0].fee == fee  # type: ignore[attr-defined]
    assert b1.balance(ALICE.pubkey) == FUNDS - fee - svm.RENT_EXEMPT_MINIMUM_NO_DATA
    assert svm.transaction_fee(1, [(svm.COMPUTE_BUDGET_PROGRAM_ID, bytes([3]) + (7).to_bytes(8, "little"))]) == 5_000
    # a limit below what the transfer needs fails it, fee charged
    ixs = [set_compute_unit_limit(10), spl.system_transfer(ALICE.pubkey, carol, 1)]
    b2, res = run(b1, 2, [spl.tx(ALICE, ixs, b1.last_blockhash)])
    assert res[0].error is not None and b2.balance(carol) == svm.RENT_EXEMPT_MINIMUM_NO_DATA  # type: ignore[attr-defined]


def test_sysvars_come_from_the_bank() -> None:
    b0 = genesis()
    b = b0.child(7, LEADER.pubkey)
    sv = b.sysvars()
    assert sv.slot == 7 and sv.slot_hashes == ((0, b0.bank_hash),)
    b.process_transactions([spl.tx(ALICE, [spl.system_transfer(ALICE.pubkey, BOB.pubkey, 1)], b0.last_blockhash)])
    clock = svm.shared_executor().svm.get_clock()
    assert clock.slot == 7
    assert [(s, bytes(h)) for s, h in svm.shared_executor().svm.get_slot_hashes()] == [(0, b0.bank_hash)]


def test_results_do_not_depend_on_what_the_executor_ran_before() -> None:
    """Two forks on one executor (the shared one) and a fresh executor agree on every
    account and bank hash."""
    b1, a_ata, b_ata = token_setup(genesis())
    txs = [spl.tx(ALICE, [spl.transfer(a_ata, b_ata, ALICE.pubkey, 10)], b1.last_blockhash)]
    fork_a, _ = run(b1, 2, txs)
    fork_b, _ = run(b1, 3, [spl.tx(BOB, [spl.system_transfer(BOB.pubkey, ALICE.pubkey, 5)], b1.last_blockhash)])
    again, _ = run(b1, 2, txs)
    assert again.bank_hash == fork_a.bank_hash and again.account_meta == fork_a.account_meta
    fresh = snapshot_to_bank(bank_to_snapshot(b1))
    fresh.executor = svm.SvmExecutor()
    other, _ = run(fresh, 2, txs)
    assert other.bank_hash == fork_a.bank_hash and other.accounts == fork_a.accounts
    assert fork_b.bank_hash != fork_a.bank_hash


def test_full_accounts_survive_a_snapshot_and_enter_the_state_hash() -> None:
    b1, a_ata, _b = token_setup(genesis())
    snap = bank_to_snapshot(b1)
    by_ref = [m for m in snap.account_meta if m.genesis_data]
    assert {m.pubkey for m in by_ref} >= set(svm.GENESIS_PROGRAM_IDS) and all(m.data == b"" for m in by_ref)
    restored = snapshot_to_bank(snap)
    assert restored.account_meta == b1.account_meta and restored.state_hash() == b1.state_hash()
    assert snapshot_matches(snap, b1)
    from dataclasses import replace

    data = bytearray(b1.account_meta[a_ata].data)
    data[64] ^= 1
    forged = replace(snap, account_meta=tuple(replace(m, data=bytes(data)) if m.pubkey == a_ata else m
                                              for m in snap.account_meta))
    assert not snapshot_matches(forged, b1)


def test_the_bank_hash_covers_account_data() -> None:
    """Same lamports, different data: different accounts hash (spec/bank.md "Account hash")."""
    k = ALICE.pubkey
    m1 = svm.AccountMeta(svm.SPL_TOKEN_PROGRAM_ID, b"\x00" * 165, False, 0)
    m2 = svm.AccountMeta(svm.SPL_TOKEN_PROGRAM_ID, b"\x00" * 164 + b"\x01", False, 0)
    assert accounts_hash({k: 5}, {k: m1}) != accounts_hash({k: 5}, {k: m2})
    assert svm.account_hash(k, 0, m1) == bytes(32)


def test_a_transaction_mixing_native_and_svm_instructions_is_atomic() -> None:
    """A system transfer (SVM) then a failing vote instruction (native) in one transaction:
    the transfer rolls back with it, the fee stays (spec/svm.md "Mixed transactions"; the
    other order: tests/test_vote_program.py)."""
    from ambient_p2p.core.bank import VOTE_PROGRAM_ID

    b0 = genesis()
    carol = Keypair.deterministic("tests/svm/carol").pubkey
    bad_vote = spl._ix(VOTE_PROGRAM_ID, [(ALICE.pubkey, True, False)], b"\x00")
    b1, res = run(b0, 1, [spl.tx(ALICE, [spl.system_transfer(ALICE.pubkey, carol, svm.RENT_EXEMPT_MINIMUM_NO_DATA), bad_vote], b0.last_blockhash)])
    assert (res[0].error or "").startswith("vote-bad-data")  # type: ignore[attr-defined]
    assert b1.account(carol) is None and b1.balance(ALICE.pubkey) == FUNDS - LAMPORTS_PER_SIGNATURE


@pytest.mark.skipif(platform.machine() != "x86_64" or sys.platform != "linux", reason="x87 state: x86-64 Linux")
def test_running_programs_leaves_the_process_able_to_open_a_blockstore(tmp_path: Path) -> None:
    """Regression: after the ATA program's CPI, LiteSVM left the x87 register tags in use and
    the next RocksDB open in the process aborted it (core/svm.py ``_x87_reset``)."""
    import ctypes

    from ambient_p2p.ledger.blockstore import Blockstore

    token_setup(genesis())  # creates associated token accounts (CPI into System and Token)
    env = ctypes.create_string_buffer(28)
    ctypes.CDLL("libm.so.6").fegetenv(env)
    assert env.raw[8:10] == b"\xff\xff"  # x87 tag word: every register empty
    with Blockstore.open(tmp_path / "l") as bs:
        assert bs.node_snapshot_slots() == []


def test_a_program_deployed_with_the_upgradeable_loader_is_invoked_in_a_later_slot() -> None:
    """The Memo program's ELF (read out of the genesis programs: no download) deployed at a
    new address through InitializeBuffer / Write / DeployWithMaxDataLen, then called."""
    from ambient_p2p.devnet import loader

    elf = svm.genesis_programs()[svm.SPL_MEMO_PROGRAM_ID][1].data
    program, buffer = Keypair.deterministic("tests/svm/program"), Keypair.deterministic("tests/svm/buffer")
    bank = genesis()
    for i, stage in enumerate(loader.deploy_transactions(ALICE, program, buffer, elf, bank.last_blockhash)):
        child = bank.child(bank.slot + 1, LEADER.pubkey)
        res = child.process_transactions(stage)
        assert [r.error for r in res] == [None] * len(stage), (i, res[0].logs)
        child.freeze(hashlib.sha256(f"deploy/{i}".encode()).digest())
        bank = child
    acc = bank.account(program.pubkey)
    assert acc is not None and acc[1].executable and acc[1].owner == svm.BPF_LOADER_UPGRADEABLE_ID
    pd = bank.account(loader.programdata_address(program.pubkey))
    assert pd is not None and pd[1].data[loader.PROGRAMDATA_HEADER_BYTES:] == elf
    later, res = run(bank, bank.slot + 2, [loader.invoke(ALICE, program.pubkey, b"hello from a deployed program",
                                                         bank.last_blockhash, [(ALICE.pubkey, True, False)])])
    assert res[0].error is None, res[0].logs  # type: ignore[attr-defined]
    assert any("hello from a deployed program" in line for line in res[0].logs)  # type: ignore[attr-defined]
    # and on a fresh executor (another node) the same bank hash
    fresh = snapshot_to_bank(bank_to_snapshot(bank))
    fresh.executor = svm.SvmExecutor()
    other, _ = run(fresh, bank.slot + 2, [loader.invoke(ALICE, program.pubkey, b"hello from a deployed program",
                                                        bank.last_blockhash, [(ALICE.pubkey, True, False)])])
    assert other.bank_hash == later.bank_hash


def test_lamports_the_bank_holds_at_a_builtin_address_do_not_replace_the_builtin() -> None:
    """A leader whose key is all zeros (the system program's address) is credited fees at
    freeze; the next slot's system transfers still run the system program."""
    b0 = genesis()
    b1 = b0.child(1, svm.SYSTEM_PROGRAM_ID)
    assert b1.process_transactions([spl.tx(ALICE, [spl.system_transfer(ALICE.pubkey, BOB.pubkey, 1)],
                                           b0.last_blockhash)])[0].error is None
    b1.freeze(hashlib.sha256(b"zero-leader").digest())
    assert b1.balance(svm.SYSTEM_PROGRAM_ID) > 0
    b2, res = run(b1, 2, [spl.tx(ALICE, [spl.system_transfer(ALICE.pubkey, BOB.pubkey, 1)], b1.last_blockhash)])
    assert res[0].error is None and b2.balance(BOB.pubkey) == FUNDS + 2  # type: ignore[attr-defined]


def test_auction_accounts_are_readable_in_the_svm_and_keep_their_data() -> None:
    """A query account named by an SVM transaction is loaded with its fixed-layout data,
    owned by the auction program (spec/svm.md "Native accounts in the SVM"); a lamport
    transfer to it lands on its balance and leaves its data the auction's."""
    from solders.pubkey import Pubkey

    from ambient_p2p.core import auction
    from ambient_p2p.interop.formats import auction as F

    c = F.Chain()
    c.register(*F.MINERS[:3])
    q = c.request(F.request_params())
    data, lamports = c.bank.auction_accounts[q], c.bank.balance(q)
    payer = F.MINERS[0]
    child = c.open()
    # the SVM's rent rule applies to it as to any account (spec/svm.md "Rent"): a credit may not
    # leave it rent-paying, so the transfer tops it up to its rent-exempt minimum
    amount = max(7, svm.rent_exempt_minimum(len(data)) - lamports)
    (res,) = child.process_transactions([spl.tx(payer, [spl.system_transfer(payer.pubkey, q, amount)], c.blockhash)])
    assert res.error is None, res.logs
    assert child.auction_accounts[q] == data and child.balance(q) == lamports + amount and q not in child.account_meta
    seen = svm.shared_executor().svm.get_account(Pubkey(q))
    assert seen is not None and bytes(seen.owner) == auction.AUCTION_PROGRAM_ID and bytes(seen.data) == data


def test_banks_on_two_threads_share_the_executor_safely() -> None:
    """Replay and slot building run in different worker threads (node/validator.py) on the
    one process-wide executor: LiteSVM's pyo3 object refuses a call while another thread is
    inside it ("Already mutably borrowed", seen on a 4-node localnet at 1,000 tx/s), so the
    executor serialises its entry points. Two threads running forks of one parent get the
    bank hashes a single thread gets."""
    from concurrent.futures import ThreadPoolExecutor

    b1, a_ata, b_ata = token_setup(genesis())
    bh = b1.last_blockhash
    forks = {
        2: [spl.tx(ALICE, [spl.transfer(a_ata, b_ata, ALICE.pubkey, 1 + i)], bh) for i in range(40)],
        3: [spl.tx(BOB, [spl.system_transfer(BOB.pubkey, ALICE.pubkey, 1 + i)], bh) for i in range(40)],
    }
    expect = {slot: run(b1, slot, txs)[0].bank_hash for slot, txs in forks.items()}
    got: dict[int, list[bytes | None]] = {2: [], 3: []}

    def work(slot: int) -> None:
        for _ in range(15):
            got[slot].append(run(b1, slot, forks[slot])[0].bank_hash)

    with ThreadPoolExecutor(len(forks)) as pool:  # map re-raises a worker's exception here
        list(pool.map(work, forks, timeout=300))
    assert all(h == expect[s] for s, hs in got.items() for h in hs) and all(len(hs) == 15 for hs in got.values())
