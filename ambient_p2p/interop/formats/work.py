"""Work-account vectors (spec/lstake.md "Work accounts in the bank", spec/rewards.md "In the
bank").

``calls/<case>``: input.json {slots_per_epoch, slot, work_accounts {address: hex data},
calls [{credit: address, tokens_served, positions_validated} | {slash: address, reason}]}:
the calls made in order on the child bank of ``slot`` (the auction program's settlement
makes them); output {work_accounts {address: {data (hex), the decoded fields}}, events
[{identity, tokens_served, positions_validated, reason}], work_delta_hash (hex, or null when
no account was written)}. Must reject: a call the bank refuses (``bad-work-call``: a
negative count, an unknown slash reason, an identity not 32 bytes), a stored account that is
not a work account or sits under another identity (``bad-work-account``).

``epoch-boundary/<case>``: input.json {slots_per_epoch, slot_duration_us, slot, tally_epoch,
balances {address: lamports}, work_accounts {address: hex}, epoch_tally {address:
[leader_slots, votes]}, vote_weights {address: weight}}: ``pay_epoch_rewards`` on the first
bank of the epoch of ``slot``; output {epoch, capitalization, issuance, paid, balances (every
balance after), work_accounts (hex after), rewards_hash (hex)}. Must reject
(``not-epoch-start``): ``slot``'s epoch is not above ``tally_epoch``.
"""

from __future__ import annotations

import json
from typing import Any

from ...core import crypto, work
from ...core.bank import Bank, rewards_hash, work_delta_hash
from .. import Case, Rejected, case_from_run

FORMAT = "work"


def _addr(k: bytes) -> str:
    return crypto.encode_address(k)


def _decoded(data: bytes) -> dict[str, Any]:
    a = work.WorkAccount.unpack(data)
    return {"data": data.hex(), "epoch": a.epoch, "flags": a.flags, "tokens_served": a.tokens_served,
            "positions_validated": a.positions_validated, "slashes": a.slashes,
            "total_tokens_served": a.total_tokens_served, "total_positions_validated": a.total_positions_validated,
            "total_slashes": a.total_slashes, "last_slash_slot": a.last_slash_slot,
            "total_rewards_lamports": a.total_rewards_lamports}


def _parent(v: dict[str, Any], balances: dict[bytes, int] | None = None,
            tally: dict[bytes, tuple[int, int]] | None = None, tally_epoch: int = 0) -> Bank:
    try:
        accounts = {crypto.decode_address(k): bytes.fromhex(d) for k, d in v["work_accounts"].items()}
        return Bank.restore(0, 0, bytes(32), bytes(32), balances or {}, [bytes(32)], {},
                            slots_per_epoch=int(v["slots_per_epoch"]), work_accounts=accounts,
                            epoch_tally=tally, tally_epoch=tally_epoch)
    except (ValueError, work.WorkError) as exc:
        raise Rejected("bad-work-account", str(exc)) from None


def _calls(v: dict[str, Any]) -> Any:
    parent = _parent(v)
    bank = parent.child(int(v["slot"]), bytes(32))
    for c in v["calls"]:
        try:
            if "credit" in c:
                bank.credit_work(crypto.decode_address(c["credit"]), tokens_served=int(c["tokens_served"]),
                                 positions_validated=int(c["positions_validated"]))
            else:
                bank.slash_work(crypto.decode_address(c["slash"]), str(c["reason"]))
        except (work.WorkError, crypto.CryptoError) as exc:
            raise Rejected("bad-work-call", str(exc)) from None
    changed = {k: bank.work_accounts[k] for k in bank.work_modified}
    return {
        "work_accounts": {_addr(k): _decoded(d) for k, d in sorted(bank.work_accounts.items())},
        "events": [{"identity": _addr(e.identity), "tokens_served": e.tokens_served,
                    "positions_validated": e.positions_validated, "reason": e.reason} for e in bank.work_events],
        "work_delta_hash": work_delta_hash(changed).hex() if changed else None,
    }


def _boundary(v: dict[str, Any]) -> Any:
    balances = {crypto.decode_address(k): int(b) for k, b in v["balances"].items()}
    tally = {crypto.decode_address(k): (int(t[0]), int(t[1])) for k, t in v["epoch_tally"].items()}
    parent = _parent(v, balances, tally, int(v["tally_epoch"]))
    bank = parent.child(int(v["slot"]), bytes(32))
    try:
        r = bank.pay_epoch_rewards(int(v["slot_duration_us"]),
                                   {crypto.decode_address(k): int(w) for k, w in v["vote_weights"].items()})
    except ValueError as exc:
        raise Rejected("not-epoch-start", str(exc)) from None
    return {
        "epoch": r.epoch, "capitalization": r.capitalization, "issuance": r.issuance, "paid": r.paid,
        "balances": {_addr(k): b for k, b in sorted(bank.accounts.items())},
        "work_accounts": {_addr(k): d.hex() for k, d in sorted(bank.work_accounts.items())},
        "rewards_hash": rewards_hash(r).hex(),
    }


def run(handler: str, data: bytes) -> Any:
    try:
        v = json.loads(data)
        if handler == "calls":
            return _calls(v)
        if handler == "epoch-boundary":
            return _boundary(v)
    except (KeyError, TypeError, ValueError, crypto.CryptoError) as exc:
        if isinstance(exc, Rejected):
            raise
        raise Rejected("malformed", str(exc)) from None
    raise Rejected("unknown-handler", handler)


def _case(handler: str, name: str, desc: str, inp: dict[str, Any]) -> Case:
    data = (json.dumps(inp, indent=2, sort_keys=True) + "\n").encode()
    return case_from_run(run, handler, name, data, desc, "input.json")


def cases() -> list[Case]:
    ks = [crypto.Keypair.deterministic("vectors/work", i).pubkey for i in range(4)]
    a = [_addr(k) for k in ks]
    old = work.WorkAccount(ks[1], epoch=1, tokens_served=70, positions_validated=8, total_tokens_served=500,
                           total_positions_validated=40, total_slashes=1, last_slash_slot=5).pack().hex()
    same = work.WorkAccount(ks[2], epoch=3, tokens_served=9, total_tokens_served=9).pack().hex()
    spe = 16
    return [
        _case("calls", "settle-verified", "a miner's accepted tokens and two validators' positions",
              {"slots_per_epoch": spe, "slot": 50, "work_accounts": {},
               "calls": [{"credit": a[0], "tokens_served": 64, "positions_validated": 0},
                         {"credit": a[1], "tokens_served": 0, "positions_validated": 4},
                         {"credit": a[2], "tokens_served": 0, "positions_validated": 4}]}),
        _case("calls", "epoch-rollover", "an account of an older epoch starts the new epoch's counters at zero",
              {"slots_per_epoch": spe, "slot": 50, "work_accounts": {a[1]: old, a[2]: same},
               "calls": [{"credit": a[1], "tokens_served": 10, "positions_validated": 1},
                         {"credit": a[2], "tokens_served": 1, "positions_validated": 0}]}),
        _case("calls", "slash", "a rejected miner: the epoch's work forfeited, the slash counted",
              {"slots_per_epoch": spe, "slot": 55, "work_accounts": {a[2]: same},
               "calls": [{"slash": a[2], "reason": "result-rejected"},
                         {"slash": a[3], "reason": "accepted-fraud"}]}),
        _case("calls", "zero-credit", "a credit of nothing writes nothing: no work_delta_hash",
              {"slots_per_epoch": spe, "slot": 50, "work_accounts": {},
               "calls": [{"credit": a[0], "tokens_served": 0, "positions_validated": 0}]}),
        _case("calls", "no-epochs", "a bank without epochs books everything in epoch 0",
              {"slots_per_epoch": 0, "slot": 1000, "work_accounts": {},
               "calls": [{"credit": a[0], "tokens_served": 3, "positions_validated": 2}]}),
        _case("calls", "unknown-reason", "slash reason \"lazy\": must reject",
              {"slots_per_epoch": spe, "slot": 50, "work_accounts": {},
               "calls": [{"slash": a[0], "reason": "lazy"}]}),
        _case("calls", "negative-tokens", "a negative token count: must reject",
              {"slots_per_epoch": spe, "slot": 50, "work_accounts": {},
               "calls": [{"credit": a[0], "tokens_served": -1, "positions_validated": 0}]}),
        _case("calls", "wrong-owner", "a stored account under another identity: must reject",
              {"slots_per_epoch": spe, "slot": 50, "work_accounts": {a[0]: same}, "calls": []}),
        _case("epoch-boundary", "pays-epoch-3", "the first bank of epoch 4 pays epoch 3's rewards",
              {"slots_per_epoch": spe, "slot_duration_us": 400_000, "slot": 64, "tally_epoch": 3,
               "balances": {a[0]: 10**15, a[1]: 3 * 10**14, a[2]: 10**9, a[3]: 7},
               "work_accounts": {a[1]: old, a[2]: same},
               "epoch_tally": {a[0]: [10, 16], a[1]: [6, 15], a[3]: [0, 16]},
               "vote_weights": {a[0]: 5, a[1]: 5, a[2]: 1}}),
        _case("epoch-boundary", "skipped-epochs", "a fork that skipped epoch 4: epoch 3 is paid at its rate",
              {"slots_per_epoch": spe, "slot_duration_us": 400_000, "slot": 90, "tally_epoch": 3,
               "balances": {a[0]: 10**15}, "work_accounts": {}, "epoch_tally": {a[0]: [16, 16]},
               "vote_weights": {a[0]: 1}}),
        _case("epoch-boundary", "mid-epoch", "slot 60 is still epoch 3: must reject",
              {"slots_per_epoch": spe, "slot_duration_us": 400_000, "slot": 60, "tally_epoch": 3,
               "balances": {a[0]: 10**15}, "work_accounts": {}, "epoch_tally": {}, "vote_weights": {}}),
    ]
