"""A requester's query through the auction (spec/auction.md "What the requester sees"),
shared by ``ambient-p2p query`` (commands/query.py, over the control socket) and the
node's OpenAI door (node/rpc/openai_api.py, in the node's process): put the prompt blob,
sign and submit the ``request``, follow the query account until the result is posted (or
refunded/expired), close or expire it if nobody did, and fetch the answer blob.

The node is reached only through ``call`` (a control request -> its answer: put_blob,
get_blob, submit_tx, recent_blockhash, balance, auction_query), so the same flow runs
against a local socket or the node's own composed extension.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..core import auction as au
from ..core import auction_tx as atx
from ..core import pol
from ..core.bank import LAMPORTS_PER_SIGNATURE
from ..core.blobs import BLOB_RETENTION_SLOTS, blob_tokens, token_blob
from ..core.crypto import Keypair, decode_address, encode_address

POLL_S = 0.4
#: The request is resubmitted (the same signed transaction: it lands at most once) this often
#: until it lands; the flow gives up if it has not landed after LAND_TIMEOUT_S.
RESUBMIT_S = 4.0
LAND_TIMEOUT_S = 90.0
#: Slots after the reveal window (deadline) before the requester closes (expires) itself.
SELF_CLOSE_GRACE_SLOTS = 6
#: Slots past the deadline after which the flow stops following the query.
GIVE_UP_AFTER_DEADLINE_SLOTS = 40
ANSWER_FETCH_TIMEOUT_S = 20.0

Call = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class AskError(Exception):
    """The query could not go on. ``kind``: ``funds`` (balance below the escrow),
    ``not_landed``, ``stuck`` (still open long after its deadline), ``node`` (a refused call)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class AskParams:
    prompt_tokens: list[int]
    model_id: bytes
    max_tokens: int
    pay_per_token: int
    temp_milli: int
    deadline_slots: int
    sample_seed: bytes | None = None  # None: random when temp_milli > 0
    nonce: int | None = None  # None: random (the query's address derives from it)


@dataclass
class AskResult:
    query: str
    q: dict[str, Any]
    bids: list[dict[str, Any]]
    answer_tokens: list[int] | None
    fees: int
    balance_before: int
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)


def escrow_needed(max_tokens: int, pay: int) -> int:
    return pay * max_tokens + au.QUERY_FEE_LAMPORTS + LAMPORTS_PER_SIGNATURE


async def ask(call: Call, kp: Keypair, p: AskParams, current_slot: int, *, progress: Callable[[str], None],
              sleep: Callable[[float], Awaitable[None]], clock: Callable[[], float] = time.monotonic) -> AskResult:
    t0 = clock()
    seed = p.sample_seed if p.sample_seed is not None else (
        secrets.token_bytes(32) if p.temp_milli else pol.ZERO_HASH)
    params = au.RequestParams(
        nonce=p.nonce if p.nonce is not None else secrets.randbits(63), model_id=p.model_id, prompt_hash=pol.tokens_hash(p.prompt_tokens),
        prompt_tokens=len(p.prompt_tokens), max_output_tokens=p.max_tokens, max_price_per_token=p.pay_per_token,
        temp_milli=p.temp_milli, sample_seed=seed, deadline_slots=p.deadline_slots)
    qid = au.query_address(kp.pubkey, params.nonce)
    qaddr = encode_address(qid)
    bal0 = int((await call({"cmd": "balance", "address": kp.address}))["lamports"])
    need = escrow_needed(p.max_tokens, p.pay_per_token)
    if bal0 < need:
        raise AskError("funds", f"{kp.address} holds {bal0} lamports; the query escrows {need} (with the fee)")
    h = (await call({"cmd": "put_blob", "data_b64": base64.b64encode(token_blob(p.prompt_tokens)).decode(),
                     "keep_until_slot": current_slot + p.deadline_slots + BLOB_RETENTION_SLOTS}))["sha256"]
    if bytes.fromhex(h) != params.prompt_hash:
        raise AskError("node", "the node stored the prompt under another hash")
    bh = bytes.fromhex((await call({"cmd": "recent_blockhash"}))["blockhash"])
    raw = atx.request_transaction(kp, params, bh)
    fees = LAMPORTS_PER_SIGNATURE
    await call({"cmd": "submit_tx", "tx_hex": raw.hex()})
    progress(f"submitted query {qaddr} ({len(p.prompt_tokens)} prompt tokens, up to {p.max_tokens} output tokens "
             f"at <= {p.pay_per_token} lamports/token, within {p.deadline_slots} slots)")

    seen: dict[str, Any] = {}
    last_submit = clock()
    q: dict[str, Any] | None = None
    bids: list[dict[str, Any]] = []
    closed_self = expired_self = False
    while True:
        r = await call({"cmd": "auction_query", "query": qaddr})
        q, bids, bank_slot = r["query"], r["bids"], int(r["bank_slot"])
        now = clock()
        if q is None:
            if now - t0 > LAND_TIMEOUT_S:
                raise AskError("not_landed", f"the request did not land within {LAND_TIMEOUT_S:g} s (bank at slot "
                               f"{bank_slot})")
            if now - last_submit > RESUBMIT_S:
                await call({"cmd": "submit_tx", "tx_hex": raw.hex()})  # same signature: lands at most once
                last_submit = now
            await sleep(POLL_S)
            continue
        if "landed" not in seen:
            seen["landed"] = now
            progress(f"request landed in slot {q['request_slot']}: bids until slot {q['commit_end_slot']}, "
                     f"reveals until {q['reveal_end_slot']}, answer due before {q['deadline_slot']}; escrow "
                     f"{q['escrow_lamports']} lamports")
        if q["bid_count"] != seen.get("bids", 0):
            seen["bids"] = q["bid_count"]
            progress(f"auction: {q['bid_count']} bid(s) committed")
        if q["revealed_count"] != seen.get("revealed", 0):
            seen["revealed"] = q["revealed_count"]
            progress(f"auction: {q['revealed_count']} bid(s) revealed")
        status = q["status"]
        if status != "OPEN" and "closed" not in seen:
            seen["closed"] = now
            if status in ("AWARDED", "RESULT_POSTED", "EXPIRED") and q["winner"]:
                progress(f"auction closed: winner {q['winner']} at {q['clearing_price']} lamports/token "
                         f"({q['revealed_count']} revealed bid(s))")
            elif status == "REFUNDED":
                progress("auction closed without a revealed bid: the escrow is refunded")
        if status == "RESULT_POSTED":
            progress(f"result posted in slot {q['result_slot']}: {q['num_tokens']} tokens, PoL root "
                     f"{q['pol_root'][:16]}..")
            break
        if status in ("REFUNDED", "EXPIRED"):
            if status == "EXPIRED":
                progress("the winner missed the deadline: query expired, the escrow is refunded, its bond burned")
            break
        if status == "OPEN" and bank_slot >= q["reveal_end_slot"] + SELF_CLOSE_GRACE_SLOTS and not closed_self:
            bh = bytes.fromhex((await call({"cmd": "recent_blockhash"}))["blockhash"])
            order = [decode_address(b["bidder"]) for b in sorted(bids, key=lambda b: int(b["index"]))]
            await call({"cmd": "submit_tx", "tx_hex": atx.close_auction_transaction(
                kp, qid, kp.pubkey, order, bh).hex()})
            fees += LAMPORTS_PER_SIGNATURE
            closed_self = True
            progress("nobody closed the auction: closing it")
        if status == "AWARDED" and bank_slot >= q["deadline_slot"] and not expired_self:
            bh = bytes.fromhex((await call({"cmd": "recent_blockhash"}))["blockhash"])
            await call({"cmd": "submit_tx", "tx_hex": atx.expire_transaction(
                kp, qid, kp.pubkey, decode_address(q["winner"]), bh).hex()})
            fees += LAMPORTS_PER_SIGNATURE
            expired_self = True
            progress("the winner missed the deadline: expiring the query")
        if bank_slot > q["deadline_slot"] + GIVE_UP_AFTER_DEADLINE_SLOTS:
            raise AskError("stuck", f"query {qaddr} is still {status} {GIVE_UP_AFTER_DEADLINE_SLOTS} slots after its "
                           "deadline")
        await sleep(POLL_S)

    answer: list[int] | None = None
    if q["status"] == "RESULT_POSTED":
        got = await call({"cmd": "get_blob", "sha256": q["output_hash"], "timeout_s": ANSWER_FETCH_TIMEOUT_S})
        if got.get("data_b64"):
            answer = blob_tokens(base64.b64decode(got["data_b64"]))
    return AskResult(qaddr, q, bids, answer, fees, bal0, clock() - t0, seen)
