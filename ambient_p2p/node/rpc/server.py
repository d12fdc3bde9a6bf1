"""The node's HTTP doors (spec/rpc.md): one ASGI app served by hypercorn's trio worker on
the node's own trio loop, bound to ``--rpc-bind`` (127.0.0.1 by default) on ``--rpc-port``
(JSON-RPC, /v1 OpenAI API, /metrics, /health) and ``--rpc-port`` + 1 (the same app; Solana
clients open their PubSub WebSocket there).

Why hypercorn + starlette: the node is a trio program (py-libp2p, the validator's
services); hypercorn is the maintained ASGI server with a native trio worker (HTTP/1.1 via
h11, HTTP/2, WebSocket via wsproto), so the doors run as tasks of the node's nursery and
read the banks between awaits without locks or threads; starlette (on anyio, which runs on
trio) gives routing, request parsing and SSE streaming. A thread-based server (aiohttp,
uvicorn on asyncio) would need a second event loop and locking around every bank read.

Guards, all in :class:`Guard` (a raw ASGI middleware in front of the app): a per-client
token bucket (``--rpc-rate-limit`` requests/s per client IP; HTTP 429), a body limit per
route (:data:`MAX_RPC_BODY_BYTES`, agave's 50 KiB, for JSON-RPC; HTTP 413) read
incrementally so an oversized body is never buffered, and a per-request time limit
(:data:`REQUEST_TIMEOUT_S`; chat completions have their own, the query's deadline).
hypercorn bounds the rest: header size (h11) and the idle keep-alive timeout.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import trio

from ...core.bank import BlockError
from ...core.crypto import encode_address
from ...net.node import ExtensionBase
from .solana import RpcOptions, SolanaRpc
from .txindex import MAX_INDEXED_BLOCKS, BlockRecord, TxIndex, account_keys, from_stored, to_stored

if TYPE_CHECKING:  # pragma: no cover
    from ...net.node import NetNode
    from ..validator import Validator

DEFAULT_RPC_PORT = 8899
DEFAULT_RPC_BIND = "127.0.0.1"
#: agave's MAX_REQUEST_BODY_SIZE (rpc_service.rs): 50 KiB per JSON-RPC body.
MAX_RPC_BODY_BYTES = 50 * 1024
#: /v1 bodies (a chat's messages): the prompt is at most pol.MAX_PROMPT_TOKENS tokens anyway.
MAX_OPENAI_BODY_BYTES = 1 << 20
REQUEST_TIMEOUT_S = 30.0
#: Requests per second per client IP (token bucket; burst = 2 s worth).
DEFAULT_RATE_LIMIT_RPS = 2000.0
RATE_BURST_S = 2.0
#: Clients the rate limiter remembers (least recently seen forgotten first): bounds its memory.
MAX_TRACKED_CLIENTS = 4096
KEEP_ALIVE_S = 5.0
#: How often the transaction index looks for newly frozen banks when no freeze wakes it.
INDEX_POLL_S = 0.5
#: In the node's data directory: the URLs it serves its RPC on (``ambient-p2p status`` reads it).
RPC_FILE = "rpc.json"


@dataclass
class RpcConfig:
    port: int = DEFAULT_RPC_PORT
    bind: str = DEFAULT_RPC_BIND
    rate_limit_rps: float = DEFAULT_RATE_LIMIT_RPS
    opts: RpcOptions = field(default_factory=RpcOptions)
    #: the OpenAI door's settings (openai_api.ChatOptions), None: /v1 answers 503
    chat: Any = None


def bind_sockets(bind: str, port: int) -> list[socket.socket]:
    """The two listening sockets (``port`` and ``port + 1``), bound now so that a port in
    use is one error line before the node starts (raises OSError)."""
    out: list[socket.socket] = []
    try:
        for p in (port, port + 1):
            family = socket.AF_INET6 if ":" in bind else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((bind, p))
            except OSError as exc:
                s.close()
                raise OSError(exc.errno, f"cannot listen for RPC on {bind}:{p}: {exc.strerror}") from None
            s.listen(1024)
            s.setblocking(False)
            out.append(s)
    except OSError:
        for s in out:
            s.close()
        raise
    return out


class RateLimiter:
    """Token bucket per client key (bounded LRU of clients)."""

    def __init__(self, rps: float, now: Callable[[], float] = time.monotonic) -> None:
        self.rps, self.burst, self.now = rps, max(1.0, rps * RATE_BURST_S), now
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.limited = 0

    def allow(self, client: str) -> bool:
        t = self.now()
        tokens, last = self.buckets.pop(client, (self.burst, t))
        tokens = min(self.burst, tokens + (t - last) * self.rps)
        ok = tokens >= 1.0
        self.buckets[client] = (tokens - 1.0 if ok else tokens, t)
        while len(self.buckets) > MAX_TRACKED_CLIENTS:
            self.buckets.popitem(last=False)
        if not ok:
            self.limited += 1
        return ok


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


async def _send_json(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, obj: Any) -> None:
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _error_body(path: str, status: int, message: str, kind: str) -> Any:
    if path.startswith("/v1"):
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return {"jsonrpc": "2.0", "error": {"code": -32600 if status == 413 else status, "message": message}, "id": None}


class Guard:
    """Rate limit and body limit in front of the app (see the module docstring)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app, self.limiter = app, limiter
        self.too_large = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "/")
        client = (scope.get("client") or ("?", 0))[0]
        if not self.limiter.allow(client):
            if scope["type"] == "http":
                await _send_json(send, 429, _error_body(path, 429, "Too many requests for a specific RPC call",
                                                        "rate_limit_exceeded"))
            else:
                await send({"type": "websocket.close", "code": 1013})
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        limit = MAX_OPENAI_BODY_BYTES if path.startswith("/v1") else MAX_RPC_BODY_BYTES
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            self.too_large += 1
            await _send_json(send, 413, _error_body(path, 413, f"request body over {limit} bytes",
                                                    "invalid_request_error"))
            return
        seen = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            msg: dict[str, Any] = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return msg

        started = False

        async def tracking_send(msg: dict[str, Any]) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            self.too_large += 1
            if not started:
                await _send_json(send, 413, _error_body(path, 413, f"request body over {limit} bytes",
                                                        "invalid_request_error"))


class RpcExtension(ExtensionBase):
    """The doors as a node extension (net/node.py ``NodeExtension``): runs the index
    follower and the HTTP server as tasks of the node's nursery."""

    def __init__(self, validator: Validator, cfg: RpcConfig, sockets: list[socket.socket],
                 control: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]] | None = None) -> None:
        self.v, self.cfg, self.sockets = validator, cfg, sockets
        # the RPC is the one reader of the banks' token balances (transaction meta's
        # pre/postTokenBalances, spec/rpc.md): the banks record them only where it is served;
        # the root bank the node restarts from carries the choice and its children inherit it
        validator.token_balances = True
        for res in list(validator.banks.values()):
            res.bank.token_balances = True
        self.index = TxIndex()
        self.node: NetNode | None = None
        self.limiter = RateLimiter(cfg.rate_limit_rps)
        self.rpc = SolanaRpc(validator, self.index, cfg.opts, self._submit, self._cluster)
        #: the composed node's control commands (put_blob, submit_tx, ...), for the chat door
        self.control_fn = control
        #: node/tpu.py ``Tpu.submit_transactions`` (set by commands/join.py): sendTransaction's path
        self.tpu_submit: Callable[[list[bytes]], Awaitable[Any]] | None = None
        self.started_s = time.monotonic()
        self.http_requests = 0
        self.app: Any = None
        self.guard: Guard | None = None
        self.chat: Any = None
        self.nursery: trio.Nursery | None = None
        #: indexed blocks not yet written to the blockstore (ledger/txstatus.py), oldest first
        self.unwritten: list[BlockRecord] = []
        #: the stored history: blocks loaded at start, written, failed batch writes, records
        #: refused by the strict read, blocks never written (writes failing for long)
        self.history = {"loaded": 0, "written": 0, "write_errors": 0, "bad_records": 0, "dropped": 0}
        self._write_wake = trio.Event()

    # -- NodeExtension ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        host = self.cfg.bind
        port = self.sockets[0].getsockname()[1] if self.sockets else self.cfg.port
        return {"rpc": {"url": f"http://{host}:{port}", "ws": f"ws://{host}:{port + 1}",
                        "openai": f"http://{host}:{port}/v1", "requests": self.rpc.requests,
                        "errors": self.rpc.errors, "rate_limited": self.limiter.limited,
                        "too_large": self.guard.too_large if self.guard else 0,
                        "indexed_blocks": len(self.index.blocks), "history": dict(self.history)}}

    def peer_scores(self) -> dict[str, float]:
        """Each connected peer's gossip score (py-libp2p's scorer over our topics; the
        ``peers`` control command's figure), for /metrics."""
        node = self.node
        if node is None or node.gossip is None:
            return {}
        return {p.to_base58(): round(node.gossip.peer_score(p), 3) for p in node._connected()}

    async def run(self, node: Any) -> None:
        from hypercorn.config import Config, Sockets
        from hypercorn.trio.run import worker_serve
        from hypercorn.utils import wrap_app

        from .app import build_app

        self.node = node
        self.rpc.node_status = lambda: node.status()
        self.app = build_app(self)
        self._write_rpc_file()
        self.guard = Guard(self.app, self.limiter)
        config = Config()
        config.keep_alive_timeout = KEEP_ALIVE_S
        # no read_timeout: hypercorn applies it to every read, also while a response streams
        # (a chat's SSE stream waits on the auction for tens of seconds with nothing to read);
        # idle connections close after KEEP_ALIVE_S
        config.accesslog = None
        config.errorlog = logging.getLogger("ambient.rpc")  # an app error is logged, the node goes on
        config.websocket_max_message_size = MAX_RPC_BODY_BYTES
        config.graceful_timeout = 1.0
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._follow)
            nursery.start_soon(self._write_history)
            await worker_serve(wrap_app(cast(Any, self.guard), config.wsgi_max_body_size, "asgi"), config,
                               sockets=Sockets([], self.sockets, []))

    def _write_rpc_file(self) -> None:
        """``DATA_DIR/rpc.json``: where this node serves its RPC, for ``ambient-p2p status``
        (it reads the RPC when the file names one that answers, else the control socket)."""
        port = self.sockets[0].getsockname()[1] if self.sockets else self.cfg.port
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.cfg.bind, self.cfg.bind)  # unspecified: loopback reaches it
        host = f"[{host}]" if ":" in host else host
        doc = {"url": f"http://{host}:{port}", "ws": f"ws://{host}:{port + 1}", "pid": os.getpid()}
        path = self.v.data_dir / RPC_FILE
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc))
            tmp.replace(path)
        except OSError as exc:  # the doors serve anyway; status falls back to the control socket
            print(f"warning: cannot write {path}: {exc.strerror}", file=sys.stderr, flush=True)

    # -- the index follower ---------------------------------------------------------------------
    async def load_history(self) -> None:
        """Load the newest stored blocks (ledger/txstatus.py) into the index, in a worker
        thread: a restarted node answers for transactions it saw before it stopped. A
        record that fails its strict decode is skipped with a warning (that block is not
        served; the chain itself never reads these records)."""
        from ...ledger.txstatus import TxStatusError, block_slots, read_block

        def job() -> tuple[list[tuple[BlockRecord, list[tuple[bytes, ...]]]], list[str]]:
            out: list[tuple[BlockRecord, list[tuple[bytes, ...]]]] = []
            bad: list[str] = []
            for slot in block_slots(self.v.bs)[-MAX_INDEXED_BLOCKS:]:
                try:
                    b = read_block(self.v.bs, slot)
                    if b is not None:
                        rec = from_stored(b)
                        out.append((rec, account_keys(rec)))  # the parses, off the loop too
                except (TxStatusError, BlockError) as exc:  # BlockError: stored bytes that do not parse
                    bad.append(str(exc))
            return out, bad

        recs, bad = await trio.to_thread.run_sync(job)
        for msg in bad[:5]:
            print(f"warning: RPC history: {msg}; that block is not served", file=sys.stderr, flush=True)
        self.history["bad_records"] += len(bad)
        self.history["loaded"] += sum(1 for r, keys in recs if self.index.load(r, keys))

    async def _write_history(self) -> None:
        """Write indexed blocks to the blockstore, a batch (with a WAL fsync) per wake-up, in
        a worker thread off the node's loop. A failed write (disk full) is counted and
        retried at the next wake-up; the index in memory serves meanwhile."""
        from ...ledger.blockstore import BlockstoreError
        from ...ledger.txstatus import put_blocks

        while True:
            await self._write_wake.wait()
            self._write_wake = trio.Event()
            batch, self.unwritten = self.unwritten, []
            if not batch:
                continue
            try:
                await trio.to_thread.run_sync(self.v.timings.timed("rpc_history_write", put_blocks), self.v.bs,
                                              [to_stored(r) for r in batch])
                self.history["written"] += len(batch)
            except BlockstoreError as exc:
                self.history["write_errors"] += 1
                if self.history["write_errors"] == 1:
                    print(f"warning: RPC history not written: {exc}", file=sys.stderr, flush=True)
                self.unwritten = batch + self.unwritten
                await trio.sleep(INDEX_POLL_S)
                self._write_wake.set()

    async def _follow(self) -> None:
        v = self.v
        await self.load_history()
        while True:
            with trio.move_on_after(INDEX_POLL_S):
                await v.frozen_event.wait()
            if not v.loaded:
                continue
            self.index_new()

    def index_new(self) -> None:
        v = self.v
        for slot in sorted(v.banks):
            if slot in self.index.blocks:
                continue
            res = v.banks[slot]
            bank = res.bank
            if bank.bank_hash is None or (res.entries == 0 and slot != 0):
                # not frozen yet, or a bank restored from a node snapshot: it carries no
                # tx_log, and what the stored history says about its slot is already loaded
                continue
            parent = v.banks.get(bank.parent_slot)
            if parent is not None:
                pbh = parent.bank.last_blockhash
            else:
                pb = self.index.banks.get(bank.parent_slot)
                rec = v.bs.bank_hash(bank.parent_slot) if pb is None else None
                pbh = pb.last_blockhash if pb is not None else (rec.last_blockhash if rec else bytes(32))
            self.unwritten.append(self.index.add(bank, pbh, math.floor(v.slot_start_ms(slot) / 1000)))
            if len(self.unwritten) > MAX_INDEXED_BLOCKS:  # writes failing for long: memory stays bounded
                del self.unwritten[0]
                self.history["dropped"] += 1
            self._write_wake.set()

    # -- helpers for the methods ------------------------------------------------------------------
    async def _submit(self, raw: bytes) -> None:
        if self.tpu_submit is not None:  # node/tpu.py: verified once, sent to the leaders (spec/tpu.md)
            await self.tpu_submit([raw])
            return
        self.v.add_tx(raw)
        if self.v.port is not None:
            await self.v.port.publish("txs", raw)

    def _cluster(self) -> list[dict[str, Any]]:
        me = encode_address(self.v.kp.pubkey)
        port = self.sockets[0].getsockname()[1] if self.sockets else self.cfg.port
        # gossip/tpu are socket addresses in Solana's schema; ours is libp2p (status ``addrs``)
        out = [{"pubkey": me, "gossip": None, "tpu": None, "tpuQuic": None,
                "rpc": f"{self.cfg.bind}:{port}", "pubsub": f"{self.cfg.bind}:{port + 1}",
                "version": "2.2.0", "featureSet": 0, "shredVersion": 0}]
        for key in self.v.cons.stakes:
            addr = encode_address(key)
            if addr != me:
                out.append({"pubkey": addr, "gossip": None, "tpu": None, "tpuQuic": None, "rpc": None,
                            "pubsub": None, "version": None, "featureSet": None, "shredVersion": 0})
        return out
