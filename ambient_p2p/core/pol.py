"""Proof of logits: fingerprints, commitments, openings, position selection and the
tolerance comparison (normative text: spec/pol.md).

The rules, in plain words:

* For every generated token the miner records a **fingerprint** of the logits that chose
  it: the output position, the emitted token id, the ``k`` most likely token ids and their
  log-probabilities, negated and quantized to a grid of ``2**-GRID_BITS`` nats
  (``q = floor(-logprob * 2**GRID_BITS + 1/2)``). Log-probabilities (not raw logits)
  remove the arbitrary additive offset of the logits; quantizing makes the leaf an
  integer object that every implementation encodes identically.
* The **commitment** is the Merkle root (core/merkle.py) over the canonical encodings of
  all fingerprints, signed by the miner together with the model id, the precision tier,
  the hashes of the prompt and output token ids, the sampling temperature and seed.
* A **progress marker** (opening) is one fingerprint plus its Merkle proof.
* Positions to open are drawn from a seed the miner cannot know when committing
  (a later PoH hash mixed with the validator's pubkey and the commitment hash).
* The validator recomputes the log-probabilities at those positions and accepts a position
  only if (1) every committed value is within ``tau`` of its own, (2) no token outside the
  committed top-k beats the smallest committed value by more than ``tau`` and (3) the
  emitted token is consistent: greedy = within ``tau`` of the argmax; sampled = exactly the
  token that :func:`sample_token` draws from the committed values and seed.

Comparison is with a tolerance, never hash equality: honest re-execution on another
machine, with another batch shape or without a KV cache drifts by ~1e-6..1e-4 nats in fp32
(measured, spec/pol.md), which breaks exact hashes of any fine grid.

Pure and sans-IO: numpy only, no torch, no clock, no disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from . import crypto
from .codec import Bool, Bytes, List, Opt, Rec, Text, UInt, encode, fld, message
from .merkle import MerkleProof, merkle_proof, merkle_root, proof_depth, verify_proof
from .messages import sign_message, verify_message

# ---------------------------------------------------------------------------------------
# Constants (spec/pol.md, "Constants"). Every number PoL uses lives here.
# ---------------------------------------------------------------------------------------
#: log-probs are stored as non-negative integers in units of 2**-GRID_BITS nats
GRID_BITS = 12
GRID_UNITS_PER_NAT = 1 << GRID_BITS
#: largest storable quantized value (a log-prob of about -1,048,576 nats); values beyond clip
Q_MAX = (1 << 32) - 1
#: how many of the most likely tokens each fingerprint commits to
TOP_K = 8
MAX_TOP_K = 64
#: most output tokens one proof may cover (bounds the proof file and Merkle depth)
MAX_OUTPUT_TOKENS = 4096
MAX_PROMPT_TOKENS = 16384
MAX_VOCAB = 1 << 24
#: default number of positions a validator opens per proof (the difficulty parameter)
DEFAULT_CHECKED_POSITIONS = 8
MAX_CHECKED_POSITIONS = 256
MAX_MERKLE_DEPTH = 32
#: temperature is carried in thousandths; 0 means greedy decoding
TEMPERATURE_SCALE = 1000
MAX_TEMPERATURE_MILLI = 10 * TEMPERATURE_SCALE
#: integer weights for seeded sampling are scaled so the best candidate weighs 2**SAMPLE_WEIGHT_BITS
SAMPLE_WEIGHT_BITS = 32
MAX_REASON_BYTES = 48
MAX_DETAIL_BYTES = 200

DOMAIN_TOKENS = b"ambient/pol-tokens/v1\x00"
DOMAIN_CHALLENGE = b"ambient/pol-challenge/v1\x00"
DOMAIN_POSITIONS = b"ambient/pol-positions/v1\x00"
DOMAIN_SAMPLE = b"ambient/pol-sample/v1\x00"
DOMAIN_RANDOM_MODEL = b"ambient/pol-random-model/v1\x00"

ZERO_HASH = bytes(32)


class Tier(IntEnum):
    """Precision tier the miner declares; it fixes the tolerance the validator applies."""

    FP32 = 1
    BF16 = 2


@dataclass(frozen=True)
class TierParams:
    """Tolerance for one tier, in grid units (``tau_units / 2**GRID_BITS`` nats)."""

    tier: Tier
    tau_units: int

    @property
    def tau_nats(self) -> float:
        return self.tau_units / GRID_UNITS_PER_NAT


#: Chosen from measurements on SmolLM2-135M (spec/pol.md, "Measurements"): fp32 honest drift
#: on CPU is <= 4.6e-5 nats (1 grid unit; KV cache vs recompute; threads and padded batches
#: are bitwise equal), ~1e-4..1.6e-4 expected across CPU/GPU; tau = 4/4096 ~ 9.8e-4 nats
#: leaves > 2x headroom, while 1e-3 relative weight noise moves committed values by a
#: median 216 units per proof. bf16 drift reaches 0.49 nats on committed values: tau 1 nat.
TIERS: dict[Tier, TierParams] = {
    Tier.FP32: TierParams(Tier.FP32, tau_units=4),
    Tier.BF16: TierParams(Tier.BF16, tau_units=4096),
}


class Reason:
    """Stable reject codes (spec/pol.md, "Verdict reasons"); also used by interop vectors."""

    OK = "ok"
    BAD_SIGNATURE = "bad-signature"
    WRONG_MODEL = "wrong-model"
    WRONG_TIER = "wrong-tier"
    WRONG_PROMPT = "wrong-prompt"
    WRONG_OUTPUT = "wrong-output"
    WRONG_COMMITMENT = "wrong-commitment"
    MISSING_OPENING = "missing-opening"
    WRONG_POSITION = "wrong-position"
    BAD_PROOF = "bad-proof"
    MALFORMED_FINGERPRINT = "malformed-fingerprint"
    TOKEN_MISMATCH = "token-mismatch"
    VALUE_OUT_OF_TOLERANCE = "value-out-of-tolerance"
    UNCOMMITTED_EXCEEDS = "uncommitted-exceeds"
    TOKEN_NOT_ARGMAX = "token-not-argmax"
    TOKEN_NOT_SAMPLED = "token-not-sampled"


# ---------------------------------------------------------------------------------------
# Wire formats (type ids 0x0400-0x04FF, spec/pol.md "Wire formats")
# ---------------------------------------------------------------------------------------
@message(type_id=0x0400, version=1, max_size=1024)
@dataclass(frozen=True)
class LogitFingerprint:
    """One token's fingerprint; its canonical encoding is a Merkle leaf.

    ``ids`` are the top-k token ids ordered by ascending ``lps`` (most likely first), ties
    by ascending id; ``lps[i] = floor(-logprob(ids[i]) * 2**GRID_BITS + 1/2)``."""

    pos: int = fld(UInt(32))
    tok: int = fld(UInt(32))
    ids: tuple[int, ...] = fld(List(UInt(32), MAX_TOP_K))
    lps: tuple[int, ...] = fld(List(UInt(32), MAX_TOP_K))

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.lps) or not self.ids:
            raise ValueError("ids and lps must be non-empty and of equal length")


@message(type_id=0x0401, version=1, max_size=1024)
@dataclass(frozen=True)
class PolCommitment:
    """The miner's signed claim about one generation (signature purpose ``pol-commitment``
    over the encoding with a zeroed signature)."""

    model_id: bytes = fld(Bytes(32, exact=True))
    tier: int = fld(UInt(8))
    vocab: int = fld(UInt(32))
    top_k: int = fld(UInt(8))
    temp_milli: int = fld(UInt(32))
    sample_seed: bytes = fld(Bytes(32, exact=True))
    prompt_hash: bytes = fld(Bytes(32, exact=True))
    output_hash: bytes = fld(Bytes(32, exact=True))
    num_tokens: int = fld(UInt(32))
    root: bytes = fld(Bytes(32, exact=True))
    miner: bytes = fld(Bytes(32, exact=True))
    signature: bytes = fld(Bytes(64, exact=True))

    def __post_init__(self) -> None:
        if not 1 <= self.num_tokens <= MAX_OUTPUT_TOKENS:
            raise ValueError(f"num_tokens must be 1..{MAX_OUTPUT_TOKENS}")
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be 1..{MAX_TOP_K}")
        if not 1 <= self.vocab <= MAX_VOCAB or self.top_k > self.vocab:
            raise ValueError("vocab must be 1..2**24 and >= top_k")
        if self.temp_milli > MAX_TEMPERATURE_MILLI:
            raise ValueError(f"temp_milli must be <= {MAX_TEMPERATURE_MILLI}")

    def hash(self) -> bytes:
        return crypto.sha256(encode(self))


@message(type_id=0x0402, version=1, max_size=4096)
@dataclass(frozen=True)
class PolOpening:
    """A progress marker: the fingerprint at ``fp.pos`` and its Merkle path to ``root``."""

    cmt: bytes = fld(Bytes(32, exact=True))  # PolCommitment.hash()
    fp: LogitFingerprint = fld(Rec(LogitFingerprint))
    sibs: tuple[bytes, ...] = fld(List(Bytes(32, exact=True), MAX_MERKLE_DEPTH))


@message(type_id=0x0403, version=1, max_size=16384)
@dataclass(frozen=True)
class PolVerdict:
    """A validator's signed judgement (purpose ``pol-verdict``)."""

    cmt: bytes = fld(Bytes(32, exact=True))
    validator: bytes = fld(Bytes(32, exact=True))
    seed: bytes = fld(Bytes(32, exact=True))
    positions: tuple[int, ...] = fld(List(UInt(32), MAX_CHECKED_POSITIONS))
    accept: bool = fld(Bool())
    reason: str = fld(Text(MAX_REASON_BYTES))
    signature: bytes = fld(Bytes(64, exact=True))
    #: first failing position, and the largest deviation seen (grid units), when known
    bad_pos: int | None = fld(Opt(UInt(32)), default=None)
    dev_units: int | None = fld(Opt(UInt(32)), default=None)


@message(type_id=0x0404, version=1, max_size=1 << 20)
@dataclass(frozen=True)
class PolProof:
    """Everything a miner keeps for one generation: the commitment, the token ids and all
    fingerprints, from which it answers any challenge. Also the ``pol prove`` file format."""

    commitment: PolCommitment = fld(Rec(PolCommitment))
    prompt: tuple[int, ...] = fld(List(UInt(32), MAX_PROMPT_TOKENS))
    output: tuple[int, ...] = fld(List(UInt(32), MAX_OUTPUT_TOKENS))
    fps: tuple[LogitFingerprint, ...] = fld(List(Rec(LogitFingerprint), MAX_OUTPUT_TOKENS))


# ---------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------
def quantize_logprob(lp: float) -> int:
    """``floor(-lp * 2**GRID_BITS + 1/2)`` clipped to ``0..Q_MAX`` (log-probs are <= 0;
    float drift can make the top one a hair positive, which clips to 0)."""
    if math.isnan(lp):
        raise ValueError("log-prob is NaN")
    v = -lp * GRID_UNITS_PER_NAT + 0.5
    if v <= 0:
        return 0
    if v >= Q_MAX:
        return Q_MAX
    return math.floor(v)


def quantize_logprobs(lps: np.ndarray) -> np.ndarray:
    """Vectorised :func:`quantize_logprob` (int64 array)."""
    a = np.asarray(lps, dtype=np.float64)
    if np.isnan(a).any():
        raise ValueError("log-probs contain NaN")
    return np.clip(np.floor(-a * GRID_UNITS_PER_NAT + 0.5), 0, Q_MAX).astype(np.int64)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-softmax of a 1-D logit vector (computed in float64 so the reduction
    order of the sum adds no drift of its own)."""
    x = np.asarray(logits, dtype=np.float64)
    m = float(x.max())
    out: np.ndarray = x - (m + math.log(float(np.exp(x - m).sum())))
    return out


@dataclass(frozen=True)
class Candidates:
    """Top-k ids and quantized values in canonical order, before the token is chosen."""

    ids: tuple[int, ...]
    lps: tuple[int, ...]


def candidates_from_top(ids: Sequence[int], logprobs: Sequence[float]) -> Candidates:
    """Canonical candidates from a top-k list (any order): quantize, then sort by value
    (most likely first) with ties broken by ascending id."""
    if len(ids) != len(logprobs) or not ids:
        raise ValueError("need equally many ids and log-probs, at least one")
    q = [quantize_logprob(float(v)) for v in logprobs]
    pairs = sorted(zip(q, (int(i) for i in ids), strict=True))
    return Candidates(tuple(i for _, i in pairs), tuple(v for v, _ in pairs))


def candidates_from_logprobs(logprobs: np.ndarray, k: int) -> Candidates:
    """Top-k candidates from a full log-prob vector. Selection is by quantized value and
    then id, so it is a pure function of the quantized vector."""
    q = quantize_logprobs(logprobs)
    k = min(k, q.shape[0])
    order = np.lexsort((np.arange(q.shape[0]), q))[:k]
    return Candidates(tuple(int(i) for i in order), tuple(int(q[i]) for i in order))


def make_fingerprint(position: int, token: int, cand: Candidates) -> LogitFingerprint:
    return LogitFingerprint(pos=position, tok=token, ids=cand.ids, lps=cand.lps)


def sample_token(cand: Candidates, temp_milli: int, seed: bytes, position: int) -> int:
    """The token a miner must emit at ``position``.

    Greedy (``temp_milli == 0``): the first candidate. Sampled: a draw restricted to the
    committed top-k, weights ``round(2**32 * exp(-(lps[i] - lps[0]) / (2**GRID_BITS * T)))``
    and a 64-bit uniform from ``sha256(DOMAIN_SAMPLE || seed || position_u32be)``. Because it
    reads only committed integers, the validator reproduces it exactly (up to libm's last-ulp
    behaviour of ``exp``, which moves a weight only when it sits on a rounding boundary)."""
    if temp_milli == 0:
        return cand.ids[0]
    t = temp_milli / TEMPERATURE_SCALE
    base = cand.lps[0]
    weights = [
        round(math.ldexp(math.exp(-(v - base) / (GRID_UNITS_PER_NAT * t)), SAMPLE_WEIGHT_BITS))
        for v in cand.lps
    ]
    total = sum(weights)
    u = int.from_bytes(crypto.sha256(DOMAIN_SAMPLE, seed, position.to_bytes(4, "big"))[:8], "big") % total
    acc = 0
    for tok, w in zip(cand.ids, weights, strict=True):
        acc += w
        if u < acc:
            return tok
    return cand.ids[-1]


def fingerprint_from_logits(
    position: int, logits: np.ndarray, k: int, temp_milli: int = 0, seed: bytes = ZERO_HASH
) -> LogitFingerprint:
    """Reference path (interop vectors, tests): fingerprint and emitted token from raw logits."""
    cand = candidates_from_logprobs(log_softmax(logits), k)
    return make_fingerprint(position, sample_token(cand, temp_milli, seed, position), cand)


#: the canonical encoding's fixed start: [0x0400, 1, {"ids": ... (a 4-entry map, keys in order)
_LEAF_HEAD = bytes.fromhex("8319040001a4") + b"\x63ids"
_U32_MAX = (1 << 32) - 1
_CBOR_SMALL = [bytes((v,)) for v in range(24)]


def _cbor_uint(v: int) -> bytes:
    """Shortest CBOR head of the unsigned integer ``0 <= v < 2**32`` (major type 0)."""
    if v < 24:
        return _CBOR_SMALL[v]
    if v < 0x100:
        return bytes((0x18, v))
    if v < 0x10000:
        return b"\x19" + v.to_bytes(2, "big")
    return b"\x1a" + v.to_bytes(4, "big")


def leaf_bytes(fp: LogitFingerprint) -> bytes:
    """The canonical encoding of ``fp`` (a Merkle leaf): ``encode(fp)``, written directly for
    the common shape (fewer than 24 candidates, plain ints within u32) since the commitment
    encodes one leaf per output token; the same bytes (tests/test_hot_pol.py), and anything
    else goes through :func:`encode` with its checks and errors."""
    ids, lps, n = fp.ids, fp.lps, len(fp.ids)
    vals = (*ids, *lps, fp.pos, fp.tok)
    if not 0 < n < 24 or len(lps) != n or any(type(v) is not int for v in vals) or min(vals) < 0 or max(vals) > _U32_MAX:
        return encode(fp)
    arr = bytes((0x80 | n,))
    return b"".join((_LEAF_HEAD, arr, *map(_cbor_uint, ids), b"\x63lps", arr, *map(_cbor_uint, lps),
                     b"\x63pos", _cbor_uint(fp.pos), b"\x63tok", _cbor_uint(fp.tok)))


def tokens_hash(tokens: Sequence[int]) -> bytes:
    """Hash of a token-id sequence: sha256(DOMAIN_TOKENS || len_u32be || id_u32be...)."""
    body = b"".join(int(t).to_bytes(4, "big") for t in tokens)
    return crypto.sha256(DOMAIN_TOKENS, len(tokens).to_bytes(4, "big"), body)


# ---------------------------------------------------------------------------------------
# Commitments and openings
# ---------------------------------------------------------------------------------------
def commit(
    kp: crypto.Keypair,
    *,
    model_id: bytes,
    tier: Tier,
    vocab: int,
    top_k: int,
    temp_milli: int,
    sample_seed: bytes,
    prompt: Sequence[int],
    output: Sequence[int],
    fps: Sequence[LogitFingerprint],
) -> PolProof:
    """Build and sign the commitment over ``fps`` and bundle it with the tokens."""
    if len(fps) != len(output):
        raise ValueError("one fingerprint per output token")
    for i, (fp, tok) in enumerate(zip(fps, output, strict=True)):
        if fp.pos != i or fp.tok != tok:
            raise ValueError(f"fingerprint {i} does not describe output token {i}")
    cmt = PolCommitment(
        model_id=model_id,
        tier=int(tier),
        vocab=vocab,
        top_k=top_k,
        temp_milli=temp_milli,
        sample_seed=sample_seed,
        prompt_hash=tokens_hash(prompt),
        output_hash=tokens_hash(output),
        num_tokens=len(output),
        root=merkle_root([leaf_bytes(fp) for fp in fps]),
        miner=kp.pubkey,
        signature=crypto.ZERO_SIGNATURE,
    )
    cmt = sign_message(cmt, kp, "pol-commitment")
    return PolProof(commitment=cmt, prompt=tuple(prompt), output=tuple(output), fps=tuple(fps))


def open_positions(proof: PolProof, positions: Sequence[int]) -> list[PolOpening]:
    """The miner's answer to a challenge: one opening per requested position."""
    leaves = [leaf_bytes(fp) for fp in proof.fps]
    ch = proof.commitment.hash()
    out = []
    for p in positions:
        mp = merkle_proof(leaves, p)
        out.append(PolOpening(cmt=ch, fp=proof.fps[p], sibs=mp.siblings))
    return out


def challenge_seed(later_poh_hash: bytes, validator: bytes, commitment_hash: bytes) -> bytes:
    """Seed for position selection. ``later_poh_hash`` is a PoH hash recorded after the
    commitment landed, so the miner could not know it when committing; mixing in the
    validator's pubkey gives each drawn validator its own positions."""
    return crypto.sha256(DOMAIN_CHALLENGE, later_poh_hash, validator, commitment_hash)


def select_positions(seed: bytes, num_tokens: int, count: int) -> list[int]:
    """``min(count, num_tokens)`` distinct positions in ``0..num_tokens-1``, sorted, drawn
    uniformly by rejection sampling on ``sha256(DOMAIN_POSITIONS || seed || counter_u32be)``."""
    if num_tokens < 1:
        raise ValueError("no tokens to choose from")
    count = max(0, min(count, num_tokens))
    bound = (1 << 64) - ((1 << 64) % num_tokens)  # reject to avoid modulo bias
    chosen: set[int] = set()
    counter = 0
    while len(chosen) < count:
        digest = crypto.sha256(DOMAIN_POSITIONS, seed, counter.to_bytes(4, "big"))
        counter += 1
        for off in range(0, 32, 8):
            r = int.from_bytes(digest[off : off + 8], "big")
            if r < bound:
                chosen.add(r % num_tokens)
                if len(chosen) == count:
                    break
    return sorted(chosen)


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """Outcome of one check: ``reason`` is a :class:`Reason` code; ``dev_units`` is the
    largest deviation (grid units) seen at a compared position, when one was compared."""

    ok: bool
    reason: str
    detail: str = ""
    position: int | None = None
    dev_units: int | None = None


OK = Check(True, Reason.OK)


def check_commitment(
    cmt: PolCommitment,
    *,
    expected_model_id: bytes,
    expected_vocab: int,
    prompt: Sequence[int],
    output: Sequence[int],
) -> Check:
    """Header checks that need no model run: signature, model, tier, token hashes."""
    if not verify_message(cmt, cmt.miner, "pol-commitment"):
        return Check(False, Reason.BAD_SIGNATURE, "commitment signature does not verify")
    if cmt.model_id != expected_model_id:
        return Check(False, Reason.WRONG_MODEL, f"commitment names model {cmt.model_id.hex()[:16]}..")
    if cmt.vocab != expected_vocab:
        return Check(False, Reason.WRONG_MODEL, f"vocab {cmt.vocab} != model vocab {expected_vocab}")
    if cmt.tier not in {int(t) for t in TIERS}:
        return Check(False, Reason.WRONG_TIER, f"unknown tier {cmt.tier}")
    if cmt.top_k != TOP_K:
        return Check(False, Reason.WRONG_TIER, f"top_k {cmt.top_k} != protocol top_k {TOP_K}")
    if not prompt:
        return Check(False, Reason.WRONG_PROMPT, "empty prompt (position 0 has no context)")
    if tokens_hash(prompt) != cmt.prompt_hash:
        return Check(False, Reason.WRONG_PROMPT, "prompt tokens do not match prompt_hash")
    if len(output) != cmt.num_tokens or tokens_hash(output) != cmt.output_hash:
        return Check(False, Reason.WRONG_OUTPUT, "output tokens do not match output_hash")
    return OK


def check_opening(cmt: PolCommitment, opening: PolOpening, position: int, output: Sequence[int]) -> Check:
    """Structural checks of one opening against the commitment (no model needed)."""
    fp = opening.fp
    if opening.cmt != cmt.hash():
        return Check(False, Reason.WRONG_COMMITMENT, "opening is for another commitment", position)
    if fp.pos != position:
        return Check(False, Reason.WRONG_POSITION, f"asked for {position}, opening is for {fp.pos}", position)
    if len(opening.sibs) != proof_depth(cmt.num_tokens) or not verify_proof(
        cmt.root, leaf_bytes(fp), MerkleProof(position, opening.sibs), cmt.num_tokens
    ):
        return Check(False, Reason.BAD_PROOF, "Merkle proof does not lead to the committed root", position)
    k = len(fp.ids)
    if k != cmt.top_k:
        return Check(False, Reason.MALFORMED_FINGERPRINT, f"{k} candidates, commitment says {cmt.top_k}", position)
    if len(set(fp.ids)) != k or max(fp.ids) >= cmt.vocab:
        return Check(False, Reason.MALFORMED_FINGERPRINT, "repeated or out-of-vocabulary id", position)
    if list(zip(fp.lps, fp.ids, strict=True)) != sorted(zip(fp.lps, fp.ids, strict=True)):
        return Check(False, Reason.MALFORMED_FINGERPRINT, "candidates not in canonical order", position)
    if fp.tok != output[position]:
        return Check(False, Reason.TOKEN_MISMATCH, f"fingerprint token {fp.tok} != output {output[position]}", position)
    return OK


def check_token_rule(cmt: PolCommitment, fp: LogitFingerprint) -> Check:
    """The emitted token follows from the committed values (exact, integer-only)."""
    tau = TIERS[Tier(cmt.tier)].tau_units
    cand = Candidates(fp.ids, fp.lps)
    if cmt.temp_milli == 0:
        if fp.tok not in fp.ids:
            return Check(False, Reason.TOKEN_NOT_ARGMAX, "greedy token is not among the committed top-k", fp.pos)
        gap = fp.lps[fp.ids.index(fp.tok)] - fp.lps[0]
        if gap > tau:
            return Check(False, Reason.TOKEN_NOT_ARGMAX, f"greedy token is {gap} units below the best", fp.pos, gap)
        return OK
    expect = sample_token(cand, cmt.temp_milli, cmt.sample_seed, fp.pos)
    if fp.tok != expect:
        return Check(False, Reason.TOKEN_NOT_SAMPLED, f"seed draws {expect}, output has {fp.tok}", fp.pos)
    return OK


def compare(cmt: PolCommitment, fp: LogitFingerprint, logprobs: np.ndarray) -> Check:
    """Tolerance comparison of a committed fingerprint with the validator's own full
    log-prob vector at that position (float64, length ``vocab``)."""
    tier = TIERS[Tier(cmt.tier)]
    tau = tier.tau_units
    if logprobs.shape != (cmt.vocab,):
        return Check(False, Reason.WRONG_MODEL, f"model gives {logprobs.shape[0]} logits, vocab is {cmt.vocab}")
    rq = quantize_logprobs(logprobs)
    ids = np.asarray(fp.ids, dtype=np.int64)
    committed = np.asarray(fp.lps, dtype=np.int64)
    dev = np.abs(rq[ids] - committed)
    worst = int(dev.max())
    if worst > tau:
        j = int(dev.argmax())
        return Check(
            False,
            Reason.VALUE_OUT_OF_TOLERANCE,
            f"token {fp.ids[j]}: committed {fp.lps[j]}, recomputed {int(rq[ids[j]])} (|diff| {worst} > tau {tau})",
            fp.pos,
            worst,
        )
    mask = np.ones(rq.shape[0], dtype=bool)
    mask[ids] = False
    if mask.any():
        best_other = int(rq[mask].min())
        smallest_committed = int(committed.max())
        excess = smallest_committed - best_other
        if excess > tau:
            tok = int(np.flatnonzero(mask)[rq[mask].argmin()])
            return Check(
                False,
                Reason.UNCOMMITTED_EXCEEDS,
                f"uncommitted token {tok} beats the smallest committed value by {excess} units (tau {tau})",
                fp.pos,
                max(worst, excess),
            )
    if cmt.temp_milli == 0:
        gap = int(rq[fp.tok] - rq.min())
        if gap > tau:
            return Check(
                False, Reason.TOKEN_NOT_ARGMAX, f"token {fp.tok} is {gap} units below the argmax", fp.pos, gap
            )
    rule = check_token_rule(cmt, fp)
    if not rule.ok:
        return rule
    return Check(True, Reason.OK, "", fp.pos, worst)


def make_verdict(
    kp: crypto.Keypair, cmt: PolCommitment, seed: bytes, positions: Sequence[int], result: Check
) -> PolVerdict:
    """Sign a verdict on a commitment."""
    v = PolVerdict(
        cmt=cmt.hash(),
        validator=kp.pubkey,
        seed=seed,
        positions=tuple(positions),
        accept=result.ok,
        reason=result.reason,
        bad_pos=None if result.ok else result.position,
        dev_units=result.dev_units,
        signature=crypto.ZERO_SIGNATURE,
    )
    signed: PolVerdict = sign_message(v, kp, "pol-verdict")
    return signed


def verify_verdict(v: PolVerdict) -> bool:
    return verify_message(v, v.validator, "pol-verdict")


def random_model_id(config_json: bytes, seed: int) -> bytes:
    """Model id of a seeded random test model: sha256 over its config and seed."""
    return crypto.sha256(DOMAIN_RANDOM_MODEL, config_json, seed.to_bytes(8, "big"))
