"""`ambient-p2p query "PROMPT"`: ask the chain a question through a running node
(spec/auction.md "What the requester sees").

It tokenizes the prompt with the embedded model's tokenizer (chat template), puts the
prompt blob on the node (``put_blob``; its sha256 is the query's ``prompt_hash``), signs a
``request`` with the requester's key (never sent to the node) and submits it
(``submit_tx``), then follows the query account (``auction_query``) and prints one line per
step to stderr: request landed, bids committed and revealed, the winner and price, the
result posted. It prints the answer (the blob under ``output_hash``, fetched through the
node) and the on-chain record to stdout (``--json``: one JSON object).

It closes the auction itself only if nobody did a few slots after the reveal window, and
expires the query if the winner missed the deadline (both are permissionless; each costs
it one transaction fee, counted in the record).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

DEFAULT_MAX_TOKENS = 32
DEFAULT_WITHIN_S = 60.0
DEFAULT_PAY_PER_TOKEN = 100
POLL_S = 0.4
#: The request is resubmitted (the same signed transaction: it lands at most once) this often
#: until it lands; the command gives up if it has not landed after LAND_TIMEOUT_S.
RESUBMIT_S = 4.0
LAND_TIMEOUT_S = 90.0
#: Slots after the reveal window (deadline) before the requester closes (expires) itself.
SELF_CLOSE_GRACE_SLOTS = 6
#: Slots past the deadline after which the command stops following the query.
GIVE_UP_AFTER_DEADLINE_SLOTS = 40
ANSWER_FETCH_TIMEOUT_S = 20.0


def register(sub: Any) -> None:
    p = sub.add_parser("query", help="ask the chain: auction a prompt to the miners and print the answer",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", help="the question (chat-formatted for the embedded model)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help=f"most output tokens to pay for (1..4096, default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--within", type=float, default=DEFAULT_WITHIN_S, metavar="SECONDS",
                   help=f"the answer must be posted within this many seconds of the request (default "
                        f"{DEFAULT_WITHIN_S:g}; at least the auction's 24 slots)")
    p.add_argument("--pay", type=int, default=DEFAULT_PAY_PER_TOKEN, metavar="LAMPORTS_PER_TOKEN",
                   help=f"most lamports per output token (default {DEFAULT_PAY_PER_TOKEN}); escrowed: "
                        "pay x max-tokens + the query fee")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); up to 10")
    p.add_argument("--keypair", metavar="FILE", default=None,
                   help="the requester's keypair (Solana JSON; default: the node's identity, DIR/identity.json)")
    p.add_argument("--node", "--ledger", "--data-dir", dest="node", default="ambient-node", metavar="DIR",
                   help="the running node's directory (default ./ambient-node)")
    p.add_argument("--json", action="store_true", help="print the answer and record as one JSON object")
    p.set_defaults(func=cmd_query)


def _validate(args: argparse.Namespace) -> None:
    from ..core import pol

    if not args.prompt.strip():
        raise UserError("the prompt is empty")
    if not 1 <= args.max_tokens <= pol.MAX_OUTPUT_TOKENS:
        raise UserError(f"--max-tokens must be 1..{pol.MAX_OUTPUT_TOKENS}, not {args.max_tokens}")
    if not math.isfinite(args.within) or args.within <= 0:
        raise UserError(f"--within must be a positive number of seconds, not {args.within}")
    if args.pay < 1:
        raise UserError(f"--pay must be at least 1 lamport per token, not {args.pay}")
    if args.pay * args.max_tokens >= 2**63:
        raise UserError("--pay x --max-tokens is beyond what an account can hold")
    if not 0 <= args.temperature <= pol.MAX_TEMPERATURE_MILLI / pol.TEMPERATURE_SCALE:
        raise UserError("--temperature must be in 0..10")


class _Node:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir

    def __call__(self, req: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        from ..net.node import control_request

        try:
            out = control_request(self.dir, req, timeout_s=timeout_s)
        except OSError as exc:
            raise UserError(f"no node is running in {self.dir} ({exc.strerror or exc})") from None
        if not out.get("ok"):
            raise UserError(f"the node refused {req.get('cmd')}: {out.get('error')}")
        return out


def _progress(msg: str) -> None:
    print(f"query: {msg}", file=sys.stderr, flush=True)


def cmd_query(args: argparse.Namespace) -> int:
    _validate(args)
    from ..core import auction as au
    from ..core import auction_tx as atx
    from ..core import pol
    from ..core.bank import LAMPORTS_PER_SIGNATURE
    from ..core.blobs import BLOB_RETENTION_SLOTS, blob_tokens, token_blob
    from ..core.crypto import CryptoError, encode_address, read_keypair_file

    data_dir = Path(args.node)
    key_path = Path(args.keypair) if args.keypair else data_dir / "identity.json"
    try:
        kp = read_keypair_file(key_path)
    except CryptoError as exc:
        raise UserError(str(exc)) from None
    node = _Node(data_dir)
    st = node({"cmd": "status"}, timeout_s=10.0)
    if "consensus" not in st:
        raise UserError(f"the node in {data_dir} runs no validator: it cannot take queries")
    slot_ms = float(st["consensus"]["slot_ms"])
    deadline_slots = math.ceil(args.within * 1000 / slot_ms)
    least = au.COMMIT_WINDOW_SLOTS + au.REVEAL_WINDOW_SLOTS + au.MIN_SERVE_SLOTS
    if not least <= deadline_slots <= au.MAX_DEADLINE_SLOTS:
        raise UserError(f"--within must be {least * slot_ms / 1000:g}..{au.MAX_DEADLINE_SLOTS * slot_ms / 1000:g} "
                        f"seconds on this chain ({least}..{au.MAX_DEADLINE_SLOTS} slots of {slot_ms:g} ms)")

    t0 = time.monotonic()
    tok = _tokenizer()
    prompt = tok.encode(args.prompt)
    if len(prompt) > pol.MAX_PROMPT_TOKENS:
        raise UserError(f"the prompt is {len(prompt)} tokens; the limit is {pol.MAX_PROMPT_TOKENS}")
    temp_milli = round(args.temperature * pol.TEMPERATURE_SCALE)
    params = au.RequestParams(
        nonce=secrets.randbits(63), model_id=tok.model_id, prompt_hash=pol.tokens_hash(prompt),
        prompt_tokens=len(prompt), max_output_tokens=args.max_tokens, max_price_per_token=args.pay,
        temp_milli=temp_milli, sample_seed=secrets.token_bytes(32) if temp_milli else pol.ZERO_HASH,
        deadline_slots=deadline_slots)
    qid = au.query_address(kp.pubkey, params.nonce)
    qaddr = encode_address(qid)
    bal0 = int(node({"cmd": "balance", "address": kp.address})["lamports"])
    need = params.max_price_per_token * params.max_output_tokens + au.QUERY_FEE_LAMPORTS + LAMPORTS_PER_SIGNATURE
    if bal0 < need:
        raise UserError(f"{kp.address} holds {bal0} lamports; the query escrows {need} (with the fee)")

    cur = int(st["consensus"]["slot"])
    h = node({"cmd": "put_blob", "data_b64": base64.b64encode(token_blob(prompt)).decode(),
              "keep_until_slot": cur + deadline_slots + BLOB_RETENTION_SLOTS})["sha256"]
    if bytes.fromhex(h) != params.prompt_hash:
        raise UserError("the node stored the prompt under another hash")
    bh = bytes.fromhex(node({"cmd": "recent_blockhash"})["blockhash"])
    raw = atx.request_transaction(kp, params, bh)
    fees = LAMPORTS_PER_SIGNATURE
    node({"cmd": "submit_tx", "tx_hex": raw.hex()})
    _progress(f"submitted query {qaddr} ({len(prompt)} prompt tokens, up to {args.max_tokens} output tokens at "
              f"<= {args.pay} lamports/token, within {deadline_slots} slots)")

    seen: dict[str, Any] = {}
    last_submit = time.monotonic()
    q: dict[str, Any] | None = None
    bids: list[dict[str, Any]] = []
    closed_self = expired_self = False
    while True:
        r = node({"cmd": "auction_query", "query": qaddr})
        q, bids, bank_slot = r["query"], r["bids"], int(r["bank_slot"])
        now = time.monotonic()
        if q is None:
            if now - t0 > LAND_TIMEOUT_S:
                raise UserError(f"the request did not land within {LAND_TIMEOUT_S:g} s (bank at slot {bank_slot})")
            if now - last_submit > RESUBMIT_S:
                node({"cmd": "submit_tx", "tx_hex": raw.hex()})  # same signature: lands at most once
                last_submit = now
            time.sleep(POLL_S)
            continue
        if "landed" not in seen:
            seen["landed"] = now
            _progress(f"request landed in slot {q['request_slot']}: bids until slot {q['commit_end_slot']}, "
                      f"reveals until {q['reveal_end_slot']}, answer due before {q['deadline_slot']}; escrow "
                      f"{q['escrow_lamports']} lamports")
        if q["bid_count"] != seen.get("bids", 0):
            seen["bids"] = q["bid_count"]
            _progress(f"auction: {q['bid_count']} bid(s) committed")
        if q["revealed_count"] != seen.get("revealed", 0):
            seen["revealed"] = q["revealed_count"]
            _progress(f"auction: {q['revealed_count']} bid(s) revealed")
        status = q["status"]
        if status != "OPEN" and "closed" not in seen:
            seen["closed"] = now
            if status in ("AWARDED", "RESULT_POSTED", "EXPIRED") and q["winner"]:
                _progress(f"auction closed: winner {q['winner']} at {q['clearing_price']} lamports/token "
                          f"({q['revealed_count']} revealed bid(s))")
            elif status == "REFUNDED":
                _progress("auction closed without a revealed bid: the escrow is refunded")
        if status == "RESULT_POSTED":
            _progress(f"result posted in slot {q['result_slot']}: {q['num_tokens']} tokens, PoL root "
                      f"{q['pol_root'][:16]}..")
            break
        if status in ("REFUNDED", "EXPIRED"):
            if status == "EXPIRED":
                _progress("the winner missed the deadline: query expired, the escrow is refunded, its bond burned")
            break
        if status == "OPEN" and bank_slot >= q["reveal_end_slot"] + SELF_CLOSE_GRACE_SLOTS and not closed_self:
            bh = bytes.fromhex(node({"cmd": "recent_blockhash"})["blockhash"])
            order = [bytes(_decode(b["bidder"])) for b in sorted(bids, key=lambda b: int(b["index"]))]
            node({"cmd": "submit_tx", "tx_hex": atx.close_auction_transaction(
                kp, qid, kp.pubkey, order, bh).hex()})
            fees += LAMPORTS_PER_SIGNATURE
            closed_self = True
            _progress("nobody closed the auction: closing it")
        if status == "AWARDED" and bank_slot >= q["deadline_slot"] and not expired_self:
            bh = bytes.fromhex(node({"cmd": "recent_blockhash"})["blockhash"])
            node({"cmd": "submit_tx", "tx_hex": atx.expire_transaction(
                kp, qid, kp.pubkey, _decode(q["winner"]), bh).hex()})
            fees += LAMPORTS_PER_SIGNATURE
            expired_self = True
            _progress("the winner missed the deadline: expiring the query")
        if bank_slot > q["deadline_slot"] + GIVE_UP_AFTER_DEADLINE_SLOTS:
            raise UserError(f"query {qaddr} is still {status} {GIVE_UP_AFTER_DEADLINE_SLOTS} slots after its deadline")
        time.sleep(POLL_S)

    elapsed = time.monotonic() - t0
    answer: str | None = None
    if q["status"] == "RESULT_POSTED":
        got = node({"cmd": "get_blob", "sha256": q["output_hash"], "timeout_s": ANSWER_FETCH_TIMEOUT_S},
                   timeout_s=ANSWER_FETCH_TIMEOUT_S + 10)
        if got.get("data_b64"):
            answer = tok.decode(blob_tokens(base64.b64decode(got["data_b64"])))
    bal1 = int(node({"cmd": "balance", "address": kp.address})["lamports"])
    record = {"query": qaddr, "status": q["status"], "answer": answer, "requester": kp.address,
              "miner": q["winner"], "clearing_price_per_token": q["clearing_price"], "num_tokens": q["num_tokens"],
              "price_due_lamports": q["clearing_price"] * q["num_tokens"], "escrow_lamports": q["escrow_lamports"],
              "requester_tx_fees_lamports": fees, "balance_before": bal0, "balance_after": bal1,
              "pol_root": q["pol_root"], "pol_commitment_hash": q["pol_commitment_hash"],
              "output_hash": q["output_hash"], "request_slot": q["request_slot"], "result_slot": q["result_slot"],
              "deadline_slot": q["deadline_slot"], "bids": bids, "seconds": round(elapsed, 1)}
    if args.json:
        print(json.dumps(record))
    else:
        print(answer if answer is not None else f"(no answer: the query is {q['status']})")
        print()
        held = "held in escrow until the Logit Pool settles" if q["status"] == "RESULT_POSTED" else "refunded"
        print(f"query id        {qaddr}\nstatus          {q['status']}\nminer           {q['winner'] or '-'}\n"
              f"price           {q['clearing_price']} lamports/token x {q['num_tokens']} tokens = "
              f"{record['price_due_lamports']} lamports (due at settlement)\n"
              f"escrow          {q['escrow_lamports']} lamports ({held})\n"
              f"fees            {fees} lamports\n"
              f"balance         {bal0} -> {bal1} ({bal1 - bal0:+d})\n"
              f"PoL root        {q['pol_root']}\nslots           request {q['request_slot']}, result "
              f"{q['result_slot'] or '-'}, deadline {q['deadline_slot']}\ntime            {elapsed:.1f} s")
    return 0 if answer is not None else 1


def _decode(addr: str) -> bytes:
    from ..core.crypto import decode_address

    return decode_address(addr)


class _Tokenizer:
    def __init__(self, tk: Any, template: str | None, model_id: bytes) -> None:
        self.tk, self.template, self.model_id = tk, template, model_id

    def encode(self, text: str) -> list[int]:
        from ..model.gguf_loader import render_chat

        return list(self.tk.encode(render_chat(self.template, text), add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self.tk.decode(ids, skip_special_tokens=True))


def _tokenizer() -> _Tokenizer:
    """The embedded model's tokenizer and id (the miners' model)."""
    from ..model import gguf_loader

    try:
        path = gguf_loader.default_model_path()
        files = gguf_loader.read_gguf(path)
    except gguf_loader.GgufError as exc:
        raise UserError(str(exc)) from None
    return _Tokenizer(gguf_loader.build_tokenizer(files), files.chat_template, gguf_loader.file_sha256(path))
