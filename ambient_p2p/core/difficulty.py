"""Dynamic difficulty of the Logit Pool (normative text: spec/difficulty.md; vectors:
interop/difficulty/).

Two knobs set per epoch: the positions each drawn validator opens per proof and the
validators drawn per query. After an epoch, the rule reads what the chain saw in it (results
settled, results rejected, verdicts drawn and verdicts missing) and moves the knobs within
bounds: multiplicatively up when cheating is observed (more positions first, then more
validators), additively down while a full epoch shows none, and never up while validators
are overloaded (missing verdicts), so difficulty cannot starve the pool of validators.

The exact escape probability of a miner that falsifies ``m`` of ``n`` tokens against ``k``
validators opening ``p`` distinct uniform positions each (core/pol.py
``select_positions``) is ``(C(n - m, p) / C(n, p))^k``: one failing opening suffices, since
a reject whose opening fails beats any number of accepts (issue 13, item 3).

Pure: integers and fractions only, no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb

from .pol import DEFAULT_CHECKED_POSITIONS, MAX_CHECKED_POSITIONS

#: Bounds of the positions each validator opens per proof.
MIN_POSITIONS = 4
MAX_POSITIONS = 64
#: Bounds of the validators drawn per query (3: Ambient's interface, quorum 2).
MIN_VALIDATORS = 3
MAX_VALIDATORS = 7
DEFAULT_POSITIONS = DEFAULT_CHECKED_POSITIONS  # 8
DEFAULT_VALIDATORS = 3
#: Reject rate (basis points of settled results) above which cheating counts as observed.
REJECT_HIGH_BPS = 100  # 1 %
#: Missing-verdict rate (basis points of drawn verdicts) above which validators count as overloaded.
MISSED_HIGH_BPS = 1_000  # 10 %
#: Fewer settled results than this in an epoch: too little evidence, no change.
MIN_RESULTS = 8
BPS = 10_000

assert MAX_POSITIONS <= MAX_CHECKED_POSITIONS


class DifficultyError(ValueError):
    pass


@dataclass(frozen=True)
class Difficulty:
    positions: int = DEFAULT_POSITIONS
    validators: int = DEFAULT_VALIDATORS

    def __post_init__(self) -> None:
        if not MIN_POSITIONS <= self.positions <= MAX_POSITIONS:
            raise DifficultyError(f"positions must be in {MIN_POSITIONS}..{MAX_POSITIONS}")
        if not MIN_VALIDATORS <= self.validators <= MAX_VALIDATORS:
            raise DifficultyError(f"validators must be in {MIN_VALIDATORS}..{MAX_VALIDATORS}")


@dataclass(frozen=True)
class EpochObservation:
    """What an epoch's settled queries showed (from the auction program's accounts)."""

    results: int  # results settled (accepted or rejected)
    rejected: int  # of which rejected (or later proven fraudulent)
    drawn_verdicts: int  # validator draws made
    missed_verdicts: int  # draws that posted no verdict in the window

    def __post_init__(self) -> None:
        if min(self.results, self.rejected, self.drawn_verdicts, self.missed_verdicts) < 0:
            raise DifficultyError("counts must be >= 0")
        if self.rejected > self.results or self.missed_verdicts > self.drawn_verdicts:
            raise DifficultyError("rejected <= results and missed <= drawn")


def adjust(d: Difficulty, obs: EpochObservation) -> tuple[Difficulty, str]:
    """The next epoch's difficulty and the rule row that chose it (spec/difficulty.md)."""
    if obs.results < MIN_RESULTS:
        return d, "too-few-results"
    reject_bps = obs.rejected * BPS // obs.results
    missed_bps = obs.missed_verdicts * BPS // obs.drawn_verdicts if obs.drawn_verdicts else 0
    overloaded = missed_bps > MISSED_HIGH_BPS
    if reject_bps > REJECT_HIGH_BPS:
        if overloaded:
            return d, "cheating-but-overloaded"
        if d.positions < MAX_POSITIONS:
            return Difficulty(min(MAX_POSITIONS, d.positions * 2), d.validators), "cheating-more-positions"
        if d.validators < MAX_VALIDATORS:
            return Difficulty(d.positions, d.validators + 1), "cheating-more-validators"
        return d, "at-maximum"
    if overloaded:
        if d.validators > MIN_VALIDATORS:
            return Difficulty(d.positions, d.validators - 1), "overloaded-fewer-validators"
        return Difficulty(max(MIN_POSITIONS, d.positions // 2), d.validators), "overloaded-fewer-positions"
    if obs.rejected == 0:
        if d.validators > MIN_VALIDATORS:
            return Difficulty(d.positions, d.validators - 1), "quiet-fewer-validators"
        return Difficulty(max(MIN_POSITIONS, d.positions - 1), d.validators), "quiet-fewer-positions"
    return d, "steady"


def falsified_positions(num_tokens: int, fraction_bps: int) -> int:
    """Tokens a miner falsifying ``fraction_bps`` of ``num_tokens`` changes: ``ceil(n * f)``
    (at least one token once the fraction is positive)."""
    if num_tokens < 1 or not 0 <= fraction_bps <= BPS:
        raise DifficultyError("need num_tokens >= 1 and 0 <= fraction_bps <= 10000")
    return -(-num_tokens * fraction_bps // BPS)


def escape_probability(num_tokens: int, falsified: int, positions: int, validators: int) -> Fraction:
    """Exact probability that none of ``validators`` validators, each opening
    ``min(positions, num_tokens)`` distinct uniform positions of ``num_tokens``, opens one of
    the ``falsified`` tokens: ``(C(n - m, p) / C(n, p))^k``."""
    if num_tokens < 1 or not 0 <= falsified <= num_tokens or positions < 1 or validators < 1:
        raise DifficultyError("need n >= 1, 0 <= m <= n, p >= 1, k >= 1")
    p = min(positions, num_tokens)
    one = Fraction(comb(num_tokens - falsified, p), comb(num_tokens, p))
    return one**validators
