"""Routes: the driver side of sharded inference (normative text: spec/shard.md "Routes").

The miner that won a query builds a route of stage servers covering all of the model's
layers (:func:`plan_route`: fewest milliseconds per token from the servers' announced
throughput plus measured latency, Petals' rule) and drives generation through it
(:class:`RouteDriver`): one forward frame per stage per output token, the last stage
returning the token's fingerprint. By default a route of two or more stages runs as a
**chained session**: the driver feeds the first stage and each stage hands its boundary
straight to the next (``/ambient/stage-chain/1``), the last answering the driver on
``/ambient/stage-results/1`` (stages + 1 messages per frame instead of 2 per stage); in
**relay mode** (``chain=False``, and the fallback of any failed chained run) each stage's
output comes back to the driver, which sends it to the next stage.

Fault tolerance: the driver keeps every frame it sent to each stage. When a stage stops
answering (timeout, closed connection, lost session, malformed answer, a commitment whose
root is not the driver's own), the driver picks another server for the same range, opens a
session there, replays the kept frames in order (the same frames, so the same tensor shapes
and, on the same build, the same bits) and continues; the answer is the one an uninterrupted
run gives. A replacement on another build computes other last bits: then every later stage
is re-fed from the new outputs and a rebuilt last stage's fingerprints replace the old
ones, provided the tokens already emitted stay the same (``replay-diverged`` otherwise).

Stage PoL: in relay mode the driver computes every stage's leaves itself (core/shard.py:
digests of the exact bytes sent and received, the quantized boundary row) and accepts a
stage's signed commitment only if its root equals the driver's; in a chained session it
fetches each stage's leaves before close, checks root and links (every receiving stage
already checked its sender's leaf against the bytes it got). Either way the driver keeps
the leaves, so it can open any stage at any position for a validator
(:meth:`RouteAnswer.open`). A failed chained run falls back to relay mode, re-feeding
every stage of a new route from the tokens emitted so far.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from ..core import pol
from ..core import shard as sh
from ..core.codec import DecodeError, decode, encode, message_type_of
from ..net.messages import (
    MAX_CHAIN_HIDDEN_BYTES,
    MAX_STAGE_FRAME_ROWS,
    ErrorResponse,
    StageChainFrame,
    StageCloseRequest,
    StageForwardRequest,
    StageForwardResponse,
    StageLeavesRequest,
    StageOpenRequest,
    StageResultsRequest,
)
from ..net.reqresp import (
    STAGE_CHAIN_PROTO,
    STAGE_CLOSE,
    STAGE_LEAVES,
    STAGE_OPEN,
    STAGE_RESULTS_PROTO,
    STAGE_STREAM,
    FrameReader,
    ReqRespError,
    SessionStream,
    encode_frame,
    request,
)

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.abc import IHost

#: Bound on one decode frame's round trip (a stage of a CPU node answers in tens of ms).
STAGE_FORWARD_TIMEOUT_S = 10.0
#: Bound on a prompt frame (up to MAX_STAGE_FRAME_ROWS rows through a stage's layers).
STAGE_PROMPT_TIMEOUT_S = 30.0
STAGE_OPEN_TIMEOUT_S = 10.0
#: Most replacements one generation may make before it gives up.
MAX_FAILOVERS = 8
#: Planner: the cost of a server with no announced throughput (ms per token).
UNKNOWN_MS_PER_TOKEN = 1000.0


class RouteError(Exception):
    """Generation through a route failed: ``no-route`` (no servers cover a range),
    ``replay-diverged`` (a replacement computed other bits than the server it replaced),
    ``too-many-failovers``, ``bad-answer``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class StageEndpoint:
    """A server announcing layers ``start:end`` (from gossip ``StageAnnounce`` or config)."""

    peer: str  # base58 peer id
    addrs: tuple[str, ...]
    start: int
    end: int
    tokens_per_s: float = 0.0
    rtt_ms: float = 0.0

    def ms_per_token(self) -> float:
        compute = 1000.0 / self.tokens_per_s if self.tokens_per_s > 0 else UNKNOWN_MS_PER_TOKEN
        return compute + self.rtt_ms


def parse_stage_spec(spec: str) -> StageEndpoint:
    """``A:B@MULTIADDR`` (the multiaddr ends in ``/p2p/PEER``): a stage server given by
    configuration (a miner's ``--route``). Raises ValueError with a one-line reason."""
    rng, sep, addr = spec.partition("@")
    if not sep or "/p2p/" not in addr:
        raise ValueError(f"{spec!r}: want A:B@/ip4/HOST/tcp/PORT/p2p/PEER")
    try:
        a, b = (int(x) for x in rng.split(":"))
    except ValueError:
        raise ValueError(f"{spec!r}: the layer range must be A:B") from None
    if not 0 <= a < b <= sh.MAX_MODEL_LAYERS:
        raise ValueError(f"{spec!r}: need 0 <= A < B <= {sh.MAX_MODEL_LAYERS}")
    return StageEndpoint(peer=addr.rsplit("/p2p/", 1)[1], addrs=(addr,), start=a, end=b)


def plan_route(servers: Sequence[StageEndpoint], total_layers: int, *,
               exclude: frozenset[str] = frozenset()) -> list[StageEndpoint]:
    """Cheapest chain of servers whose ranges tile ``0:total_layers`` (a shortest path over
    layer boundaries; cost = ms per token; ties: fewer stages, then peer id). Raises
    :class:`RouteError` ``no-route``."""
    best: dict[int, tuple[float, int, tuple[str, ...], list[StageEndpoint]]] = {0: (0.0, 0, (), [])}
    for at in range(total_layers):
        if at not in best:
            continue
        cost, n, ids, path = best[at]
        for s in servers:
            if s.start != at or s.peer in exclude or s.end > total_layers:
                continue
            cand = (cost + s.ms_per_token(), n + 1, (*ids, s.peer), [*path, s])
            cur = best.get(s.end)
            if cur is None or cand[:3] < cur[:3]:
                best[s.end] = cand
    if total_layers not in best:
        raise RouteError("no-route", f"announced servers do not cover layers 0:{total_layers}")
    return best[total_layers][3]


def replacement_for(servers: Sequence[StageEndpoint], start: int, end: int,
                    exclude: frozenset[str]) -> StageEndpoint | None:
    """The fastest server for exactly ``start:end`` not in ``exclude``."""
    cands = [s for s in servers if (s.start, s.end) == (start, end) and s.peer not in exclude]
    return min(cands, key=lambda s: (s.ms_per_token(), s.peer)) if cands else None


@dataclass
class _Frame:
    pos: int
    rows: int
    tokens: tuple[int, ...]
    hidden: bytes


@dataclass
class _StageLog:
    """What the driver keeps per route slot: the frames sent, the outputs received, and
    the leaves it computed from them."""

    start: int
    end: int
    endpoint: StageEndpoint
    first: bool
    last: bool
    hidden_size: int = 0
    vocab: int = 0
    stage_key: bytes = b""
    frames: list[_Frame] = field(default_factory=list)
    outputs: list[bytes] = field(default_factory=list)  # hidden bytes, or last row + encoded fp
    in_parts: list[bytes] = field(default_factory=list)
    out_parts: list[bytes] = field(default_factory=list)
    leaves: list[sh.StageFingerprint] = field(default_factory=list)
    commitment: sh.StageCommitment | None = None
    #: the session's forward frames travel on one stream (``/ambient/stage-stream/1``)
    stream: SessionStream[StageForwardRequest, StageForwardResponse] | None = None


@dataclass
class RouteAnswer:
    """A finished generation: tokens, final fingerprints, per-stage commitments and leaves."""

    query: bytes
    prompt: list[int]
    output: list[int]
    fps: list[pol.LogitFingerprint]
    logits: list[np.ndarray]
    commitments: list[sh.StageCommitment]
    leaves: list[list[sh.StageFingerprint]]
    route: list[StageEndpoint]
    replacements: list[tuple[int, str, str]]  # (route slot, old peer, new peer)
    total_s: float
    bytes_sent: int
    bytes_received: int
    round_trips: int
    vocab: int = 0  # the model's vocabulary, as the last stage reported it at open
    messages: int = 0  # stage-protocol messages per frame summed (chained: stages + 1 per frame; relay: 2 per stage)
    chained: bool = False  # served by a chained session (no fallback to relay mode)

    def open(self, position: int) -> list[sh.StageOpening]:
        """Every stage's opening at ``position`` (for a validator's blame check)."""
        return [sh.open_stage(c, lv, position) for c, lv in zip(self.commitments, self.leaves, strict=True)]

    def route_commitments(self) -> sh.RouteCommitments:
        return sh.RouteCommitments(stages=tuple(self.commitments))


class _ChainFailed(Exception):
    """A chained run failed: ``peers`` to avoid, the tokens emitted so far (re-fed by the
    relay fallback; empty when the run's proofs, not its liveness, failed) and how many of
    them ``on_token`` already saw."""

    def __init__(self, peers: set[str], why: str, output: list[int], notified: int) -> None:
        super().__init__(why)
        self.peers, self.why, self.output, self.notified = peers, why, output, notified


def _chain_links(logs: list[_StageLog], prompt: Sequence[int], output: Sequence[int],
                 fps: Sequence[pol.LogitFingerprint], rows: Sequence[bytes]) -> str:
    """The driver's check of a chained run's leaves (what the relay driver gets by computing
    them): per position, stage 0 read the driver's tokens, each stage read what the one
    before it committed to having sent, and the last stage committed to the fingerprint and
    boundary row it returned. '' if they hold, else why not."""
    for x, fp in enumerate(fps):
        toks = list(prompt) if x == 0 else [output[x - 1]]
        if logs[0].leaves[x].in_digest != sh.tokens_frame_digest(toks):
            return f"stage 0 read other tokens at {x}"
        for k in range(1, len(logs)):
            if logs[k].leaves[x].in_digest != logs[k - 1].leaves[x].out_digest:
                return f"stages {k - 1} and {k} disagree on their link at {x}"
        last = logs[-1].leaves[x]
        if last.out_digest != sh.frame_digest(encode(fp)) or last.q != sh.quantize_row(
            np.frombuffer(rows[x], dtype="<f4")
        ):
            return f"the last stage's leaf at {x} is not what it returned"
        if any(log.leaves[x].pos != x for log in logs):
            return f"a leaf at {x} names another position"
    return ""


class RouteDriver:
    """Drives generations through stage servers reachable from ``host``."""

    def __init__(self, host: IHost, servers: Sequence[StageEndpoint], *, total_layers: int, model_id: bytes,
                 forward_timeout_s: float = STAGE_FORWARD_TIMEOUT_S, chain: bool = True) -> None:
        self.host = host
        self.servers = list(servers)
        self.total_layers = total_layers
        self.model_id = model_id
        self.forward_timeout_s = forward_timeout_s
        self.failed: set[str] = set()
        self._connected: set[str] = set()
        self._nonce = itertools.count(1)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.round_trips = 0
        self.resyncs = 0  # later stages re-fed after a replacement computed other bits
        self.chain = chain  # routes of 2+ stages run as chained sessions (spec/shard.md)
        self.messages = 0
        self.chain_fallbacks = 0  # chained runs that failed over to relay mode
        self.last_chain_failure = ""

    # -- transport ---------------------------------------------------------------------------
    async def _peer(self, ep: StageEndpoint) -> Any:
        from libp2p.peer.id import ID

        from ..net.host import parse_peer_multiaddr

        if ep.peer not in self._connected:
            last: Exception | None = None
            for a in ep.addrs:
                try:
                    await self.host.connect(parse_peer_multiaddr(a))
                    break
                except Exception as exc:  # noqa: BLE001 - dial failures: try the next address
                    last = exc
            else:
                raise ReqRespError("unavailable", f"cannot dial {ep.peer}: {last}")
            self._connected.add(ep.peer)
        return ID.from_base58(ep.peer)

    async def _call(self, ep: StageEndpoint, proto: Any, req: Any, timeout_s: float) -> Any:
        peer = await self._peer(ep)
        self.bytes_sent += len(encode(req))
        self.round_trips += 1
        resp = await request(self.host, peer, proto, req, timeout=timeout_s)
        self.bytes_received += len(encode(resp))
        return resp

    # -- sessions ----------------------------------------------------------------------------
    async def _drop_stream(self, log: _StageLog) -> None:
        if log.stream is not None:
            self.bytes_sent += log.stream.bytes_sent
            self.bytes_received += log.stream.bytes_received
            await log.stream.aclose()
            log.stream = None

    async def _open(self, log: _StageLog, ctx: dict[str, Any], *, chain: tuple[str | None, StageEndpoint | None]
                    | None = None) -> None:
        """Open a session on ``log``'s server; ``chain`` = (feeding peer, next stage) opens a
        chained one (no session stream: frames come on stage-chain streams)."""
        await self._drop_stream(log)  # a new session (replacement, resync): a new stream
        links: dict[str, Any] = {}
        if chain is not None:
            prev, nxt = chain
            links = {"chain": True, "prev_peer": prev, "next_peer": nxt.peer if nxt else None,
                     "next_addrs": tuple(nxt.addrs[:4]) if nxt else None}
        resp = await self._call(log.endpoint, STAGE_OPEN, StageOpenRequest(
            nonce=next(self._nonce), query=ctx["query"], model_id=self.model_id, start=log.start, end=log.end,
            prompt_len=ctx["prompt_len"], max_positions=ctx["max_positions"], temp_milli=ctx["temp_milli"],
            sample_seed=ctx["sample_seed"], prompt_hash=ctx["prompt_hash"], want_logits=ctx["want_logits"] and log.last,
            **links), STAGE_OPEN_TIMEOUT_S)
        if resp.total != self.total_layers or not 0 < resp.hidden_size <= sh.MAX_STAGE_HIDDEN:
            raise ReqRespError("bad-response", "stage reports another model shape")
        if log.hidden_size and resp.hidden_size != log.hidden_size:
            raise ReqRespError("bad-response", "replacement reports another hidden size")
        log.hidden_size = resp.hidden_size
        log.vocab = resp.vocab
        log.stage_key = resp.stage
        if chain is None:
            log.stream = SessionStream(self.host, await self._peer(log.endpoint), STAGE_STREAM)

    async def _send(self, log: _StageLog, fr: _Frame, ctx: dict[str, Any]) -> StageForwardResponse:
        req = StageForwardRequest(nonce=next(self._nonce), query=ctx["query"], pos=fr.pos, rows=fr.rows,
                                  tokens=fr.tokens, hidden=fr.hidden)
        timeout = STAGE_PROMPT_TIMEOUT_S if fr.rows > 1 else self.forward_timeout_s
        if log.stream is None:
            raise ReqRespError("unavailable", "no open session stream")
        self.round_trips += 1
        resp = await log.stream.call(req, timeout)
        want_rows = 1 if log.last else fr.rows
        if resp.pos != fr.pos or resp.rows != fr.rows or len(resp.hidden) != 4 * want_rows * log.hidden_size:
            raise ReqRespError("bad-response", "boundary of the wrong shape")
        ends_leaf = fr.pos + fr.rows >= ctx["prompt_len"]
        if log.last and ends_leaf and resp.fp is None:
            raise ReqRespError("bad-response", "the last stage returned no fingerprint")
        return resp

    @staticmethod
    def _output_bytes(log: _StageLog, resp: StageForwardResponse) -> bytes:
        return resp.hidden + (encode(resp.fp) if log.last and resp.fp is not None else b"")

    async def _replace(self, k: int, logs: list[_StageLog], ctx: dict[str, Any], why: str,
                       replacements: list[tuple[int, str, str]]) -> None:
        """Swap route slot ``k`` for another server of the same range and replay its frames."""
        log = logs[k]
        self.failed.add(log.endpoint.peer)
        while True:
            if len(replacements) >= MAX_FAILOVERS:
                raise RouteError("too-many-failovers", f"{len(replacements)} replacements; last: {why}")
            ep = replacement_for(self.servers, log.start, log.end, frozenset(self.failed))
            if ep is None:
                raise RouteError("no-route", f"no other server for layers {log.start}:{log.end} ({why})")
            replacements.append((k, log.endpoint.peer, ep.peer))
            log.endpoint = ep
            try:
                await self._open(log, ctx)
                await self._replay(k, logs, ctx, replacements)
                return
            except ReqRespError as exc:
                why = f"{exc.code}: {exc.detail}"
                self.failed.add(ep.peer)

    async def _replay(self, k: int, logs: list[_StageLog], ctx: dict[str, Any],
                      replacements: list[tuple[int, str, str]]) -> None:
        """Resend slot ``k``'s kept frames to its (fresh) session, recomputing its outputs
        and leaves. Same build: the same bytes, nothing else changes. Another build: the
        outputs differ in the last bits, so every later stage is re-fed from the new outputs
        (:meth:`_resync`), and for the last stage the final fingerprints are replaced; the
        tokens already emitted must stay the same (else ``replay-diverged``)."""
        log = logs[k]
        frames, old = log.frames, log.outputs
        log.frames, log.outputs, log.leaves, log.in_parts, log.out_parts = [], [], [], [], []
        for fr in frames:
            resp = await self._send(log, fr, ctx)
            self._record(log, fr, resp, ctx)
        if log.outputs == old:
            return
        if not log.last:
            await self._resync(k + 1, logs, ctx, replacements)
            return
        fps: list[pol.LogitFingerprint] = ctx["fps"]
        new = [decode(o[4 * log.hidden_size :], expected=pol.LogitFingerprint) for o in log.outputs
               if len(o) > 4 * log.hidden_size]
        if [f.tok for f in new[: len(fps)]] != [f.tok for f in fps]:
            raise RouteError("replay-diverged", f"the rebuilt route emits other tokens (layers {log.start}:{log.end})")
        fps[:] = new[: len(fps)]

    async def _resync(self, k: int, logs: list[_StageLog], ctx: dict[str, Any],
                      replacements: list[tuple[int, str, str]]) -> None:
        """Re-feed slot ``k`` (same server, new session) with the previous slot's new outputs."""
        log = logs[k]
        log.frames = [_Frame(fr.pos, fr.rows, (), out) for fr, out in zip(log.frames, logs[k - 1].outputs, strict=True)]
        self.resyncs += 1
        try:
            with contextlib.suppress(ReqRespError):  # abandon the stale session (it may be gone already)
                await self._call(log.endpoint, STAGE_CLOSE, StageCloseRequest(nonce=next(self._nonce),
                                 query=ctx["query"], num_tokens=0), STAGE_OPEN_TIMEOUT_S)
            await self._open(log, ctx)
            await self._replay(k, logs, ctx, replacements)
        except ReqRespError as exc:
            await self._replace(k, logs, ctx, f"{exc.code}: {exc.detail}", replacements)

    def _record(self, log: _StageLog, fr: _Frame, resp: StageForwardResponse, ctx: dict[str, Any]) -> None:
        """Keep the frame and its output; compute the leaf exactly as the stage does."""
        log.frames.append(fr)
        log.outputs.append(self._output_bytes(log, resp))
        log.in_parts.append(sh.tokens_payload(fr.tokens) if log.first else fr.hidden)
        if log.last:
            if resp.fp is not None:
                log.out_parts.append(encode(resp.fp))
        else:
            log.out_parts.append(resp.hidden)
        if fr.pos + fr.rows >= ctx["prompt_len"]:
            row = np.frombuffer(resp.hidden, dtype="<f4")[-log.hidden_size:]
            in_d = (sh.tokens_frame_digest(np.frombuffer(b"".join(log.in_parts), dtype=">u4").tolist())
                    if log.first else sh.frame_digest(*log.in_parts))
            log.leaves.append(sh.StageFingerprint(pos=len(log.leaves), in_digest=in_d,
                                                  out_digest=sh.frame_digest(*log.out_parts), q=sh.quantize_row(row)))
            log.in_parts, log.out_parts = [], []

    async def _forward(self, k: int, logs: list[_StageLog], fr: _Frame, ctx: dict[str, Any],
                       replacements: list[tuple[int, str, str]]) -> StageForwardResponse:
        log = logs[k]
        while True:
            try:
                resp = await self._send(log, fr, ctx)
                break
            except ReqRespError as exc:
                await self._replace(k, logs, ctx, f"{exc.code}: {exc.detail}", replacements)
        self._record(log, fr, resp, ctx)
        return resp

    async def _close(self, k: int, logs: list[_StageLog], ctx: dict[str, Any], n: int,
                     replacements: list[tuple[int, str, str]]) -> None:
        log = logs[k]
        while True:
            try:
                resp = await self._call(log.endpoint, STAGE_CLOSE,
                                        StageCloseRequest(nonce=next(self._nonce), query=ctx["query"], num_tokens=n),
                                        STAGE_OPEN_TIMEOUT_S)
                c = resp.commitment
                if c is None or not sh.verify_stage_commitment(c) or c.stage != log.stage_key or (
                    c.query, c.model_id, c.start, c.end, c.total, c.prompt_hash, c.num_tokens
                ) != (ctx["query"], self.model_id, log.start, log.end, self.total_layers, ctx["prompt_hash"], n) or (
                    c.root != sh.stage_root(log.leaves[:n])
                ):
                    raise ReqRespError("bad-response", "stage commitment does not match the driver's leaves")
                log.commitment = c
                return
            except ReqRespError as exc:
                await self._replace(k, logs, ctx, f"{exc.code}: {exc.detail}", replacements)

    # -- generation --------------------------------------------------------------------------
    async def generate(self, query: bytes, prompt: Sequence[int], max_new_tokens: int, *, temp_milli: int = 0,
                       sample_seed: bytes = pol.ZERO_HASH, eos_token_id: int | None = None,
                       want_logits: bool = False, on_token: Callable[[int, int], Any] | None = None) -> RouteAnswer:
        """Greedy or seeded-sampled generation through a planned route. ``on_token(x, tok)``
        may be async (tests use it to kill a stage mid-generation).

        A route of two or more stages runs as a chained session (``chain=True``, the
        default: each stage hands its boundary straight to the next, spec/shard.md "Chained
        sessions"); any failure there falls back to relay mode, which re-feeds every stage
        of a new route from the tokens emitted so far (the driver's kept inputs) and goes on
        with relay failover."""
        if not prompt or not 1 <= max_new_tokens <= pol.MAX_OUTPUT_TOKENS:
            raise ValueError("need a prompt and 1..MAX_OUTPUT_TOKENS new tokens")
        t0 = time.perf_counter()
        sent0, recv0, rt0, m0 = self.bytes_sent, self.bytes_received, self.round_trips, self.messages
        route = plan_route(self.servers, self.total_layers, exclude=frozenset(self.failed))
        ctx: dict[str, Any] = {"query": query, "prompt_len": len(prompt), "max_positions": len(prompt) + max_new_tokens,
                               "temp_milli": temp_milli, "sample_seed": sample_seed,
                               "prompt_hash": pol.tokens_hash(prompt), "want_logits": want_logits,
                               "eos": eos_token_id, "on_token": on_token}
        ans: RouteAnswer | None = None
        if self.chain and len(route) > 1:
            try:
                ans = await self._generate_chain(route, prompt, max_new_tokens, ctx)
            except _ChainFailed as f:
                self.failed |= f.peers
                self.chain_fallbacks += 1
                self.last_chain_failure = f.why
                ans = await self._generate_relay(prompt, max_new_tokens, ctx, prefix=f.output, notify_from=f.notified)
                ans.replacements[:0] = [(k, a.peer, b.peer) for k, (a, b) in enumerate(zip(route, ans.route, strict=False))
                                        if a.peer != b.peer and (a.start, a.end) == (b.start, b.end)]
        if ans is None:
            ans = await self._generate_relay(prompt, max_new_tokens, ctx)
        ans.total_s = time.perf_counter() - t0
        ans.bytes_sent, ans.bytes_received = self.bytes_sent - sent0, self.bytes_received - recv0
        ans.round_trips, ans.messages = self.round_trips - rt0, self.messages - m0
        return ans

    # -- chained sessions --------------------------------------------------------------------
    async def _stream(self, ep: StageEndpoint, proto: str) -> Any:
        from libp2p.custom_types import TProtocol

        peer = await self._peer(ep)
        with trio.move_on_after(STAGE_OPEN_TIMEOUT_S):
            try:
                return await self.host.new_stream(peer, [TProtocol(proto)])
            except Exception as exc:  # noqa: BLE001 - negotiation or connection failure
                raise ReqRespError("unavailable", f"{proto} to {ep.peer}: {type(exc).__name__}: {exc}") from None
        raise ReqRespError("timeout", f"{proto} to {ep.peer}: no stream within {STAGE_OPEN_TIMEOUT_S:g}s")

    async def _read_results(self, k: int, stream: Any, send: Any) -> None:
        """Pump one stage's results stream into ``send`` as (k, message); its end or a
        malformed frame arrives as (k, ReqRespError)."""
        reader = FrameReader(stream)
        limit = max(message_type_of(StageForwardResponse).max_size, message_type_of(ErrorResponse).max_size)
        try:
            while True:
                data = await reader.read(limit)
                self.bytes_received += len(data) + 2
                msg = decode(data)
                if isinstance(msg, ErrorResponse):
                    await send.send((k, ReqRespError(msg.code, msg.detail)))
                    return
                if not isinstance(msg, StageForwardResponse):
                    raise DecodeError("wrong-type", "a results stream carries StageForwardResponse frames", "")
                await send.send((k, msg))
        except trio.Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - the stage went away, or sent garbage
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                send.send_nowait((k, ReqRespError("stream-ended", f"{type(exc).__name__}: {exc}")))

    @staticmethod
    def _failed_by(k: int, err: ReqRespError, logs: list[_StageLog]) -> set[str]:
        """Who failed, from stage k's report (spec/shard.md "Chained sessions", failure)."""
        if err.code == "next-failed" and k + 1 < len(logs):
            return {logs[k + 1].endpoint.peer}
        if err.code == "broken-link" and k > 0:
            return {logs[k - 1].endpoint.peer}
        return {logs[k].endpoint.peer}

    async def _generate_chain(self, route: list[StageEndpoint], prompt: Sequence[int], max_new_tokens: int,
                              ctx: dict[str, Any]) -> RouteAnswer:
        import inspect

        logs = [_StageLog(ep.start, ep.end, ep, ep.start == 0, ep.end == self.total_layers) for ep in route]
        query = ctx["query"]
        output: list[int] = []
        fps: list[pol.LogitFingerprint] = []
        logits: list[np.ndarray] = []
        rows: list[bytes] = []  # the last stage's returned boundary row per output position
        streams: list[Any] = []
        opened: list[_StageLog] = []
        notified = 0
        send, recv = trio.open_memory_channel[tuple[int, Any]](4 * len(logs) + 16)
        error: Exception | None = None

        def failed(peers: set[str], why: str, keep_output: bool = True) -> _ChainFailed:
            return _ChainFailed(peers, why, list(output) if keep_output else [], notified if keep_output else 0)

        try:
            async with trio.open_nursery() as nursery:
                try:
                    for k, log in enumerate(logs):
                        prev = logs[k - 1].endpoint.peer if k > 0 else None
                        nxt = logs[k + 1].endpoint if k + 1 < len(logs) else None
                        try:
                            await self._open(log, ctx, chain=(prev, nxt))
                            opened.append(log)
                            st = await self._stream(log.endpoint, STAGE_RESULTS_PROTO)
                            streams.append(st)
                            frame = encode_frame(encode(StageResultsRequest(nonce=next(self._nonce), query=query)))
                            await st.write(frame)
                            self.bytes_sent += len(frame)
                        except ReqRespError as exc:
                            raise failed({log.endpoint.peer},
                                         f"open {log.start}:{log.end}: {exc.code}: {exc.detail}") from None
                        except Exception as exc:  # noqa: BLE001 - a stream write to a stage that went away
                            raise failed({log.endpoint.peer}, f"open {log.start}:{log.end}: {exc}") from None
                        nursery.start_soon(self._read_results, k, st, send)
                    hsz = max(log.hidden_size for log in logs)
                    chunk = max(1, min(MAX_STAGE_FRAME_ROWS, MAX_CHAIN_HIDDEN_BYTES // (4 * hsz)))
                    try:
                        head = await self._stream(logs[0].endpoint, STAGE_CHAIN_PROTO)
                    except ReqRespError as exc:
                        raise failed({logs[0].endpoint.peer}, f"chain stream: {exc.code}: {exc.detail}") from None
                    streams.append(head)
                    for x in range(max_new_tokens):
                        toks = list(prompt) if x == 0 else [output[-1]]
                        base = 0 if x == 0 else len(prompt) + x - 1
                        sent: list[tuple[int, int, int]] = []
                        for off in range(0, len(toks), chunk):
                            part = toks[off : off + chunk]
                            fr = StageChainFrame(nonce=next(self._nonce), query=query, pos=base + off, rows=len(part),
                                                 tokens=tuple(part))
                            data = encode_frame(encode(fr))
                            with trio.move_on_after(self.forward_timeout_s) as ws:
                                try:
                                    await head.write(data)
                                except Exception as exc:  # noqa: BLE001 - the first stage went away
                                    raise failed({logs[0].endpoint.peer}, f"chain write: {exc}") from None
                            if ws.cancelled_caught:
                                raise failed(set(), "chain write timed out")
                            self.bytes_sent += len(data)
                            self.round_trips += 1
                            self.messages += len(logs) + 1
                            sent.append((fr.nonce, fr.pos, fr.rows))
                        resp: StageForwardResponse | None = None
                        for nonce, pos, nrows in sent:
                            timeout = STAGE_PROMPT_TIMEOUT_S if nrows > 1 else self.forward_timeout_s
                            with trio.move_on_after(timeout) as rs:
                                k, msg = await recv.receive()
                            if rs.cancelled_caught:
                                raise failed(set(), f"no result for position {pos} within {timeout:g}s")
                            if isinstance(msg, ReqRespError):
                                raise failed(self._failed_by(k, msg, logs), f"stage {k}: {msg.code}: {msg.detail}")
                            ok_shape = len(msg.hidden) == 4 * logs[-1].hidden_size
                            if k != len(logs) - 1 or msg.nonce != nonce or msg.pos != pos or msg.rows != nrows or (
                                not ok_shape
                            ):
                                raise failed({logs[k].endpoint.peer}, f"stage {k}: an answer for another frame")
                            resp = msg
                        assert resp is not None
                        fp = resp.fp
                        if fp is None or fp.pos != x:
                            raise failed({logs[-1].endpoint.peer}, f"last stage: no fingerprint for position {x}")
                        fps.append(fp)
                        output.append(fp.tok)
                        rows.append(resp.hidden)
                        if ctx["want_logits"]:
                            logits.append(np.frombuffer(resp.logits, dtype="<f4").copy())
                        cb = ctx["on_token"]
                        notified = x + 1
                        if cb is not None:
                            r = cb(x, fp.tok)
                            if inspect.isawaitable(r):
                                await r
                        if ctx["eos"] is not None and fp.tok == ctx["eos"]:
                            break
                    with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                        await head.close()
                    n = len(output)
                    for k, log in enumerate(logs):
                        try:
                            leaves = await self._fetch_leaves(log, query, n)
                            resp_c = await self._call(log.endpoint, STAGE_CLOSE, StageCloseRequest(
                                nonce=next(self._nonce), query=query, num_tokens=n), STAGE_OPEN_TIMEOUT_S)
                        except ReqRespError as exc:
                            raise failed({log.endpoint.peer}, f"close {k}: {exc.code}: {exc.detail}",
                                         keep_output=False) from None
                        opened.remove(log)
                        c = resp_c.commitment
                        if c is None or not sh.verify_stage_commitment(c) or c.stage != log.stage_key or (
                            c.query, c.model_id, c.start, c.end, c.total, c.prompt_hash, c.num_tokens
                        ) != (query, self.model_id, log.start, log.end, self.total_layers, ctx["prompt_hash"], n) or (
                            c.root != sh.stage_root(leaves)
                        ):
                            raise failed({log.endpoint.peer}, f"stage {k}: commitment does not match its leaves",
                                         keep_output=False)
                        log.leaves, log.commitment = leaves, c
                    why = _chain_links(logs, prompt, output, fps, rows)
                    if why:
                        raise failed(set(), why, keep_output=False)
                except Exception as exc:  # noqa: BLE001 - re-raised below, outside the nursery (no exception group)
                    error = exc
                finally:
                    nursery.cancel_scope.cancel()
            if error is not None:
                raise error
        except _ChainFailed:
            await self._abandon(opened, query)
            raise
        finally:
            for st in streams:
                with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                    await st.close()
        return RouteAnswer(
            query=query, prompt=list(prompt), output=output, fps=fps, logits=logits,
            commitments=[log.commitment for log in logs if log.commitment is not None],
            leaves=[log.leaves for log in logs], route=[log.endpoint for log in logs], replacements=[],
            total_s=0.0, bytes_sent=0, bytes_received=0, round_trips=0, vocab=logs[-1].vocab, chained=True)

    async def _fetch_leaves(self, log: _StageLog, query: bytes, n: int) -> list[sh.StageFingerprint]:
        out: list[sh.StageFingerprint] = []
        while len(out) < n:
            resp = await self._call(log.endpoint, STAGE_LEAVES, StageLeavesRequest(
                nonce=next(self._nonce), query=query, first=len(out)), STAGE_OPEN_TIMEOUT_S)
            if resp.first != len(out) or not resp.leaves:
                raise ReqRespError("bad-response", f"leaves from {len(out)}: got {len(resp.leaves)} at {resp.first}")
            out.extend(resp.leaves)
        return out[:n]

    async def _abandon(self, logs: list[_StageLog], query: bytes) -> None:
        """Close (num_tokens = 0) the sessions of a failed chain that may still be open, so
        that the relay fallback can open new ones for the same query (best effort)."""
        for log in logs:
            if log.endpoint.peer in self.failed:
                continue
            with contextlib.suppress(ReqRespError):
                await self._call(log.endpoint, STAGE_CLOSE, StageCloseRequest(nonce=next(self._nonce), query=query,
                                 num_tokens=0), STAGE_OPEN_TIMEOUT_S)

    # -- relay mode --------------------------------------------------------------------------
    async def _generate_relay(self, prompt: Sequence[int], max_new_tokens: int, ctx: dict[str, Any], *,
                              prefix: Sequence[int] = (), notify_from: int = 0) -> RouteAnswer:
        """Relay mode: every boundary goes back to the driver, which sends it to the next
        stage. ``prefix``: tokens a failed chained run already emitted; they are re-fed (the
        driver's kept inputs rebuild every stage's cache) and must come out again."""
        import inspect

        query = ctx["query"]
        want_logits, on_token, eos_token_id = ctx["want_logits"], ctx["on_token"], ctx["eos"]
        t0 = time.perf_counter()
        sent0, recv0, rt0 = self.bytes_sent, self.bytes_received, self.round_trips
        route = plan_route(self.servers, self.total_layers, exclude=frozenset(self.failed))
        logs = [_StageLog(ep.start, ep.end, ep, ep.start == 0, ep.end == self.total_layers) for ep in route]
        try:
            replacements: list[tuple[int, str, str]] = []
            for k, log in enumerate(logs):
                try:
                    await self._open(log, ctx)
                except ReqRespError as exc:
                    await self._replace(k, logs, ctx, f"{exc.code}: {exc.detail}", replacements)
            hsz = max(log.hidden_size for log in logs)
            chunk = max(1, min(MAX_STAGE_FRAME_ROWS, MAX_CHAIN_HIDDEN_BYTES // (4 * hsz)))  # as a chained run
            output: list[int] = []
            fps: list[pol.LogitFingerprint] = []
            ctx["fps"] = fps  # a rebuilt last stage (another build) replaces the final fingerprints
            logits: list[np.ndarray] = []
            for x in range(max_new_tokens):
                toks = list(prompt) if x == 0 else [output[-1]]
                base = 0 if x == 0 else len(prompt) + x - 1
                last_resp: StageForwardResponse | None = None
                for off in range(0, len(toks), chunk):
                    part = toks[off : off + chunk]
                    fr = _Frame(base + off, len(part), tuple(part), b"")
                    for k in range(len(logs)):
                        last_resp = await self._forward(k, logs, fr, ctx, replacements)
                        self.messages += 2
                        fr = _Frame(fr.pos, fr.rows, (), last_resp.hidden)
                assert last_resp is not None and last_resp.fp is not None
                fp = last_resp.fp
                if fp.pos != x:
                    raise RouteError("bad-answer", f"last stage fingerprint for position {fp.pos}, expected {x}")
                if x < len(prefix) and fp.tok != prefix[x]:
                    raise RouteError("replay-diverged", f"the rebuilt route emits another token at position {x}")
                fps.append(fp)
                output.append(fp.tok)
                if want_logits:
                    logits.append(np.frombuffer(last_resp.logits, dtype="<f4").copy())
                if on_token is not None and x >= notify_from:
                    r = on_token(x, fp.tok)
                    if inspect.isawaitable(r):
                        await r
                if eos_token_id is not None and fp.tok == eos_token_id:
                    break
            for k in range(len(logs)):
                await self._close(k, logs, ctx, len(output), replacements)
            for log in logs:
                await self._drop_stream(log)
            return RouteAnswer(
                query=query, prompt=list(prompt), output=output, fps=fps, logits=logits,
                commitments=[log.commitment for log in logs if log.commitment is not None],
                leaves=[log.leaves[: len(output)] for log in logs], route=[log.endpoint for log in logs],
                replacements=replacements, total_s=time.perf_counter() - t0, bytes_sent=self.bytes_sent - sent0,
                bytes_received=self.bytes_received - recv0, round_trips=self.round_trips - rt0, vocab=logs[-1].vocab)
        finally:  # an error path: the session streams are closed too
            for log in logs:
                await self._drop_stream(log)


async def prove_through_route(driver: RouteDriver, kp: Any, query: bytes, prompt: Sequence[int], max_new_tokens: int,
                              *, tier: pol.Tier = pol.Tier.FP32, temp_milli: int = 0,
                              sample_seed: bytes = pol.ZERO_HASH,
                              eos_token_id: int | None = None) -> tuple[pol.PolProof, RouteAnswer]:
    """What a miner serving a won query through a route does instead of
    ``model/runner.prove``: generate through the route, then commit the final fingerprints
    exactly as an unsharded miner does (the proof is the same bytes as the unsharded one on
    the same build); the answer carries the stage commitments and leaves for the stages'
    openings and the payment split (spec/shard.md "Payment")."""
    ans = await driver.generate(query, prompt, max_new_tokens, temp_milli=temp_milli, sample_seed=sample_seed,
                                eos_token_id=eos_token_id)
    proof = pol.commit(kp, model_id=driver.model_id, tier=tier, vocab=_vocab_of(ans), top_k=pol.TOP_K,
                       temp_milli=temp_milli, sample_seed=sample_seed, prompt=ans.prompt, output=ans.output,
                       fps=ans.fps)
    return proof, ans


def _vocab_of(ans: RouteAnswer) -> int:
    """The vocabulary size the last stage reported at open (kept by the driver)."""
    return ans.vocab
