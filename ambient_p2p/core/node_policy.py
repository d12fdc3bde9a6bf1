"""The validator's policy, one sans-IO object over the machines of ``core/`` (normative
text: spec/node.md "Node policy"): the slot tracker (slots.py), duplicate votes
(duplicates.py), readiness (readiness.py), the consensus driver (consensus.py), finality
(finality.py), the pools (pools.py) and the leader rule (leader_policy.py). The shell
(node/validator.py) does the disk, network and worker-thread work and feeds the results
here; what to vote, produce, dump or root is decided here, from injected time.

Events (methods) and what they decide; "-> X" names the effects the shell performs:

| event (method)                  | rule                                                               | effects for the shell |
|---------------------------------|--------------------------------------------------------------------|-----------------------|
| ``stored(events, dups)``        | insert facts -> slot tracker; a duplicate proof marks fork choice  | -> slot effects       |
| ``replay_job(replay)``          | a queued Replay: superseded -> none; leader on the fork through    | ``ReplayJob`` or none |
|                                 | the parent + the parent's result; neither -> ReplayFailed          | (-> slot effects)     |
|                                 | ``no-leader-or-parent`` (cannot happen: the tracker checked both)  |                       |
| ``replayed(slot, res, dup)``    | bank kept; Replayed -> tracker (``replay_failed``: ReplayFailed)   | -> slot effects       |
| (slot effect) ``SlotFrozen``    | the bank's LStake provider (``fork_weights``, with a book);        | -> ``SlotFrozen``     |
|                                 | readiness; fork choice (if above the root and on it); the slot's   |                       |
|                                 | landed votes count; its pending votes are released                 |                       |
| (slot effect) ``MarkDead``      | bank dropped; pending votes for it become foreign (may dump)       | -> ``MarkDead``       |
| (dup effect) ``DumpSlot``       | fork choice drops the subtree; tracker DuplicateConfirmed; the     | -> Purge, ClearDead,  |
|                                 | confirming votes wait as pending; readiness forgets the slot       | RepairSlot            |
| ``count_vote(vote)``            | finality notes the voter's root; fork choice counts it, or the    | (as DumpSlot)         |
|                                 | duplicate tracker keeps it (Unknown / FrozenAs / DeadHere)         |                       |
| ``add_vote_tx`` / ``add_tx``    | vote pool (voters with weight) + count_vote / mempool (dedupe)     | -                     |
| ``delivered(kind, payload)``    | gossip ``votes``: parsed (else ignored) -> add_vote_tx; ``txs``:   | (as count_vote)       |
|                                 | add_tx, verified by the topic's check; other topics: nothing       |                       |
| ``check_tx(raw)``               | gossip admission: one packet at most, parses, signatures verify,   | reason or None        |
|                                 | the fee payer can pay in the working bank (``unfunded``)           |                       |
| ``check_vote_tx(raw, origin)``  | gossip admission: a vote transaction signed by the message's       | reason or None        |
|                                 | origin that the consensus driver accepts (kept for ``vote_tx_of``) |                       |
| ``vote_decision(now)``          | 1. confirmation latency of own slots; 2. restart guard lifted when | -> ``CastVote``       |
|                                 | the cluster root passes it; 3. the last vote re-sent once after a  | (tower record, then   |
|                                 | restart; 4. readiness: syncing / behind / isolated -> no vote;    | vote), ``RootChain``  |
|                                 | 5. the consensus driver (tower BFT)                                |                       |
| ``rooted(chain)``               | first the schedule book credits ``chain`` in slot order (leaders,  | -> slot effects,      |
|                                 | landed voters, work) and prunes its LStake epochs; then root       | ``TakeSnapshot``,     |
|                                 | history, finality; at an epoch's first root the new vote weights;  | ``PurgeLedger``       |
|                                 | everything at or below the root pruned; the ledger history rules   |                       |
|                                 | (core/history.py): snapshot, purge                                 |                       |
| ``leader(now, mono)``           | own slot, once: ``leader_decision`` on ``Consensus.build_parent``; | Build / Wait / Skip   |
|                                 | "behind" dated on the monotonic clock (vote receipts are mono)     |                       |
| ``prepare(now)``                | the next own slot and the parent it would be built on, when that   | (start its PoH early) |
|                                 | parent is frozen: its PoH starts now (skipped slots hashed as they |                       |
|                                 | pass, spec/poh.md "Preparing the next slot")                       |                       |
| ``leader_step(now, mono)``      | ``leader(now, mono)``; unless it builds: ``prepare(now)`` and when | ``LeaderStep``        |
|                                 | to ask again (``leader_policy.next_wake_ms``)                      |                       |
| ``may_build(slot, parent)``     | parent frozen here, slot not frozen/dead/dumped, not built before  | -                     |
|                                 | a restart (a second version would be an equivocation)              |                       |
| ``take_for_build`` /            | only while ``may_build``: the pools' transactions and votes and    | (txs, votes, parent)  |
| ``take_for_intake(st)``         | the parent / one PoH-clock intake step (``SlotIntake.take``) and   | / (txs, votes,        |
|                                 | which of its transactions were verified at admission               | verified)             |
| ``produced(...)``               | pools lose what the slot took; the slot froze as ``Produced``      | -> slot effects       |
| ``restart(...)``                | the tower rooted at the base at least; stored slots above the base | -> slot effects       |
|                                 | -> tracker (``slots.restart_events``: dead / full / partial); the  |                       |
|                                 | slots this node led there are never built again                    |                       |
| (slot effect) ``SlotFrozen``    | while restarting, a slot the ledger rooted above the base is       | (schedule book:       |
|                                 | credited to the schedule book as it replays, in slot order         | ``credit_replayed_    |
|                                 | (after the freeze's own rules)                                     | root``)               |
| ``restarted()``                 | the book credits the ledger's roots above the base (those not yet  | -> slot effects       |
|                                 | credited) up to the ledger root; weights, pruning; a tower missing |                       |
|                                 | or older than the ledger root -> the restart guard ``LostVotes``   |                       |
|                                 | (spec/tower.md); ``loaded``                                        |                       |
| ``repair_plan(now)``            | ``slots.repair_plan``; what it wants feeds readiness ("behind");   | (slots to ask for,    |
|                                 | the lowest orphan's ancestors are asked for in one request         | orphan or None)       |
| ``repair_wanted(now, peers)``   | no peer: no plan (readiness hears nothing); else ``repair_plan``   | (as repair_plan)      |
| ``snapshot_saved(slot, err)``   | a ``TakeSnapshot`` performed: counted, or refused (older stays)    | -                     |
| ``fork_slots(slot, floor)``     | the frozen ancestry of ``slot`` above ``floor`` (the schedule      | (slots, ascending)    |
|                                 | book's credited root), ascending: the fork a schedule beyond the   |                       |
|                                 | root's reach is computed on (spec/node.md "Leader schedule on a    |                       |
|                                 | fork"); ``landed_voters`` / ``work_events`` of each                |                       |
| ``fork_at(slot, floor)``        | ``fork_slots`` with each slot's bank hash, voters and work; the     | (``Fork``)            |
|                                 | working fork = ``fork_at(processed tip)`` (memoized per tip)       |                       |
| ``unreplayed_above(tip, mono)`` | the lowest slot above ``tip`` held, named as a parent or voted for | (slot or None)        |
|                                 | but not replayed, dead slots excepted (memoized per tip 200 ms)   |                       |
| ``schedule_epochs()``           | the epochs whose schedules an insert may check shreds against:     | (range of epochs)     |
|                                 | from the one before the root's to the one after the working tip's  |                       |
| ``frozen_leaders(now)``         | the book's schedules of ``schedule_epochs`` + the clock's epoch    | (slot -> leader)      |
|                                 | and the next, frozen for worker threads                            |                       |
| ``leader_final(slot)``          | the slot's schedule is the root's: a shred from another leader     | bool                  |
|                                 | blames its sender (else ``other-fork-leader``)                     |                       |
| ``fork_weights(slot)``          | vote weights as the fork through ``slot`` sees them (the book in   | (epoch -> weights)    |
|                                 | use, late-bound; ``extends``)                                      |                       |
| ``use_book(book, mono)``        | the book credited from now on; its working fork and unreplayed     | -                     |
|                                 | slots asked of this policy                                         |                       |
| ``report(now)``                 | the status's policy part, with the clock slot's leader and the     | (dict)                |
|                                 | LStake table (``lstake_table``)                                    |                       |
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from . import duplicates as dup
from . import readiness as rd
from . import slots as sl
from .bank import LAMPORTS_PER_SIGNATURE, Bank, BlockError, parse_transaction
from .consensus import Consensus, NewRoot, PersistTower, SendVote, Vote, VoteRejected
from .constants import PACKET_DATA_BYTES
from .crypto import Keypair, encode_address
from .finality import Finality
from .forkchoice import ForkChoiceError
from .history import HistoryEffect, Housekeeping, LedgerHistory
from .leader_policy import (
    Build,
    Decision,
    Skip,
    SlotIntake,
    WaitForParent,
    leader_decision,
    next_wake_ms,
    slot_duration_ms,
)
from .lstake import epoch_of
from .messages import Genesis
from .node_report import lstake_rows, percentiles
from .pools import Mempool, VotePool
from .schedule import Fork, ForkSlot, ScheduleBook
from .shred import OFFSET_SLOT
from .tower import LostVotes, Tower, TowerRecord, is_supermajority
from .vote_program import VoteTx, VoteTxError, parse_vote_transaction, vote_transaction
from .work import WorkEvent

#: How far ahead the leader looks for its next own slot to prepare (start its PoH on the
#: parent it would build on): the gap between a node's leader windows is a few windows.
LEADER_PREPARE_SCAN_SLOTS = 64

#: Leader receipt -> confirmation latencies kept for status.
LATENCY_SAMPLES = 10_000
#: Slots with a stored duplicate proof listed in status (test evidence; capped).
MAX_DUPLICATE_SLOTS_SEEN = 1024
#: Produced slots whose wall time status lists.
MAX_PRODUCED_TIMES = 64
#: A transaction is at most one packet (Solana's PACKET_DATA_SIZE).
MAX_TX_BYTES = PACKET_DATA_BYTES
#: How long the lowest unreplayed slot above the working tip is reused (``unreplayed_above``:
#: a node far behind asks it for every shred of a later epoch).
UNREPLAYED_MEMO_MS = 200
#: Vote transactions the gossip check parsed, kept for ingest (the oldest go first): as
#: many as the shell's inbox holds deliveries.
CHECKED_VOTES_KEPT = 4096


def touched_slots(packets: Sequence[bytes], rejected: Iterable[int], completed: Iterable[int]) -> list[int]:
    """The slots an insert touched, ascending: those of the packets it did not reject
    (``rejected``: their indices) and those it completed; the shell reads their metas for
    the insert's facts (``slots.stored_event``)."""
    bad = set(rejected)
    return sorted({int.from_bytes(p[OFFSET_SLOT:OFFSET_SLOT + 8], "little") for i, p in enumerate(packets)
                   if i not in bad and len(p) >= OFFSET_SLOT + 8} | set(completed))


class FrozenResult(Protocol):
    """A frozen slot as the shell keeps it (ledger.replay.SlotResult): its bank."""

    @property
    def bank(self) -> Bank: ...


R = TypeVar("R", bound=FrozenResult)


@dataclass(frozen=True)
class CastVote:
    """Write ``record`` durably (None: the tower is unchanged), then let ``vote`` out
    (None: an identity without LStake keeps its tower and sends nothing)."""

    record: TowerRecord | None
    vote: VoteTx | None


@dataclass(frozen=True)
class RootChain:
    """The tower rooted ``slot``: store ``chain`` (ascending, above the last stored root)
    as roots, then call :meth:`NodePolicy.rooted` (which credits it)."""

    slot: int
    chain: tuple[int, ...]


ShellEffect = sl.Effect | CastVote | RootChain | HistoryEffect


@dataclass(frozen=True)
class LeaderStep:
    """One turn of the leader loop: the decision for the current slot; unless it builds, the
    slot (and parent) whose PoH may start now, and when to ask again (wall ms)."""

    decision: Decision
    prepare: tuple[int, int] | None
    wake_ms: float


@dataclass(frozen=True)
class ReplayJob(Generic[R]):
    """What replaying a queued ``Replay`` needs: the slot, its parent's frozen result, and
    the leader whose signature its shreds carry (on the fork through the parent)."""

    slot: int
    parent: R
    leader: bytes


@dataclass
class NodeStats:
    produced: int = 0
    replayed: int = 0
    dead: int = 0
    duplicates: int = 0
    votes_in: int = 0
    votes_out: int = 0
    votes_unsent: int = 0
    votes_refreshed: int = 0  # last votes re-sent after a restart
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
    leader_behind_waits: int = 0  # own slots in which the leader waited "behind" at least once
    leader_behind_slot: int = -1  # the last of them (counted once per slot)
    duplicate_slots: set[int] = field(default_factory=set)
    last_produced_ms: dict[int, int] = field(default_factory=dict)
    snapshots: int = 0  # node snapshots written
    snapshot_failures: int = 0  # rooted banks too large for one snapshot record (kept the older one)
    snapshot_slot: int | None = None  # the newest written or restored from
    cleanups: int = 0
    purged_slots: int = 0
    restored_from: int = 0  # the slot the last load started from (0: genesis)


def genesis_args(genesis: Genesis) -> dict[str, Any]:
    """The policy's parameters from ``genesis``: the bootstrap identities with LStake weigh
    the first votes; its hash roots the slot tracker; slot length, start time (ms) and epoch
    length place every slot."""
    return {"stakes": {n.identity: n.lstake for n in genesis.bootstrap_nodes if n.lstake > 0},
            "genesis_hash": genesis.hash(), "slot_ms": slot_duration_ms(genesis),
            "genesis_ms": genesis.creation_time_s * 1000, "spe": genesis.epoch.slots_per_epoch}


class NodePolicy(Generic[R]):
    def __init__(self, kp: Keypair, stakes: Mapping[bytes, int], tower: Tower | None, *, genesis_hash: bytes,
                 slot_ms: float, genesis_ms: int, started_ms: int, spe: int,
                 leader_of: Callable[[int], bytes | None],
                 vote_weights: Callable[[int], Mapping[bytes, int] | None],
                 history: LedgerHistory | None = None, book: ScheduleBook | None = None) -> None:
        self.housekeeping = Housekeeping(history)
        #: the schedule book the roots are credited to (None: policy tests without one)
        self.book = book
        self.kp, self.slot_ms, self.genesis_ms, self.spe = kp, slot_ms, genesis_ms, spe
        self.leader_of, self.vote_weights = leader_of, vote_weights
        self.cons = Consensus(kp, stakes, tower=tower) if tower else Consensus(kp, stakes)
        #: the tower file's root as read (0: none yet); None: no tower file
        self.tower_file_root = None if tower is None else (tower.root or 0)
        self.weights_epoch = 0  # the epoch whose LStake snapshot weighs votes now
        self.slots = sl.SlotTracker(0, genesis_hash, leader_known=lambda s: self.leader_of(s) is not None)
        self.banks: dict[int, R] = {}  # frozen slots' results (fork-choice slots + root)
        self.dups = dup.DuplicateTracker()
        self.ready = rd.Readiness(syncing=bool(self.cons.tower.votes), started_ms=started_ms, slot_ms=slot_ms)
        self.finality = Finality(kp.pubkey)
        self.mempool = Mempool()
        self.vote_pool = VotePool()
        self.root_written = 0
        #: slots above the restart root this identity produced before it stopped: never again
        self.produced_before: set[int] = set()
        self.last_no_vote_reason: str | None = None
        self.leader_decided = -1  # the last own slot the leader rule built or skipped
        self.stats = NodeStats()
        self.awaiting_confirm: dict[int, list[int]] = {}  # slot -> leader receipt times (mono ms)
        self.confirm_latency_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        #: vote transactions the gossip check accepted (signatures verified), by raw bytes
        self.checked_votes: collections.OrderedDict[bytes, VoteTx] = collections.OrderedDict()
        self.loading_roots: set[int] = set()  # ledger roots above the restart base, until restarted
        self._roots_above: list[int] = []  # the same, in the ledger's order, credited at restarted
        self.loaded = False  # restarted: the stored slots replayed
        self._fork_memo: tuple[tuple[int, int], Fork] | None = None  # ((tip, floor), working fork)
        self._unreplayed_memo: tuple[int, int, int | None] | None = None  # (tip, mono ms, answer)

    @property
    def stakes(self) -> Mapping[bytes, int]:
        return self.cons.stakes

    def slot_at(self, now_ms: int) -> int:
        return max(0, int((now_ms - self.genesis_ms) // self.slot_ms))

    def slot_start_ms(self, slot: int) -> float:
        return self.genesis_ms + slot * self.slot_ms

    # -- machine effects --------------------------------------------------------------------
    def apply(self, effects: Iterable[sl.Effect | dup.Effect], now_mono_ms: int) -> list[ShellEffect]:
        """Apply the slot and duplicate machines' effects in order; return those the shell
        performs (Replay, SlotFrozen, MarkDead, Purge, ClearDead, RepairSlot)."""
        out: list[ShellEffect] = []
        for e in effects:
            if isinstance(e, sl.SlotFrozen):
                out.append(e)
                self._provide_weights(self.banks[e.slot].bank)
                out += self._frozen(e.slot, e.parent, now_mono_ms)
                if e.slot in self.loading_roots and self.book is not None:  # in slot order, as
                    bank = self.banks[e.slot].bank  # a node that never stopped credited it
                    self.book.credit_replayed_root(e.slot, bank.landed_votes, bank.work_events)
            elif isinstance(e, sl.MarkDead):
                self.stats.dead += 1
                self.banks.pop(e.slot, None)
                out.append(e)
                out += self.apply(self.dups.on_dead(e.slot, self.cons.stakes, self.cons.total_stake), now_mono_ms)
            elif isinstance(e, sl.Purge):
                for s in e.slots:
                    self.banks.pop(s, None)
                    self.awaiting_confirm.pop(s, None)
                out.append(e)
            elif isinstance(e, dup.DumpSlot):
                self.stats.dumped += 1
                self.cons.dump_slot(e.slot)
                out += self.apply(self.slots.handle(sl.DuplicateConfirmed(e.slot, e.bank_hash)), now_mono_ms)
                self.dups.on_dumped(e.slot, e.bank_hash, now_mono_ms)
                self.ready.handle(rd.SlotDumped(e.slot))
            elif isinstance(e, dup.CountVotes):
                for v in e.votes:
                    out += self._count(v, now_mono_ms)
            else:  # Replay, ClearDead, RepairSlot: the shell's alone
                out.append(e)
        return out

    def _frozen(self, slot: int, parent: int, now_mono_ms: int) -> list[ShellEffect]:
        res = self.banks[slot]
        assert res.bank.bank_hash is not None
        self.stats.votes_landed += len(res.bank.landed_votes)
        own = slot in self.slots.own or self.leader_of(slot) == self.kp.pubkey
        self.ready.handle(rd.SlotFrozen(slot, self.slot_start_ms(slot), own=own))
        if slot <= self.cons.root:
            return []
        try:
            self.cons.on_replayed(slot, parent, res.bank.bank_hash)
        except ForkChoiceError:
            return []  # not descended from our root: a fork that can no longer win
        self.cons.on_block_votes(res.bank.landed_votes)
        return self.apply(self.dups.on_frozen(slot), now_mono_ms)

    # -- insert and replay --------------------------------------------------------------------
    def stored(self, events: Sequence[sl.ShredsStored | sl.Completed], duplicates: Iterable[int],
               now_mono_ms: int) -> list[ShellEffect]:
        """An insert stored shreds (``events``, one per touched slot) and found duplicate
        proofs for ``duplicates`` (fork choice stops building on them)."""
        out: list[ShellEffect] = []
        for ev in events:
            out += self.apply(self.slots.handle(ev), now_mono_ms)
        for slot in duplicates:
            self.stats.duplicates += 1
            self.cons.on_duplicate(slot)
            if len(self.stats.duplicate_slots) < MAX_DUPLICATE_SLOTS_SEEN:
                self.stats.duplicate_slots.add(slot)
        return out

    def replay_current(self, r: sl.Replay) -> bool:
        """A queued Replay still stands (a dump may have sent the slot back to full)."""
        return self.slots.state(r.slot) is sl.SlotState.REPLAYING and self.slots.parent(r.slot) == r.parent

    def replay_job(self, r: sl.Replay, now_mono_ms: int) -> tuple[ReplayJob[R] | None, list[ShellEffect]]:
        """The job for a queued ``Replay`` (the shell performs them in queue order: parents
        first) and the effects to perform first. No job when it is superseded (a dump sent
        the slot back to full; a later Replay is queued), or when its leader on the fork
        through the parent or the parent's bank is missing: cannot happen, the tracker
        checked both, so the slot fails ``no-leader-or-parent``."""
        if not self.replay_current(r):
            return None, []
        leader = self.leader_of(r.slot) if self.book is None else (
            self.book.leader(r.slot, self.fork_at(r.parent, self.book.credited_through)))
        parent = self.banks.get(r.parent)
        if leader is None or parent is None:
            return None, self.replay_failed(r.slot, "no-leader-or-parent", now_mono_ms)
        return ReplayJob(r.slot, parent, leader), []

    def replayed(self, slot: int, res: R, duplicate: bool, now_mono_ms: int) -> list[ShellEffect]:
        assert res.bank.bank_hash is not None
        self.banks[slot] = res
        self.stats.replayed += 1
        # what landed in any leader's slot leaves the mempool (spec/tpu.md); policy tests' fake
        # banks carry no transaction log
        self.mempool.landed([t.raw for t in getattr(res.bank, "tx_log", ())])
        if duplicate:
            self.cons.on_duplicate(slot)
        return self.apply(self.slots.handle(sl.Replayed(slot, res.bank.bank_hash)), now_mono_ms)

    def replay_failed(self, slot: int, reason: str, now_mono_ms: int) -> list[ShellEffect]:
        return self.apply(self.slots.handle(sl.ReplayFailed(slot, reason)), now_mono_ms)

    # -- votes and transactions ---------------------------------------------------------------
    def count_vote(self, vote: Vote, now_mono_ms: int) -> list[ShellEffect]:
        """A peer's vote: fork choice counts it, or the duplicate machine keeps it."""
        return self._count(vote, now_mono_ms)

    def _count(self, vote: Vote, now_mono_ms: int) -> list[ShellEffect]:
        self.finality.on_voter_root(vote.voter, vote.root)
        try:
            if self.cons.on_vote(vote):
                return []
        except VoteRejected:
            return []
        ours = self.cons.bank_hashes.get(vote.slot)
        own: dup.Own = dup.FrozenAs(ours) if ours is not None else (
            dup.DeadHere() if self.slots.is_dead(vote.slot) else dup.Unknown())
        return self.apply(self.dups.on_vote(vote, own, now_mono_ms, self.cons.stakes, self.cons.total_stake),
                          now_mono_ms)

    def add_vote_tx(self, vt: VoteTx, now_mono_ms: int) -> list[ShellEffect]:
        self.stats.votes_in += 1
        if vt.vote.voter in self.cons.stakes:
            self.vote_pool.add(vt)
        return self._count(vt.vote, now_mono_ms)

    def delivered(self, kind: str, payload: bytes, now_mono_ms: int) -> list[ShellEffect]:
        """A gossip delivery on the ``votes`` or ``txs`` topic (``shreds`` go to insert): a
        vote transaction enters the vote pool and is counted (an undecodable one is
        ignored); a transaction enters the mempool, its signatures verified by the topic's
        check (:meth:`check_tx`)."""
        if kind == "votes":
            vt = self.vote_tx_of(payload)
            return [] if vt is None else self.add_vote_tx(vt, now_mono_ms)
        if kind == "txs":
            self.add_tx(payload, now_mono_ms, verified=True)
        return []

    def check_vote_tx(self, raw: bytes, origin: bytes) -> str | None:
        """The ``votes`` gossip check: None when ``raw`` is a vote transaction signed by the
        message's ``origin`` that the consensus driver accepts (then kept for
        :meth:`vote_tx_of`), else the reason."""
        try:
            vt = parse_vote_transaction(raw)
            if vt.vote.voter != origin:
                return "vote-origin-mismatch"
            self.cons.check_vote(vt.vote)
        except (VoteTxError, VoteRejected) as exc:
            return exc.reason
        self.checked_votes[raw] = vt
        while len(self.checked_votes) > CHECKED_VOTES_KEPT:
            self.checked_votes.popitem(last=False)
        return None

    def vote_tx_of(self, raw: bytes) -> VoteTx | None:
        """A delivered vote transaction: the one the check parsed, else parsed now (None:
        not a vote transaction)."""
        try:
            return self.checked_votes.pop(raw, None) or parse_vote_transaction(raw)
        except VoteTxError:
            return None

    def check_tx(self, raw: bytes) -> str | None:
        """The ``txs`` gossip check: one Solana wire transaction that parses, sanitizes and
        whose signatures verify, and whose fee payer can pay its fee in the working bank once
        loaded (``unfunded`` otherwise: such a transaction can never land, spec/network.md
        "Blame"); None when admitted, else the reason."""
        if len(raw) > MAX_TX_BYTES:
            return "oversized"
        try:
            tx = parse_transaction(raw, verify_signatures=True)
        except BlockError as exc:
            return exc.reason
        bank = self.tip_bank() if self.loaded else None
        if bank is not None and bank.balance(tx.account_keys[0]) < LAMPORTS_PER_SIGNATURE * len(tx.signatures):
            return "unfunded"
        return None

    def tip_bank(self) -> Bank | None:
        """The best frozen bank: mempool admission checks blockhash age and status against it."""
        res = self.banks.get(self.cons.processed_slot())
        return None if res is None else res.bank

    def add_tx(self, raw: bytes, now_mono_ms: int, *, verified: bool = False) -> bool:
        """Mempool admission (core/pools.py rules 1-3); True if admitted. ``verified``: the
        shell checked its signatures (node/tpu.py, the gossip check)."""
        if self.mempool.add(raw, now_mono_ms, self.tip_bank(), verified=verified):
            self.stats.txs_in += 1
            return True
        return False

    # -- readiness and decisions ------------------------------------------------------------
    def behind(self, now_mono_ms: int) -> bool:
        return self.ready.behind(best=self.cons.processed_slot(), now_mono_ms=now_mono_ms,
                                 pending=self.dups.pending_receipts())

    def alone_supermajority(self) -> bool:
        return is_supermajority(self.cons.stakes.get(self.kp.pubkey, 0), self.cons.total_stake)

    def isolated(self, now_ms: int) -> bool:
        return self.ready.isolated(current_slot=self.slot_at(now_ms), leader_of=self.leader_of,
                                   me=self.kp.pubkey, alone_supermajority=self.alone_supermajority())

    def _note_confirmations(self, now_mono_ms: int) -> None:
        """Latency from this leader's receipt of a transaction to its slot's confirmation."""
        if not self.awaiting_confirm:
            return
        conf, fc = self.cons.confirmed_slot(), self.cons.forkchoice
        for slot in [s for s in self.awaiting_confirm if s <= conf]:
            times = self.awaiting_confirm.pop(slot)
            if slot in fc.parent and fc.is_ancestor(slot, conf):
                self.confirm_latency_ms.extend(float(now_mono_ms - t) for t in times)

    def vote_decision(self, now_ms: int, now_mono_ms: int) -> list[ShellEffect]:
        """Steps 1-5 of the table's ``vote_decision`` row."""
        self._note_confirmations(now_mono_ms)
        self.cons.lift_lost_votes(self.finality.cluster_root(self.cons.root, self.cons.stakes))
        out: list[ShellEffect] = []
        for eff in self.cons.refresh_last_vote(now_ms):
            assert isinstance(eff, SendVote)
            self.stats.votes_refreshed += 1
            out.append(CastVote(None, self._vote_tx(eff.vote)))
        pending, best = self.dups.pending_receipts(), self.cons.processed_slot()
        self.ready.evaluate(best=best, now_mono_ms=now_mono_ms, pending=pending,
                            alone_supermajority=self.alone_supermajority())
        reason = self.ready.no_vote_reason(behind=self.behind(now_mono_ms), isolated=self.isolated(now_ms))
        if reason is not None:
            self.last_no_vote_reason = reason
            return out
        effects = self.cons.decide(now_ms)
        self.last_no_vote_reason = self.cons.last_no_vote_reason
        record = None
        for eff in effects:
            if isinstance(eff, PersistTower):
                record = eff.record
            elif isinstance(eff, SendVote):
                assert record is not None
                self.stats.votes_out += 1
                out.append(CastVote(record, self._vote_tx(eff.vote)))
            elif isinstance(eff, NewRoot):
                out.append(RootChain(eff.slot, tuple(self._root_chain(eff.slot))))
        return out

    def _vote_tx(self, vote: Vote) -> VoteTx | None:
        """The vote as a transaction on the voted bank's blockhash (None without weight)."""
        voted = self.banks.get(vote.slot)
        if self.kp.pubkey not in self.cons.stakes or voted is None:
            return None
        raw = vote_transaction(self.kp, vote, voted.bank.last_blockhash)
        return VoteTx(raw, parse_transaction(raw, verify_signatures=False), vote)  # signed here

    def _root_chain(self, new_root: int) -> list[int]:
        chain, s = [], new_root
        while s > self.root_written and (p := self.slots.parent(s)) is not None:
            chain.append(s)
            s = p
        chain.reverse()
        return chain

    def rooted(self, root: int, chain: Sequence[int], now_mono_ms: int) -> list[ShellEffect]:
        """The shell stored ``chain`` (up to ``root``) as roots: the schedule book credits it
        (then drops LStake epochs no query can ask), root history, vote weights, pruning,
        then the ledger history's snapshot and purge (while the rooted bank is still held)."""
        if self.book is not None:
            self.book.on_rooted(list(chain), root, self.landed_voters, self.work_events)
            self.book.ledger.prune(epoch_of(root, self.book.spe))
        old_root, self.root_written = self.root_written, max(self.root_written, root)
        self.finality.on_rooted(chain)
        self._update_weights()
        out = self._prune(now_mono_ms)
        return out + list(self.housekeeping.rooted(old_root, root, has_bank=root in self.banks))

    def snapshot_saved(self, slot: int, error: str | None) -> None:
        """The shell performed ``TakeSnapshot(slot)``: written, or refused with ``error``
        (the older snapshot stays)."""
        if error is not None:
            self.stats.snapshot_failures += 1
            return
        self.stats.snapshots += 1
        self.stats.snapshot_slot = slot

    def _update_weights(self) -> None:
        """At the first root of a new epoch, weigh votes by that epoch's LStake snapshot."""
        epoch = epoch_of(self.cons.root, self.spe)
        if epoch != self.weights_epoch and (weights := self.vote_weights(epoch)) is not None:
            self.cons.set_stakes(weights)
            self.weights_epoch = epoch
            self.finality.prune(weights)

    def _prune(self, now_mono_ms: int) -> list[ShellEffect]:
        root = self.cons.root
        out = self.apply(self.slots.handle(sl.Rooted(root)), now_mono_ms)
        keep = set(self.cons.forkchoice.parent)
        self.banks = {s: r for s, r in self.banks.items() if s in keep}
        self.dups.prune(root)
        self.ready.handle(rd.Rooted(root))
        self.vote_pool.prune(root)
        self.awaiting_confirm = {s: t for s, t in self.awaiting_confirm.items() if s > root}
        self.produced_before = {s for s in self.produced_before if s > root}
        return out

    # -- production ---------------------------------------------------------------------------
    def leader(self, now_ms: int, now_mono_ms: int) -> Decision:
        """The leader rule for the current clock slot: only in this node's own slots, once
        per slot (a Build or Skip decides it; the shell builds a slot before it asks again).
        ``now_ms`` (wall) places the slot; ``now_mono_ms`` (monotonic) dates "behind", whose
        pending-vote receipt times are monotonic."""
        cur = self.slot_at(now_ms)
        if cur <= self.leader_decided or self.leader_of(cur) != self.kp.pubkey:
            return Skip("decided" if cur <= self.leader_decided else "not-leader")
        best = self.cons.build_parent(cur)
        d = leader_decision(now_ms, cur, best, start_ms=self.slot_start_ms(cur), slot_ms=self.slot_ms,
                            best_frozen=self.slots.is_frozen(best), best_is_own=best in self.slots.own,
                            behind=self.behind(now_mono_ms), may_produce=self.ready.may_produce(now_ms))
        if not isinstance(d, WaitForParent):
            self.leader_decided = cur
        elif d.reason == "behind" and self.stats.leader_behind_slot != cur:
            self.stats.leader_behind_slot = cur
            self.stats.leader_behind_waits += 1
        return d

    def leader_step(self, now_ms: int, now_mono_ms: int) -> LeaderStep:
        """``leader(now, mono)``; unless it builds, ``prepare(now)`` and the wake time (wall)."""
        d = self.leader(now_ms, now_mono_ms)
        if isinstance(d, Build):
            return LeaderStep(d, None, now_ms)
        return LeaderStep(d, self.prepare(now_ms), next_wake_ms(now_ms, d, self.slot_start_ms(self.slot_at(now_ms) + 1)))

    def prepare(self, now_ms: int) -> tuple[int, int] | None:
        """(slot, parent): this node's next undecided own slot within
        ``LEADER_PREPARE_SCAN_SLOTS`` and the parent a build would use now, when that parent
        is frozen here; its PoH may start now (agave's PoH keeps hashing on the reset bank)."""
        cur = self.slot_at(now_ms)
        first = max(cur, self.leader_decided + 1)
        slot = next((s for s in range(first, cur + LEADER_PREPARE_SCAN_SLOTS)
                     if self.leader_of(s) == self.kp.pubkey), None)
        if slot is None:
            return None
        parent = self.cons.build_parent(slot)
        if parent >= slot or parent not in self.banks or not self.slots.is_frozen(parent):
            return None
        return slot, parent

    def may_build(self, slot: int, parent: int) -> bool:
        """``parent`` is still frozen here, ``slot`` not yet frozen, dead or dumped, and not
        built by this node before a restart (a second version would be an equivocation)."""
        return slot not in self.produced_before and parent in self.banks and self.slots.is_frozen(parent) and (
            self.slots.state(slot) in (sl.SlotState.ABSENT, sl.SlotState.PARTIAL, sl.SlotState.FULL))

    def take_for_build(self, slot: int, parent: int, now_mono_ms: int) -> tuple[list[bytes], list[VoteTx], R] | None:
        """What a one-shot build of ``slot`` on ``parent`` takes: the mempool's and the vote
        pool's transactions and the parent's frozen result; None when :meth:`may_build`
        no longer holds (the parent was dumped or pruned while the shell waited, or the
        slot was built before a restart)."""
        if not self.may_build(slot, parent):
            return None
        return self.mempool.take(now_mono_ms), self.vote_pool.take(), self.banks[parent]

    def take_for_intake(self, st: SlotIntake, now_mono_ms: int) -> tuple[list[bytes], list[VoteTx], frozenset[bytes]]:
        """What the leader takes into its slot on the PoH clock at one intake step
        (``SlotIntake.take``: room, caps, nothing twice) from the mempool and the vote pool,
        and which of those transactions the mempool verified at admission (not verified
        again)."""
        txs, votes = st.take(self.mempool.take(now_mono_ms, limit=st.tx_room, exclude=st.seen_txs),
                             self.vote_pool.take())
        return txs, votes, frozenset(r for r in txs if self.mempool.is_verified(r))

    def produced(self, slot: int, parent: int, res: R, *, included: Sequence[bytes], dropped: Sequence[bytes],
                 included_votes: Sequence[VoteTx], now_ms: int, now_mono_ms: int) -> list[ShellEffect]:
        """A slot this node built (and stored): the pools lose what it took or refused; it
        is frozen as ``Produced``."""
        assert res.bank.bank_hash is not None
        self.vote_pool.remove_included(included_votes)
        self.stats.votes_included += len(included_votes)
        received = [t for raw in included if (t := self.mempool.received_ms(raw)) is not None]
        if received:
            self.awaiting_confirm[slot] = received
        self.mempool.landed(included)
        self.mempool.remove(dropped)
        self.stats.txs_included += len(included)
        self.stats.produced += 1
        self.banks[slot] = res
        self.stats.last_produced_ms[slot] = now_ms
        if len(self.stats.last_produced_ms) > MAX_PRODUCED_TIMES:
            del self.stats.last_produced_ms[min(self.stats.last_produced_ms)]
        return self.apply(self.slots.handle(sl.Produced(slot, parent, res.bank.bank_hash)), now_mono_ms)

    # -- restart and repair -------------------------------------------------------------------
    def restart(self, base: int, res: R, *, roots_above: Sequence[int], above: sl.StoredAbove,
                rooted_count: int, base_parent: int, now_mono_ms: int,
                from_snapshot: bool = False) -> list[ShellEffect]:
        """Start from ``base`` (a node snapshot's root, or genesis) with its frozen ``res``:
        the tower is rooted at least at ``base``; the stored slots ``above`` it enter the
        tracker (the shell then replays them, crediting ``roots_above`` as they freeze, and
        calls :meth:`restarted`). ``from_snapshot``: ``base`` is a node snapshot's root
        (reported as the newest snapshot until one is written)."""
        assert res.bank.bank_hash is not None
        self.stats.snapshot_slot = base if from_snapshot else None
        self._provide_weights(res.bank)
        tower = self.cons.tower.rooted_at_least(base)
        if tower is not self.cons.tower:  # the tower file is older than the snapshot, or absent
            self.cons = Consensus(self.kp, self.cons.stakes, tower=tower)
        rooted = ([base] if base else []) + list(roots_above)
        self.finality = Finality(self.kp.pubkey, rooted, older_count=rooted_count - 1 if base else 0,
                                 older_max=base_parent)
        self.root_written = max([base, *roots_above])
        self.produced_before = set(above.produced)  # never rebuilt (not "own in this run")
        self.loading_roots, self._roots_above = set(roots_above), list(roots_above)
        self.stats.restored_from = base
        self.banks = {base: res}
        self.slots = sl.SlotTracker(base, res.bank.bank_hash, leader_known=lambda s: self.leader_of(s) is not None)
        out: list[ShellEffect] = []
        for ev in sl.restart_events(above, root=self.cons.root, roots_above=roots_above):
            out += self.apply(self.slots.handle(ev), now_mono_ms)
        return out

    def restarted(self, now_mono_ms: int) -> list[ShellEffect]:
        """The stored slots replayed: vote weights, pruning, and the restart guard. A tower
        that was missing, or whose root is older than the ledger's root, may lack votes
        this node cast: every frozen slot above the ledger root may carry one
        (``LostVotes``, spec/tower.md "Restart without a tower"). The ledger's roots above the
        base are credited (those that did not replay) and the book's root reaches the ledger's."""
        if self.book is not None:
            self.book.on_rooted(self._roots_above, self.root_written, self.landed_voters, self.work_events)
        self.loading_roots, self._roots_above = set(), []
        self.loaded = True
        self._update_weights()
        out = self._prune(now_mono_ms)
        if self.tower_file_root is None or self.tower_file_root < self.root_written:
            lost = LostVotes.of(self.slots.parent, (s for s in self.slots.frozen_slots() if s > self.root_written))
            self.cons.lost = lost if lost.slots else None
        return out

    # -- the schedule's view of the fork -------------------------------------------------------
    def use_book(self, book: ScheduleBook, mono_ms: Callable[[], int]) -> None:
        """Credit roots to ``book`` from now on (a restart replaces the book) and let it ask
        this policy for the working fork and the lowest unreplayed slot above a tip
        (spec/node.md "Leader schedule on a fork"); ``mono_ms``: the shell's monotonic
        clock, read when the book asks (the memo of ``unreplayed_above`` ages on it)."""
        self.book = book
        book.working_fork = lambda: self.working_fork(book.credited_through)
        book.unreplayed_above = lambda tip: self.unreplayed_above(tip, mono_ms())

    def fork_slots(self, slot: int, floor: int) -> list[int]:
        """``slot`` and its ancestors above ``floor`` while frozen here (bank held), ascending."""
        out: list[int] = []
        s: int | None = slot
        while s is not None and s > floor and s in self.banks:
            out.append(s)
            s = self.slots.parent(s)
        out.reverse()
        return out

    def fork_at(self, slot: int, floor: int) -> Fork:
        """The unrooted frozen ancestry of ``slot`` (itself included) above ``floor`` (the
        schedule book's credited root), ascending, with what rooting each would credit: what
        the schedule book needs for schedules beyond the root's reach (spec/node.md "Leader
        schedule on a fork")."""
        return [ForkSlot(s, self.banks[s].bank.bank_hash or b"", self.landed_voters(s), self.work_events(s))
                for s in self.fork_slots(slot, floor)]

    def working_fork(self, floor: int) -> Fork:
        """The heaviest frozen bank's unrooted ancestry (memoized per tip and floor)."""
        key = (self.cons.processed_slot(), floor)
        if self._fork_memo is None or self._fork_memo[0] != key:
            self._fork_memo = (key, self.fork_at(key[0], floor))
        return self._fork_memo[1]

    def unreplayed_above(self, tip: int, now_mono_ms: int) -> int | None:
        """The lowest slot above ``tip`` this node holds or has heard of but not replayed
        (partial, full, replaying or dumped here, named as parent by a stored child, or voted
        for by a peer); dead slots excepted (the schedule book's ``unreplayed_above``).
        Asked only while the working fork has not reached an epoch's basis boundary (a node
        far behind asks it per shred of a later epoch: memoized per tip for
        ``UNREPLAYED_MEMO_MS``)."""
        m = self._unreplayed_memo
        if m is not None and m[0] == tip and now_mono_ms - m[1] < UNREPLAYED_MEMO_MS:
            return m[2]
        st = self.slots
        held = (s for s, state in st.states.items()
                if s > tip and state not in (sl.SlotState.FROZEN, sl.SlotState.DEAD, sl.SlotState.PRUNED))
        named = (p for p in st.children if p > tip and p not in st.states)
        voted = (s for s in self.dups.pending if s > tip and not st.is_dead(s))
        low = min(itertools.chain(held, named, voted), default=None)
        self._unreplayed_memo = (tip, now_mono_ms, low)
        return low

    def fork_weights(self, slot: int) -> Callable[[int], Mapping[bytes, int] | None]:
        """Vote weights as the fork through ``slot`` sees them (the schedule book's, on
        ``fork_at(slot)``): the root's weights whenever they are final, so only a stall
        changes anything. Without a book: ``vote_weights``."""
        if self.book is None:
            return self.vote_weights
        return lambda epoch: None if (book := self.book) is None else (  # late-bound: a restart replaces the book
            book.vote_weights(epoch, self.fork_at(slot, book.credited_through), extends=True))

    def _provide_weights(self, bank: Bank) -> None:
        """A frozen bank's ``lstake_provider`` (its children inherit it: epoch rewards and
        the Logit Pool draw weigh validators by it, spec/logit_pool.md "The draw"); only
        with a schedule book (the node's)."""
        if self.book is not None:
            bank.lstake_provider = self.fork_weights(bank.slot)

    def frozen_leaders(self, now_ms: int) -> Callable[[int], bytes | None]:
        """The computable schedules frozen for worker threads (an insert checks shreds
        against them): ``schedule_epochs`` with the clock's, at most two epochs past the
        root's for a node far behind. Without a book: ``leader_of``."""
        if self.book is None:
            return self.leader_of
        return self.book.frozen_leaders(self.schedule_epochs(epoch_of(self.slot_at(now_ms), self.book.spe)))

    def leader_final(self, slot: int) -> bool:
        """Whether ``slot``'s leader is final here (its epoch's schedule comes from the
        root, not a fork): only then may the ``shreds`` gossip check blame a peer for a
        shred signed by another leader (spec/node.md "Leader schedule on a fork"). Without a book: never."""
        return self.book is not None and self.book.available(epoch_of(slot, self.book.spe))

    def landed_voters(self, slot: int) -> list[bytes]:
        res = self.banks.get(slot)
        return [] if res is None else [voter for voter, _s in res.bank.landed_votes]

    def work_events(self, slot: int) -> list[WorkEvent]:
        res = self.banks.get(slot)
        return [] if res is None else list(res.bank.work_events)

    def schedule_epochs(self, clock_epoch: int | None = None) -> list[int]:
        """From the epoch before the root's to the one after the working tip's, plus the
        clock's epoch and the next (after an epoch without blocks the working fork answers
        it, spec/node.md "Leader schedule on a fork"), ascending."""
        e = epoch_of(self.cons.root, self.spe)
        top = max(e, epoch_of(self.cons.processed_slot(), self.spe))
        epochs = set(range(max(0, e - 1), top + 2))
        if clock_epoch is not None:
            epochs |= {clock_epoch, clock_epoch + 1}
        return sorted(epochs)

    # -- report -------------------------------------------------------------------------------
    def finalized_slot(self) -> int:
        """The highest slot finalized here (``Finality.finalized_slot`` at the root)."""
        return self.finality.finalized_slot(self.cons.root, self.cons.stakes)

    def report(self, now_ms: int, now_mono_ms: int) -> dict[str, Any]:
        """The policy's part of the node's ``status`` (spec/node.md "Status"): consensus,
        finality, readiness, pools, counters, the ledger history, confirmation latency."""
        s, cons = self.stats, self.cons
        behind, isolated = self.behind(now_mono_ms), self.isolated(now_ms)
        return {
            "slot": self.slot_at(now_ms), "processed": cons.processed_slot(), "confirmed": cons.confirmed_slot(),
            "finalized": self.finality.finalized_slot(cons.root, cons.stakes),
            "finalized_slots": self.finality.finalized_count(cons.root, cons.stakes),
            "root": cons.finalized_slot(), "rooted_slots": self.finality.rooted_count,
            "last_vote": cons.tower.last_voted_slot, "tower_depth": len(cons.tower.votes), "slot_ms": self.slot_ms,
            "behind": behind, "syncing": self.ready.syncing, "isolated": isolated,
            # why it would not vote now (live) and why its last vote decision did not vote
            "no_vote_reason": self.ready.no_vote_reason(behind=behind, isolated=isolated),
            "last_no_vote_reason": self.last_no_vote_reason, "tower_unknown": cons.lost is not None,
            "votes_refreshed": s.votes_refreshed, "leader_behind_waits": s.leader_behind_waits,
            "produced": s.produced, "replayed": s.replayed, "dead": s.dead, "duplicates": s.duplicates,
            "duplicate_slots": sorted(s.duplicate_slots), "dumped": s.dumped,
            "votes_in": s.votes_in, "votes_out": s.votes_out, "votes_unsent": s.votes_unsent,
            "pending_vote_slots": len(self.dups.pending), "shreds_in": s.shreds_in,
            "shreds_rejected": s.shreds_rejected, "repair_requests": s.repair_requests,
            "repaired_shreds": s.repaired_shreds, "txs_in": s.txs_in, "txs_included": s.txs_included,
            "votes_landed": s.votes_landed, "votes_included": s.votes_included, "vote_pool": len(self.vote_pool),
            "weights_epoch": self.weights_epoch, "mempool": len(self.mempool),
            "ledger": {"restored_from": s.restored_from, "snapshot_slot": s.snapshot_slot, "snapshots": s.snapshots,
                       "snapshot_failures": s.snapshot_failures, "cleanups": s.cleanups, "purged_slots": s.purged_slots,
                       "keep_slots": self.housekeeping.history.keep_slots},
            "confirm_latency_ms": percentiles(list(self.confirm_latency_ms)),
            "leader": None if (leader := self.leader_of(self.slot_at(now_ms))) is None else encode_address(leader),
            "lstake": self.lstake_table(),
        }

    def lstake_table(self) -> dict[str, dict[str, int]]:
        """Per identity: vote weight now, leader slots and landed votes credited (the book's)."""
        book = self.book
        return lstake_rows(self.cons.stakes, {} if book is None else book.leader_credits,
                           {} if book is None else book.vote_credits)

    def repair_wanted(self, now_ms: int, peers: int) -> tuple[list[int], int | None]:
        """A repair round's plan (:meth:`repair_plan`) when there is a peer to ask; without
        one, nothing is planned, so readiness hears nothing of what the tracker wants (a
        lone node is not "behind" for slots nobody can send it)."""
        return self.repair_plan(now_ms) if peers > 0 else ([], None)

    def repair_plan(self, now_ms: int) -> tuple[list[int], int | None]:
        """The core repair plan (``slots.repair_plan``): the slots to ask for, and the
        orphan whose ancestors to learn in one request (the lowest; None without one). What
        the tracker wants feeds readiness."""
        plan, orphans, wanted = sl.repair_plan(self.slots, current_slot=self.slot_at(now_ms),
                                               voted_slots=self.dups.pending,
                                               probe=self.ready.syncing or self.isolated(now_ms))
        self.ready.handle(rd.RepairWanted(frozenset(wanted), bool(orphans)))
        return plan, min(orphans, default=None)
