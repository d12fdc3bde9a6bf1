"""Sharded inference: stage proof of logits, the blame rule and the payment split
(normative text: spec/shard.md).

A query may be served by a *route* of stages, each holding a contiguous range of the model's
decoder layers (model/stages.py). The route driver (the miner that won the query) sends each
stage one *frame* per output position: frame 0 is the prompt, frame ``x > 0`` the one token
(first stage) or one hidden row (other stages) that predicts output token ``x``.

The rules, in plain words:

* For every frame a stage records a **stage fingerprint** (a Merkle leaf): the output
  position, the digest of the exact input frame it received, the digest of the exact output
  frame it returned, and its boundary hidden state at the frame's last row (the residual
  stream after its last layer) quantized to a grid of ``2**-STAGE_GRID_BITS``.
* At the end of a session the stage signs a **stage commitment**: query, model, layer range,
  tier, prompt hash, token count and the Merkle root over its fingerprints.
* The driver keeps every leaf (it computed the digests and quantized rows itself from the
  bytes it sent and received) and accepts a stage commitment only if the root equals its
  own; so it can open any stage at any position without the stage being online.
* A validator re-running a position recomputes every boundary from the tokens alone (one
  unsharded pass) and walks the route in layer order: structural faults (route does not
  cover ``0:L`` contiguously, a link ``in_digest[k] != out_digest[k-1]``, a first-stage
  input that is not the committed tokens, a bad Merkle path) are the driver's; otherwise
  the **first** stage whose committed boundary deviates beyond the tier's tolerance is
  blamed, and no other. A later stage's deviation is only inherited from an earlier one,
  because every boundary is recomputed from honest inputs.
* The tolerance is relative to the size of the row: ``max_i |q'_i - q_i| * 1000 <=
  rms(q') * tau_per_mille + 1000 * STAGE_TAU_FLOOR_UNITS`` (integers only; ``rms`` is the
  integer square root of the mean square of the validator's own quantized row).
* The auction payout of a sharded answer is split among the route's stages in proportion
  to ``layers x tokens`` with integer arithmetic (largest remainder, ties to the earlier
  stage), so the parts always sum to the payout.

Pure and sans-IO: numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import crypto
from .codec import Bytes, List, Rec, UInt, encode, fld, message
from .merkle import MerkleProof, merkle_proof, merkle_root, proof_depth, verify_proof
from .messages import sign_message, verify_message
from .pol import MAX_MERKLE_DEPTH, MAX_OUTPUT_TOKENS, Tier

# ---------------------------------------------------------------------------------------
# Constants (spec/shard.md "Constants")
# ---------------------------------------------------------------------------------------
#: boundary values are stored as int32 in units of 2**-STAGE_GRID_BITS (0.000244)
STAGE_GRID_BITS = 12
STAGE_GRID_UNITS_PER_ONE = 1 << STAGE_GRID_BITS
#: int32 range of a quantized coordinate; values beyond clip (|h| > 524,287 is not a hidden
#: state an honest Llama produces)
STAGE_Q_MIN = -(1 << 31)
STAGE_Q_MAX = (1 << 31) - 1
#: widest hidden state a stage fingerprint may carry
MAX_STAGE_HIDDEN = 16384
#: most decoder layers a model may have (u16 on the wire)
MAX_MODEL_LAYERS = 1024
#: most stages one route may have
MAX_ROUTE_STAGES = 64
#: relative tolerance per tier, in thousandths of the row's RMS. Measured on SmolLM2-135M
#: (spec/shard.md "Measurements"): honest KV-cache vs recompute drift <= 1.6e-4 x RMS at
#: the 10/20/30 boundaries; 1e-3 relative weight noise in one stage moves its boundary by
#: >= 4.7e-3 x RMS at every position. bf16 is not measured: a wide placeholder.
STAGE_TAU_PER_MILLE: dict[Tier, int] = {Tier.FP32: 1, Tier.BF16: 64}
#: absolute floor of the tolerance, grid units (quantization and a near-zero row)
STAGE_TAU_FLOOR_UNITS = 4

DOMAIN_FRAME = b"ambient/shard-frame/v1\x00"
DOMAIN_TOKENS_FRAME = b"ambient/shard-tokens/v1\x00"


class Blamed:
    """Who a failed stage check points at."""

    NOBODY = "nobody"
    DRIVER = "driver"  # the route driver (miner): it assembled the route and relayed frames
    STAGE = "stage"


class ShardReason:
    """Stable reason codes (spec/shard.md "Blame")."""

    OK = "ok"
    BAD_SIGNATURE = "bad-signature"
    BAD_ROUTE = "bad-route"
    WRONG_MODEL = "wrong-model"
    BAD_PROOF = "bad-proof"
    BROKEN_LINK = "broken-link"
    WRONG_INPUT = "wrong-input"
    WRONG_OUTPUT = "wrong-output"
    MALFORMED_FINGERPRINT = "malformed-fingerprint"
    BOUNDARY_OUT_OF_TOLERANCE = "boundary-out-of-tolerance"


# ---------------------------------------------------------------------------------------
# Wire formats (type ids 0x0420-0x042F, spec/shard.md "Wire formats")
# ---------------------------------------------------------------------------------------
@message(type_id=0x0420, version=1, max_size=4 * MAX_STAGE_HIDDEN + 256)
@dataclass(frozen=True)
class StageFingerprint:
    """One frame's leaf: ``q`` is the boundary row as int32 little-endian, one per hidden
    coordinate, ``q_i = clip(floor(h_i * 2**STAGE_GRID_BITS + 1/2))``."""

    pos: int = fld(UInt(32))
    in_digest: bytes = fld(Bytes(32, exact=True))
    out_digest: bytes = fld(Bytes(32, exact=True))
    q: bytes = fld(Bytes(4 * MAX_STAGE_HIDDEN))

    def __post_init__(self) -> None:
        if not self.q or len(self.q) % 4:
            raise ValueError("q must hold at least one int32")


@message(type_id=0x0421, version=1, max_size=1024)
@dataclass(frozen=True)
class StageCommitment:
    """A stage's signed claim over one session (signature purpose ``stage-commitment``)."""

    query: bytes = fld(Bytes(32, exact=True))
    model_id: bytes = fld(Bytes(32, exact=True))
    start: int = fld(UInt(16))
    end: int = fld(UInt(16))
    total: int = fld(UInt(16))
    tier: int = fld(UInt(8))
    prompt_hash: bytes = fld(Bytes(32, exact=True))
    num_tokens: int = fld(UInt(32))
    root: bytes = fld(Bytes(32, exact=True))
    stage: bytes = fld(Bytes(32, exact=True))
    signature: bytes = fld(Bytes(64, exact=True))

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= self.total <= MAX_MODEL_LAYERS:
            raise ValueError("need 0 <= start < end <= total <= MAX_MODEL_LAYERS")
        if not 1 <= self.num_tokens <= MAX_OUTPUT_TOKENS:
            raise ValueError(f"num_tokens must be 1..{MAX_OUTPUT_TOKENS}")

    def hash(self) -> bytes:
        return crypto.sha256(encode(self))


@message(type_id=0x0422, version=1, max_size=4 * MAX_STAGE_HIDDEN + 2048)
@dataclass(frozen=True)
class StageOpening:
    """One stage's leaf at one position and its Merkle path to the stage's root."""

    cmt: bytes = fld(Bytes(32, exact=True))  # StageCommitment.hash()
    fp: StageFingerprint = fld(Rec(StageFingerprint))
    sibs: tuple[bytes, ...] = fld(List(Bytes(32, exact=True), MAX_MERKLE_DEPTH))


@message(type_id=0x0423, version=1, max_size=16384)
@dataclass(frozen=True)
class RouteCommitments:
    """The stage commitments of one sharded answer, in layer order (what the driver
    publishes beside its PolCommitment; the settlement splits the payout over it)."""

    stages: tuple[StageCommitment, ...] = fld(List(Rec(StageCommitment), MAX_ROUTE_STAGES))


# ---------------------------------------------------------------------------------------
# Fingerprints and commitments
# ---------------------------------------------------------------------------------------
def quantize_row(row: np.ndarray) -> bytes:
    """A float32 boundary row -> int32 LE bytes on the stage grid (widened exactly to
    float64, multiplied by 2**STAGE_GRID_BITS, ``floor(v + 1/2)``, clipped). NaN/inf raise."""
    a = np.asarray(row, dtype=np.float64).reshape(-1)
    if a.size == 0 or a.size > MAX_STAGE_HIDDEN:
        raise ValueError(f"boundary row of {a.size} values (1..{MAX_STAGE_HIDDEN})")
    if not np.isfinite(a).all():
        raise ValueError("boundary row is not finite")
    q = np.clip(np.floor(a * STAGE_GRID_UNITS_PER_ONE + 0.5), STAGE_Q_MIN, STAGE_Q_MAX).astype("<i4")
    return q.tobytes()


def unpack_q(q: bytes) -> np.ndarray:
    return np.frombuffer(q, dtype="<i4").astype(np.int64)


def frame_digest(*payloads: bytes) -> bytes:
    """Digest of the hidden-state frames that make one leaf's input or output (the prompt
    may come in several frames): ``sha256(DOMAIN_FRAME || payload_1 || payload_2 ...)``, each
    payload the frame's float32 LE bytes; for the last stage's output the single payload is
    the canonical encoding of the LogitFingerprint it returned."""
    return crypto.sha256(DOMAIN_FRAME, *payloads)


def tokens_payload(tokens: Sequence[int]) -> bytes:
    return b"".join(int(t).to_bytes(4, "big") for t in tokens)


def tokens_frame_digest(tokens: Sequence[int]) -> bytes:
    """Digest of a first-stage leaf's input: ``sha256(DOMAIN_TOKENS_FRAME || id_u32be...)``
    over all its frames' tokens in order (so how the prompt was cut into frames does not
    matter)."""
    return crypto.sha256(DOMAIN_TOKENS_FRAME, tokens_payload(tokens))


def frame_tokens(prompt: Sequence[int], output: Sequence[int], pos: int) -> list[int]:
    """The first stage's input at output position ``pos``: the prompt, then one token."""
    return list(prompt) if pos == 0 else [int(output[pos - 1])]


def leaf_bytes(fp: StageFingerprint) -> bytes:
    return encode(fp)


def stage_root(fps: Sequence[StageFingerprint]) -> bytes:
    for i, fp in enumerate(fps):
        if fp.pos != i:
            raise ValueError(f"fingerprint {i} is for position {fp.pos}")
    return merkle_root([leaf_bytes(fp) for fp in fps])


def commit_stage(
    kp: crypto.Keypair, *, query: bytes, model_id: bytes, start: int, end: int, total: int, tier: Tier,
    prompt_hash: bytes, fps: Sequence[StageFingerprint],
) -> StageCommitment:
    """Sign a stage commitment over ``fps`` (positions 0..n-1 in order)."""
    cmt = StageCommitment(query=query, model_id=model_id, start=start, end=end, total=total, tier=int(tier),
                          prompt_hash=prompt_hash, num_tokens=len(fps), root=stage_root(fps), stage=kp.pubkey,
                          signature=crypto.ZERO_SIGNATURE)
    signed: StageCommitment = sign_message(cmt, kp, "stage-commitment")
    return signed


def verify_stage_commitment(cmt: StageCommitment) -> bool:
    return verify_message(cmt, cmt.stage, "stage-commitment")


def open_stage(cmt: StageCommitment, fps: Sequence[StageFingerprint], position: int) -> StageOpening:
    mp = merkle_proof([leaf_bytes(fp) for fp in fps], position)
    return StageOpening(cmt=cmt.hash(), fp=fps[position], sibs=mp.siblings)


# ---------------------------------------------------------------------------------------
# Tolerance and blame
# ---------------------------------------------------------------------------------------
def boundary_deviation(committed_q: bytes, recomputed_row: np.ndarray) -> tuple[int, int]:
    """``(max_i |q'_i - q_i|, rms(q'))`` in grid units, ``q'`` the validator's own row."""
    q = unpack_q(committed_q)
    qv = unpack_q(quantize_row(recomputed_row))
    if q.shape != qv.shape:
        raise ValueError(f"committed row has {q.size} values, recomputed {qv.size}")
    dev = int(np.abs(qv - q).max())
    # exact integer mean square: python ints (int64 squares of 2**31 values could overflow)
    rms = math.isqrt(sum(int(v) * int(v) for v in qv.tolist()) // qv.size)
    return dev, rms


def within_tolerance(dev_units: int, rms_units: int, tier: Tier) -> bool:
    """``dev * 1000 <= rms * tau_per_mille + 1000 * STAGE_TAU_FLOOR_UNITS``."""
    return dev_units * 1000 <= rms_units * STAGE_TAU_PER_MILLE[tier] + 1000 * STAGE_TAU_FLOOR_UNITS


@dataclass(frozen=True)
class Blame:
    """Outcome of checking a route at one position. ``who`` is a :class:`Blamed` value;
    ``stage`` the index (layer order) of the blamed stage, when a stage is blamed; ``devs``
    the (dev, rms) seen per stage up to the verdict."""

    who: str
    reason: str
    stage: int | None = None
    position: int | None = None
    detail: str = ""
    devs: tuple[tuple[int, int], ...] = ()

    @property
    def ok(self) -> bool:
        return self.who == Blamed.NOBODY


def check_route(cmts: Sequence[StageCommitment], *, expected_model_id: bytes, total_layers: int) -> Blame:
    """Structural check of a route's commitments (no model run): all signatures verify,
    one query/model/prompt/token count/tier, ranges tile ``0:total_layers`` in order."""
    if not cmts or len(cmts) > MAX_ROUTE_STAGES:
        return Blame(Blamed.DRIVER, ShardReason.BAD_ROUTE, detail=f"{len(cmts)} stages")
    head = cmts[0]
    at = 0
    for k, c in enumerate(cmts):
        if not verify_stage_commitment(c):
            return Blame(Blamed.DRIVER, ShardReason.BAD_SIGNATURE, k, detail="stage commitment signature")
        if c.model_id != expected_model_id or c.total != total_layers:
            return Blame(Blamed.DRIVER, ShardReason.WRONG_MODEL, k, detail="stage names another model")
        if (c.query, c.prompt_hash, c.num_tokens, c.tier) != (head.query, head.prompt_hash, head.num_tokens, head.tier):
            return Blame(Blamed.DRIVER, ShardReason.BAD_ROUTE, k, detail="stages disagree on query/prompt/tokens/tier")
        if c.start != at:
            return Blame(Blamed.DRIVER, ShardReason.BAD_ROUTE, k, detail=f"stage starts at {c.start}, expected {at}")
        at = c.end
    if at != total_layers:
        return Blame(Blamed.DRIVER, ShardReason.BAD_ROUTE, detail=f"route ends at layer {at} of {total_layers}")
    return Blame(Blamed.NOBODY, ShardReason.OK)


def blame_position(
    cmts: Sequence[StageCommitment],
    openings: Sequence[StageOpening],
    recomputed: Sequence[np.ndarray],
    *,
    position: int,
    first_input_digest: bytes,
    final_output_digest: bytes,
) -> Blame:
    """The blame rule at one position (spec/shard.md "Blame"). ``cmts`` passed
    :func:`check_route`; ``openings[k]`` is stage k's opening at ``position``;
    ``recomputed[k]`` the validator's own boundary row after stage k's last layer (float32);
    ``first_input_digest`` = :func:`tokens_frame_digest` of the committed tokens' frame and
    ``final_output_digest`` = :func:`frame_digest` of the driver's committed final-logits
    fingerprint at ``position``."""
    if len(openings) != len(cmts) or len(recomputed) != len(cmts):
        return Blame(Blamed.DRIVER, ShardReason.BAD_PROOF, position=position, detail="one opening per stage")
    for k, (c, op) in enumerate(zip(cmts, openings, strict=True)):
        fp = op.fp
        if op.cmt != c.hash() or fp.pos != position:
            return Blame(Blamed.DRIVER, ShardReason.BAD_PROOF, k, position, "opening for another commitment/position")
        if len(op.sibs) != proof_depth(c.num_tokens) or not verify_proof(
            c.root, leaf_bytes(fp), MerkleProof(position, op.sibs), c.num_tokens
        ):
            return Blame(Blamed.DRIVER, ShardReason.BAD_PROOF, k, position, "Merkle path does not reach the root")
        if len(fp.q) != 4 * int(np.asarray(recomputed[k]).size):
            return Blame(Blamed.STAGE, ShardReason.MALFORMED_FINGERPRINT, k, position, "row width differs")
    if openings[0].fp.in_digest != first_input_digest:
        return Blame(Blamed.DRIVER, ShardReason.WRONG_INPUT, 0, position, "first stage was fed other tokens")
    for k in range(1, len(cmts)):
        if openings[k].fp.in_digest != openings[k - 1].fp.out_digest:
            return Blame(Blamed.DRIVER, ShardReason.BROKEN_LINK, k, position, f"stage {k} input != stage {k - 1} output")
    if openings[-1].fp.out_digest != final_output_digest:
        return Blame(Blamed.DRIVER, ShardReason.WRONG_OUTPUT, len(cmts) - 1, position,
                     "final fingerprint is not what the last stage returned")
    devs: list[tuple[int, int]] = []
    for k, (c, op) in enumerate(zip(cmts, openings, strict=True)):
        dev, rms = boundary_deviation(op.fp.q, recomputed[k])
        devs.append((dev, rms))
        if not within_tolerance(dev, rms, Tier(c.tier)):
            return Blame(Blamed.STAGE, ShardReason.BOUNDARY_OUT_OF_TOLERANCE, k, position,
                         f"stage {c.start}:{c.end} boundary off by {dev} units (rms {rms})", tuple(devs))
    return Blame(Blamed.NOBODY, ShardReason.OK, position=position, devs=tuple(devs))


# ---------------------------------------------------------------------------------------
# Payment
# ---------------------------------------------------------------------------------------
def split_payment(total: int, work: Sequence[tuple[int, int]]) -> list[int]:
    """Split ``total`` lamports over stages with ``(layers, tokens)`` each, proportional to
    ``layers * tokens``: ``base_i = total * w_i // W``, then the ``total - sum(base)``
    leftover lamports go one each to the largest remainders ``total * w_i mod W`` (ties: the
    earlier stage). The parts sum to ``total`` exactly."""
    if total < 0 or not work or any(a < 0 or b < 0 for a, b in work):
        raise ValueError("need total >= 0 and non-negative (layers, tokens) for >= 1 stage")
    w = [a * b for a, b in work]
    big_w = sum(w)
    if big_w == 0:
        raise ValueError("no work to pay for")
    base = [total * wi // big_w for wi in w]
    rem = [total * wi % big_w for wi in w]
    left = total - sum(base)
    for i in sorted(range(len(w)), key=lambda i: (-rem[i], i))[:left]:
        base[i] += 1
    return base
