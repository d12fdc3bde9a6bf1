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
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError

DEFAULT_MAX_TOKENS = 32
DEFAULT_WITHIN_S = 60.0
DEFAULT_PAY_PER_TOKEN = 100
# The flow itself (polling, resubmission, self-close and give-up rules) is node/requester.py's,
# shared with the node's OpenAI door.


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
    from ..core import pol
    from ..core.crypto import CryptoError, read_keypair_file

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
    least = au.Windows.for_slot(round(slot_ms * 1000)).min_deadline_slots
    if not least <= deadline_slots <= au.MAX_DEADLINE_SLOTS:
        raise UserError(f"--within must be {least * slot_ms / 1000:g}..{au.MAX_DEADLINE_SLOTS * slot_ms / 1000:g} "
                        f"seconds on this chain ({least}..{au.MAX_DEADLINE_SLOTS} slots of {slot_ms:g} ms)")

    tok = _tokenizer()
    prompt = tok.encode(args.prompt)
    if len(prompt) > pol.MAX_PROMPT_TOKENS:
        raise UserError(f"the prompt is {len(prompt)} tokens; the limit is {pol.MAX_PROMPT_TOKENS}")
    import trio

    from ..node.requester import ANSWER_FETCH_TIMEOUT_S, AskError, AskParams, ask

    async def call(req: dict[str, Any]) -> dict[str, Any]:
        t = ANSWER_FETCH_TIMEOUT_S + 10 if req.get("cmd") == "get_blob" else 30.0
        return await trio.to_thread.run_sync(lambda: node(req, timeout_s=t))

    p = AskParams(prompt_tokens=prompt, model_id=tok.model_id, max_tokens=args.max_tokens, pay_per_token=args.pay,
                  temp_milli=round(args.temperature * pol.TEMPERATURE_SCALE), deadline_slots=deadline_slots)
    try:
        res = trio.run(lambda: ask(call, kp, p, int(st["consensus"]["slot"]), progress=_progress, sleep=trio.sleep))
    except AskError as exc:
        raise UserError(str(exc)) from None
    q, bids, qaddr, fees, bal0 = res.q, res.bids, res.query, res.fees, res.balance_before
    elapsed = res.seconds
    answer = tok.decode(res.answer_tokens) if res.answer_tokens is not None else None
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
        files = gguf_loader.read_gguf_tokenizer(path)  # no tensors: tokenizing needs none
    except gguf_loader.GgufError as exc:
        raise UserError(str(exc)) from None
    return _Tokenizer(gguf_loader.build_tokenizer(files), files.chat_template, gguf_loader.file_sha256(path))
