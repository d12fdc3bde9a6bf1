"""Inflation rewards (spec/rewards.md): the schedule's shape, exact conservation of every
split, and the bank's epoch-boundary hook."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import rewards as R
from ambient_p2p.core.auction import INCINERATOR_ID
from ambient_p2p.core.bank import Bank
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.ledger.snapshot import bank_to_snapshot, snapshot_to_bank

IDS = sorted(Keypair.deterministic("test/rewards", i).pubkey for i in range(6))
LEADER = b"L" * 32
SLOT_US = 400_000
SPE = 8


def test_year_rates_are_solanas_truncated_to_ppb() -> None:
    rates = [R.year_rate_ppb(y) for y in range(14)]
    assert rates[:4] == [80_000_000, 68_000_000, 57_800_000, 49_130_000]
    assert rates[10] == 15_749_950 and rates[11:] == [R.TERMINAL_RATE_PPB] * 3
    for y, r in enumerate(rates):  # within a ppb-truncation of 8 % x 0.85^y, floored at 1.5 %
        exact = max(0.015, 0.08 * 0.85**y) * 1e9
        assert abs(r - exact) <= y + 1


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**6), st.integers(1, 10**7), st.integers(0, 10**7), st.integers(0, 10**4))
def test_epoch_rate_is_monotone_to_its_floor(spe: int, slot_us: int, epoch: int, step: int) -> None:
    a = R.epoch_rate_ppb(epoch, spe, slot_us)
    b = R.epoch_rate_ppb(epoch + step, spe, slot_us)
    assert R.TERMINAL_RATE_PPB <= b <= a <= R.INITIAL_RATE_PPB
    if epoch * spe * slot_us >= 11 * R.YEAR_US:
        assert a == R.TERMINAL_RATE_PPB


@settings(max_examples=200, deadline=None)
@given(st.integers(0, (1 << 64) - 1), st.integers(0, 10**6), st.integers(1, 10**6), st.integers(1, 10**7))
def test_issuance_is_the_rate_times_capitalization_times_duration(cap: int, epoch: int, spe: int, slot_us: int) -> None:
    i = R.epoch_issuance(cap, epoch, spe, slot_us)
    rate = R.epoch_rate_ppb(epoch, spe, slot_us)
    # exact rational arithmetic: a float loses more than a lamport at 2^64 lamports
    exact = Fraction(cap * rate * spe * slot_us, R.RATE_DENOM_PPB * R.YEAR_US)
    assert i == int(cap * rate * spe * slot_us // (R.RATE_DENOM_PPB * R.YEAR_US))
    assert exact - 1 < i <= exact


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1 << 64), st.dictionaries(st.sampled_from(IDS), st.integers(0, 10**12), max_size=6))
def test_a_split_pays_exactly_its_amount_fairly(amount: int, units: dict[bytes, int]) -> None:
    pay = R.split_pool(amount, units)
    total = sum(u for u in units.values() if u > 0)
    if total == 0:
        assert pay == {}
        return
    assert sum(pay.values()) == amount  # no lamport created or lost
    for k, u in units.items():
        exact = amount * u / total
        assert abs(pay.get(k, 0) - exact) < 1 + 1e-9 * exact  # at most one lamport of rounding
        if u == 0:
            assert k not in pay


@settings(max_examples=200, deadline=None)
@given(st.integers(0, (1 << 64) - 1), st.integers(0, 10**7),
       *(st.dictionaries(st.sampled_from(IDS), st.integers(0, 10**9), max_size=6) for _ in range(4)))
def test_an_epoch_split_sums_exactly_to_its_issuance(cap: int, epoch: int, pool: dict[bytes, int],
                                                     lead: dict[bytes, int], votes: dict[bytes, int],
                                                     weights: dict[bytes, int]) -> None:
    r = R.compute_epoch_rewards(epoch=epoch, capitalization=cap, slots_per_epoch=SPE, slot_duration_us=SLOT_US,
                                pool_units=pool, leader_slots=lead, votes=votes, vote_weights=weights)
    assert sum(r.pools) == r.issuance and r.paid + r.unissued == r.issuance and r.unissued >= 0
    for amount, units, paid in zip(r.pools, (pool, lead, {k: v for k, v in votes.items() if weights.get(k, 0)}),
                                   r.payouts, strict=True):
        assert sum(paid.values()) == (amount if any(u > 0 for u in units.values()) else 0)
    assert set(r.payouts[2]) <= {k for k, w in weights.items() if w > 0}  # fees buy no vote rewards
    assert sum(r.totals().values()) == r.paid


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(R.RewardsError):
        R.epoch_issuance(1 << 64, 0, SPE, SLOT_US)
    with pytest.raises(R.RewardsError):
        R.epoch_rate_ppb(-1, SPE, SLOT_US)
    with pytest.raises(R.RewardsError):
        R.epoch_rate_ppb(0, 0, SLOT_US)
    with pytest.raises(R.RewardsError):
        R.split_pool(10, {IDS[0]: -1})


# -- the bank's epoch-boundary hook ----------------------------------------------------
def _epoch_one_chain() -> Bank:
    """A bank at the last slot of epoch 0: IDS[0] led slots 1-4 and IDS[1] 5-7, IDS[2]
    served tokens and IDS[3] validated positions; the incinerator holds burned lamports."""
    g = Bank.genesis(b"G" * 32, {IDS[0]: 10**15, IDS[1]: 10**15, INCINERATOR_ID: 10**15}, LEADER, b"G" * 32,
                     slots_per_epoch=SPE)
    bank = g
    for slot in range(1, SPE):
        bank = bank.child(slot, IDS[0] if slot <= 4 else IDS[1])
        if slot == 3:
            bank.credit_work(IDS[2], tokens_served=64)
            bank.credit_work(IDS[3], positions_validated=4)
        bank.freeze(bytes([slot]) * 32)
    return bank


def test_the_first_bank_of_an_epoch_pays_the_closing_epoch_exactly() -> None:
    parent = _epoch_one_chain()
    assert parent.tally_epoch == 0 and parent.epoch_tally == {IDS[0]: (4, 0), IDS[1]: (3, 0)}
    b = parent.child(SPE, IDS[0])
    before = dict(b.accounts)
    r = b.pay_epoch_rewards(SLOT_US, {IDS[0]: 1})
    assert r.epoch == 0 and r.capitalization == 2 * 10**15  # the incinerator is out of circulation
    assert r.issuance == R.epoch_issuance(2 * 10**15, 0, SPE, SLOT_US) > 0
    # logit pool 64 : 4 x 2 units, leaders 4 : 3, nobody voted: the voting share is not issued
    assert r.payouts[0] == R.split_pool(r.pools[0], {IDS[2]: 64, IDS[3]: 4 * R.CREDIT_PER_VALIDATED_POSITION})
    assert R.CREDIT_PER_VALIDATED_POSITION == 2
    assert r.payouts[1] == R.split_pool(r.pools[1], {IDS[0]: 4, IDS[1]: 3}) and r.payouts[2] == {}
    assert r.unissued == r.pools[2]
    assert sum(b.accounts.values()) - sum(before.values()) == r.paid  # minted = paid, to the lamport
    for k, v in r.totals().items():
        assert b.balance(k) == before.get(k, 0) + v
        acc = b.work_account(k)
        assert acc is not None and acc.total_rewards_lamports == v
    assert b.epoch_tally == {} and b.tally_epoch == 1
    with pytest.raises(ValueError, match="first bank"):
        b.pay_epoch_rewards(SLOT_US, {})
    # the payment is in the bank hash, and a snapshot of the result continues identically
    plain = parent.child(SPE, IDS[0])
    assert b.freeze(b"x" * 32) != plain.freeze(b"x" * 32)
    assert b.tally_epoch == 1 and b.epoch_tally == {IDS[0]: (1, 0)}
    r2 = snapshot_to_bank(bank_to_snapshot(b))
    assert r2.state_hash() == b.state_hash()


def test_mid_epoch_and_epochless_banks_refuse_to_pay() -> None:
    parent = _epoch_one_chain()
    mid = parent.child(SPE, IDS[0])  # first bank of epoch 1: allowed
    mid.pay_epoch_rewards(SLOT_US, {})
    mid.freeze(b"m" * 32)
    nxt = mid.child(SPE + 1, IDS[0])  # still epoch 1: nothing to pay
    with pytest.raises(ValueError, match="first bank"):
        nxt.pay_epoch_rewards(SLOT_US, {})
    plain = Bank.genesis(b"G" * 32, {IDS[0]: 10}, LEADER, b"G" * 32).child(100, LEADER)
    with pytest.raises(ValueError, match="first bank"):
        plain.pay_epoch_rewards(SLOT_US, {})
    assert plain.epoch == 0


def test_an_unpaid_tally_is_dropped_at_the_next_epochs_freeze() -> None:
    parent = _epoch_one_chain()
    b = parent.child(SPE + 1, IDS[1])
    b.freeze(b"y" * 32)  # nobody called the hook: epoch 0's tally is never paid on this fork
    assert b.tally_epoch == 1 and b.epoch_tally == {IDS[1]: (1, 0)}


def test_child_bank_pays_exactly_once_per_epoch_on_a_fork() -> None:
    from ambient_p2p.core.bank import child_bank

    asked: list[int] = []

    def weights(e: int) -> dict[bytes, int]:
        asked.append(e)
        return {IDS[0]: 1, IDS[1]: 1}

    g = Bank.genesis(b"G" * 32, {IDS[0]: 10**15}, LEADER, b"G" * 32, slots_per_epoch=SPE)
    bank, paid = g, []
    for slot in (1, 3, 7, 9, 12, 30):  # skips: epoch 2 has no slot on this fork
        bank = child_bank(bank, slot, IDS[slot % 2], SLOT_US, weights)
        paid.append(bank.epoch_rewards.epoch if bank.epoch_rewards else None)
        bank.freeze(bytes([slot]) * 32)
    assert paid == [None, None, None, 0, None, 1] and asked == [0, 1]
    with pytest.raises(ValueError, match="not known"):
        child_bank(bank, 40, IDS[0], SLOT_US, lambda _e: None)
