"""The Logit Pool (spec/logit_pool.md): the draw, verdicts and settlement in the auction
program, on a real bank (core/bank.py) with real signatures and a real PoL commitment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import auction as A
from ambient_p2p.core import auction_tx as T
from ambient_p2p.core import logit_pool as L
from ambient_p2p.core import pol
from ambient_p2p.core.bank import pool_view
from ambient_p2p.interop.formats.auction import MINERS, VALIDATORS
from ambient_p2p.interop.formats.auction import POOL_CLEARING as CLEARING
from ambient_p2p.interop.formats.auction import POOL_TOKENS as NUM_TOKENS
from ambient_p2p.interop.formats.auction import PoolChain as _Base


class PoolChain(_Base):
    def bad_opening(self, v: bytes) -> pol.PolOpening:
        return self.evidence(v)


def drawn(n_validators: int = 5) -> tuple[PoolChain, L.PoolAccount]:
    """A chain with one posted result, advanced past its draw delay, and the round-0 draw a
    verdict would make there (the set-up of almost every test below)."""
    c = PoolChain(n_validators=n_validators)
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    d = c.draw()
    assert d is not None
    return c, d


def test_draw_is_pure_deterministic_and_excludes_the_miner() -> None:
    c = PoolChain()
    assert c.draw() is None  # the beacon slot is not an ancestor yet
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    d = c.draw()
    assert d is not None
    assert len(d.validators) == L.VALIDATORS_PER_QUERY == len(set(d.validators))
    assert c.miner.pubkey not in d.validators
    assert d.beacon_slot == c.query(c.qid).result_slot + L.DRAW_DELAY_SLOTS
    c.advance(3)
    assert c.draw() == d  # later banks derive the same draw
    q = c.query(c.qid)
    again = L.draw_validators(q.pol_commitment().hash(), c.qid, d.beacon_slot, d.beacon,
                              {v.pubkey: 1 for v in VALIDATORS[:5]}, [c.miner.pubkey], q.num_tokens)
    assert tuple(x.validator for x in again.validators) == d.validators
    for x in again.validators:
        assert len(x.positions) == L.POSITIONS_PER_VALIDATOR and list(x.positions) == sorted(set(x.positions))


def test_draw_is_lstake_weighted() -> None:
    heavy, light = VALIDATORS[0].pubkey, VALIDATORS[1].pubkey
    hits = 0
    for i in range(400):
        d = L.draw_validators(bytes(32), bytes(32), 1, hashlib.sha256(i.to_bytes(4, "little")).digest(),
                              {heavy: 99, light: 1}, [], 16, count=1)
        hits += d.validators[0].validator == heavy
    assert hits > 370  # 99% expected


def test_quorum_of_accepts_pays_the_clearing_price_to_the_lamport() -> None:
    c, d = drawn()
    q = c.query(c.qid)
    assert c.settle() == "auction-verify-open: no quorum yet and verdicts land until " + str(d.verify_end_slot)
    assert c.verdict(c.kp(d.validators[0]), True) is None
    err = c.send(T.verdict_transaction(MINERS[2], c.qid, True, None, c.blockhash))[0].error
    assert err is not None and err.startswith("auction-not-drawn")
    assert (c.verdict(c.kp(d.validators[0]), True) or "").startswith("auction-verdict-exists")
    assert c.verdict(c.kp(d.validators[1]), True) is None
    before = {k: c.bank.balance(k) for k in (q.requester, q.winner, *d.validators)}
    bond = c.bid(c.qid, q.winner).bond_lamports
    assert c.settle() is None
    q2 = c.query(c.qid)
    assert q2.status == A.QueryStatus.FINALIZED_VERIFIED and q2.escrow_lamports == 0
    pay = CLEARING * NUM_TOKENS
    # paid now; the bond stays in the bid account until the challenge window closes
    assert c.bank.balance(q.winner) - before[q.winner] == pay
    assert c.bid(c.qid, q.winner).status == A.BidStatus.HELD
    assert c.bank.balance(A.bid_address(c.qid, q.winner)) == bond
    fee_each = A.QUERY_FEE_LAMPORTS // 2
    assert c.bank.balance(q.requester) - before[q.requester] == q.escrow_lamports - pay - 2 * fee_each
    for v in d.validators[:2]:
        assert c.bank.balance(v) - before[v] == fee_each
    assert c.bank.balance(d.validators[2]) == before[d.validators[2]]
    assert c.total() == c.start_total
    assert (c.settle() or "").startswith("auction-wrong-status")
    pool = L.load_pool(pool_view(c.bank), L.pool_address(c.qid))
    assert pool is not None and pool.settled_slot == c.bank.slot - 1
    (r,) = c.send(c.close_dispute_tx())
    assert (r.error or "").startswith("auction-window-open")
    c.advance_to(pool.settled_slot + L.CHALLENGE_WINDOW_SLOTS)
    (r,) = c.send(c.close_dispute_tx())
    assert r.error is None
    assert c.bank.balance(q.winner) - before[q.winner] == pay + bond
    assert c.bid(c.qid, q.winner).status == A.BidStatus.REFUNDED
    assert c.bank.balance(A.bid_address(c.qid, q.winner)) == 0
    assert c.total() == c.start_total


def test_quorum_of_rejects_with_evidence_slashes_the_bond() -> None:
    c, d = drawn()
    q = c.query(c.qid)
    v0, v1 = c.kp(d.validators[0]), c.kp(d.validators[1])
    # evidence must be at one of the rejecter's own positions and prove membership
    other_pos = next(p for p in range(NUM_TOKENS) if p not in L.positions_for(q, d.beacon, v0.pubkey))
    wrong = pol.open_positions(c.proof, [other_pos])[0]
    assert (c.verdict(v0, False, wrong) or "").startswith("auction-bad-evidence")
    good = c.bad_opening(v0.pubkey)
    from dataclasses import replace
    forged = replace(good, fp=replace(good.fp, lps=(1, *good.fp.lps[1:])))
    assert (c.verdict(v0, False, forged) or "").startswith("auction-bad-evidence")
    raw = T.verdict_transaction(v0, c.qid, False, good, c.blockhash)
    assert c.send(raw)[0].error is None
    assert c.verdict(v1, False, c.bad_opening(v1.pubkey)) is None
    bond = c.bid(c.qid, q.winner).bond_lamports
    before = {k: c.bank.balance(k) for k in (q.requester, q.winner, *d.validators)}
    assert c.settle() is None
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_REJECTED
    assert c.bid(c.qid, q.winner).status == A.BidStatus.SLASHED
    assert c.bank.balance(q.winner) == before[q.winner]
    fee_each = A.QUERY_FEE_LAMPORTS // 2
    to_req = bond * L.SLASH_TO_REQUESTER_PERCENT // 100
    each = (bond - to_req) // 2
    assert c.bank.balance(q.requester) - before[q.requester] == q.escrow_lamports - 2 * fee_each + bond - 2 * each
    for v in (v0.pubkey, v1.pubkey):
        assert c.bank.balance(v) - before[v] == fee_each + each
    assert c.total() == c.start_total


def test_missing_verdicts_extend_the_draw_once_then_settle_on_what_arrived() -> None:
    c, d = drawn(7)
    assert c.verdict(c.kp(d.validators[0]), True) is None
    while c.bank.slot + 2 < d.verify_end_slot:
        c.advance(1)
    assert c.verdict(c.kp(d.validators[1]), True) is None  # in the last slot of the window
    assert c.bank.slot + 1 == d.verify_end_slot
    # quorum reached just in time: settles at once
    assert c.settle() is None
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_VERIFIED

    c, d = drawn(7)
    assert c.verdict(c.kp(d.validators[0]), True) is None
    while c.bank.slot + 1 < d.verify_end_slot:
        c.advance(1)
    assert (c.verdict(c.kp(d.validators[1]), True) or "").startswith("auction-verify-closed")
    assert c.settle() is None  # extension
    d2 = c.draw()
    assert d2 is not None and d2.round == 1 and len(d2.validators) == 6
    assert set(d2.validators[3:]).isdisjoint(d.validators) and c.miner.pubkey not in d2.validators
    assert c.query(c.qid).status == A.QueryStatus.RESULT_POSTED
    assert (c.verdict(c.kp(d.validators[1]), True) or "").startswith("auction-verify-closed")
    assert c.verdict(c.kp(d2.validators[3]), True) is None
    assert c.settle() is None  # quorum across the rounds: 2 accepts
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_VERIFIED
    assert c.total() == c.start_total


def test_a_late_extension_gets_its_own_full_window() -> None:
    """spec/logit_pool.md "Instructions", settle: an extension drawn by a settle that lands
    long after ``verify_end_slot`` keeps its beacon (the first slot at or after the old
    ``verify_end_slot``: the draw does not depend on when settle lands) but its window counts
    from the settle's slot, so its validators are not slashed as absent for a window that was
    over before they could know they were drawn."""
    c, d = drawn(7)
    assert c.verdict(c.kp(d.validators[0]), True) is None
    late = d.verify_end_slot + 3 * L.VERIFY_WINDOW_SLOTS
    c.advance_to(late)
    assert c.settle() is None  # the extension, drawn at slot `late`
    d2 = c.draw()
    assert d2 is not None and d2.round == 1 and len(d2.validators) == 6
    assert d.verify_end_slot <= d2.beacon_slot < d.verify_end_slot + L.VERIFY_WINDOW_SLOTS
    assert d2.verify_end_slot == late + L.VERIFY_WINDOW_SLOTS
    # past the beacon's window, inside its own: the fresh validators are not closed out
    c.advance_to(d2.beacon_slot + L.VERIFY_WINDOW_SLOTS + 1)
    assert (c.settle() or "").startswith("auction-verify-open")
    assert c.verdict(c.kp(d2.validators[3]), True) is None
    c.advance_to(d2.verify_end_slot)
    assert (c.verdict(c.kp(d2.validators[4]), True) or "").startswith("auction-verify-closed")
    assert c.settle() is None  # an accept in each round: the quorum, verified
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_VERIFIED
    acct = c.bank.work_account(d2.validators[3])
    assert acct is not None and acct.slashes == 0 and acct.positions_validated > 0
    assert c.total() == c.start_total


def test_nobody_answers_twice_then_the_requester_is_made_whole() -> None:
    c, d = drawn(4)
    while c.bank.slot < d.verify_end_slot:
        c.advance(1)
    assert c.settle() is None
    d2 = c.draw()
    assert d2 is not None and len(d2.validators) == 4  # only one fresh validator left
    while c.bank.slot < d2.verify_end_slot:
        c.advance(1)
    q = c.query(c.qid)
    bond = c.bid(c.qid, q.winner).bond_lamports
    before = c.bank.balance(q.requester), c.bank.balance(q.winner)
    assert c.settle() is None
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_REJECTED
    assert c.bid(c.qid, q.winner).status == A.BidStatus.REFUNDED
    assert c.bank.balance(q.requester) - before[0] == q.escrow_lamports
    assert c.bank.balance(q.winner) - before[1] == bond
    assert c.total() == c.start_total


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["accept", "reject", "none", "unavailable"]), min_size=3, max_size=3),
       st.lists(st.sampled_from(["accept", "reject", "none", "unavailable"]), min_size=3, max_size=3))
def test_every_verdict_mix_conserves_lamports_and_finalizes(first: list[str], second: list[str]) -> None:
    c = PoolChain(n_validators=7)
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    burned = c.bank.balance(A.INCINERATOR_ID)
    for rnd, plan in enumerate((first, second)):
        d = c.draw()
        assert d is not None
        for v, what in zip(d.validators[3 * rnd:], plan, strict=False):
            if what == "unavailable":
                assert c.send(T.verdict_transaction(c.kp(v), c.qid, False, None, c.blockhash,
                                                    unavailable=True))[0].error is None
            elif what != "none":
                ev = None if what == "accept" else c.bad_opening(v)
                assert c.verdict(c.kp(v), what == "accept", ev) is None
        if c.settle() is None and c.query(c.qid).status != A.QueryStatus.RESULT_POSTED:
            break
        while c.bank.slot < d.verify_end_slot:
            c.advance(1)
        assert c.settle() is None
        if c.query(c.qid).status != A.QueryStatus.RESULT_POSTED:
            break
    q = c.query(c.qid)
    assert q.status in (A.QueryStatus.FINALIZED_VERIFIED, A.QueryStatus.FINALIZED_REJECTED)
    assert q.escrow_lamports == 0 and c.bank.balance(c.qid) == 0
    bid = c.bid(c.qid, q.winner)
    if q.status == A.QueryStatus.FINALIZED_VERIFIED:  # the bond waits out the challenge window
        assert bid.status == A.BidStatus.HELD and c.bank.balance(A.bid_address(c.qid, q.winner)) == bid.bond_lamports
        pool = L.load_pool(pool_view(c.bank), L.pool_address(c.qid))
        assert pool is not None
        c.advance_to(pool.settled_slot + L.CHALLENGE_WINDOW_SLOTS)
        assert c.send(c.close_dispute_tx())[0].error is None
    final = L.load_pool(pool_view(c.bank), L.pool_address(c.qid))
    assert final is not None
    checked = final.count(L.ACCEPT) + final.count(L.REJECT)
    withheld = checked == 0 and final.count(L.UNAVAILABLE) >= final.quorum
    # the bond burns exactly when nobody checked and a quorum said the data was unavailable
    assert (c.bank.balance(A.INCINERATOR_ID) - burned == bid.bond_lamports) == withheld
    if checked == 0:
        assert bid.status == (A.BidStatus.SLASHED if withheld else A.BidStatus.REFUNDED)
    assert c.bank.balance(A.bid_address(c.qid, q.winner)) == 0
    assert c.total() == c.start_total


def test_a_quorum_of_unavailable_verdicts_burns_the_bond_and_slashes_the_miner() -> None:
    """spec/logit_pool.md "Unavailable data": two voters besides the miner are both drawn and
    say the answer could not be obtained (devnet fault wrong-output); nobody is fresh for the
    extension: the requester gets the whole escrow back, the bond goes to the incinerator,
    the miner's work is slashed, and the validators that said so are not slashed as absent."""
    c, d = drawn(2)
    assert len(d.validators) == 2
    for v in d.validators:
        assert c.send(T.verdict_transaction(c.kp(v), c.qid, False, None, c.blockhash, unavailable=True))[0].error is None
    assert (c.settle() or "").startswith("auction-verify-open")  # unavailable verdicts decide nothing early
    c.advance_to(d.verify_end_slot + 1)
    q = c.query(c.qid)
    bond = c.bid(c.qid, q.winner).bond_lamports
    before = (c.bank.balance(q.requester), c.bank.balance(q.winner), c.bank.balance(A.INCINERATOR_ID))
    assert c.settle() is None
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_REJECTED
    assert c.bid(c.qid, q.winner).status == A.BidStatus.SLASHED
    assert c.bank.balance(q.requester) - before[0] == q.escrow_lamports
    assert c.bank.balance(q.winner) == before[1]
    assert c.bank.balance(A.INCINERATOR_ID) - before[2] == bond
    w = c.bank.work_account(q.winner)
    assert w is not None and w.slashes == 1
    for v in d.validators:
        acct = c.bank.work_account(v)
        assert acct is None or acct.slashes == 0
    assert c.total() == c.start_total


def test_one_unavailable_verdict_is_no_quorum_and_an_accept_beats_it() -> None:
    # one unavailable, one absent: refunded as when nobody checked
    c, d = drawn(2)
    assert c.send(T.verdict_transaction(c.kp(d.validators[0]), c.qid, False, None, c.blockhash,
                                        unavailable=True))[0].error is None
    c.advance_to(d.verify_end_slot + 1)
    q = c.query(c.qid)
    assert c.settle() is None
    assert c.bid(c.qid, q.winner).status == A.BidStatus.REFUNDED
    absent = c.bank.work_account(d.validators[1])
    assert absent is not None and absent.slashes == 1  # the absent one, not the one that said unavailable
    # one accept and one unavailable: someone checked it, verified on what arrived
    c, d = drawn(2)
    assert c.verdict(c.kp(d.validators[0]), True) is None
    assert c.send(T.verdict_transaction(c.kp(d.validators[1]), c.qid, False, None, c.blockhash,
                                        unavailable=True))[0].error is None
    c.advance_to(d.verify_end_slot + 1)
    assert c.settle() is None
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_VERIFIED


def test_malformed_verdict_data_is_refused() -> None:
    c, d = drawn()
    v = c.kp(d.validators[0])
    # (verdict byte 2 is "unavailable" without evidence: with evidence, or byte 3, it is refused)
    for data in (b"\x07\x00\x00\x00", b"\x07\x00\x00\x00\x03", b"\x07\x00\x00\x00\x01\x00",
                 b"\x07\x00\x00\x00\x02\x00", b"\x07\x00\x00\x00\x00", b"\x07\x00\x00\x00\x00garbage"):
        metas = [(v.pubkey, True, True), (c.qid, False, True), (L.pool_address(c.qid), False, True)]
        (r,) = c.send(T.auction_transaction([v], metas, data, c.blockhash))
        assert r.error is not None and r.error.split(":")[0] in ("auction-bad-data", "auction-bad-evidence"), r.error
    assert c.bank.auction_data(L.pool_address(c.qid)) is None  # nothing written


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_validators(n: int) -> None:
    _c, d = drawn(n)
    assert len(d.validators) == n


def test_settlement_credits_and_slashes_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The program calls the bank's work credit (``Bank.credit_work``/``slash_work``, the
    credit helper's) once per settled party, and only when the instruction succeeds."""
    from ambient_p2p.core.bank import Bank

    log: list[tuple[str, bytes, object]] = []
    monkeypatch.setattr(Bank, "credit_work", lambda self, ident, *, tokens_served=0, positions_validated=0:
                        log.append(("credit", ident, (tokens_served, positions_validated))), raising=False)
    monkeypatch.setattr(Bank, "slash_work", lambda self, ident, reason: log.append(("slash", ident, reason)),
                        raising=False)
    c, d = drawn()
    for v in d.validators[:2]:
        assert c.verdict(c.kp(v), False, c.bad_opening(v)) is None
    assert log == []
    assert c.settle() is None
    assert ("slash", c.miner.pubkey, "result-rejected") in log
    assert {x[1] for x in log if x[0] == "credit"} == set(d.validators[:2])
    assert all(x[2] == (0, L.POSITIONS_PER_VALIDATOR) for x in log if x[0] == "credit")
    log.clear()
    c, d = drawn()
    assert c.verdict(c.kp(d.validators[0]), True) is None
    c.advance_to(d.verify_end_slot + 1)
    assert c.settle() is None  # extension: the two absent validators lose credit
    assert sorted(x for x in log) == sorted(("slash", v, "absent") for v in d.validators[1:])


def test_the_proof_store_serves_openings_by_commitment(tmp_path: Path) -> None:
    """node/validator_pool.py ProofStore: what ``/ambient/pol-open/1`` answers from the
    miner's ``DATA_DIR/pol-proofs``."""
    from ambient_p2p.core.codec import decode, encode
    from ambient_p2p.node.validator_pool import ProofStore

    c = PoolChain()
    (tmp_path / "pol-proofs").mkdir()
    (tmp_path / "pol-proofs" / f"{c.qid.hex()}.cbor").write_bytes(encode(c.proof))
    (tmp_path / "pol-proofs" / "junk.cbor").write_bytes(b"not a proof")
    store = ProofStore(tmp_path)
    h = c.proof.commitment.hash()
    got = store.openings(h, (3, 0, 39))
    assert got is not None
    ops = [decode(b, expected=pol.PolOpening) for b in got]
    assert [o.fp.pos for o in ops] == [3, 0, 39]
    assert all(L.evidence_error(c.proof.commitment, o, [3, 0, 39]) is None for o in ops)
    assert store.openings(h, (40,)) is None  # beyond the proof
    assert store.openings(bytes(32), (0,)) is None and store.unknown == 1


def test_pol_draw_user_errors_are_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    for argv, want in ((["xyz"], "QUERY must be a base58 query id"),
                       (["11111111111111111111111111111111", "--node", str(tmp_path)], "no node is running in")):
        r = subprocess.run([sys.executable, "-m", "ambient_p2p", "pol", "draw", *argv], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and r.stdout == "", r
        assert r.stderr.startswith("error: ") and want in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_audit_pick_is_a_share_fixed_by_the_beacon_key_and_query() -> None:
    """spec/logit_pool.md "The node side", audits: which verified results a validator that was
    not drawn re-checks is ``audit_percent`` of them, by a hash of the round-0 beacon, its key
    and the query (the same answer on every call, another for another key); none without the
    model (the always-accept fault loads none)."""
    from types import SimpleNamespace

    from ambient_p2p.node.validator_pool import DEFAULT_AUDIT_PERCENT, PoolValidator

    qids = [hashlib.sha256(b"q%d" % i).digest() for i in range(2000)]
    beacon = hashlib.sha256(b"beacon").digest()

    def pool(key: int, percent: int, model: bool = True) -> PoolValidator:
        p = PoolValidator(SimpleNamespace(kp=VALIDATORS[key]), None, audit_percent=percent)  # type: ignore[arg-type]
        p.lm = object() if model else None  # type: ignore[assignment]
        return p

    a, b = pool(0, DEFAULT_AUDIT_PERCENT), pool(1, DEFAULT_AUDIT_PERCENT)
    picked = {q for q in qids if a.audits(q, beacon)}
    assert 100 <= len(picked) <= 300  # 10 % of 2000, binomial sd 13
    assert picked == {q for q in qids if a.audits(q, beacon)}
    assert picked != {q for q in qids if b.audits(q, beacon)}
    assert picked != {q for q in qids if a.audits(q, hashlib.sha256(b"other").digest())}
    assert all(pool(0, 100).audits(q, beacon) for q in qids[:50])
    assert not any(pool(0, 0).audits(q, beacon) for q in qids[:50])
    assert not any(pool(0, 100, model=False).audits(q, beacon) for q in qids[:50])
    with pytest.raises(ValueError, match="audit_percent must be "):
        pool(0, 101)


def test_pool_audit_flag_user_errors_are_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    for argv, want in ((["--pool-audit-percent", "5"], "--pool-audit-percent needs --logit-pool"),
                       (["--validator", "--logit-pool", "--pool-audit-percent", "101"], "must be 0..100")):
        r = subprocess.run([sys.executable, "-m", "ambient_p2p", "run", "--data-dir", str(tmp_path / "d"), *argv],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stdout == "", r
        assert r.stderr.startswith("error: ") and want in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_lost_beacon_draws_nobody_and_the_query_still_settles() -> None:
    """spec/logit_pool.md "Lost beacons": a result nobody drew while its beacon's blockhash
    was kept (an old snapshot's RESULT_POSTED query, or every validator away for 300 slots)
    is no longer stuck: a settle finds nobody drawn and refunds as when nobody checked; a
    verdict finds its signer not drawn."""
    c = PoolChain(n_validators=3)
    q = c.query(c.qid)
    after = q.result_slot + L.DRAW_DELAY_SLOTS
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    live = c.draw()
    assert live is not None and len(live.validators) == 3
    c.advance_to(after + L.BEACON_LOST_SLOTS + 5)
    assert c.draw() is None  # the blockhash is gone; a draw asked without a slot says "not ready"
    assert (c.verdict(c.kp(live.validators[0]), True) or "").startswith("auction-not-drawn")
    before = c.bank.balance(q.requester), c.bank.balance(q.winner)
    bond = c.bid(c.qid, q.winner).bond_lamports
    (r,) = c.send(T.settle_transaction(VALIDATORS[0], q, c.qid, list(live.validators), c.blockhash))
    assert (r.error or "").startswith("auction-bad-accounts")  # the old draw no longer holds
    assert c.send(T.settle_transaction(VALIDATORS[0], q, c.qid, [], c.blockhash))[0].error is None
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_REJECTED
    assert c.bid(c.qid, q.winner).status == A.BidStatus.REFUNDED
    assert c.bank.balance(q.requester) - before[0] == q.escrow_lamports
    assert c.bank.balance(q.winner) - before[1] == bond
    assert c.total() == c.start_total
    # a draw written while its beacon was known stands: the query settles on its verdicts
    k = PoolChain(n_validators=3)
    k.advance(L.DRAW_DELAY_SLOTS + 1)
    d = k.draw()
    assert d is not None
    assert k.verdict(k.kp(d.validators[0]), True) is None and k.verdict(k.kp(d.validators[1]), True) is None
    k.advance_to(after + L.BEACON_LOST_SLOTS + 5)
    assert k.settle() is None and k.query(k.qid).status == A.QueryStatus.FINALIZED_VERIFIED
