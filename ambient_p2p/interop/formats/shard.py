"""Sharded-inference vectors (spec/shard.md).

``quantize/<case>``: input.json {row_f32le (hex)} -> {q (hex, int32 LE per value)}; a
non-finite value must reject (``malformed-row``).
``split/<case>``: input.json {total, work: [[layers, tokens], ...]} -> {parts}; no work
must reject (``no-work``).
``commitment/<case>``: input.json {stage_seed, query, model_id, start, end, total, tier,
prompt_hash, leaves: [{pos, in_digest, out_digest, q}]} (hex strings) -> {leaf_hashes,
root, commitment (hex canonical CBOR, signed by ``Keypair.deterministic("stage",
stage_seed)``), hash}.
``blame/<case>``: input.json {commitments: [hex CBOR StageCommitment], openings: [hex CBOR
StageOpening], recomputed_f32le: [hex, one row per stage], position, first_input_digest,
final_output_digest, model_id, total_layers} -> {who, reason, stage, devs}: the route
check and then the blame rule at that position.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np

from ...core import codec, pol
from ...core import shard as sh
from ...core.crypto import Keypair
from ...core.merkle import hash_leaf
from .. import Case, Rejected, case_from_run

FORMAT = "shard"
HIDDEN = 16
MODEL_ID = bytes([0xAB]) * 32
QUERY = bytes(range(32))


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def run(handler: str, data: bytes) -> Any:
    try:
        return _run(handler, data)
    except Rejected:
        raise
    except (ValueError, KeyError, TypeError, IndexError, codec.DecodeError) as exc:  # malformed input, never a crash
        raise Rejected("malformed", f"{type(exc).__name__}: {exc}") from None


def _run(handler: str, data: bytes) -> Any:
    v = json.loads(data)
    if handler == "quantize":
        row = np.frombuffer(bytes.fromhex(v["row_f32le"]), dtype="<f4")
        try:
            return {"q": sh.quantize_row(row).hex()}
        except ValueError as exc:
            raise Rejected("malformed-row", str(exc)) from None
    if handler == "split":
        try:
            return {"parts": sh.split_payment(int(v["total"]), [(int(a), int(b)) for a, b in v["work"]])}
        except ValueError as exc:
            raise Rejected("no-work", str(exc)) from None
    if handler == "commitment":
        fps = [sh.StageFingerprint(pos=x["pos"], in_digest=bytes.fromhex(x["in_digest"]),
                                   out_digest=bytes.fromhex(x["out_digest"]), q=bytes.fromhex(x["q"]))
               for x in v["leaves"]]
        cmt = sh.commit_stage(Keypair.deterministic("stage", v["stage_seed"]), query=bytes.fromhex(v["query"]),
                              model_id=bytes.fromhex(v["model_id"]), start=v["start"], end=v["end"], total=v["total"],
                              tier=pol.Tier(v["tier"]), prompt_hash=bytes.fromhex(v["prompt_hash"]), fps=fps)
        return {"leaf_hashes": [hash_leaf(sh.leaf_bytes(fp)).hex() for fp in fps], "root": cmt.root.hex(),
                "commitment": codec.encode(cmt).hex(), "hash": cmt.hash().hex()}
    if handler == "blame":
        cmts = [codec.decode(bytes.fromhex(h), expected=sh.StageCommitment) for h in v["commitments"]]
        head = sh.check_route(cmts, expected_model_id=bytes.fromhex(v["model_id"]), total_layers=v["total_layers"])
        if not head.ok:
            b = head
        else:
            b = sh.blame_position(
                cmts, [codec.decode(bytes.fromhex(h), expected=sh.StageOpening) for h in v["openings"]],
                [np.frombuffer(bytes.fromhex(h), dtype="<f4") for h in v["recomputed_f32le"]],
                position=v["position"], first_input_digest=bytes.fromhex(v["first_input_digest"]),
                final_output_digest=bytes.fromhex(v["final_output_digest"]))
        return {"who": b.who, "reason": b.reason, "stage": b.stage, "devs": [list(d) for d in b.devs]}
    raise Rejected("unknown-handler", handler)


def _synthetic_route(n_stages: int = 3) -> dict[str, Any]:
    """A 2-token answer through ``n_stages`` stages of 2 layers each with seeded rows."""
    rng = np.random.default_rng(21)
    prompt, output = [1, 2, 3], [40, 41]
    rows = [[rng.normal(0, 8, HIDDEN).astype(np.float32) for _ in output] for _ in range(n_stages)]
    final = [codec.encode(pol.LogitFingerprint(pos=x, tok=t, ids=(t,), lps=(0,))) for x, t in enumerate(output)]
    leaves: list[list[sh.StageFingerprint]] = [[] for _ in range(n_stages)]
    for x in range(len(output)):
        prev = sh.tokens_frame_digest(sh.frame_tokens(prompt, output, x))
        for k in range(n_stages):
            out = sh.frame_digest(final[x]) if k == n_stages - 1 else sh.frame_digest(rows[k][x].tobytes())
            leaves[k].append(sh.StageFingerprint(pos=x, in_digest=prev, out_digest=out, q=sh.quantize_row(rows[k][x])))
            prev = out
    cmts = [sh.commit_stage(Keypair.deterministic("stage", k), query=QUERY, model_id=MODEL_ID, start=2 * k,
                            end=2 * k + 2, total=2 * n_stages, tier=pol.Tier.FP32, prompt_hash=pol.tokens_hash(prompt),
                            fps=leaves[k]) for k in range(n_stages)]
    return {"prompt": prompt, "output": output, "rows": rows, "final": final, "leaves": leaves, "cmts": cmts}


def _blame_case(name: str, desc: str, r: dict[str, Any], x: int, *, rows: list[np.ndarray] | None = None,
                cmts: list[sh.StageCommitment] | None = None, openings: list[sh.StageOpening] | None = None,
                first: bytes | None = None) -> Case:
    cmts = cmts or r["cmts"]
    ops = openings or [sh.open_stage(c, lv, x) for c, lv in zip(r["cmts"], r["leaves"], strict=True)]
    rec = rows or [rr[x] for rr in r["rows"]]
    inp = {"commitments": [codec.encode(c).hex() for c in cmts], "openings": [codec.encode(o).hex() for o in ops],
           "recomputed_f32le": [np.asarray(v, dtype="<f4").tobytes().hex() for v in rec], "position": x,
           "first_input_digest": (first or sh.tokens_frame_digest(sh.frame_tokens(r["prompt"], r["output"], x))).hex(),
           "final_output_digest": sh.frame_digest(r["final"][x]).hex(), "model_id": MODEL_ID.hex(),
           "total_layers": 2 * len(r["cmts"])}
    return case_from_run(run, "blame", name, _json(inp), desc, "input.json")


def cases() -> list[Case]:
    out = [
        case_from_run(run, "quantize", name, _json({"row_f32le": np.asarray(vals, dtype="<f4").tobytes().hex()}),
                      desc, "input.json")
        for name, desc, vals in [
            ("grid", "0, +-1, +-2^-13 (round half up), 476.5 (a SmolLM2 outlier)", [0.0, 1.0, -1.0, 2**-13, -(2**-13),
                                                                                       476.5]),
            ("clip", "beyond the int32 grid clips", [1e9, -1e9]),
            ("nan", "a NaN value: must reject", [1.0, float("nan")]),
        ]
    ]
    out += [
        case_from_run(run, "split", name, _json({"total": t, "work": w}), desc, "input.json")
        for name, desc, t, w in [
            ("even", "three 10-layer stages, 7 tokens, 100 lamports: the leftover lamport to stage 0", 100,
             [[10, 7], [10, 7], [10, 7]]),
            ("uneven", "1 + 29 layers", 1_000_003, [[1, 64], [29, 64]]),
            ("replaced", "a stage that served fewer tokens", 999, [[10, 5], [20, 8]]),
            ("no-work", "zero layers x tokens: must reject", 10, [[0, 5]]),
        ]
    ]
    r = _synthetic_route()
    k = 1
    lv = r["leaves"][k]
    out.append(case_from_run(run, "commitment", "stage-1", _json({
        "stage_seed": k, "query": QUERY.hex(), "model_id": MODEL_ID.hex(), "start": 2, "end": 4, "total": 6, "tier": 1,
        "prompt_hash": pol.tokens_hash(r["prompt"]).hex(),
        "leaves": [{"pos": f.pos, "in_digest": f.in_digest.hex(), "out_digest": f.out_digest.hex(), "q": f.q.hex()}
                   for f in lv]}), "stage 1 of a 3-stage route over a 2-token answer", "input.json"))
    x = 1
    honest = [rr[x] * np.float32(1 + 1e-5) for rr in r["rows"]]
    cheat = [r["rows"][0][x], r["rows"][1][x] * np.float32(1.01), r["rows"][2][x] * np.float32(1.01)]
    ops = [sh.open_stage(c, lvv, x) for c, lvv in zip(r["cmts"], r["leaves"], strict=True)]
    bad_ops = [*ops[:2], replace(ops[2], sibs=(bytes(32),) * len(ops[2].sibs))]
    out += [
        _blame_case("honest", "recomputed rows drift by 1e-5 relative: nobody blamed", r, x, rows=honest),
        _blame_case("stage-1-cheated", "stage 1's boundary is 1% off (and stage 2 inherits it): stage 1 blamed", r, x,
                    rows=cheat),
        _blame_case("wrong-input", "the first stage's input is not the committed tokens: the driver", r, x,
                    first=sh.tokens_frame_digest([7])),
        _blame_case("bad-proof", "stage 2's Merkle path is forged: the driver", r, x, openings=bad_ops),
        _blame_case("gap", "stage 1 missing from the route: the driver", r, x, cmts=[r["cmts"][0], r["cmts"][2]]),
    ]
    return out
