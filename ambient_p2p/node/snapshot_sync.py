"""Snapshot sync (spec/join.md "Snapshot sync"): a validator serves its rooted node
snapshots (the encoded bytes ledger/snapshot.py writes, opaque here) in chunks with a signed
attestation; a newcomer downloads one that attesters holding >= 2/3 of the LStake it can
verify agree on, from several peers in parallel, checks every chunk and the whole, and puts
it in its blockstore, so the validator restarts from it (ledger/restore.py) and repairs and
replays only the slots above it.

Prior art: agave gossips ``SnapshotHashes`` (slot, hash) signed by each validator and a
joining node downloads only a snapshot whose hash its ``--known-validator`` set advertises
(``validator/src/bootstrap.rs``); here the known set is the genesis LStake, then, on the
downloaded bytes, the LStake of the snapshot's own epoch (spec/join.md "Trust rule"); the
threshold is Tower BFT's 2/3.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..core import codec
from ..core.crypto import Keypair, sha256
from ..core.join import (
    ATTESTATION_PURPOSE,
    MAX_SNAPSHOT_CHUNKS,
    SNAPSHOT_CHUNK_BYTES,
    Attestation,
    JoinProgress,
    TrustedSnapshot,
    attestation_signing_bytes,
    chunk_hashes,
    chunk_problem,
    epoch_stake_problem,
    join_phase_line,
    ranked_snapshots,
)
from ..core.messages import Genesis
from ..net.messages import (
    MAX_SNAPSHOT_OFFERS,
    PeersRequest,
    SnapshotAttestation,
    SnapshotChunk,
    SnapshotChunkRequest,
    SnapshotOffers,
    SnapshotOffersRequest,
)
from ..net.node import ExtensionBase
from ..net.reqresp import (
    PEERS,
    PROTO_SNAPSHOT_CHUNK,
    PROTO_SNAPSHOT_OFFERS,
    SNAPSHOT_CHUNK,
    SNAPSHOT_OFFERS,
    ReqRespError,
    request,
)

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.peer.id import ID

    from ..ledger.blockstore import Blockstore

#: Peers a newcomer asks for offers (the bootstrap and the peers it names).
MAX_OFFER_PEERS = 16
#: Chunk requests in flight per peer.
CHUNKS_IN_FLIGHT_PER_PEER = 2
#: Tries of one chunk (each from another peer where there is one) before the sync gives up.
MAX_CHUNK_TRIES = 6
#: Seconds one chunk request may take.
CHUNK_TIMEOUT_S = 10.0
#: Claims (best first) a newcomer downloads before it gives up on snapshots: one failing the
#: epoch check (spec/join.md "Trust rule", step 2) moves on to the next.
MAX_CLAIMS_TRIED = 3
#: Test-harness faults a serving node can be started with (hidden ``--snapshot-fault``).
FAULTS = ("corrupt-chunk", "false-bank-hash")


def to_core(a: SnapshotAttestation) -> Attestation:
    return Attestation(a.identity, a.genesis_hash, a.slot, a.bank_hash, a.snapshot_hash, a.size, a.chunk_bytes,
                       tuple(a.chunk_hashes), a.signature)


def to_wire(a: Attestation) -> SnapshotAttestation:
    return SnapshotAttestation(a.identity, a.genesis_hash, a.slot, a.bank_hash, a.snapshot_hash, a.size,
                               a.chunk_bytes, a.chunk_hashes, a.signature)


def attest(kp: Keypair, genesis_hash: bytes, slot: int, bank_hash: bytes, raw: bytes,
           chunk_bytes: int = SNAPSHOT_CHUNK_BYTES) -> Attestation:
    """The signed attestation of the encoded node snapshot ``raw`` at ``slot``."""
    a = Attestation(kp.pubkey, genesis_hash, slot, bank_hash, sha256(raw), len(raw), chunk_bytes,
                    chunk_hashes(raw, chunk_bytes), b"")
    return Attestation(a.identity, a.genesis_hash, a.slot, a.bank_hash, a.snapshot_hash, a.size, a.chunk_bytes,
                       a.chunk_hashes, kp.sign(ATTESTATION_PURPOSE, attestation_signing_bytes(a)))


class SnapshotServer(ExtensionBase):
    """Serves the validator's rooted node snapshots (a ``NodeExtension``)."""

    def __init__(self, bs: Blockstore, kp: Keypair, genesis_hash: bytes, fault: str | None = None,
                 chunk_bytes: int = SNAPSHOT_CHUNK_BYTES) -> None:
        self.bs = bs
        self.chunk_bytes = chunk_bytes
        self.kp = kp
        self.genesis_hash = genesis_hash
        self.fault = fault
        self._cache: dict[int, tuple[bytes, Attestation]] = {}
        self.chunks_served = 0

    def _offers(self) -> list[tuple[bytes, Attestation]]:
        from ..ledger.snapshot import NodeSnapshot

        slots = self.bs.node_snapshot_slots()[-MAX_SNAPSHOT_OFFERS:]
        for s in slots:
            if s in self._cache:
                continue
            raw = self.bs.node_snapshot_raw(s)
            if raw is None:
                continue
            try:
                snap = codec.decode(raw, expected=NodeSnapshot)
            except codec.DecodeError:
                continue  # a version this node no longer speaks: not served
            bank_hash = snap.bank.bank_hash
            if self.fault == "false-bank-hash":
                bank_hash = sha256(b"not the bank hash" + bank_hash)
            # a snapshot longer than MAX_SNAPSHOT_CHUNKS chunks of the configured size gets larger chunks
            size = max(self.chunk_bytes, -(-len(raw) // MAX_SNAPSHOT_CHUNKS))
            if size > SNAPSHOT_CHUNK_BYTES:
                continue  # over MAX_SNAPSHOT_BYTES: no newcomer would take it
            self._cache[s] = (raw, attest(self.kp, self.genesis_hash, s, bank_hash, raw, size))
        for s in list(self._cache):
            if s not in slots:
                del self._cache[s]
        return [self._cache[s] for s in sorted(self._cache, reverse=True)]

    def offers_handler(self, _peer: ID, req: SnapshotOffersRequest) -> SnapshotOffers:
        return SnapshotOffers(nonce=req.nonce, offers=tuple(to_wire(a) for _raw, a in self._offers()))

    def chunk_handler(self, _peer: ID, req: SnapshotChunkRequest) -> SnapshotChunk:
        for raw, a in self._cache.values():
            if a.snapshot_hash == req.snapshot_hash:
                if req.index >= len(a.chunk_hashes):
                    raise ReqRespError("not-found", f"chunk {req.index} of {len(a.chunk_hashes)}")
                data = raw[req.index * a.chunk_bytes:(req.index + 1) * a.chunk_bytes]
                if self.fault == "corrupt-chunk":
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.chunks_served += 1
                return SnapshotChunk(nonce=req.nonce, index=req.index, data=data)
        raise ReqRespError("not-found", "no such snapshot (ask for offers again)")

    def reqresp_handlers(self) -> dict[str, Any]:
        return {PROTO_SNAPSHOT_OFFERS: self.offers_handler, PROTO_SNAPSHOT_CHUNK: self.chunk_handler}

    def status(self) -> dict[str, Any]:
        return {"snapshot_chunks_served": self.chunks_served}


# ---------------------------------------------------------------------------------------
# The newcomer's side
# ---------------------------------------------------------------------------------------
class SnapshotSyncError(Exception):
    """The download failed (every server of the trusted snapshot misbehaved or vanished)."""


@dataclass
class SyncReport:
    """What the sync did (printed, kept in ``status()["join"]`` and used by the tests)."""

    slot: int | None = None
    size: int = 0
    seconds: float = 0.0
    attested_stake: int = 0
    total_stake: int = 0
    offers_refused: dict[str, int] = field(default_factory=dict)
    #: servers dropped for a bad chunk or a failed request, by identity (hex) -> reason
    avoided: dict[str, str] = field(default_factory=dict)
    chunks_by_server: dict[str, int] = field(default_factory=dict)
    note: str = ""


ChunkFetch = Callable[[bytes, int], Awaitable[bytes]]


async def download(trusted: TrustedSnapshot, fetch: ChunkFetch, report: SyncReport,
                   progress: Callable[[int, int], None] | None = None, rng: random.Random | None = None) -> bytes:
    """All chunks of the trusted snapshot, spread over its servers in parallel. ``fetch``
    (server identity, chunk index) -> bytes; a server whose chunk fails the attested hash, or
    whose request fails, is avoided from then on and the chunk goes to another server. The
    whole is checked against the attested snapshot hash."""
    a = trusted.attestation
    rng = rng or random.Random()
    n = len(a.chunk_hashes)
    chunks: list[bytes | None] = [None] * n
    good = list(trusted.servers)
    rng.shuffle(good)
    todo = list(range(n))
    tries = [0] * n
    done = {"bytes": 0}

    async def worker(server: bytes) -> None:
        while todo and server in good:
            index = todo.pop(0)
            tries[index] += 1
            try:
                data = await fetch(server, index)
                why = chunk_problem(a, index, data)
            except ReqRespError as exc:
                why = f"request-failed: {exc.code}"
            if why is None:
                chunks[index] = data
                report.chunks_by_server[server.hex()] = report.chunks_by_server.get(server.hex(), 0) + 1
                done["bytes"] += len(data)
                if progress is not None:
                    progress(done["bytes"], a.size)
                continue
            report.avoided[server.hex()] = why
            if server in good:
                good.remove(server)
            if tries[index] < MAX_CHUNK_TRIES:
                todo.append(index)
            return

    while any(c is None for c in chunks):
        if not good:
            raise SnapshotSyncError(f"every server of the snapshot at slot {a.slot} failed ({report.avoided})")
        if not todo:
            raise SnapshotSyncError(f"chunks of the snapshot at slot {a.slot} failed {MAX_CHUNK_TRIES} times")
        async with trio.open_nursery() as nursery:
            for server in list(good):
                for _ in range(CHUNKS_IN_FLIGHT_PER_PEER):
                    nursery.start_soon(worker, server)
    raw = b"".join(c for c in chunks if c is not None)
    if sha256(raw) != a.snapshot_hash:  # cannot happen when every chunk matched; checked anyway
        raise SnapshotSyncError("the assembled snapshot does not hash to the attested snapshot hash")
    return raw


def check_snapshot(raw: bytes, trusted: TrustedSnapshot, genesis: Genesis) -> Any:
    """Decode the downloaded node snapshot strictly and check it is what was attested."""
    from ..ledger.snapshot import NodeSnapshot

    a = trusted.attestation
    snap = codec.decode(raw, expected=NodeSnapshot)
    if snap.slot != a.slot or snap.bank.bank_hash != a.bank_hash or snap.genesis_hash != genesis.hash():
        raise SnapshotSyncError("the snapshot's slot, bank hash or chain is not the attested one")
    return snap


def snapshot_epoch_weights(snap: Any, genesis: Genesis) -> dict[bytes, int]:
    """The LStake that weighs the votes of the epoch of node snapshot ``snap``'s slot, as
    the snapshot's own schedule book records it (spec/join.md "Trust rule", step 2): the
    weights the node votes and schedules leaders by once it installs it (core/schedule.py;
    genesis LStake for epochs 0 and 1); empty when the book cannot give them."""
    from ..core.lstake import LStakeError, epoch_of
    from ..core.schedule import ScheduleBook

    book = ScheduleBook.from_state(genesis, snap.schedule)
    try:
        w = book.vote_weights(epoch_of(snap.slot, genesis.epoch.slots_per_epoch), (), extends=True)
    except LStakeError:
        return {}
    return dict(w or {})


def install_snapshot(data_dir: Path, raw: bytes, slot: int) -> None:
    """Put the node snapshot in a new blockstore with its slot as the root: the validator's
    start (ledger/restore.py) restarts from it and repairs the slots above."""
    from ..ledger.blockstore import Blockstore
    from .validator import BLOCKSTORE_DIR

    bs = Blockstore.open(data_dir / BLOCKSTORE_DIR)
    try:
        bs.put_node_snapshot(slot, raw)
        bs.set_roots([slot])
    finally:
        bs.close()


def genesis_stakes(genesis: Genesis) -> dict[bytes, int]:
    """The LStake a newcomer can verify on its own: genesis's bootstrap LStake."""
    out: dict[bytes, int] = {}
    for n in genesis.bootstrap_nodes:
        out[n.identity] = out.get(n.identity, 0) + n.lstake
    return out


async def sync_snapshot(bootstrap: Sequence[str], genesis: Genesis, data_dir: Path, timeout_s: float,
                        say: Callable[[str], None]) -> SyncReport:
    """The newcomer's snapshot phase, with its own short-lived host: ask the bootstrap and
    the peers it names for offers, choose by the trust rule, download, check, install.
    Returns what happened (``slot`` None: no trusted snapshot, the node repairs from genesis)."""
    from ..net.host import HostConfig, open_host, parse_peer_multiaddr, pubkey_of_peer_id

    report = SyncReport()
    rng = random.Random()
    kp = Keypair.generate()
    async with open_host(kp, HostConfig(listen=("/ip4/127.0.0.1/tcp/0",), target_peers=MAX_OFFER_PEERS)) as host:
        addrs = list(bootstrap)
        peers: dict[bytes, Any] = {}  # identity -> peer id
        offers: list[Attestation] = []
        offered_by: dict[bytes, set[bytes]] = {}  # snapshot hash -> identities that offered it

        async def ask(addr: str) -> None:
            try:
                info = parse_peer_multiaddr(addr)
            except Exception:  # noqa: BLE001 - a malformed address from a peer: skip it
                return
            ident = pubkey_of_peer_id(info.peer_id)
            if ident is None or ident in peers:
                return
            with trio.move_on_after(5.0):
                try:
                    await host.connect(info)
                except Exception:  # noqa: BLE001 - unreachable: skip it
                    return
            if info.peer_id not in host.get_network().connections:
                return
            peers[ident] = info.peer_id
            try:
                if addr in bootstrap:
                    more = await request(host, info.peer_id, PEERS, PeersRequest(nonce=rng.getrandbits(32)))
                    addrs.extend(a for a in more.addrs if a not in addrs)
                got = await request(host, info.peer_id, SNAPSHOT_OFFERS,
                                    SnapshotOffersRequest(nonce=rng.getrandbits(32)))
            except ReqRespError:
                return
            for w in got.offers:
                c = to_core(w)
                if c.identity != ident:  # a node offers only what it serves itself
                    report.offers_refused["not-the-server"] = report.offers_refused.get("not-the-server", 0) + 1
                    continue
                offers.append(c)
                offered_by.setdefault(c.snapshot_hash, set()).add(ident)

        with trio.move_on_after(timeout_s):
            for addr in list(addrs):
                await ask(addr)
            async with trio.open_nursery() as nursery:
                for addr in addrs[len(bootstrap):][:MAX_OFFER_PEERS]:
                    nursery.start_soon(ask, addr)
        ranked, refused = ranked_snapshots(offers, genesis_stakes(genesis), genesis.hash())
        for k, v in refused.items():
            report.offers_refused[k] = report.offers_refused.get(k, 0) + v
        if not ranked:
            report.note = (f"no snapshot attested by 2/3 of the genesis LStake among {len(offers)} offer(s) "
                           f"from {len(peers)} peer(s)")
            return report
        t0 = time.monotonic()
        last = {"t": 0.0}

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last["t"] >= 0.5 or done == total:
                last["t"] = now
                say(join_phase_line(JoinProgress("snapshot", bytes_done=done, bytes_total=total,
                                                 elapsed_ms=max(1, int((now - t0) * 1000)))))

        chosen: tuple[Attestation, bytes] | None = None
        for claim in ranked[:MAX_CLAIMS_TRIED]:
            a = claim.attestation
            trusted = TrustedSnapshot(a, claim.attested_stake, claim.total_stake,
                                      tuple(i for i in claim.servers if i in offered_by.get(a.snapshot_hash, set())))
            report.slot, report.size = a.slot, a.size
            report.attested_stake, report.total_stake = trusted.attested_stake, trusted.total_stake

            async def fetch(server: bytes, index: int, a: Attestation = a) -> bytes:
                resp = await request(host, peers[server], SNAPSHOT_CHUNK,
                                     SnapshotChunkRequest(nonce=rng.getrandbits(32), snapshot_hash=a.snapshot_hash,
                                                          index=index), timeout=CHUNK_TIMEOUT_S)
                if resp.index != index:
                    raise ReqRespError("bad-response", f"chunk {resp.index} for {index}")
                return bytes(resp.data)

            say(f"join: snapshot slot {a.slot} bank {a.bank_hash.hex()[:16]} attested by "
                f"{trusted.attested_stake}/{trusted.total_stake} LStake, {len(trusted.servers)} server(s)")
            raw = await download(trusted, fetch, report, progress, rng)
            snap = check_snapshot(raw, trusted, genesis)
            why = epoch_stake_problem(claim.servers, snapshot_epoch_weights(snap, genesis))
            if why is None:
                chosen = (a, raw)
                break
            report.offers_refused[why] = report.offers_refused.get(why, 0) + 1
            say(f"join: snapshot of slot {a.slot} refused ({why}): its attesters hold less than 2/3 of the "
                "LStake its own epoch is weighed by")
        report.seconds = time.monotonic() - t0
        if chosen is None:
            report.slot = None
            report.note = (f"no snapshot whose attesters hold 2/3 of both the genesis LStake and its own epoch's "
                           f"LStake among {len(ranked)} claim(s)")
            return report
        a, raw = chosen
    install_snapshot(data_dir, raw, a.slot)
    return report


def sync_snapshot_blocking(bootstrap: Sequence[str], genesis: Genesis, data_dir: Path, timeout_s: float,
                           say: Callable[[str], None]) -> SyncReport:
    out: list[SyncReport] = []

    async def main() -> None:
        out.append(await sync_snapshot(bootstrap, genesis, data_dir, timeout_s, say))

    try:
        trio.run(main)
    except BaseExceptionGroup as eg:
        leaf = _leaf(eg)
        if leaf is not None:
            raise leaf from None
        raise
    return out[0]


def _leaf(eg: BaseExceptionGroup) -> Exception | None:
    for e in eg.exceptions:
        if isinstance(e, SnapshotSyncError | codec.DecodeError):
            return e
        if isinstance(e, BaseExceptionGroup):
            f = _leaf(e)
            if f is not None:
                return f
    return None
