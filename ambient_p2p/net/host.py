"""The libp2p host: identity, transports, security, muxing (normative text: spec/network.md).

Why this module exists rather than a bare ``libp2p.new_host()`` call:

* **Identity.** A node has exactly one key, the ed25519 key behind its Solana-format
  address. The libp2p peer id is derived from that same key (identity multihash of the
  protobuf-encoded ed25519 public key, the ``12D3KooW...`` form), so a peer id and an
  address name the same node and :func:`pubkey_of_peer_id` converts back.
* **Security.** py-libp2p 0.8.1's ``new_swarm`` defaults to offering Noise, TLS, *secio and
  plaintext* (verified in ``libp2p/__init__.py``). An Ambient node offers **Noise only**, so a
  peer can never downgrade a connection to an unauthenticated or deprecated channel.
* **Lifetime.** :func:`open_host` is an async context manager: everything the host runs
  lives inside the caller's trio nursery and is cancelled when the block exits, which is how
  Ctrl-C and SIGTERM stop a node (the node shell turns SIGTERM into cancellation).

libp2p is imported lazily inside functions so ``ambient-p2p --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.crypto import PUBKEY_BYTES, Keypair

if TYPE_CHECKING:  # pragma: no cover - typing only
    from libp2p.abc import IHost
    from libp2p.peer.id import ID

#: Default listen address of a node (TCP on loopback, OS-chosen port).
DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"
#: Multistream/Noise/Yamux negotiation must finish within this many seconds.
NEGOTIATE_TIMEOUT_S = 10
#: The only security protocol a node offers or accepts.
NOISE_PROTOCOL = "/noise"
#: Stream muxer (mplex is not offered: it has no flow control).
YAMUX_PROTOCOL = "/yamux/1.0.0"


class HostError(Exception):
    """A host could not be created or could not listen (bad multiaddr, port in use)."""


@dataclass(frozen=True)
class HostConfig:
    """What a host listens on. ``listen`` are multiaddr strings (TCP; ``/udp/.../quic-v1``
    is accepted by py-libp2p but not used by default: its bulk throughput is poor)."""

    listen: Sequence[str] = field(default_factory=lambda: (DEFAULT_LISTEN,))
    target_peers: int = 8


def libp2p_keypair(kp: Keypair) -> Any:
    """The py-libp2p ``KeyPair`` for our ed25519 key (same secret seed, same public key)."""
    from libp2p.crypto.ed25519 import create_new_key_pair

    lkp = create_new_key_pair(kp.seed)
    if lkp.public_key.to_bytes() != kp.pubkey:  # cannot happen unless a library changes
        raise HostError("libp2p derived a different public key from our seed")
    return lkp


def peer_id_of(pubkey: bytes) -> ID:
    """The libp2p peer id of an ed25519 public key (``12D3KooW...``)."""
    from libp2p.crypto.ed25519 import Ed25519PublicKey
    from libp2p.peer.id import ID

    if len(pubkey) != PUBKEY_BYTES:
        raise HostError(f"public key must be {PUBKEY_BYTES} bytes")
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(bytes(pubkey)))


def pubkey_of_peer_id(peer_id: ID) -> bytes | None:
    """The ed25519 public key inside an identity-multihash peer id, or None if the peer id
    is not of that form (e.g. an RSA peer, which can never be an Ambient node)."""
    from libp2p.crypto.serialization import deserialize_public_key

    raw = peer_id.to_bytes()
    # identity multihash: 0x00 <varint len> <protobuf PublicKey>; ed25519 protobuf is 36 bytes
    if len(raw) != 2 + 36 or raw[0] != 0x00 or raw[1] != 36:
        return None
    try:
        pk = deserialize_public_key(raw[2:])
    except Exception:  # noqa: BLE001 - any malformed key is simply "not ours"
        return None
    out = pk.to_bytes()
    return out if len(out) == PUBKEY_BYTES else None


def parse_multiaddr(text: str) -> Any:
    """Parse a multiaddr string, raising :class:`HostError` with a clear reason."""
    import multiaddr

    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:  # noqa: BLE001 - the library raises several types
        raise HostError(f"malformed multiaddr {text!r}: {exc}") from None


def parse_peer_multiaddr(text: str) -> Any:
    """Parse ``/ip4/A/tcp/P/p2p/12D3...`` into a py-libp2p ``PeerInfo``; HostError if the
    address is malformed or lacks the ``/p2p/<peer-id>`` part."""
    from libp2p.peer.peerinfo import info_from_p2p_addr

    ma = parse_multiaddr(text)
    try:
        return info_from_p2p_addr(ma)
    except Exception as exc:  # noqa: BLE001
        raise HostError(f"multiaddr {text!r} must end in /p2p/<peer-id>: {exc}") from None


_WORKAROUNDS_APPLIED = False
#: How long a cached signed peer record is reused before being re-read from the host.
SPR_CACHE_S = 10.0
#: A TCP connection whose sent data stays unacknowledged this long is aborted (Linux
#: TCP_USER_TIMEOUT). Without it a connection that lived through a partition (packets
#: silently dropped) waits out TCP's exponential retransmission backoff after the heal, up
#: to 2 min between tries (measured: finality resumed 66 s after a 60 s 2|2 partition
#: healed, and not within 150 s after a 1|3 one, tests/test_faults_netns.py); aborted, the
#: peer maintenance redials at once over a fresh connection.
TCP_USER_TIMEOUT_MS = 15_000
#: Keepalive probes on an idle connection: first after TCP_KEEPIDLE_S idle, then every
#: TCP_KEEPINTVL_S, aborted after TCP_KEEPCNT unanswered (a silent peer is noticed within
#: 5 + 3 x 2 = 11 s even when we have nothing to send).
TCP_KEEPIDLE_S = 5
TCP_KEEPINTVL_S = 2
TCP_KEEPCNT = 3


async def connect_now(host: IHost, info: Any) -> None:
    """``host.connect(info)`` that really dials (spec/network.md "Dead connections").

    py-libp2p's swarm keeps a negative cache: once a dial to a peer fails on every address,
    every dial to it fails at once, without trying, for 60 s (``_NegativePeerCache``; only
    a success evicts it). Through a partition each real dial fails and renews that block,
    so after the heal a node's first real dial could come up to 60 s late (the likely cause
    of the ~18 s reconnects seen after 2|2 heals in the netns fault suite: both sides of a
    pair wait out their blocks). Our callers keep their own per-address backoff
    (net/node.py), so the library's block is lifted before each of their dials
    (tests/test_net_inproc.py shows the library behaviour, then ours)."""
    unblock = getattr(host.get_network(), "unblock_peer", None)
    if unblock is not None:
        unblock(info.peer_id)
    await host.connect(info)


def set_tcp_liveness(sock: Any) -> None:
    """Keepalive and a user timeout on one connected TCP socket (spec/network.md "Dead
    connections"); a socket that is not TCP, or a platform without an option, is left as
    it is."""
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", TCP_KEEPIDLE_S), ("TCP_KEEPINTVL", TCP_KEEPINTVL_S),
                        ("TCP_KEEPCNT", TCP_KEEPCNT), ("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_MS)):
        if hasattr(socket, name):
            opts.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, opt, value in opts:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, opt, value)


def apply_workarounds() -> None:
    """Process-wide fixes for py-libp2p 0.8.1 costs that do not change behaviour
    (spec/network.md "py-libp2p pitfalls", P8 and P9; idempotent):

    * Yamux sends a WINDOW_UPDATE after *every* read by default
      (``PY_YAMUX_RELEASE_ON_READ=1``), and pubsub reads each RPC's varint length one byte
      at a time, so every gossip RPC costs several extra frames each way. We select the
      library's go-yamux hysteresis mode (``PY_YAMUX_RELEASE_ON_READ=0``) unless the
      operator set the variable.
    * Every outgoing pubsub RPC carries a signed peer record that py-libp2p rebuilds from
      ``get_addrs()`` (multiaddr parsing) per RPC, and every incoming RPC re-verifies the
      sender's record (an ed25519 verification) even when it is byte-identical to the last
      one. We cache the outgoing record for SPR_CACHE_S and skip re-consuming a record
      identical to the one already accepted from that peer.
    * Not here: yamux's half-window credit rule (:func:`yamux_half_window_updates`), which
      only stand-alone stage processes install (it slowed gossip four-fold).
    """
    global _WORKAROUNDS_APPLIED
    if _WORKAROUNDS_APPLIED:
        return
    _WORKAROUNDS_APPLIED = True
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
    import time as _time

    import libp2p.pubsub.gossipsub
    import libp2p.pubsub.pubsub
    from libp2p.peer import peerstore

    # module internals we wrap (not part of py-libp2p's typed interface)
    _gs: Any = libp2p.pubsub.gossipsub
    _ps: Any = libp2p.pubsub.pubsub
    _pst: Any = peerstore

    orig_env = _pst.env_to_send_in_RPC
    orig_consume = _ps.maybe_consume_signed_record

    # Both caches live on the host object itself. Keying them by ``id(host)`` (as this
    # code once did) broke when a host was garbage collected and a new one reused its id:
    # the new host sent the dead one's record, every peer dropped its RPCs as carrying an
    # invalid signed record, and gossip went silent for SPR_CACHE_S.
    def env_cached(host: Any) -> tuple[bytes, bool]:
        now = _time.monotonic()
        local = host.get_peerstore().get_local_record()
        hit = getattr(host, "_ambient_spr_out", None)
        # reuse only while the peerstore still holds the record we cached: identify (which
        # calls the unwrapped function) may have issued a newer one, and peers that saw it
        # reject our older copy
        if hit is not None and hit[0] is local and now - hit[2] < SPR_CACHE_S:
            return hit[1], False
        env, fresh = orig_env(host)
        host._ambient_spr_out = (host.get_peerstore().get_local_record(), env, now)
        return env, fresh

    def consume_cached(msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        seen: dict[Any, bytes] | None = getattr(host, "_ambient_spr_in", None)
        if seen is None:
            seen = host._ambient_spr_in = {}
        if seen.get(peer_id) == msg.senderRecord:
            return True
        ok = bool(orig_consume(msg, host, peer_id))
        if ok:
            if len(seen) > 4096:
                seen.clear()
            seen[peer_id] = msg.senderRecord
        return ok

    for mod in (_gs, _ps):
        if hasattr(mod, "env_to_send_in_RPC"):
            mod.env_to_send_in_RPC = env_cached
        if hasattr(mod, "maybe_consume_signed_record"):
            mod.maybe_consume_signed_record = consume_cached
    _serialize_pubsub_writes(_ps)
    _buffered_pubsub_reads(_ps)
    _tcp_liveness_on_every_connection()


def yamux_half_window_updates() -> None:
    """Every yamux stream of this process credits its sender only once half the receive
    window has been consumed (go-yamux's rule, ``sendWindowUpdate``: ``delta < max/2``
    waits), instead of py-libp2p 0.8.1's window update after nearly every read: its
    "partial slack" branch fires whenever anything was consumed, whatever
    ``PY_YAMUX_RELEASE_ON_READ`` says (P8 above selects that mode, which alone does not
    stop it). Each such update is a Noise encryption, a loopback send, and a wake-up and
    parse in the sender: on a chained stage route one per received frame (spec/shard.md
    "Chained sessions", measurements). Flow control stays sound: the sender always holds
    at least half a window of credit. The library's method stays reachable as
    ``YamuxStream._ambient_library_update`` (tests/test_shard.py compares both rules).

    Installed only by stand-alone stage processes (node/stage_server.py ``main``), not by
    :func:`apply_workarounds`: it has none of the library's receive-window auto-tuning, and
    on every host it cut gossip to a quarter (``bench gossip --sustained 12``, 39,424 B
    messages, same run: 418 msgs/s against 1,815 without it)."""
    from libp2p.stream_muxer.yamux import yamux

    cls: Any = yamux.YamuxStream
    if getattr(cls, "_ambient_library_update", None) is not None:
        return

    async def update(self: Any, *, bytes_read: int = 0) -> None:
        total = 0
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            delta = self.target_recv_window - (self.recv_window + buffered)
            if delta > 0 and delta >= self.target_recv_window // 2:
                self.recv_window += delta
                self._pending_recv_release = 0
                total = delta
        if total > 0:
            await self.send_window_update(total, skip_lock=True)

    cls._ambient_library_update = cls._auto_tune_and_send_window_update
    cls._auto_tune_and_send_window_update = update


def _tcp_liveness_on_every_connection() -> None:
    """Every TCP connection py-libp2p makes (dialled or accepted) is wrapped in one
    ``TrioTCPStream``: set :func:`set_tcp_liveness` on its socket there."""
    import libp2p.io.trio

    cls: Any = libp2p.io.trio.TrioTCPStream
    orig_init = cls.__init__

    def init_with_liveness(self: Any, stream: Any) -> None:
        orig_init(self, stream)
        sock = getattr(stream, "socket", None)
        if sock is not None:
            set_tcp_liveness(sock)

    cls.__init__ = init_with_liveness


def _serialize_pubsub_writes(_ps: Any) -> None:
    """Pitfall found by the consensus localnet (issue 6): yamux splits a write into
    frames (at most the send window each) and releases its write lock between frames,
    while pubsub writes RPCs to one peer's stream from several tasks (the per-peer queue,
    ``send_recent_messages``, ``flush_pending_messages``). Two large RPCs (shred batches of
    ~40 KB) then interleave, the reader fails with a protobuf ``DecodeError``, and that
    exception tears down the reader's whole host. Whole-RPC writes are serialized per
    stream with a lock kept on the stream object."""
    import trio as _trio

    orig_write_msg = _ps.Pubsub.write_msg

    async def write_msg_serialized(self: Any, stream: Any, rpc_msg: Any) -> bool:
        lock = getattr(stream, "_ambient_write_lock", None)
        if lock is None:
            lock = _trio.Lock()
            stream._ambient_write_lock = lock
        async with lock:
            return bool(await orig_write_msg(self, stream, rpc_msg))

    _ps.Pubsub.write_msg = write_msg_serialized


#: The most one read of the pubsub RPC reader asks its stream for (bytes): what it may hold
#: beyond the RPC it is reading (go-yamux's and py-libp2p's largest yamux frame).
PUBSUB_READ_AHEAD_BYTES = 64 * 1024


def _buffered_pubsub_reads(_ps: Any) -> None:
    """Pitfall P21 (spec/network.md; issue 17): pubsub's reader reads each RPC's varint
    length one byte per stream read and then the body, and every stream read is a trip
    through NetStream's state lock, yamux's stream lock and its window accounting. Ours
    reads whatever has arrived (up to PUBSUB_READ_AHEAD_BYTES, or the rest of the body)
    into a buffer kept on the stream object and parses prefix and body from it, so a
    40 KB RPC that arrived whole costs one or two stream reads. The pubsub stream has one
    reader (``continuously_read_stream``), so the buffer is never shared. Same limits and
    errors as the library's ``read_varint_prefixed_bytes_limited``: ParseError on a prefix
    over 10 bytes, MessageTooLarge before reading an oversized body, IncompleteReadError
    at an early end of stream."""
    from libp2p.exceptions import ParseError
    from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge

    async def read_rpc_buffered(stream: Any, max_length: int) -> bytes:
        buf: bytearray | None = getattr(stream, "_ambient_read_buf", None)
        if buf is None:
            buf = stream._ambient_read_buf = bytearray()
        while True:  # the varint length prefix
            n = shift = 0
            k = 0
            for i in range(min(len(buf), 10)):
                b = buf[i]
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    k = i + 1
                    break
            if k:
                break
            if len(buf) >= 10:
                raise ParseError("Varint decoding error: integer exceeds maximum size of 64 bits")
            chunk = await stream.read(PUBSUB_READ_AHEAD_BYTES)
            if not chunk:
                raise IncompleteReadError("Stream ended while reading varint length prefix",
                                          expected_bytes=1, received_bytes=0)
            buf += chunk
        if n > max_length:
            raise MessageTooLarge(f"Message length {n} exceeds maximum allowed {max_length}")
        end = k + n
        while len(buf) < end:
            chunk = await stream.read(max(end - len(buf), PUBSUB_READ_AHEAD_BYTES))
            if not chunk:
                raise IncompleteReadError(f"Stream ended after {len(buf) - k} of {n} bytes",
                                          expected_bytes=n, received_bytes=len(buf) - k)
            buf += chunk
        body = bytes(memoryview(buf)[k:end])
        del buf[:end]
        return body

    _ps.read_varint_prefixed_bytes_limited = read_rpc_buffered


#: Connection manager bounds. py-libp2p's defaults (low watermark 100, high 300) make its
#: auto-connector re-dial every peerstore entry every 30 s on a small network; ours keep
#: it aligned with the node's own target peer count.
MAX_CONNECTIONS = 128
HIGH_WATERMARK = 64


def connection_config(target_peers: int) -> Any:
    from libp2p.network.config import ConnectionConfig

    low = max(1, target_peers)
    return ConnectionConfig(
        max_connections=MAX_CONNECTIONS,
        min_connections=low,
        low_watermark=low,
        high_watermark=max(low, HIGH_WATERMARK),
    )


def build_host(kp: Keypair, listen: Sequence[str], target_peers: int = 8) -> IHost:
    """A host (not yet running) with Noise-only security and Yamux muxing."""
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair as new_x25519
    from libp2p.custom_types import TProtocol
    from libp2p.security.noise.transport import PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport

    apply_workarounds()
    lkp = libp2p_keypair(kp)
    addrs = [parse_multiaddr(a) for a in listen]
    sec = {TProtocol(PROTOCOL_ID): NoiseTransport(lkp, noise_privkey=new_x25519().private_key)}
    return new_host(
        key_pair=lkp,
        sec_opt=sec,
        muxer_preference="YAMUX",
        listen_addrs=addrs,
        negotiate_timeout=NEGOTIATE_TIMEOUT_S,
        connection_config=connection_config(target_peers),
    )


@contextlib.asynccontextmanager
async def open_host(kp: Keypair, config: HostConfig | None = None) -> AsyncIterator[IHost]:
    """Run a host listening on ``config.listen`` for the duration of the block.

    Identify and ping handlers are installed by py-libp2p's ``BasicHost`` itself. Leaving
    the block (normally or by cancellation) closes listeners and connections.

    py-libp2p 0.8.1 prints a failed listen (port in use) and carries on with no listen
    address (spec/network.md P16); we raise :class:`HostError` instead, because a node that
    nobody can dial is useless and the operator must be told."""
    cfg = config or HostConfig()
    host = build_host(kp, cfg.listen, cfg.target_peers)
    addrs = [parse_multiaddr(a) for a in cfg.listen]
    failed = ""
    try:
        async with host.run(listen_addrs=addrs):
            listening = list(host.get_transport_addrs())
            if len(listening) < len(addrs):
                # raised after the run block unwinds, so it is not wrapped in py-libp2p's
                # exception groups
                failed = (
                    f"cannot listen on {', '.join(cfg.listen)} (address in use or unavailable); "
                    f"listening on {len(listening)} of {len(addrs)}"
                )
            else:
                yield host
    except OSError as exc:
        raise HostError(f"cannot listen on {', '.join(cfg.listen)}: {exc.strerror or exc}") from None
    if failed:
        raise HostError(failed)


def full_addrs(host: IHost) -> list[str]:
    """The host's listen addresses with ``/p2p/<peer-id>`` appended (what others dial)."""
    pid = host.get_id().to_string()
    out = []
    for a in host.get_addrs():
        s = str(a)
        out.append(s if "/p2p/" in s else f"{s}/p2p/{pid}")
    return out
