"""The OpenAI-compatible door (spec/rpc.md "OpenAI API"): ``GET /v1/models`` and
``POST /v1/chat/completions``, answered through the auction by node/requester.py's flow,
paid from the node's requester keypair (``--rpc-requester-keypair``; default the node's
identity), or, with ``--rpc-chat-keys FILE``, from the key the request's bearer token maps
to (a token not in the file: 401 ``invalid_api_key``); without that file bearer tokens are
ignored and whoever reaches the door (127.0.0.1 by default) spends the node's key.

Response shapes follow OpenAI's chat completion object and its SSE chunk stream, with
``usage`` and an extra ``ambient`` object: query id, price, miner, PoL commitment,
settlement status: with ``--rpc-chat-wait posted`` (the default) the node returns at
``post_result`` with ``pending``; with ``settled`` (or a request's extension field
``"ambient": {"wait": "settled"}``) it waits for the Logit Pool's ``settle`` and reports
``verified``/``rejected``, the validators' verdicts and the lamports paid and refunded. Errors use OpenAI's ``{"error": {message, type, param, code}}`` shape:
400 invalid request, 404 unknown model, 402 funds, 429 too many chats in flight, 503 no
miner took the query, 504 the deadline passed.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ...core import auction as au
from ...core import logit_pool as lp
from ...core import pol
from ...core.crypto import Keypair, encode_address
from ..requester import AskError, AskParams, AskResult, ask, escrow_needed

if TYPE_CHECKING:  # pragma: no cover
    from .server import RpcExtension

DEFAULT_CHAT_PAY_PER_TOKEN = 100
DEFAULT_CHAT_WITHIN_S = 60.0
DEFAULT_MAX_TOKENS = 64
#: Chats in flight at once (each holds an escrow and a poll loop); more get 429.
MAX_CHATS_IN_FLIGHT = 8
MAX_STOP_SEQUENCES = 4  # OpenAI's limit
#: OpenAI's temperature range; the chain takes up to pol.MAX_TEMPERATURE_MILLI / 1000.
MAX_TEMPERATURE = 2.0
#: SSE comment sent while the query runs, so proxies and clients keep the stream open.
STREAM_KEEPALIVE_S = 5.0
#: When a chat returns: at ``post_result`` (settlement "pending") or after the Logit Pool's settle.
CHAT_WAIT_MODES = ("posted", "settled")
DEFAULT_CHAT_WAIT = "posted"
#: Slots past the last verification window (spec/logit_pool.md: the beacon delay and two
#: rounds of VERIFY_WINDOW_SLOTS after the result) that a settled chat waits for the settle
#: transaction to land before it answers 504.
SETTLE_GRACE_SLOTS = 24
SETTLE_POLL_S = 0.5


@dataclass
class ChatOptions:
    requester: Keypair
    pay_per_token: int = DEFAULT_CHAT_PAY_PER_TOKEN
    within_s: float = DEFAULT_CHAT_WITHIN_S
    #: bearer token -> the key that pays for its chats; None: every chat pays with ``requester``
    keys: dict[str, Keypair] | None = None
    #: "posted" or "settled" (CHAT_WAIT_MODES): the default of requests that do not say
    wait: str = DEFAULT_CHAT_WAIT

    def payer(self, authorization: str | None) -> Keypair:
        if self.keys is None:
            return self.requester
        scheme, _, token = (authorization or "").partition(" ")
        kp = self.keys.get(token.strip()) if scheme.lower() == "bearer" else None
        if kp is None:
            shown = (token.strip()[:4] + "...") if token.strip() else "none"
            raise ChatError(401, f"Incorrect API key provided: {shown}. This node maps bearer tokens to paying keys "
                            "(--rpc-chat-keys).", "invalid_request_error", None, "invalid_api_key")
        return kp


class ChatError(Exception):
    def __init__(self, status: int, message: str, kind: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> Response:
        return JSONResponse(self.body(), status_code=self.status)


def bad(message: str, param: str | None = None, code: str | None = None) -> ChatError:
    return ChatError(400, message, "invalid_request_error", param, code)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    model_id: bytes
    tokenizer: Any
    template: str | None
    eos: int | None


def render_messages(template: str | None, messages: list[dict[str, str]]) -> str:
    """The conversation in the model's chat template (jinja2, as transformers renders it),
    the assistant turn opened; without a template, the contents joined by newlines."""
    if not template:
        return "\n".join(m["content"] for m in messages)
    import jinja2

    env = jinja2.Environment(loader=jinja2.BaseLoader(), keep_trailing_newline=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def _content(m: Any, i: int) -> dict[str, str]:
    if not isinstance(m, dict):
        raise bad(f"messages[{i}] must be an object", f"messages[{i}]")
    role = m.get("role")
    if role not in ("system", "developer", "user", "assistant"):
        raise bad(f"Invalid value for 'messages[{i}].role': {role!r}", f"messages[{i}].role")
    c = m.get("content")
    if isinstance(c, list):  # content parts: text only
        texts = []
        for part in c:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
            texts.append(part["text"])
        c = "".join(texts)
    if not isinstance(c, str):
        raise bad(f"Invalid type for 'messages[{i}].content': expected a string", f"messages[{i}].content")
    return {"role": "system" if role == "developer" else role, "content": c}


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    seed: int | None
    stop: list[str]
    stream: bool
    include_usage: bool
    wait: str | None = None  # the request's "ambient": {"wait": ...}; None: the server's default


def parse_request(body: Any, model_name: str) -> ChatRequest:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise bad("you must provide a model parameter", "model")
    if model != model_name:
        raise ChatError(404, f"The model `{model}` does not exist or you do not have access to it.",
                        "invalid_request_error", "model", "model_not_found")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("'messages' must be a non-empty array", "messages", "invalid_type")
    messages = [_content(m, i) for i, m in enumerate(msgs)]
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    if mt is None:
        mt = DEFAULT_MAX_TOKENS
    if not isinstance(mt, int) or isinstance(mt, bool) or not 1 <= mt <= pol.MAX_OUTPUT_TOKENS:
        raise bad(f"max_tokens must be an integer in 1..{pol.MAX_OUTPUT_TOKENS}", "max_tokens", "invalid_value")
    temp = body.get("temperature")
    temp = 1.0 if temp is None else temp
    if not isinstance(temp, (int, float)) or isinstance(temp, bool) or not 0 <= temp <= MAX_TEMPERATURE \
            or not math.isfinite(temp):
        raise bad(f"temperature must be a number in 0..{MAX_TEMPERATURE:g}", "temperature", "invalid_value")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise bad("seed must be an integer", "seed", "invalid_type")
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP_SEQUENCES or \
            not all(isinstance(s, str) and s for s in stops):
        raise bad(f"stop must be a string or up to {MAX_STOP_SEQUENCES} non-empty strings", "stop")
    n = body.get("n")
    if n not in (None, 1):
        raise bad("this node answers one choice per request (n = 1)", "n", "invalid_value")
    stream = body.get("stream")
    if stream not in (None, True, False):
        raise bad("stream must be a boolean", "stream", "invalid_type")
    so = body.get("stream_options") or {}
    if not isinstance(so, dict):
        raise bad("stream_options must be an object", "stream_options")
    ext = body.get("ambient")
    if ext is not None and not isinstance(ext, dict):
        raise bad("ambient must be an object", "ambient", "invalid_type")
    wait = (ext or {}).get("wait")
    if wait is not None and wait not in CHAT_WAIT_MODES:
        raise bad(f"ambient.wait must be one of {', '.join(CHAT_WAIT_MODES)}", "ambient.wait", "invalid_value")
    return ChatRequest(messages, mt, float(temp), seed, stops, bool(stream), bool(so.get("include_usage")), wait)


def settlement_amounts(q: dict[str, Any], bond: int, verdicts: list[str | None],
                       quorum: int = lp.VERDICT_QUORUM) -> dict[str, int]:
    """Where a settled query's lamports went (the rule of core/logit_pool.py ``settle``,
    spec/logit_pool.md "Settling"), from the query as posted (``q``: query_json of the
    RESULT_POSTED account), the winning bid's bond, the final verdicts in draw order and the
    pool's quorum (``per_round // 2 + 1`` of the difficulty knobs in force at the draw).
    ``refunded_lamports`` is everything that returned to the requester (escrow rest and,
    when rejected, its share of the slashed bond)."""
    escrow = int(q["escrow_lamports"])
    accepts, rejects = verdicts.count("accept"), verdicts.count("reject")
    out = {"paid_lamports": 0, "refunded_lamports": escrow, "validator_fees_lamports": 0,
           "bond_returned_lamports": bond, "bond_slashed_lamports": 0}
    if accepts == rejects == 0:  # nobody checked it: escrow back, bond back
        return out
    verified = rejects < quorum and accepts >= rejects
    counted = accepts if verified else rejects
    each = (escrow - int(q["max_price_per_token"]) * int(q["max_output_tokens"])) // counted
    left = escrow - each * counted
    if verified:
        pay = int(q["clearing_price"]) * int(q["num_tokens"])
        return {**out, "paid_lamports": pay, "refunded_lamports": left - pay, "validator_fees_lamports": each * counted}
    to_requester = bond * lp.SLASH_TO_REQUESTER_PERCENT // 100
    per_validator = (bond - to_requester) // counted
    return {**out, "refunded_lamports": left + bond - per_validator * counted,
            "validator_fees_lamports": each * counted + per_validator * counted, "bond_returned_lamports": 0,
            "bond_slashed_lamports": bond}


@dataclass
class Settled:
    """A chat's query after the Logit Pool settled it."""

    query: dict[str, Any]  # the query account after settlement
    draw: dict[str, Any] | None  # pool_draw's "draw"
    amounts: dict[str, int]
    waited_s: float  # from post_result to the settlement seen


def apply_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class ChatDoor:
    def __init__(self, ext: RpcExtension) -> None:
        self.ext = ext
        self.opts: ChatOptions | None = ext.cfg.chat
        self.info: ModelInfo | None = None
        self.in_flight = 0
        self.counts: Counter[str] = Counter()
        self.created = int(time.time())

    def model_name(self) -> str:
        return self.ext.v.genesis.model.name

    async def model_info(self) -> ModelInfo:
        if self.info is None:
            from ...model import gguf_loader as g

            def load() -> ModelInfo:
                path = g.default_model_path()
                files = g.read_gguf_tokenizer(path)
                return ModelInfo(self.model_name(), g.file_sha256(path), g.build_tokenizer(files),
                                 files.chat_template, files.eos_token_id)

            try:
                self.info = await trio.to_thread.run_sync(load)
            except g.GgufError as exc:
                raise ChatError(503, f"the embedded model is not available: {exc}", "service_unavailable") from None
        return self.info

    def _model_obj(self) -> dict[str, Any]:
        return {"id": self.model_name(), "object": "model", "created": self.ext.v.genesis.creation_time_s,
                "owned_by": "ambient"}

    async def models(self, _request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_obj()]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name != self.model_name():
            return ChatError(404, f"The model `{name}` does not exist or you do not have access to it.",
                             "invalid_request_error", "model", "model_not_found").response()
        return JSONResponse(self._model_obj())

    async def completions(self, request: Request) -> Response:
        try:
            raw = await request.body()
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise bad("We could not parse the JSON body of your request.") from None
            req = parse_request(body, self.model_name())
            if self.opts is None:
                raise ChatError(503, "this node has no requester key for chats", "service_unavailable")
            payer = self.opts.payer(request.headers.get("authorization"))
            info = await self.model_info()
            prompt = list(info.tokenizer.encode(render_messages(info.template, req.messages),
                                                add_special_tokens=False).ids)
            if len(prompt) > pol.MAX_PROMPT_TOKENS:
                raise bad(f"This model's maximum context length is {pol.MAX_PROMPT_TOKENS} tokens; the messages are "
                          f"{len(prompt)} tokens.", "messages", "context_length_exceeded")
            self._check_funds(req, payer)
            if self.in_flight >= MAX_CHATS_IN_FLIGHT:
                raise ChatError(429, f"{MAX_CHATS_IN_FLIGHT} chats are in flight on this node; retry later",
                                "rate_limit_exceeded", None, "rate_limit_exceeded")
        except ChatError as exc:
            self.counts["rejected"] += 1
            return exc.response()
        if req.stream:
            return StreamingResponse(self._stream(req, info, prompt, payer), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        try:
            res = await self._run(req, info, prompt, payer, self.new_query(payer)[0])
            settled = await self._settle(req, res) if self._wait(req) == "settled" else None
        except ChatError as exc:
            return exc.response()
        return JSONResponse(self._completion(req, info, prompt, res, settled))

    def _wait(self, req: ChatRequest) -> str:
        assert self.opts is not None
        return req.wait or self.opts.wait

    async def _call(self, r: dict[str, Any]) -> dict[str, Any]:
        assert self.ext.control_fn is not None
        out = await self.ext.control_fn(r)
        if out is None or not out.get("ok"):
            raise AskError("node", f"the node refused {r.get('cmd')}: {(out or {}).get('error')}")
        return out

    async def _settle(self, req: ChatRequest, res: AskResult) -> Settled:
        """Follow the posted query until the Logit Pool settles it (spec/rpc.md "OpenAI API":
        ``settled``); 504 once the bank passes the last verification window plus
        SETTLE_GRACE_SLOTS with the query still RESULT_POSTED."""
        q0 = res.q
        last = int(q0["result_slot"]) + lp.DRAW_DELAY_SLOTS + lp.MAX_DRAW_ROUNDS * (
            lp.VERIFY_WINDOW_SLOTS + lp.DRAW_DELAY_SLOTS) + SETTLE_GRACE_SLOTS
        bond = next((int(b["bond_lamports"]) for b in res.bids if b["bidder"] == q0["winner"]), 0)
        t0 = time.monotonic()
        try:
            while True:
                r = await self._call({"cmd": "auction_query", "query": res.query})
                q = r["query"]
                if q is not None and q["status"] in ("FINALIZED_VERIFIED", "FINALIZED_REJECTED"):
                    d = (await self._call({"cmd": "pool_draw", "query": res.query}))["draw"]
                    verdicts = [v["verdict"] for v in (d["validators"] if d else [])]
                    self.counts[q["status"].lower()] += 1
                    quorum = int(d["quorum"]) if d else lp.VERDICT_QUORUM
                    return Settled(q, d, settlement_amounts(q0, bond, verdicts, quorum), time.monotonic() - t0)
                if int(r["bank_slot"]) > last:
                    self.counts["settle_timeout"] += 1
                    raise ChatError(504, f"query {res.query} has its answer posted but the Logit Pool did not settle "
                                    f"it by slot {last}", "timeout", None, "deadline_exceeded")
                await trio.sleep(SETTLE_POLL_S)
        except AskError as exc:
            raise ChatError(500, str(exc), "server_error") from None

    def _check_funds(self, req: ChatRequest, payer: Keypair) -> None:
        assert self.opts is not None
        v = self.ext.v
        res = v.banks.get(v.cons.processed_slot())
        bal = res.bank.balance(payer.pubkey) if res is not None else 0
        need = escrow_needed(req.max_tokens, self.opts.pay_per_token)
        if bal < need:
            raise ChatError(402, f"the requester {payer.address} holds {bal} lamports; this chat "
                            f"escrows {need}", "insufficient_quota", None, "insufficient_quota")

    def new_query(self, payer: Keypair) -> tuple[int, str]:
        """A fresh request nonce and the query address it gives (the completion's id)."""
        nonce = secrets.randbits(63)
        return nonce, encode_address(au.query_address(payer.pubkey, nonce))

    async def _run(self, req: ChatRequest, info: ModelInfo, prompt: list[int], payer: Keypair,
                   nonce: int) -> AskResult:
        assert self.opts is not None
        v = self.ext.v
        deadline_slots = math.ceil(self.opts.within_s * 1000 / v.slot_ms)
        least = au.Windows.for_slot(round(v.slot_ms * 1000)).min_deadline_slots
        deadline_slots = max(least, min(au.MAX_DEADLINE_SLOTS, deadline_slots))
        seed = hashlib.sha256(b"ambient/openai-seed/v1\x00" + str(req.seed).encode()).digest() \
            if req.seed is not None else None
        p = AskParams(prompt_tokens=prompt, model_id=info.model_id, max_tokens=req.max_tokens,
                      pay_per_token=self.opts.pay_per_token,
                      temp_milli=round(req.temperature * pol.TEMPERATURE_SCALE), deadline_slots=deadline_slots,
                      sample_seed=seed, nonce=nonce)

        self.in_flight += 1
        self.counts["submitted"] += 1
        try:
            res = await ask(self._call, payer, p, v.slot_at(v.clock.wall_ms()), progress=lambda _m: None,
                            sleep=trio.sleep)
        except AskError as exc:
            self.counts[f"error_{exc.kind}"] += 1
            if exc.kind == "funds":
                raise ChatError(402, str(exc), "insufficient_quota", None, "insufficient_quota") from None
            if exc.kind in ("stuck", "not_landed"):
                raise ChatError(504, str(exc), "timeout", None, "deadline_exceeded") from None
            raise ChatError(500, str(exc), "server_error") from None
        finally:
            self.in_flight -= 1
        status = res.q["status"]
        self.counts[status.lower()] += 1
        if status == "REFUNDED":
            raise ChatError(503, f"no miner took query {res.query}: the escrow is refunded", "service_unavailable",
                            None, "no_miner")
        if status == "EXPIRED" or res.answer_tokens is None:
            raise ChatError(504, f"query {res.query} was not answered before its deadline ({status})", "timeout",
                            None, "deadline_exceeded")
        return res

    def _ambient(self, res: AskResult, settled: Settled | None = None) -> dict[str, Any]:
        q = res.q
        out = {"query": res.query, "status": q["status"], "miner": q["winner"],
               "price_per_token": q["clearing_price"], "price_lamports": q["clearing_price"] * q["num_tokens"],
               "escrow_lamports": q["escrow_lamports"], "fees_lamports": res.fees, "pol_root": q["pol_root"],
               "pol_commitment_hash": q["pol_commitment_hash"], "output_hash": q["output_hash"],
               "request_slot": q["request_slot"], "result_slot": q["result_slot"],
               "settlement": "pending", "verdicts": [], "seconds": round(res.seconds, 1)}
        if settled is not None:
            d = settled.draw
            out.update(status=settled.query["status"],
                       settlement="verified" if settled.query["status"] == "FINALIZED_VERIFIED" else "rejected",
                       verdicts=[{"validator": v["validator"], "round": v["round"], "verdict": v["verdict"]}
                                 for v in (d["validators"] if d else [])],
                       seconds=round(res.seconds + settled.waited_s, 1), **settled.amounts)
        return out

    def _text(self, req: ChatRequest, info: ModelInfo, res: AskResult) -> tuple[str, str]:
        toks = res.answer_tokens or []
        text = str(info.tokenizer.decode(toks, skip_special_tokens=True))
        text, stopped = apply_stop(text, req.stop)
        eos = info.eos is not None and bool(toks) and toks[-1] == info.eos
        finish = "stop" if stopped or eos or len(toks) < req.max_tokens else "length"
        return text, finish

    def _usage(self, prompt: list[int], res: AskResult) -> dict[str, Any]:
        n = int(res.q["num_tokens"])
        return {"prompt_tokens": len(prompt), "completion_tokens": n, "total_tokens": len(prompt) + n,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

    def _completion(self, req: ChatRequest, info: ModelInfo, prompt: list[int], res: AskResult,
                    settled: Settled | None = None) -> dict[str, Any]:
        text, finish = self._text(req, info, res)
        return {"id": f"chatcmpl-{res.query}", "object": "chat.completion", "created": int(time.time()),
                "model": info.name, "system_fingerprint": f"fp_{info.model_id.hex()[:12]}",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                     "annotations": []},
                             "logprobs": None, "finish_reason": finish}],
                "usage": self._usage(prompt, res), "ambient": self._ambient(res, settled)}

    async def _stream(self, req: ChatRequest, info: ModelInfo, prompt: list[int],
                      payer: Keypair) -> AsyncIterator[str]:
        created = int(time.time())
        base = {"object": "chat.completion.chunk", "created": created, "model": info.name,
                "system_fingerprint": f"fp_{info.model_id.hex()[:12]}"}

        def chunk(cid: str, delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
            c = {"id": cid, **base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}], **extra}
            if req.include_usage:
                c.setdefault("usage", None)
            return f"data: {json.dumps(c)}\n\n"

        nonce, query = self.new_query(payer)
        cid = f"chatcmpl-{query}"  # every chunk carries the id the query will have
        send, recv = trio.open_memory_channel[Any](1)

        async def run() -> None:  # a task of the server's nursery: the query goes on if the client leaves
            async with send:
                try:
                    res = await self._run(req, info, prompt, payer, nonce)
                    settled = await self._settle(req, res) if self._wait(req) == "settled" else None
                    await send.send((res, settled))
                except ChatError as exc:
                    await send.send(exc)
                except trio.BrokenResourceError:
                    pass

        assert self.ext.nursery is not None
        self.ext.nursery.start_soon(run)
        yield chunk(cid, {"role": "assistant", "content": "", "refusal": None}, None)
        out: Any = None
        async with recv:
            while out is None:
                with trio.move_on_after(STREAM_KEEPALIVE_S):
                    out = await recv.receive()
                if out is None:
                    yield ": waiting for the auction\n\n"
        if isinstance(out, ChatError):
            yield f"event: error\ndata: {json.dumps(out.body())}\n\n"
            return
        res, settled = out
        text, finish = self._text(req, info, res)
        # the answer arrives whole (posted on chain): one content chunk per output token's text
        toks = res.answer_tokens or []
        sent = ""
        for i in range(1, len(toks) + 1):
            piece = str(info.tokenizer.decode(toks[:i], skip_special_tokens=True))
            piece = piece[:len(text)] if len(piece) > len(text) else piece
            if len(piece) > len(sent) and text.startswith(piece):
                yield chunk(cid, {"content": piece[len(sent):]}, None)
                sent = piece
        if sent != text:
            yield chunk(cid, {"content": text[len(sent):]}, None)
        yield chunk(cid, {}, finish, ambient=self._ambient(res, settled))
        if req.include_usage:
            c = {"id": cid, **base, "choices": [], "usage": self._usage(prompt, res)}
            yield f"data: {json.dumps(c)}\n\n"
        yield "data: [DONE]\n\n"
