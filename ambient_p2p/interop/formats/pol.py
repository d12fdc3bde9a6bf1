"""Interop vectors for proof of logits (spec/pol.md, "Interop vectors").

Handlers (all inputs are JSON; binary values are lower-case hex; logits are IEEE-754
float32 little-endian, so no float ever passes through JSON):

* ``fingerprint``: ``{position, k, temp_milli, sample_seed, logits_f32le}`` -> the
  fingerprint (fields as on the wire), its canonical encoding and Merkle leaf hash.
* ``commitment``: ``{proof}`` (a PolProof CBOR) -> commitment hash, root, token hashes;
  rejected if the signature, the token hashes or the Merkle root over the fingerprints
  do not hold.
* ``opening``: ``{commitment, opening, position, output, validator_logits_f32le}`` -> the
  accept decision with the largest deviation in grid units, or the reject reason. The
  validator's recomputed logits are given, so no model is needed to check a vector.

Vectors use a 64-token vocabulary so the logits stay small; the rules are the same as for
SmolLM2's 49,152.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from ...core import crypto, pol
from ...core.codec import DecodeError, decode, encode
from ...core.merkle import hash_leaf, merkle_root
from ...core.messages import verify_message
from .. import Case, Rejected

FORMAT = "pol"
VOCAB = 64
MINER = crypto.Keypair.deterministic("pol-interop-miner", 0)
MODEL_ID = crypto.sha256(b"ambient/pol-interop-model/v1")


def _f32(a: np.ndarray) -> str:
    return np.asarray(a, dtype="<f4").tobytes().hex()


def _logits(hexstr: str) -> np.ndarray:
    try:
        raw = bytes.fromhex(hexstr)
    except ValueError:
        raise Rejected("malformed", "logits are not hex") from None
    if len(raw) % 4 or not raw:
        raise Rejected("malformed", "logits must be a non-empty float32 array")
    arr = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    if not np.isfinite(arr).all():
        raise Rejected("malformed", "logits must be finite")
    return arr


def _fp_json(fp: pol.LogitFingerprint) -> dict[str, Any]:
    return {"pos": fp.pos, "tok": fp.tok, "ids": list(fp.ids), "lps": list(fp.lps)}


def _json_in(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError:
        raise Rejected("malformed", "input is not JSON") from None
    if not isinstance(obj, dict):
        raise Rejected("malformed", "input must be a JSON object")
    return obj


def _decode(hexstr: Any, cls: type) -> Any:
    try:
        return decode(bytes.fromhex(hexstr), expected=cls)
    except (ValueError, TypeError) as exc:
        reason = exc.reason if isinstance(exc, DecodeError) else "malformed"
        raise Rejected(reason, str(exc)) from None


def run(handler: str, data: bytes) -> Any:
    obj = _json_in(data)
    if handler == "fingerprint":
        fp = pol.fingerprint_from_logits(
            int(obj["position"]), _logits(obj["logits_f32le"]), int(obj["k"]), int(obj["temp_milli"]), bytes.fromhex(obj["sample_seed"])
        )
        leaf = encode(fp)
        return {"fingerprint": _fp_json(fp), "leaf": leaf.hex(), "leaf_hash": hash_leaf(leaf).hex()}
    if handler == "commitment":
        proof: pol.PolProof = _decode(obj["proof"], pol.PolProof)
        cmt = proof.commitment
        head = pol.check_commitment(cmt, expected_model_id=cmt.model_id, expected_vocab=cmt.vocab, prompt=proof.prompt, output=proof.output)
        if not head.ok:
            raise Rejected(head.reason, head.detail)
        if len(proof.fps) != cmt.num_tokens or merkle_root([pol.leaf_bytes(f) for f in proof.fps]) != cmt.root:
            raise Rejected(pol.Reason.BAD_PROOF, "fingerprints do not hash to the committed root")
        return {
            "commitment_hash": cmt.hash().hex(),
            "root": cmt.root.hex(),
            "prompt_hash": cmt.prompt_hash.hex(),
            "output_hash": cmt.output_hash.hex(),
            "num_tokens": cmt.num_tokens,
        }
    if handler == "opening":
        cmt = _decode(obj["commitment"], pol.PolCommitment)
        op = _decode(obj["opening"], pol.PolOpening)
        output = [int(t) for t in obj["output"]]
        position = int(obj["position"])
        if not 0 <= position < cmt.num_tokens:
            raise Rejected(pol.Reason.WRONG_POSITION, f"position {position} outside 0..{cmt.num_tokens - 1}")
        if not verify_message(cmt, cmt.miner, "pol-commitment"):
            raise Rejected(pol.Reason.BAD_SIGNATURE, "commitment signature does not verify")
        if pol.tokens_hash(output) != cmt.output_hash or len(output) != cmt.num_tokens:
            raise Rejected(pol.Reason.WRONG_OUTPUT, "output tokens do not match output_hash")
        for c in (pol.check_opening(cmt, op, position, output), pol.check_token_rule(cmt, op.fp)):
            if not c.ok:
                raise Rejected(c.reason, c.detail)
        c = pol.compare(cmt, op.fp, pol.log_softmax(_logits(obj["validator_logits_f32le"])))
        if not c.ok:
            raise Rejected(c.reason, c.detail)
        return {"accept": True, "dev_units": c.dev_units}
    raise Rejected("unknown-handler", handler)


# ---------------------------------------------------------------------------------------
# vector generation
# ---------------------------------------------------------------------------------------
def _logit_rows(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 3, VOCAB).astype("<f4") for _ in range(n)]


def _proof(rows: list[np.ndarray], temp_milli: int = 0, fps_edit: Any = None, out_edit: Any = None) -> pol.PolProof:
    seed = crypto.sha256(b"interop-sample-seed") if temp_milli else pol.ZERO_HASH
    fps = [pol.fingerprint_from_logits(i, r, pol.TOP_K, temp_milli, seed) for i, r in enumerate(rows)]
    if fps_edit is not None:
        fps = fps_edit(fps)
    output = [f.tok for f in fps]
    return pol.commit(
        MINER, model_id=MODEL_ID, tier=pol.Tier.FP32, vocab=VOCAB, top_k=pol.TOP_K, temp_milli=temp_milli,
        sample_seed=seed, prompt=[1, 2, 3, 4], output=output, fps=fps,
    )


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def _opening_case(
    name: str, desc: str, proof: pol.PolProof, position: int, opening: pol.PolOpening, logits: np.ndarray, reason: str | None
) -> Case:
    inp = {
        "commitment": encode(proof.commitment).hex(),
        "opening": encode(opening).hex(),
        "position": position,
        "output": list(proof.output),
        "validator_logits_f32le": _f32(logits),
    }
    data = _json_bytes(inp)
    out = None
    if reason is None:
        out = run("opening", data)
    return Case("opening", name, data, out, desc, reason=reason, input_file="input.json")


def cases() -> list[Case]:
    out: list[Case] = []
    # -- fingerprint --------------------------------------------------------------------
    rows = _logit_rows(1, 3)
    tie = np.zeros(VOCAB, dtype="<f4")
    tie[[5, 9, 40, 41]] = 2.0  # equal values: order by ascending id
    for name, desc, logits, k, t in (
        ("greedy_k8", "greedy, k=8, random logits", rows[0], 8, 0),
        ("greedy_k1", "greedy, k=1", rows[1], 1, 0),
        ("sampled_t800", "seeded sampling at temperature 0.8 from the committed top-8", rows[2], 8, 800),
        ("ties_by_id", "equal logits: candidates ordered by ascending id", tie, 8, 0),
    ):
        inp = {"position": 3, "k": k, "temp_milli": t, "sample_seed": crypto.sha256(b"fp-seed").hex(), "logits_f32le": _f32(logits)}
        data = _json_bytes(inp)
        out.append(Case("fingerprint", name, data, run("fingerprint", data), desc, input_file="input.json"))
    bad = _json_bytes({"position": 0, "k": 8, "temp_milli": 0, "sample_seed": "00" * 32, "logits_f32le": "0000c07f"})
    out.append(Case("fingerprint", "reject_nan_logit", bad, None, "a NaN logit", reason="malformed", input_file="input.json"))

    # -- commitment ---------------------------------------------------------------------
    rows12 = _logit_rows(2, 12)
    honest = _proof(rows12)
    sampled = _proof(rows12, temp_milli=1000)
    for name, desc, proof in (
        ("greedy_12_tokens", "greedy proof over 12 tokens", honest),
        ("sampled_12_tokens", "seeded-sampling proof over 12 tokens", sampled),
        ("one_token", "a proof of a single token (Merkle tree of one leaf)", _proof(rows12[:1])),
    ):
        data = _json_bytes({"proof": encode(proof).hex()})
        out.append(Case("commitment", name, data, run("commitment", data), desc, input_file="input.json"))
    fps = list(honest.fps)
    fps[4] = dataclasses.replace(fps[4], lps=tuple(v + 1 for v in fps[4].lps))
    for name, desc, proof, reason in (
        ("reject_root_mismatch", "a fingerprint changed after committing", dataclasses.replace(honest, fps=tuple(fps)), pol.Reason.BAD_PROOF),
        (
            "reject_bad_signature",
            "commitment root changed, signature kept",
            dataclasses.replace(honest, commitment=dataclasses.replace(honest.commitment, root=bytes(32))),
            pol.Reason.BAD_SIGNATURE,
        ),
        ("reject_output_swapped", "output token changed, commitment kept", dataclasses.replace(honest, output=(7, *honest.output[1:])), pol.Reason.WRONG_OUTPUT),
    ):
        data = _json_bytes({"proof": encode(proof).hex()})
        out.append(Case("commitment", name, data, None, desc, reason=reason, input_file="input.json"))

    # -- opening ------------------------------------------------------------------------
    ops = pol.open_positions(honest, range(12))
    drift = np.random.default_rng(3).uniform(-3e-4, 3e-4, VOCAB)
    out.append(_opening_case("honest_pos0", "honest opening, identical recompute", honest, 0, ops[0], rows12[0], None))
    out.append(_opening_case("honest_pos11", "honest opening of the last position", honest, 11, ops[11], rows12[11], None))
    out.append(_opening_case("honest_drift_3e-4", "recompute drifted by up to 3e-4 on every logit", honest, 5, ops[5], rows12[5] + drift, None))
    sops = pol.open_positions(sampled, [6])
    out.append(_opening_case("sampled_pos6", "sampled proof, token reproduced from seed", sampled, 6, sops[0], rows12[6], None))
    bad_sib = dataclasses.replace(ops[5], sibs=(bytes(32), *ops[5].sibs[1:]))
    out.append(_opening_case("reject_wrong_proof", "a Merkle sibling replaced", honest, 5, bad_sib, rows12[5], pol.Reason.BAD_PROOF))
    forged = dataclasses.replace(ops[5], fp=dataclasses.replace(ops[5].fp, lps=tuple(v + 1 for v in ops[5].fp.lps)))
    out.append(_opening_case("reject_forged_values", "values not the committed ones", honest, 5, forged, rows12[5], pol.Reason.BAD_PROOF))
    out.append(_opening_case("reject_wrong_index", "answers position 6 with the opening of 5", honest, 6, ops[5], rows12[6], pol.Reason.WRONG_POSITION))
    relabeled = dataclasses.replace(ops[5], fp=dataclasses.replace(ops[5].fp, pos=6))
    out.append(_opening_case("reject_relabeled_index", "opening of 5 relabeled as 6", honest, 6, relabeled, rows12[6], pol.Reason.BAD_PROOF))
    shifted = rows12[5].copy()
    shifted[ops[5].fp.ids[2]] += np.float32(0.01)
    out.append(_opening_case("reject_out_of_tolerance", "validator's value differs by 0.01 nat", honest, 5, ops[5], shifted, pol.Reason.VALUE_OUT_OF_TOLERANCE))
    # the (k+1)-th token raised just above the k-th: committed values barely move (the
    # normalizer changes by ~p(k+1)), but an uncommitted token now beats a committed one
    for pos in range(12):
        outsider = rows12[pos].copy()
        order = np.argsort(-outsider.astype(np.float64), kind="stable")
        outsider[order[pol.TOP_K]] = outsider[order[pol.TOP_K - 1]] + np.float32(0.003)
        try:
            run("opening", _opening_case("probe", "", honest, pos, ops[pos], outsider, pol.Reason.OK).input)
        except Rejected as rej:
            if rej.reason == pol.Reason.UNCOMMITTED_EXCEEDS:
                break
    else:
        raise AssertionError("no position yields a pure uncommitted-exceeds vector")
    out.append(
        _opening_case(
            "reject_uncommitted_exceeds", "the (k+1)-th token raised 0.003 above the k-th", honest, pos, ops[pos], outsider,
            pol.Reason.UNCOMMITTED_EXCEEDS,
        )
    )
    other = _proof(_logit_rows(4, 12))
    foreign = pol.open_positions(other, [5])[0]
    out.append(_opening_case("reject_other_commitment", "opening from another commitment", honest, 5, foreign, rows12[5], pol.Reason.WRONG_COMMITMENT))

    def swap(fps: list[pol.LogitFingerprint]) -> list[pol.LogitFingerprint]:
        fps = list(fps)
        fps[7] = dataclasses.replace(fps[7], tok=fps[7].ids[2])
        return fps

    swapped = _proof(rows12, fps_edit=swap)
    out.append(
        _opening_case(
            "reject_token_not_argmax", "greedy proof whose token 7 is the third candidate", swapped, 7,
            pol.open_positions(swapped, [7])[0], rows12[7], pol.Reason.TOKEN_NOT_ARGMAX,
        )
    )

    def resample(fps: list[pol.LogitFingerprint]) -> list[pol.LogitFingerprint]:
        fps = list(fps)
        f = fps[6]
        fps[6] = dataclasses.replace(f, tok=next(i for i in f.ids if i != f.tok))
        return fps

    wrong_sample = _proof(rows12, temp_milli=1000, fps_edit=resample)
    out.append(
        _opening_case(
            "reject_token_not_sampled", "sampled proof whose token 6 is not the seeded draw", wrong_sample, 6,
            pol.open_positions(wrong_sample, [6])[0], rows12[6], pol.Reason.TOKEN_NOT_SAMPLED,
        )
    )
    return out
