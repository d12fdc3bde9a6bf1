"""Settlement of a sharded answer (spec/shard.md "Payment"): ``post_route`` records the
stages that served a posted result, and the Logit Pool's ``settle`` splits the payout and
the LStake work credit over them by layers x tokens, on a real bank with real signatures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import auction as A
from ambient_p2p.core import logit_pool as L
from ambient_p2p.core import shard as S
from ambient_p2p.core.bank import pool_view
from ambient_p2p.interop.formats.auction import MINERS, OUTSIDER, STAGES, RouteChain
from ambient_p2p.interop.formats.auction import POOL_CLEARING as CLEARING
from ambient_p2p.interop.formats.auction import POOL_TOKENS as NUM_TOKENS


def _verified(c: RouteChain) -> L.PoolAccount:
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    d = c.draw()
    assert d is not None
    c.ok(c.verdict_tx(c.kp(d.validators[0]), True), c.verdict_tx(c.kp(d.validators[1]), True))
    return d


def test_a_verified_sharded_answer_pays_each_stage_its_split_to_the_lamport() -> None:
    c = RouteChain()
    c.ok(c.route_tx())
    route = S.load_route(pool_view(c.bank), c.qid)
    assert route is not None and [(s.start, s.end) for s in route.stages] == [(0, 7), (7, 19), (19, 30)]
    _verified(c)
    q = c.query(c.qid)
    stages = [k.pubkey for k in STAGES[:3]]
    before = {k: c.bank.balance(k) for k in [*stages, q.winner, q.requester]}
    c.ok(c.settle_tx())
    assert c.query(c.qid).status == A.QueryStatus.FINALIZED_VERIFIED
    pay = CLEARING * NUM_TOKENS
    assert pay == 28_000
    # W = 30 x 40 = 1200; 28000 x (280, 480, 440) / 1200 = 6533.3, 11200, 10266.7 -> the leftover
    # lamport goes to the largest remainder (stage 2: 800 > stage 0: 400)
    got = [c.bank.balance(k) - before[k] for k in stages]
    assert got == [6_533, 11_200, 10_267] and sum(got) == pay
    assert c.bank.balance(q.winner) == before[q.winner]  # the driver is not paid the stages' work
    assert c.total() == c.start_total
    accts = [c.bank.work_account(k) for k in stages]
    toks = [a.tokens_served if a is not None else None for a in accts]
    # the same split of the 40 validated tokens: 9.33, 16, 14.67 -> 9, 16, 15
    assert toks == [9, 16, 15] and sum(toks) == NUM_TOKENS
    assert c.bank.work_account(q.winner) is None  # the driver served no layers: no work credited to it


def test_settle_must_list_the_route_and_an_unsharded_answer_no_extra_accounts() -> None:
    c = RouteChain()
    c.ok(c.route_tx())
    _verified(c)
    snapshot = dict(c.bank.accounts), dict(c.bank.auction_accounts)
    (r,) = c.send(c.settle_tx(with_route=False))
    assert (r.error or "").startswith("auction-bad-accounts")
    assert dict(c.bank.auction_accounts) == snapshot[1]
    u = RouteChain()  # no route posted: an extra account after the validators is refused
    _verified(u)
    d = u.draw()
    assert d is not None
    (r,) = u.send(u.settle_tx(drawn=[*d.validators, STAGES[0].pubkey]))
    assert (r.error or "").startswith("auction-bad-accounts")
    u.ok(u.settle_tx())  # and the unsharded answer pays the winner alone, as before
    assert u.query(u.qid).status == A.QueryStatus.FINALIZED_VERIFIED


def test_post_route_refusals_change_nothing() -> None:
    c = RouteChain()
    before = dict(c.bank.auction_accounts)
    cases = {
        "auction-not-winner": c.route_tx(winner=MINERS[1]),
        "auction-bad-route": c.route_tx(c.stage_cmts([(0, 7), (7, 19), (20, 30)])),
    }
    forged = c.stage_cmts(signers=[STAGES[0], STAGES[1], OUTSIDER])
    cases["auction-bad-route "] = c.route_tx(forged)
    for code, tx in cases.items():
        (r,) = c.send(tx)
        assert (r.error or "").startswith(code.strip()), (code, r.error)
        assert c.bank.auction_accounts == before
    c.ok(c.route_tx())
    (r,) = c.send(c.route_tx())
    assert (r.error or "").startswith("auction-route-exists")


def test_route_account_roundtrips_and_fits_the_snapshot_field() -> None:
    from ambient_p2p.ledger.meta import MAX_AUCTION_ACCOUNT_BYTES

    assert S.MAX_ROUTE_ACCOUNT_BYTES <= MAX_AUCTION_ACCOUNT_BYTES
    acct = S.RouteAccount(tuple(S.RouteStage(bytes([i]) * 32, i, i + 1, 0, bytes(32))
                                for i in range(S.MAX_SETTLED_ROUTE_STAGES)))
    assert S.RouteAccount.unpack(acct.pack()) == acct
    assert len(acct.pack()) == S.MAX_ROUTE_ACCOUNT_BYTES
    assert isinstance(A.decode_account(acct.pack()), S.RouteAccount)
    for bad in (acct.pack()[:-1], b"\x08\x00", b"\x08\x09" + bytes(9 * 69), b"\x07" + acct.pack()[1:]):
        with pytest.raises(ValueError, match="route account"):
            S.RouteAccount.unpack(bad)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**15), st.lists(st.tuples(st.integers(1, 64), st.integers(1, 4096)), min_size=1,
                                        max_size=S.MAX_SETTLED_ROUTE_STAGES))
def test_split_is_exact_and_proportional(total: int, work: list[tuple[int, int]]) -> None:
    parts = S.split_payment(total, work)
    assert sum(parts) == total and all(p >= 0 for p in parts)
    w = [a * b for a, b in work]
    for p, wi in zip(parts, w, strict=True):
        assert abs(p * sum(w) - total * wi) < sum(w)  # within one lamport of the exact share
