"""Solana PubSub over WebSocket (spec/rpc.md "PubSub"; agave ``rpc/src/rpc_pubsub.rs``):
``slotSubscribe``, ``signatureSubscribe`` (one-shot; fires at once when the transaction is
already at the asked commitment), ``accountSubscribe``, ``logsSubscribe`` (``all``,
``allWithVotes``, ``{"mentions": [key]}``), each with its ``*Unsubscribe``.
Served on both RPC ports (clients open it on ``--rpc-port`` + 1, as Solana's). Each
connection has a reader task and a notifier woken by every frozen slot; it holds at most
:data:`MAX_SUBSCRIPTIONS` subscriptions."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import base58
import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...core.bank import VOTE_PROGRAM_ID, parse_transaction
from .solana import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
    _account_value,
    _cfg,
    _encoding,
    _pubkey,
    _signature,
    tx_error,
)

if TYPE_CHECKING:  # pragma: no cover
    from .server import RpcExtension

MAX_SUBSCRIPTIONS = 256
NOTIFY_POLL_S = 0.5


class Subs:
    def __init__(self, ext: RpcExtension) -> None:
        self.ext = ext
        self.next_id = 0
        self.slot: set[int] = set()
        self.sigs: dict[int, tuple[bytes, str]] = {}
        self.accounts: dict[int, tuple[bytes, str, str, Any]] = {}  # id -> key, commitment, encoding, last value
        #: id -> (mentioned key or None for all, with votes, commitment, highest slot reported)
        self.logs: dict[int, tuple[bytes | None, bool, str, int]] = {}
        self.last_slot = -1

    def count(self) -> int:
        return len(self.slot) + len(self.sigs) + len(self.accounts) + len(self.logs)

    def new_id(self) -> int:
        if self.count() >= MAX_SUBSCRIPTIONS:
            raise RpcError(INVALID_REQUEST, f"too many subscriptions on this connection (max {MAX_SUBSCRIPTIONS})")
        self.next_id += 1
        return self.next_id

    def subscribe(self, method: str, params: list[Any]) -> Any:
        rpc = self.ext.rpc
        if method == "slotSubscribe":
            i = self.new_id()
            self.slot.add(i)
            return i
        if method == "signatureSubscribe":
            if not params:
                raise RpcError(INVALID_PARAMS, "Invalid params: missing field `signature`")
            sig = _signature(params[0])
            commitment = rpc.commitment_of(_cfg(params, 1))
            i = self.new_id()
            self.sigs[i] = (sig, commitment)
            return i
        if method == "accountSubscribe":
            if not params:
                raise RpcError(INVALID_PARAMS, "Invalid params: missing field `pubkey`")
            key = _pubkey(params[0])
            cfg = _cfg(params, 1)
            commitment = rpc.commitment_of(cfg)
            enc = _encoding(cfg, "base58", ("base58", "base64", "jsonParsed", "binary"))
            i = self.new_id()
            bank = rpc.bank_at(rpc.slot_of(commitment))
            last = _account_value(rpc, bank, key, enc) if bank is not None else None
            self.accounts[i] = (key, commitment, "base58" if enc == "binary" else enc, last)
            return i
        if method == "logsSubscribe":
            f = params[0] if params else None
            if f in ("all", "allWithVotes"):
                mention, votes = None, f == "allWithVotes"
            elif isinstance(f, dict) and isinstance(f.get("mentions"), list) and len(f["mentions"]) == 1:
                mention, votes = _pubkey(f["mentions"][0]), True
            else:
                raise RpcError(INVALID_PARAMS, "Invalid params: expected \"all\", \"allWithVotes\" or "
                               "{\"mentions\": [one pubkey]}")
            commitment = rpc.commitment_of(_cfg(params, 1))
            i = self.new_id()
            self.logs[i] = (mention, votes, commitment, rpc.slot_of(commitment))
            return i
        if method not in ("slotUnsubscribe", "signatureUnsubscribe", "accountUnsubscribe", "logsUnsubscribe"):
            raise RpcError(METHOD_NOT_FOUND, "Method not found")
        if not params or not isinstance(params[0], int) or isinstance(params[0], bool):
            raise RpcError(INVALID_PARAMS, "Invalid params: missing subscription id")
        sub = params[0]
        if method == "slotUnsubscribe" and sub in self.slot:
            self.slot.discard(sub)
        elif method == "signatureUnsubscribe" and sub in self.sigs:
            del self.sigs[sub]
        elif method == "accountUnsubscribe" and sub in self.accounts:
            del self.accounts[sub]
        elif method == "logsUnsubscribe" and sub in self.logs:
            del self.logs[sub]
        else:
            raise RpcError(INVALID_PARAMS, "Invalid subscription id.")
        return True

    def notifications(self) -> list[dict[str, Any]]:
        rpc, v = self.ext.rpc, self.ext.v
        out: list[dict[str, Any]] = []
        if not v.loaded:
            return out
        best = v.cons.processed_slot()
        if best != self.last_slot:
            self.last_slot = best
            res = v.banks.get(best)
            parent = res.bank.parent_slot if res is not None else 0
            for i in sorted(self.slot):
                out.append(_note("slotNotification", i, {"parent": parent, "root": v.cons.root, "slot": best}))
        for i, (sig, commitment) in list(self.sigs.items()):
            loc = rpc.find_tx(sig, commitment)
            if loc is not None:
                del self.sigs[i]
                out.append(_note("signatureNotification", i, {
                    "context": {"slot": loc.block.slot}, "value": {"err": tx_error(loc.record.result.error)}}))
        for i, (key, commitment, enc, last) in list(self.accounts.items()):
            bank = rpc.bank_at(rpc.slot_of(commitment))
            if bank is None:
                continue
            val = _account_value(rpc, bank, key, enc)
            if val != last:
                self.accounts[i] = (key, commitment, enc, val)
                out.append(_note("accountNotification", i, {"context": {"slot": bank.slot}, "value": val}))
        for i, (mention, votes, commitment, done) in list(self.logs.items()):
            top = rpc.slot_of(commitment)
            for slot in sorted(s for s in rpc.index.blocks if done < s <= top and rpc.on_best_fork(s)):
                for t in rpc.index.blocks[slot].txs:
                    keys = parse_transaction(t.raw, verify_signatures=False).account_keys
                    if (mention is not None and mention not in keys) or (not votes and VOTE_PROGRAM_ID in keys):
                        continue
                    logs = [] if t.result.error is None else [f"Program log: {t.result.error}"]
                    out.append(_note("logsNotification", i, {"context": {"slot": slot}, "value": {
                        "signature": base58.b58encode(t.result.signature).decode(),
                        "err": tx_error(t.result.error), "logs": logs}}))
            self.logs[i] = (mention, votes, commitment, max(done, top))
        return out


def _note(method: str, sub: int, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": {"result": result, "subscription": sub}}


def endpoint(ext: RpcExtension) -> Callable[[WebSocket], Awaitable[None]]:
    async def handle(ws: WebSocket) -> None:
        await ws.accept()
        subs = Subs(ext)
        wake = trio.Event()

        async def reader(cancel: trio.CancelScope) -> None:
            nonlocal wake
            try:
                while True:
                    text = await ws.receive_text()
                    reply = _handle_text(subs, text)
                    await ws.send_text(json.dumps(reply))
                    wake.set()  # a new subscription may fire at once
                    wake = trio.Event()
            except (WebSocketDisconnect, RuntimeError):
                cancel.cancel()

        async def notifier() -> None:
            while True:
                for n in subs.notifications():
                    await ws.send_text(json.dumps(n))
                with trio.move_on_after(NOTIFY_POLL_S):
                    ev = ext.v.frozen_event
                    w = wake
                    async with trio.open_nursery() as n2:
                        async def one(e: trio.Event) -> None:
                            await e.wait()
                            n2.cancel_scope.cancel()
                        n2.start_soon(one, ev)
                        n2.start_soon(one, w)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, nursery.cancel_scope)
            nursery.start_soon(notifier)

    return handle


def _handle_text(subs: Subs, text: str) -> dict[str, Any]:
    try:
        req = json.loads(text)
    except ValueError:
        return {"jsonrpc": "2.0", "error": {"code": PARSE_ERROR, "message": "Parse error"}, "id": None}
    rid = req.get("id") if isinstance(req, dict) else None
    if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
        return {"jsonrpc": "2.0", "error": {"code": INVALID_REQUEST, "message": "Invalid request"}, "id": rid}
    params = req.get("params") or []
    if not isinstance(params, list):
        return {"jsonrpc": "2.0", "error": {"code": INVALID_PARAMS, "message": "Invalid params"}, "id": rid}
    try:
        return {"jsonrpc": "2.0", "result": subs.subscribe(req["method"], params), "id": rid}
    except RpcError as exc:
        return {"jsonrpc": "2.0", "error": exc.json(), "id": rid}
