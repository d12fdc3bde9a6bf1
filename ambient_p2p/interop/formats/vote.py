"""Vote-transaction vectors (spec/bank.md "The vote program").

``vote-tx/<case>``: input.bin = a wire transaction; output {voter, slot, bank_hash, root,
timestamp_ms, recent_blockhash} when it is a well-formed vote transaction (one signature,
one vote-program instruction whose only account is the signing voter, data a canonical
``Vote`` signed by that voter), else must reject.

``vote-land/<case>``: input.json {bank_slot, slot_hashes: [[slot, hex]], last_votes:
[[voter address, slot]], tx: hex}: the vote transaction executed in a bank at ``bank_slot``
whose ancestors are ``slot_hashes`` and whose voters last landed ``last_votes`` (the voter
holds enough lamports for the fee; the transaction's blockhash is recent). Output {landed:
[[voter, slot]], last_votes, votes_hash} when the vote lands, else must reject with the
vote program's error code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ...core import crypto
from ...core.bank import Bank, BlockError, votes_hash
from ...core.consensus import Vote
from ...core.messages import sign_message
from ...core.vote_program import VoteTxError, parse_vote_transaction, vote_transaction
from ...ledger.producer import transfer_tx
from .. import Case, Rejected, case_from_run

FORMAT = "vote"


def _vote_json(v: Vote) -> dict[str, Any]:
    return {"voter": crypto.encode_address(v.voter), "slot": v.slot, "bank_hash": v.bank_hash.hex(), "root": v.root,
            "timestamp_ms": v.timestamp_ms}


def run(handler: str, data: bytes) -> Any:
    if handler == "vote-tx":
        try:
            vt = parse_vote_transaction(data)
        except VoteTxError as exc:
            raise Rejected(exc.reason, exc.detail) from None
        return {**_vote_json(vt.vote), "recent_blockhash": vt.tx.recent_blockhash.hex()}
    if handler != "vote-land":
        raise Rejected("unknown-handler", handler)
    try:
        v = json.loads(data)
        slot = int(v["bank_slot"])
        slot_hashes = {int(s): bytes.fromhex(h) for s, h in v["slot_hashes"]}
        last_votes = {crypto.decode_address(a): int(s) for a, s in v["last_votes"]}
        raw = bytes.fromhex(v["tx"])
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError) as exc:
        raise Rejected("malformed", str(exc)) from None
    try:
        vt = parse_vote_transaction(raw)
    except VoteTxError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    if not slot_hashes or slot <= max(slot_hashes):
        raise Rejected("malformed", "bank_slot must be above every ancestor")
    bank = Bank(slot, max(slot_hashes), slot_hashes[max(slot_hashes)], bytes(32), {vt.vote.voter: 10**9},
                [vt.tx.recent_blockhash], {}, slot_hashes=dict(sorted(slot_hashes.items())), last_votes=last_votes)
    try:
        (res,) = bank.process_transactions([raw])
    except BlockError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    if res.error is not None:
        raise Rejected(res.error.split(":")[0], res.error)
    return {"landed": [[crypto.encode_address(a), s] for a, s in bank.landed_votes],
            "last_votes": [[crypto.encode_address(a), s] for a, s in sorted(bank.last_votes.items())],
            "votes_hash": votes_hash(bank.landed_votes).hex()}


def _h(slot: int, fork: str = "") -> bytes:
    return hashlib.sha256(f"vectors/vote/bank/{slot}{fork}".encode()).digest()


def cases() -> list[Case]:
    kp = crypto.Keypair.deterministic("vectors/voter", 0)
    other = crypto.Keypair.deterministic("vectors/voter", 1)
    bh = hashlib.sha256(b"vectors/vote/blockhash").digest()

    def vote(slot: int, bank_hash: bytes | None = None, root: int | None = None, who: crypto.Keypair = kp,
             **over: Any) -> Vote:
        v = Vote(who.pubkey, slot, bank_hash or _h(slot), root, 1_700_000_000_000 + slot, bytes(64))
        signed: Vote = sign_message(v, who, "vote")
        return dataclasses.replace(signed, **over) if over else signed

    out: list[Case] = []

    def tx_case(name: str, desc: str, raw: bytes) -> None:
        out.append(case_from_run(run, "vote-tx", name, raw, desc, "input.bin"))

    good = vote_transaction(kp, vote(7, root=3), bh)
    tx_case("valid", "a vote on slot 7 (root 3) by its voter", good)
    tx_case("valid-no-root", "a vote without a root", vote_transaction(kp, vote(1), bh))
    forged = vote(7, timestamp_ms=5)  # signature over other bytes
    tx_case("forged-vote", "the transaction is signed but the vote's own signature is not: must reject",
            vote_transaction(kp, forged, bh))
    flipped = bytearray(good)
    flipped[-1] ^= 1
    tx_case("tx-signature", "one byte of the vote data changed after signing: must reject", bytes(flipped))
    tx_case("transfer", "a system transfer is not a vote transaction: must reject", transfer_tx(kp, other.pubkey, 1, bh))
    tx_case("bad-root", "root above the voted slot: must reject", vote_transaction(kp, vote(7, root=9), bh))
    tx_case("oversized", "more than 1232 bytes: must reject", good + bytes(1300))

    def land_case(name: str, desc: str, slot: int, ancestors: dict[int, bytes], last: dict[bytes, int], raw: bytes) -> None:
        inp = {"bank_slot": slot, "slot_hashes": [[s, h.hex()] for s, h in sorted(ancestors.items())],
               "last_votes": [[crypto.encode_address(a), s] for a, s in sorted(last.items())], "tx": raw.hex()}
        data = (json.dumps(inp, indent=1, sort_keys=True) + "\n").encode()
        out.append(case_from_run(run, "vote-land", name, data, desc, "input.json"))

    anc = {s: _h(s) for s in range(0, 8)}
    land_case("lands", "a vote on ancestor 7 with its bank hash, newer than the voter's last (5)",
              8, anc, {kp.pubkey: 5}, good)
    land_case("first-vote", "the voter's first landed vote", 8, anc, {}, good)
    land_case("hash-mismatch", "the voted slot is an ancestor with another bank hash: must reject",
              8, anc, {}, vote_transaction(kp, vote(7, _h(7, "fork")), bh))
    land_case("not-ancestor", "the voted slot is not an ancestor (skipped on this fork): must reject",
              10, {s: h for s, h in anc.items() if s != 7}, {}, good)
    land_case("too-old", "not newer than the voter's last landed vote: must reject", 8, anc, {kp.pubkey: 7}, good)
    land_case("not-below-bank", "a vote on the bank's own slot: must reject",
              7, {s: h for s, h in anc.items() if s < 7}, {}, good)
    return out
