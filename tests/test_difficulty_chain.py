"""Dynamic difficulty in the chain (spec/difficulty.md "In the chain"): the difficulty account
of the auction program holds the epoch's knobs and observation; the draw reads the knobs, and
the first use in a later epoch applies the rule to the stored observation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import difficulty as D
from ambient_p2p.core import logit_pool as L
from ambient_p2p.interop.formats.auction import PoolChain


class View:
    """Balances and auction data in dicts, at a given epoch (a unit-test fake of the bank view)."""

    def __init__(self, epoch: int) -> None:
        self.data: dict[bytes, bytes] = {}
        self._epoch = epoch

    def auction_data(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def set_auction_data(self, key: bytes, data: bytes) -> None:
        self.data[key] = data

    def epoch(self) -> int:
        return self._epoch

    def balance(self, key: bytes) -> int:
        return 0

    def set_balance(self, key: bytes, lamports: int) -> None:
        raise AssertionError("the difficulty account moves no lamports")


def test_defaults_before_any_settlement() -> None:
    a = L.difficulty_at(View(3), 3)
    assert a == L.DifficultyAccount(D.Difficulty(D.DEFAULT_POSITIONS, D.DEFAULT_VALIDATORS), 3)


def test_an_epoch_with_cheating_doubles_the_positions_of_the_next() -> None:
    v = View(5)
    L.observe(v, results=10, rejected=2, drawn=30)  # type: ignore[arg-type]
    assert L.difficulty_at(v, 5).knobs == D.Difficulty(8, 3)  # in force until the epoch ends
    nxt = L.difficulty_at(v, 6)
    assert nxt.knobs == D.Difficulty(16, 3) and (nxt.results, nxt.rejected, nxt.drawn, nxt.missed) == (0, 0, 0, 0)
    assert L.difficulty_at(v, 9).knobs == D.Difficulty(16, 3)  # one step covers a gap of empty epochs
    L.observe(v, results=1)  # type: ignore[arg-type]
    stored = L.DifficultyAccount.unpack(v.data[L.difficulty_address()])
    assert stored.epoch == 5 and stored.results == 11  # the view is still at epoch 5


@settings(max_examples=60, deadline=None)
@given(st.integers(D.MIN_POSITIONS, D.MAX_POSITIONS), st.integers(D.MIN_VALIDATORS, D.MAX_VALIDATORS),
       st.integers(0, 40), st.integers(0, 40), st.integers(0, 80), st.integers(0, 80))
def test_rollover_is_the_rule_applied_to_the_stored_observation(positions: int, validators: int, results: int,
                                                                 rejected: int, drawn: int, missed: int) -> None:
    v = View(0)
    v.data[L.difficulty_address()] = L.DifficultyAccount(D.Difficulty(positions, validators), 0, results, rejected,
                                                          drawn, missed).pack()
    obs = D.EpochObservation(results, min(rejected, results), drawn, min(missed, drawn))
    want, _row = D.adjust(D.Difficulty(positions, validators), obs)
    assert L.difficulty_at(v, 1).knobs == want
    assert L.DifficultyAccount.unpack(v.data[L.difficulty_address()]).knobs == D.Difficulty(positions, validators)


def test_the_draw_and_the_quorum_follow_the_knobs_in_force() -> None:
    c = PoolChain(n_validators=7, knobs=(32, 5))
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    d = c.draw()
    assert d is not None and len(d.validators) == 5 and d.quorum == 3
    q = c.query(c.qid)
    assert all(len(d.positions_of(q, i)) == min(32, q.num_tokens) for i in range(5))
    for v in d.validators[:2]:
        assert c.verdict(c.kp(v), True) is None
    assert (c.settle() or "").startswith("auction-verify-open")
    assert c.verdict(c.kp(d.validators[2]), True) is None
    assert c.settle() is None
    acct = L.DifficultyAccount.unpack(c.bank.auction_data(L.difficulty_address()) or b"")
    assert (acct.results, acct.rejected, acct.drawn, acct.missed) == (1, 0, 5, 0)
    # the positions credited are the ones drawn
    w = c.bank.work_account(d.validators[0])
    assert w is not None and w.total_positions_validated == min(32, q.num_tokens)


def test_a_proven_fraud_counts_as_a_rejected_result() -> None:
    from ambient_p2p.interop.formats.auction import CHEAT_POSITION, OUTSIDER

    c = PoolChain(n_validators=6, cheat_at=CHEAT_POSITION)
    c.verify_by(0, 1)
    c.ok(c.challenge_tx(OUTSIDER, c.opening(CHEAT_POSITION)))
    acct = L.DifficultyAccount.unpack(c.bank.auction_data(L.difficulty_address()) or b"")
    assert (acct.results, acct.rejected) == (2, 1)
