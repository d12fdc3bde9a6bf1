"""The minimal bank: transfers, fees, blockhash window, duplicate rejection, bank hash."""

from __future__ import annotations

import pytest

from ambient_p2p.core.bank import (
    LAMPORTS_PER_SIGNATURE,
    MAX_PROCESSING_AGE,
    Bank,
    BlockError,
    accounts_hash,
)
from ambient_p2p.devnet.users import ledger_user_keypairs as user_keypairs
from ambient_p2p.ledger.producer import transfer_tx

U = user_keypairs(3)
LEADER = b"L" * 32
GENESIS_HASH = b"G" * 32


def new_bank(lamports: int = 1_000_000) -> Bank:
    g = Bank.genesis(GENESIS_HASH, {U[0].pubkey: lamports, U[1].pubkey: 50}, LEADER, GENESIS_HASH)
    return g.child(1, LEADER)


def test_transfer_and_fee() -> None:
    b = new_bank()
    res = b.process_transactions([transfer_tx(U[0], U[2].pubkey, 1234, GENESIS_HASH)])
    assert res[0].error is None and res[0].fee == LAMPORTS_PER_SIGNATURE
    assert b.balance(U[0].pubkey) == 1_000_000 - 1234 - LAMPORTS_PER_SIGNATURE
    assert b.balance(U[2].pubkey) == 1234
    b.freeze(b"e" * 32)
    assert b.balance(LEADER) == LAMPORTS_PER_SIGNATURE // 2  # half burned, half to the leader
    assert b.last_blockhash == b"e" * 32


def test_failed_instruction_still_charges_fee() -> None:
    b = new_bank(10_000)
    res = b.process_transactions([transfer_tx(U[0], U[2].pubkey, 9_000, GENESIS_HASH)])
    assert res[0].error is not None and "insufficient lamports" in res[0].error
    assert b.balance(U[0].pubkey) == 10_000 - LAMPORTS_PER_SIGNATURE and b.balance(U[2].pubkey) == 0


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: transfer_tx(U[0], U[2].pubkey, 1, b"x" * 32), "blockhash-not-found"),
        (lambda: transfer_tx(U[1], U[2].pubkey, 1, GENESIS_HASH), "insufficient-funds-for-fee"),
        (lambda: transfer_tx(U[2], U[0].pubkey, 1, GENESIS_HASH), "insufficient-funds-for-fee"),
        (lambda: b"\x01" + bytes(10), "bad-transaction"),
    ],
)
def test_block_invalidating_transactions(make, reason: str) -> None:  # type: ignore[no-untyped-def]
    b = new_bank()
    with pytest.raises(BlockError) as ei:
        b.process_transactions([make()])
    assert ei.value.reason == reason and ei.value.tx_index == 0


def test_bad_signature_rejected() -> None:
    raw = bytearray(transfer_tx(U[0], U[2].pubkey, 1, GENESIS_HASH))
    raw[-1] ^= 1  # lamports byte: message changes, signature no longer matches
    with pytest.raises(BlockError) as ei:
        new_bank().process_transactions([bytes(raw)])
    assert ei.value.reason == "bad-signature"


def test_batch_signature_verification() -> None:
    from ambient_p2p.core.bank import verify_transaction_signatures

    good = transfer_tx(U[0], U[2].pubkey, 1, GENESIS_HASH)
    bad = bytearray(good)
    bad[-1] ^= 1
    res = verify_transaction_signatures([good, bytes(bad), b"\x00"])
    assert res[0] is None
    assert res[1] is not None and res[1].startswith("bad-signature")
    assert res[2] is not None and res[2].startswith("bad-transaction")


def test_duplicate_transaction_rejected_across_slots() -> None:
    b = new_bank()
    tx = transfer_tx(U[0], U[2].pubkey, 5, GENESIS_HASH)
    b.process_transactions([tx])
    with pytest.raises(BlockError, match="already-processed"):
        b.process_transactions([tx])
    b2 = new_bank()
    b2.process_transactions([tx])
    b2.freeze(b"1" * 32)
    child = b2.child(2, LEADER)
    with pytest.raises(BlockError, match="already-processed"):
        child.process_transactions([tx])


def test_blockhash_expires_after_max_processing_age() -> None:
    b = new_bank()
    b.freeze(b"\x00" * 31 + b"\x01")
    for slot in range(2, MAX_PROCESSING_AGE + 2):
        b = b.child(slot, LEADER)
        b.freeze(slot.to_bytes(32, "big"))
    b = b.child(MAX_PROCESSING_AGE + 2, LEADER)
    with pytest.raises(BlockError, match="blockhash-not-found"):
        b.process_transactions([transfer_tx(U[0], U[2].pubkey, 5, GENESIS_HASH)])
    b.process_transactions([transfer_tx(U[0], U[2].pubkey, 5, (MAX_PROCESSING_AGE + 1).to_bytes(32, "big"))])


def test_bank_hash_is_deterministic_and_sensitive() -> None:
    def run(amount: int) -> bytes:
        b = new_bank()
        b.process_transactions([transfer_tx(U[0], U[2].pubkey, amount, GENESIS_HASH)])
        return b.freeze(b"e" * 32)

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert accounts_hash({b"a" * 32: 1, b"b" * 32: 2}) == accounts_hash({b"b" * 32: 2, b"a" * 32: 1})


def test_frozen_bank_refuses_transactions() -> None:
    b = new_bank()
    b.freeze(b"e" * 32)
    with pytest.raises(ValueError, match='bank is frozen'):
        b.process_transactions([transfer_tx(U[0], U[2].pubkey, 5, GENESIS_HASH)])
