"""LStake vectors (spec/lstake.md).

``leader-schedule/<case>``: input.json {seed (hex, 32 bytes), weights {address: LStake},
slots_per_epoch, leader_slots}; output {"leaders": [address per leader turn]}.

``formula/<case>``: input.json {params {short_window_epochs, medium_window_epochs,
short_weight_bps, medium_weight_bps}, bootstrap {address: LStake}, ops [{op: "credit",
identity, epoch, kind, amount} | {op: "slash", identity, epoch, units} | {op: "forfeit",
identity, epoch}], epochs [E, ...]}; output {"epochs": [{epoch, pool_work, lstake {address:
LStake, zeros omitted}}]}. Must reject (``bad-params``): invalid params, an unknown kind or
op, a negative amount, epoch or bootstrap.
"""

from __future__ import annotations

import json
from typing import Any

from ...core import crypto
from ...core.lstake import LStakeError, LStakeLedger, WorkKind, leader_schedule, schedule_seed
from ...core.messages import LStakeParams
from .. import Case, Rejected, case_from_run

FORMAT = "lstake"


def _nat(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{v!r} is not a non-negative integer")
    return v


def _formula(data: bytes) -> Any:
    try:
        v = json.loads(data)
        p = v["params"]
        params = LStakeParams(_nat(p["short_window_epochs"]), _nat(p["medium_window_epochs"]),
                              _nat(p["short_weight_bps"]), _nat(p["medium_weight_bps"]))
        led = LStakeLedger(params, {crypto.decode_address(k): _nat(b) for k, b in v["bootstrap"].items()})
        for op in v["ops"]:
            ident, epoch = crypto.decode_address(op["identity"]), _nat(op["epoch"])
            if op["op"] == "credit":
                led.credit(ident, epoch, WorkKind(op["kind"]), _nat(op["amount"]))
            elif op["op"] == "slash":
                led.slash(ident, epoch, _nat(op["units"]))
            elif op["op"] == "forfeit":
                led.forfeit(ident, epoch)
            else:
                raise ValueError(f"unknown op {op['op']!r}")
        epochs = [_nat(e) for e in v["epochs"]]
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError, LStakeError) as exc:
        raise Rejected("bad-params", str(exc)) from None
    return {"epochs": [
        {"epoch": e, "pool_work": led.pool_work(e),
         "lstake": {crypto.encode_address(k): w for k, w in sorted(led.snapshot(e).items())}}
        for e in epochs]}


def run(handler: str, data: bytes) -> Any:
    if handler == "formula":
        return _formula(data)
    if handler != "leader-schedule":
        raise Rejected("unknown-handler", handler)
    try:
        v = json.loads(data)
        seed = bytes.fromhex(v["seed"])
        weights = {crypto.decode_address(k): int(w) for k, w in v["weights"].items()}
        spe, ls = int(v["slots_per_epoch"]), int(v["leader_slots"])
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError) as exc:
        raise Rejected("malformed", str(exc)) from None
    if len(seed) != 32 or ls < 1 or spe % ls or any(w < 0 for w in weights.values()):
        raise Rejected("malformed", "bad seed length, slot counts or negative weight")
    try:
        sched = leader_schedule(weights, seed, spe, ls)
    except LStakeError as exc:
        raise Rejected("no-lstake", str(exc)) from None
    return {"leaders": [crypto.encode_address(sched[i]) for i in range(0, spe, ls)]}


def _case(name: str, desc: str, weights: dict[bytes, int], epoch: int, spe: int = 64, ls: int = 4) -> Case:
    inp = {
        "seed": schedule_seed(b"\x11" * 32, epoch).hex(),
        "weights": {crypto.encode_address(k): w for k, w in weights.items()},
        "slots_per_epoch": spe,
        "leader_slots": ls,
    }
    data = (json.dumps(inp, indent=2, sort_keys=True) + "\n").encode()
    return case_from_run(run, "leader-schedule", name, data, desc, "input.json")


def _formula_case(name: str, desc: str, inp: dict[str, Any]) -> Case:
    data = (json.dumps(inp, indent=2, sort_keys=True) + "\n").encode()
    return case_from_run(run, "formula", name, data, desc, "input.json")


def _formula_cases(ids: list[bytes]) -> list[Case]:
    a = [crypto.encode_address(k) for k in ids]
    params = {"short_window_epochs": 2, "medium_window_epochs": 6, "short_weight_bps": 5000, "medium_weight_bps": 5000}

    def credit(i: int, e: int, kind: str, amount: int) -> dict[str, Any]:
        return {"op": "credit", "identity": a[i], "epoch": e, "kind": kind, "amount": amount}

    base = {"params": params, "bootstrap": {a[0]: 1_000_000, a[1]: 1_000_000}}
    work = [credit(0, 0, "leader-slots", 10), credit(1, 0, "votes", 60), credit(2, 1, "inference-tokens", 5000),
            credit(3, 1, "positions-validated", 300), credit(2, 3, "inference-tokens", 70_000),
            credit(3, 4, "training-steps", 9), {"op": "slash", "identity": a[1], "epoch": 2, "units": 25}]
    return [
        _formula_case("windows", "leader slots, votes, tokens, positions; short and medium windows; fading bootstrap",
                      {**base, "ops": work, "epochs": [0, 1, 2, 3, 4, 6, 8, 9, 10, 11]}),
        _formula_case("no-pool-work", "only leader slots and votes: the bootstrap stays whole (the old formula)",
                      {**base, "ops": work[:2], "epochs": [0, 1, 5, 6]}),
        _formula_case("forfeit", "a slash forfeits the medium window up to its epoch; later work counts again",
                      {**base, "ops": [*work, {"op": "forfeit", "identity": a[2], "epoch": 4},
                                       credit(2, 4, "inference-tokens", 100), credit(2, 5, "inference-tokens", 200)],
                       "epochs": [3, 4, 5, 9, 10]}),
        _formula_case("bootstrap-fades-out", "enough pool work drives a bootstrap of 3 to 0",
                      {**base, "bootstrap": {a[0]: 3}, "ops": [credit(1, 0, "inference-tokens", 3 << 16)],
                       "epochs": [0, 5, 6]}),
        _formula_case("unknown-kind", "kind \"gpu-hours\": must reject",
                      {**base, "ops": [credit(0, 0, "gpu-hours", 1)], "epochs": [0]}),
        _formula_case("negative-amount", "a negative credit: must reject",
                      {**base, "ops": [credit(0, 0, "votes", -1)], "epochs": [0]}),
        _formula_case("bad-weights", "weights summing to 9,999 bps: must reject",
                      {**base, "params": {**params, "medium_weight_bps": 4999}, "ops": [], "epochs": [0]}),
        _formula_case("short-above-medium", "short window longer than the medium window: must reject",
                      {**base, "params": {**params, "short_window_epochs": 7}, "ops": [], "epochs": [0]}),
    ]


def cases() -> list[Case]:
    ids = [crypto.Keypair.deterministic("vectors/leader", i).pubkey for i in range(5)]
    return [
        *_formula_cases(ids),
        _case("equal-4", "four equal bootstrap nodes, epoch 0", {k: 1_000_000 for k in ids[:4]}, 0),
        _case("equal-4-epoch-1", "same weights, epoch 1 (different seed)", {k: 1_000_000 for k in ids[:4]}, 1),
        _case("skewed", "weights 1:2:4:8:16", {k: 1 << i for i, k in enumerate(ids)}, 3),
        _case("single", "one node takes every slot", {ids[0]: 5}, 0),
        _case("zero-weight-ignored", "a zero-weight node is never scheduled", {ids[0]: 1, ids[1]: 0}, 2),
        _case("consecutive-1", "one slot per leader turn", {k: 10 + i for i, k in enumerate(ids)}, 9, 32, 1),
        _case("all-zero", "no LStake anywhere: must reject", {ids[0]: 0, ids[1]: 0}, 0),
    ]
