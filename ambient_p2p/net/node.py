"""A networking node: host + gossip + request/response + discovery + local control.

This is the process that ``ambient-p2p join`` runs. One trio nursery owns every task; a
node stops by cancellation (the CLI maps SIGINT/SIGTERM to cancelling it).

Discovery (spec/network.md "Discovery"): py-libp2p's gossipsub peer exchange only hands
out peers inside PRUNE messages, which a small healthy network rarely sends, so a node
finds peers explicitly: it dials its bootstrap addresses (and peers remembered from its
last run), then, while it has fewer than ``target_peers`` connections, asks a connected
peer for its peer list over ``/ambient/peers/1`` and dials what it learns. Failed dials
back off exponentially per address.

Local control: a Unix socket in the data directory takes one JSON request per connection
(``status``, ``peers``, ``publish``, ``publish_many``, ``repair``) and answers one JSON line.
``ambient-p2p status|peers`` and the multi-process tests use it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio
import trio.lowlevel

from ..core.codec import DecodeError, decode, encode
from ..core.constants import PACKET_DATA_BYTES
from ..core.crypto import Keypair
from .control import CONTROL_MAX_REQUEST_BYTES, ControlRequestError, parse_control_request
from .gossip import TOPIC_KINDS, Delivery, GossipService, PayloadCheck
from .host import HostConfig, HostError, connect_now, full_addrs, open_host, parse_peer_multiaddr
from .messages import PeersRequest, PeersResponse, RepairRequest, ShredBatch, make_standin_shred
from .reqresp import (
    PROTO_PEERS,
    PROTO_POL_OPEN,
    PROTO_REPAIR,
    ReqRespError,
    ReqRespServer,
    ShredStore,
    pol_open_handler,
    repair_handler,
    request,
)

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.abc import IHost
    from libp2p.peer.id import ID

DIAL_TIMEOUT_S = 5.0
DIAL_BACKOFF_INITIAL_S = 1.0
#: The longest wait between dials of one known address (x 0.75-1.25 jitter). A failed
#: dial costs a SYN; a heal is only noticed at the next dial, and finality must resume
#: within 30 s of a partition healing (issue 16): 30 s here let a pair wait up to 37 s.
DIAL_BACKOFF_MAX_S = 8.0
#: Due addresses are dialled this many at a time: one after another, each dial into a
#: partition (packets dropped) held the discovery loop for DIAL_TIMEOUT_S, so a heal could
#: wait a whole pass over every unreachable address.
DIAL_PARALLEL = 8
DISCOVERY_INTERVAL_S = 2.0
TARGET_PEERS = 8
MAX_KNOWN_ADDRS = 256
LATENCY_SAMPLES = 20_000
RECENT_IDS = 4096
CONTROL_SOCKET = "control.sock"
#: Longest Unix socket path (Linux sun_path is 108 bytes, NUL included).
MAX_UNIX_SOCKET_PATH_BYTES = 107
NODE_FILE = "node.json"
PUBLISH_MANY_MAX = 100_000


class NodeExtension(Protocol):
    """A service composed onto the networking node (the validator in ``ambient_p2p.node``).

    The networking node stays ignorant of consensus: an extension supplies gossip payload
    checks and a repair store, sees every validated delivery first, adds status fields and
    control commands, and runs as a task in the node's nursery once the node has joined.
    """

    def payload_checks(self) -> dict[str, PayloadCheck]: ...

    def shred_store(self) -> ShredStore | None: ...

    def reqresp_handlers(self) -> dict[str, Any]:
        """Extra request/response protocols (registered in ``reqresp.PROTOCOLS``)."""
        ...

    def on_delivery(self, d: Delivery) -> bool:
        """Handle ``d``; True if consumed (the node then skips its default handling)."""
        ...

    def status(self) -> dict[str, Any]: ...

    def status_line(self) -> str: ...

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        """Answer a control request, or None if ``req['cmd']`` is not the extension's."""
        ...

    async def run(self, node: NetNode) -> None: ...


class ExtensionBase:
    """The defaults of every ``NodeExtension`` hook: no payload checks, no shred store, no
    request/response protocols, no delivery consumed, no status, no control command, no
    task. An extension subclasses it and overrides only the hooks it uses."""

    def payload_checks(self) -> dict[str, PayloadCheck]:
        return {}

    def shred_store(self) -> ShredStore | None:
        return None

    def reqresp_handlers(self) -> dict[str, Any]:
        return {}

    def on_delivery(self, d: Delivery) -> bool:
        return False

    def status(self) -> dict[str, Any]:
        return {}

    def status_line(self) -> str:
        return ""

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        return None

    async def run(self, node: NetNode) -> None:
        return None


class JoinError(Exception):
    """The node could not reach any bootstrap peer within the join timeout."""


@dataclass
class NodeConfig:
    keypair: Keypair
    chain_id: str
    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    bootstrap: list[str] = field(default_factory=list)
    data_dir: Path | None = None
    target_peers: int = TARGET_PEERS
    join_timeout_s: float = 15.0
    status_interval_s: float = 2.0
    print_status: bool = True


def _now_ms() -> int:
    return int(time.time() * 1000)


def _pct(samples: list[int], q: float) -> int | None:
    if not samples:
        return None
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


class NetNode:
    def __init__(self, cfg: NodeConfig, extension: NodeExtension | None = None) -> None:
        self.cfg = cfg
        self.kp = cfg.keypair
        self.ext = extension
        ext_store = extension.shred_store() if extension else None
        self.store = ext_store if ext_store is not None else ShredStore()
        self.host: IHost | None = None
        self.gossip: GossipService | None = None
        self.reqresp: ReqRespServer | None = None
        #: per kind: wallclock ms of the first and the latest delivery (receiver-side rates,
        #: ``bench gossip --sustained``)
        self.delivery_span: dict[str, list[int]] = {}
        self.latencies: dict[str, collections.deque[int]] = {
            k: collections.deque(maxlen=LATENCY_SAMPLES) for k in TOPIC_KINDS
        }
        self.recent: collections.deque[str] = collections.deque(maxlen=RECENT_IDS)
        self.known: dict[str, float] = {}  # multiaddr -> next dial time (monotonic)
        self.backoff: dict[str, float] = {}
        self.started = time.monotonic()
        self.ready = trio.Event()
        self.addrs: list[str] = []
        for a in cfg.bootstrap:
            self.known[a] = 0.0
        self._load_known_peers()

    # -- files ---------------------------------------------------------------------------
    def _path(self, name: str) -> Path | None:
        return self.cfg.data_dir / name if self.cfg.data_dir else None

    def _load_known_peers(self) -> None:
        p = self._path(NODE_FILE)
        if p is None or not p.exists():
            return
        try:
            for a in json.loads(p.read_text()).get("known_peers", [])[:MAX_KNOWN_ADDRS]:
                if isinstance(a, str):
                    self.known.setdefault(a, 0.0)
        except (OSError, ValueError):
            pass

    def _write_node_file(self) -> None:
        p = self._path(NODE_FILE)
        if p is None or self.host is None:
            return
        connected = self._connected_addrs()
        doc = {
            "address": self.kp.address,
            "peer_id": self.host.get_id().to_base58(),
            "addrs": self.addrs,
            "pid": os.getpid(),
            "chain_id": self.cfg.chain_id,
            "control": str(self._path(CONTROL_SOCKET)),
            "known_peers": connected[:MAX_KNOWN_ADDRS],
        }
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, p)

    # -- peers ---------------------------------------------------------------------------
    def _connected(self) -> list[ID]:
        assert self.host is not None
        return list(self.host.get_network().connections.keys())

    def _dialable(self, peer: ID) -> list[str]:
        assert self.host is not None
        out = []
        try:
            known = self.host.get_peerstore().addrs(peer)
        except Exception:  # noqa: BLE001 - py-libp2p raises PeerStoreError for unknown peers
            return []
        for a in known:
            s = str(a)
            if "/tcp/" not in s or "/ws" in s:
                continue
            out.append(s if "/p2p/" in s else f"{s}/p2p/{peer.to_base58()}")
        return out

    def _connected_addrs(self) -> list[str]:
        out: list[str] = []
        for p in self._connected():
            out.extend(self._dialable(p)[:2])
        return out

    async def dial(self, addr: str) -> bool:
        """Dial one ``/.../p2p/<id>`` address; False (and backoff) on failure."""
        assert self.host is not None and self.gossip is not None
        try:
            info = parse_peer_multiaddr(addr)
        except HostError:
            self.known.pop(addr, None)
            return False
        if info.peer_id == self.host.get_id() or self.gossip.is_banned(info.peer_id):
            self.known.pop(addr, None)
            return False
        if info.peer_id in self.host.get_network().connections:
            return True
        ok = False
        with trio.move_on_after(DIAL_TIMEOUT_S):
            try:
                await connect_now(self.host, info)
                ok = True
            except Exception:  # noqa: BLE001 - any dial failure means "try later"
                ok = False
        now = time.monotonic()
        if ok:
            self.backoff.pop(addr, None)
            self.known[addr] = now
        else:
            b = min(DIAL_BACKOFF_MAX_S, self.backoff.get(addr, DIAL_BACKOFF_INITIAL_S / 2) * 2)
            self.backoff[addr] = b
            self.known[addr] = now + b * (0.75 + 0.5 * random.random())
        return ok

    async def join(self) -> None:
        """Dial bootstrap/remembered peers until one answers or the join timeout passes."""
        if not self.known:
            return
        deadline = time.monotonic() + self.cfg.join_timeout_s
        last = ""
        while time.monotonic() < deadline:
            for addr in list(self.known):
                if await self.dial(addr):
                    return
                last = addr
            await trio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        raise JoinError(
            f"could not reach bootstrap peer {last or self.cfg.bootstrap[0]} within {self.cfg.join_timeout_s:g}s"
        )

    async def _discovery_loop(self) -> None:
        assert self.host is not None
        nonce = 0
        while True:
            await trio.sleep(DISCOVERY_INTERVAL_S)
            assert self.gossip is not None
            for p in self._connected():  # py-libp2p's auto-connector may have re-dialed one
                if self.gossip.is_banned(p):
                    with trio.move_on_after(5):
                        with contextlib.suppress(Exception):  # best effort: the peer or stream may already be gone
                            await self.host.disconnect(p)
            connected = self._connected()
            if len(connected) < self.cfg.target_peers and connected:
                nonce += 1
                peer = random.choice(connected)
                try:
                    resp = await request(self.host, peer, PROTO_PEERS, PeersRequest(nonce=nonce), timeout=3.0)
                    for a in resp.addrs:
                        if len(self.known) < MAX_KNOWN_ADDRS:
                            self.known.setdefault(a, 0.0)
                except ReqRespError:
                    pass
            if len(self._connected()) < self.cfg.target_peers:
                await self._dial_due(time.monotonic())
            self._write_node_file()

    async def _dial_due(self, now: float) -> None:
        """Dial every known address whose backoff has passed while the node has fewer than
        ``target_peers`` connections: ``DIAL_PARALLEL`` peers at a time, one peer's
        addresses one after another (no two dials race to one peer)."""
        by_peer: dict[str, list[str]] = {}
        for addr, due in list(self.known.items()):
            if due <= now:
                by_peer.setdefault(addr.rsplit("/p2p/", 1)[-1], []).append(addr)
        limiter = trio.CapacityLimiter(DIAL_PARALLEL)

        async def one(addrs: list[str]) -> None:
            async with limiter:
                for addr in addrs:
                    if len(self._connected()) >= self.cfg.target_peers or await self.dial(addr):
                        return

        async with trio.open_nursery() as nursery:
            for addrs in by_peer.values():
                nursery.start_soon(one, addrs)

    def _peers_handler(self, peer: ID, req: PeersRequest) -> PeersResponse:
        addrs = [a for p in self._connected() if p != peer for a in self._dialable(p)[:2]]
        return PeersResponse(nonce=req.nonce, addrs=tuple(addrs[:64]))

    # -- delivery ------------------------------------------------------------------------
    async def _consume(self, kind: str) -> None:
        assert self.gossip is not None
        while True:
            d: Delivery = await self.gossip.receive(kind)
            self.latencies[kind].append(d.received_ms - d.envelope.wallclock_ms)
            span = self.delivery_span.setdefault(kind, [d.received_ms, d.received_ms])
            span[1] = d.received_ms
            self.recent.append(d.envelope.payload[:32].hex())
            if self.ext is not None and self.ext.on_delivery(d):
                continue
            if kind == "shreds":
                try:
                    batch = decode(d.envelope.payload, expected=ShredBatch)
                except DecodeError:
                    continue
                for s in batch.shreds:
                    self.store.insert(s)

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        assert self.host is not None and self.gossip is not None and self.reqresp is not None
        lat = {
            k: {"n": len(v), "p50_ms": _pct(list(v), 0.5), "p99_ms": _pct(list(v), 0.99)}
            for k, v in self.latencies.items()
            if v
        }
        return {
            "address": self.kp.address,
            "peer_id": self.host.get_id().to_base58(),
            "addrs": self.addrs,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "peers": len(self._connected()),
            "mesh": self.gossip.mesh_sizes(),
            "gossip": self.gossip.stats.as_json(),
            "latency": lat,
            "delivery_span_ms": self.delivery_span,
            "reqresp": {"served": self.reqresp.stats.served, "errors": self.reqresp.stats.errors},
            "shreds_stored": len(self.store),
            "banned": sorted(self.gossip._banned_until),
            **(self.ext.status() if self.ext else {}),
        }

    def status_line(self) -> str:
        s = self.status()
        g = s["gossip"]
        return (
            f"status peers={s['peers']} topics={len(TOPIC_KINDS)} mesh={min(s['mesh'].values()) if s['mesh'] else 0} "
            f"in={sum(g['delivered'].values())} out={sum(g['published'].values())} "
            f"rejects={sum(g['rejected'].values())} dropped={sum(g['delivery_dropped'].values()) + g['outbound_rpc_dropped']} "
            f"bans={g['bans']}"
        ) + (" " + self.ext.status_line() if self.ext else "")

    async def _status_loop(self) -> None:
        while True:
            await trio.sleep(self.cfg.status_interval_s)
            print(self.status_line(), flush=True)

    # -- control socket ------------------------------------------------------------------
    async def _control_server(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        path = self._path(CONTROL_SOCKET)
        if path is None:
            task_status.started()
            return
        if len(os.fsencode(str(path))) > MAX_UNIX_SOCKET_PATH_BYTES:
            raise HostError(f"the control socket path {path} is longer than the {MAX_UNIX_SOCKET_PATH_BYTES}-byte "
                            "limit of a Unix socket path; use a shorter data directory")
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise HostError(f"{path} exists and is not a socket; remove it")
            path.unlink()  # a stale socket from a node that did not unwind
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(str(path))
        except OSError as exc:
            sock.close()
            raise HostError(f"cannot create the control socket {path}: {exc.strerror}") from None
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        try:
            await trio.serve_listeners(self._control_conn, [listener])
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    async def _control_conn(self, stream: trio.SocketStream) -> None:
        buf = b""
        try:
            with trio.move_on_after(600):
                while b"\n" not in buf and len(buf) <= CONTROL_MAX_REQUEST_BYTES:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    buf += chunk
                resp = await self._answer(buf.split(b"\n", 1)[0])
                await stream.send_all(json.dumps(resp).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def _answer(self, raw: bytes) -> dict[str, Any]:
        """One control request line -> its answer. Every request is validated first
        (:func:`ambient_p2p.net.control.parse_control_request`, for every command, the
        extension's included), and no request can take the node down: whatever a command
        raises becomes ``{"ok": false, "error": ...}`` (issue 16)."""
        try:
            req = parse_control_request(raw)
        except ControlRequestError as exc:
            return {"ok": False, "error": str(exc)}
        try:
            return await self._control(req)
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # noqa: BLE001 - a control request must never kill the node
            print(f"warning: control request {req.get('cmd')!r} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}

    async def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.gossip is not None and self.host is not None
        cmd = req.get("cmd")
        if self.ext is not None:
            out = await self.ext.control(req)
            if out is not None:
                return out
        if cmd == "status":
            return {"ok": True, **self.status()}
        if cmd == "peers":
            peers = []
            for p in self._connected():
                peers.append(
                    {"peer_id": p.to_base58(), "addrs": self._dialable(p), "score": round(self.gossip.peer_score(p), 2)}
                )
            return {"ok": True, "peers": peers}
        if cmd == "publish":
            kind = str(req["kind"])
            mid = await self.gossip.publish(kind, bytes.fromhex(req["payload_hex"]))
            return {"ok": True, "id": mid.hex()}
        if cmd == "publish_many":
            return await self._publish_many(req)
        if cmd == "repair":
            from libp2p.peer.id import ID

            r = RepairRequest(
                kind=int(req.get("kind", 0)),
                slot=int(req["slot"]),
                index=int(req.get("index", 0)),
                nonce=random.getrandbits(32),
            )
            try:
                resp = await request(self.host, ID.from_base58(req["peer"]), PROTO_REPAIR, r)
            except ReqRespError as exc:
                return {"ok": False, "error": str(exc), "code": exc.code}
            stored = sum(self.store.insert(s) for s in resp.shreds)
            return {"ok": True, "shreds": len(resp.shreds), "stored": stored}
        if cmd == "has_shred":
            return {"ok": True, "has": self.store.get(int(req["slot"]), int(req["index"])) is not None}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def _publish_many(self, req: dict[str, Any]) -> dict[str, Any]:
        """Publish ``count`` messages of ``size`` bytes on ``kind`` at up to ``rate``/s (or
        until ``seconds`` have passed, when given).
        Payload = 8-byte tag || 8-byte sequence || filler, or, for shreds, batches of
        ``per_batch`` stand-in shreds of ``size`` bytes starting at ``slot``."""
        assert self.gossip is not None
        kind = str(req.get("kind", "txs"))
        count = min(int(req.get("count", 1)), PUBLISH_MANY_MAX)
        size = int(req.get("size", PACKET_DATA_BYTES))
        rate = float(req.get("rate", 0)) or None
        for_s = float(req.get("seconds", 0)) or None  # stop after this long (bench gossip --sustained)
        tag = os.urandom(8)
        t0 = time.monotonic()
        published = 0
        for i in range(count):
            if for_s is not None and time.monotonic() - t0 >= for_s:
                break
            if kind == "shreds":
                per = int(req.get("per_batch", 1))
                slot = int(req.get("slot", 1))
                shreds = tuple(make_standin_shred(slot, i * per + j, size=size) for j in range(per))
                payload = encode(ShredBatch(shreds=shreds))
            else:
                payload = (tag + i.to_bytes(8, "big") + bytes(max(0, size - 16)))[: max(size, 16)]
            await self.gossip.publish(kind, payload)
            published += 1
            if rate:
                delay = t0 + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    await trio.sleep(delay)
            elif i % 16 == 15:
                await trio.lowlevel.checkpoint()
        return {"ok": True, "published": published, "seconds": round(time.monotonic() - t0, 3)}

    # -- main ----------------------------------------------------------------------------
    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Raises JoinError if bootstrap peers were given and none
        could be reached within ``join_timeout_s``."""
        if self.cfg.data_dir:
            self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        async with open_host(
            self.kp, HostConfig(listen=tuple(self.cfg.listen), target_peers=self.cfg.target_peers)
        ) as host:
            self.host = host
            self.addrs = full_addrs(host)
            self.gossip = GossipService(host, self.kp, self.cfg.chain_id,
                                        payload_checks=self.ext.payload_checks() if self.ext else None)
            self.reqresp = ReqRespServer(
                host,
                {
                    PROTO_REPAIR: repair_handler(self.store),
                    PROTO_POL_OPEN: pol_open_handler(lambda _c, _p: None),
                    PROTO_PEERS: self._peers_handler,
                    **(self.ext.reqresp_handlers() if self.ext else {}),
                },
                is_banned=self.gossip.is_banned,
            )
            async with self.gossip.run(), trio.open_nursery() as nursery:
                await nursery.start(self._control_server)
                self._write_node_file()
                if self.cfg.print_status:
                    print(f"listening {' '.join(self.addrs)}", flush=True)
                    print(f"identity {self.kp.address}", flush=True)
                await self.join()
                self._write_node_file()
                for k in TOPIC_KINDS:
                    nursery.start_soon(self._consume, k)
                nursery.start_soon(self._discovery_loop)
                if self.cfg.print_status:
                    nursery.start_soon(self._status_loop)
                if self.ext is not None:
                    nursery.start_soon(self.ext.run, self)
                self.ready.set()
                task_status.started(self)


def control_request(data_dir: Path, req: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
    """Send one control request to the node whose data directory is ``data_dir``
    (blocking; used by ``status``/``peers`` and tests). Raises OSError if none runs."""
    path = data_dir / CONTROL_SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    out = json.loads(buf)
    if not isinstance(out, dict):
        raise ValueError("control response is not an object")
    return out
