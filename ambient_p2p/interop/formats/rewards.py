"""Inflation-reward vectors (spec/rewards.md).

``schedule/<case>``: input.json {slots_per_epoch, slot_duration_us, capitalization, epochs:
[epoch, ...], years: n}; output {epochs_per_year, year_rates_ppb: [rate of years 0..n-1],
epochs: [{epoch, rate_ppb, issuance}]}.

``epoch-split/<case>``: input.json {epoch, capitalization, slots_per_epoch,
slot_duration_us, pool_units, leader_slots, votes, vote_weights} (each {address: int});
output {rate_ppb, issuance, pools: {logit-pool, leader, voting}, payouts: {pool: {address:
lamports}}, paid, unissued}.

Must reject (``bad-params``): a zero slot count or duration, a capitalization of 2^64 or
more, a negative epoch or count.
"""

from __future__ import annotations

import json
from typing import Any

from ...core import crypto
from ...core.rewards import (
    POOLS,
    RewardsError,
    compute_epoch_rewards,
    epoch_issuance,
    epoch_rate_ppb,
    epochs_per_year,
    year_rate_ppb,
)
from .. import Case, Rejected, case_from_run

FORMAT = "rewards"
_U64 = 1 << 64


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{v!r} is not an integer")
    if v < 0:
        raise ValueError(f"{v} is negative")
    return v


def _units(m: Any) -> dict[bytes, int]:
    if not isinstance(m, dict):
        raise ValueError("expected an object of address: integer")
    return {crypto.decode_address(k): _int(v) for k, v in m.items()}


def _addr_map(m: dict[bytes, int]) -> dict[str, int]:
    return {crypto.encode_address(k): v for k, v in sorted(m.items())}


def run(handler: str, data: bytes) -> Any:
    try:
        v = json.loads(data)
        spe, slot_us, cap = _int(v["slots_per_epoch"]), _int(v["slot_duration_us"]), _int(v["capitalization"])
        if handler == "schedule":
            epochs = [_int(e) for e in v["epochs"]]
            years = _int(v["years"])
        elif handler == "epoch-split":
            epoch = _int(v["epoch"])
            units = {k: _units(v[k]) for k in ("pool_units", "leader_slots", "votes", "vote_weights")}
        else:
            raise Rejected("unknown-handler", handler)
    except (ValueError, KeyError, TypeError, crypto.CryptoError) as exc:
        raise Rejected("bad-params", str(exc)) from None
    if spe < 1 or slot_us < 1 or cap >= _U64:
        raise Rejected("bad-params", "slots_per_epoch and slot_duration_us must be >= 1, capitalization a u64")
    try:
        if handler == "schedule":
            return {
                "epochs_per_year": epochs_per_year(spe, slot_us),
                "year_rates_ppb": [year_rate_ppb(y) for y in range(years)],
                "epochs": [{"epoch": e, "rate_ppb": epoch_rate_ppb(e, spe, slot_us),
                            "issuance": epoch_issuance(cap, e, spe, slot_us)} for e in epochs],
            }
        r = compute_epoch_rewards(epoch=epoch, capitalization=cap, slots_per_epoch=spe, slot_duration_us=slot_us,
                                  pool_units=units["pool_units"], leader_slots=units["leader_slots"],
                                  votes=units["votes"], vote_weights=units["vote_weights"])
    except RewardsError as exc:
        raise Rejected("bad-params", str(exc)) from None
    return {
        "rate_ppb": r.rate_ppb,
        "issuance": r.issuance,
        "pools": dict(zip(POOLS, r.pools, strict=True)),
        "payouts": {name: _addr_map(p) for name, p in zip(POOLS, r.payouts, strict=True)},
        "paid": r.paid,
        "unissued": r.unissued,
    }


def _case(handler: str, name: str, desc: str, inp: dict[str, Any]) -> Case:
    data = (json.dumps(inp, indent=2, sort_keys=True) + "\n").encode()
    return case_from_run(run, handler, name, data, desc, "input.json")


def _ids(n: int) -> list[str]:
    return [crypto.encode_address(crypto.Keypair.deterministic("vectors/rewards", i).pubkey) for i in range(n)]


def cases() -> list[Case]:
    ids = _ids(5)
    cap = 500_000_000 * 1_000_000_000  # 500 M tokens of 10^9 lamports
    sched = {"slots_per_epoch": 432_000, "slot_duration_us": 400_000, "capitalization": cap}
    local = {"slots_per_epoch": 32, "slot_duration_us": 400_000, "capitalization": cap}
    split = {"epoch": 10, "capitalization": cap, "slots_per_epoch": 432_000, "slot_duration_us": 400_000}
    return [
        _case("schedule", "mainnet-like", "432,000 x 400 ms slots (2 days): 8 % tapering 15 %/year to 1.5 %",
              {**sched, "epochs": [0, 1, 100, 182, 183, 500, 1000, 1826, 2000, 3000, 5000, 100_000], "years": 14}),
        _case("schedule", "localnet", "32 x 400 ms slots: millions of epochs a year, tiny issuance per epoch",
              {**local, "epochs": [0, 1, 2_465_384, 2_465_385, 30_000_000], "years": 3}),
        _case("schedule", "floor", "far in the future every epoch is at the 1.5 % floor",
              {**sched, "epochs": [50_000, 1_000_000], "years": 1}),
        _case("schedule", "zero-capitalization", "nothing to inflate: zero issuance, same rates",
              {**sched, "capitalization": 0, "epochs": [0, 7], "years": 1}),
        _case("schedule", "zero-slots", "slots_per_epoch 0: must reject",
              {**sched, "slots_per_epoch": 0, "epochs": [0], "years": 1}),
        _case("schedule", "capitalization-overflow", "capitalization 2^64: must reject",
              {**sched, "capitalization": _U64, "epochs": [0], "years": 1}),
        _case("schedule", "negative-epoch", "epoch -1: must reject", {**sched, "epochs": [-1], "years": 1}),
        _case("epoch-split", "three-pools", "miners, validators, leaders and voters; remainders by largest fraction",
              {**split,
               "pool_units": {ids[0]: 640, ids[1]: 64, ids[2]: 16, ids[3]: 16},
               "leader_slots": {ids[0]: 100_000, ids[1]: 200_000, ids[2]: 132_000},
               "votes": {ids[0]: 431_000, ids[1]: 430_000, ids[2]: 400_000, ids[4]: 432_000},
               "vote_weights": {ids[0]: 10, ids[1]: 20, ids[2]: 30}}),
        _case("epoch-split", "no-pool-work", "a young network: no Logit Pool work, its 60 % is not issued",
              {**split, "pool_units": {}, "leader_slots": {ids[0]: 432_000},
               "votes": {ids[0]: 431_999}, "vote_weights": {ids[0]: 1}}),
        _case("epoch-split", "remainders", "3 equal earners of an amount not divisible by 3: ties by address",
              {**split, "capitalization": 1_000_003, "epoch": 0,
               "pool_units": {ids[0]: 1, ids[1]: 1, ids[2]: 1}, "leader_slots": {ids[3]: 7},
               "votes": {ids[0]: 1, ids[1]: 1, ids[2]: 1}, "vote_weights": {ids[0]: 1, ids[1]: 1, ids[2]: 1}}),
        _case("epoch-split", "unweighted-voter", "a voter without vote weight earns nothing (fees buy no rewards)",
              {**split, "pool_units": {ids[0]: 5}, "leader_slots": {ids[0]: 1},
               "votes": {ids[1]: 1000}, "vote_weights": {ids[0]: 1}}),
        _case("epoch-split", "negative-units", "negative units: must reject",
              {**split, "pool_units": {ids[0]: -1}, "leader_slots": {}, "votes": {}, "vote_weights": {}}),
    ]
