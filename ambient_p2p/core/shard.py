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
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import crypto
from .codec import Bytes, List, Rec, UInt, encode, fld, message
from .merkle import MerkleProof, merkle_proof, merkle_root, proof_depth, verify_proof
from .messages import sign_message, verify_message
from .pol import MAX_MERKLE_DEPTH, MAX_OUTPUT_TOKENS, Tier

if TYPE_CHECKING:  # the settlement hooks run inside the auction program (core/auction.py)
    from .auction import AccountsView, IxAccount
    from .logit_pool import PoolView

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


# ---------------------------------------------------------------------------------------
# Settlement of a sharded answer (spec/shard.md "Payment"): the route account
# ---------------------------------------------------------------------------------------
#: Most stages a settled route may name (the route account must stay within the largest
#: auction account kind, which bounds snapshot records: ledger/meta.py).
MAX_SETTLED_ROUTE_STAGES = 8
#: Seed of the route account PDA ``["route", query]`` (auction program).
ROUTE_SEED = b"route"
#: Byte 0 of a route account (core/auction.py ``Kind.ROUTE``).
ROUTE_ACCOUNT_KIND = 8
#: Instruction tag of post_route (core/auction.py ``Instr.POST_ROUTE``).
POST_ROUTE_TAG = 12

_ROUTE_HEAD = struct.Struct("<BB")  # kind, stage count
_ROUTE_STAGE = struct.Struct("<32sHHB32s")  # stage key, start, end, tier, root
_ROUTE_IX_HEAD = struct.Struct("<IB")  # tag, stage count
_ROUTE_IX_STAGE = struct.Struct("<32sHHB32s64s")  # ... and the stage's commitment signature
#: The largest route account (2 + 8 x 69 = 554 bytes, under the 1,368-byte dispute account).
MAX_ROUTE_ACCOUNT_BYTES = _ROUTE_HEAD.size + MAX_SETTLED_ROUTE_STAGES * _ROUTE_STAGE.size


@dataclass(frozen=True)
class RouteStage:
    """One stage of a settled route: its identity (paid, credited LStake work), its layer
    range, tier and the Merkle root it signed."""

    stage: bytes
    start: int
    end: int
    tier: int
    root: bytes


@dataclass(frozen=True)
class RouteAccount:
    """The route a sharded answer was served by (PDA ``["route", query]``), written by the
    winner's ``post_route`` after ``post_result`` and read by ``settle``."""

    stages: tuple[RouteStage, ...]

    def pack(self) -> bytes:
        return _ROUTE_HEAD.pack(ROUTE_ACCOUNT_KIND, len(self.stages)) + b"".join(
            _ROUTE_STAGE.pack(s.stage, s.start, s.end, s.tier, s.root) for s in self.stages)

    @classmethod
    def unpack(cls, data: bytes) -> RouteAccount:
        if len(data) < _ROUTE_HEAD.size or data[0] != ROUTE_ACCOUNT_KIND:
            raise ValueError("not a route account")
        _, n = _ROUTE_HEAD.unpack_from(data)
        if not 1 <= n <= MAX_SETTLED_ROUTE_STAGES or len(data) != _ROUTE_HEAD.size + n * _ROUTE_STAGE.size:
            raise ValueError("route account of a wrong size")
        return cls(tuple(RouteStage(*_ROUTE_STAGE.unpack_from(data, _ROUTE_HEAD.size + i * _ROUTE_STAGE.size))
                         for i in range(n)))

    def work(self, num_tokens: int) -> list[tuple[int, int]]:
        """Each stage's ``(layers, tokens)``: every stage of a route ran every token."""
        return [(s.end - s.start, num_tokens) for s in self.stages]

    def payees(self) -> list[bytes]:
        """The distinct stage keys in route order (the accounts ``settle`` lists)."""
        return list(dict.fromkeys(s.stage for s in self.stages))


def route_address(query: bytes) -> bytes:
    """The route account of a query: PDA of ``["route", query]`` under the auction program."""
    from solders.pubkey import Pubkey

    from .auction import AUCTION_PROGRAM_ID

    addr, _bump = Pubkey.find_program_address([ROUTE_SEED, bytes(query)], Pubkey(AUCTION_PROGRAM_ID))
    return bytes(addr)


def post_route_data(cmts: Sequence[StageCommitment]) -> bytes:
    """``post_route`` instruction data: tag u32, count u8, then per stage (layer order)
    key, start u16, end u16, tier u8, root, signature."""
    if not 1 <= len(cmts) <= MAX_SETTLED_ROUTE_STAGES:
        raise ValueError(f"a settled route has 1..{MAX_SETTLED_ROUTE_STAGES} stages")
    return _ROUTE_IX_HEAD.pack(POST_ROUTE_TAG, len(cmts)) + b"".join(
        _ROUTE_IX_STAGE.pack(c.stage, c.start, c.end, c.tier, c.root, c.signature) for c in cmts)


def post_route_size(data: bytes) -> int:
    """The exact size ``data`` must have, from its count byte (the header's size when it
    has none)."""
    if len(data) < _ROUTE_IX_HEAD.size:
        return _ROUTE_IX_HEAD.size
    n = data[_ROUTE_IX_HEAD.size - 1]
    return _ROUTE_IX_HEAD.size + n * _ROUTE_IX_STAGE.size


def route_error(q_model_id: bytes, q_prompt_hash: bytes, q_num_tokens: int, query: bytes,
                cmts: Sequence[StageCommitment]) -> str | None:
    """Why the stage commitments of a posted route do not settle ``query``'s result, or
    None: 1..MAX_SETTLED_ROUTE_STAGES stages tiling ``0:total`` in order, each signed by
    its stage over this query, model, prompt and token count."""
    if not 1 <= len(cmts) <= MAX_SETTLED_ROUTE_STAGES:
        return f"a settled route has 1..{MAX_SETTLED_ROUTE_STAGES} stages"
    total = cmts[-1].end
    at = 0
    for k, c in enumerate(cmts):
        if c.start != at or c.total != total:
            return f"stage {k} ({c.start}:{c.end} of {c.total}) does not continue the route at layer {at}"
        if (c.query, c.model_id, c.prompt_hash, c.num_tokens) != (query, q_model_id, q_prompt_hash, q_num_tokens):
            return f"stage {k} committed to another query, model, prompt or token count"
        if c.tier not in {int(t) for t in Tier}:
            return f"stage {k} names unknown tier {c.tier}"
        if not verify_stage_commitment(c):
            return f"stage {k}'s commitment signature does not verify"
        at = c.end
    return None


def decode_post_route(data: bytes, *, query: bytes, model_id: bytes, prompt_hash: bytes,
                      num_tokens: int) -> list[StageCommitment]:
    """The stage commitments a ``post_route`` instruction stands for (the query's fields
    fill what the data does not carry). Raises ValueError."""
    if len(data) != post_route_size(data):
        raise ValueError("post_route data of a wrong size")
    n = data[_ROUTE_IX_HEAD.size - 1]
    out: list[StageCommitment] = []
    if n == 0:
        return out
    total = _ROUTE_IX_STAGE.unpack_from(data, _ROUTE_IX_HEAD.size + (n - 1) * _ROUTE_IX_STAGE.size)[2]
    for i in range(n):
        key, start, end, tier, root, sig = _ROUTE_IX_STAGE.unpack_from(data, _ROUTE_IX_HEAD.size
                                                                       + i * _ROUTE_IX_STAGE.size)
        out.append(StageCommitment(query=query, model_id=model_id, start=start, end=end, total=total, tier=tier,
                                   prompt_hash=prompt_hash, num_tokens=num_tokens, root=root, stage=key,
                                   signature=sig))
    return out


def post_route(view: AccountsView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    """``post_route`` (auction tag 12): the winner of a query whose result is posted names
    the route that served it (accounts: winner signer, query, route account PDA). Each
    stage's signed commitment over this query must verify; one route per query."""
    from . import auction as au

    au._need(accs, 3, "post_route")
    winner, qacct, racct = accs
    au._signer(winner, "winner")
    au._writable(racct)
    q = au._load_query(view, qacct.key)
    au._status(q, au.QueryStatus.RESULT_POSTED)
    if winner.key != q.winner:
        raise au.AuctionError("auction-not-winner", f"only {crypto.encode_address(q.winner)} may post the route")
    au._expect(racct, route_address(qacct.key), "route")
    if view.auction_data(racct.key) is not None:
        raise au.AuctionError("auction-route-exists", "this query's route is already posted")
    try:
        cmts = decode_post_route(data, query=qacct.key, model_id=q.model_id, prompt_hash=q.prompt_hash,
                                 num_tokens=q.num_tokens)
    except ValueError as exc:
        raise au.AuctionError("auction-bad-route", str(exc)) from None
    err = route_error(q.model_id, q.prompt_hash, q.num_tokens, qacct.key, cmts)
    if err is not None:
        raise au.AuctionError("auction-bad-route", err)
    view.set_auction_data(racct.key, RouteAccount(tuple(RouteStage(c.stage, c.start, c.end, c.tier, c.root)
                                                        for c in cmts)).pack())


def load_route(view: AccountsView, query: bytes) -> RouteAccount | None:
    """The posted route of ``query`` (None: an unsharded answer)."""
    data = view.auction_data(route_address(query))
    return None if data is None else RouteAccount.unpack(data)


def settle_route(view: AccountsView, query: bytes, extra: Sequence[IxAccount]) -> RouteAccount | None:
    """``settle``'s check of the accounts it lists after the drawn validators: none for an
    unsharded answer; the route account, then :meth:`RouteAccount.payees`, for a sharded
    one. Raises ``auction-bad-accounts``."""
    from .auction import AuctionError

    route = load_route(view, query)
    want = [] if route is None else [route_address(query), *route.payees()]
    if [a.key for a in extra] != want:
        raise AuctionError("auction-bad-accounts", "settle lists the drawn validators, then for a sharded answer "
                           "its route account and the route's stage keys in route order")
    return route


def pay_route(view: AccountsView, src: bytes, route: RouteAccount, pay: int, num_tokens: int) -> None:
    """A verified sharded answer: ``pay`` lamports from ``src`` split over the stages by
    layers x tokens, and each stage credited the same split of ``num_tokens`` as LStake work
    (spec/shard.md "Payment")."""
    from .auction import _move

    work = route.work(num_tokens)
    for s, part in zip(route.stages, split_payment(pay, work), strict=True):
        _move(view, src, s.stage, part)


def credit_route(view: PoolView, route: RouteAccount, num_tokens: int) -> None:
    """Each stage's share of the validated tokens (the payment split applied to
    ``num_tokens``) as LStake work credit."""
    for s, toks in zip(route.stages, split_payment(num_tokens, route.work(num_tokens)), strict=True):
        view.credit_work(s.stage, tokens_served=toks)
