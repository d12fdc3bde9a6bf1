"""The validator shell (normative text: spec/node.md): handles, channels and worker
threads around the sans-IO policy of ``core/node_policy.py``, which it extends. It
receives facts (inserted shreds, replay results, votes, the clock), hands them to the
policy and performs the effects it returns (disk, network, threads); it decides nothing.

Heavy work runs in worker threads, one ``CapacityLimiter`` per kind (insert, replay,
build, disk, serve, cleanup, tower) running the ledger's jobs (ledger/jobs.py,
ledger/restore.py, ledger/tower_storage.py) and the slot builder's (node/leader.py); the
policy is only touched by the trio thread.
``ledger_lock`` serialises the ledger steps (insert -> replay -> votes -> decide) of the
services (node/services.py) that share it.
"""

from __future__ import annotations

import collections
import random
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ..core import slots as sl
from ..core.consensus import Vote
from ..core.crypto import Keypair
from ..core.history import LedgerHistory, PurgeLedger, TakeSnapshot
from ..core.leader_policy import slot_duration_ms
from ..core.messages import Genesis
from ..core.node_policy import CastVote, NodePolicy, RootChain, ShellEffect, genesis_args
from ..core.schedule import ScheduleBook
from ..core.vote_program import VoteTx
from ..ledger.blockstore import Blockstore, InsertResult
from ..ledger.jobs import Stored, insert_job, replay_job, save_snapshot_job, store_built_job, write_slot_effect
from ..ledger.replay import SlotResult
from ..ledger.restore import restore_job
from ..ledger.snapshot import make_node_snapshot
from ..ledger.tower_storage import read_tower
from ..net.gossip import Delivery, PayloadCheck, shreds_check
from ..net.messages import ShredPush, ShredPushAck
from ..net.reqresp import ShredStore
from .clock import Clock
from .leader import BuiltSlot
from .port import NetNodePort, NetPort
from .production import HonestProducer, ProducerStrategy, produce
from .repair import PROTO_REPAIR_SLOT, PROTO_SHRED_PUSH, BlockstoreShredStore, slot_repair_handler
from .services import SHRED_QUEUE_LEN, run_services
from .status import control, status, status_line
from .timings import Timings
from .voting import VotingService

if TYPE_CHECKING:  # pragma: no cover
    from .poh_service import PohService

__all__ = ["LedgerHistory", "Validator", "slot_duration_ms"]

BLOCKSTORE_DIR = "blockstore"
TOWER_FILE = "tower.cbor"
INBOX_LEN = 4096
_T = TypeVar("_T")


class Validator(NodePolicy[SlotResult]):
    """The policy (``NodePolicy``) with its handles, channels and effects."""

    #: whether the banks record token balances (core/bank.py ``Bank.token_balances``): set by
    #: the RPC door (node/rpc/server.py ``RpcExtension``), the one reader of them; off, the
    #: SVM runs at its bare speed (spec/svm.md "Performance")
    token_balances: bool = False
    book: ScheduleBook  # always set here (the policy's is optional for its own tests)

    def __init__(self, kp: Keypair, genesis: Genesis, data_dir: Path, *, clock: Clock | None = None,
                 clock_ms: Callable[[], int] | None = None, rng: random.Random | None = None,
                 producer: ProducerStrategy | None = None, offload: bool = True,
                 poh_clock: str = "instant", history: LedgerHistory | None = None) -> None:
        self.genesis, self.data_dir = genesis, data_dir
        self.clock = clock or (Clock.fixed(clock_ms) if clock_ms else Clock.system())
        super().__init__(kp, tower=read_tower(data_dir / TOWER_FILE, kp.pubkey), started_ms=self.clock.wall_ms(),
                         leader_of=lambda s: self.book.leader(s), vote_weights=lambda e: self.book.vote_weights(e),
                         history=history, **genesis_args(genesis))
        self.use_book(ScheduleBook(genesis), self.clock.mono_ms)  # replaced by the restored one in aload
        self.rng = rng or random.Random()
        self.producer: ProducerStrategy = producer or HonestProducer()
        self.bs = Blockstore.open(data_dir / BLOCKSTORE_DIR)
        self.pending_purge: PurgeLedger | None = None  # the newest purge the cleanup service has not begun
        self.root_event = trio.Event()  # set (and replaced) whenever the root advances
        self.port: NetPort | None = None
        self.inbox_send, self.inbox_recv = trio.open_memory_channel[Delivery](INBOX_LEN)
        self.inbox_dropped = 0
        self.shreds_send, self.shreds_recv = trio.open_memory_channel[tuple[list[bytes], str]](SHRED_QUEUE_LEN)
        self.voting = VotingService(data_dir / TOWER_FILE, self._vote_durable, partial(self._thread, "tower"))
        self.ledger_lock = trio.Lock()
        self.limiters = {k: trio.CapacityLimiter(1) for k in ("insert", "replay", "build", "disk", "serve",
                                                                     "cleanup", "tower")}
        self.frozen_event = trio.Event()  # set (and replaced) whenever a slot freezes
        self.timings = Timings()  # worker-thread job durations for /metrics
        self.repair_now = trio.Event()
        self.store = BlockstoreShredStore(self.bs)
        self.loop_stall: collections.deque[float] = collections.deque(maxlen=1000)
        self._replays: list[sl.Replay] = []
        self.offload = offload  # False: heavy work inline on the trio thread (A/B measurement only)
        # "service": slots on the PoH clock (leader_service opens self.poh); "instant" here by
        # default (unit tests, mock clocks); the command line's default is DEFAULT_POH_CLOCK
        self.poh_clock = poh_clock
        self.poh: PohService | None = None

    async def _thread(self, kind: str, fn: Callable[..., _T], *args: Any) -> _T:
        # timed inside the worker (the job itself, not the wait for the kind's limiter):
        # /metrics ambient_op_seconds{op=kind} (node/timings.py)
        job = self.timings.timed(kind, fn)
        if not self.offload:
            return job(*args)
        return await trio.to_thread.run_sync(job, *args, limiter=self.limiters[kind])

    # -- NodeExtension ------------------------------------------------------------------------
    def payload_checks(self) -> dict[str, PayloadCheck]:
        # late-bound: aload replaces the book with the restored one
        return {"shreds": shreds_check(self.leader_of, leader_final=self.leader_final),
                "votes": lambda env: self.check_vote_tx(env.payload, env.origin),
                "txs": lambda env: self.check_tx(env.payload)}

    def shred_store(self) -> ShredStore | None:
        return self.store

    def reqresp_handlers(self) -> dict[str, Any]:
        serve = slot_repair_handler(self.bs)

        async def serve_slot(peer: Any, req: Any) -> Any:  # up to 64 blockstore reads: a worker thread
            return await self._thread("serve", serve, peer, req)

        return {PROTO_REPAIR_SLOT: serve_slot, PROTO_SHRED_PUSH: self.handle_push}

    async def handle_push(self, _peer: Any, req: ShredPush) -> ShredPushAck:
        """Shreds pushed to us directly take the verified insert, then replay."""
        res = await self.ingest_shreds(list(req.shreds))
        self.stats.shreds_in += len(req.shreds)
        return ShredPushAck(nonce=req.nonce, inserted=res.inserted, rejected=len(res.rejected))

    def on_delivery(self, d: Delivery) -> bool:
        if d.kind not in ("shreds", "votes", "txs"):
            return False
        try:
            self.inbox_send.send_nowait(d)
        except trio.WouldBlock:
            self.inbox_dropped += 1  # overload: repair fetches what we drop
        return True

    # -- ledger steps (caller holds ledger_lock, except the public wrappers) ------------------
    def load(self) -> None:
        trio.run(self.aload)

    async def aload(self) -> None:
        """Rebuild state from the blockstore (spec/blockstore.md "Node snapshots and
        restart"): the newest node snapshot (``ledger/restore.py``; genesis without one), then
        replay of the stored slots above it (the policy credits the roots above it as they replay).
        Raises :class:`RestoreError` when the ledger cannot restart."""
        async with self.ledger_lock:
            r = await self._thread("disk", restore_job, self.bs, self.genesis, self.kp.pubkey)
            self.use_book(r.book, self.clock.mono_ms)
            r.result.bank.token_balances = self.token_balances  # every child bank inherits it
            self.perform(self.restart(r.root, r.result, roots_above=r.roots_above, above=r.above,
                                      rooted_count=r.rooted_count, base_parent=r.parent,
                                      now_mono_ms=self.clock.mono_ms(), from_snapshot=r.snapshot is not None))
            await self.replay_ready()
            self.perform(self.restarted(self.clock.mono_ms()))

    async def ingest_shreds(self, packets: list[bytes], *, verified: bool = False) -> InsertResult:
        async with self.ledger_lock:
            res, events = await self._thread("insert", insert_job, self.bs, packets,
                                             self.frozen_leaders(self.clock.wall_ms()), verified)
            self.apply_insert(res, events)
            await self.replay_ready()
            return res

    def apply_insert(self, res: InsertResult, events: Stored) -> None:
        self.stats.shreds_rejected += len(res.rejected)
        self.perform(self.stored(events, [slot for slot, _kind in res.duplicates], self.clock.mono_ms()))

    async def replay_ready(self) -> None:
        """Perform queued Replay effects (parents first: the tracker orders them) with the
        jobs the policy hands out (``NodePolicy.replay_job``)."""
        while self._replays:
            job, effects = self.replay_job(self._replays.pop(0), self.clock.mono_ms())
            self.perform(effects)
            if job is not None:
                out, dup_proof = await self._thread("replay", replay_job, self.bs, self.genesis, job.parent, job.slot,
                                                 job.leader, self.mempool.verified_before)  # verified at admission
                self.perform(self.replay_failed(job.slot, out, self.clock.mono_ms()) if isinstance(out, str)
                             else self.replayed(job.slot, out, dup_proof, self.clock.mono_ms()))

    def perform(self, effects: list[ShellEffect]) -> None:
        """Perform the policy's slot and ledger-history effects, in order."""
        for e in effects:
            if isinstance(e, sl.Replay):
                self._replays.append(e)
            elif isinstance(e, sl.SlotFrozen):
                self.frozen_event.set()
                self.frozen_event = trio.Event()
            elif isinstance(e, sl.MarkDead | sl.Purge | sl.ClearDead):
                write_slot_effect(self.bs, e)
            elif isinstance(e, sl.RepairSlot):
                self.repair_now.set()
            elif isinstance(e, PurgeLedger):
                self.pending_purge = e  # the cleanup service (node/services.py) takes the newest
            else:
                raise AssertionError(f"not a slot effect: {e!r}")

    # the policy's queries and events on this node's clock (tests and services call these)
    def count_vote(self, vote: Vote, now_mono_ms: int | None = None) -> list[ShellEffect]:
        out = super().count_vote(vote, self.clock.mono_ms() if now_mono_ms is None else now_mono_ms)
        self.perform(out)
        return out

    def add_tx(self, raw: bytes, now_mono_ms: int | None = None, *, verified: bool = False) -> bool:
        return super().add_tx(raw, self.clock.mono_ms() if now_mono_ms is None else now_mono_ms, verified=verified)

    def behind(self, now_mono_ms: int | None = None) -> bool:
        return super().behind(self.clock.mono_ms() if now_mono_ms is None else now_mono_ms)

    def isolated(self, now_ms: int | None = None) -> bool:
        return super().isolated(self.clock.wall_ms() if now_ms is None else now_ms)

    async def decide(self) -> None:
        """The policy's decision; effects in order (caller holds the ledger lock). A vote
        goes to the voting service: tower durable, then sent."""
        for eff in self.vote_decision(self.clock.wall_ms(), self.clock.mono_ms()):
            if isinstance(eff, CastVote):
                if not self.voting.submit(eff):
                    self.stats.votes_unsent += 1
            elif isinstance(eff, RootChain):
                await self._on_root(eff)

    async def _vote_durable(self, vt: VoteTx) -> None:
        self.vote_pool.add(vt)  # our own slots carry it from now on
        if self.port is not None:
            await self.port.publish("votes", vt.raw)

    async def _on_root(self, eff: RootChain) -> None:
        await self._thread("disk", self.bs.set_roots, list(eff.chain))
        for e in self.rooted(eff.slot, eff.chain, self.clock.mono_ms()):
            if not isinstance(e, TakeSnapshot):
                self.perform([e])
                continue
            snap = make_node_snapshot(self.genesis.hash(), self.banks[e.slot], self.finality.rooted_count,
                                      self.book.to_state())  # here: it copies the bank and the book
            if (err := await self._thread("disk", save_snapshot_job, self.bs, snap)) is not None:
                print(f"warning: no snapshot at slot {e.slot}: {err}; the older one stays", file=sys.stderr)
            self.snapshot_saved(e.slot, err)
        self.root_event.set()  # the cleanup service (node/services.py) wakes
        self.root_event = trio.Event()

    # -- production (node/production.py) ----------------------------------------------------
    produce = produce

    async def store_built(self, built: BuiltSlot) -> None:
        """Store a slot this node built, then its effects and replays (caller holds the
        ledger lock)."""
        res, events = await self._thread("build", store_built_job, self.bs, built.record, built.packets,
                                         self.frozen_leaders(self.clock.wall_ms()))
        self.perform(self.produced(built.slot, built.parent, built.result, included=built.included,
                                   dropped=built.dropped, included_votes=built.included_votes,
                                   now_ms=self.clock.wall_ms(), now_mono_ms=self.clock.mono_ms()))
        self.apply_insert(res, events)
        await self.replay_ready()

    # -- status (node/status.py) ------------------------------------------------------------------
    status, status_line, control = status, status_line, control

    async def run(self, node: Any) -> None:
        self.port = NetNodePort(node)
        if not self.loaded:
            await self.aload()
        await run_services(self)

    def close(self) -> None:
        self.bs.close()
