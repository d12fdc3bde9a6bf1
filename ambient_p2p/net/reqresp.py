"""Request/response protocols over libp2p streams (normative text: spec/network.md).

One request per stream. Both directions are a single frame::

    frame = uvarint(len(body)) || body          body = canonical CBOR message

The requester writes its frame and half-closes; the responder answers with the expected
response type or an :class:`~ambient_p2p.net.messages.ErrorResponse` (``code`` in
``ERROR_CODES``) and closes. A frame whose length prefix exceeds the protocol's limit is
refused *before* its body is read (no remote-controlled allocation; a :class:`FrameReader`
may hold at most :data:`READ_AHEAD_BYTES` that arrived with the prefix). Every stream is bounded
by :data:`REQUEST_TIMEOUT_S` on both sides. Requests from one peer are rate limited per
protocol with a token bucket (``ReqRespProtocol.rate_limit`` in :data:`PROTOCOLS`); over-limit requests get ``rate-limited``.

Why not py-libp2p's own ``request_response`` helpers: we need the size check before the body
read, our strict codec, and an error vocabulary that other implementations can match.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

import trio

from ..core.codec import DecodeError, decode, encode, message_type_of
from ..core.errors import ProtocolError
from .messages import (
    MAX_REPAIR_ORPHAN_SLOTS,
    REPAIR_HIGHEST,
    REPAIR_ORPHAN,
    REPAIR_SHRED,
    BlobRequest,
    BlobResponse,
    ErrorResponse,
    GenesisRequest,
    GenesisResponse,
    NoncedShreds,
    PeersRequest,
    PeersResponse,
    PolOpenRequest,
    PolOpenResponse,
    RepairRequest,
    ShredPushAck,
    SlotShredsRequest,
    SnapshotChunk,
    SnapshotChunkRequest,
    SnapshotOffers,
    SnapshotOffersRequest,
    StageCloseRequest,
    StageCloseResponse,
    StageForwardRequest,
    StageForwardResponse,
    StageLeavesRequest,
    StageLeavesResponse,
    StageOpenRequest,
    StageOpenResponse,
    TxBatch,
    TxBatchAck,
    shred_key,
)

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.abc import IHost, INetStream
    from libp2p.peer.id import ID

REQUEST_TIMEOUT_S = 5.0
MAX_UVARINT_BYTES = 5  # frames are < 4 GiB; longer prefixes are malformed


class Nonced(Protocol):
    """Every request and response carries the nonce that pairs them."""

    @property
    def nonce(self) -> int: ...


ReqT = TypeVar("ReqT", bound=Nonced)
RespT = TypeVar("RespT", bound=Nonced)


@dataclass(frozen=True)
class ReqRespProtocol(Generic[ReqT, RespT]):
    """One request/response protocol: its libp2p protocol id, the message types of both
    directions and the per-requesting-peer token bucket (capacity, refill per second)."""

    proto_id: str
    request: type[ReqT]
    response: type[RespT]
    rate_limit: tuple[float, float]
    #: the server's bound on one stream (read, handler, write); a stage forward runs a model
    timeout_s: float = 5.0
    #: a *session stream*: many request frames on one stream, each answered in order; then
    #: ``timeout_s`` bounds each exchange and ``idle_s`` the wait for the next request
    #: (spec/shard.md "Session stream"). A new stream per request costs a multistream-select
    #: negotiation and a yamux stream open, several ms per call in py-libp2p.
    streaming: bool = False
    idle_s: float = 0.0


#: The one request/response table (spec/network.md "Request/response"): protocols of every
#: layer are listed here, none is added by importing another module.
REPAIR: ReqRespProtocol[RepairRequest, NoncedShreds] = ReqRespProtocol(
    "/ambient/repair/1", RepairRequest, NoncedShreds, (256.0, 128.0)
)
POL_OPEN: ReqRespProtocol[PolOpenRequest, PolOpenResponse] = ReqRespProtocol(
    "/ambient/pol-open/1", PolOpenRequest, PolOpenResponse, (16.0, 4.0)
)
PEERS: ReqRespProtocol[PeersRequest, PeersResponse] = ReqRespProtocol(
    "/ambient/peers/1", PeersRequest, PeersResponse, (4.0, 0.5)
)
#: Whole-slot repair (spec/node.md "Repair and catch-up"): a catching-up node asks for tens
#: of slots per round.
REPAIR_SLOT: ReqRespProtocol[SlotShredsRequest, NoncedShreds] = ReqRespProtocol(
    "/ambient/repair-slot/1", SlotShredsRequest, NoncedShreds, (128.0, 64.0)
)
#: Turbine-like direct delivery: a leader pushes a slot's data shreds in one or a few requests.
SHRED_PUSH: ReqRespProtocol[NoncedShreds, ShredPushAck] = ReqRespProtocol(
    "/ambient/shred-push/1", NoncedShreds, ShredPushAck, (32.0, 16.0)
)
#: Content-addressed blobs (spec/blobs.md): prompts and answers by sha256. A response is up
#: to 65 KiB, so the refill (8/s) bounds what one peer can pull from us to ~0.5 MiB/s.
BLOB: ReqRespProtocol[BlobRequest, BlobResponse] = ReqRespProtocol(
    "/ambient/blob/1", BlobRequest, BlobResponse, (32.0, 8.0)
)
#: TPU ingress (spec/tpu.md): clients and RPC nodes send batches of transactions straight to
#: the current and next leaders. 64 batches of 64 = 4,096 tx/s sustained per sending peer.
TPU: ReqRespProtocol[TxBatch, TxBatchAck] = ReqRespProtocol(
    "/ambient/tpu/1", TxBatch, TxBatchAck, (128.0, 64.0)
)
#: The chain's genesis for a joining node (spec/join.md): asked once per join.
GENESIS: ReqRespProtocol[GenesisRequest, GenesisResponse] = ReqRespProtocol(
    "/ambient/genesis/1", GenesisRequest, GenesisResponse, (4.0, 0.5)
)
#: Snapshot sync (spec/join.md): which rooted snapshots a peer serves, and their 64 KiB
#: chunks (the refill, 16/s, bounds what one peer pulls from us to ~1 MiB/s).
SNAPSHOT_OFFERS: ReqRespProtocol[SnapshotOffersRequest, SnapshotOffers] = ReqRespProtocol(
    "/ambient/snapshot-offers/1", SnapshotOffersRequest, SnapshotOffers, (8.0, 1.0)
)
SNAPSHOT_CHUNK: ReqRespProtocol[SnapshotChunkRequest, SnapshotChunk] = ReqRespProtocol(
    "/ambient/snapshot-chunk/1", SnapshotChunkRequest, SnapshotChunk, (64.0, 16.0)
)

#: Sharded inference (spec/shard.md "Session protocol"): a route driver opens a session on
#: a stage server, sends one forward frame per output token and closes. A forward runs the
#: stage's layers (a long prompt frame takes seconds on a CPU), hence the longer bound; the
#: bucket admits ~256 tokens/s from one driver.
STAGE_OPEN: ReqRespProtocol[StageOpenRequest, StageOpenResponse] = ReqRespProtocol(
    "/ambient/stage-open/1", StageOpenRequest, StageOpenResponse, (16.0, 4.0)
)
STAGE_FORWARD: ReqRespProtocol[StageForwardRequest, StageForwardResponse] = ReqRespProtocol(
    "/ambient/stage-forward/1", StageForwardRequest, StageForwardResponse, (512.0, 256.0), 30.0
)
STAGE_CLOSE: ReqRespProtocol[StageCloseRequest, StageCloseResponse] = ReqRespProtocol(
    "/ambient/stage-close/1", StageCloseRequest, StageCloseResponse, (16.0, 4.0)
)
#: The forward frames of one session on one long-lived stream (what a route driver uses; the
#: one-request ``stage-forward`` above stays for one-off frames). Same messages, the same
#: per-frame bucket; idle for 120 s (a session's idle bound) the server closes the stream.
STAGE_STREAM: ReqRespProtocol[StageForwardRequest, StageForwardResponse] = ReqRespProtocol(
    "/ambient/stage-stream/1", StageForwardRequest, StageForwardResponse, (512.0, 256.0), 30.0, True, 120.0
)
#: A chained session's leaves, fetched by its driver before close (spec/shard.md "Chained
#: sessions"); a few requests per session.
STAGE_LEAVES: ReqRespProtocol[StageLeavesRequest, StageLeavesResponse] = ReqRespProtocol(
    "/ambient/stage-leaves/1", StageLeavesRequest, StageLeavesResponse, (64.0, 16.0)
)
#: The two one-way stream protocols of a chained session are not request/response (no
#: answer per frame); node/stage_server.py serves them: ``/ambient/stage-chain/1`` (frames
#: down the chain) and ``/ambient/stage-results/1`` (results and errors back to the driver).
STAGE_CHAIN_PROTO = "/ambient/stage-chain/1"
STAGE_RESULTS_PROTO = "/ambient/stage-results/1"

#: protocol id -> protocol (tests may swap an entry, e.g. to lower a rate limit).
PROTOCOLS: dict[str, ReqRespProtocol[Any, Any]] = {
    p.proto_id: p for p in (REPAIR, POL_OPEN, PEERS, REPAIR_SLOT, SHRED_PUSH, BLOB, TPU, GENESIS,
                            SNAPSHOT_OFFERS, SNAPSHOT_CHUNK, STAGE_OPEN, STAGE_FORWARD, STAGE_CLOSE, STAGE_STREAM, STAGE_LEAVES)
}
PROTO_REPAIR = REPAIR.proto_id
PROTO_POL_OPEN = POL_OPEN.proto_id
PROTO_PEERS = PEERS.proto_id
PROTO_REPAIR_SLOT = REPAIR_SLOT.proto_id
PROTO_SHRED_PUSH = SHRED_PUSH.proto_id
PROTO_BLOB = BLOB.proto_id
PROTO_TPU = TPU.proto_id
PROTO_GENESIS = GENESIS.proto_id
PROTO_SNAPSHOT_OFFERS = SNAPSHOT_OFFERS.proto_id
PROTO_SNAPSHOT_CHUNK = SNAPSHOT_CHUNK.proto_id


class ReqRespError(ProtocolError):
    """A request failed: the peer answered an ErrorResponse (``reason`` is its ``code`` from
    the wire) or the exchange failed locally (``timeout``, ``unavailable``, ``bad-response``)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)

    @property
    def code(self) -> str:
        """The error code (``ErrorResponse.code`` vocabulary): the same as ``reason``."""
        return self.reason


class FrameError(ProtocolError):
    """A request/response frame is malformed or too large (``bad-request``, ``too-large``)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)

    @property
    def code(self) -> str:
        return self.reason


def encode_frame(body: bytes) -> bytes:
    """``uvarint(len(body)) || body`` as one buffer, so a frame goes out in one stream write
    (one yamux DATA frame)."""
    n, out = len(body), bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            break
    return bytes(out) + body  # one copy of the body (the prefix is at most 5 bytes)


def parse_prefix(buf: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """The frame length and the prefix's size from the start of ``buf``; None while the
    prefix is incomplete. FrameError('bad-request') on a prefix longer than
    :data:`MAX_UVARINT_BYTES` or a non-minimal one (a trailing zero byte)."""
    n = shift = 0
    for i in range(min(len(buf), MAX_UVARINT_BYTES)):
        b = buf[i]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if i > 0 and b == 0:
                raise FrameError("bad-request", "non-minimal length prefix")
            return n, i + 1
    if len(buf) >= MAX_UVARINT_BYTES:
        raise FrameError("bad-request", "length prefix too long")
    return None


#: The most one read of a :class:`FrameReader` asks the stream for while it looks for a
#: prefix: what a reader may hold beyond the frame it is reading (a frame's refused
#: oversized body is never read past this).
READ_AHEAD_BYTES = 64 * 1024


async def _read_some(stream: INetStream, n: int) -> bytes:
    from libp2p.network.stream.exceptions import StreamEOF

    try:
        return bytes(await stream.read(n))
    except StreamEOF:
        return b""


class FrameReader:
    """Reads frames from one stream through a buffer: each stream read takes whatever has
    arrived (up to :data:`READ_AHEAD_BYTES`, or the rest of the body being read), the
    prefix and body are parsed from the buffer and what follows stays for the next frame.
    A frame that arrived whole costs one stream read (and one yamux window update) instead
    of one per prefix byte plus one for the body. The checks are :func:`read_frame`'s."""

    def __init__(self, stream: INetStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes read from the stream and not yet returned in a frame."""
        return len(self._buf)

    async def fill(self) -> bool:
        """Read once from the stream into the buffer (the wait for a session stream's next
        request); False at the end of the stream. Does nothing while bytes are buffered."""
        if self._buf:
            return True
        return await self._more(READ_AHEAD_BYTES)

    async def _more(self, n: int) -> bool:
        chunk = await _read_some(self.stream, n)
        if not chunk:
            return False
        self._buf += chunk
        return True

    async def read(self, max_len: int) -> bytes:
        """The next frame's body; FrameError('too-large') before reading past
        :data:`READ_AHEAD_BYTES` of an oversized body, FrameError('bad-request') on a
        malformed prefix or an early end of stream."""
        while (got := parse_prefix(self._buf)) is None:
            if not await self._more(READ_AHEAD_BYTES):
                raise FrameError("bad-request", "stream ended inside the length prefix")
        n, k = got
        if n > max_len:
            raise FrameError("too-large", f"frame of {n} bytes exceeds limit {max_len}")
        end = k + n
        while len(self._buf) < end:
            if not await self._more(end - len(self._buf)):
                raise FrameError("bad-request", f"stream ended after {len(self._buf) - k} of {n} bytes")
        body = bytes(memoryview(self._buf)[k:end])
        del self._buf[:end]
        return body


async def read_frame(stream: INetStream, max_len: int, *, first: bytes = b"") -> bytes:
    """Read one frame and nothing after it (a stream that carries one frame, or a caller
    that hands the stream on); FrameError('too-large') before reading an oversized body,
    FrameError('bad-request') on a malformed prefix or early end of stream. ``first``: the
    prefix's first byte, already read. A stream that carries many frames reads them through
    one :class:`FrameReader` instead (fewer reads)."""
    n = shift = 0
    for i in range(MAX_UVARINT_BYTES + 1):
        if i == MAX_UVARINT_BYTES:
            raise FrameError("bad-request", "length prefix too long")
        b = first if i == 0 and first else await _read_some(stream, 1)
        if not b:
            raise FrameError("bad-request", "stream ended inside the length prefix")
        n |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            if i > 0 and b[0] == 0:
                raise FrameError("bad-request", "non-minimal length prefix")
            break
    if n > max_len:
        raise FrameError("too-large", f"frame of {n} bytes exceeds limit {max_len}")
    buf = bytearray()
    while len(buf) < n:
        chunk = await _read_some(stream, n - len(buf))
        if not chunk:
            raise FrameError("bad-request", f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


@dataclass
class TokenBucket:
    capacity: float
    rate: float
    tokens: float = -1.0
    last: float = field(default_factory=time.monotonic)

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if self.tokens < 0:
            self.tokens = self.capacity
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


Handler = Callable[["ID", Any], "Any | Awaitable[Any]"]


@dataclass
class ReqRespStats:
    served: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # by error code

    def bump(self, d: dict[str, int], key: str) -> None:
        d[key] = d.get(key, 0) + 1


class ReqRespServer:
    """Serves the protocols given in ``handlers`` on ``host``. A handler gets (peer id,
    decoded request) and returns the response message, or raises :class:`ReqRespError`
    to send that error code. Handlers may be sync or async."""

    MAX_BUCKETS = 4096  # bounded per-peer state

    def __init__(
        self, host: IHost, handlers: dict[str, Handler], is_banned: Callable[[ID], bool] | None = None
    ) -> None:
        from libp2p.custom_types import TProtocol

        self.host = host
        self.handlers = handlers
        self.is_banned = is_banned or (lambda _p: False)
        self.stats = ReqRespStats()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        for proto in handlers:
            if proto not in PROTOCOLS:
                raise ValueError(f"unknown protocol {proto} (add it to reqresp.PROTOCOLS)")
            host.set_stream_handler(TProtocol(proto), self._make_stream_handler(proto))

    def _bucket(self, peer: str, proto: str) -> TokenBucket:
        key = (peer, proto)
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._buckets.pop(next(iter(self._buckets)))
            cap, rate = PROTOCOLS[proto].rate_limit
            b = self._buckets[key] = TokenBucket(cap, rate)
        return b

    def _make_stream_handler(self, proto: str) -> Callable[[INetStream], Awaitable[None]]:
        async def handle(stream: INetStream) -> None:
            spec = PROTOCOLS[proto]
            with trio.move_on_after(math.inf if spec.streaming else spec.timeout_s):
                try:
                    if spec.streaming:
                        await self._serve_stream(proto, stream)
                    else:
                        await self._serve(proto, stream)
                except Exception:  # noqa: BLE001 - a broken stream must never kill the host
                    self.stats.bump(self.stats.errors, "stream-failed")
            with contextlib.suppress(Exception):  # best effort: the peer or stream may already be gone
                await stream.close()

        return handle

    async def _reply_error(self, stream: INetStream, nonce: int, code: str, detail: str) -> None:
        self.stats.bump(self.stats.errors, code)
        await stream.write(encode_frame(encode(ErrorResponse(nonce=nonce, code=code, detail=detail[:200]))))

    async def _serve_stream(self, proto: str, stream: INetStream) -> None:
        """A session stream: answer request frames in order until the peer closes, stays
        idle ``idle_s``, sends a malformed or oversized frame (answered, then closed) or runs
        past ``timeout_s`` on one exchange. Error responses to well-formed requests keep the
        stream open."""
        spec = PROTOCOLS[proto]
        reader = FrameReader(stream)
        while True:
            with trio.move_on_after(spec.idle_s) as idle:
                try:
                    more = await reader.fill()
                except Exception:  # noqa: BLE001 - reset or closed by the peer
                    return
            if idle.cancelled_caught or not more:
                return
            with trio.move_on_after(spec.timeout_s) as one:
                if not await self._serve(proto, stream, reader=reader):
                    return
            if one.cancelled_caught:
                return

    async def _serve(self, proto: str, stream: INetStream, *, reader: FrameReader | None = None) -> bool:
        """One exchange; False when the stream must not carry another (a frame error).
        ``reader``: the session stream's (it may hold the start of the next request)."""
        spec = PROTOCOLS[proto]
        peer = stream.muxed_conn.peer_id
        if self.is_banned(peer):
            await self._reply_error(stream, 0, "unavailable", "peer is banned")
            return False
        if not self._bucket(peer.to_base58(), proto).take():
            await self._reply_error(stream, 0, "rate-limited", f"{proto}: limit {spec.rate_limit}")
            return False
        try:
            data = await (reader or FrameReader(stream)).read(message_type_of(spec.request).max_size)
        except FrameError as exc:
            await self._reply_error(stream, 0, exc.code, exc.detail)
            return False
        try:
            req: Nonced = decode(data, expected=spec.request)
        except DecodeError as exc:
            await self._reply_error(stream, 0, "bad-request", str(exc))
            return False
        try:
            out = self.handlers[proto](peer, req)
            if inspect.isawaitable(out):
                out = await out
        except ReqRespError as exc:
            await self._reply_error(stream, req.nonce, exc.code, exc.detail)
            return True
        if not isinstance(out, spec.response):
            await self._reply_error(stream, req.nonce, "internal", "handler returned the wrong type")
            return False
        self.stats.bump(self.stats.served, proto)
        await stream.write(encode_frame(encode(out)))
        return True


# ``timeout`` (ASYNC109): the bound becomes a ReqRespError("timeout") that callers count per
# peer, which a cancel scope around the call would not give them.
@overload
async def request(
    host: IHost, peer: ID, proto: ReqRespProtocol[ReqT, RespT], req: ReqT, timeout: float = ...  # noqa: ASYNC109
) -> RespT: ...
@overload
async def request(host: IHost, peer: ID, proto: str, req: Nonced, timeout: float = ...) -> Any: ...  # noqa: ASYNC109
async def request(
    host: IHost,
    peer: ID,
    proto: str | ReqRespProtocol[Any, Any],
    req: Nonced,
    timeout: float = REQUEST_TIMEOUT_S,  # noqa: ASYNC109
) -> Any:
    """Send ``req`` to ``peer`` on ``proto`` (a :class:`ReqRespProtocol`, typed, or its id);
    return the decoded response or raise :class:`ReqRespError`."""
    from libp2p.custom_types import TProtocol

    spec = PROTOCOLS[proto] if isinstance(proto, str) else proto
    proto = spec.proto_id
    req_cls, resp_cls = spec.request, spec.response
    if not isinstance(req, req_cls):
        raise TypeError(f"{proto} takes {req_cls.__name__}")
    limit = max(message_type_of(resp_cls).max_size, message_type_of(ErrorResponse).max_size)
    stream = None
    with trio.move_on_after(timeout) as scope:
        try:
            stream = await host.new_stream(peer, [TProtocol(proto)])
            await stream.write(encode_frame(encode(req)))
            with contextlib.suppress(Exception):  # half-close is advisory
                await stream.close_write()  # type: ignore[attr-defined]  # NetStream has it, INetStream does not declare it
            data = await FrameReader(stream).read(limit)
        except FrameError as exc:
            raise ReqRespError("bad-response", str(exc)) from None
        except ReqRespError:
            raise
        except Exception as exc:  # noqa: BLE001 - dial/negotiation/stream failures
            raise ReqRespError("unavailable", f"{type(exc).__name__}: {exc}") from None
        finally:
            if stream is not None:
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(1),
                    contextlib.suppress(Exception),  # best effort: the peer or stream may already be gone
                ):
                    await stream.close()
    if scope.cancelled_caught:
        raise ReqRespError("timeout", f"no response on {proto} within {timeout:g}s")
    try:
        resp = decode(data)
    except DecodeError as exc:
        raise ReqRespError("bad-response", str(exc)) from None
    if isinstance(resp, ErrorResponse):
        raise ReqRespError(resp.code, resp.detail)
    if not isinstance(resp, resp_cls) or resp.nonce != req.nonce:
        raise ReqRespError("bad-response", f"expected {resp_cls.__name__} with nonce {req.nonce}")
    return resp


class SessionStream(Generic[ReqT, RespT]):
    """The client side of a session stream (``ReqRespProtocol.streaming``): one stream,
    opened on the first :meth:`call`, many request/response exchanges in order. Any failure
    (timeout, reset, malformed or mismatched answer) closes it and raises
    :class:`ReqRespError`: a late answer must never be taken for the next request's. An
    error *response* keeps it open. Counts the bytes it moved (``bytes_sent``,
    ``bytes_received``) without encoding anything twice."""

    def __init__(self, host: IHost, peer: ID, proto: ReqRespProtocol[ReqT, RespT]) -> None:
        if not proto.streaming:
            raise ValueError(f"{proto.proto_id} is not a session-stream protocol")
        self.host = host
        self.peer = peer
        self.proto = proto
        self.stream: INetStream | None = None
        self._reader: FrameReader | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self._limit = max(message_type_of(proto.response).max_size, message_type_of(ErrorResponse).max_size)

    async def call(self, req: ReqT, timeout: float = REQUEST_TIMEOUT_S) -> RespT:  # noqa: ASYNC109
        from libp2p.custom_types import TProtocol

        if not isinstance(req, self.proto.request):
            raise TypeError(f"{self.proto.proto_id} takes {self.proto.request.__name__}")
        frame = encode_frame(encode(req))
        data = b""
        with trio.move_on_after(timeout) as scope:
            try:
                if self.stream is None or self._reader is None:
                    self.stream = await self.host.new_stream(self.peer, [TProtocol(self.proto.proto_id)])
                    self._reader = FrameReader(self.stream)
                await self.stream.write(frame)
                data = await self._reader.read(self._limit)
            except FrameError as exc:
                await self.aclose()
                raise ReqRespError("bad-response", str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - dial/negotiation/stream failures
                await self.aclose()
                raise ReqRespError("unavailable", f"{type(exc).__name__}: {exc}") from None
        if scope.cancelled_caught:
            await self.aclose()
            raise ReqRespError("timeout", f"no response on {self.proto.proto_id} within {timeout:g}s")
        self.bytes_sent += len(frame)
        self.bytes_received += len(data) + 1
        try:
            resp = decode(data)
        except DecodeError as exc:
            await self.aclose()
            raise ReqRespError("bad-response", str(exc)) from None
        if isinstance(resp, ErrorResponse):
            if resp.nonce not in (0, req.nonce):
                await self.aclose()
                raise ReqRespError("bad-response", f"error answer for nonce {resp.nonce}, expected {req.nonce}")
            if resp.nonce == 0:  # a frame-level refusal: the server closes the stream
                await self.aclose()
            raise ReqRespError(resp.code, resp.detail)
        if not isinstance(resp, self.proto.response) or resp.nonce != req.nonce:
            await self.aclose()
            raise ReqRespError("bad-response", f"expected {self.proto.response.__name__} with nonce {req.nonce}")
        return resp

    async def aclose(self) -> None:
        s, self.stream, self._reader = self.stream, None, None
        if s is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                await s.close()


# -- stand-in providers (until the ledger and PoL land) -----------------------------------
class ShredStore:
    """In-memory shred store answering repair (bounded; oldest slots evicted first). The
    ledger's blockstore replaces it with the same three queries."""

    def __init__(self, max_shreds: int = 65_536) -> None:
        self.max_shreds = max_shreds
        self._by_slot: dict[int, dict[int, bytes]] = {}
        self._count = 0

    def insert(self, shred: bytes) -> bool:
        key = shred_key(shred)
        if key is None:
            return False
        slot, index = key
        d = self._by_slot.setdefault(slot, {})
        if index in d:
            return False
        d[index] = bytes(shred)
        self._count += 1
        while self._count > self.max_shreds:
            oldest = min(self._by_slot)
            self._count -= len(self._by_slot.pop(oldest))
        return True

    def get(self, slot: int, index: int) -> bytes | None:
        return self._by_slot.get(slot, {}).get(index)

    def highest(self, slot: int, min_index: int = 0) -> bytes | None:
        d = self._by_slot.get(slot)
        if not d:
            return None
        i = max(d)
        return d[i] if i >= min_index else None

    def parent_of(self, slot: int) -> int | None:
        """Parent slot from a data shred's parent_offset (u16 LE at byte 83), if known."""
        s = self.highest(slot)
        if s is None or len(s) < 85:
            return None
        off = int.from_bytes(s[83:85], "little")
        return slot - off if 0 < off <= slot else None

    def __len__(self) -> int:
        return self._count


def repair_handler(store: ShredStore) -> Handler:
    def handle(_peer: ID, req: RepairRequest) -> NoncedShreds:
        out: list[bytes] = []
        if req.kind == REPAIR_SHRED:
            s = store.get(req.slot, req.index)
            if s is not None:
                out.append(s)
        elif req.kind == REPAIR_HIGHEST:
            s = store.highest(req.slot, req.index)
            if s is not None:
                out.append(s)
        elif req.kind == REPAIR_ORPHAN:
            slot: int | None = req.slot
            while slot is not None and len(out) < MAX_REPAIR_ORPHAN_SLOTS:
                s = store.highest(slot)
                if s is None:
                    break
                out.append(s)
                slot = store.parent_of(slot)
        if not out:
            raise ReqRespError("not-found", f"no shred for kind {req.kind} slot {req.slot} index {req.index}")
        return NoncedShreds(nonce=req.nonce, shreds=tuple(out))

    return handle


PolProvider = Callable[[bytes, tuple[int, ...]], "list[bytes] | None"]


def pol_open_handler(provider: PolProvider) -> Handler:
    def handle(_peer: ID, req: PolOpenRequest) -> PolOpenResponse:
        openings = provider(req.commitment, req.positions)
        if openings is None:
            raise ReqRespError("not-found", "unknown commitment")
        if len(openings) != len(req.positions):
            raise ReqRespError("internal", "provider returned the wrong number of openings")
        return PolOpenResponse(nonce=req.nonce, openings=tuple(openings))

    return handle
