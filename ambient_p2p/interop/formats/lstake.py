"""Leader-schedule vectors (spec/lstake.md).

``leader-schedule/<case>``: input.json {seed (hex, 32 bytes), weights {address: LStake},
slots_per_epoch, leader_slots}; output {"leaders": [address per leader turn]}.
"""

from __future__ import annotations

import json
from typing import Any

from ...core import crypto
from ...core.lstake import LStakeError, leader_schedule, schedule_seed
from .. import Case, Rejected, case_from_run

FORMAT = "lstake"


def run(handler: str, data: bytes) -> Any:
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


def cases() -> list[Case]:
    ids = [crypto.Keypair.deterministic("vectors/leader", i).pubkey for i in range(5)]
    return [
        _case("equal-4", "four equal bootstrap nodes, epoch 0", {k: 1_000_000 for k in ids[:4]}, 0),
        _case("equal-4-epoch-1", "same weights, epoch 1 (different seed)", {k: 1_000_000 for k in ids[:4]}, 1),
        _case("skewed", "weights 1:2:4:8:16", {k: 1 << i for i, k in enumerate(ids)}, 3),
        _case("single", "one node takes every slot", {ids[0]: 5}, 0),
        _case("zero-weight-ignored", "a zero-weight node is never scheduled", {ids[0]: 1, ids[1]: 0}, 2),
        _case("consecutive-1", "one slot per leader turn", {k: 10 + i for i, k in enumerate(ids)}, 9, 32, 1),
        _case("all-zero", "no LStake anywhere: must reject", {ids[0]: 0, ids[1]: 0}, 0),
    ]
