"""Routes: the driver side of sharded inference (normative text: spec/shard.md "Routes").

The miner that won a query builds a route of stage servers covering all of the model's
layers (:func:`plan_route`: fewest milliseconds per token from the servers' announced
throughput plus measured latency, Petals' rule) and drives generation through it
(:class:`RouteDriver`): one forward frame per stage per output token, each stage's output
relayed as the next stage's input, the last stage returning the token's fingerprint.

Fault tolerance: the driver keeps every frame it sent to each stage. When a stage stops
answering (timeout, closed connection, lost session, malformed answer, a commitment whose
root is not the driver's own), the driver picks another server for the same range, opens a
session there, replays the kept frames in order (the same frames, so the same tensor shapes
and, on the same build, the same bits) and continues; the answer is the one an uninterrupted
run gives. A replacement on another build computes other last bits: then every later stage
is re-fed from the new outputs and a rebuilt last stage's fingerprints replace the old
ones, provided the tokens already emitted stay the same (``replay-diverged`` otherwise).

Stage PoL: the driver computes every stage's leaves itself (core/shard.py: digests of the
exact bytes sent and received, the quantized boundary row) and accepts a stage's signed
commitment only if its root equals the driver's; the driver keeps the leaves, so it can open
any stage at any position for a validator (:meth:`RouteAnswer.open`).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import pol
from ..core import shard as sh
from ..core.codec import decode, encode
from ..net.messages import (
    MAX_STAGE_FRAME_BYTES,
    MAX_STAGE_FRAME_ROWS,
    StageCloseRequest,
    StageForwardRequest,
    StageForwardResponse,
    StageOpenRequest,
)
from ..net.reqresp import STAGE_CLOSE, STAGE_OPEN, STAGE_STREAM, ReqRespError, SessionStream, request

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

    def open(self, position: int) -> list[sh.StageOpening]:
        """Every stage's opening at ``position`` (for a validator's blame check)."""
        return [sh.open_stage(c, lv, position) for c, lv in zip(self.commitments, self.leaves, strict=True)]

    def route_commitments(self) -> sh.RouteCommitments:
        return sh.RouteCommitments(stages=tuple(self.commitments))


class RouteDriver:
    """Drives generations through stage servers reachable from ``host``."""

    def __init__(self, host: IHost, servers: Sequence[StageEndpoint], *, total_layers: int, model_id: bytes,
                 forward_timeout_s: float = STAGE_FORWARD_TIMEOUT_S) -> None:
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

    async def _open(self, log: _StageLog, ctx: dict[str, Any]) -> None:
        await self._drop_stream(log)  # a new session (replacement, resync): a new stream
        resp = await self._call(log.endpoint, STAGE_OPEN, StageOpenRequest(
            nonce=next(self._nonce), query=ctx["query"], model_id=self.model_id, start=log.start, end=log.end,
            prompt_len=ctx["prompt_len"], max_positions=ctx["max_positions"], temp_milli=ctx["temp_milli"],
            sample_seed=ctx["sample_seed"], prompt_hash=ctx["prompt_hash"], want_logits=ctx["want_logits"] and log.last,
        ), STAGE_OPEN_TIMEOUT_S)
        if resp.total != self.total_layers or not 0 < resp.hidden_size <= sh.MAX_STAGE_HIDDEN:
            raise ReqRespError("bad-response", "stage reports another model shape")
        if log.hidden_size and resp.hidden_size != log.hidden_size:
            raise ReqRespError("bad-response", "replacement reports another hidden size")
        log.hidden_size = resp.hidden_size
        log.vocab = resp.vocab
        log.stage_key = resp.stage
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
        may be async (tests use it to kill a stage mid-generation)."""
        import inspect

        if not prompt or not 1 <= max_new_tokens <= pol.MAX_OUTPUT_TOKENS:
            raise ValueError("need a prompt and 1..MAX_OUTPUT_TOKENS new tokens")
        t0 = time.perf_counter()
        sent0, recv0, rt0 = self.bytes_sent, self.bytes_received, self.round_trips
        route = plan_route(self.servers, self.total_layers, exclude=frozenset(self.failed))
        logs = [_StageLog(ep.start, ep.end, ep, ep.start == 0, ep.end == self.total_layers) for ep in route]
        ctx: dict[str, Any] = {"query": query, "prompt_len": len(prompt), "max_positions": len(prompt) + max_new_tokens,
                               "temp_milli": temp_milli, "sample_seed": sample_seed,
                               "prompt_hash": pol.tokens_hash(prompt), "want_logits": want_logits}
        try:
            replacements: list[tuple[int, str, str]] = []
            for k, log in enumerate(logs):
                try:
                    await self._open(log, ctx)
                except ReqRespError as exc:
                    await self._replace(k, logs, ctx, f"{exc.code}: {exc.detail}", replacements)
            hsz = max(log.hidden_size for log in logs)
            chunk = max(1, min(MAX_STAGE_FRAME_ROWS, MAX_STAGE_FRAME_BYTES // (4 * hsz)))
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
                        fr = _Frame(fr.pos, fr.rows, (), last_resp.hidden)
                assert last_resp is not None and last_resp.fp is not None
                fp = last_resp.fp
                if fp.pos != x:
                    raise RouteError("bad-answer", f"last stage fingerprint for position {fp.pos}, expected {x}")
                fps.append(fp)
                output.append(fp.tok)
                if want_logits:
                    logits.append(np.frombuffer(last_resp.logits, dtype="<f4").copy())
                if on_token is not None:
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
