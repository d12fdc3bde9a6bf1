"""The validator shell (normative text: spec/node.md): handles, channels and the policy
machines of ``core/`` (slots, duplicates, readiness, pools, finality, consensus). It
receives facts (inserted shreds, replay results, votes, the clock), hands them to the
machines and performs the effects they return; it decides nothing itself.

Heavy work runs in worker threads, one ``CapacityLimiter`` per kind (insert, replay,
build, disk), and returns results that the trio thread applies: the machines are only
ever touched by the trio thread. ``ledger_lock`` serialises the ledger steps (insert ->
replay -> votes -> decide) of the services (node/services.py) that share this state.
"""

from __future__ import annotations

import collections
import random
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from ..core import duplicates as dup
from ..core import readiness as rd
from ..core import slots as sl
from ..core.bank import BlockError, parse_transaction
from ..core.codec import encode
from ..core.consensus import Consensus, NewRoot, PersistTower, SendVote, Vote, VoteRejected
from ..core.constants import PACKET_DATA_BYTES
from ..core.crypto import Keypair, encode_address
from ..core.finality import Finality
from ..core.forkchoice import ForkChoiceError
from ..core.lstake import epoch_of
from ..core.messages import Genesis
from ..core.pools import Mempool, VotePool
from ..core.shred import OFFSET_SLOT
from ..core.tower import is_supermajority
from ..core.vote_program import VoteTx, VoteTxError, parse_vote_transaction, vote_transaction
from ..core.work import WorkEvent
from ..ledger.blockstore import Blockstore, InsertResult
from ..ledger.cleanup import CLEANUP_INTERVAL_SLOTS, DEFAULT_KEEP_SLOTS
from ..ledger.meta import BankHashRecord, SlotMeta
from ..ledger.replay import SlotRejected, SlotResult, replay_slot
from ..ledger.snapshot import SNAPSHOT_INTERVAL_SLOTS, make_node_snapshot, save_node_snapshot, snapshot_due
from ..net.gossip import Delivery, PayloadCheck, shreds_check
from ..net.messages import GossipEnvelope, ShredBatch
from ..net.reqresp import ShredStore
from .clock import Clock
from .leader import BuiltSlot, build_slot
from .port import NetNodePort, NetPort
from .production import produce_on_clock
from .repair import PROTO_REPAIR_SLOT, PROTO_SHRED_PUSH, ShredPush, ShredPushAck, slot_repair_handler
from .restore import Restored, RestoreError, restore
from .schedule import ScheduleBook
from .services import SHRED_QUEUE_LEN, SHREDS_PER_GOSSIP_MESSAGE, control, run_services, status_fields
from .voting import VoteOp, VotingService, read_tower, write_tower

if TYPE_CHECKING:  # pragma: no cover
    from .poh_service import PohService

__all__ = ["LedgerHistory", "RestoreError", "Validator", "read_tower", "slot_duration_ms", "write_tower"]

BLOCKSTORE_DIR = "blockstore"
TOWER_FILE = "tower.cbor"
INBOX_LEN = 4096
LATENCY_SAMPLES = 10_000
#: A transaction is at most one packet (Solana's PACKET_DATA_SIZE).
MAX_TX_BYTES = PACKET_DATA_BYTES
#: Slots with a stored duplicate proof listed in status (test evidence; capped).
MAX_DUPLICATE_SLOTS_SEEN = 1024
_T = TypeVar("_T")


def slot_duration_ms(genesis: Genesis) -> float:
    return genesis.poh.ticks_per_slot * genesis.poh.target_tick_duration_us / 1000.0


@dataclass(frozen=True)
class LedgerHistory:
    """What the node keeps of its ledger (spec/blockstore.md "Cleanup", "Node snapshots"):
    a node snapshot at the first root past each multiple of ``snapshot_interval_slots``, and
    a cleanup once the root advanced ``cleanup_interval_slots`` since the last one, keeping
    ``keep_slots`` below the root (never the newest snapshot or above)."""

    keep_slots: int = DEFAULT_KEEP_SLOTS
    snapshot_interval_slots: int = SNAPSHOT_INTERVAL_SLOTS
    cleanup_interval_slots: int = CLEANUP_INTERVAL_SLOTS

    def __post_init__(self) -> None:
        if self.keep_slots < 0 or self.snapshot_interval_slots < 1 or self.cleanup_interval_slots < 1:
            raise ValueError(f"bad ledger history {self}")


class ProducerStrategy(Protocol):
    """How a built slot leaves the node: honest by default; the equivocation harness is
    ``ambient_p2p/devnet/equivocate.py``."""

    def variants(self, built: BuiltSlot, parent: SlotResult,
                 rebuild: Callable[[list[bytes]], BuiltSlot]) -> list[list[bytes]]: ...

    async def deliver(self, slot: int, variants: list[list[bytes]], port: NetPort) -> bool: ...

    def status(self) -> dict[str, Any]: ...


class HonestProducer:
    def variants(self, built: BuiltSlot, parent: SlotResult,
                 rebuild: Callable[[list[bytes]], BuiltSlot]) -> list[list[bytes]]:
        return [built.packets]

    async def deliver(self, slot: int, variants: list[list[bytes]], port: NetPort) -> bool:
        return False

    def status(self) -> dict[str, Any]:
        return {}


class BlockstoreShredStore(ShredStore):
    """Serves ``/ambient/repair/1`` from the blockstore (data shreds)."""

    def __init__(self, bs: Blockstore) -> None:
        super().__init__(max_shreds=0)
        self.bs = bs

    def insert(self, shred: bytes) -> bool:
        return False  # the validator inserts through the verified blockstore path

    def get(self, slot: int, index: int) -> bytes | None:
        return self.bs.get_data_shred(slot, index)

    def highest(self, slot: int, min_index: int = 0) -> bytes | None:
        m = self.bs.slot_meta(slot)
        if m is None or m.received == 0 or m.received - 1 < min_index:
            return None
        return self.bs.get_data_shred(slot, m.received - 1)

    def parent_of(self, slot: int) -> int | None:
        m = self.bs.slot_meta(slot)
        return None if m is None else m.parent_slot

    def __len__(self) -> int:
        return 0


@dataclass
class ValidatorStats:
    produced: int = 0
    replayed: int = 0
    dead: int = 0
    duplicates: int = 0
    votes_in: int = 0
    votes_out: int = 0
    votes_unsent: int = 0
    shreds_in: int = 0
    shreds_rejected: int = 0
    repair_requests: int = 0
    repaired_shreds: int = 0
    txs_in: int = 0
    txs_included: int = 0
    votes_landed: int = 0  # votes that landed in slots this node replayed or produced
    votes_included: int = 0  # vote transactions this node put in its own slots
    dumped: int = 0  # our versions of duplicate slots dumped for the confirmed version
    produce_abandoned: int = 0  # own slots not complete in time on the PoH clock (node/production.py)
    duplicate_slots: set[int] = field(default_factory=set)
    last_produced_ms: dict[int, int] = field(default_factory=dict)
    snapshots: int = 0  # node snapshots written
    snapshot_slot: int | None = None  # the newest written or restored from
    cleanups: int = 0
    purged_slots: int = 0
    restored_from: int = 0  # the slot the last load started from (0: genesis)


# -- worker-thread jobs: disk and CPU only, they touch no machine ------------------------------
def _insert_job(bs: Blockstore, packets: list[bytes], leaders: Callable[[int], bytes | None],
                verified: bool) -> tuple[InsertResult, list[SlotMeta]]:
    res = bs.insert_shreds(packets, leaders, signatures_verified=verified)
    bad = {i for i, _r in res.rejected}
    touched = {struct.unpack_from("<Q", p, OFFSET_SLOT)[0] for i, p in enumerate(packets)
               if i not in bad and len(p) >= OFFSET_SLOT + 8}
    metas = [m for s in sorted(touched | set(res.completed_slots)) if (m := bs.slot_meta(s)) is not None]
    return res, metas


def _replay_job(bs: Blockstore, genesis: Genesis, parent: SlotResult, slot: int,
                leader: bytes) -> tuple[SlotResult | str, bool]:
    try:
        res = replay_slot(bs, genesis, parent, slot, leader, shreds_verified=True)
    except SlotRejected as exc:
        return str(exc), False
    b = res.bank
    assert b.bank_hash is not None
    if bs.bank_hash(slot) is None:
        bs.put_bank_hash(BankHashRecord(slot, parent.bank.slot, b.bank_hash, b.last_blockhash,
                                        b.signature_count, b.transaction_count))
    return res, bs.duplicate_proof(slot) is not None


class Validator:
    """One validator's handles, channels and policy machines (see the module docstring)."""

    def __init__(self, kp: Keypair, genesis: Genesis, data_dir: Path, *, clock: Clock | None = None,
                 clock_ms: Callable[[], int] | None = None, rng: random.Random | None = None,
                 producer: ProducerStrategy | None = None, offload: bool = True,
                 poh_clock: str = "instant", history: LedgerHistory | None = None) -> None:
        self.kp, self.genesis, self.data_dir = kp, genesis, data_dir
        self.clock = clock or (Clock.fixed(clock_ms) if clock_ms else Clock.system())
        self.rng = rng or random.Random()
        self.producer: ProducerStrategy = producer or HonestProducer()
        self.slot_ms = slot_duration_ms(genesis)
        self.genesis_ms = genesis.creation_time_s * 1000
        self.bs = Blockstore.open(data_dir / BLOCKSTORE_DIR)
        self.history = history or LedgerHistory()
        self.book = ScheduleBook(genesis)  # replaced by the restored one in aload
        stakes = {n.identity: n.lstake for n in genesis.bootstrap_nodes if n.lstake > 0}
        tower = read_tower(data_dir / TOWER_FILE, kp.pubkey)
        self.cons = Consensus(kp, stakes, tower=tower) if tower else Consensus(kp, stakes)
        self.weights_epoch = 0  # the epoch whose LStake snapshot weighs votes now
        self.slots = sl.SlotTracker(0, genesis.hash(), leader_known=lambda s: self.book.leader(s) is not None)
        self.banks: dict[int, SlotResult] = {}  # frozen slots' results (fork-choice slots + root)
        self.dups = dup.DuplicateTracker()
        self.ready = rd.Readiness(syncing=bool(self.cons.tower.votes), started_ms=self.clock.wall_ms(),
                                  slot_ms=self.slot_ms)
        self.finality = Finality(kp.pubkey)
        self.mempool = Mempool()
        self.vote_pool = VotePool()
        self.root_written = 0
        #: slots above the restart root this identity produced before it stopped: never again
        self.produced_before: set[int] = set()
        self.root_event = trio.Event()  # set (and replaced) whenever the root advances
        self.last_no_vote_reason: str | None = None
        self.stats = ValidatorStats()
        self.awaiting_confirm: dict[int, list[int]] = {}  # slot -> leader receipt times (mono ms)
        self.confirm_latency_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        #: vote transactions the gossip check parsed (signatures verified), for ingest
        self.checked_votes: collections.OrderedDict[bytes, VoteTx] = collections.OrderedDict()
        self.port: NetPort | None = None
        self.inbox_send, self.inbox_recv = trio.open_memory_channel[Delivery](INBOX_LEN)
        self.inbox_dropped = 0
        self.shreds_send, self.shreds_recv = trio.open_memory_channel[tuple[list[bytes], str]](SHRED_QUEUE_LEN)
        self.voting = VotingService(data_dir / TOWER_FILE, self._vote_durable, offload)
        self.ledger_lock = trio.Lock()
        self.limiters = {k: trio.CapacityLimiter(1) for k in ("insert", "replay", "build", "disk", "serve",
                                                                     "cleanup")}
        self.frozen_event = trio.Event()  # set (and replaced) whenever a slot freezes
        self.repair_now = trio.Event()
        self.store = BlockstoreShredStore(self.bs)
        self.loop_stall: collections.deque[float] = collections.deque(maxlen=1000)
        self._loading_roots: set[int] = set()
        self._replays: list[sl.Replay] = []
        self.loaded = False
        self.offload = offload  # False: heavy work inline on the trio thread (A/B measurement only)
        # "service": slots on the PoH clock (leader_service opens self.poh); "instant" here by
        # default (unit tests, mock clocks); the command line's default is DEFAULT_POH_CLOCK
        self.poh_clock = poh_clock
        self.poh: PohService | None = None

    @property
    def stakes(self) -> Mapping[bytes, int]:
        return self.cons.stakes

    def slot_at(self, now_ms: int) -> int:
        return max(0, int((now_ms - self.genesis_ms) // self.slot_ms))

    def slot_start_ms(self, slot: int) -> float:
        return self.genesis_ms + slot * self.slot_ms

    async def _thread(self, kind: str, fn: Callable[..., _T], *args: Any) -> _T:
        if not self.offload:
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiters[kind])

    def _leaders(self) -> Callable[[int], bytes | None]:
        """A frozen copy of the computable schedules, for worker threads."""
        spe, e = self.book.spe, epoch_of(self.cons.root, self.book.spe)
        table = {k: s for k in range(max(0, e - 1), e + 2) if (s := self.book.schedule(k)) is not None}
        return lambda slot: None if (s := table.get(slot // spe)) is None else s[slot % spe]

    # -- NodeExtension ------------------------------------------------------------------------
    def payload_checks(self) -> dict[str, PayloadCheck]:
        # late-bound: aload replaces the book with the restored one
        return {"shreds": shreds_check(lambda slot: self.book.leader(slot)), "votes": self.vote_check,
                "txs": self.tx_check}

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

    @staticmethod
    def tx_check(env: GossipEnvelope) -> str | None:
        """One Solana wire transaction that parses, sanitizes and whose signatures verify."""
        if len(env.payload) > MAX_TX_BYTES:
            return "oversized"
        try:
            parse_transaction(env.payload, verify_signatures=True)
        except BlockError as exc:
            return exc.reason
        return None

    def vote_check(self, env: GossipEnvelope) -> str | None:
        try:
            vt = parse_vote_transaction(env.payload)
        except VoteTxError as exc:
            return exc.reason
        if vt.vote.voter != env.origin:
            return "vote-origin-mismatch"
        try:
            self.cons.check_vote(vt.vote)
        except VoteRejected as exc:
            return exc.reason
        self.checked_votes[env.payload] = vt
        while len(self.checked_votes) > INBOX_LEN:
            self.checked_votes.popitem(last=False)
        return None

    # -- ledger steps (caller holds ledger_lock, except the public wrappers) ------------------
    def load(self) -> None:
        trio.run(self.aload)

    async def aload(self) -> None:
        """Rebuild state from the blockstore (spec/blockstore.md "Node snapshots and
        restart"): the base is the newest node snapshot (``node/restore.py``; genesis
        without one): its bank, schedule book and rooted count; the consensus root is at
        least the base; then replay of the stored slots above it, crediting the roots above
        it as they replay. Raises :class:`RestoreError` when the ledger cannot restart."""
        async with self.ledger_lock:
            r = await self._thread("disk", _restore_job, self.bs, self.genesis, self.kp.pubkey)
            base = r.root
            assert r.result.bank.bank_hash is not None
            self.book = r.book
            tower = self.cons.tower.rooted_at_least(base)
            if tower is not self.cons.tower:  # the tower file is older than the snapshot, or absent
                self.cons = Consensus(self.kp, self.cons.stakes, tower=tower)
            rooted = ([base] if base else []) + r.roots_above
            older = r.rooted_count - 1 if base else 0
            self.finality = Finality(self.kp.pubkey, rooted, older_count=older, older_max=r.parent)
            self.root_written = max([base, *r.roots_above])
            self._loading_roots = set(r.roots_above)  # their landed votes credit LStake as they replay
            self.produced_before = set(r.produced)  # never rebuilt (not "own in this run")
            self.stats.restored_from = base
            self.stats.snapshot_slot = r.snapshot.slot if r.snapshot is not None else None
            self.banks = {base: r.result}
            # the Logit Pool's draw weighs validators by the LStake that weighs the epoch's
            # votes (spec/logit_pool.md "The draw"); every child bank inherits the provider
            r.result.bank.lstake_provider = lambda epoch: self.book.vote_weights(epoch)
            self.slots = sl.SlotTracker(base, r.result.bank.bank_hash,
                                        leader_known=lambda s: self.book.leader(s) is not None)
            root, roots_above, dead, full = self.cons.root, set(r.roots_above), set(r.dead), set(r.replay)
            for slot in sorted(dead | full | set(r.partial)):
                parent = r.parents.get(slot)
                if slot in dead:
                    self._perform(self.slots.handle(sl.LoadedDead(slot, parent or 0)))
                elif slot in full and parent is not None and (slot > root or slot in roots_above):
                    self._perform(self.slots.handle(sl.Completed(slot, parent)))
                elif slot not in full and slot > root:
                    self._perform(self.slots.handle(sl.ShredsStored(slot, parent)))
            await self._replay_ready()
            self.book.on_rooted(r.roots_above, self.root_written, self._landed_voters, self._work_events)
            self._loading_roots = set()
            self._update_weights()
            self._prune()
            self.loaded = True

    async def ingest_shreds(self, packets: list[bytes], *, verified: bool = False) -> InsertResult:
        async with self.ledger_lock:
            res, metas = await self._thread("insert", _insert_job, self.bs, packets, self._leaders(), verified)
            self._apply_insert(res, metas)
            await self._replay_ready()
            return res

    def _apply_insert(self, res: InsertResult, metas: list[SlotMeta]) -> None:
        self.stats.shreds_rejected += len(res.rejected)
        for m in metas:
            if m.is_full and m.parent_slot is not None:
                self._perform(self.slots.handle(sl.Completed(m.slot, m.parent_slot)))
            elif m.received > 0:
                self._perform(self.slots.handle(sl.ShredsStored(m.slot, m.parent_slot)))
        for slot, _kind in res.duplicates:
            self.stats.duplicates += 1
            self.cons.on_duplicate(slot)
            if len(self.stats.duplicate_slots) < MAX_DUPLICATE_SLOTS_SEEN:
                self.stats.duplicate_slots.add(slot)

    async def _replay_ready(self) -> None:
        """Perform queued Replay effects (parents first: the tracker orders them)."""
        while self._replays:
            r = self._replays.pop(0)
            if self.slots.state(r.slot) is not sl.SlotState.REPLAYING or self.slots.parent(r.slot) != r.parent:
                continue  # superseded (a dump sent it back to full; a later Replay is queued)
            leader, parent = self.book.leader(r.slot), self.banks.get(r.parent)
            if leader is None or parent is None:  # cannot happen: the tracker checked both
                self._perform(self.slots.handle(sl.ReplayFailed(r.slot, "no-leader-or-parent")))
                continue
            out, dup_proof = await self._thread("replay", _replay_job, self.bs, self.genesis, parent, r.slot, leader)
            if isinstance(out, str):
                self._perform(self.slots.handle(sl.ReplayFailed(r.slot, out)))
                continue
            assert out.bank.bank_hash is not None
            self.banks[r.slot] = out
            self.stats.replayed += 1
            if dup_proof:
                self.cons.on_duplicate(r.slot)
            self._perform(self.slots.handle(sl.Replayed(r.slot, out.bank.bank_hash)))

    def _perform(self, effects: list[Any]) -> None:
        """Perform the effects of the slot and duplicate machines, in order."""
        for e in effects:
            if isinstance(e, sl.Replay):
                self._replays.append(e)
            elif isinstance(e, sl.SlotFrozen):
                self._on_frozen(e.slot, e.parent)
            elif isinstance(e, sl.MarkDead):
                self.stats.dead += 1
                self.banks.pop(e.slot, None)
                self.bs.mark_dead(e.slot, e.reason[:500])
                self._perform(self.dups.on_dead(e.slot, self.cons.stakes, self.cons.total_stake))
            elif isinstance(e, sl.Purge):
                for s in e.slots:
                    self.bs.purge_slots(s, s)
                    self.banks.pop(s, None)
                    self.awaiting_confirm.pop(s, None)
            elif isinstance(e, sl.ClearDead):
                self.bs.clear_dead(e.slot)
            elif isinstance(e, sl.RepairSlot):
                self.repair_now.set()
            elif isinstance(e, dup.DumpSlot):
                self.stats.dumped += 1
                self.cons.dump_slot(e.slot)
                self._perform(self.slots.handle(sl.DuplicateConfirmed(e.slot, e.bank_hash)))
                self.dups.on_dumped(e.slot, e.bank_hash, self.clock.mono_ms())
                self.ready.handle(rd.SlotDumped(e.slot))
            elif isinstance(e, dup.CountVotes):
                for v in e.votes:
                    self.count_vote(v)

    def _on_frozen(self, slot: int, parent: int) -> None:
        res = self.banks[slot]
        assert res.bank.bank_hash is not None
        self.stats.votes_landed += len(res.bank.landed_votes)
        if slot in self._loading_roots:
            self.book.credit_replayed_root(slot, res.bank.landed_votes, res.bank.work_events)
        leader_is_me = slot in self.slots.own or self.book.leader(slot) == self.kp.pubkey
        self.ready.handle(rd.SlotFrozen(slot, self.slot_start_ms(slot), own=leader_is_me))
        self.frozen_event.set()
        self.frozen_event = trio.Event()
        if slot <= self.cons.root:
            return
        try:
            self.cons.on_replayed(slot, parent, res.bank.bank_hash)
        except ForkChoiceError:
            return  # not descended from our root: a fork that can no longer win
        self.cons.on_block_votes(res.bank.landed_votes)
        self._perform(self.dups.on_frozen(slot))

    def count_vote(self, vote: Vote) -> None:
        """A peer's vote: fork choice counts it, or the duplicate machine keeps it."""
        self.finality.on_voter_root(vote.voter, vote.root)
        try:
            if self.cons.on_vote(vote):
                return
        except VoteRejected:
            return
        ours = self.cons.bank_hashes.get(vote.slot)
        own: dup.Own = dup.FrozenAs(ours) if ours is not None else (
            dup.DeadHere() if self.slots.is_dead(vote.slot) else dup.Unknown())
        self._perform(self.dups.on_vote(vote, own, self.clock.mono_ms(), self.cons.stakes, self.cons.total_stake))

    def add_vote_tx(self, vt: VoteTx) -> None:
        self.stats.votes_in += 1
        if vt.vote.voter in self.cons.stakes:
            self.vote_pool.add(vt)
        self.count_vote(vt.vote)

    def add_tx(self, raw: bytes) -> None:
        if self.mempool.add(raw, self.clock.mono_ms()):
            self.stats.txs_in += 1

    # -- readiness and decisions ------------------------------------------------------------
    def behind(self) -> bool:
        return self.ready.behind(best=self.cons.processed_slot(), now_mono_ms=self.clock.mono_ms(),
                                 pending=self.dups.pending_receipts())

    def alone_supermajority(self) -> bool:
        return is_supermajority(self.cons.stakes.get(self.kp.pubkey, 0), self.cons.total_stake)

    def isolated(self) -> bool:
        return self.ready.isolated(current_slot=self.slot_at(self.clock.wall_ms()), leader_of=self.book.leader,
                                   me=self.kp.pubkey, alone_supermajority=self.alone_supermajority())

    def _note_confirmations(self) -> None:
        """Latency from this leader's receipt of a transaction to its slot's confirmation."""
        if not self.awaiting_confirm:
            return
        conf, fc, now = self.cons.confirmed_slot(), self.cons.forkchoice, self.clock.mono_ms()
        for slot in [s for s in self.awaiting_confirm if s <= conf]:
            times = self.awaiting_confirm.pop(slot)
            if slot in fc.parent and fc.is_ancestor(slot, conf):
                self.confirm_latency_ms.extend(float(now - t) for t in times)

    async def decide(self) -> None:
        """Readiness gates, then the driver's decision; effects in order (caller holds the
        ledger lock). The vote goes to the voting service: tower durable, then sent."""
        self._note_confirmations()
        pending, best = self.dups.pending_receipts(), self.cons.processed_slot()
        self.ready.evaluate(best=best, now_mono_ms=self.clock.mono_ms(), pending=pending,
                            alone_supermajority=self.alone_supermajority())
        reason = self.ready.no_vote_reason(behind=self.behind(), isolated=self.isolated())
        if reason is not None:
            self.last_no_vote_reason = reason
            return
        effects = self.cons.decide(self.clock.wall_ms())
        self.last_no_vote_reason = self.cons.last_no_vote_reason
        record = None
        for eff in effects:
            if isinstance(eff, PersistTower):
                record = eff.record
            elif isinstance(eff, SendVote):
                assert record is not None
                self.stats.votes_out += 1
                voted = self.banks.get(eff.vote.slot)
                vt = None
                if self.kp.pubkey in self.cons.stakes and voted is not None:
                    raw = vote_transaction(self.kp, eff.vote, voted.bank.last_blockhash)
                    vt = VoteTx(raw, parse_transaction(raw, verify_signatures=False), eff.vote)  # signed here
                if not self.voting.submit(VoteOp(record, vt)):
                    self.stats.votes_unsent += 1
            elif isinstance(eff, NewRoot):
                await self._on_root(eff.slot)

    async def _vote_durable(self, vt: VoteTx) -> None:
        self.vote_pool.add(vt)  # our own slots carry it from now on
        if self.port is not None:
            await self.port.publish("votes", vt.raw)

    async def _on_root(self, new_root: int) -> None:
        chain, s = [], new_root
        while s > self.root_written and (p := self.slots.parent(s)) is not None:
            chain.append(s)
            s = p
        chain.reverse()
        await self._thread("disk", self.bs.set_roots, chain)
        old_root, self.root_written = self.root_written, max(self.root_written, new_root)
        self.finality.on_rooted(chain)
        self.book.on_rooted(chain, new_root, self._landed_voters, self._work_events)
        self.book.ledger.prune(epoch_of(new_root, self.book.spe))
        if snapshot_due(old_root, new_root, self.history.snapshot_interval_slots) and new_root in self.banks:
            # built here (it copies the bank and the book), encoded and written in a thread
            snap = make_node_snapshot(self.genesis.hash(), self.banks[new_root], self.finality.rooted_count,
                                      self.book.to_state())
            await self._thread("disk", save_node_snapshot, self.bs, snap)
            self.stats.snapshots += 1
            self.stats.snapshot_slot = new_root
        self._update_weights()
        self._prune()
        self.root_event.set()  # the cleanup service (node/services.py) wakes
        self.root_event = trio.Event()

    def _landed_voters(self, slot: int) -> list[bytes]:
        res = self.banks.get(slot)
        return [] if res is None else [voter for voter, _s in res.bank.landed_votes]

    def _work_events(self, slot: int) -> list[WorkEvent]:
        res = self.banks.get(slot)
        return [] if res is None else list(res.bank.work_events)

    def _update_weights(self) -> None:
        """At the first root of a new epoch, weigh votes by that epoch's LStake snapshot."""
        epoch = epoch_of(self.cons.root, self.book.spe)
        if epoch != self.weights_epoch and (weights := self.book.vote_weights(epoch)) is not None:
            self.cons.set_stakes(weights)
            self.weights_epoch = epoch
            self.finality.prune(weights)

    def _prune(self) -> None:
        root = self.cons.root
        self._perform(self.slots.handle(sl.Rooted(root)))
        keep = set(self.cons.forkchoice.parent)
        self.banks = {s: r for s, r in self.banks.items() if s in keep}
        self.dups.prune(root)
        self.ready.handle(rd.Rooted(root))
        self.vote_pool.prune(root)
        self.awaiting_confirm = {s: t for s, t in self.awaiting_confirm.items() if s > root}
        self.produced_before = {s for s in self.produced_before if s > root}

    # -- production ---------------------------------------------------------------------------
    async def produce(self, slot: int, parent: int) -> None:
        """Build ``slot`` on ``parent``: on the PoH clock when the leader service opened one
        (node/production.py; an equivocating producer strategy keeps the one-shot build),
        else at once in a worker thread; store it, deliver it, decide."""
        if self.poh is not None and isinstance(self.producer, HonestProducer):
            await produce_on_clock(self, self.poh, slot, parent)
            return
        async with self.ledger_lock:
            if not self.may_build(slot, parent):
                return  # the parent was dumped or pruned while we waited, or built before a restart
            txs, votes, parent_res = self.mempool.take(self.clock.mono_ms()), self.vote_pool.take(), self.banks[parent]
            built, variants, res, metas = await self._thread(
                "build", _build_job, self.kp, self.genesis, parent, parent_res, slot, txs, votes,
                self.producer, self.bs, self._leaders())
            self.commit_built(built, res, metas)
            await self._replay_ready()
        if self.port is not None and not await self.producer.deliver(slot, variants, self.port):
            await self._publish(variants)
        async with self.ledger_lock:
            await self.decide()

    def may_build(self, slot: int, parent: int) -> bool:
        """``parent`` is still frozen here, ``slot`` not yet frozen, dead or dumped, and not
        built by this node before a restart (a second version would be an equivocation)."""
        return slot not in self.produced_before and parent in self.banks and self.slots.is_frozen(parent) and (
            self.slots.state(slot) in (sl.SlotState.ABSENT, sl.SlotState.PARTIAL, sl.SlotState.FULL))

    def commit_built(self, built: BuiltSlot, res: InsertResult, metas: list[SlotMeta]) -> None:
        """A slot this node built and stored: pools, stats, frozen as ``Produced``, its insert
        applied (the caller holds the ledger lock and then runs ``_replay_ready``)."""
        slot = built.slot
        self.vote_pool.remove_included(built.included_votes)
        self.stats.votes_included += len(built.included_votes)
        received = [t for raw in built.included if (t := self.mempool.received_ms(raw)) is not None]
        if received:
            self.awaiting_confirm[slot] = received
        self.mempool.remove(built.included + built.dropped)
        self.stats.txs_included += len(built.included)
        self.stats.produced += 1
        self.banks[slot] = built.result
        self._perform(self.slots.handle(sl.Produced(slot, built.parent, built.record.bank_hash)))
        self._apply_insert(res, metas)
        self.stats.last_produced_ms[slot] = self.clock.wall_ms()
        if len(self.stats.last_produced_ms) > 64:
            del self.stats.last_produced_ms[min(self.stats.last_produced_ms)]

    async def _publish(self, variants: list[list[bytes]]) -> None:
        assert self.port is not None
        n = SHREDS_PER_GOSSIP_MESSAGE
        chunks = [[v[i:i + n] for i in range(0, len(v), n)] for v in variants]
        for i in range(max(len(c) for c in chunks)):
            for c in chunks:
                if i < len(c):
                    await self.port.publish("shreds", encode(ShredBatch(shreds=tuple(c[i]))))

    # -- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"consensus": status_fields(self)}

    def lstake_table(self) -> dict[str, dict[str, int]]:
        """Per identity: its vote weight now, and its credits from rooted slots (all epochs)."""
        b = self.book
        ids = set(self.cons.stakes) | set(b.leader_credits) | set(b.vote_credits)
        return {encode_address(k): {"weight": self.cons.stakes.get(k, 0), "leader_slots": b.leader_credits[k],
                                    "vote_credits": b.vote_credits[k]} for k in sorted(ids)}

    def status_line(self) -> str:
        c = self.status()["consensus"]
        return (f"slot={c['slot']} processed={c['processed']} confirmed={c['confirmed']} "
                f"finalized={c['finalized']} leader={(c['leader'] or '-')[:8]} produced={c['produced']} "
                f"votes={c['votes_out']}")

    def finalized_slot(self) -> int:
        return self.finality.finalized_slot(self.cons.root, self.cons.stakes)

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        return await control(self, req)

    async def run(self, node: Any) -> None:
        self.port = NetNodePort(node)
        if not self.loaded:
            await self.aload()
        await run_services(self)

    def close(self) -> None:
        self.bs.close()


def _restore_job(bs: Blockstore, genesis: Genesis, identity: bytes) -> Restored:
    """Start-up read (worker thread): the restart base and the stored slots above it; an
    empty ledger gets its genesis root."""
    if bs.max_root() is None:
        bs.set_roots([0])
    return restore(bs, genesis, identity)


def store_built_job(bs: Blockstore, built: BuiltSlot,
                    leaders: Callable[[int], bytes | None]) -> tuple[InsertResult, list[SlotMeta]]:
    """Worker thread: store an own slot (bank-hash record, shreds through the verified insert)."""
    bs.put_bank_hash(built.record)
    res, metas = _insert_job(bs, built.packets, leaders, True)
    if res.rejected:
        raise AssertionError(f"own shreds rejected: {res.rejected[:2]}")
    return res, metas


def _build_job(kp: Keypair, genesis: Genesis, parent: int, parent_res: SlotResult, slot: int, txs: list[bytes],
               votes: list[VoteTx], producer: ProducerStrategy, bs: Blockstore,
               leaders: Callable[[int], bytes | None]) -> tuple[BuiltSlot, list[list[bytes]], InsertResult,
                                                                list[SlotMeta]]:
    """Worker thread: build the slot at once (PoH, bank, shreds, signatures), store it."""
    built = build_slot(kp, genesis, parent, parent_res, slot, txs, votes)
    variants = producer.variants(built, parent_res, lambda t: build_slot(kp, genesis, parent, parent_res, slot, t))
    return (built, variants, *store_built_job(bs, built, leaders))
