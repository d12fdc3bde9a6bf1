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


#: Above the rent-exempt minimum of an account without data (890,880: spec/svm.md "Rent")
AMOUNT = 1_000_000


def new_bank(lamports: int = 10_000_000) -> Bank:
    g = Bank.genesis(GENESIS_HASH, {U[0].pubkey: lamports, U[1].pubkey: 50}, LEADER, GENESIS_HASH)
    return g.child(1, LEADER)


def test_transfer_and_fee() -> None:
    b = new_bank()
    res = b.process_transactions([transfer_tx(U[0], U[2].pubkey, AMOUNT, GENESIS_HASH)])
    assert res[0].error is None and res[0].fee == LAMPORTS_PER_SIGNATURE
    assert b.balance(U[0].pubkey) == 10_000_000 - AMOUNT - LAMPORTS_PER_SIGNATURE
    assert b.balance(U[2].pubkey) == AMOUNT
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

    assert run(AMOUNT) == run(AMOUNT)
    assert run(AMOUNT) != run(AMOUNT + 1)
    assert accounts_hash({b"a" * 32: 1, b"b" * 32: 2}) == accounts_hash({b"b" * 32: 2, b"a" * 32: 1})


def test_frozen_bank_refuses_transactions() -> None:
    b = new_bank()
    b.freeze(b"e" * 32)
    with pytest.raises(ValueError, match='bank is frozen'):
        b.process_transactions([transfer_tx(U[0], U[2].pubkey, 5, GENESIS_HASH)])


def test_rent_new_accounts_must_be_rent_exempt() -> None:
    """agave's rent rule in the SVM (spec/svm.md "Rent"): a transfer that creates an account
    below the rent-exempt minimum fails with InsufficientFundsForRent, fee charged, nothing
    moved; at the minimum it succeeds."""
    from ambient_p2p.core.svm import RENT_EXEMPT_MINIMUM_NO_DATA

    assert RENT_EXEMPT_MINIMUM_NO_DATA == 890_880
    b = new_bank()
    short, exact = b.process_transactions([transfer_tx(U[0], U[2].pubkey, RENT_EXEMPT_MINIMUM_NO_DATA - 1, GENESIS_HASH),
                                           transfer_tx(U[0], U[2].pubkey, RENT_EXEMPT_MINIMUM_NO_DATA, GENESIS_HASH)])
    assert short.error is not None and "InsufficientFundsForRent" in short.error and "account_index: 1" in short.error
    assert exact.error is None
    assert b.balance(U[2].pubkey) == RENT_EXEMPT_MINIMUM_NO_DATA
    assert b.balance(U[0].pubkey) == 10_000_000 - RENT_EXEMPT_MINIMUM_NO_DATA - 2 * LAMPORTS_PER_SIGNATURE


def test_rent_a_sender_may_not_be_left_rent_paying() -> None:
    """A transfer leaving its rent-exempt sender with 0 < lamports < the minimum fails
    (InsufficientFundsForRent naming the sender), fee charged; emptying it to 0 is allowed."""
    from ambient_p2p.core.svm import RENT_EXEMPT_MINIMUM_NO_DATA

    start = 2 * RENT_EXEMPT_MINIMUM_NO_DATA
    b = new_bank(start)
    left = start - LAMPORTS_PER_SIGNATURE
    (bad,) = b.process_transactions([transfer_tx(U[0], U[1].pubkey, left - 1, GENESIS_HASH)])
    assert bad.error is not None and "InsufficientFundsForRent" in bad.error and "account_index: 0" in bad.error
    left -= LAMPORTS_PER_SIGNATURE
    (ok,) = b.process_transactions([transfer_tx(U[0], U[1].pubkey, left, GENESIS_HASH)])
    assert ok.error is None and b.balance(U[0].pubkey) == 0 and U[0].pubkey not in b.accounts  # gone (agave)
    assert b.balance(U[1].pubkey) == 50 + left


@pytest.mark.parametrize("native", [False, True])
def test_rent_the_fee_may_not_leave_a_rent_exempt_payer_rent_paying(native: bool) -> None:
    """agave's validate_fee_payer: a fee that would leave a rent-exempt payer with 0 < lamports
    < the minimum makes the block invalid (``insufficient-funds-for-rent``), for SVM and
    native (vote) transactions alike, before anything changes; a payer already below the
    minimum still pays (it stays rent-paying, never credited), and a fee taking it to 0 is
    allowed."""
    from ambient_p2p.core.svm import RENT_EXEMPT_MINIMUM_NO_DATA
    from ambient_p2p.core.vote_program import vote_transaction

    def make(lamports: int) -> tuple[Bank, bytes]:
        b = new_bank(lamports)
        if native:
            from ambient_p2p.core.consensus import Vote
            from ambient_p2p.core.messages import sign_message

            v: Vote = sign_message(Vote(U[0].pubkey, 0, b"h" * 32, None, 1, bytes(64)), U[0], "vote")
            return b, vote_transaction(U[0], v, GENESIS_HASH)
        return b, transfer_tx(U[0], U[0].pubkey, 0, GENESIS_HASH)

    b, raw = make(RENT_EXEMPT_MINIMUM_NO_DATA + LAMPORTS_PER_SIGNATURE - 1)
    before = (dict(b.accounts), b.signature_count, dict(b.status_cache))
    with pytest.raises(BlockError) as ei:
        b.process_transactions([raw])
    assert ei.value.reason == "insufficient-funds-for-rent"
    assert (dict(b.accounts), b.signature_count, dict(b.status_cache)) == before
    for ok_balance, left in ((RENT_EXEMPT_MINIMUM_NO_DATA + LAMPORTS_PER_SIGNATURE, RENT_EXEMPT_MINIMUM_NO_DATA),
                             (LAMPORTS_PER_SIGNATURE, 0), (3 * LAMPORTS_PER_SIGNATURE, 2 * LAMPORTS_PER_SIGNATURE)):
        b, raw = make(ok_balance)
        (res,) = b.process_transactions([raw])
        assert res.fee == LAMPORTS_PER_SIGNATURE and b.balance(U[0].pubkey) == left
