"""The native vote program: vote transactions parse, land only on the fork they vote for,
never twice, roll back with their transaction, change the bank hash, and survive a
snapshot (spec/bank.md "The vote program")."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core.bank import VOTE_PROGRAM_ID, Bank
from ambient_p2p.core.codec import decode, encode
from ambient_p2p.core.consensus import Vote
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.messages import sign_message
from ambient_p2p.core.vote_program import VoteTxError, parse_vote_transaction, vote_transaction
from ambient_p2p.ledger.meta import BankSnapshot
from ambient_p2p.ledger.producer import transfer_tx
from ambient_p2p.ledger.snapshot import bank_to_snapshot, snapshot_to_bank

V = [Keypair.deterministic("vote-test-voter", i) for i in range(3)]
LEADER = Keypair.deterministic("vote-test-leader")
GH = hashlib.sha256(b"vote-test-genesis").digest()


def blockhash(slot: int, fork: int = 0) -> bytes:
    return hashlib.sha256(f"entry-{slot}-{fork}".encode()).digest()


def chain(n: int, fork: int = 0, base: Bank | None = None) -> list[Bank]:
    """Frozen banks: genesis (or ``base``) then ``n`` empty slots on top of it."""
    banks = [base or Bank.genesis(GH, {k.pubkey: 10**12 for k in V}, LEADER.pubkey, GH)]
    for _ in range(n):
        b = banks[-1].child(banks[-1].slot + 1, LEADER.pubkey)
        b.freeze(blockhash(b.slot, fork))
        banks.append(b)
    return banks


def vote_for(kp: Keypair, bank: Bank, root: int | None = None, **over: object) -> Vote:
    assert bank.bank_hash is not None
    v = Vote(kp.pubkey, bank.slot, bank.bank_hash, root, 1_000, bytes(64))
    v = dataclasses.replace(v, **over)  # type: ignore[arg-type]
    return sign_message(v, kp, "vote")  # type: ignore[no-any-return]


def vote_tx(kp: Keypair, bank: Bank, **over: object) -> bytes:
    return vote_transaction(kp, vote_for(kp, bank, **over), bank.last_blockhash)


def test_a_vote_lands_on_its_fork_pays_its_fee_and_changes_the_bank_hash() -> None:
    banks = chain(2)
    b = banks[2].child(3, LEADER.pubkey)
    before = b.balance(V[0].pubkey)
    (res,) = b.process_transactions([vote_tx(V[0], banks[2])])
    assert res.error is None
    assert b.landed_votes == [(V[0].pubkey, 2)] and b.last_votes == {V[0].pubkey: 2}
    assert b.balance(V[0].pubkey) == before - 5_000
    empty = banks[2].child(3, LEADER.pubkey)
    empty.process_transactions([transfer_tx(V[0], V[1].pubkey, 0, banks[2].last_blockhash)])
    assert b.freeze(blockhash(3)) != empty.freeze(blockhash(3))  # votes_hash is in the bank hash


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong-hash", "vote-hash-mismatch"),
        ("other-fork", "vote-not-ancestor"),
        ("future", "vote-not-ancestor"),
        ("replayed", "vote-too-old"),
        ("older", "vote-too-old"),
        ("forged-vote", "vote-bad-signature"),
        ("wrong-voter", "vote-wrong-voter"),
        ("bad-root", "vote-bad-root"),
    ],
)
def test_votes_that_cannot_land_fail_with_a_reason_and_change_no_vote_state(case: str, code: str) -> None:
    banks = chain(4)
    b = banks[4].child(7, LEADER.pubkey)  # slots 5 and 6 skipped on this fork
    b.last_votes[V[0].pubkey] = 3  # the voter's last landed vote on this fork
    if case == "wrong-hash":
        raw = vote_tx(V[0], banks[4], bank_hash=bytes(32))
    elif case == "other-fork":
        side = chain(1, fork=1, base=banks[4])[1]  # slot 5 on a sibling fork
        raw = vote_transaction(V[0], vote_for(V[0], side), banks[4].last_blockhash)
    elif case == "future":
        raw = vote_tx(V[0], banks[4], slot=9)
    elif case == "replayed":
        raw = vote_tx(V[0], banks[3])
    elif case == "older":
        raw = vote_tx(V[0], banks[2])
    elif case == "forged-vote":
        good = vote_for(V[0], banks[4])
        raw = vote_transaction(V[0], dataclasses.replace(good, timestamp_ms=good.timestamp_ms + 1), banks[4].last_blockhash)
    elif case == "wrong-voter":
        v = vote_for(V[1], banks[4])  # V[1]'s vote, in a transaction V[0] signs
        from solders.hash import Hash
        from solders.instruction import AccountMeta, Instruction
        from solders.keypair import Keypair as SKeypair
        from solders.pubkey import Pubkey
        from solders.transaction import Transaction

        skp = SKeypair.from_seed(V[0].seed)
        ix = Instruction(Pubkey(VOTE_PROGRAM_ID), encode(v), [AccountMeta(skp.pubkey(), True, True)])
        raw = bytes(Transaction.new_signed_with_payer([ix], skp.pubkey(), [skp], Hash(banks[4].last_blockhash)))
    else:
        raw = vote_tx(V[0], banks[4], root=10)
    before = dict(b.last_votes)
    (res,) = b.process_transactions([raw])
    assert res.error is not None and res.error.startswith(code), res.error
    assert res.fee == 5_000  # the fee stays, as for any failed instruction
    assert b.last_votes == before and b.landed_votes == []


def test_a_vote_rolls_back_with_its_transaction() -> None:
    from solders.hash import Hash
    from solders.instruction import AccountMeta, Instruction
    from solders.keypair import Keypair as SKeypair
    from solders.pubkey import Pubkey
    from solders.system_program import TransferParams, transfer
    from solders.transaction import Transaction

    banks = chain(2)
    skp = SKeypair.from_seed(V[0].seed)
    vix = Instruction(Pubkey(VOTE_PROGRAM_ID), encode(vote_for(V[0], banks[2])), [AccountMeta(skp.pubkey(), True, True)])
    too_much = transfer(TransferParams(from_pubkey=skp.pubkey(), to_pubkey=Pubkey(V[1].pubkey), lamports=10**15))
    raw = bytes(Transaction.new_signed_with_payer([vix, too_much], skp.pubkey(), [skp], Hash(banks[2].last_blockhash)))
    b = banks[2].child(3, LEADER.pubkey)
    (res,) = b.process_transactions([raw])
    assert res.error is not None and "insufficient lamports" in res.error
    assert b.landed_votes == [] and b.last_votes == {}
    with pytest.raises(VoteTxError, match="not-a-vote"):  # two instructions: not a simple vote
        parse_vote_transaction(raw)


def test_parse_vote_transaction_accepts_a_vote_and_rejects_everything_else() -> None:
    banks = chain(1)
    raw = vote_tx(V[0], banks[1])
    vt = parse_vote_transaction(raw)
    assert vt.vote.voter == V[0].pubkey and vt.vote.slot == 1 and vt.tx.recent_blockhash == banks[1].last_blockhash
    rejects = {
        "not-a-vote": transfer_tx(V[0], V[1].pubkey, 1, GH),
        "bad-signature": raw[:-1] + bytes([raw[-1] ^ 1]),  # the vote data is signed by the transaction
        "oversized": raw + bytes(1300),
        "bad-transaction": raw[:40],
    }
    for code, bad in rejects.items():
        with pytest.raises(VoteTxError) as ei:
            parse_vote_transaction(bad)
        assert ei.value.reason == code, (code, ei.value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 7)), min_size=1, max_size=25))
def test_landed_votes_are_strictly_increasing_per_voter(seq: list[tuple[int, int]]) -> None:
    """Any order of vote transactions over a linear chain: a voter's landed votes only ever
    increase, every landed vote names an ancestor with its bank hash, and a vote lands iff
    it is above the voter's last landed vote."""
    banks = chain(8)
    hashes = {b.slot: b.bank_hash for b in banks}
    b = banks[8].child(9, LEADER.pubkey)
    expected: dict[bytes, int] = {}
    for i, (who, slot) in enumerate(seq):
        kp = V[who]
        v = vote_for(kp, banks[slot], timestamp_ms=i)  # distinct transactions
        (res,) = b.process_transactions([vote_transaction(kp, v, banks[slot].last_blockhash)])
        should_land = slot > expected.get(kp.pubkey, 0)
        assert (res.error is None) == should_land, (res.error, who, slot, expected)
        if should_land:
            expected[kp.pubkey] = slot
    assert b.last_votes == expected
    for voter, slot in b.landed_votes:
        assert hashes[slot] == b.slot_hashes[slot] and voter in expected


def test_snapshot_keeps_vote_state_and_the_restored_bank_continues_identically() -> None:
    banks = chain(3)
    b = banks[3].child(4, LEADER.pubkey)
    b.process_transactions([vote_tx(V[0], banks[3]), vote_tx(V[1], banks[2])])
    b.freeze(blockhash(4))
    snap = decode(encode(bank_to_snapshot(b)), expected=BankSnapshot)
    r = snapshot_to_bank(snap)
    assert r.state_hash() == b.state_hash() and r.last_votes == b.last_votes and r.slot_hashes == b.slot_hashes
    nxt = [x.child(5, LEADER.pubkey) for x in (b, r)]
    for x in nxt:
        (res,) = x.process_transactions([vote_tx(V[1], banks[3])])
        assert res.error is None
        (res,) = x.process_transactions([vote_tx(V[0], banks[3], timestamp_ms=5)])
        assert res.error is not None and res.error.startswith("vote-too-old")
    assert nxt[0].freeze(blockhash(5)) == nxt[1].freeze(blockhash(5))


def test_slot_hashes_keep_only_the_last_512_ancestors() -> None:
    banks = chain(520)
    top = banks[-1].child(521, LEADER.pubkey)
    assert len(top.slot_hashes) == 512 and min(top.slot_hashes) == 520 - 511
    (res,) = top.process_transactions([vote_transaction(V[0], vote_for(V[0], banks[5]), banks[-1].last_blockhash)])
    assert res.error is not None and res.error.startswith("vote-not-ancestor")


def test_bank_vectors_follow_the_spec_bank_hash_formula() -> None:
    """Recompute every interop/bank/slot vector's bank hash from spec/bank.md's formula
    (not from the bank code): sha256(parent || accounts_delta || signature_count u64 LE ||
    last_blockhash [|| votes_hash]), with votes_hash = sha256 of voter || slot u64 LE."""
    import json
    import struct
    from pathlib import Path

    from ambient_p2p.core.crypto import decode_address

    cases = sorted((Path(__file__).resolve().parents[1] / "interop" / "bank" / "slot").iterdir())
    checked = 0
    for case in cases:
        if not (case / "output.json").exists():
            continue
        inp = json.loads((case / "input.json").read_text())
        out = json.loads((case / "output.json").read_text())
        votes = b"".join(decode_address(a) + struct.pack("<Q", s) for a, s in out["landed_votes"])
        assert out["votes_hash"] == (hashlib.sha256(votes).hexdigest() if votes else None)
        h = hashlib.sha256(bytes.fromhex(inp["parent"]["bank_hash"]) + bytes.fromhex(out["accounts_delta_hash"])
                           + struct.pack("<Q", len(out["results"])) + bytes.fromhex(inp["last_blockhash"]))
        if votes:
            h.update(bytes.fromhex(out["votes_hash"]))
        assert h.hexdigest() == out["bank_hash"], case.name
        checked += 1
    assert checked >= 5
