"""Dynamic difficulty (spec/difficulty.md): the rule stays in bounds and moves the right way,
the exact escape probability matches the chain's own position draw, and the bench command."""

from __future__ import annotations

import random
from fractions import Fraction
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import difficulty as D
from ambient_p2p.core.pol import select_positions

knobs = st.builds(D.Difficulty, st.integers(D.MIN_POSITIONS, D.MAX_POSITIONS),
                  st.integers(D.MIN_VALIDATORS, D.MAX_VALIDATORS))


@st.composite
def observations(draw: st.DrawFn) -> D.EpochObservation:
    results = draw(st.integers(0, 500))
    drawn = draw(st.integers(0, 2000))
    return D.EpochObservation(results, draw(st.integers(0, results)), drawn, draw(st.integers(0, drawn)))


@settings(max_examples=400, deadline=None)
@given(knobs, observations())
def test_the_rule_stays_in_bounds_and_moves_the_right_way(d: D.Difficulty, obs: D.EpochObservation) -> None:
    nxt, rule = D.adjust(d, obs)  # __post_init__ enforces the bounds
    harder = (nxt.positions, nxt.validators) > (d.positions, d.validators)
    easier = nxt.positions < d.positions or nxt.validators < d.validators
    if obs.results < D.MIN_RESULTS:
        assert nxt == d
        return
    cheating = obs.rejected * 10_000 // obs.results > D.REJECT_HIGH_BPS
    overloaded = obs.drawn_verdicts > 0 and obs.missed_verdicts * 10_000 // obs.drawn_verdicts > D.MISSED_HIGH_BPS
    if cheating:
        assert not easier  # cheating never relaxes the checks
        assert harder == (not overloaded and (d.positions, d.validators) != (D.MAX_POSITIONS, D.MAX_VALIDATORS))
    if overloaded:
        assert not harder  # overload is never answered with more work
    if obs.rejected == 0 and not overloaded:
        assert not harder and (easier or d == D.Difficulty(D.MIN_POSITIONS, D.MIN_VALIDATORS)), rule


def test_repeated_cheating_reaches_the_maximum_and_quiet_epochs_return_to_the_floor() -> None:
    d = D.Difficulty()
    bad = D.EpochObservation(100, 5, 300, 0)
    for _ in range(10):
        d, _ = D.adjust(d, bad)
    assert d == D.Difficulty(D.MAX_POSITIONS, D.MAX_VALIDATORS)
    quiet = D.EpochObservation(100, 0, 300, 0)
    for _ in range(200):
        d, _ = D.adjust(d, quiet)
    assert d == D.Difficulty(D.MIN_POSITIONS, D.MIN_VALIDATORS)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_escape_is_the_hypergeometric_product(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n))
    p = data.draw(st.integers(1, 80))
    k = data.draw(st.integers(1, 7))
    e = D.escape_probability(n, m, p, k)
    q = min(p, n)
    assert e == Fraction(comb(n - m, q), comb(n, q)) ** k
    assert 0 <= e <= 1 and (e == 1) == (m == 0) and (e == 0) == (m > n - q)
    if m < n:  # more falsified tokens, more positions or more validators: never easier to escape
        assert D.escape_probability(n, m + 1, p, k) <= e
    assert D.escape_probability(n, m, p + 1, k) <= e and D.escape_probability(n, m, p, k + 1) <= e


def test_exact_escape_agrees_with_the_chains_position_draw() -> None:
    rng = random.Random(7)
    n, m, p, k, trials = 40, 4, 6, 2, 3000
    exact = float(D.escape_probability(n, m, p, k))
    escaped = sum(all(not set(range(m)).intersection(select_positions(rng.randbytes(32), n, p)) for _ in range(k))
                  for _ in range(trials))
    sigma = (exact * (1 - exact) / trials) ** 0.5
    assert abs(escaped / trials - exact) < 5 * sigma  # 5 sigma: reliable, still catches a wrong formula


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(D.DifficultyError):
        D.Difficulty(D.MAX_POSITIONS + 1, 3)
    with pytest.raises(D.DifficultyError):
        D.EpochObservation(5, 6, 0, 0)
    with pytest.raises(D.DifficultyError):
        D.escape_probability(10, 11, 1, 1)
    assert D.falsified_positions(256, 100) == 3 and D.falsified_positions(64, 1) == 1
    assert D.falsified_positions(64, 0) == 0 and D.falsified_positions(64, 10_000) == 64


def test_bench_difficulty_prints_every_fraction_before_and_after(capsys: pytest.CaptureFixture[str]) -> None:
    from ambient_p2p.cli import main

    assert main(["bench", "difficulty", "--tokens", "64", "--trials", "50"]) == 0
    out = capsys.readouterr().out
    assert out.count("    1%") == 3 and out.count("  100%") == 3
    assert "after 1 epoch (cheating-more-positions): 16 positions x 3 validators" in out


def test_bench_difficulty_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from ambient_p2p.cli import main

    assert main(["bench", "difficulty", "--tokens", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
