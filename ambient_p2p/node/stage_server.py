"""Stage server: serves a range of the model's layers to route drivers over the stage
session protocol (normative text: spec/shard.md "Session protocol").

A driver (the miner that won a query, node/route.py) opens a session (query id, model id,
layer range, prompt length, KV bound, sampling parameters), sends forward frames in
position order and closes, getting back the stage's signed commitment over its boundary
fingerprints (core/shard.py). Request/response protocols of net/reqresp.py carry it:
``/ambient/stage-open/1``, ``/ambient/stage-forward/1`` (one frame per stream),
``/ambient/stage-stream/1`` (a session stream: every frame of a session on one stream, what
a route driver uses), ``/ambient/stage-close/1``.

Rules enforced here (each refusal is an ErrorResponse with a code, nothing changes):

* one session per (driver peer, query): a second open is ``session-exists``;
* a session's KV cache is reserved at open (``max_positions x kv_bytes_per_token``); the
  server's total reservation is bounded by ``kv_budget_bytes``: an open that does not fit
  evicts idle sessions least recently used first, then is refused ``busy``; a session idle
  for :data:`STAGE_SESSION_IDLE_S` is dropped at the next open;
* frames come in order: ``pos`` equals the positions already cached (``bad-position``);
  prompt frames never cross the prompt's end; after the prompt one row per frame;
* a forward on a session whose previous forward is still running is ``busy``;
* wrong model or range at open is ``wrong-stage``; frame shape errors ``bad-request``.

The model runs in a worker thread (``trio.to_thread``, one step at a time): torch releases
the GIL, so the host keeps answering streams. A stand-alone stage process runs one-row
(decode) frames on its event loop instead while the worker is free (``inline_decode``),
saving the thread hand-off on the route's critical path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from ..core import pol
from ..core import shard as sh
from ..core.codec import decode, encode, message_type_of
from ..core.crypto import Keypair
from ..net.messages import (
    MAX_CHAIN_HIDDEN_BYTES,
    MAX_STAGE_FRAME_BYTES,
    ErrorResponse,
    StageChainFrame,
    StageCloseRequest,
    StageCloseResponse,
    StageForwardRequest,
    StageForwardResponse,
    StageLeavesRequest,
    StageLeavesResponse,
    StageOpenRequest,
    StageOpenResponse,
    StageResultsRequest,
)
from ..net.node import ExtensionBase
from ..net.reqresp import (
    STAGE_CHAIN_PROTO,
    STAGE_CLOSE,
    STAGE_FORWARD,
    STAGE_LEAVES,
    STAGE_OPEN,
    STAGE_RESULTS_PROTO,
    STAGE_STREAM,
    FrameReader,
    Handler,
    ReqRespError,
    ReqRespServer,
    encode_frame,
)

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.abc import IHost, INetStream
    from libp2p.peer.id import ID

    from ..model.stages import StageModel

#: Default bound on the KV caches all sessions of one server may reserve.
DEFAULT_KV_BUDGET_BYTES = 1 << 30
#: Most sessions one server holds at once (each costs a Python object and a cache).
MAX_STAGE_SESSIONS = 256
#: A session no forward touched for this long is dropped at the next open.
STAGE_SESSION_IDLE_S = 120.0
#: A chained stage's bound on handing a frame on (dial + write to the next stage, or the
#: write of a result to the driver); past it the session fails with ``next-failed``.
STAGE_CHAIN_SEND_TIMEOUT_S = 10.0
#: How long a chained stage waits for the driver's results stream before it drops a result
#: (the driver attaches it right after the open, on another stream: no ordering between them).
STAGE_RESULTS_ATTACH_TIMEOUT_S = 10.0


@dataclass
class StageSession:
    """One driver's session: its KV cache, the frames' digests since the last leaf, and the
    leaves so far (one per output position)."""

    req: StageOpenRequest
    cache: Any
    reserved_bytes: int
    last_used_s: float
    pos: int = 0
    busy: bool = False
    in_parts: list[bytes] = field(default_factory=list)
    out_parts: list[bytes] = field(default_factory=list)
    leaves: list[sh.StageFingerprint] = field(default_factory=list)
    # chained sessions (spec/shard.md "Chained sessions")
    prev_peer: str = ""  # the one peer whose stage-chain frames feed this session
    out: INetStream | None = None  # to the next stage (opened at the first frame)
    results: INetStream | None = None  # to the driver (attached by its StageResultsRequest)
    attached: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)  # set when the session ends


@dataclass
class StageStats:
    opened: int = 0
    closed: int = 0
    evicted: int = 0
    expired: int = 0
    frames: int = 0
    rows: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    compute_s: float = 0.0


class StageServer:
    """Sessions of one stage (see the module docstring). ``clock`` returns seconds
    (monotonic); tests inject their own."""

    def __init__(self, stage: StageModel, kp: Keypair, *, kv_budget_bytes: int = DEFAULT_KV_BUDGET_BYTES,
                 max_sessions: int = MAX_STAGE_SESSIONS, idle_s: float = STAGE_SESSION_IDLE_S,
                 clock: Callable[[], float] = time.monotonic, inline_decode: bool = False) -> None:
        import torch

        self.stage = stage
        self.kp = kp
        self.kv_budget_bytes = kv_budget_bytes
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self.clock = clock
        self.sessions: dict[tuple[str, bytes], StageSession] = {}
        self.stats = StageStats()
        self.tier = pol.Tier.FP32 if stage.dtype == torch.float32 else pol.Tier.BF16
        self.worker = trio.CapacityLimiter(1)
        #: run one-row frames on the event loop itself when the worker is free (see _run_step)
        self.inline_decode = inline_decode
        self.host: IHost | None = None  # set by attach(): a chained stage dials the next one
        #: chained sessions by (feeding peer, query) -> session key (driver peer, query)
        self.chain_in: dict[tuple[str, bytes], tuple[str, bytes]] = {}

    # -- bookkeeping ----------------------------------------------------------------------
    def reserved_bytes(self) -> int:
        return sum(s.reserved_bytes for s in self.sessions.values())

    def _refuse(self, code: str, detail: str) -> ReqRespError:
        self.stats.refused[code] = self.stats.refused.get(code, 0) + 1
        return ReqRespError(code, detail)

    def _drop(self, key: tuple[str, bytes]) -> None:
        """End a session (close, abandon, eviction, expiry, failure): its chain index entry
        goes, and its results stream is released (``done``)."""
        s = self.sessions.pop(key, None)
        if s is None:
            return
        if s.req.chain:
            self.chain_in.pop((s.prev_peer, s.req.query), None)
        s.done.set()

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self.sessions.items() if not s.busy and now - s.last_used_s > self.idle_s]:
            self._drop(key)
            self.stats.expired += 1

    def _make_room(self, need: int) -> bool:
        """Evict idle sessions (least recently used first) until ``need`` more bytes and one
        more session fit; False if they cannot."""
        idle = sorted((s.last_used_s, k) for k, s in self.sessions.items() if not s.busy)
        while self.reserved_bytes() + need > self.kv_budget_bytes or len(self.sessions) >= self.max_sessions:
            if not idle:
                return False
            _t, key = idle.pop(0)
            self._drop(key)
            self.stats.evicted += 1
        return True

    def status(self) -> dict[str, Any]:
        st = self.stats
        return {"layers": str(self.stage.rng), "sessions": len(self.sessions), "reserved_bytes": self.reserved_bytes(),
                "kv_budget_bytes": self.kv_budget_bytes, "opened": st.opened, "closed": st.closed,
                "evicted": st.evicted, "expired": st.expired, "frames": st.frames, "rows": st.rows,
                "refused": dict(st.refused), "compute_s": round(st.compute_s, 3)}

    # -- handlers -------------------------------------------------------------------------
    def handlers(self) -> dict[str, Handler]:
        return {STAGE_OPEN.proto_id: self.open, STAGE_FORWARD.proto_id: self.forward,
                STAGE_STREAM.proto_id: self.forward, STAGE_CLOSE.proto_id: self.close,
                STAGE_LEAVES.proto_id: self.leaves}

    def stream_handlers(self) -> dict[str, Callable[[INetStream], Awaitable[None]]]:
        """The one-way streams of chained sessions (not request/response)."""
        return {STAGE_CHAIN_PROTO: self.serve_chain, STAGE_RESULTS_PROTO: self.serve_results}

    def attach(self, host: IHost) -> ReqRespServer:
        """Serve every stage protocol on ``host`` (request/response and chain streams)."""
        from libp2p.custom_types import TProtocol

        self.host = host
        srv = ReqRespServer(host, self.handlers())
        for proto, h in self.stream_handlers().items():
            host.set_stream_handler(TProtocol(proto), h)
        return srv

    def open(self, peer: ID, req: StageOpenRequest) -> StageOpenResponse:
        st = self.stage
        if req.model_id != st.model_id or (req.start, req.end) != (st.rng.start, st.rng.end):
            raise self._refuse("wrong-stage", f"this server holds layers {st.rng} of {st.model_id.hex()[:16]}..")
        if not 1 <= req.prompt_len < req.max_positions or req.max_positions - req.prompt_len > pol.MAX_OUTPUT_TOKENS:
            raise self._refuse("bad-request", "need 1 <= prompt_len < max_positions <= prompt_len + MAX_OUTPUT_TOKENS")
        if req.temp_milli > pol.MAX_TEMPERATURE_MILLI:
            raise self._refuse("bad-request", f"temp_milli > {pol.MAX_TEMPERATURE_MILLI}")
        key = (peer.to_base58(), req.query)
        if key in self.sessions:
            raise self._refuse("session-exists", "one session per query per peer: close it first")
        if req.chain:
            if bool(req.next_peer) == st.rng.last:
                raise self._refuse("bad-request", "a chained stage has a next stage unless it holds the last layers")
            if st.rng.first and req.prev_peer:
                raise self._refuse("bad-request", "the first stage is fed by the driver")
            prev = req.prev_peer or key[0]
            if (prev, req.query) in self.chain_in:
                raise self._refuse("session-exists", "that peer already feeds a session for this query")
        now = self.clock()
        self._expire(now)
        need = req.max_positions * st.kv_bytes_per_token()
        if need > self.kv_budget_bytes:
            raise self._refuse("too-large", f"{need} KV bytes > this server's budget {self.kv_budget_bytes}")
        if not self._make_room(need):
            raise self._refuse("busy", "KV budget held by sessions in use; try another server")
        self.sessions[key] = StageSession(req, st.new_cache(), need, now)
        if req.chain:
            self.sessions[key].prev_peer = prev = req.prev_peer or key[0]
            self.chain_in[(prev, req.query)] = key
        self.stats.opened += 1
        return StageOpenResponse(nonce=req.nonce, hidden_size=st.hidden_size, total=st.rng.total,
                                 stage=self.kp.pubkey, tier=int(self.tier), vocab=st.vocab_size)

    def _check_frame(self, s: StageSession, req: StageForwardRequest) -> None:
        st = self.stage
        if req.pos != s.pos:
            raise self._refuse("bad-position", f"frame at {req.pos}, the session holds {s.pos} positions")
        plen = s.req.prompt_len
        if req.pos < plen and req.pos + req.rows > plen:
            raise self._refuse("bad-request", "a prompt frame crosses the prompt's end")
        if req.pos >= plen and req.rows != 1:
            raise self._refuse("bad-request", "after the prompt, one row per frame")
        if req.pos + req.rows > s.req.max_positions:
            raise self._refuse("too-large", f"session was opened for {s.req.max_positions} positions")
        if st.rng.first:
            if not req.tokens or max(req.tokens) >= st.vocab_size:
                raise self._refuse("bad-request", "the first stage takes token ids below the vocabulary size")
        elif len(req.hidden) != 4 * req.rows * st.hidden_size:
            raise self._refuse("bad-request", f"need {req.rows} x {st.hidden_size} float32 values")

    async def forward(self, peer: ID, req: StageForwardRequest) -> StageForwardResponse:
        s = self.sessions.get((peer.to_base58(), req.query))
        if s is None:
            raise self._refuse("no-session", "no open session for this query (never opened, closed or evicted)")
        if s.busy:
            raise self._refuse("busy", "the previous frame of this session is still running")
        self._check_frame(s, req)
        s.busy = True
        try:
            t0 = time.perf_counter()
            resp = await self._run_step(s, req)
            self.stats.compute_s += time.perf_counter() - t0
        except ValueError as exc:  # e.g. non-finite values: the session is unusable now
            self._drop((peer.to_base58(), req.query))
            raise self._refuse("bad-request", str(exc)) from None
        finally:
            s.busy = False
        s.last_used_s = self.clock()
        self.stats.frames += 1
        self.stats.rows += req.rows
        return resp

    async def _run_step(self, s: StageSession, req: StageForwardRequest) -> StageForwardResponse:
        """Run one frame, one at a time (the ``worker`` limiter). In trio's worker thread by
        default, so the event loop keeps serving while the layers run. With
        ``inline_decode`` a one-row frame runs on the event loop itself when no other frame
        holds the worker: a decode step is a few tens of ms, and the thread hand-off costs
        two wake-ups and context switches per frame on the route's critical path (the
        stand-alone stage process, which serves nothing else, turns it on; a stage inside a
        validator node must not stall the node's loop). Prompt frames always go to the
        worker thread."""
        if self.inline_decode and req.rows == 1:
            try:
                self.worker.acquire_nowait()
            except trio.WouldBlock:
                pass  # a prompt frame is running: queue behind it in the worker
            else:
                try:
                    return self._step(s, req)
                finally:
                    self.worker.release()
        return await trio.to_thread.run_sync(self._step, s, req, limiter=self.worker)

    def _step(self, s: StageSession, req: StageForwardRequest) -> StageForwardResponse:
        """Run the frame (worker thread, or the loop for an inline decode frame), record
        the leaf when the frame ends one."""
        import torch

        st = self.stage
        if st.rng.first:
            inp = torch.tensor([list(req.tokens)], dtype=torch.long)
            s.in_parts.append(sh.tokens_payload(req.tokens))
        else:
            arr = np.frombuffer(req.hidden, dtype="<f4").reshape(1, req.rows, st.hidden_size)
            inp = torch.from_numpy(arr.copy())
            s.in_parts.append(req.hidden)
        out = st.step(inp, req.pos, s.cache)
        s.pos = req.pos + req.rows
        row = out.hidden[0, -1].to(torch.float32).cpu().numpy()
        ends_leaf = s.pos >= s.req.prompt_len
        fp: pol.LogitFingerprint | None = None
        logits = b""
        if st.rng.last:
            hidden = row.astype("<f4").tobytes()
            if ends_leaf:
                assert out.logits is not None
                lf = out.logits[0, -1].to(torch.float32)
                x = s.pos - s.req.prompt_len
                fp = last_stage_fingerprint(lf, x, s.req.temp_milli, s.req.sample_seed)
                s.out_parts.append(encode(fp))
                if s.req.want_logits:
                    logits = lf.cpu().numpy().astype("<f4").tobytes()
                    if len(logits) > MAX_STAGE_FRAME_BYTES:
                        raise ValueError("logits exceed the frame limit")
        else:
            hidden = out.hidden[0].to(torch.float32).cpu().numpy().astype("<f4").tobytes()
            s.out_parts.append(hidden)
        if ends_leaf:
            in_d = (sh.tokens_frame_digest(_tokens_of(s.in_parts)) if st.rng.first else sh.frame_digest(*s.in_parts))
            s.leaves.append(sh.StageFingerprint(pos=len(s.leaves), in_digest=in_d,
                                                out_digest=sh.frame_digest(*s.out_parts), q=sh.quantize_row(row)))
            s.in_parts, s.out_parts = [], []
        return StageForwardResponse(nonce=req.nonce, pos=req.pos, rows=req.rows, hidden=hidden, fp=fp, logits=logits)

    def close(self, peer: ID, req: StageCloseRequest) -> StageCloseResponse:
        key = (peer.to_base58(), req.query)
        s = self.sessions.get(key)
        if s is None:
            raise self._refuse("no-session", "no open session for this query")
        if s.busy and not (s.req.chain and req.num_tokens == 0):  # a chained session may be abandoned mid-frame
            raise self._refuse("busy", "a frame of this session is still running")
        if req.num_tokens > len(s.leaves):
            raise self._refuse("bad-position", f"{req.num_tokens} tokens asked, {len(s.leaves)} frames ran")
        self._drop(key)
        self.stats.closed += 1
        if req.num_tokens == 0:
            return StageCloseResponse(nonce=req.nonce, commitment=None)
        st = self.stage
        cmt = sh.commit_stage(self.kp, query=s.req.query, model_id=st.model_id, start=st.rng.start, end=st.rng.end,
                              total=st.rng.total, tier=self.tier, prompt_hash=s.req.prompt_hash,
                              fps=s.leaves[: req.num_tokens])
        return StageCloseResponse(nonce=req.nonce, commitment=cmt)

    # -- chained sessions (spec/shard.md "Chained sessions") ----------------------------
    def leaves(self, peer: ID, req: StageLeavesRequest) -> StageLeavesResponse:
        """Leaves ``first ..`` of an open session, at most MAX_STAGE_FRAME_BYTES of them."""
        s = self.sessions.get((peer.to_base58(), req.query))
        if s is None:
            raise self._refuse("no-session", "no open session for this query")
        if s.busy:
            raise self._refuse("busy", "a frame of this session is still running")
        if req.first > len(s.leaves):
            raise self._refuse("bad-position", f"leaf {req.first} asked, {len(s.leaves)} exist")
        out: list[sh.StageFingerprint] = []
        size = 0
        for lf in s.leaves[req.first :]:
            n = len(encode(lf))
            if out and size + n > MAX_STAGE_FRAME_BYTES:
                break
            out.append(lf)
            size += n
        return StageLeavesResponse(nonce=req.nonce, first=req.first, leaves=tuple(out))

    async def serve_results(self, stream: INetStream) -> None:
        """``/ambient/stage-results/1``: the driver's one ``StageResultsRequest`` attaches
        this stream to its chained session; the stream then carries the session's results
        (last stage) and its error, and is closed when the session ends."""
        peer = stream.muxed_conn.peer_id.to_base58()
        try:
            with trio.move_on_after(STAGE_RESULTS_ATTACH_TIMEOUT_S):
                data = await FrameReader(stream).read(message_type_of(StageResultsRequest).max_size)
                req = decode(data, expected=StageResultsRequest)
                s = self.sessions.get((peer, req.query))
                if s is None or not s.req.chain or s.results is not None:
                    why = ("no session of this driver for the query" if s is None else
                           "not a chained session" if not s.req.chain else "a results stream is attached already")
                    self._refuse("no-session" if s is None else "bad-request", why)
                    await stream.write(encode_frame(encode(ErrorResponse(
                        nonce=req.nonce, code="no-session" if s is None else "bad-request", detail=why))))
                    return
                s.results = stream
                s.attached.set()
            if s.results is stream:
                await s.done.wait()
        except Exception:  # noqa: BLE001 - a broken stream must never kill the host
            self.stats.refused["results-stream-failed"] = self.stats.refused.get("results-stream-failed", 0) + 1
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                await stream.close()

    async def serve_chain(self, stream: INetStream) -> None:
        """``/ambient/stage-chain/1``: frames of one chained session from its feeding peer
        (the driver, or the previous stage), run in order, each handed on; no answer on this
        stream. Ends (and closes the session's stream to the next stage) when the feeder
        closes it, after ``idle_s`` without a frame, or when the session fails."""
        peer = stream.muxed_conn.peer_id.to_base58()
        reader = FrameReader(stream)
        limit = message_type_of(StageChainFrame).max_size
        s: StageSession | None = None
        try:
            while True:
                with trio.move_on_after(self.idle_s) as idle:
                    more = await reader.fill()
                if idle.cancelled_caught or not more:
                    return
                with trio.move_on_after(STAGE_CHAIN_SEND_TIMEOUT_S) as one:
                    fr = decode(await reader.read(limit), expected=StageChainFrame)
                if one.cancelled_caught:
                    return
                s = await self._chain_frame(peer, fr)
                if s is None:
                    return
        except Exception:  # noqa: BLE001 - malformed frame (DecodeError, FrameError), reset: end this stream
            self.stats.refused["chain-stream-failed"] = self.stats.refused.get("chain-stream-failed", 0) + 1
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                if s is not None and s.out is not None:
                    out, s.out = s.out, None
                    with contextlib.suppress(Exception):
                        await out.close()
                with contextlib.suppress(Exception):
                    await stream.close()

    async def _chain_frame(self, peer: str, fr: StageChainFrame) -> StageSession | None:
        """Run one chained frame and hand its output on; None when the session is gone (it
        failed here: the driver was told on its results stream)."""
        key = self.chain_in.get((peer, fr.query))
        s = self.sessions.get(key) if key is not None else None
        if key is None or s is None:
            self._refuse("no-session", "chained frame for no session this peer feeds")
            return None
        req = StageForwardRequest(nonce=fr.nonce, query=fr.query, pos=fr.pos, rows=fr.rows, tokens=fr.tokens,
                                  hidden=fr.hidden)
        try:
            if s.busy:
                raise self._refuse("busy", "the previous frame of this session is still running")
            self._check_frame(s, req)
            if fr.rows * 4 * self.stage.hidden_size > MAX_CHAIN_HIDDEN_BYTES:
                raise self._refuse("too-large", f"a chained frame's output must fit {MAX_CHAIN_HIDDEN_BYTES} bytes")
            self._check_link(s, req, fr.leaf)
            s.busy = True
            try:
                t0 = time.perf_counter()
                resp = await self._run_step(s, req)
                self.stats.compute_s += time.perf_counter() - t0
            except ValueError as exc:
                raise self._refuse("bad-request", str(exc)) from None
            finally:
                s.busy = False
            if self.sessions.get(key) is not s:  # abandoned while the frame ran
                return None
            s.last_used_s = self.clock()
            self.stats.frames += 1
            self.stats.rows += req.rows
            ends_leaf = s.pos >= s.req.prompt_len
            if s.req.next_peer:
                nxt = StageChainFrame(nonce=fr.nonce, query=fr.query, pos=fr.pos, rows=fr.rows, hidden=resp.hidden,
                                      leaf=s.leaves[-1] if ends_leaf else None)
                await self._send_next(s, nxt)
            else:
                await self._send_result(s, resp)
            return s
        except ReqRespError as exc:
            await self._fail(key, s, fr.nonce, exc.code, exc.detail)
            return None

    def _check_link(self, s: StageSession, req: StageForwardRequest, leaf: sh.StageFingerprint | None) -> None:
        """A frame from the previous stage must bring that stage's leaf exactly when it ends
        one, and the leaf must describe the bytes received: its ``out_digest`` is the digest
        of this leaf's input frames, its ``q`` the quantized last row (spec/shard.md "Chained
        sessions": a stage cannot commit to one boundary and send another)."""
        if s.req.prev_peer is None:  # fed by the driver: tokens (first stage) or a driver's frames
            if leaf is not None:
                raise self._refuse("broken-link", "the driver sends no leaf")
            return
        ends_leaf = req.pos + req.rows >= s.req.prompt_len
        if leaf is None:
            if ends_leaf:
                raise self._refuse("broken-link", "the previous stage sent no leaf with a frame that ends one")
            return
        h = self.stage.hidden_size
        if not ends_leaf or leaf.pos != len(s.leaves) or (
            leaf.out_digest != sh.frame_digest(*s.in_parts, req.hidden)
        ) or leaf.q != sh.quantize_row(np.frombuffer(req.hidden[-4 * h :], dtype="<f4")):
            raise self._refuse("broken-link", "the previous stage's leaf does not describe the bytes it sent")

    async def _send_next(self, s: StageSession, fr: StageChainFrame) -> None:
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID as PeerID

        from ..net.host import parse_peer_multiaddr

        data = encode_frame(encode(fr))
        with trio.move_on_after(STAGE_CHAIN_SEND_TIMEOUT_S):
            try:
                if s.out is None:
                    if self.host is None or not s.req.next_peer:
                        raise RuntimeError("no host to reach the next stage")
                    peer = PeerID.from_base58(s.req.next_peer)
                    for a in s.req.next_addrs or ():  # connect() returns at once when connected
                        with contextlib.suppress(Exception):  # a bad address: try the next
                            info = parse_peer_multiaddr(a)
                            if info.peer_id == peer:
                                await self.host.connect(info)
                                break
                    s.out = await self.host.new_stream(peer, [TProtocol(STAGE_CHAIN_PROTO)])
                await s.out.write(data)
                return
            except Exception as exc:  # noqa: BLE001 - dial, negotiation, reset
                raise self._refuse("next-failed", f"next stage {s.req.next_peer}: {type(exc).__name__}: {exc}") from None
        raise self._refuse("next-failed", f"next stage {s.req.next_peer}: no progress in {STAGE_CHAIN_SEND_TIMEOUT_S:g}s")

    async def _send_result(self, s: StageSession, resp: StageForwardResponse) -> None:
        with trio.move_on_after(STAGE_RESULTS_ATTACH_TIMEOUT_S):
            await s.attached.wait()
            assert s.results is not None
            try:
                await s.results.write(encode_frame(encode(resp)))
                return
            except Exception as exc:  # noqa: BLE001 - the driver went away
                raise self._refuse("driver-gone", f"{type(exc).__name__}: {exc}") from None
        raise self._refuse("driver-gone", "no results stream attached in time")

    async def _fail(self, key: tuple[str, bytes] | None, s: StageSession, nonce: int, code: str, detail: str) -> None:
        """The session fails here: tell the driver (best effort) and drop it."""
        if s.results is not None:
            with trio.move_on_after(1), contextlib.suppress(Exception):
                await s.results.write(encode_frame(encode(ErrorResponse(nonce=nonce, code=code, detail=detail[:200]))))
        if key is not None and self.sessions.get(key) is s:
            self._drop(key)


def _tokens_of(parts: list[bytes]) -> list[int]:
    body = b"".join(parts)
    return [int.from_bytes(body[i : i + 4], "big") for i in range(0, len(body), 4)]


def last_stage_fingerprint(logits: Any, position: int, temp_milli: int, seed: bytes) -> pol.LogitFingerprint:
    """The final-logits fingerprint and token exactly as ``model/runner.generate`` makes
    them (``runner.top_logprobs``: the same top-k and normaliser, then core/pol.py's rules)."""
    from ..model import runner

    ids, vals = runner.top_logprobs(logits, pol.TOP_K)
    cand = pol.candidates_from_top(ids, vals)
    tok = int(ids[0]) if temp_milli == 0 else pol.sample_token(cand, temp_milli, seed, position)
    return pol.make_fingerprint(position, tok, cand)


# -- on a node: ``join``/``run --serve-layers A:B`` ------------------------------------------------
#: How often a serving node re-announces its range and throughput on the ``stages`` topic.
STAGE_ANNOUNCE_INTERVAL_S = 10.0
#: Announcements older than this are dropped from the directory (a server that left).
STAGE_ANNOUNCE_TTL_S = 60.0
#: Most announcements one node keeps (bounded by origin).
MAX_STAGE_DIRECTORY = 1024
#: Decode steps timed at start-up for the announced throughput.
CALIBRATION_STEPS = 8


def measure_tokens_per_s(stage: StageModel) -> float:
    """Decode steps per second of ``stage`` after an 8-row prompt frame (worker thread)."""
    import torch

    cache = stage.new_cache()
    h = stage.hidden_size
    inp = torch.zeros((1, 8), dtype=torch.long) if stage.rng.first else torch.zeros((1, 8, h))
    stage.step(inp, 0, cache)
    t0 = time.perf_counter()
    for i in range(CALIBRATION_STEPS):
        one = torch.zeros((1, 1), dtype=torch.long) if stage.rng.first else torch.zeros((1, 1, h))
        stage.step(one, 8 + i, cache)
    return CALIBRATION_STEPS / max(1e-9, time.perf_counter() - t0)


class StageExtension(ExtensionBase):
    """A stage server on the networking node (net/node.py ``NodeExtension``): serves the
    stage protocols once the layers are loaded (``unavailable`` before), announces its
    range and measured throughput on the ``stages`` gossip topic every
    :data:`STAGE_ANNOUNCE_INTERVAL_S`, and keeps the directory of announced servers (what a
    route driver plans with; control command ``stages``)."""

    def __init__(self, kp: Keypair, model: str, start: int, end: int, *, threads: int = 1,
                 kv_budget_bytes: int = DEFAULT_KV_BUDGET_BYTES) -> None:
        self.kp = kp
        self.model = model
        self.start, self.end = start, end
        self.threads = threads
        self.kv_budget_bytes = kv_budget_bytes
        self.server: StageServer | None = None
        self.state = "loading"
        self.tokens_per_s = 0.0
        self.announced = 0
        self.directory: dict[bytes, tuple[Any, int]] = {}  # origin -> (StageAnnounce, received ms)

    def reqresp_handlers(self) -> dict[str, Any]:
        def route(name: str) -> Handler:
            async def handle(peer: ID, req: Any) -> Any:
                if self.server is None:
                    raise ReqRespError("unavailable", f"stage {self.start}:{self.end} is {self.state}")
                out = getattr(self.server, name)(peer, req)
                return await out if name == "forward" else out

            return handle

        return {STAGE_OPEN.proto_id: route("open"), STAGE_FORWARD.proto_id: route("forward"),
                STAGE_STREAM.proto_id: route("forward"), STAGE_CLOSE.proto_id: route("close"),
                STAGE_LEAVES.proto_id: route("leaves")}

    def on_delivery(self, d: Any) -> bool:
        if d.kind != "stages":
            return False
        from ..core.codec import decode
        from ..net.messages import StageAnnounce

        if d.envelope.origin in self.directory or len(self.directory) < MAX_STAGE_DIRECTORY:
            self.directory[d.envelope.origin] = (decode(d.envelope.payload, expected=StageAnnounce), d.received_ms)
        return True

    def known(self, now_ms: int) -> list[dict[str, Any]]:
        for k in [k for k, (_a, t) in self.directory.items() if now_ms - t > STAGE_ANNOUNCE_TTL_S * 1000]:
            del self.directory[k]
        return [{"origin": k.hex(), "layers": f"{a.start}:{a.end}", "total": a.total, "model_id": a.model_id.hex(),
                 "tokens_per_s": a.tokens_per_s_milli / 1000, "addrs": list(a.addrs)}
                for k, (a, _t) in sorted(self.directory.items())]

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {"state": self.state, "layers": f"{self.start}:{self.end}",
                              "tokens_per_s": round(self.tokens_per_s, 2), "announced": self.announced,
                              "known_stages": len(self.directory)}
        if self.server is not None:
            st |= self.server.status()
        return {"stage": st}

    def status_line(self) -> str:
        n = 0 if self.server is None else len(self.server.sessions)
        return f"stage={self.start}:{self.end} {self.state} sessions={n}"

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        if req.get("cmd") != "stages":
            return None
        return {"ok": True, "stages": self.known(int(time.time() * 1000))}

    def _load(self) -> tuple[StageModel, float]:
        import torch

        from ..model import stages

        torch.set_num_threads(self.threads)
        st = stages.load_stage(self.model, self.start, self.end)
        return st, measure_tokens_per_s(st)

    async def run(self, node: Any) -> None:
        from ..core.codec import encode as enc
        from ..net.host import full_addrs
        from ..net.messages import MAX_MULTIADDR_CHARS, StageAnnounce

        try:
            stage, tps = await trio.to_thread.run_sync(self._load)
        except (ValueError, OSError) as exc:  # a range outside the model, a missing model file
            self.state = f"failed: {exc}"
            return
        self.server = StageServer(stage, self.kp, kv_budget_bytes=self.kv_budget_bytes)
        if node.host is not None:  # chained sessions: the one-way streams and the dial to the next stage
            from libp2p.custom_types import TProtocol

            self.server.host = node.host
            for proto, h in self.server.stream_handlers().items():
                node.host.set_stream_handler(TProtocol(proto), h)
        self.tokens_per_s = tps
        self.state = "serving"
        while True:
            addrs = tuple(a for a in (full_addrs(node.host) if node.host is not None else []) if
                          len(a) <= MAX_MULTIADDR_CHARS)[:4]
            ann = StageAnnounce(model_id=stage.model_id, start=self.start, end=self.end, total=stage.rng.total,
                                tokens_per_s_milli=min(int(tps * 1000), 2**32 - 1), addrs=addrs)
            if node.gossip is not None:
                with contextlib.suppress(Exception):  # no peers yet: the next round tries again
                    await node.gossip.publish("stages", enc(ann))
                    self.announced += 1
            await trio.sleep(STAGE_ANNOUNCE_INTERVAL_S)


# -- a stand-alone stage host (tests, benchmarks, operators without a validator) ------------
async def serve_stage(stage: StageModel, kp: Keypair, listen: str, *, ready: Callable[[dict[str, Any]], None],
                      kv_budget_bytes: int = DEFAULT_KV_BUDGET_BYTES, inline_decode: bool = True) -> None:
    """Open a libp2p host on ``listen`` serving ``stage`` until cancelled; ``ready`` gets
    ``{"peer", "addrs", "layers"}`` once it listens. The host serves nothing else, so
    decode frames run on its event loop (``inline_decode``, see ``StageServer._run_step``)."""
    from ..net.host import HostConfig, full_addrs, open_host

    server = StageServer(stage, kp, kv_budget_bytes=kv_budget_bytes, inline_decode=inline_decode)
    async with open_host(kp, HostConfig(listen=(listen,))) as host:
        server.attach(host)
        ready({"peer": host.get_id().to_base58(), "addrs": full_addrs(host), "layers": str(stage.rng),
               "hidden_size": stage.hidden_size, "model_id": stage.model_id.hex()})
        await trio.sleep_forever()


def main(argv: list[str] | None = None) -> int:
    """``python -m ambient_p2p.node.stage_server --layers A:B [--model M] [--listen MA]
    [--key-seed S] [--threads N] [--perturb REL]``: serve one stage; prints one JSON line
    (peer id, addresses) when listening. ``--perturb`` multiplies every weight by
    ``1 + REL * N(0,1)`` (seeded): a cheating stage for the blame tests."""
    from ..model import stages

    ap = argparse.ArgumentParser(prog="ambient_p2p.node.stage_server", description=main.__doc__)
    ap.add_argument("--layers", required=True, help="layer range A:B to serve (half-open)")
    ap.add_argument("--model", default="default", help="default | random:SEED | path to a GGUF file")
    ap.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    ap.add_argument("--key-seed", type=int, default=0, help="deterministic identity seed")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--kv-budget-mib", type=int, default=DEFAULT_KV_BUDGET_BYTES >> 20)
    ap.add_argument("--perturb", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--decode-on", choices=("loop", "worker"), default="loop",
                    help="where one-row (decode) frames run: on the event loop when the worker is free (loop, "
                         "default: no thread hand-off per frame) or always in the worker thread")
    a = ap.parse_args(argv)
    try:
        start, end = stages.parse_range(a.layers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(a.threads)
    try:
        stage = stages.load_stage(a.model, start, end)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.perturb:
        stages.perturb_weights(stage, a.perturb, seed=a.key_seed)
    kp = Keypair.deterministic("stage", a.key_seed)
    # a process that only serves stage frames credits yamux windows by halves (one window
    # update per ~128 KiB instead of one per frame); nodes keep the library's rule
    from ..net.host import yamux_half_window_updates

    yamux_half_window_updates()

    def ready(info: dict[str, Any]) -> None:
        print(json.dumps(info), flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(lambda: serve_stage(stage, kp, a.listen, ready=ready, kv_budget_bytes=a.kv_budget_mib << 20,
                                     inline_decode=a.decode_on == "loop"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
