"""Validator side of proof of logits: recompute log-probs at opened positions with one
forward pass and compare them with the committed fingerprints (spec/pol.md, "Validation").

Output position ``x`` is predicted from ``prompt + output[:x]``, i.e. by the hidden state at
sequence index ``len(prompt) + x - 1``. All positions to check therefore come out of ONE
causal forward pass. For greedy proofs that pass covers the whole output and the argmax
rule is checked at every position from the output tokens alone (no openings needed), which
catches a single edited token anywhere; the opened positions additionally get the full
fingerprint comparison. For sampled proofs the pass stops at the last opened position.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core import crypto, pol
from .runner import LoadedModel

#: rows per LM-head chunk when checking the greedy rule at every position (bounds memory:
#: 256 rows x 49,152 vocab x 8 bytes = 100 MB)
GREEDY_CHUNK_ROWS = 256


@torch.inference_mode()
def _hidden(lm: LoadedModel, prompt: Sequence[int], output: Sequence[int], upto: int) -> torch.Tensor:
    """Final hidden states for ``prompt + output[:upto]`` (one causal pass)."""
    seq = list(prompt) + list(output[:upto])
    ids = torch.tensor([seq], dtype=torch.long, device=lm.device)
    hidden: torch.Tensor = lm.model.model(input_ids=ids, use_cache=False).last_hidden_state[0]
    return hidden


@torch.inference_mode()
def _rows_logprobs(lm: LoadedModel, hidden: torch.Tensor, rows: Sequence[int]) -> np.ndarray:
    idx = torch.tensor(list(rows), device=lm.device)
    logits = lm.model.lm_head(hidden[idx]).to(torch.float64)
    out: np.ndarray = torch.log_softmax(logits, dim=-1).detach().cpu().numpy()
    return out


@torch.inference_mode()
def recompute_logprobs(lm: LoadedModel, prompt: Sequence[int], output: Sequence[int], positions: Sequence[int]) -> dict[int, np.ndarray]:
    """float64 log-prob vectors at each output position, from one forward pass."""
    if not positions:
        return {}
    hidden = _hidden(lm, prompt, output, max(positions))
    lps = _rows_logprobs(lm, hidden, [len(prompt) + p - 1 for p in positions])
    return {p: lps[i] for i, p in enumerate(positions)}


@torch.inference_mode()
def greedy_gaps(lm: LoadedModel, hidden: torch.Tensor, prompt_len: int, output: Sequence[int], upto: int) -> np.ndarray:
    """For output positions ``0..upto-1``: how far (grid units) the emitted token is below
    the validator's argmax. Needs only the output tokens, no openings."""
    gaps = []
    for start in range(0, upto, GREEDY_CHUNK_ROWS):
        xs = list(range(start, min(upto, start + GREEDY_CHUNK_ROWS)))
        lps = _rows_logprobs(lm, hidden, [prompt_len + x - 1 for x in xs])
        q = pol.quantize_logprobs(lps)
        toks = np.asarray([output[x] for x in xs])
        gaps.append(q[np.arange(len(xs)), toks] - q.min(axis=1))
    return np.concatenate(gaps) if gaps else np.zeros(0, dtype=np.int64)


@torch.inference_mode()
def recompute_logprobs_padded(
    lm: LoadedModel, prompts: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
) -> list[dict[int, np.ndarray]]:
    """Several proofs in one left-padded batch (a validator checking many proofs at once).
    Used to measure batch-shape drift (spec/pol.md, measurement (c))."""
    seqs = [list(p) + list(o[: max(ps)]) for p, o, ps in zip(prompts, outputs, positions, strict=True)]
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden = lm.model.model(
        input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), position_ids=pos_ids.to(lm.device), use_cache=False
    ).last_hidden_state
    out = []
    for i, (p, ps) in enumerate(zip(prompts, positions, strict=True)):
        pad = width - len(seqs[i])
        rows = torch.tensor([pad + len(p) + x - 1 for x in ps], device=lm.device)
        lps = torch.log_softmax(lm.model.lm_head(hidden[i, rows]).to(torch.float64), dim=-1).detach().cpu().numpy()
        out.append({x: lps[j] for j, x in enumerate(ps)})
    return out


@dataclass
class ValidationResult:
    """A verdict plus what the validator saw (for reporting and benchmarks)."""

    check: pol.Check
    positions: list[int]
    max_dev_units: int
    forward_s: float
    total_s: float


def validate(
    lm: LoadedModel,
    cmt: pol.PolCommitment,
    prompt: Sequence[int],
    output: Sequence[int],
    positions: Sequence[int],
    openings: Sequence[pol.PolOpening],
) -> ValidationResult:
    """Check a commitment at ``positions`` given the miner's ``openings`` (in the same
    order). Cheap structural checks first; the model runs only if they all pass."""
    t0 = time.perf_counter()
    positions = list(positions)

    def done(check: pol.Check, dev: int = 0, fwd: float = 0.0) -> ValidationResult:
        return ValidationResult(check, positions, dev, fwd, time.perf_counter() - t0)

    head = pol.check_commitment(cmt, expected_model_id=lm.model_id, expected_vocab=lm.vocab_size, prompt=prompt, output=output)
    if not head.ok:
        return done(head)
    if not positions or len(openings) != len(positions):
        return done(pol.Check(False, pol.Reason.MISSING_OPENING, f"{len(openings)} openings for {len(positions)} positions"))
    for p, op in zip(positions, openings, strict=True):
        c = pol.check_opening(cmt, op, p, output)
        if not c.ok:
            return done(c)
        c = pol.check_token_rule(cmt, op.fp)
        if not c.ok:
            return done(c)
    t1 = time.perf_counter()
    greedy = cmt.temp_milli == 0
    # greedy proofs: one pass over the WHOLE output, so the argmax rule is checked at every
    # position (a single swapped token anywhere is caught without any opening); sampled
    # proofs: the pass stops at the last challenged position.
    upto = len(output) if greedy else max(positions) + 1
    hidden = _hidden(lm, prompt, output, upto - 1)
    rows = _rows_logprobs(lm, hidden, [len(prompt) + p - 1 for p in positions])
    gaps = greedy_gaps(lm, hidden, len(prompt), output, upto) if greedy else None
    fwd = time.perf_counter() - t1
    worst = 0
    for i, op in enumerate(openings):
        c = pol.compare(cmt, op.fp, rows[i])
        if c.dev_units is not None:
            worst = max(worst, c.dev_units)
        if not c.ok:
            return done(c, worst, fwd)
    if gaps is not None:
        tau = pol.TIERS[pol.Tier(cmt.tier)].tau_units
        bad = np.flatnonzero(gaps > tau)
        if bad.size:
            x = int(bad[0])
            g = int(gaps[x])
            return done(
                pol.Check(False, pol.Reason.TOKEN_NOT_ARGMAX, f"output token at {x} is {g} units below the argmax", x, g),
                max(worst, g),
                fwd,
            )
    return done(pol.Check(True, pol.Reason.OK, f"{len(positions)} position(s) within tolerance", None, worst), worst, fwd)


def challenge_and_validate(
    lm: LoadedModel,
    proof: pol.PolProof,
    *,
    later_poh_hash: bytes,
    validator: crypto.Keypair,
    num_positions: int = pol.DEFAULT_CHECKED_POSITIONS,
) -> tuple[pol.PolVerdict, ValidationResult]:
    """The full round trip a validator runs against a miner's stored proof (the miner's
    part, :func:`ambient_p2p.core.pol.open_positions`, is called in-process here)."""
    cmt = proof.commitment
    seed = pol.challenge_seed(later_poh_hash, validator.pubkey, cmt.hash())
    positions = pol.select_positions(seed, cmt.num_tokens, num_positions)
    openings = pol.open_positions(proof, positions)
    res = validate(lm, cmt, proof.prompt, proof.output, positions, openings)
    return pol.make_verdict(validator, cmt, seed, positions, res.check), res
