"""The bank's SVM fast path (spec/svm.md "Performance"): the wire parse read out of the raw
bytes agrees with solders on every field, accounts written by SVM transactions stay live in
the executor until the bank takes them back, and nothing about that is observable: batches,
one transaction at a time, interleaved forks on one executor, reads in the middle of a slot
and failures all give the same accounts and bank hashes as a bank that takes every account
back after every transaction."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import svm
from ambient_p2p.core.bank import Bank, BlockError, ParsedTx, TxRecord, TxResult, parse_transaction
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.devnet import spl

GH = hashlib.sha256(b"tests/svm-live/genesis").digest()
LEADER = Keypair.deterministic("tests/svm-live/leader")
USERS = [Keypair.deterministic("tests/svm-live/user", i) for i in range(3)]
MINT = Keypair.deterministic("tests/svm-live/mint")
ATAS = [spl.associated_token_address(u.pubkey, MINT.pubkey) for u in USERS]


# -- the parse ------------------------------------------------------------------------------
@st.composite
def wire_transactions(draw: st.DrawFn) -> bytes:
    """Legacy and v0 transactions with 1-3 signatures, up to 140 keys and instruction
    accounts and data across the one-byte length boundary (128)."""
    from solders.hash import Hash
    from solders.instruction import CompiledInstruction
    from solders.message import Message, MessageHeader, MessageV0
    from solders.pubkey import Pubkey
    from solders.signature import Signature
    from solders.transaction import VersionedTransaction

    nsig = draw(st.integers(1, 3))
    nkeys = draw(st.integers(nsig + 1, 140))
    ro_signed = draw(st.integers(0, nsig - 1))
    ro_unsigned = draw(st.integers(0, nkeys - nsig - 1))
    keys = [Pubkey(hashlib.sha256(b"k%d" % i + draw(st.binary(max_size=2))).digest()) for i in range(nkeys)]
    if len(set(keys)) != nkeys:
        keys = [Pubkey(hashlib.sha256(b"unique%d" % i).digest()) for i in range(nkeys)]
    ixs = [CompiledInstruction(draw(st.integers(nsig, nkeys - 1)),
                               bytes(draw(st.lists(st.integers(0, nkeys - 1), max_size=130))),
                               draw(st.binary(max_size=200)))
           for _ in range(draw(st.integers(0, 3)))]
    blockhash = Hash(draw(st.binary(min_size=32, max_size=32)))
    header = MessageHeader(nsig, ro_signed, ro_unsigned)
    msg: Message | MessageV0
    if draw(st.booleans()):
        msg = Message.new_with_compiled_instructions(nsig, ro_signed, ro_unsigned, keys, blockhash, ixs)
    else:
        msg = MessageV0(header, keys, blockhash, ixs, [])
    sigs = [Signature(draw(st.binary(min_size=64, max_size=64))) for _ in range(nsig)]
    return bytes(VersionedTransaction.populate(msg, sigs))


@settings(max_examples=150, deadline=None)
@given(wire_transactions())
def test_the_wire_parse_agrees_with_solders_on_every_field(raw: bytes) -> None:
    from solders.transaction import VersionedTransaction

    ref = VersionedTransaction.from_bytes(raw)
    try:
        ref.sanitize()
    except Exception:  # noqa: BLE001 - an index out of range: the bank refuses it too
        with pytest.raises(BlockError) as exc:
            parse_transaction(raw, verify_signatures=False)
        assert exc.value.reason == "bad-transaction"
        return
    tx = parse_transaction(raw, verify_signatures=False)
    msg = ref.message
    keys = tuple(bytes(k) for k in msg.account_keys)
    h = msg.header
    assert tx.raw == raw and tx.signatures == tuple(bytes(s) for s in ref.signatures)
    assert tx.account_keys == keys and tx.recent_blockhash == bytes(msg.recent_blockhash)
    assert tx.signer_count == h.num_required_signatures
    signed_w, unsigned_w = h.num_required_signatures - h.num_readonly_signed_accounts, len(keys) - h.num_readonly_unsigned_accounts
    assert tx.writable == tuple(i < signed_w if i < h.num_required_signatures else i < unsigned_w
                                for i in range(len(keys)))
    assert tx.writable_keys == tuple(k for k, w in zip(keys, tx.writable) if w)
    assert tx.instructions == tuple((ix.program_id_index, bytes(ix.accounts), bytes(ix.data))
                                    for ix in msg.instructions)
    # built without the dataclass __init__ (bank._frozen): every field, equal to the constructor's
    assert set(vars(tx)) == {f.name for f in dataclasses.fields(ParsedTx)}
    assert tx == ParsedTx(**{f.name: getattr(tx, f.name) for f in dataclasses.fields(ParsedTx)})
    assert hash(tx) == hash(ParsedTx(**{f.name: getattr(tx, f.name) for f in dataclasses.fields(ParsedTx)}))


# -- live accounts ----------------------------------------------------------------------------
def _slot1(executor: svm.SvmExecutor) -> Bank:
    bank = Bank.genesis(GH, {u.pubkey: 10**10 for u in USERS}, LEADER.pubkey, GH, programs=svm.genesis_programs())
    bank.executor = executor
    b1 = bank.child(1, LEADER.pubkey)
    bh = bank.last_blockhash
    setup = [spl.tx(USERS[0], spl.create_mint(USERS[0].pubkey, MINT.pubkey, USERS[0].pubkey), bh, [MINT])]
    setup += [spl.tx(USERS[0], [spl.create_ata(USERS[0].pubkey, u.pubkey, MINT.pubkey),
                                spl.mint_to(MINT.pubkey, a, USERS[0].pubkey, 1_000)], bh) for u, a in zip(USERS, ATAS)]
    assert [r.error for r in b1.process_transactions(setup)] == [None] * 4
    b1.freeze(hashlib.sha256(b"tests/svm-live/slot1").digest())
    return b1


def _traffic(bh: bytes, salt: str) -> list[bytes]:
    """Token and system transfers, one of them failing (more tokens than the account holds)."""
    memo = [spl._ix(svm.SPL_MEMO_PROGRAM_ID, [], salt.encode())]
    out = []
    for k in range(9):
        a, b = k % 3, (k + 1) % 3
        amount = 5_000 if k == 4 else 10 + k  # k == 4 fails: insufficient funds, fee charged
        out.append(spl.tx(USERS[a], [spl.transfer(ATAS[a], ATAS[b], USERS[a].pubkey, amount), *memo], bh))
    out.append(spl.tx(USERS[1], [spl.system_transfer(USERS[1].pubkey, USERS[2].pubkey, 77), *memo], bh))
    return out


def _state(b: Bank) -> tuple[object, ...]:
    return (b.bank_hash, dict(b.accounts), dict(b.account_meta),
            [(r.result.error, r.pre_balances, r.post_balances) for r in b.tx_log])


def _reference(salt: str) -> tuple[object, ...]:
    """Every transaction on its own, the bank taking every account back after each one."""
    b1 = _slot1(svm.SvmExecutor())
    b2 = b1.child(2, LEADER.pubkey)
    for raw in _traffic(b1.last_blockhash, salt):
        b2.process_transactions([raw])
        assert b2.account_meta is not None  # reading it takes the live accounts back
        assert not b2._svm_live
    b2.freeze(b"\x02" * 32)
    return _state(b2)


def test_live_accounts_are_unobservable_in_a_batch() -> None:
    ref = _reference("a")
    b1 = _slot1(svm.SvmExecutor())
    b2 = b1.child(2, LEADER.pubkey)
    res = b2.process_transactions(_traffic(b1.last_blockhash, "a"))
    assert [r.error is None for r in res] == [True] * 4 + [False] + [True] * 5
    assert "InstructionErrorCustom(1)" in (res[4].error or "")  # spl-token InsufficientFunds
    b2.freeze(b"\x02" * 32)
    assert _state(b2) == ref
    # the bank's result records, built without their dataclass __init__, are the constructors'
    rec = b2.tx_log[0]
    assert set(vars(rec)) == {f.name for f in dataclasses.fields(TxRecord)}
    assert set(vars(rec.result)) == {f.name for f in dataclasses.fields(TxResult)}
    assert rec == TxRecord(rec.raw, TxResult(*dataclasses.astuple(rec.result)), rec.pre_balances, rec.post_balances,
                           rec.pre_metas, rec.post_metas)


def test_two_forks_interleaved_on_one_executor_match_forks_run_alone() -> None:
    ex = svm.SvmExecutor()
    b1 = _slot1(ex)
    a, b = b1.child(2, LEADER.pubkey), b1.child(3, LEADER.pubkey)
    ta, tb = _traffic(b1.last_blockhash, "a"), _traffic(b1.last_blockhash, "b")
    for ra, rb in zip(ta, tb):  # a, b, a, b, ...: each takes the other's live accounts back
        a.process_transactions([ra])
        b.process_transactions([rb])
    a.freeze(b"\x02" * 32)
    b.freeze(b"\x02" * 32)
    assert _state(a) == _reference("a")
    alone = _slot1(svm.SvmExecutor()).child(3, LEADER.pubkey)
    alone.process_transactions(tb)
    alone.freeze(b"\x02" * 32)
    assert _state(b) == _state(alone)


def test_a_read_in_the_middle_of_a_slot_sees_the_latest_token_balance() -> None:
    b1 = _slot1(svm.SvmExecutor())
    b2 = b1.child(2, LEADER.pubkey)
    bh = b1.last_blockhash
    b2.process_transactions([spl.tx(USERS[0], [spl.transfer(ATAS[0], ATAS[1], USERS[0].pubkey, 123)], bh)])
    assert b2._svm_live  # the token accounts' data is still only in the executor
    acc = b2.account(ATAS[1])
    assert acc is not None and spl.token_amount(acc[1].data) == 1_123 and not b2._svm_live


def test_a_failed_transaction_changes_only_the_fee_payer_in_litesvm() -> None:
    """The executor's live accounts rely on it: after a failed run LiteSVM holds every
    account as before except the fee payer, charged its fee (agave stores the fee payer's
    rollback account): a system transfer followed by a failing instruction moves nothing."""
    ex = svm.SvmExecutor()
    b1 = _slot1(ex)
    b2 = b1.child(2, LEADER.pubkey)
    bh = b1.last_blockhash
    raw = spl.tx(USERS[0], [spl.system_transfer(USERS[0].pubkey, USERS[2].pubkey, 999),
                            spl.transfer(ATAS[0], ATAS[1], USERS[0].pubkey, 10**9)], bh)
    from solders.pubkey import Pubkey

    tx = parse_transaction(raw, verify_signatures=False)
    b2.process_transactions([spl.tx(USERS[1], [spl.transfer(ATAS[1], ATAS[0], USERS[1].pubkey, 1)], bh)])
    assert b2._svm_live  # ATAS[0] and ATAS[1] are live (their data only in the executor)
    before = {k: ex.svm.get_account(Pubkey(k)) for k in tx.account_keys[1:]}
    payer_before = b2.balance(USERS[0].pubkey)
    (res,) = b2.process_transactions([raw])
    assert res.error is not None and res.fee == 5_000
    assert {k: ex.svm.get_account(Pubkey(k)) for k in tx.account_keys[1:]} == before
    payer = ex.svm.get_account(Pubkey(USERS[0].pubkey))
    assert payer is not None and payer.lamports == payer_before - res.fee and payer.data == b""
    assert b2.balance(USERS[2].pubkey) == b1.balance(USERS[2].pubkey)
    assert b2.balance(USERS[0].pubkey) == payer_before - res.fee
    b2.freeze(b"\x02" * 32)
    a0, a1 = b2.account(ATAS[0]), b2.account(ATAS[1])
    assert a0 is not None and a1 is not None
    assert (spl.token_amount(a0[1].data), spl.token_amount(a1[1].data)) == (1_001, 999)


# -- the inline path ----------------------------------------------------------------------------
def _one_instruction_traffic(bh: bytes) -> list[bytes]:
    """One-instruction transactions (the bank's inline path): token transfers, one failing
    (more tokens than the account holds: fee charged), system transfers, and one that moves a
    payer's whole balance less the fee (the payer is left with 0 lamports: deleted)."""
    out = [spl.tx(USERS[k % 3], [spl.transfer(ATAS[k % 3], ATAS[(k + 1) % 3], USERS[k % 3].pubkey,
                                              5_000 if k == 2 else 10 + k)], bh) for k in range(6)]
    out.append(spl.tx(USERS[1], [spl.system_transfer(USERS[1].pubkey, USERS[2].pubkey, 77)], bh))
    spender = Keypair.deterministic("tests/svm-live/spender")
    out.append(spl.tx(USERS[0], [spl.system_transfer(USERS[0].pubkey, spender.pubkey, 10**9)], bh))
    out.append(spl.tx(spender, [spl.system_transfer(spender.pubkey, USERS[2].pubkey, 10**9 - 5_000)], bh))
    return out


def _run(raws: list[bytes], inline: bool) -> tuple[object, ...]:
    b1 = _slot1(svm.SvmExecutor())
    b2 = b1.child(2, LEADER.pubkey)
    b2.token_balances = not inline  # recording token balances takes Bank._process for every transaction
    res = b2.process_transactions(raws)
    b2.freeze(b"\x02" * 32)
    return (res, b2.fees_collected, b2.signature_count, b2.transaction_count, b2.modified, b2.status_cache,
            *_state(b2))


def test_the_inline_path_gives_what_bank_process_gives() -> None:
    """``Bank._process_batch`` runs one-instruction SVM transactions inline (spec/svm.md
    "Performance"); ``Bank._process``, which the token-balance recording forces, is the
    reference: the same results (errors, logs, compute units), records, counters, accounts
    and bank hash."""
    raws = _one_instruction_traffic(_slot1(svm.SvmExecutor()).last_blockhash)
    inline, reference = _run(raws, True), _run(raws, False)
    res = inline[0]
    assert isinstance(res, list) and [r.error is None for r in res] == [True, True, False] + [True] * 6
    assert any("Tokenkeg" in line for line in res[0].logs) and res[0].compute_units > 0
    assert inline == reference


@pytest.mark.parametrize("case", ["blockhash", "replay", "no-fee", "rent"])
def test_the_inline_path_rejects_as_bank_process_does(case: str) -> None:
    """A block-invalidating transaction after two good ones: the same BlockError (reason,
    detail, index) on the inline path as on ``Bank._process``."""
    b1 = _slot1(svm.SvmExecutor())
    bh = b1.last_blockhash
    good = [spl.tx(USERS[0], [spl.transfer(ATAS[0], ATAS[1], USERS[0].pubkey, 1 + k)], bh) for k in range(2)]
    poor = Keypair.deterministic("tests/svm-live/poor")
    if case == "blockhash":
        bad = spl.tx(USERS[1], [spl.transfer(ATAS[1], ATAS[0], USERS[1].pubkey, 1)], b"\x07" * 32)
    elif case == "replay":
        bad = good[0]
    elif case == "no-fee":  # a payer without an account
        bad = spl.tx(poor, [spl.system_transfer(poor.pubkey, USERS[0].pubkey, 1)], bh)
    else:  # the fee would leave a rent-exempt payer below the minimum
        bad = spl.tx(USERS[1], [spl.system_transfer(USERS[1].pubkey, USERS[0].pubkey, 1)], bh)
    errors = []
    for inline in (True, False):
        b2 = b1.child(2, LEADER.pubkey)
        b2.token_balances = not inline
        if case == "rent":  # leave USERS[1] just above the rent-exempt minimum plus less than a fee
            b2.accounts[USERS[1].pubkey] = svm.RENT_EXEMPT_MINIMUM_NO_DATA + 4_000
        with pytest.raises(BlockError) as exc:
            b2.process_transactions([*good, bad], verify_signatures=False)
        errors.append((exc.value.reason, exc.value.detail, exc.value.tx_index))
    assert errors[0] == errors[1] and errors[0][2] == 2
    assert errors[0][0] == {"blockhash": "blockhash-not-found", "replay": "already-processed",
                            "no-fee": "insufficient-funds-for-fee", "rent": "insufficient-funds-for-rent"}[case]
