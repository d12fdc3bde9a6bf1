"""The validator: consensus wired to the network, the blockstore and the clock
(normative text: spec/node.md).

It is a :class:`~ambient_p2p.net.node.NodeExtension` of the networking node, so one
process has one trio nursery holding the networking tasks and these:

``ingest``   validated gossip deliveries (shred batches, vote transactions, transactions)
             -> the blockstore / the consensus driver and the vote pool / the
             pending-transaction pool
``leader``   the slot clock: when the schedule names this node for the current slot it
             builds the slot on the fork-choice tip (the latest vote transaction of every
             voter first, then pending transactions), stores it and publishes its shreds
``repair``   asks peers (``/ambient/repair/1``) for the data shreds of slots that are
             incomplete, orphaned, or named by peers' votes but unknown here

Every state change runs synchronously between awaits (trio is single-threaded), in this
order: insert shreds -> replay every slot that became replayable -> feed the consensus
driver -> ``decide`` -> perform effects. Effects are performed in the order the driver
returns them: the tower is written durably (write, fsync, rename, fsync directory) before
the vote is published, so a SIGKILL can never leave a vote on the wire that the restarted
tower does not know about.

Slot clock: slot ``s`` starts at ``genesis.creation_time_s * 1000 + s * slot_ms``. The
leader of ``s`` builds at once when the previous slot is already replayed (or is its own),
otherwise it waits ``LEADER_SKIP_GRACE_SLOTS`` slot durations for it and then builds on
whatever fork choice says is best: an absent leader costs its slots, not liveness.
"""

from __future__ import annotations

import bisect
import collections
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..core.bank import BlockError, parse_transaction
from ..core.codec import DecodeError, decode, encode
from ..core.consensus import Consensus, NewRoot, PersistTower, SendVote, Vote, VoteRejected
from ..core.crypto import Keypair, encode_address
from ..core.forkchoice import ForkChoiceError
from ..core.lstake import epoch_of
from ..core.messages import Genesis
from ..core.shred import DATA_PAYLOAD_BYTES
from ..core.tower import DUPLICATE_THRESHOLD, Tower, TowerRecord, is_supermajority
from ..core.vote_program import VoteTx, VoteTxError, parse_vote_transaction, vote_transaction
from ..ledger.blockstore import Blockstore, InsertResult
from ..ledger.meta import BankHashRecord
from ..ledger.producer import genesis_bank
from ..ledger.replay import SlotRejected, SlotResult, replay_slot
from ..net.gossip import Delivery, PayloadCheck, shreds_check
from ..net.messages import (
    REPAIR_ORPHAN,
    GossipEnvelope,
    RepairRequest,
    ShredBatch,
)
from ..net.reqresp import PROTO_REPAIR, ReqRespError, ShredStore, request
from .leader import build_slot
from .repair import (
    MAX_PUSH_SHREDS,
    PROTO_REPAIR_SLOT,
    PROTO_SHRED_PUSH,
    ShredPush,
    ShredPushAck,
    SlotShredsRequest,
    slot_repair_handler,
)
from .schedule import ScheduleBook

if TYPE_CHECKING:  # pragma: no cover
    from ..net.node import NetNode

BLOCKSTORE_DIR = "blockstore"
TOWER_FILE = "tower.cbor"
#: Wait this fraction of a slot for the previous slot before building on the best fork.
LEADER_SKIP_GRACE_SLOTS = 0.75
LEADER_POLL_S = 0.01
REPAIR_INTERVAL_S = 0.3
REPAIR_SLOTS_PER_ROUND = 32
REPAIR_PARALLEL = 16
REPAIR_MAX_REQUESTS_PER_ROUND = 64
#: A restarted node (its tower holds votes) does not vote until it has replayed a slot that
#: another leader produced after its start and is not behind; it does not produce either
#: until then, or until this many slot durations have passed (it may be alone, or the
#: whole network may have restarted).
SYNC_TIMEOUT_SLOTS = 40
#: While syncing, each repair round also asks peers for this many of the latest clock slots.
SYNC_PROBE_SLOTS = 4
#: A node that has replayed no slot of another leader while this many slots of other
#: leaders passed is *isolated* (its gossip is not reaching it: a restarted node's mesh can
#: take a minute to re-form): it does not vote, and repair probes the latest slots, as
#: while syncing. Voting on its own slots there locked it out of the main fork (observed).
ISOLATION_SLOTS = 12
ISOLATION_SCAN_SLOTS = 96
REPAIR_TIMEOUT_S = 3.0
#: A peer vote for an unknown slot makes us "behind" (no production) for this long.
BEHIND_WINDOW_S = 3.0
#: Shreds per gossip message. One message must stay below Noise's 65,535-byte frame: a
#: larger one is written as several frames, and py-libp2p 0.8.1 lets concurrent writers
#: interleave them, which corrupts the pubsub stream (the reader dies on a protobuf
#: DecodeError). 32 shreds are ~40 KB.
SHREDS_PER_GOSSIP_MESSAGE = 32
INBOX_LEN = 4096
LATENCY_SAMPLES = 10_000
#: Votes waiting for the network (gossip publish can block on back-pressure; ingest and
#: replay must not).
VOTE_QUEUE_LEN = 256
INGEST_BATCH_WAIT_S = 0.01
MAX_PENDING_VOTE_SLOTS = 1024
MAX_MEMPOOL = 4096
#: A transaction is at most one packet (Solana's PACKET_DATA_SIZE).
MAX_TX_BYTES = 1232
MEMPOOL_TTL_S = 60.0


def slot_duration_ms(genesis: Genesis) -> float:
    return genesis.poh.ticks_per_slot * genesis.poh.target_tick_duration_us / 1000.0


async def _repair_one(host: Any, peer: Any, proto: str, req: Any, limiter: trio.CapacityLimiter, out: list[bytes]) -> None:
    async with limiter:
        try:
            resp = await request(host, peer, proto, req, timeout=REPAIR_TIMEOUT_S)
        except ReqRespError:
            return
        out.extend(resp.shreds)


class BlockstoreShredStore(ShredStore):
    """Serves ``/ambient/repair/1`` from the blockstore (data shreds), replacing the
    networking node's in-memory stand-in."""

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


def _percentiles(samples: list[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"n": 0, "p50": None, "p95": None}
    s = sorted(samples)
    return {"n": len(s), "p50": round(s[len(s) // 2], 1), "p95": round(s[min(len(s) - 1, int(0.95 * len(s)))], 1)}


def write_tower(path: Path, rec: TowerRecord) -> None:
    """Durably replace the tower file: the vote it enables must not outlive a crash
    without it."""
    tmp = path.with_name(path.name + ".tmp")
    data = encode(rec)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_tower(path: Path, identity: bytes) -> Tower | None:
    if not path.exists():
        return None
    return Tower.from_record(decode(path.read_bytes(), expected=TowerRecord), identity)


@dataclass
class ValidatorStats:
    produced: int = 0
    equivocated: int = 0
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
    last_produced_ms: dict[int, int] = field(default_factory=dict)


class Validator:
    """One validator's consensus state and tasks (see the module docstring)."""

    def __init__(
        self,
        kp: Keypair,
        genesis: Genesis,
        data_dir: Path,
        *,
        equivocate_slot_index: int | None = None,
        equivocate_split: bool = False,
        clock_ms: Any = None,
    ) -> None:
        self.kp = kp
        self.genesis = genesis
        self.data_dir = data_dir
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.slot_ms = slot_duration_ms(genesis)
        self.genesis_ms = genesis.creation_time_s * 1000
        self.bs = Blockstore.open(data_dir / BLOCKSTORE_DIR)
        self.book = ScheduleBook(genesis)
        stakes = {n.identity: n.lstake for n in genesis.bootstrap_nodes if n.lstake > 0}
        self.tower_path = data_dir / TOWER_FILE
        tower = read_tower(self.tower_path, kp.pubkey)
        self.cons = Consensus(kp, stakes, tower=tower) if tower else Consensus(kp, stakes)
        self.weights_epoch = 0  # the epoch whose LStake snapshot weighs votes now
        self.vote_pool: dict[bytes, VoteTx] = {}  # voter -> latest vote transaction
        #: vote transactions the gossip check parsed (signatures verified), by payload, for
        #: ingest to take instead of parsing and verifying them again
        self._checked_votes: collections.OrderedDict[bytes, VoteTx] = collections.OrderedDict()
        self._loading_roots: set[int] = set()
        self.last_foreign_slot = 0  # highest slot of another leader replayed here
        #: votes for slots we replayed to a *different* bank hash: slot -> voter -> vote
        self.foreign_votes: dict[int, dict[bytes, Vote]] = {}
        self.dumped: set[tuple[int, bytes]] = set()  # (slot, confirmed hash) already dumped for
        self.frozen: dict[int, SlotResult] = {}
        self.parents: dict[int, int] = {}
        self.dead: set[int] = set()
        self.complete: set[int] = set()  # full in the blockstore, not replayed yet
        self.pending_votes: dict[int, dict[bytes, tuple[Vote, float]]] = {}
        self.mempool: collections.OrderedDict[bytes, tuple[bytes, float]] = collections.OrderedDict()
        self.produced: set[int] = set()
        # confirmation latency (benchmark): slot -> leader receipt times of its transactions
        self.awaiting_confirm: dict[int, list[float]] = {}
        self.confirm_latency_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.duplicate_slots_seen: set[int] = set()  # slots with a stored duplicate proof
        self.equivocated_slots: list[int] = []  # test harness: slots we equivocated on
        self.rooted_count = 0
        self.root_list: list[int] = []  # our rooted slots above 0, ascending
        self.voter_roots: dict[bytes, int] = {}  # latest tower root each peer reported
        self.root_written = 0
        self.stats = ValidatorStats()
        self.equivocate_slot_index = equivocate_slot_index
        self.equivocate_split = equivocate_split
        self.split_recipients: dict[int, dict[str, list[str]]] = {}  # test harness: slot -> version -> addresses
        self.node: NetNode | None = None
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[Delivery](INBOX_LEN)
        self._votes_send, self._votes_recv = trio.open_memory_channel[bytes](VOTE_QUEUE_LEN)
        self.store = BlockstoreShredStore(self.bs)
        self.started_ms = self.clock_ms()
        self.loaded = False
        self.orphans: set[int] = set()
        self.wanted: set[int] = set()
        self.syncing = bool(self.cons.tower.votes)  # restarted with a tower: catch up first
        self.synced_ms: int | None = None

    @property
    def stakes(self) -> Mapping[bytes, int]:
        """Vote weights now: the LStake snapshot of the root's epoch (ScheduleBook)."""
        return self.cons.stakes

    # -- clock ----------------------------------------------------------------------------
    def slot_at(self, now_ms: int) -> int:
        return max(0, int((now_ms - self.genesis_ms) // self.slot_ms))

    def slot_start_ms(self, slot: int) -> float:
        return self.genesis_ms + slot * self.slot_ms

    # -- NodeExtension --------------------------------------------------------------------
    def payload_checks(self) -> dict[str, PayloadCheck]:
        return {"shreds": shreds_check(self.book.leader), "votes": self._vote_check, "txs": self._tx_check}

    def shred_store(self) -> ShredStore | None:
        return self.store

    def reqresp_handlers(self) -> dict[str, Any]:
        return {PROTO_REPAIR_SLOT: slot_repair_handler(self.bs), PROTO_SHRED_PUSH: self._push_handler}

    def _push_handler(self, _peer: Any, req: ShredPush) -> ShredPushAck:
        """Shreds pushed to us directly: the verified insert, then replay (votes and the
        next ingest round decide)."""
        res = self.insert(list(req.shreds))
        self.stats.shreds_in += len(req.shreds)
        self.replay_ready()
        return ShredPushAck(nonce=req.nonce, inserted=res.inserted, rejected=len(res.rejected))

    def on_delivery(self, d: Delivery) -> bool:
        if d.kind not in ("shreds", "votes", "txs"):
            return False
        try:
            self._inbox_send.send_nowait(d)
        except trio.WouldBlock:
            pass  # overload: repair fetches what we drop
        return True

    @staticmethod
    def _tx_check(env: GossipEnvelope) -> str | None:
        """The txs topic carries one Solana wire transaction that parses, sanitizes and
        whose signatures verify (whether it can execute is the leader's bank's business)."""
        if len(env.payload) > MAX_TX_BYTES:
            return "oversized"
        try:
            parse_transaction(env.payload, verify_signatures=True)
        except BlockError as exc:
            return exc.reason
        return None

    def _vote_check(self, env: GossipEnvelope) -> str | None:
        try:
            vt = parse_vote_transaction(env.payload)
        except VoteTxError as exc:
            return exc.reason
        vote = vt.vote
        if vote.voter != env.origin:
            return "vote-origin-mismatch"
        try:
            self.cons.check_vote(vote)
        except VoteRejected as exc:
            return exc.reason
        self._checked_votes[env.payload] = vt
        while len(self._checked_votes) > INBOX_LEN:
            self._checked_votes.popitem(last=False)
        return None

    # -- ledger ---------------------------------------------------------------------------
    def load(self) -> None:
        """Rebuild in-memory state from the blockstore: credits from stored roots, then
        replay every complete slot (rooted chain and above the tower's root)."""
        roots = self.bs.roots()
        if not roots:
            self.bs.set_roots([0])
            roots = [0]
        self.root_list = sorted(r for r in roots if r > 0)
        self.rooted_count = len(self.root_list)
        self.root_written = max(roots)
        # LStake credits are re-applied as the rooted chain replays, in slot order (_frozen):
        # a rooted slot's landed votes are known only from its bank
        self._loading_roots = set(roots)
        self.frozen[0] = SlotResult(genesis_bank(self.genesis), self.genesis.hash(), self.genesis.hash(), 0, 0, 0)
        self.parents[0] = 0
        root = self.cons.root
        for m in self.bs.slot_metas():
            if m.slot == 0 or not m.is_full:
                continue
            if self.bs.dead_slot(m.slot) is not None:
                self.dead.add(m.slot)
            elif m.slot > root or self.bs.is_root(m.slot):
                self.complete.add(m.slot)
        self.replay_ready()
        self.book.on_rooted(sorted(roots), max(roots), self._landed_voters)  # roots that did not replay
        self._loading_roots = set()
        self._update_weights()
        self._prune()
        self.loaded = True

    def replay_ready(self) -> int:
        """Replay every complete slot whose parent is frozen (parents first)."""
        n = 0
        progress = True
        while progress:
            progress = False
            for slot in sorted(self.complete):
                meta = self.bs.slot_meta(slot)
                parent = None if meta is None else meta.parent_slot
                if parent is None or parent in self.dead:
                    self.complete.discard(slot)
                    if parent is not None:
                        self._mark_dead(slot, f"parent-dead: parent {parent} failed replay")
                    continue
                if parent not in self.frozen:
                    continue
                leader = self.book.leader(slot)
                if leader is None:
                    continue  # schedule not computable yet; retried after the next root
                self.complete.discard(slot)
                self._replay_one(slot, parent, leader)
                n += 1
                progress = True
        return n

    def _mark_dead(self, slot: int, reason: str) -> None:
        self.dead.add(slot)
        self.stats.dead += 1
        self.bs.mark_dead(slot, reason[:500])

    def _replay_one(self, slot: int, parent: int, leader: bytes) -> None:
        try:
            res = replay_slot(self.bs, self.genesis, self.frozen[parent], slot, leader)
        except SlotRejected as exc:
            self._mark_dead(slot, str(exc))
            return
        b = res.bank
        assert b.bank_hash is not None
        if self.bs.bank_hash(slot) is None:
            self.bs.put_bank_hash(BankHashRecord(slot, parent, b.bank_hash, b.last_blockhash,
                                                 b.signature_count, b.transaction_count))
        self.stats.replayed += 1
        if leader != self.kp.pubkey:
            self.last_foreign_slot = max(self.last_foreign_slot, slot)
        self._frozen(slot, parent, res)

    def _frozen(self, slot: int, parent: int, res: SlotResult) -> None:
        self.frozen[slot] = res
        self.parents[slot] = parent
        self.stats.votes_landed += len(res.bank.landed_votes)
        assert res.bank.bank_hash is not None
        if slot in self._loading_roots:
            self.book.credit_replayed_root(slot, res.bank.landed_votes)
        if slot > self.cons.root:
            try:
                self.cons.on_replayed(slot, parent, res.bank.bank_hash)
            except ForkChoiceError:
                return  # not descended from our root: a fork that can no longer win
            if self.bs.duplicate_proof(slot) is not None:
                self.cons.on_duplicate(slot)
            self.cons.on_block_votes(res.bank.landed_votes)
            for vote, _t in self.pending_votes.pop(slot, {}).values():
                self._count_vote(vote)

    def _prune(self) -> None:
        keep = set(self.cons.forkchoice.parent)
        self.frozen = {s: r for s, r in self.frozen.items() if s in keep}
        self.parents = {s: p for s, p in self.parents.items() if s in keep}
        root = self.cons.root
        self.complete = {s for s in self.complete if s > root}
        self.dead = {s for s in self.dead if s > root}
        self.foreign_votes = {s: per for s, per in self.foreign_votes.items() if s > root}
        for s in [s for s in self.pending_votes if s <= root]:
            del self.pending_votes[s]
        self.produced = {s for s in self.produced if s > root}
        self.vote_pool = {v: vt for v, vt in self.vote_pool.items() if vt.vote.slot >= root}
        self.awaiting_confirm = {s: t for s, t in self.awaiting_confirm.items() if s > root}

    def insert(self, packets: list[bytes]) -> InsertResult:
        res = self.bs.insert_shreds(packets, self.book.leader)
        self.stats.shreds_rejected += len(res.rejected)
        for slot in res.completed_slots:
            if slot not in self.frozen and slot not in self.dead:
                self.complete.add(slot)
        for slot, _kind in res.duplicates:
            self.stats.duplicates += 1
            self.cons.on_duplicate(slot)
            if len(self.duplicate_slots_seen) < MAX_PENDING_VOTE_SLOTS:
                self.duplicate_slots_seen.add(slot)
        return res

    # -- votes ----------------------------------------------------------------------------
    def finalized_slot(self) -> int:
        """Solana's *finalized* commitment: the highest of our rooted slots that > 2/3 of
        LStake (our own tower root and the roots peers put in their latest votes) has
        rooted. Our own tower root alone is ``root``: with a supermajority gone, deep votes
        cast before can still mature into local roots, but no new slot gets finalized."""
        own = self.cons.finalized_slot()
        reported = [(own, self.stakes.get(self.kp.pubkey, 0))]
        reported += [(r, self.stakes.get(v, 0)) for v, r in self.voter_roots.items() if v != self.kp.pubkey]
        total = sum(self.stakes.values())
        acc = 0
        for r, w in sorted(reported, reverse=True):
            acc += w
            if is_supermajority(acc, total):
                cap = min(r, own)
                i = bisect.bisect_right(self.root_list, cap)
                return self.root_list[i - 1] if i else 0
        return 0

    def _count_vote(self, vote: Vote) -> None:
        if vote.root is not None and vote.root > self.voter_roots.get(vote.voter, -1):
            self.voter_roots[vote.voter] = vote.root
        try:
            counted = self.cons.on_vote(vote)
        except VoteRejected:
            return
        if counted:
            return
        ours = self.cons.bank_hashes.get(vote.slot)
        if ours is not None and ours != vote.bank_hash:
            self._foreign_vote(vote)
            return
        if vote.slot > self.cons.root and vote.slot not in self.cons.bank_hashes:
            per = self.pending_votes.setdefault(vote.slot, {})
            old = per.get(vote.voter)
            if old is None or old[0].timestamp_ms <= vote.timestamp_ms:
                per[vote.voter] = (vote, time.monotonic())
            while len(self.pending_votes) > MAX_PENDING_VOTE_SLOTS:
                del self.pending_votes[min(self.pending_votes)]

    def _foreign_vote(self, vote: Vote) -> None:
        """A vote for another version of a slot we replayed. Once more than
        ``DUPLICATE_THRESHOLD`` (52%) of LStake voted for one other version, that version is
        duplicate-confirmed: ours is dumped and the confirmed one repaired (agave's dump and
        repair), or this node could never replay the blocks the cluster builds on it."""
        per = self.foreign_votes.setdefault(vote.slot, {})
        per[vote.voter] = vote
        while len(self.foreign_votes) > MAX_PENDING_VOTE_SLOTS:
            del self.foreign_votes[min(self.foreign_votes)]
        h = vote.bank_hash
        stake = sum(self.cons.stakes.get(v, 0) for v, fv in per.items() if fv.bank_hash == h)
        total = self.cons.total_stake
        if total > 0 and Fraction(stake, total) > DUPLICATE_THRESHOLD and (vote.slot, h) not in self.dumped:
            self._dump(vote.slot, h)

    def _stored_descendants(self, slot: int) -> set[int]:
        children: dict[int, list[int]] = {}
        for m in self.bs.slot_metas():
            if m.parent_slot is not None and m.slot > slot:
                children.setdefault(m.parent_slot, []).append(m.slot)
        out, stack = set(), [slot]
        while stack:
            s = stack.pop()
            for c in children.get(s, ()):
                if c not in out:
                    out.add(c)
                    stack.append(c)
        return out

    def _dump(self, slot: int, confirmed_hash: bytes) -> None:
        """Purge our version of ``slot`` and what replayed on top of it; give slots that
        died on top of it (built on the confirmed version) another replay; queue the
        confirming votes so that repair fetches the confirmed version from peers."""
        self.dumped.add((slot, confirmed_hash))
        self.stats.dumped += 1
        gone = self.cons.dump_slot(slot) | {slot}
        for d in sorted(gone | self._stored_descendants(slot)):
            if d == slot or d in gone:
                self.bs.purge_slots(d, d)  # our version, and slots built on it
                self.complete.discard(d)
            elif d in self.dead:  # died on top of our version: built on the confirmed one
                self.bs.clear_dead(d)
                self.dead.discard(d)
                meta = self.bs.slot_meta(d)
                if meta is not None and meta.is_full:
                    self.complete.add(d)
            self.frozen.pop(d, None)
            self.parents.pop(d, None)
            self.produced.discard(d)
            self.awaiting_confirm.pop(d, None)
        per = self.pending_votes.setdefault(slot, {})
        for v in self.foreign_votes.pop(slot, {}).values():
            if v.bank_hash == confirmed_hash:
                per[v.voter] = (v, time.monotonic())

    def _update_syncing(self) -> None:
        if not self.syncing:
            return
        # Only evidence ends it: a restarted node that hears nothing (its gossip mesh can
        # take a minute to re-form) and votes on its own slots locks itself onto its own
        # fork for hundreds of slots (observed); producing there is harmless, voting is not.
        fresh = [s for s in self.frozen if s not in self.produced and self.slot_start_ms(s) >= self.started_ms]
        if fresh and not self.behind():
            self.syncing = False
            self.synced_ms = self.clock_ms()

    def isolated(self) -> bool:
        """No slot of another leader replayed while ``ISOLATION_SLOTS`` of their slots
        passed (never for a node holding a supermajority alone: it needs nobody)."""
        total = self.cons.total_stake
        if is_supermajority(self.cons.stakes.get(self.kp.pubkey, 0), total):
            return False
        cur = self.slot_at(self.clock_ms())
        others = 0
        for s in range(cur - 2, max(self.last_foreign_slot, cur - 2 - ISOLATION_SCAN_SLOTS), -1):
            leader = self.book.leader(s)
            if leader is not None and leader != self.kp.pubkey:
                others += 1
                if others >= ISOLATION_SLOTS:
                    return True
        return False

    def may_produce(self) -> bool:
        if not self.syncing:
            return True
        return self.clock_ms() - self.started_ms > SYNC_TIMEOUT_SLOTS * self.slot_ms

    def behind(self) -> bool:
        """A peer recently voted for a slot above our best that we have not replayed, or
        a slot above our best is still being repaired, or a stored slot waits for its
        ancestors. A node that is behind neither produces nor votes: its tip is stale, and
        a vote there would lock it onto a fork the network has left."""
        best = self.cons.processed_slot()
        if self.orphans or any(w > best for w in self.wanted):
            return True
        now = time.monotonic()
        for s, per in self.pending_votes.items():
            if s > best and s not in self.dead and any(now - t < BEHIND_WINDOW_S for _v, t in per.values()):
                return True
        return False

    def _note_confirmations(self) -> None:
        """Latency from this leader's receipt of a transaction to its slot being confirmed
        (on the best fork) here."""
        if not self.awaiting_confirm:
            return
        conf = self.cons.confirmed_slot()
        fc = self.cons.forkchoice
        now = time.monotonic()
        for slot in [s for s in self.awaiting_confirm if s <= conf]:
            times = self.awaiting_confirm.pop(slot)
            if slot in fc.parent and fc.is_ancestor(slot, conf):
                self.confirm_latency_ms.extend((now - t) * 1000 for t in times)

    async def decide(self) -> None:
        """Run the driver's decision and perform its effects in order."""
        self._note_confirmations()
        self._update_syncing()
        if self.syncing or self.behind() or self.isolated():
            return  # no vote before catching up: its lockouts would bind us to a stale fork
        effects = self.cons.decide(self.clock_ms())
        for eff in effects:
            if isinstance(eff, PersistTower):
                write_tower(self.tower_path, eff.record)
            elif isinstance(eff, SendVote):
                self.stats.votes_out += 1
                # an identity without LStake keeps a local tower (its own finality view) but
                # publishes nothing: peers would reject its votes and score it down
                voted = self.frozen.get(eff.vote.slot)
                if self.kp.pubkey in self.cons.stakes and voted is not None:
                    # agave's shape: the vote transaction's blockhash is the voted slot's
                    raw = vote_transaction(self.kp, eff.vote, voted.bank.last_blockhash)
                    vt = VoteTx(raw, parse_transaction(raw, verify_signatures=False), eff.vote)  # signed here
                    self._add_vote_tx(vt)  # so that our own slots carry it too
                    try:  # the tower is already durable; the sender task publishes
                        self._votes_send.send_nowait(vt.raw)
                    except trio.WouldBlock:
                        self.stats.votes_unsent += 1
            elif isinstance(eff, NewRoot):
                self._on_root(eff.slot, self.root_written)

    def _on_root(self, new_root: int, old_root: int) -> None:
        chain = []
        s = new_root
        while s > old_root and s in self.parents:
            chain.append(s)
            s = self.parents[s]
        chain.reverse()
        self.bs.set_roots(chain)
        self.root_written = max(self.root_written, new_root)
        self.rooted_count += len(chain)
        self.root_list.extend(c for c in chain if c > 0)
        self.book.on_rooted(chain, new_root, self._landed_voters)
        self._update_weights()
        self._prune()

    def _landed_voters(self, slot: int) -> list[bytes]:
        res = self.frozen.get(slot)
        return [] if res is None else [voter for voter, _s in res.bank.landed_votes]

    def _update_weights(self) -> None:
        """At the first root of a new epoch, weigh votes by that epoch's LStake snapshot."""
        epoch = epoch_of(self.cons.root, self.book.spe)
        if epoch == self.weights_epoch:
            return
        weights = self.book.vote_weights(epoch)
        if weights is None:
            return  # the snapshot is not final yet (cannot happen once the root is in epoch)
        self.cons.set_stakes(weights)
        self.weights_epoch = epoch

    def _add_vote_tx(self, vt: VoteTx) -> None:
        old = self.vote_pool.get(vt.vote.voter)
        if old is None or old.vote.slot < vt.vote.slot:
            self.vote_pool[vt.vote.voter] = vt
    # -- tasks ----------------------------------------------------------------------------
    async def run(self, node: NetNode) -> None:
        self.node = node
        if not self.loaded:
            self.load()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ingest_loop)
            nursery.start_soon(self._leader_loop)
            nursery.start_soon(self._repair_loop)
            nursery.start_soon(self._vote_sender)

    async def _vote_sender(self) -> None:
        while True:
            raw = await self._votes_recv.receive()
            if self.node is not None and self.node.gossip is not None:
                await self.node.gossip.publish("votes", raw)

    async def _ingest_loop(self) -> None:
        while True:
            d = await self._inbox_recv.receive()
            # let a burst (a slot's shred messages, several votes) accumulate so that one
            # replay + decide pass handles all of it
            await trio.sleep(INGEST_BATCH_WAIT_S)
            batch = [d]
            while len(batch) < 256:
                try:
                    batch.append(self._inbox_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            packets: list[bytes] = []
            for item in batch:
                if item.kind == "shreds":
                    try:
                        packets.extend(decode(item.envelope.payload, expected=ShredBatch).shreds)
                    except DecodeError:
                        continue
                elif item.kind == "votes":
                    vt_checked = self._checked_votes.pop(item.envelope.payload, None)
                    try:
                        vt = vt_checked or parse_vote_transaction(item.envelope.payload)
                    except VoteTxError:
                        continue
                    self.stats.votes_in += 1
                    if vt.vote.voter in self.cons.stakes:
                        self._add_vote_tx(vt)
                    self._count_vote(vt.vote)
                elif item.kind == "txs":
                    self._add_tx(item.envelope.payload)
            if packets:
                self.stats.shreds_in += len(packets)
                self.insert(packets)
            self.replay_ready()
            await self.decide()

    def _add_tx(self, raw: bytes) -> None:
        if len(raw) < 65:
            return
        key = raw[1:65]  # the first signature (after the compact-u16 count)
        if key in self.mempool:
            return
        self.stats.txs_in += 1
        self.mempool[key] = (raw, time.monotonic())
        while len(self.mempool) > MAX_MEMPOOL:
            self.mempool.popitem(last=False)

    def _take_txs(self) -> list[bytes]:
        now = time.monotonic()
        for k in [k for k, (_r, t) in self.mempool.items() if now - t > MEMPOOL_TTL_S]:
            del self.mempool[k]
        return [r for r, _t in self.mempool.values()]

    async def _leader_loop(self) -> None:
        last_built = -1
        while True:
            now = self.clock_ms()
            cur = self.slot_at(now)
            if cur > last_built and self.book.leader(cur) == self.kp.pubkey:
                best = self.cons.build_parent(cur)
                prev_ready = best == cur - 1 or best in self.produced
                grace_over = now >= self.slot_start_ms(cur) + LEADER_SKIP_GRACE_SLOTS * self.slot_ms
                if best >= cur:
                    last_built = cur  # someone is ahead of our clock; never build below a parent
                elif (prev_ready or grace_over) and best in self.frozen and not self.behind() and self.may_produce():
                    last_built = cur
                    await self._produce(cur, best)
                    continue
            await trio.sleep(LEADER_POLL_S)

    async def _produce(self, slot: int, parent: int) -> None:
        votes = sorted(self.vote_pool.values(), key=lambda vt: vt.vote.voter)
        built = build_slot(self.kp, self.genesis, parent, self.frozen[parent], slot, self._take_txs(), votes)
        for vt in built.included_votes:
            if self.vote_pool.get(vt.vote.voter) is vt:
                del self.vote_pool[vt.vote.voter]
        self.stats.votes_included += len(built.included_votes)
        received = [self.mempool[raw[1:65]][1] for raw in built.included if raw[1:65] in self.mempool]
        if received:
            self.awaiting_confirm[slot] = received
        for raw in built.included + built.dropped:
            self.mempool.pop(raw[1:65], None)
        self.stats.txs_included += len(built.included)
        variants = [built.packets]
        self.stats.produced += 1
        if self.equivocate_slot_index is not None and self.stats.produced == self.equivocate_slot_index + 1:
            other = build_slot(self.kp, self.genesis, parent, self.frozen[parent], slot,
                               built.included + [self._equivocation_tx(self.frozen[parent])])
            variants.append(other.packets)
            self.stats.equivocated += 1
            self.equivocated_slots.append(slot)
        self.bs.put_bank_hash(built.record)
        res = self.insert(built.packets)
        if res.rejected:
            raise AssertionError(f"own shreds rejected: {res.rejected[:2]}")
        self.complete.discard(slot)
        self.produced.add(slot)
        self._frozen(slot, parent, built.result)
        self.stats.last_produced_ms[slot] = self.clock_ms()
        if len(self.stats.last_produced_ms) > 64:
            del self.stats.last_produced_ms[min(self.stats.last_produced_ms)]
        if self.equivocate_split and len(variants) == 2:
            await self._push_split(slot, variants)
        else:
            await self._publish(variants)
        await self.decide()

    def _equivocation_tx(self, parent: SlotResult) -> bytes:
        """A transfer between the localnet test users that only the second version of an
        equivocated slot carries (``--equivocate-slot``, a test-harness behaviour)."""
        from ..ledger.producer import transfer_tx
        from .localnet import user_keypairs

        users = user_keypairs(self.genesis.chain_id, 2)
        return transfer_tx(users[0], users[1].pubkey, random.randint(1, 1000), parent.bank.last_blockhash)

    async def _push_split(self, slot: int, variants: list[list[bytes]]) -> None:
        """Test harness (``--equivocate-split``): no gossip for this slot; the data shreds of
        the version we keep go straight to every peer but one, the other version's to that
        one (``/ambient/shred-push/1``), so that peers hold different versions and only
        votes (and repair) can reconcile them."""
        from ..net.host import pubkey_of_peer_id

        if self.node is None or self.node.host is None:
            return
        host = self.node.host
        peers = sorted(host.get_network().connections.keys(), key=str)
        if not peers:
            return
        record: dict[str, list[str]] = {"a": [], "b": []}
        for i, peer in enumerate(peers):
            which = 1 if i == len(peers) - 1 and len(peers) > 1 else 0
            data = [p for p in variants[which] if len(p) == DATA_PAYLOAD_BYTES]  # data shreds only
            for j in range(0, len(data), MAX_PUSH_SHREDS):
                try:
                    push = ShredPush(random.getrandbits(32), tuple(data[j:j + MAX_PUSH_SHREDS]))
                    await request(host, peer, PROTO_SHRED_PUSH, push, timeout=REPAIR_TIMEOUT_S)
                except ReqRespError:
                    break
            pk = pubkey_of_peer_id(peer)
            record["ab"[which]].append(encode_address(pk) if pk else str(peer))
        self.split_recipients[slot] = record

    async def _publish(self, variants: list[list[bytes]]) -> None:
        if self.node is None or self.node.gossip is None:
            return
        n = SHREDS_PER_GOSSIP_MESSAGE
        chunks = [[v[i : i + n] for i in range(0, len(v), n)] for v in variants]
        for i in range(max(len(c) for c in chunks)):
            for c in chunks:
                if i < len(c):
                    await self.node.gossip.publish("shreds", encode(ShredBatch(shreds=tuple(c[i]))))

    # -- repair ---------------------------------------------------------------------------
    def wanted_slots(self) -> list[int]:
        """Slots to repair: known here (partial, or a parent named by a child) or voted on by
        peers, not complete, above the root, and at least a slot in the past."""
        root = self.cons.root
        horizon = self.slot_at(self.clock_ms()) - 1
        out: set[int] = set()
        orphans = set()
        for m in self.bs.slot_metas():
            if root < m.slot < horizon and not m.is_full and m.slot not in self.dead:
                out.add(m.slot)
                if m.received == 0:  # a placeholder: a stored child names it as parent
                    orphans.add(m.slot)
        self.orphans = orphans
        self.wanted = out
        for s in self.pending_votes:
            if root < s < horizon and s not in self.dead:
                sm = self.bs.slot_meta(s)
                if sm is None or not sm.is_full:
                    out.add(s)
        return sorted(out)[:REPAIR_SLOTS_PER_ROUND]

    async def _repair_loop(self) -> None:
        limiter = trio.CapacityLimiter(REPAIR_PARALLEL)
        while True:
            await trio.sleep(REPAIR_INTERVAL_S)
            host = self.node.host if self.node is not None else None
            if host is None:
                continue
            peers = list(host.get_network().connections.keys())
            if not peers:
                continue
            wanted = self.wanted_slots()
            if self.syncing or self.isolated():
                # Probe the clock's recent slots: a restarted node learns the network's tip
                # (and from it, by orphan repair, everything it missed) even while its
                # gossip mesh is still re-forming.
                cur = self.slot_at(self.clock_ms())
                for s in range(cur - SYNC_PROBE_SLOTS - 1, cur - 1):
                    m = self.bs.slot_meta(s)
                    if s > self.cons.root and (m is None or not m.is_full) and s not in wanted:
                        wanted.append(s)
            if not wanted:
                continue
            reqs: list[Any] = []
            if self.orphans:  # learn up to 16 ancestors at once (their highest shreds)
                reqs.append((PROTO_REPAIR, RepairRequest(REPAIR_ORPHAN, min(self.orphans), 0, random.getrandbits(32))))
            for slot in wanted:
                meta = self.bs.slot_meta(slot)
                first = meta.consumed if meta is not None else 0
                reqs.append((PROTO_REPAIR_SLOT, SlotShredsRequest(slot, first, random.getrandbits(32))))
            self.stats.repair_requests += len(reqs)
            got: list[bytes] = []
            async with trio.open_nursery() as nursery:
                for i, (proto, req) in enumerate(reqs[:REPAIR_MAX_REQUESTS_PER_ROUND]):
                    peer = peers[(i + random.randrange(len(peers))) % len(peers)]
                    nursery.start_soon(_repair_one, host, peer, proto, req, limiter, got)
            if got:
                res = self.insert(got)
                self.stats.repaired_shreds += res.inserted + res.recovered
                self.replay_ready()
                await self.decide()

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.clock_ms()
        cur = self.slot_at(now)
        leader = self.book.leader(cur)
        t = self.cons.tower
        s = self.stats
        return {
            "consensus": {
                "slot": cur,
                "leader": encode_address(leader) if leader else None,
                "processed": self.cons.processed_slot(),
                "confirmed": self.cons.confirmed_slot(),
                "finalized": (fin := self.finalized_slot()),
                "finalized_slots": bisect.bisect_right(self.root_list, fin),
                "root": self.cons.finalized_slot(),
                "rooted_slots": self.rooted_count,
                "last_vote": t.last_voted_slot,
                "tower_depth": len(t.votes),
                "slot_ms": self.slot_ms,
                "behind": self.behind(),
                "syncing": self.syncing,
                "isolated": self.isolated(),
                "produced": s.produced,
                "equivocated": s.equivocated,
                "replayed": s.replayed,
                "dead": s.dead,
                "duplicates": s.duplicates,
                "duplicate_slots": sorted(self.duplicate_slots_seen),
                "dumped": s.dumped,
                "equivocated_slots": self.equivocated_slots,
                "split_recipients": {str(k): v for k, v in self.split_recipients.items()},
                "votes_in": s.votes_in,
                "votes_out": s.votes_out,
                "pending_vote_slots": len(self.pending_votes),
                "shreds_in": s.shreds_in,
                "shreds_rejected": s.shreds_rejected,
                "repair_requests": s.repair_requests,
                "repaired_shreds": s.repaired_shreds,
                "txs_in": s.txs_in,
                "txs_included": s.txs_included,
                "votes_landed": s.votes_landed,
                "votes_included": s.votes_included,
                "vote_pool": len(self.vote_pool),
                "weights_epoch": self.weights_epoch,
                "lstake": self.lstake_table(),
                "mempool": len(self.mempool),
                "confirm_latency_ms": _percentiles(list(self.confirm_latency_ms)),
            }
        }

    def lstake_table(self) -> dict[str, dict[str, int]]:
        """Per identity: its vote weight now, and the leader slots and landed votes credited
        to it from rooted slots (all epochs)."""
        b = self.book
        ids = set(self.cons.stakes) | set(b.leader_credits) | set(b.vote_credits)
        return {encode_address(k): {"weight": self.cons.stakes.get(k, 0), "leader_slots": b.leader_credits[k],
                                    "vote_credits": b.vote_credits[k]} for k in sorted(ids)}

    def status_line(self) -> str:
        c = self.status()["consensus"]
        leader = (c["leader"] or "-")[:8]
        return (f"slot={c['slot']} processed={c['processed']} confirmed={c['confirmed']} "
                f"finalized={c['finalized']} leader={leader} produced={c['produced']} votes={c['votes_out']}")

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        cmd = req.get("cmd")
        if cmd == "chain":
            lo = int(req.get("from", 0))
            out = []
            for r in self.bs.roots():
                if r < lo:
                    continue
                rec = self.bs.bank_hash(r)
                out.append([r, rec.bank_hash.hex() if rec else None])
            return {"ok": True, "roots": out, "finalized": self.finalized_slot(), "root": self.cons.finalized_slot()}
        if cmd == "slot_info":
            slot = int(req["slot"])
            rec = self.bs.bank_hash(slot)
            proof = self.bs.duplicate_proof(slot)
            return {"ok": True, "slot": slot, "bank_hash": rec.bank_hash.hex() if rec else None,
                    "last_blockhash": rec.last_blockhash.hex() if rec else None,
                    "parent": rec.parent_slot if rec else None, "rooted": self.bs.is_root(slot),
                    "dead": (d.reason if (d := self.bs.dead_slot(slot)) else None),
                    "duplicate_proof": proof.kind if proof else None}
        if cmd == "submit_tx":
            raw = bytes.fromhex(req["tx_hex"])
            self._add_tx(raw)
            if self.node is not None and self.node.gossip is not None:
                await self.node.gossip.publish("txs", raw)
            return {"ok": True}
        return None

    def close(self) -> None:
        self.bs.close()
