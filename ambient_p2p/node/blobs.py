"""Content-addressed blobs: prompts and answers travel off chain by sha256, the chain holds
only the hashes (normative text: spec/blobs.md; the role IPFS plays in the litepaper).

* :class:`BlobStore` (disk, synchronous, thread-safe): one file per blob under
  ``<data dir>/blobs/``, named by the hex sha256 of its bytes, written atomically (temp
  file, fsync, rename, fsync of the directory). Each blob is pinned until a slot
  (``keep_until_slot``; a second put of the same bytes can only extend it) and
  :meth:`BlobStore.prune` deletes the expired ones. Total bytes and blob count are bounded;
  a put beyond either is refused with ``store-full``.
* :class:`BlobService` (trio shell): :meth:`BlobService.fetch` answers from the store, else
  asks connected peers one after another over ``/ambient/blob/1`` (net/reqresp.py), keeps
  only bytes that hash to the request, stores and returns them; it serves inbound requests
  (:meth:`BlobService.handler`), prunes on the chain's slot clock, and answers the control
  commands ``put_blob`` / ``get_blob``.
* :class:`BlobExtension` composes the service onto the networking node (net/node.py
  ``NodeExtension``); node/compose.py stacks it with the validator.

Why files and not a RocksDB column family: blobs must be served by every node, also one
that runs no validator (a requester's or a miner-only node) and so opens no blockstore;
one file per blob of at most 65 KiB needs no compaction, a prune is an unlink, and a torn
write is impossible (rename is atomic) and a corrupted file is detected by its own name
(the sha256 is re-checked on every read).

The rules (size limit, token-blob encoding, retention, answer checks) are pure and live
in ``core/blobs.py``: prompt and answer blobs are token-id sequences in the encoding whose
sha256 *is* ``core.pol.tokens_hash`` (``core.blobs.token_blob``), so the query's
``prompt_hash`` and the result's ``output_hash`` are the blobs' keys and a peer verifies
them without a tokenizer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import os
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..core.blobs import (
    BLOB_RETENTION_SLOTS,
    MAX_BLOB_BYTES,
    U64_LIMIT,
    BlobError,
    answer_rejection,
    check_hash,
    check_slot,
)
from ..core.crypto import sha256
from ..ledger.durable import write_durable
from ..net.messages import BlobRequest, BlobResponse
from ..net.node import ExtensionBase
from ..net.reqresp import PROTO_BLOB, ReqRespError
from .port import NetNodePort, NetPort

if TYPE_CHECKING:  # pragma: no cover
    from ..net.node import NetNode

#: The store's directory inside the node's data directory.
BLOBS_DIR = "blobs"
#: Default bounds of one node's store: 256 MiB (about 4,000 blobs of the largest size).
DEFAULT_BLOB_STORE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_BLOBS = 65_536
#: File layout: magic (8 bytes) || keep_until_slot u64 LE || the blob's bytes.
BLOB_FILE_MAGIC = b"ablob1\x00\x00"
BLOB_FILE_HEADER_BYTES = len(BLOB_FILE_MAGIC) + 8
#: A fetch asks at most this many peers, one after another (each within its own bound).
BLOB_FETCH_MAX_PEERS = 16
#: One peer's bound inside a fetch (a 65 KiB answer takes milliseconds on a live link).
BLOB_REQUEST_TIMEOUT_S = 3.0
DEFAULT_FETCH_TIMEOUT_S = 10.0
#: Largest ``timeout_s`` the ``get_blob`` control command accepts.
MAX_FETCH_TIMEOUT_S = 120.0
#: Pause between two rounds over the connected peers inside one fetch.
BLOB_FETCH_RETRY_S = 0.5
#: How often the service prunes expired blobs.
BLOB_PRUNE_INTERVAL_S = 10.0
#: Worker threads touching the store at once (reads of served blobs, fsynced writes).
BLOB_DISK_THREADS = 2


# -- the store --------------------------------------------------------------------------------
@dataclass
class _Entry:
    size: int
    keep_until_slot: int


class BlobStore:
    """Blobs on disk under ``root`` (see the module docstring). Every method may be called
    from any thread; the index is guarded by one lock."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_BLOB_STORE_BYTES,
                 max_blobs: int = DEFAULT_MAX_BLOBS) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_blobs = max_blobs
        self._lock = threading.Lock()
        self._index: dict[bytes, _Entry] = {}
        self._bytes = 0
        self.corrupt = 0  # files found damaged (at open or on read) and deleted
        self.pruned = 0
        self.root.mkdir(parents=True, exist_ok=True)
        self._load()

    def _path(self, h: bytes) -> Path:
        return self.root / f"{h.hex()}.blob"

    def _load(self) -> None:
        """Index the directory: leftover temp files go; a file whose name is not a sha256
        or whose header is wrong goes and counts as corrupt (its bytes are re-hashed on
        read, so a flipped data bit is caught there)."""
        for p in self.root.iterdir():
            if p.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()
                continue
            if not p.name.endswith(".blob"):
                continue
            try:
                h = bytes.fromhex(p.name[: -len(".blob")])
                with p.open("rb") as f:
                    head = f.read(BLOB_FILE_HEADER_BYTES)
                    size = os.fstat(f.fileno()).st_size - BLOB_FILE_HEADER_BYTES
            except (ValueError, OSError):
                h, head, size = b"", b"", -1
            if len(h) != 32 or len(head) != BLOB_FILE_HEADER_BYTES or not head.startswith(BLOB_FILE_MAGIC) \
                    or not 0 <= size <= MAX_BLOB_BYTES:
                self.corrupt += 1
                with contextlib.suppress(OSError):
                    p.unlink()
                continue
            self._index[h] = _Entry(size, int.from_bytes(head[len(BLOB_FILE_MAGIC) :], "little"))
            self._bytes += size

    def _write(self, h: bytes, data: bytes, keep_until_slot: int) -> None:
        """Atomically (re)write one blob file (ledger/durable.py; a random temporary name,
        since two threads may write the same blob)."""
        write_durable(self._path(h), BLOB_FILE_MAGIC + keep_until_slot.to_bytes(8, "little") + data, unique_tmp=True)

    def put(self, data: bytes, keep_until_slot: int) -> bytes:
        """Store ``data`` pinned until ``keep_until_slot`` (inclusive); return its sha256.
        Storing bytes already held keeps the later of the two slots. Raises
        :class:`BlobError` ``too-large``, ``store-full`` or ``bad-slot``."""
        check_slot(keep_until_slot)
        data = bytes(data)
        if len(data) > MAX_BLOB_BYTES:
            raise BlobError("too-large", f"blob of {len(data)} bytes > MAX_BLOB_BYTES {MAX_BLOB_BYTES}")
        h = sha256(data)
        with self._lock:
            e = self._index.get(h)
            if e is not None:
                if keep_until_slot > e.keep_until_slot:
                    self._write(h, data, keep_until_slot)
                    e.keep_until_slot = keep_until_slot
                return h
            if len(self._index) >= self.max_blobs:
                raise BlobError("store-full", f"{len(self._index)} blobs held, limit {self.max_blobs}")
            if self._bytes + len(data) > self.max_bytes:
                raise BlobError("store-full", f"{self._bytes} + {len(data)} bytes > limit {self.max_bytes}")
            self._write(h, data, keep_until_slot)
            self._index[h] = _Entry(len(data), keep_until_slot)
            self._bytes += len(data)
        return h

    def pin(self, h: bytes, keep_until_slot: int) -> bool:
        """Extend a held blob's retention to ``keep_until_slot`` (never shortens it);
        False if the blob is not held."""
        check_slot(keep_until_slot)
        data = self.get(h)
        if data is None:
            return False
        try:
            self.put(data, keep_until_slot)
        except BlobError:  # store-full: only when pruned in between; then it is gone
            return False
        return True

    def get(self, h: bytes) -> bytes | None:
        """The blob's bytes, or None. A file that no longer hashes to its name is deleted
        (counted in ``corrupt``) and reads as absent."""
        h = check_hash(h)
        with self._lock:
            if h not in self._index:
                return None
        try:
            raw = self._path(h).read_bytes()
        except OSError:  # pruned in between
            return None
        data = raw[BLOB_FILE_HEADER_BYTES:]
        if raw.startswith(BLOB_FILE_MAGIC) and len(raw) >= BLOB_FILE_HEADER_BYTES and sha256(data) == h:
            return data
        with self._lock:
            e = self._index.pop(h, None)
            if e is not None:
                self._bytes -= e.size
                self.corrupt += 1
                with contextlib.suppress(OSError):
                    self._path(h).unlink()
        return None

    def has(self, h: bytes) -> bool:
        with self._lock:
            return check_hash(h) in self._index

    def keep_until(self, h: bytes) -> int | None:
        """The slot ``h`` is pinned until, or None if not held."""
        with self._lock:
            e = self._index.get(check_hash(h))
            return None if e is None else e.keep_until_slot

    def prune(self, now_slot: int) -> int:
        """Delete every blob pinned until a slot before ``now_slot``; return how many."""
        with self._lock:
            gone = [h for h, e in self._index.items() if e.keep_until_slot < now_slot]
            for h in gone:
                self._bytes -= self._index.pop(h).size
                with contextlib.suppress(FileNotFoundError):
                    self._path(h).unlink()
            self.pruned += len(gone)
        return len(gone)

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._bytes


# -- the service -------------------------------------------------------------------------------
class BlobService:
    """Blobs on the network (see the module docstring). ``slot_now`` gives the chain's
    current slot (None: unknown, then nothing is pruned and fetched copies are pinned for
    :data:`BLOB_RETENTION_SLOTS` from slot 0, i.e. until the first prune that knows the slot)."""

    def __init__(self, store: BlobStore, *, slot_now: Callable[[], int | None] | None = None,
                 rng: random.Random | None = None, port: NetPort | None = None) -> None:
        self.store = store
        self.slot_now = slot_now or (lambda: None)
        self.rng = rng or random.Random()
        self.port = port
        self.served = 0  # inbound requests answered with the bytes
        self.served_missing = 0  # inbound requests for a blob we do not hold
        self.fetched = 0  # blobs fetched from a peer and verified
        self.local_hits = 0  # fetches answered by the store
        self.fetch_failed = 0  # fetches no peer could answer in time
        self.not_cached = 0  # fetched and returned, but the store was full
        self.rejected: Counter[str] = Counter()  # peer answers refused, by reason
        self.rejected_peers: Counter[str] = Counter()  # ... by peer
        self.request_errors: Counter[str] = Counter()  # failed requests, by ReqRespError code
        self._disk = trio.CapacityLimiter(BLOB_DISK_THREADS)
        self._inflight: dict[bytes, trio.Event] = {}
        self._ready = trio.Event()  # set once there is a network to ask
        if port is not None:
            self._ready.set()

    async def _thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._disk)

    async def put(self, data: bytes, keep_until_slot: int) -> bytes:
        """Store ``data`` (a worker thread: the write is fsynced); return its sha256. A
        full store is pruned at the current slot (if known) and the put tried once more.
        Raises :class:`BlobError` (``too-large``, ``store-full``, ``bad-slot``)."""
        try:
            h: bytes = await self._thread(self.store.put, bytes(data), keep_until_slot)
        except BlobError as exc:
            now = self.slot_now()
            if exc.reason != "store-full" or now is None or not await self._thread(self.store.prune, now):
                raise
            h = await self._thread(self.store.put, bytes(data), keep_until_slot)
        return h

    async def get_local(self, h: bytes) -> bytes | None:
        data: bytes | None = await self._thread(self.store.get, check_hash(h))
        return data

    def _cache_slot(self) -> int:
        now = self.slot_now()
        return min(U64_LIMIT - 1, (now or 0) + BLOB_RETENTION_SLOTS)

    async def fetch(self, h: bytes, *, timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
                    keep_until_slot: int | None = None) -> bytes | None:
        """The blob named ``h``: from the store, else from the first connected peer whose
        answer hashes to ``h`` (peers asked one after another, random order, each bounded by
        :data:`BLOB_REQUEST_TIMEOUT_S`; rounds repeat until ``timeout_s``, see
        :meth:`_fetch_remote`); that copy is stored, pinned until ``keep_until_slot``
        (default: the current slot + :data:`BLOB_RETENTION_SLOTS`). None if nobody had it
        in time (a miss takes the whole ``timeout_s``). An answer
        that does not hash to ``h`` is dropped and counted in ``rejected``; nothing of it
        is stored. Concurrent fetches of one hash share one network search."""
        h = check_hash(h)
        if keep_until_slot is not None:
            check_slot(keep_until_slot)
        result: bytes | None = None
        with trio.move_on_after(max(0.0, timeout_s)):
            while (ev := self._inflight.get(h)) is not None:
                await ev.wait()
            self._inflight[h] = ev = trio.Event()  # claimed before the next checkpoint
            try:
                result = await self.get_local(h)
                if result is not None:
                    self.local_hits += 1
                    return result
                result = await self._fetch_remote(h, trio.current_time() + timeout_s, keep_until_slot)
            finally:
                del self._inflight[h]
                ev.set()
        if result is None:
            self.fetch_failed += 1
        return result

    async def _fetch_remote(self, h: bytes, deadline: float, keep_until_slot: int | None) -> bytes | None:
        """Rounds over the connected peers until ``deadline`` (the caller's cancel scope
        enforces it too): each round asks up to :data:`BLOB_FETCH_MAX_PEERS` of them in
        random order; a peer that sent wrong bytes is not asked again in this fetch; between
        rounds :data:`BLOB_FETCH_RETRY_S` (a peer holding the blob may connect later)."""
        await self._ready.wait()  # the node's network (run) may still be joining
        assert self.port is not None
        liars: set[Any] = set()
        while True:
            peers = [p for p in self.port.peers() if p not in liars]
            self.rng.shuffle(peers)
            for peer in peers[:BLOB_FETCH_MAX_PEERS]:
                left = deadline - trio.current_time()
                if left <= 0:
                    return None
                req = BlobRequest(nonce=self.rng.getrandbits(32), sha256=h)
                try:
                    resp = await self.port.request(peer, PROTO_BLOB, req, min(left, BLOB_REQUEST_TIMEOUT_S))
                except ReqRespError as exc:
                    self.request_errors[exc.code] += 1
                    continue
                if resp.data is None:  # a clean "I do not hold it"
                    self.request_errors["not-found"] += 1
                    continue
                reason = answer_rejection(h, resp.sha256, resp.data)
                if reason is not None:
                    self.rejected[reason] += 1
                    self.rejected_peers[self.port.peer_label(peer)] += 1
                    liars.add(peer)
                    continue
                data: bytes = resp.data
                assert data is not None  # answer_rejection refuses a missing one
                try:
                    await self.put(data, self._cache_slot() if keep_until_slot is None else keep_until_slot)
                except BlobError:  # store-full: the caller still gets the verified bytes
                    self.not_cached += 1
                self.fetched += 1
                return data
            await trio.sleep(BLOB_FETCH_RETRY_S)

    async def handler(self, _peer: Any, req: BlobRequest) -> BlobResponse:
        """Serve ``/ambient/blob/1``: the bytes if held, else a response without ``data``."""
        data = await self.get_local(req.sha256)
        if data is None:
            self.served_missing += 1
        else:
            self.served += 1
        return BlobResponse(nonce=req.nonce, sha256=req.sha256, data=data)

    def status(self) -> dict[str, Any]:
        return {
            "blobs": len(self.store), "bytes": self.store.total_bytes, "max_bytes": self.store.max_bytes,
            "served": self.served, "served_missing": self.served_missing, "fetched": self.fetched,
            "local_hits": self.local_hits, "fetch_failed": self.fetch_failed, "not_cached": self.not_cached,
            "rejected": dict(self.rejected), "rejected_peers": dict(self.rejected_peers),
            "request_errors": dict(self.request_errors), "pruned": self.store.pruned, "corrupt": self.store.corrupt,
        }

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        """``put_blob`` {data_b64, keep_until_slot} -> {ok, sha256, bytes};
        ``get_blob`` {sha256 (hex), timeout_s?, keep_until_slot?} -> {ok, data_b64} or
        {ok: false, error, code}; None for other commands."""
        cmd = req.get("cmd")
        if cmd not in ("put_blob", "get_blob"):
            return None
        try:
            if cmd == "put_blob":
                data = _b64(req.get("data_b64"))
                slot = req.get("keep_until_slot")
                if not isinstance(slot, int) or isinstance(slot, bool):
                    raise BlobError("bad-slot", "keep_until_slot (an integer slot) is required")
                h = await self.put(data, slot)
                return {"ok": True, "sha256": h.hex(), "bytes": len(data)}
            h = _hex_hash(req.get("sha256"))
            timeout = req.get("timeout_s", DEFAULT_FETCH_TIMEOUT_S)
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) \
                    or not 0 < timeout <= MAX_FETCH_TIMEOUT_S:
                raise BlobError("bad-request", f"timeout_s must be in (0, {MAX_FETCH_TIMEOUT_S:g}]")
            keep = req.get("keep_until_slot")
            if keep is not None:
                check_slot(keep)
            got = await self.fetch(h, timeout_s=float(timeout), keep_until_slot=keep)
        except BlobError as exc:
            return {"ok": False, "error": str(exc), "code": exc.reason}
        if got is None:
            return {"ok": False, "error": f"not-found: no peer served blob {h.hex()} within {timeout:g}s",
                    "code": "not-found"}
        return {"ok": True, "sha256": h.hex(), "data_b64": base64.b64encode(got).decode()}

    async def run(self, node: NetNode | None = None) -> None:
        """Serve with ``node``'s network (if given) and prune expired blobs every
        :data:`BLOB_PRUNE_INTERVAL_S` while the chain's slot is known."""
        if node is not None:
            self.port = NetNodePort(node)
        if self.port is not None:
            self._ready.set()
        while True:
            now = self.slot_now()
            if now is not None:
                await self._thread(self.store.prune, now)
            await trio.sleep(BLOB_PRUNE_INTERVAL_S)


def _b64(v: Any) -> bytes:
    if not isinstance(v, str):
        raise BlobError("bad-request", "data_b64 (base64 text) is required")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BlobError("bad-request", f"data_b64 is not base64: {exc}") from None


def _hex_hash(v: Any) -> bytes:
    try:
        h = bytes.fromhex(v) if isinstance(v, str) else b""
    except ValueError:
        h = b""
    if len(h) != 32:
        raise BlobError("bad-hash", "sha256 must be 64 hex digits")
    return h


class BlobExtension(ExtensionBase):
    """The blob service as a networking-node extension (net/node.py ``NodeExtension``):
    the ``/ambient/blob/1`` handler, the two control commands, ``status()["blobs"]``."""

    def __init__(self, service: BlobService) -> None:
        self.service = service

    def reqresp_handlers(self) -> dict[str, Any]:
        return {PROTO_BLOB: self.service.handler}

    def status(self) -> dict[str, Any]:
        return {"blobs": self.service.status()}

    def status_line(self) -> str:
        return f"blobs={len(self.service.store)}"

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        return await self.service.control(req)

    async def run(self, node: NetNode) -> None:
        await self.service.run(node)


def genesis_slot_clock(creation_time_s: int, slot_ms: float,
                       wall_ms: Callable[[], int] | None = None) -> Callable[[], int | None]:
    """The chain's current slot from its genesis time and slot length (the validator's
    ``slot_at``), for a node that runs no validator."""
    import time

    clock = wall_ms or (lambda: int(time.time() * 1000))
    return lambda: max(0, int((clock() - creation_time_s * 1000) // slot_ms))
