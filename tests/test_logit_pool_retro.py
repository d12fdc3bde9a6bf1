"""Retrospective slashing (spec/logit_pool.md "Retrospective slashing"): a verified result's
bond is held for the challenge window; a fraud proof made of the miner's own signed leaf
convicts at once when the leaf contradicts itself, otherwise a fresh jury decides; false
claims cost the claimant. Real bank, real signatures, real PoL commitments."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import auction as A
from ambient_p2p.core import auction_tx as T
from ambient_p2p.core import logit_pool as L
from ambient_p2p.core import pol
from ambient_p2p.core.bank import pool_view
from ambient_p2p.interop.formats.auction import CHEAT_POSITION, OUTSIDER, POOL_TOKENS, VALIDATORS, PoolChain


def slashes(c: PoolChain, who: bytes) -> int:
    w = c.bank.work_account(who)
    return 0 if w is None else w.total_slashes


def positions(c: PoolChain, who: bytes) -> int:
    w = c.bank.work_account(who)
    return 0 if w is None else w.total_positions_validated


# ---------------------------------------------------------------------------------------
# the model-free rule (pure)
# ---------------------------------------------------------------------------------------
def _cmt(temp_milli: int = 0) -> pol.PolCommitment:
    return pol.PolCommitment(model_id=bytes(32), tier=int(pol.Tier.FP32), vocab=1000, top_k=4, temp_milli=temp_milli,
                             sample_seed=bytes(32), prompt_hash=bytes(32), output_hash=bytes(32), num_tokens=4,
                             root=bytes(32), miner=bytes(32), signature=bytes(64))


GOOD = pol.LogitFingerprint(pos=0, tok=5, ids=(5, 6, 7, 8), lps=(0, 3, 10, 20))


@pytest.mark.parametrize(("fp", "why"), [
    (dataclasses.replace(GOOD, ids=(5, 6, 7), lps=(0, 3, 10)), "candidates"),
    (dataclasses.replace(GOOD, ids=(5, 6, 6, 8)), "repeated"),
    (dataclasses.replace(GOOD, ids=(5, 6, 7, 1000)), "out-of-vocabulary"),
    (dataclasses.replace(GOOD, lps=(3, 0, 10, 20)), "canonical order"),
    (dataclasses.replace(GOOD, tok=9), "not among"),
    (dataclasses.replace(GOOD, tok=7), "greedy token rule"),  # 10 units below the best, tau 4
])
def test_self_contradictions_are_found_with_integers(fp: pol.LogitFingerprint, why: str) -> None:
    got = L.self_contradiction(_cmt(), fp)
    assert got is not None and why in got


def test_consistent_leaves_and_sampled_token_choice_are_left_to_the_jury() -> None:
    assert L.self_contradiction(_cmt(), GOOD) is None
    assert L.self_contradiction(_cmt(), dataclasses.replace(GOOD, tok=6)) is None  # 3 units: within tau
    # sampled proofs: a token among the candidates is the jury's question (the rule reads exp)
    assert L.self_contradiction(_cmt(temp_milli=700), dataclasses.replace(GOOD, tok=8)) is None
    assert L.self_contradiction(_cmt(temp_milli=700), dataclasses.replace(GOOD, tok=9)) is not None


# ---------------------------------------------------------------------------------------
# class 1: the program convicts alone
# ---------------------------------------------------------------------------------------
def test_colluders_accept_a_self_contradicting_result_and_an_outsider_convicts() -> None:
    c = PoolChain(n_validators=6, cheat_at=CHEAT_POSITION)
    v0, v1, v2 = c.verify_by(0, 1)
    q = c.query(c.qid)
    assert q.status == A.QueryStatus.FINALIZED_VERIFIED
    bond = c.bid(c.qid, q.winner).bond_lamports
    before = {k: c.bank.balance(k) for k in (q.requester, q.winner, OUTSIDER.pubkey)}
    # a consistent opening is no self-contradiction: it needs the bond and opens a jury instead
    good = c.opening(CHEAT_POSITION + 1)
    assert L.self_contradiction(q.pol_commitment(), good.fp) is None
    (r,) = c.send(c.challenge_tx(v0, c.opening(CHEAT_POSITION)))
    assert (r.error or "").startswith("auction-bad-challenger")
    (r,) = c.send(c.challenge_tx(OUTSIDER, c.opening(CHEAT_POSITION)))
    assert r.error is None
    q2 = c.query(c.qid)
    assert q2.status == A.QueryStatus.FINALIZED_REJECTED
    assert c.bid(c.qid, q.winner).status == A.BidStatus.SLASHED
    half = bond * L.SLASH_TO_REQUESTER_PERCENT // 100
    assert c.bank.balance(q.requester) - before[q.requester] == half
    assert c.bank.balance(q.winner) == before[q.winner]
    assert c.bank.balance(OUTSIDER.pubkey) - before[OUTSIDER.pubkey] == bond - half - r.fee
    assert c.bank.balance(A.bid_address(c.qid, q.winner)) == 0
    assert slashes(c, q.winner) == 1 and slashes(c, v0.pubkey) == 1 and slashes(c, v1.pubkey) == 1
    assert slashes(c, v2.pubkey) == 0
    d = L.load_dispute(pool_view(c.bank), L.dispute_address(c.qid))
    assert d is not None and (d.state, d.fault_class, d.position) == (L.UPHELD, L.SELF_CONTRADICTION, CHEAT_POSITION)
    assert c.total() == c.start_total
    # nothing more to do: no second challenge, no release
    assert (c.send(c.challenge_tx(v2, c.opening(CHEAT_POSITION)))[0].error or "").startswith("auction-wrong-status")
    assert (c.send(c.close_dispute_tx())[0].error or "").startswith("auction-wrong-status")


def test_a_fraud_proof_after_the_window_is_refused_and_the_bond_released() -> None:
    c = PoolChain(n_validators=6, cheat_at=CHEAT_POSITION)
    c.verify_by(0, 1)
    pool = L.load_pool(pool_view(c.bank), L.pool_address(c.qid))
    assert pool is not None
    c.advance_to(pool.settled_slot + L.CHALLENGE_WINDOW_SLOTS)
    (r,) = c.send(c.challenge_tx(OUTSIDER, c.opening(CHEAT_POSITION)))
    assert (r.error or "").startswith("auction-challenge-closed")
    q = c.query(c.qid)
    w0 = c.bank.balance(q.winner)
    assert c.send(c.close_dispute_tx())[0].error is None
    assert c.bank.balance(q.winner) - w0 == c.bid(c.qid, q.winner).bond_lamports
    assert c.bid(c.qid, q.winner).status == A.BidStatus.REFUNDED
    assert c.total() == c.start_total


# ---------------------------------------------------------------------------------------
# class 2: the jury
# ---------------------------------------------------------------------------------------
def _disputed(accepting: tuple[int, ...] = (0, 1), challenger: int | None = None,
              lstake: dict[bytes, int] | None = None) -> tuple[PoolChain, list[bytes], bytes]:
    c = PoolChain(n_validators=7, lstake=lstake)
    drawn = c.verify_by(*accepting)
    who = OUTSIDER if challenger is None else drawn[challenger]
    assert c.send(c.challenge_tx(who, c.opening(3)))[0].error is None
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    return c, [k.pubkey for k in drawn], who.pubkey


def test_the_jury_excludes_the_accused_and_the_challenger() -> None:
    c, drawn, challenger = _disputed(challenger=2)
    j = c.jury()
    assert j is not None and j.drawn and len(j.jurors) == L.JURORS_PER_DISPUTE
    q = c.query(c.qid)
    assert not {q.winner, drawn[0], drawn[1], challenger} & set(j.jurors)
    assert c.bank.balance(L.dispute_address(c.qid)) == L.CHALLENGE_BOND_LAMPORTS
    # the jury is fixed by chain data: later banks derive the same one
    c.advance(3)
    assert c.jury() == j


def test_upheld_model_fault_slashes_miner_and_colluders_and_pays_requester_and_challenger() -> None:
    c, drawn, challenger = _disputed(challenger=2)
    q = c.query(c.qid)
    j = c.jury()
    assert j is not None
    bond = c.bid(c.qid, q.winner).bond_lamports
    before = {k: c.bank.balance(k) for k in (q.requester, q.winner, challenger)}
    c.ok(c.ruling_tx(j.jurors[0], True))
    assert (c.send(c.close_dispute_tx())[0].error or "").startswith("auction-verify-open")
    c.ok(c.ruling_tx(j.jurors[1], True))
    c.ok(c.close_dispute_tx())
    half = bond * L.SLASH_TO_REQUESTER_PERCENT // 100
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_REJECTED
    assert c.bank.balance(q.requester) - before[q.requester] == half
    assert c.bank.balance(challenger) - before[challenger] == bond - half + L.CHALLENGE_BOND_LAMPORTS
    assert c.bank.balance(q.winner) == before[q.winner]
    assert c.bank.balance(L.dispute_address(c.qid)) == 0 == c.bank.balance(A.bid_address(c.qid, q.winner))
    assert slashes(c, q.winner) == 1 and slashes(c, drawn[0]) == 1 and slashes(c, drawn[1]) == 1
    assert slashes(c, challenger) == 0
    assert positions(c, j.jurors[0]) == 1 == positions(c, j.jurors[1])
    assert slashes(c, j.jurors[2]) == 1  # absent
    assert c.total() == c.start_total


def test_a_false_claim_is_dismissed_and_costs_the_claimant() -> None:
    c, drawn, challenger = _disputed()
    q = c.query(c.qid)
    j = c.jury()
    assert j is not None
    w0 = c.bank.balance(q.winner)
    c.ok(c.ruling_tx(j.jurors[0], False), c.ruling_tx(j.jurors[1], False))
    c.ok(c.close_dispute_tx())
    d = L.load_dispute(pool_view(c.bank), L.dispute_address(c.qid))
    assert d is not None and d.state == L.DISMISSED
    assert c.bank.balance(q.winner) - w0 == L.CHALLENGE_BOND_LAMPORTS
    assert slashes(c, challenger) == 1 and slashes(c, q.winner) == 0 and slashes(c, drawn[0]) == 0
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_VERIFIED
    assert c.bid(c.qid, q.winner).status == A.BidStatus.HELD
    # the grace period keeps the window open after the dismissal; then the bond is released
    pool = L.load_pool(pool_view(c.bank), L.pool_address(c.qid))
    assert pool is not None and L.release_slot(pool, d) >= d.closed_slot + L.CHALLENGE_GRACE_SLOTS
    c.advance_to(L.release_slot(pool, d))
    c.ok(c.close_dispute_tx())
    assert c.bid(c.qid, q.winner).status == A.BidStatus.REFUNDED
    assert c.total() == c.start_total


def test_a_challenge_without_the_bond_is_refused() -> None:
    c = PoolChain(n_validators=6)
    drawn = c.verify_by(0, 1)
    poor = drawn[2]
    c.bank.accounts[poor.pubkey] = L.CHALLENGE_BOND_LAMPORTS  # the fee leaves it short
    (r,) = c.send(c.challenge_tx(poor, c.opening(3)))
    assert (r.error or "").startswith("auction-insufficient-funds")
    assert L.load_dispute(pool_view(c.bank), L.dispute_address(c.qid)) is None


def test_dispute_account_roundtrip_and_bounds() -> None:
    d = L.DisputeAccount(L.OPEN, L.MODEL_FAULT, 7, 100, bytes(range(32)), 10_000, b"\x01" * L.OPENING_MAX_BYTES,
                         104, 136, b"\x02" * 32, (b"\x03" * 32, b"\x04" * 32), (L.FRAUD, L.NO_RULING), 0)
    data = d.pack()
    assert len(data) == L.DISPUTE_ACCOUNT_BYTES == 216 + L.OPENING_MAX_BYTES == 1368
    assert L.DisputeAccount.unpack(data) == d
    with pytest.raises(ValueError, match="not a dispute account"):
        L.DisputeAccount.unpack(data[:-1])
    bad = bytearray(data)
    bad[3] = 4  # four jurors in a three-seat jury
    with pytest.raises(ValueError, match="out of range"):
        L.DisputeAccount.unpack(bytes(bad))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sampled_from(["fraud", "no", "none"]), min_size=3, max_size=3),
       st.lists(st.integers(1, 50), min_size=7, max_size=7), st.booleans())
def test_every_ruling_mix_conserves_lamports_and_ends_the_bond(rulings: list[str], weights: list[int],
                                                               outsider: bool) -> None:
    lstake = {v.pubkey: w for v, w in zip(VALIDATORS[:7], weights, strict=True)}
    c, drawn, challenger = _disputed(challenger=None if outsider else 2, lstake=lstake)
    q = c.query(c.qid)
    j = c.jury()
    assert j is not None
    assert not {q.winner, drawn[0], drawn[1], challenger} & set(j.jurors)
    for juror, what in zip(j.jurors, rulings, strict=False):
        if what != "none":
            c.ok(c.ruling_tx(juror, what == "fraud"))
    fraud, no = rulings[:len(j.jurors)].count("fraud"), rulings[:len(j.jurors)].count("no")
    if fraud < L.RULING_QUORUM and no < L.RULING_QUORUM:
        c.advance_to(j.judge_end_slot)
    c.ok(c.close_dispute_tx())
    d = L.load_dispute(pool_view(c.bank), L.dispute_address(c.qid))
    assert d is not None
    want = L.UPHELD if fraud >= L.RULING_QUORUM else L.DISMISSED if no >= L.RULING_QUORUM else L.LAPSED
    assert d.state == want
    assert c.bank.balance(L.dispute_address(c.qid)) == 0
    assert (slashes(c, q.winner) == 1) == (want == L.UPHELD)
    if want != L.UPHELD:
        pool = L.load_pool(pool_view(c.bank), L.pool_address(c.qid))
        assert pool is not None
        c.advance_to(L.release_slot(pool, d))
        c.ok(c.close_dispute_tx())
    assert c.bank.balance(A.bid_address(c.qid, q.winner)) == 0
    assert c.total() == c.start_total


def test_malformed_ruling_and_challenge_data_are_refused() -> None:
    c, _, _ = _disputed()
    j = c.jury()
    assert j is not None
    juror = next(v for v in VALIDATORS if v.pubkey == j.jurors[0])
    metas = [(juror.pubkey, True, True), (c.qid, False, True), (L.pool_address(c.qid), False, True),
             (L.dispute_address(c.qid), False, True)]
    for data in (b"\x0a\x00\x00\x00", b"\x0a\x00\x00\x00\x02", b"\x0a\x00\x00\x00\x01\x00"):
        (r,) = c.send(T.auction_transaction([juror], metas, data, c.blockhash))
        assert (r.error or "").startswith("auction-bad-data"), (data, r.error)
    too_big = pol.PolOpening(cmt=bytes(32), fp=pol.LogitFingerprint(pos=0, tok=1, ids=tuple(range(64)),
                                                                   lps=tuple(range(64))),
                             sibs=tuple([bytes(32)] * 32))
    fresh = PoolChain(n_validators=6)
    fresh.verify_by(0, 1)
    (r,) = fresh.send(fresh.challenge_tx(OUTSIDER, too_big))
    assert (r.error or "").startswith("auction-bad-evidence") and "over" in (r.error or "")
    past_end = dataclasses.replace(fresh.opening(3), fp=dataclasses.replace(fresh.opening(3).fp, pos=POOL_TOKENS))
    (r,) = fresh.send(fresh.challenge_tx(OUTSIDER, past_end))
    assert (r.error or "").startswith("auction-bad-evidence")
    assert L.load_dispute(pool_view(fresh.bank), L.dispute_address(fresh.qid)) is None


def test_the_wrong_token_fault_makes_a_leaf_that_contradicts_itself(tmp_path: object) -> None:
    """devnet/miner_faults.py ``wrong-token``: the re-signed commitment is valid, and the last
    leaf convicts its miner without any model."""
    from pathlib import Path

    from ambient_p2p.core.codec import decode, encode
    from ambient_p2p.core.messages import verify_message
    from ambient_p2p.devnet.miner_faults import swap_last_token
    from ambient_p2p.interop.formats.auction import MINERS, pool_proof
    from ambient_p2p.node.miner import _Job

    c = PoolChain(n_validators=3)
    q = c.query(c.qid)
    proof = pool_proof(MINERS[0], q)
    path = Path(str(tmp_path)) / "p.cbor"
    path.write_bytes(encode(proof))
    job = swap_last_token(MINERS[0], path, _Job(A.ResultParams(bytes(32), 1, 0, 1, 1, bytes(32), bytes(64)), [], 1.0))
    new = decode(path.read_bytes(), expected=pol.PolProof)
    cmt = new.commitment
    assert verify_message(cmt, MINERS[0].pubkey, "pol-commitment")
    assert job.output == list(new.output) and job.output[:-1] == list(proof.output)[:-1]
    assert job.result.output_hash == cmt.output_hash == pol.tokens_hash(new.output) != proof.commitment.output_hash
    last = pol.open_positions(new, [cmt.num_tokens - 1])[0]
    assert L.evidence_error(cmt, last, range(cmt.num_tokens)) is None
    assert "not among" in (L.self_contradiction(cmt, last.fp) or "")
    assert all(L.self_contradiction(cmt, o.fp) is None for o in pol.open_positions(new, range(cmt.num_tokens - 1)))
