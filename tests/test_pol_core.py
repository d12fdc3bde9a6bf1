"""Proof-of-logits core (ambient_p2p/core/pol.py): codec, quantization, tolerance rules,
position selection, seeded sampling and adversarial openings. No torch here: the
validator's recomputed log-probs are synthetic numpy vectors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import crypto, pol
from ambient_p2p.core.codec import DecodeError, decode, encode

VOCAB = 64
TAU = pol.TIERS[pol.Tier.FP32].tau_units
MINER = crypto.Keypair.deterministic("pol-test-miner", 0)
VALIDATOR = crypto.Keypair.deterministic("pol-test-validator", 0)
MODEL_ID = crypto.sha256(b"test-model")


def logits_for(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.normal(0, 3, VOCAB).astype(np.float32) for _ in range(n)]


def build(n: int = 12, seed: int = 0, temp_milli: int = 0) -> tuple[pol.PolProof, list[np.ndarray]]:
    """A proof whose fingerprints come from known logits; returns the float64 log-probs
    the honest validator would recompute."""
    rng = np.random.default_rng(seed)
    lps = [pol.log_softmax(x) for x in logits_for(rng, n)]
    sseed = crypto.sha256(b"sample", bytes([seed])) if temp_milli else pol.ZERO_HASH
    fps = []
    for i, lp in enumerate(lps):
        cand = pol.candidates_from_logprobs(lp, pol.TOP_K)
        fps.append(pol.make_fingerprint(i, pol.sample_token(cand, temp_milli, sseed, i), cand))
    proof = pol.commit(
        MINER,
        model_id=MODEL_ID,
        tier=pol.Tier.FP32,
        vocab=VOCAB,
        top_k=pol.TOP_K,
        temp_milli=temp_milli,
        sample_seed=sseed,
        prompt=[5, 6, 7],
        output=[fp.tok for fp in fps],
        fps=fps,
    )
    return proof, lps


def check_all(proof: pol.PolProof, lps: list[np.ndarray], positions: list[int], openings: list[pol.PolOpening]) -> pol.Check:
    """The validator's decision procedure with synthetic recomputed log-probs."""
    cmt = proof.commitment
    head = pol.check_commitment(cmt, expected_model_id=MODEL_ID, expected_vocab=VOCAB, prompt=proof.prompt, output=proof.output)
    if not head.ok:
        return head
    for p, op in zip(positions, openings, strict=True):
        for c in (pol.check_opening(cmt, op, p, proof.output), pol.check_token_rule(cmt, op.fp), pol.compare(cmt, op.fp, lps[p])):
            if not c.ok:
                return c
    return pol.OK


# --------------------------------------------------------------------- codec round trips
fp_strategy = st.integers(1, 16).flatmap(
    lambda k: st.builds(
        pol.LogitFingerprint,
        pos=st.integers(0, 2**32 - 1),
        tok=st.integers(0, 2**32 - 1),
        ids=st.lists(st.integers(0, 2**32 - 1), min_size=k, max_size=k).map(tuple),
        lps=st.lists(st.integers(0, 2**32 - 1), min_size=k, max_size=k).map(tuple),
    )
)


@given(fp_strategy)
def test_fingerprint_round_trip(fp: pol.LogitFingerprint) -> None:
    assert decode(encode(fp), expected=pol.LogitFingerprint) == fp


@given(fp_strategy, st.lists(st.binary(min_size=32, max_size=32), max_size=12), st.binary(min_size=32, max_size=32))
def test_opening_round_trip(fp: pol.LogitFingerprint, sibs: list[bytes], cmt: bytes) -> None:
    op = pol.PolOpening(cmt=cmt, fp=fp, sibs=tuple(sibs))
    assert decode(encode(op), expected=pol.PolOpening) == op


def test_commitment_proof_verdict_round_trip() -> None:
    proof, _ = build()
    assert decode(encode(proof), expected=pol.PolProof) == proof
    cmt = proof.commitment
    assert decode(encode(cmt), expected=pol.PolCommitment) == cmt
    v = pol.make_verdict(VALIDATOR, cmt, bytes(32), [1, 2], pol.Check(False, pol.Reason.BAD_PROOF, "x", 2, 7))
    assert decode(encode(v), expected=pol.PolVerdict) == v
    assert pol.verify_verdict(v)
    assert not pol.verify_verdict(dataclasses.replace(v, accept=True))


def test_fingerprint_rejects_mismatched_lists_and_floats() -> None:
    with pytest.raises(ValueError, match='non-empty and of equal length'):
        pol.LogitFingerprint(pos=0, tok=1, ids=(1, 2), lps=(3,))
    good = encode(pol.LogitFingerprint(pos=0, tok=1, ids=(1,), lps=(3,)))
    # a float anywhere on the wire is refused by the codec
    bad = good.replace(b"\x03", b"\xfa\x40\x40\x00\x00")
    with pytest.raises(DecodeError):
        decode(bad, expected=pol.LogitFingerprint)


def test_commitment_invariants() -> None:
    proof, _ = build()
    with pytest.raises(ValueError, match='num_tokens must be'):
        dataclasses.replace(proof.commitment, num_tokens=0)
    with pytest.raises(ValueError, match='top_k must be'):
        dataclasses.replace(proof.commitment, top_k=pol.MAX_TOP_K + 1)


# ------------------------------------------------------------------------- quantization
@given(st.floats(min_value=-1e4, max_value=0.0, allow_nan=False))
def test_quantize_is_within_half_a_unit(lp: float) -> None:
    q = pol.quantize_logprob(lp)
    assert abs(q / pol.GRID_UNITS_PER_NAT + lp) <= 0.5 / pol.GRID_UNITS_PER_NAT + 1e-12
    assert int(pol.quantize_logprobs(np.array([lp]))[0]) == q


def test_quantize_clips_and_rejects_nan() -> None:
    assert pol.quantize_logprob(1e-9) == 0
    assert pol.quantize_logprob(-1e12) == pol.Q_MAX
    with pytest.raises(ValueError, match='NaN'):
        pol.quantize_logprob(float("nan"))


@given(st.lists(st.floats(-30, 30, allow_nan=False), min_size=8, max_size=80), st.floats(-1e3, 1e3))
def test_candidates_ignore_logit_offset(xs: list[float], offset: float) -> None:
    """Log-softmax removes the arbitrary additive offset of the logits (up to rounding at a
    grid boundary, so values may differ by one unit)."""
    a = pol.candidates_from_logprobs(pol.log_softmax(np.array(xs)), 8)
    b = pol.candidates_from_logprobs(pol.log_softmax(np.array(xs) + offset), 8)
    assert max(abs(x - y) for x, y in zip(a.lps, b.lps, strict=True)) <= 1


def test_candidates_from_top_matches_full_vector() -> None:
    lp = pol.log_softmax(np.random.default_rng(1).normal(0, 2, 500))
    full = pol.candidates_from_logprobs(lp, 8)
    top = np.argsort(-lp)[:8][::-1]  # any order
    assert pol.candidates_from_top(list(top), list(lp[top])) == full


# ---------------------------------------------------------------------- tolerance rules
@settings(max_examples=60)
@given(st.integers(0, 2**32 - 1), st.floats(0, 1.0))
def test_honest_drift_within_tau_accepted(seed: int, frac: float) -> None:
    """Perturbing every recomputed log-prob by less than tau (minus the half-unit
    quantization on each side) never rejects."""
    proof, lps = build(n=4, seed=seed % 1000)
    rng = np.random.default_rng(seed)
    eps = frac * (TAU - 1) / pol.GRID_UNITS_PER_NAT
    noisy = [lp + rng.uniform(-eps, eps, lp.shape) for lp in lps]
    pos = [0, 1, 2, 3]
    assert check_all(proof, noisy, pos, pol.open_positions(proof, pos)).ok


@settings(max_examples=60)
@given(st.integers(0, 999), st.integers(0, pol.TOP_K - 1), st.integers(TAU + 2, 10_000))
def test_committed_value_off_by_more_than_tau_rejected(seed: int, j: int, shift_units: int) -> None:
    proof, lps = build(n=3, seed=seed)
    fp = proof.fps[1]
    lp = lps[1].copy()
    lp[fp.ids[j]] -= shift_units / pol.GRID_UNITS_PER_NAT  # the validator sees a different value
    c = pol.compare(proof.commitment, fp, lp)
    assert not c.ok
    assert c.reason in (pol.Reason.VALUE_OUT_OF_TOLERANCE, pol.Reason.TOKEN_NOT_ARGMAX)
    assert c.dev_units is not None and c.dev_units > TAU


def test_uncommitted_token_beating_committed_rejected() -> None:
    proof, lps = build(n=2, seed=3)
    fp = proof.fps[0]
    lp = lps[0].copy()
    outsider = next(i for i in range(VOCAB) if i not in fp.ids)
    smallest = -max(fp.lps) / pol.GRID_UNITS_PER_NAT
    lp[outsider] = smallest + (TAU + 3) / pol.GRID_UNITS_PER_NAT
    c = pol.compare(proof.commitment, fp, lp)
    assert (c.ok, c.reason) == (False, pol.Reason.UNCOMMITTED_EXCEEDS)
    lp[outsider] = smallest + (TAU - 2) / pol.GRID_UNITS_PER_NAT  # within tolerance: fine
    assert pol.compare(proof.commitment, fp, lp).ok


def test_greedy_token_must_be_argmax() -> None:
    proof, lps = build(n=2, seed=4)
    fp = proof.fps[0]
    swapped = dataclasses.replace(fp, tok=fp.ids[3])
    c = pol.check_token_rule(proof.commitment, swapped)
    assert (c.ok, c.reason) == (False, pol.Reason.TOKEN_NOT_ARGMAX)
    c = pol.compare(proof.commitment, swapped, lps[0])
    assert (c.ok, c.reason) == (False, pol.Reason.TOKEN_NOT_ARGMAX)


def test_sampled_proof_verifies_and_wrong_sample_rejected() -> None:
    proof, lps = build(n=16, seed=5, temp_milli=800)
    pos = list(range(16))
    assert check_all(proof, lps, pos, pol.open_positions(proof, pos)).ok
    # sampling really samples: not every token is the top candidate
    assert any(fp.tok != fp.ids[0] for fp in proof.fps)
    fp = proof.fps[2]
    other = next(i for i in fp.ids if i != fp.tok)
    c = pol.check_token_rule(proof.commitment, dataclasses.replace(fp, tok=other))
    assert (c.ok, c.reason) == (False, pol.Reason.TOKEN_NOT_SAMPLED)


def test_sample_token_is_deterministic_and_follows_weights() -> None:
    cand = pol.Candidates(ids=(10, 11, 12), lps=(0, 2839, 100_000))  # p ~ 0.5, 0.25, ~0
    seed = crypto.sha256(b"s")
    draws = [pol.sample_token(cand, 1000, seed, i) for i in range(4000)]
    assert draws == [pol.sample_token(cand, 1000, seed, i) for i in range(4000)]
    share = draws.count(10) / len(draws)
    assert 0.62 < share < 0.72  # 1 / (1 + e^-0.693) = 2/3
    assert draws.count(12) == 0
    assert pol.sample_token(cand, 0, seed, 0) == 10


# ------------------------------------------------------------------ position selection
@given(st.binary(min_size=32, max_size=32), st.integers(1, 300), st.integers(0, 40))
def test_select_positions_distinct_sorted_in_range(seed: bytes, n: int, k: int) -> None:
    ps = pol.select_positions(seed, n, k)
    assert ps == sorted(set(ps))
    assert len(ps) == min(n, k)
    assert all(0 <= p < n for p in ps)


def test_select_positions_depends_on_validator_and_poh() -> None:
    cmt = crypto.sha256(b"c")
    a = pol.select_positions(pol.challenge_seed(bytes(32), VALIDATOR.pubkey, cmt), 1000, 8)
    b = pol.select_positions(pol.challenge_seed(bytes(32), MINER.pubkey, cmt), 1000, 8)
    c = pol.select_positions(pol.challenge_seed(b"\x01" * 32, VALIDATOR.pubkey, cmt), 1000, 8)
    assert a != b and a != c


def test_select_positions_roughly_uniform() -> None:
    counts = np.zeros(10)
    for i in range(2000):
        for p in pol.select_positions(crypto.sha256(i.to_bytes(4, "big")), 10, 1):
            counts[p] += 1
    assert counts.min() > 140 and counts.max() < 260


# ------------------------------------------------------------------------- adversarial
def test_honest_openings_accepted() -> None:
    proof, lps = build(n=33)
    pos = pol.select_positions(crypto.sha256(b"seed"), 33, 8)
    assert check_all(proof, lps, pos, pol.open_positions(proof, pos)).ok


def test_forged_opening_rejected_bad_proof() -> None:
    proof, lps = build(n=20)
    op = pol.open_positions(proof, [7])[0]
    # forge: honest-looking fingerprint recomputed from the validator's vector, but altered value
    forged_fp = dataclasses.replace(op.fp, lps=(op.fp.lps[0], *tuple(v + 50 for v in op.fp.lps[1:])))
    c = check_all(proof, lps, [7], [dataclasses.replace(op, fp=forged_fp)])
    assert (c.ok, c.reason) == (False, pol.Reason.BAD_PROOF)


def test_wrong_sibling_rejected() -> None:
    proof, lps = build(n=20)
    op = pol.open_positions(proof, [3])[0]
    sibs = list(op.sibs)
    sibs[1] = bytes(32)
    c = check_all(proof, lps, [3], [dataclasses.replace(op, sibs=tuple(sibs))])
    assert (c.ok, c.reason) == (False, pol.Reason.BAD_PROOF)
    c = check_all(proof, lps, [3], [dataclasses.replace(op, sibs=op.sibs[:-1])])
    assert (c.ok, c.reason) == (False, pol.Reason.BAD_PROOF)


def test_wrong_index_rejected() -> None:
    proof, lps = build(n=20)
    op5 = pol.open_positions(proof, [5])[0]
    c = check_all(proof, lps, [6], [op5])  # answers position 6 with the opening of 5
    assert (c.ok, c.reason) == (False, pol.Reason.WRONG_POSITION)
    relabeled = dataclasses.replace(op5, fp=dataclasses.replace(op5.fp, pos=6))
    c = check_all(proof, lps, [6], [relabeled])
    assert (c.ok, c.reason) == (False, pol.Reason.BAD_PROOF)


def test_opening_for_other_commitment_rejected() -> None:
    proof, lps = build(n=10)
    other, _ = build(n=10, seed=9)
    op = pol.open_positions(other, [2])[0]
    c = check_all(proof, lps, [2], [op])
    assert (c.ok, c.reason) == (False, pol.Reason.WRONG_COMMITMENT)


def test_out_of_tolerance_fingerprint_with_valid_proof_rejected() -> None:
    """A miner that committed values from another model: proofs are valid, values are not."""
    proof, lps = build(n=10)
    other_lps = [lp + np.random.default_rng(1).normal(0, 0.01, lp.shape) for lp in lps]
    pos = [0, 4, 9]
    c = check_all(proof, other_lps, pos, pol.open_positions(proof, pos))
    assert not c.ok and c.reason in (pol.Reason.VALUE_OUT_OF_TOLERANCE, pol.Reason.UNCOMMITTED_EXCEEDS)


def test_header_rejections() -> None:
    proof, _lps = build(n=6)
    cmt = proof.commitment
    kw = dict(expected_model_id=MODEL_ID, expected_vocab=VOCAB, prompt=proof.prompt, output=proof.output)
    assert pol.check_commitment(cmt, **kw).ok
    assert pol.check_commitment(cmt, **{**kw, "expected_model_id": bytes(32)}).reason == pol.Reason.WRONG_MODEL
    assert pol.check_commitment(cmt, **{**kw, "prompt": (5, 6, 8)}).reason == pol.Reason.WRONG_PROMPT
    assert pol.check_commitment(cmt, **{**kw, "prompt": ()}).reason == pol.Reason.WRONG_PROMPT
    out = list(proof.output)
    out[2] = (out[2] + 1) % VOCAB
    assert pol.check_commitment(cmt, **{**kw, "output": out}).reason == pol.Reason.WRONG_OUTPUT
    tampered = dataclasses.replace(cmt, root=bytes(32))
    assert pol.check_commitment(tampered, **kw).reason == pol.Reason.BAD_SIGNATURE
    resigned = pol.commit(
        MINER, model_id=MODEL_ID, tier=pol.Tier.FP32, vocab=VOCAB, top_k=pol.TOP_K - 1, temp_milli=0,
        sample_seed=pol.ZERO_HASH, prompt=proof.prompt, output=proof.output,
        fps=[dataclasses.replace(fp, ids=fp.ids[:-1], lps=fp.lps[:-1]) for fp in proof.fps],
    )
    assert pol.check_commitment(resigned.commitment, **kw).reason == pol.Reason.WRONG_TIER


def test_swapped_token_rejected() -> None:
    """Output token swapped after generation: fingerprint/token mismatch, or (if the miner
    re-labels the fingerprint and re-commits) the greedy rule."""
    proof, lps = build(n=8)
    out = list(proof.output)
    fp = proof.fps[4]
    out[4] = fp.ids[2]
    c = pol.check_opening(proof.commitment, pol.open_positions(proof, [4])[0], 4, out)
    assert (c.ok, c.reason) == (False, pol.Reason.TOKEN_MISMATCH)
    fps = list(proof.fps)
    fps[4] = dataclasses.replace(fp, tok=fp.ids[2])
    recommitted = pol.commit(
        MINER, model_id=MODEL_ID, tier=pol.Tier.FP32, vocab=VOCAB, top_k=pol.TOP_K, temp_milli=0,
        sample_seed=pol.ZERO_HASH, prompt=proof.prompt, output=out, fps=fps,
    )
    c = check_all(recommitted, lps, [4], pol.open_positions(recommitted, [4]))
    assert (c.ok, c.reason) == (False, pol.Reason.TOKEN_NOT_ARGMAX)


def test_malformed_fingerprints_rejected() -> None:
    proof, _lps = build(n=4)
    for bad in (
        lambda fp: dataclasses.replace(fp, ids=(fp.ids[1], *fp.ids[1:])),  # repeated id
        lambda fp: dataclasses.replace(fp, ids=fp.ids[::-1], lps=fp.lps[::-1]),  # least likely first
        lambda fp: dataclasses.replace(fp, ids=(*fp.ids[:-1], VOCAB + 5)),  # outside vocab
    ):
        fps = list(proof.fps)
        fps[1] = bad(fps[1])
        re = pol.commit(
            MINER, model_id=MODEL_ID, tier=pol.Tier.FP32, vocab=VOCAB, top_k=pol.TOP_K, temp_milli=0,
            sample_seed=pol.ZERO_HASH, prompt=proof.prompt, output=[f.tok for f in fps], fps=fps,
        )
        c = pol.check_opening(re.commitment, pol.open_positions(re, [1])[0], 1, re.output)
        assert (c.ok, c.reason) == (False, pol.Reason.MALFORMED_FINGERPRINT)


def test_commit_refuses_inconsistent_fingerprints() -> None:
    proof, _ = build(n=3)
    with pytest.raises(ValueError, match='does not describe output token'):
        pol.commit(
            MINER, model_id=MODEL_ID, tier=pol.Tier.FP32, vocab=VOCAB, top_k=pol.TOP_K, temp_milli=0,
            sample_seed=pol.ZERO_HASH, prompt=proof.prompt, output=proof.output[::-1], fps=proof.fps,
        )
