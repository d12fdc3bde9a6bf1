"""The miner's pure policy (core/miner_policy.py, spec/auction.md "Miner policy"): which
queries it bids on, when it reveals, closes, serves and posts, and that two policies
driving the real auction program (the vectors' ``Chain``: a bank per slot) end with the
cheaper miner's result posted at the second price and every lamport accounted for."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import auction as A
from ambient_p2p.core import auction_tx as T
from ambient_p2p.core import crypto, pol
from ambient_p2p.core import miner_policy as mp
from ambient_p2p.core.bank import LAMPORTS_PER_SIGNATURE
from ambient_p2p.interop.formats import auction as F

#: a vectors miner's balance after its registration fee
FUNDS_AFTER_REGISTER = F.FUNDS - LAMPORTS_PER_SIGNATURE
SLOT_MS = 800.0
FAST = mp.Speed(ms_per_prompt_token=1.0, ms_per_output_token=50.0)
ME = F.MINERS[0]


def _cfg(price: int = 100, model: bytes = F.MODEL_ID) -> mp.MinerConfig:
    return mp.MinerConfig(model_id=model, price_per_token=price, slot_ms=SLOT_MS)


def _book(price: int = 100, speed: mp.Speed = FAST, seed: int = 1, me: crypto.Keypair = ME) -> mp.MinerBook:
    return mp.MinerBook(_cfg(price), me.pubkey, speed, random.Random(seed))


def _query(**over: object) -> A.QueryAccount:
    base = A.QueryAccount(status=A.QueryStatus.OPEN, requester=F.REQUESTER.pubkey, nonce=1, model_id=F.MODEL_ID,
                          prompt_hash=bytes(32), prompt_tokens=40, max_output_tokens=32, max_price_per_token=1000,
                          temp_milli=0, sample_seed=bytes(32), request_slot=100, commit_end_slot=108,
                          reveal_end_slot=116, deadline_slot=175, escrow_lamports=42_000, bond_lamports=32_000)
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


QID = b"\x07" * 32
RICH = 10**12


def _bid(status: A.BidStatus, price: int = 0, bidder: bytes = ME.pubkey) -> A.BidAccount:
    return A.BidAccount(status, 0, QID, bidder, bytes(32), 32_000, 101, price)


# ---------------------------------------------------------------------------------------
# bid or not
# ---------------------------------------------------------------------------------------
def test_bids_on_an_open_query_for_its_model_with_a_fresh_salt() -> None:
    b = _book(price=100)
    acts = b.tick(101, {QID: _query()}, {}, RICH)
    assert len(acts) == 1 and isinstance(acts[0], mp.Commit)
    c = acts[0]
    assert (c.query, c.price, len(c.salt)) == (QID, 100, 32)
    other = _book(price=100, seed=2).tick(101, {QID: _query()}, {}, RICH)[0]
    assert isinstance(other, mp.Commit) and other.salt != c.salt  # salts come from the rng, not the key
    assert c.salt not in (bytes(32), ME.pubkey, QID)
    assert b.tick(102, {QID: _query()}, {}, RICH) == []  # one commit per query, not one per tick


@pytest.mark.parametrize(("over", "price", "speed", "balance", "why"), [
    ({"status": A.QueryStatus.AWARDED}, 100, FAST, RICH, "not-open"),
    ({"model_id": b"\x01" * 32}, 100, FAST, RICH, "other-model"),
    ({"max_price_per_token": 99}, 100, FAST, RICH, "price-above-max"),
    ({"commit_end_slot": 103}, 100, FAST, RICH, "commit-window-closing"),
    ({"bid_count": A.MAX_BIDS_PER_QUERY}, 100, FAST, RICH, "bids-full"),
    # 32 tokens x 2 s x safety 2 = 128 s > (175 - 116 - 4) x 0.8 s = 44 s
    ({}, 100, mp.Speed(1.0, 2000.0), RICH, "cannot-finish-in-time"),
    ({}, 100, FAST, 32_000 + mp.FEE_RESERVE_LAMPORTS - 1, "bond-unaffordable"),
])
def test_does_not_bid_and_says_why(over: dict[str, object], price: int, speed: mp.Speed, balance: int,
                                   why: str) -> None:
    q = _query(**over)
    assert mp.bid_refusal(_cfg(price), speed, q, 101, balance) == why
    b = _book(price=price, speed=speed)
    assert b.tick(101, {QID: q}, {}, balance) == []
    assert b.refused == {why: 1}
    assert b.tick(102, {QID: q}, {}, balance) == [] and b.refused == {why: 1}  # decided once


def test_the_time_rule_is_at_the_boundary() -> None:
    """Exactly fitting bids; one millisecond per token more does not."""
    q = _query()
    window = mp.serve_window_ms(_cfg(), q)
    assert window == (175 - 116 - 2 * mp.LAND_SLOTS) * SLOT_MS
    per = (window / mp.SPEED_SAFETY_FACTOR - 40 * 1.0) / 32
    assert mp.bid_refusal(_cfg(), mp.Speed(1.0, per), q, 101, RICH) is None
    assert mp.bid_refusal(_cfg(), mp.Speed(1.0, per + 1), q, 101, RICH) == "cannot-finish-in-time"


def test_a_backlog_of_bids_counts_against_the_time_rule() -> None:
    """Jobs run one at a time: a miner that already holds bids whose work fills the window
    does not bid again until one is served."""
    q = _query()
    window = mp.serve_window_ms(_cfg(), q)
    per = (window / 2.5 / mp.SPEED_SAFETY_FACTOR - 40 * 1.0) / 32  # a job is 0.4 of the window: two fit
    b = _book(speed=mp.Speed(1.0, per))
    qids = [bytes([i]) * 32 for i in (1, 2, 3)]
    assert [type(a) for a in b.tick(101, {qids[0]: q, qids[1]: q}, {}, RICH)] == [mp.Commit, mp.Commit]
    assert b.tick(102, {k: q for k in qids}, {}, RICH) == []
    assert b.refused == {"cannot-finish-in-time": 1}
    b.job_done(qids[0], 40, 32, 32 * per + 40)
    assert b.queued_ms() == pytest.approx(b.memos[qids[1]].est_ms)


def test_speed_follows_measurements() -> None:
    s = mp.Speed(1.0, 100.0).observe(prompt_tokens=10, output_tokens=10, elapsed_ms=10 + 10 * 200)
    assert s.ms_per_output_token == pytest.approx(0.7 * 100 + 0.3 * 200)
    assert mp.Speed(1.0, 100.0).observe(10, 0, 999) == mp.Speed(1.0, 100.0)


# ---------------------------------------------------------------------------------------
# reveal, close, serve, post
# ---------------------------------------------------------------------------------------
def test_the_bid_goes_through_reveal_close_serve_post() -> None:
    b = _book()
    commit = b.tick(101, {QID: _query()}, {}, RICH)[0]
    assert isinstance(commit, mp.Commit)
    committed = {QID: _bid(A.BidStatus.COMMITTED)}
    assert b.tick(105, {QID: _query(bid_count=1)}, committed, RICH) == []  # commit window: wait
    assert b.entered == 1
    rev = b.tick(108, {QID: _query(bid_count=1)}, committed, RICH)
    assert rev == [mp.Reveal(QID, commit.price, commit.salt)]  # the committed price and salt
    assert b.tick(109, {QID: _query(bid_count=1)}, committed, RICH) == []  # not every tick
    assert b.tick(108 + mp.RESEND_SLOTS, {QID: _query(bid_count=1)}, committed, RICH) == rev  # resent
    revealed = {QID: _bid(A.BidStatus.REVEALED, 100)}
    assert b.tick(115, {QID: _query(bid_count=1, revealed_count=1)}, revealed, RICH) == []
    assert b.tick(116, {QID: _query(bid_count=1, revealed_count=1)}, revealed, RICH) == [mp.Close(QID)]
    won = _query(status=A.QueryStatus.AWARDED, winner=ME.pubkey, clearing_price=1000)
    wbid = {QID: _bid(A.BidStatus.WON, 100)}
    assert b.tick(118, {QID: won}, wbid, RICH) == [mp.Serve(QID)]
    assert b.won == 1
    assert b.tick(119, {QID: won}, wbid, RICH) == []  # the job runs
    b.job_done(QID, 40, 20, 1000.0)
    assert b.tick(125, {QID: won}, wbid, RICH) == [mp.Post(QID)]
    assert b.tick(126, {QID: won}, wbid, RICH) == []
    assert b.tick(125 + mp.RESEND_SLOTS, {QID: won}, wbid, RICH) == [mp.Post(QID)]
    posted = dataclasses.replace(won, status=A.QueryStatus.RESULT_POSTED)
    assert b.tick(131, {QID: posted}, wbid, RICH) == []
    assert (b.served, b.memos) == (1, {})
    assert b.bonds_locked(wbid) == 32_000  # the winner's bond waits for the Logit Pool


def test_no_post_at_or_after_the_deadline() -> None:
    b = _book()
    b.tick(101, {QID: _query()}, {}, RICH)
    won = _query(status=A.QueryStatus.AWARDED, winner=ME.pubkey)
    b.tick(118, {QID: won}, {QID: _bid(A.BidStatus.WON, 100)}, RICH)
    b.job_done(QID, 40, 20, 1000.0)
    assert b.tick(175, {QID: won}, {QID: _bid(A.BidStatus.WON, 100)}, RICH) == []


def test_a_failed_job_is_served_again() -> None:
    b = _book()
    b.tick(101, {QID: _query()}, {}, RICH)
    won = _query(status=A.QueryStatus.AWARDED, winner=ME.pubkey)
    wb = {QID: _bid(A.BidStatus.WON, 100)}
    assert b.tick(118, {QID: won}, wb, RICH) == [mp.Serve(QID)]
    b.job_failed(QID)
    assert b.tick(119, {QID: won}, wb, RICH) == [mp.Serve(QID)]
    assert b.won == 1


def test_a_lost_auction_is_forgotten_and_counted() -> None:
    b = _book()
    b.tick(101, {QID: _query()}, {}, RICH)
    lost = _query(status=A.QueryStatus.AWARDED, winner=F.MINERS[1].pubkey)
    assert b.tick(118, {QID: lost}, {QID: _bid(A.BidStatus.REFUNDED, 100)}, RICH) == []
    assert (b.lost, b.won, b.memos) == (1, 0, {})


def test_a_commit_that_never_lands_is_resent_then_dropped() -> None:
    b = _book()
    c = b.tick(101, {QID: _query()}, {}, RICH)
    again = b.tick(101 + mp.RESEND_SLOTS, {QID: _query()}, {}, RICH)
    assert again == c  # same salt and price: the same commitment
    assert b.tick(108 + mp.RESEND_SLOTS, {QID: _query()}, {}, RICH) == []
    assert b.memos == {} and b.entered == 0


@settings(max_examples=200, deadline=None)
@given(slots=st.lists(st.integers(95, 200), min_size=1, max_size=40).map(sorted),
       stage=st.lists(st.sampled_from(["open", "committed", "revealed", "won", "lost", "posted"]), min_size=1,
                      max_size=40))
def test_actions_respect_the_windows(slots: list[int], stage: list[str]) -> None:
    """Whatever it sees, the policy never commits late, reveals outside the reveal window,
    posts at or after the deadline, or serves a query it did not win."""
    b = _book()
    for slot, s in zip(slots, stage * len(slots), strict=False):
        q = _query()
        bids: dict[bytes, A.BidAccount] = {}
        if s == "committed":
            bids = {QID: _bid(A.BidStatus.COMMITTED)}
        elif s == "revealed":
            bids = {QID: _bid(A.BidStatus.REVEALED, 100)}
        elif s in ("won", "posted"):
            st_ = A.QueryStatus.AWARDED if s == "won" else A.QueryStatus.RESULT_POSTED
            q, bids = _query(status=st_, winner=ME.pubkey), {QID: _bid(A.BidStatus.WON, 100)}
        elif s == "lost":
            q, bids = _query(status=A.QueryStatus.AWARDED, winner=F.MINERS[1].pubkey), \
                {QID: _bid(A.BidStatus.REFUNDED, 100)}
        for a in b.tick(slot, {QID: q}, bids, RICH):
            if isinstance(a, mp.Commit):
                assert slot + mp.LAND_SLOTS < q.commit_end_slot and q.status == A.QueryStatus.OPEN
            elif isinstance(a, mp.Reveal):
                assert q.commit_end_slot <= slot < q.reveal_end_slot
            elif isinstance(a, mp.Close):
                assert slot >= q.reveal_end_slot and q.status == A.QueryStatus.OPEN
            elif isinstance(a, mp.Serve | mp.Post):
                assert q.status == A.QueryStatus.AWARDED and q.winner == ME.pubkey and slot < q.deadline_slot
            if isinstance(a, mp.Post):
                b.memos.pop(QID, None)  # a post needs a done job: this harness never finishes one
            if isinstance(a, mp.Serve):
                b.job_done(QID, 40, 10, 500.0)


# ---------------------------------------------------------------------------------------
# two miners against the real auction program
# ---------------------------------------------------------------------------------------
def _result(winner: crypto.Keypair, q: A.QueryAccount) -> A.ResultParams:
    out = [5, 6, 7]
    return T.sign_result(winner, q, output_hash=pol.tokens_hash(out), num_tokens=len(out), tier=int(pol.Tier.FP32),
                         top_k=pol.TOP_K, vocab=49152, pol_root=b"\x09" * 32)


def test_two_policies_drive_the_program_to_a_posted_result_at_the_second_price() -> None:
    c = F.Chain()
    total = c.total()
    miners = {F.MINERS[0].pubkey: (F.MINERS[0], _book(price=300, seed=3, me=F.MINERS[0])),
              F.MINERS[1].pubkey: (F.MINERS[1], _book(price=200, seed=4, me=F.MINERS[1]))}
    slow = _book(price=1, speed=mp.Speed(1.0, 10_000.0), seed=5, me=F.MINERS[2])  # would win, cannot finish
    c.register(F.MINERS[0], F.MINERS[1], F.MINERS[2])
    p = F.request_params(deadline_slots=60, temp_milli=0, sample_seed=bytes(32))
    qid = c.request(p)
    before = c.bank.balance(F.REQUESTER.pubkey)
    for _ in range(80):
        slot = c.bank.slot + 1  # the slot the next transactions land in
        q = c.query(qid)
        raws: list[bytes] = []
        for pk, (kp, book) in miners.items():
            bid_data = c.bank.auction_data(A.bid_address(qid, pk))
            mine = {qid: A.BidAccount.unpack(bid_data)} if bid_data else {}
            for a in book.tick(slot, {qid: q}, mine, c.bank.balance(pk)):
                bh = c.blockhash
                if isinstance(a, mp.Commit):
                    raws.append(T.commit_bid_transaction(kp, qid, a.price, a.salt, bh))
                elif isinstance(a, mp.Reveal):
                    raws.append(T.reveal_bid_transaction(kp, qid, a.price, a.salt, bh))
                elif isinstance(a, mp.Close):
                    order = sorted((c.bid(qid, b) for b in miners if c.bank.auction_data(A.bid_address(qid, b))),
                                   key=lambda x: x.index)
                    raws.append(T.close_auction_transaction(kp, qid, q.requester, [x.bidder for x in order], bh))
                elif isinstance(a, mp.Serve):
                    book.job_done(qid, q.prompt_tokens, 3, 100.0)
                elif isinstance(a, mp.Post):
                    raws.append(T.post_result_transaction(kp, qid, _result(kp, q), bh))
        assert slow.tick(slot, {qid: q}, {}, RICH) == []
        c.send(*raws)
        if c.query(qid).status == A.QueryStatus.RESULT_POSTED:
            break
    q = c.query(qid)
    assert q.status == A.QueryStatus.RESULT_POSTED
    assert (q.winner, q.clearing_price) == (F.MINERS[1].pubkey, 300)  # lowest wins, pays the second price
    assert q.result_slot < q.deadline_slot
    assert c.bank.balance(F.REQUESTER.pubkey) == before  # the escrow waits; the requester sent nothing more
    assert c.bid(qid, F.MINERS[0].pubkey).status == A.BidStatus.REFUNDED
    assert c.total() == total  # no lamport created or lost
    assert slow.refused == {"cannot-finish-in-time": 1}
    assert c.bank.balance(q.winner) < FUNDS_AFTER_REGISTER - q.bond_lamports + 1  # the winner was paid nothing yet
