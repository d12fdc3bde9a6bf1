"""Inflation rewards (normative text: spec/rewards.md; vectors: interop/rewards/).

Inflation starts at 8 %/year and tapers 15 %/year to a 1.5 % floor (Solana's defaults,
agave ``sdk/src/inflation.rs`` ``Inflation::total``: ``max(terminal, initial * (1 -
taper)^year)``), in integer arithmetic only: the rate of whole year ``y`` is iterated in
parts per billion, and within a year it moves linearly to the next year's rate. An epoch's
issuance is ``capitalization * rate * epoch_duration / year``; it is split between Logit
Pool work, leader terms and voting (``POOL_SPLIT_BPS``), and each pool among identities in
proportion to their units with a largest-remainder rule, so every pool pays out exactly its
amount: no lamport is created or lost. A pool nobody earned in is not issued.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .lstake import CREDIT_PER_VALIDATED_POSITION, CREDIT_PER_VALIDATED_TOKEN

#: Rates are in parts per billion per year.
RATE_DENOM_PPB = 1_000_000_000
INITIAL_RATE_PPB = 80_000_000  # 8 %/year (agave DEFAULT_INITIAL = 0.08)
TERMINAL_RATE_PPB = 15_000_000  # 1.5 %/year floor (agave DEFAULT_TERMINAL = 0.015)
TAPER_KEEP_PERCENT = 85  # each year keeps 85 % of the last (agave DEFAULT_TAPER = 0.15)
#: A year in microseconds: 365.242199 days (agave ``SECONDS_PER_YEAR`` in
#: ``sdk/src/timing.rs`` is 365.242_199 * 24 * 60 * 60).
YEAR_US = 31_556_925_993_600
BPS = 10_000
#: How an epoch's issuance is split: Logit Pool work, leader terms, voting (basis points;
#: the voting pool also takes the rounding remainder of the other two). Why in spec/rewards.md.
LOGIT_POOL_BPS = 6_000
LEADER_BPS = 2_000
VOTING_BPS = BPS - LOGIT_POOL_BPS - LEADER_BPS
POOLS = ("logit-pool", "leader", "voting")
_U64 = 1 << 64


class RewardsError(ValueError):
    pass


def year_rate_ppb(year: int) -> int:
    """The inflation rate at the start of whole year ``year`` (ppb/year): 8 %, tapered by
    ``rate * 85 // 100`` each year, never below 1.5 %."""
    if year < 0:
        raise RewardsError("year must be >= 0")
    rate = INITIAL_RATE_PPB
    for _ in range(year):
        if rate <= TERMINAL_RATE_PPB:
            break
        rate = rate * TAPER_KEEP_PERCENT // 100
    return max(TERMINAL_RATE_PPB, rate)


def epoch_duration_us(slots_per_epoch: int, slot_duration_us: int) -> int:
    if slots_per_epoch < 1 or slot_duration_us < 1:
        raise RewardsError("slots_per_epoch and slot_duration_us must be >= 1")
    return slots_per_epoch * slot_duration_us


def epochs_per_year(slots_per_epoch: int, slot_duration_us: int) -> int:
    """Whole epochs in a year (informative; issuance uses the exact epoch duration)."""
    return max(1, YEAR_US // epoch_duration_us(slots_per_epoch, slot_duration_us))


def epoch_rate_ppb(epoch: int, slots_per_epoch: int, slot_duration_us: int) -> int:
    """The rate (ppb/year) for ``epoch``: the start of the epoch is ``t = epoch *
    epoch_duration`` into the chain's life, in year ``y = t // YEAR_US``; the rate moves
    linearly from year ``y``'s rate to year ``y + 1``'s: ``r_y - (r_y - r_{y+1}) * (t mod
    YEAR_US) // YEAR_US``. Non-increasing in ``epoch``, never below the floor."""
    if epoch < 0:
        raise RewardsError("epoch must be >= 0")
    t = epoch * epoch_duration_us(slots_per_epoch, slot_duration_us)
    year, into = divmod(t, YEAR_US)
    r0, r1 = year_rate_ppb(year), year_rate_ppb(year + 1)
    return r0 - (r0 - r1) * into // YEAR_US


def epoch_issuance(capitalization: int, epoch: int, slots_per_epoch: int, slot_duration_us: int) -> int:
    """Lamports issued for ``epoch``: ``capitalization * rate * epoch_duration_us //
    (RATE_DENOM_PPB * YEAR_US)`` (agave: ``validator_rate * capitalization *
    epoch_duration_in_years``, truncated)."""
    if not 0 <= capitalization < _U64:
        raise RewardsError("capitalization must be a u64")
    rate = epoch_rate_ppb(epoch, slots_per_epoch, slot_duration_us)
    return capitalization * rate * epoch_duration_us(slots_per_epoch, slot_duration_us) // (RATE_DENOM_PPB * YEAR_US)


def pool_amounts(issuance: int) -> tuple[int, int, int]:
    """(Logit Pool, leader, voting) shares of ``issuance``; they sum to it exactly."""
    lp = issuance * LOGIT_POOL_BPS // BPS
    lead = issuance * LEADER_BPS // BPS
    return lp, lead, issuance - lp - lead


def split_pool(amount: int, units: Mapping[bytes, int]) -> dict[bytes, int]:
    """``amount`` lamports among identities in proportion to ``units``: each gets ``amount *
    u // U``; the lamports left (fewer than the number of earners) go one each to the
    largest remainders ``amount * u mod U``, ties to the smaller identity (bytes). Sums to
    ``amount`` exactly when anyone has units; empty when nobody has (the pool is not issued).
    Identities with zero payout are omitted."""
    if amount < 0 or any(u < 0 for u in units.values()):
        raise RewardsError("amounts and units must be >= 0")
    earners = {k: u for k, u in units.items() if u > 0}
    total = sum(earners.values())
    if total == 0:
        return {}
    pay = {k: amount * u // total for k, u in earners.items()}
    left = amount - sum(pay.values())
    order = sorted(earners, key=lambda k: (-(amount * earners[k] % total), k))
    for k in order[:left]:
        pay[k] += 1
    return {k: v for k, v in pay.items() if v > 0}


def logit_pool_units(tokens_served: int, positions_validated: int) -> int:
    """An identity's Logit Pool units in an epoch (the LStake credit units of that work)."""
    return tokens_served * CREDIT_PER_VALIDATED_TOKEN + positions_validated * CREDIT_PER_VALIDATED_POSITION


@dataclass(frozen=True)
class EpochRewards:
    """One epoch's rewards: issuance, each pool's amount and payouts, and what was not
    issued (pools nobody earned in). ``paid + unissued == issuance``."""

    epoch: int
    capitalization: int
    rate_ppb: int
    issuance: int
    pools: tuple[int, int, int]
    payouts: tuple[dict[bytes, int], dict[bytes, int], dict[bytes, int]]

    @property
    def paid(self) -> int:
        return sum(sum(p.values()) for p in self.payouts)

    @property
    def unissued(self) -> int:
        return self.issuance - self.paid

    def totals(self) -> dict[bytes, int]:
        """Lamports per identity, all pools together."""
        out: dict[bytes, int] = {}
        for p in self.payouts:
            for k, v in p.items():
                out[k] = out.get(k, 0) + v
        return out


def compute_epoch_rewards(
    *,
    epoch: int,
    capitalization: int,
    slots_per_epoch: int,
    slot_duration_us: int,
    pool_units: Mapping[bytes, int],
    leader_slots: Mapping[bytes, int],
    votes: Mapping[bytes, int],
    vote_weights: Mapping[bytes, int],
) -> EpochRewards:
    """Rewards of ``epoch``: the Logit Pool share by ``pool_units``, the leader share by
    slots led on the fork, the voting share by landed votes of voters with vote weight in
    the epoch (fees must not buy rewards, as they must not buy LStake)."""
    issuance = epoch_issuance(capitalization, epoch, slots_per_epoch, slot_duration_us)
    lp, lead, vote = pool_amounts(issuance)
    counted_votes = {k: v for k, v in votes.items() if vote_weights.get(k, 0) > 0}
    payouts = (split_pool(lp, pool_units), split_pool(lead, leader_slots), split_pool(vote, counted_votes))
    return EpochRewards(epoch, capitalization, epoch_rate_ppb(epoch, slots_per_epoch, slot_duration_us), issuance,
                        (lp, lead, vote), payouts)
