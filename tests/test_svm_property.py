"""Property: random sequences of system and SPL Token instructions, valid and invalid, run
through the bank (spec/svm.md) conserve lamports (every lamport that leaves an account is a
fee, and freeze burns half of them and pays the rest to the leader) and token supply (the
mint's supply is the sum of its token accounts, and moves only by successful mint_to and
burn); two banks, each on its own executor, fed the same sequence agree on every account
and every bank hash."""

from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient_p2p.core import svm
from ambient_p2p.core.bank import FEE_BURN_PERCENT, Bank
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.devnet import spl

GH = hashlib.sha256(b"tests/svm-property/genesis").digest()
LEADER = Keypair.deterministic("tests/svm-property/leader")
USERS = [Keypair.deterministic("tests/svm-property/user", i) for i in range(3)]
MINT = Keypair.deterministic("tests/svm-property/mint")
ATAS = [spl.associated_token_address(u.pubkey, MINT.pubkey) for u in USERS]
FUNDS = 50_000_000

user = st.integers(0, len(USERS) - 1)
amount = st.one_of(st.integers(0, 3_000), st.integers(0, 2 * FUNDS))  # some beyond any balance
op = st.one_of(
    st.tuples(st.just("sys"), user, user, amount),
    st.tuples(st.just("tok"), user, user, amount),
    st.tuples(st.just("mint"), user, user, amount),  # signed by the user: only user 0 is the authority
    st.tuples(st.just("burn"), user, user, amount),
)


def _tx(o: tuple[str, int, int, int], bh: bytes, salt: int) -> bytes:
    kind, a, b, n = o
    signer = USERS[a]
    memo = spl._ix(svm.SPL_MEMO_PROGRAM_ID, [], f"{salt}".encode())  # distinct signatures for repeated ops
    if kind == "sys":
        ix = spl.system_transfer(signer.pubkey, USERS[b].pubkey, n)
    elif kind == "tok":
        ix = spl.transfer(ATAS[a], ATAS[b], signer.pubkey, n)
    elif kind == "mint":
        ix = spl.mint_to(MINT.pubkey, ATAS[b], signer.pubkey, n)
    else:
        ix = spl.burn(ATAS[a], MINT.pubkey, signer.pubkey, n)
    return spl.tx(signer, [ix, memo], bh)


def _chain(executor: svm.SvmExecutor, slots: list[list[tuple[str, int, int, int]]]) -> list[Bank]:
    bank = Bank.genesis(GH, {u.pubkey: FUNDS for u in USERS}, LEADER.pubkey, GH, programs=svm.genesis_programs())
    bank.executor = executor
    b1 = bank.child(1, LEADER.pubkey)
    bh = bank.last_blockhash
    setup = [spl.tx(USERS[0], spl.create_mint(USERS[0].pubkey, MINT.pubkey, USERS[0].pubkey), bh, [MINT]),
             spl.tx(USERS[0], [spl.create_ata(USERS[0].pubkey, u.pubkey, MINT.pubkey) for u in USERS], bh)]
    assert [r.error for r in b1.process_transactions(setup)] == [None, None]
    b1.freeze(hashlib.sha256(b"slot1").digest())
    banks = [b1]
    minted_less_burned = 0
    for i, ops in enumerate(slots):
        parent = banks[-1]
        b = parent.child(parent.slot + 1, LEADER.pubkey)
        before = sum(b.accounts.values())
        results = b.process_transactions([_tx(o, parent.last_blockhash, 1000 * i + j) for j, o in enumerate(ops)])
        # lamports: only fees left the accounts, before freeze
        assert sum(b.accounts.values()) == before - b.fees_collected
        assert b.fees_collected == sum(r.fee for r in results)
        for o, r in zip(ops, results):
            if r.error is None and o[0] == "mint":
                minted_less_burned += o[3]
            elif r.error is None and o[0] == "burn":
                minted_less_burned -= o[3]
        b.freeze(hashlib.sha256(f"slot{b.slot}".encode()).digest())
        burned = b.fees_collected * FEE_BURN_PERCENT // 100
        assert sum(b.accounts.values()) == before - burned
        # tokens: supply is the sum of the token accounts and moved only by mint_to / burn
        mint = b.account(MINT.pubkey)
        assert mint is not None
        supply = spl.mint_supply(mint[1].data)
        held = 0
        for a in ATAS:
            acc = b.account(a)
            assert acc is not None
            held += spl.token_amount(acc[1].data)
        assert supply == held == minted_less_burned
        banks.append(b)
    return banks


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(op, max_size=8), min_size=1, max_size=3))
def test_random_system_and_token_instructions_conserve_and_agree(slots: list[list[tuple[str, int, int, int]]]) -> None:
    a = _chain(svm.shared_executor(), slots)
    b = _chain(svm.SvmExecutor(), slots)
    for x, y in zip(a, b):
        assert x.bank_hash == y.bank_hash
        assert x.accounts == y.accounts and x.account_meta == y.account_meta
