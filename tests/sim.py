"""Deterministic multi-node simulation of the sans-IO consensus core (issue 11, item 7).

N nodes, each a :class:`SimNode` (one ``core.consensus.Consensus`` plus a minimal slot/block
model), exchange blocks, votes and repair requests through a seeded scheduler with a virtual
clock. The scheduler delays (per link), drops, duplicates and reorders messages, partitions
and heals the network, crashes and restarts nodes (the tower survives through a
``TowerRecord`` encode/decode round trip, the blockstore survives, everything else is lost)
and lets a byzantine leader equivocate (two versions of a slot sent to different peers).
With ``tower_loss=True`` every restart finds its tower file deleted: the node knows it and
boots with the restart guard (``core.tower.LostVotes``; spec/tower.md "Restart without a
tower"), and the oracle still holds it to the lockouts of every vote it sent before.

Checked after every step:
* SAFETY: every block any node ever rooted lies on one chain of the global block tree (no two
  nodes root conflicting slots); every vote a node sends respects the lockouts of the votes
  it sent before (an oracle independent of ``core.tower``, kept per identity across
  restarts: each vote's expiry slot = slot + 2^confirmations, no vote may land on a slot
  that does not descend from an unexpired earlier vote or the root); ``NewRoot`` strictly
  increases per identity; optimistic confirmation holds (blocks voted by > 2/3 of LStake and
  rooted blocks all lie on one chain; every voter here votes honestly).
* LIVENESS: after the last fault (a quiet, fully connected tail) every node's root passes the
  last fault slot within ``liveness_slots`` slots.

Every run is a function of its seed. A failure raises :class:`SimFailure` whose text holds
the seed, the violated property, a compact trace of the last steps and the command that
reruns it: ``.venv/bin/python tests/sim.py --seed N``.

Model (kept small on purpose; the node logic lives in :class:`SimNode` only, so a node built
on other core modules can be plugged in by passing ``node_factory``):
* leader schedule: ``core.lstake.leader_schedule`` over the nodes' LStake, ``LEADER_SLOTS``
  consecutive slots per leader; a leader builds at the start of its slot on
  ``Consensus.build_parent``;
* a block is (slot, parent slot, parent hash, leader, variant) and the latest votes its leader
  saw (votes that land in the block); bank hash = sha256(parent hash, slot, leader, variant);
* a node replays a block when it replayed the block's parent version; first receipt of a
  block is relayed to every peer (turbine retransmit); a block with an unknown parent, or a
  vote on an unknown bank hash, triggers a repair request (by hash) to the sender;
* each node re-gossips its latest vote every slot (CRDS push/pull);
* two versions of one slot mark it duplicate (``Consensus.on_duplicate``); a node whose
  version loses (> 52% of LStake voted on another version or its descendants) dumps it
  (``Consensus.dump_slot``) and replays / repairs the confirmed one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import heapq
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ambient_p2p.core import codec, crypto
from ambient_p2p.core import consensus as consensus_mod
from ambient_p2p.core.consensus import Consensus, NewRoot, PersistTower, SendVote, Vote
from ambient_p2p.core.lstake import leader_schedule
from ambient_p2p.core.messages import sign_message
from ambient_p2p.core.tower import (
    DUPLICATE_THRESHOLD,
    INITIAL_LOCKOUT,
    MAX_LOCKOUT_HISTORY,
    SUPERMAJORITY,
    LostVotes,
    Tower,
    TowerRecord,
)

SLOT_MS = 400
LEADER_SLOTS = 2
SCHEDULE_SLOTS = 1024
#: Slots after the last fault within which every root must pass it. 32 votes are needed to
#: root a slot; the rest covers lockouts built during a partition expiring (a vote stacked
#: k deep locks 2^k slots) and the forks resolving.
LIVENESS_SLOTS = 64
#: Votes sent this many slots into the quiet tail still count towards the lockout horizon (a
#: node keeps voting on its partition's fork until it hears the heavier one; each such vote
#: doubles older lockouts).
HORIZON_GRACE_SLOTS = 8
TRACE_LEN = 80
#: A node runs its vote decision at most this often (agave's replay loop), not per message.
REPLAY_TICK_MS = 40

STAKE_PROFILES: tuple[tuple[int, ...], ...] = (
    (100, 100, 100, 100),
    (40, 30, 20, 10),
    (30, 30, 30, 10),
    (25, 25, 25, 25),
    (34, 33, 20, 13),
)

GENESIS_HASH = crypto.sha256(b"sim-genesis")


# ---------------------------------------------------------------------------------------
# Keys: real ed25519 (``real_crypto=True``) or a fast deterministic stand-in for bulk runs
# ---------------------------------------------------------------------------------------
class FastKeypair(crypto.Keypair):
    """A keypair whose "signature" is sha512(pubkey, domain, message): the simulator's
    channels are authenticated by construction, so bulk runs skip ed25519 (about 200 us per
    vote) while still exercising every sign/verify call path. Use only with
    :func:`fast_signatures` active."""

    def sign(self, purpose: str, message: bytes) -> bytes:
        return _fast_sig(self.pubkey, purpose, message)


def _fast_sig(pubkey: bytes, purpose: str, message: bytes) -> bytes:
    return hashlib.sha512(b"sim-sig\x00" + pubkey + crypto.signing_message(purpose, message)).digest()


@contextlib.contextmanager
def fast_signatures() -> Iterator[None]:
    """Swap ``crypto.verify`` for the :class:`FastKeypair` check for the duration."""
    real = crypto.verify

    def verify(pubkey: bytes, purpose: str, message: bytes, signature: bytes) -> bool:
        if purpose not in crypto.SIGNING_PURPOSES:
            return False
        return bool(signature == _fast_sig(pubkey, purpose, message))

    # every receiver checks the same Vote object: check its signature once per run
    real_vm = consensus_mod.verify_message
    cache: dict[tuple[Any, bytes, str], bool] = {}

    def verify_message(msg: Any, signer: bytes, purpose: str) -> bool:
        key = (msg, signer, purpose)
        ok = cache.get(key)
        if ok is None:
            ok = cache[key] = real_vm(msg, signer, purpose)
        return ok

    crypto.verify = verify  # type: ignore[assignment]
    consensus_mod.verify_message = verify_message  # type: ignore[attr-defined]
    try:
        yield
    finally:
        crypto.verify = real  # type: ignore[assignment]
        consensus_mod.verify_message = real_vm  # type: ignore[attr-defined]


@functools.cache
def keypairs(n: int, fast: bool) -> tuple[crypto.Keypair, ...]:
    cls = FastKeypair if fast else crypto.Keypair
    return tuple(cls(crypto.Keypair.deterministic("sim", i).seed) for i in range(n))


# ---------------------------------------------------------------------------------------
# Blocks and messages
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    slot: int
    parent_slot: int
    parent_hash: bytes
    leader: int
    variant: int
    #: latest votes the leader saw, (voter, slot, bank hash): they "land" in this block
    votes: tuple[tuple[bytes, int, bytes], ...]
    hash: bytes

    @staticmethod
    def make(
        slot: int, parent_slot: int, parent_hash: bytes, leader: int, variant: int,
        votes: tuple[tuple[bytes, int, bytes], ...] = (),
    ) -> Block:
        h = crypto.sha256(
            b"sim-bank", parent_hash, slot.to_bytes(8, "little"), leader.to_bytes(2, "little"), bytes([variant])
        )
        return Block(slot, parent_slot, parent_hash, leader, variant, votes, h)


GENESIS = Block(0, -1, bytes(32), -1, 0, (), GENESIS_HASH)


@dataclass(frozen=True)
class BlockMsg:
    block: Block


@dataclass(frozen=True)
class VoteMsg:
    vote: Vote


@dataclass(frozen=True)
class RepairRequest:
    bank_hash: bytes


Message = BlockMsg | VoteMsg | RepairRequest
TICK: Any = object()  # scheduler-internal: a node's replay-loop iteration


@dataclass(frozen=True)
class Send:
    """Node output: ``msg`` to node ``dst`` (``None``: every peer)."""

    dst: int | None
    msg: Message


Output = Send | PersistTower | SendVote | NewRoot


@dataclass
class Disk:
    """What survives a crash: the persisted tower record, the blockstore, rooted hashes."""

    tower: TowerRecord | None = None
    blocks: dict[bytes, Block] = field(default_factory=lambda: {GENESIS_HASH: GENESIS})
    roots: dict[int, bytes] = field(default_factory=lambda: {0: GENESIS_HASH})
    #: the version of each slot the node replays (the first it stored, or the one it repaired
    #: after a dump): other versions are kept only as duplicate proofs, as in agave's blockstore
    preferred: dict[int, bytes] = field(default_factory=dict)
    #: the tower file was deleted at a restart (``tower_loss``): guarded boots until the
    #: guard lifts (spec/tower.md "Restart without a tower")
    tower_lost: bool = False


# ---------------------------------------------------------------------------------------
# The node model (everything a node decides lives here)
# ---------------------------------------------------------------------------------------
class SimNode:
    """One validator: ``Consensus`` plus the smallest slot model that feeds it. Inputs are
    method calls; outputs accumulate in ``self.out`` (drained by the simulator)."""

    def __init__(self, index: int, keypair: crypto.Keypair, stakes: dict[bytes, int], disk: Disk,
                 peers: dict[bytes, int]) -> None:
        self.index = index
        self.keypair = keypair
        self.pubkey = keypair.pubkey
        self.disk = disk
        self.peers = peers
        tower = Tower()
        if disk.tower is not None:  # restart: the persisted tower, through its wire form
            tower = Tower.from_record(codec.decode(codec.encode(disk.tower), TowerRecord), self.pubkey)
        elif disk.tower_lost:  # no tower file: rooted at the ledger root, guarded below
            tower = Tower([], max(disk.roots))
        self.cons = Consensus(keypair, stakes, tower=tower)
        root = self.cons.root
        self.version: dict[int, bytes] = {root: disk.roots[root]}  # slot -> replayed block hash
        self.waiting: dict[bytes, set[bytes]] = {}  # parent hash -> stored children
        self.versions_of: dict[int, set[bytes]] = {}  # slot -> stored block hashes
        self.dups: set[int] = set()
        self.latest_by_voter: dict[bytes, Vote] = {}
        self.votes_by_slot: dict[int, dict[bytes, Vote]] = {}
        self.missing: dict[bytes, tuple[int, int]] = {}  # block hash to repair -> (slot, last peer asked)
        self.out: list[Output] = []
        self.dirty = False
        for b in sorted(disk.blocks.values(), key=lambda b: b.slot):  # replay the blockstore
            self._index_block(b)
        for b in sorted(disk.blocks.values(), key=lambda b: b.slot):
            self._replay_from(b)
            if b.slot > 0 and b.parent_hash not in disk.blocks and b.parent_slot >= root:
                self.missing[b.parent_hash] = (b.parent_slot, index)  # the repair loop resumes
        if disk.tower_lost:  # every replayed slot above the ledger root may carry a lost vote
            lost = LostVotes.of(self.cons.forkchoice.parent.get, (s for s in self.version if s > max(disk.roots)))
            self.cons.lost = lost if lost.slots else None

    # -- inputs ---------------------------------------------------------------------------
    def on_block(self, b: Block, sender: int | None) -> None:
        if b.hash in self.disk.blocks:
            return
        self.disk.blocks[b.hash] = b
        self.disk.preferred.setdefault(b.slot, b.hash)
        self.missing.pop(b.hash, None)
        self._index_block(b)
        self.out.append(Send(None, BlockMsg(b)))  # retransmit on first receipt
        if b.parent_hash not in self.disk.blocks and b.parent_slot >= self.cons.root and sender is not None:
            self._repair(b.parent_hash, b.parent_slot, sender)
        self._replay_from(b)
        self._check_dump()

    def on_vote(self, v: Vote) -> None:
        prev = self.latest_by_voter.get(v.voter)
        if prev is not None and prev.slot >= v.slot:
            return
        self.latest_by_voter[v.voter] = v
        if v.slot <= self.cons.root:
            return
        self.votes_by_slot.setdefault(v.slot, {})[v.voter] = v
        if self.cons.on_vote(v):
            self.dirty = True
        elif v.bank_hash not in self.disk.blocks and v.voter in self.peers:
            self._repair(v.bank_hash, v.slot, self.peers[v.voter])
        self._check_dump()

    def on_repair_request(self, h: bytes, sender: int) -> None:
        b = self.disk.blocks.get(h)
        if b is not None:
            self.out.append(Send(sender, BlockMsg(b)))

    def produce(self, slot: int, variants: int = 1) -> list[Block]:
        """Leader of ``slot``: build on ``build_parent`` (``variants`` > 1: equivocate)."""
        parent = self.cons.build_parent(slot)
        if parent >= slot:
            return []
        root = self.cons.root
        votes = tuple(
            (v.voter, v.slot, v.bank_hash) for _, v in sorted(self.latest_by_voter.items()) if v.slot > root
        )
        blocks = [Block.make(slot, parent, self.version[parent], self.index, k, votes) for k in range(variants)]
        self.disk.blocks[blocks[0].hash] = blocks[0]
        self.disk.preferred.setdefault(slot, blocks[0].hash)
        self._index_block(blocks[0])
        self._replay_from(blocks[0])
        return blocks

    def on_slot(self, now_ms: int) -> None:
        """Once a slot: re-gossip the latest own vote (CRDS keeps and re-serves it; after a
        restart, a vote re-made for the tower's last voted slot, as agave's
        ``refresh_last_vote`` re-sends the last vote its saved tower holds) and retry
        outstanding repairs, each time asking the next peer."""
        v = self.latest_by_voter.get(self.pubkey)
        last = self.cons.tower.last_voted_slot
        if v is None and last is not None and last in self.cons.bank_hashes:
            unsigned = Vote(self.pubkey, last, self.cons.bank_hashes[last], self.cons.tower.root, now_ms, bytes(64))
            v = self.latest_by_voter[self.pubkey] = sign_message(unsigned, self.keypair, "vote")
        if v is not None:
            self.out.append(Send(None, VoteMsg(v)))
        n = len(self.peers)
        for h, (slot, peer) in sorted(self.missing.items()):
            nxt = (peer + 1) % n
            self._repair(h, slot, nxt if nxt != self.index else (nxt + 1) % n)

    def _repair(self, h: bytes, slot: int, peer: int) -> None:
        self.missing[h] = (slot, peer)
        self.out.append(Send(peer, RepairRequest(h)))

    def decide(self, now_ms: int) -> None:
        if not self.dirty:
            return
        self.dirty = False
        if self.cons.lost is not None:
            self.cons.lift_lost_votes(self._cluster_root())
            self.disk.tower_lost = self.cons.lost is not None
        for eff in self.cons.decide(now_ms):
            self.out.append(eff)
            if isinstance(eff, SendVote):
                self.latest_by_voter[self.pubkey] = eff.vote
            elif isinstance(eff, NewRoot):
                self._pruned(eff.slot)

    def _cluster_root(self) -> int:
        """The highest root > 2/3 of LStake reported in their latest votes (core.finality
        rule 5; ours: our tower root)."""
        acc, total = 0, sum(self.cons.stakes.values())
        roots = {k: (v.root or 0) for k, v in self.latest_by_voter.items()} | {self.pubkey: self.cons.root}
        for r, k in sorted(((r, k) for k, r in roots.items()), reverse=True):
            acc += self.cons.stakes.get(k, 0)
            if Fraction(acc, total) > SUPERMAJORITY:
                return r
        return 0

    # -- internals ------------------------------------------------------------------------
    def _index_block(self, b: Block) -> None:
        if b.slot == 0:
            return
        self.waiting.setdefault(b.parent_hash, set()).add(b.hash)
        vs = self.versions_of.setdefault(b.slot, set())
        vs.add(b.hash)
        if len(vs) > 1 and b.slot not in self.dups:
            self.dups.add(b.slot)
            if b.slot in self.cons.forkchoice.parent:
                self.cons.on_duplicate(b.slot)
                self.dirty = True

    def _replay_from(self, first: Block) -> None:
        stack = [first]
        while stack:
            b = stack.pop()
            root = self.cons.root
            if b.slot <= root or b.slot in self.version or b.parent_slot < root:
                continue
            if self.version.get(b.parent_slot) != b.parent_hash or b.parent_slot not in self.cons.forkchoice.parent:
                continue  # parent not replayed yet, pruned, or we hold another version of it
            if self.disk.preferred.get(b.slot, b.hash) != b.hash:
                continue  # another version of this slot is the one we replay
            self.cons.on_replayed(b.slot, b.parent_slot, b.hash)
            self.version[b.slot] = b.hash
            if b.slot in self.dups:
                self.cons.on_duplicate(b.slot)
            self.cons.on_block_votes([(v, s) for v, s, h in b.votes if s > root and self.version.get(s) == h])
            for v in self.votes_by_slot.get(b.slot, {}).values():
                self.cons.on_vote(v)
            self.dirty = True
            stack.extend(self.disk.blocks[c] for c in sorted(self.waiting.get(b.hash, ())))

    def _chain_version(self, h: bytes, slot: int) -> bytes | None:
        """The version of ``slot`` on the chain ending in block ``h`` (stored blocks only)."""
        b = self.disk.blocks.get(h)
        while b is not None and b.slot > slot:
            b = self.disk.blocks.get(b.parent_hash)
        return b.hash if b is not None and b.slot == slot else None

    def _check_dump(self) -> None:
        """Our version of a duplicate slot lost: > 52% of LStake voted on another version
        (or a descendant of it) -> dump ours and replay (or repair) the confirmed one."""
        if not self.dups:
            return
        root = self.cons.root
        total = self.cons.total_stake
        for s in sorted(self.dups):
            if s <= root:
                continue
            stake: dict[bytes, int] = {}
            for voter, v in self.latest_by_voter.items():
                if v.slot >= s and voter in self.cons.stakes:
                    ver = self._chain_version(v.bank_hash, s)
                    if ver is not None:
                        stake[ver] = stake.get(ver, 0) + self.cons.stakes[voter]
            ours = self.version.get(s)
            for ver, st in sorted(stake.items()):
                if ver != ours and Fraction(st, total) > DUPLICATE_THRESHOLD:
                    if ours is not None:
                        for g in self.cons.dump_slot(s):
                            self.version.pop(g, None)
                    self.dirty = True
                    self.disk.preferred[s] = ver
                    confirmed = self.disk.blocks.get(ver)
                    if confirmed is not None:
                        self._replay_from(confirmed)
                    else:
                        self._repair(ver, s, (self.index + 1) % len(self.peers))
                    break

    def _pruned(self, root: int) -> None:
        self.disk.roots[root] = self.version[root]
        live = self.cons.forkchoice.parent
        self.version = {s: h for s, h in self.version.items() if s in live}
        self.votes_by_slot = {s: vs for s, vs in self.votes_by_slot.items() if s > root}
        self.dups = {s for s in self.dups if s > root}
        self.versions_of = {s: vs for s, vs in self.versions_of.items() if s > root}
        self.missing = {h: sp for h, sp in self.missing.items() if sp[0] > root}


NodeFactory = Callable[[int, crypto.Keypair, dict[bytes, int], Disk, dict[bytes, int]], SimNode]


# ---------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    seed: int
    stakes: tuple[int, ...]
    link_delay_ms: tuple[tuple[int, ...], ...]
    jitter_ms: int
    drop: float
    duplicate: float
    fault_end: int  # first quiet slot: drops, partitions, crashes and equivocation end before it
    partitions: tuple[tuple[int, int, tuple[frozenset[int], ...]], ...]  # (from, to, groups)
    crashes: tuple[tuple[int, int, int], ...]  # (node, crash slot, restart slot)
    byzantine: tuple[int, float] | None  # (node, equivocation probability per leader slot)
    liveness_slots: int = LIVENESS_SLOTS

    @classmethod
    def draw(cls, seed: int, n: int = 4) -> Scenario:
        rng = random.Random(seed)
        stakes = STAKE_PROFILES[rng.randrange(len(STAKE_PROFILES))] if n == 4 else tuple([100] * n)
        delay = tuple(tuple(0 if i == j else rng.randint(5, 160) for j in range(n)) for i in range(n))
        fault_end = rng.randint(6, 18)
        partitions: list[tuple[int, int, tuple[frozenset[int], ...]]] = []
        crashes: list[tuple[int, int, int]] = []
        byz = None
        kinds = rng.sample(("partition", "crash", "byzantine", "partition"), rng.randint(1, 3))
        for kind in kinds:
            start = rng.randint(1, fault_end - 2)
            end = rng.randint(start + 1, min(fault_end, start + 8))
            if kind == "partition":
                order = list(range(n))
                rng.shuffle(order)
                cut = rng.randint(1, n - 1)
                groups = (frozenset(order[:cut]), frozenset(order[cut:]))
                partitions.append((start, end, groups))
            elif kind == "crash":
                crashes.append((rng.randrange(n), start, end))
            elif byz is None:
                byz = (rng.randrange(n), rng.choice((0.5, 1.0)))
        return cls(
            seed=seed, stakes=stakes, link_delay_ms=delay, jitter_ms=rng.choice((0, 50, 200, 600)),
            drop=rng.choice((0.0, 0.05, 0.2)), duplicate=rng.choice((0.0, 0.05, 0.2)), fault_end=fault_end,
            partitions=tuple(partitions), crashes=tuple(crashes), byzantine=byz,
        )

    def describe(self) -> str:
        parts = [f"stakes={list(self.stakes)} faults<slot {self.fault_end} drop={self.drop} dup={self.duplicate}"
                 f" jitter={self.jitter_ms}ms"]
        for a, b, gs in self.partitions:
            parts.append(f"partition {'|'.join(''.join(map(str, sorted(g))) for g in gs)} slots {a}..{b - 1}")
        for node, a, b in self.crashes:
            parts.append(f"crash n{node} slots {a}..{b - 1}")
        if self.byzantine:
            parts.append(f"byzantine leader n{self.byzantine[0]} p={self.byzantine[1]}")
        return "; ".join(parts)


class SimFailure(AssertionError):
    def __init__(self, kind: str, scenario: Scenario, detail: str, trace: Sequence[str]) -> None:
        self.kind = kind
        self.seed = scenario.seed
        text = (
            f"{kind} violation at seed {scenario.seed}: {detail}\n"
            f"scenario: {scenario.describe()}\n"
            f"rerun: .venv/bin/python tests/sim.py --seed {scenario.seed}\n"
            f"trace (last {len(trace)} steps):\n  " + "\n  ".join(trace)
        )
        super().__init__(text)


# ---------------------------------------------------------------------------------------
# Independent lockout oracle
# ---------------------------------------------------------------------------------------
@dataclass
class LockoutOracle:
    """What a validator's past votes forbid, computed without ``core.tower``: each vote's
    confirmation count is 1 + the most votes ever stacked on it, its expiry slot is
    ``slot + 2^confirmations``; a vote older than 31 stacked votes roots. A new vote on
    ``slot`` is a violation if some earlier unexpired vote (or the root) is not on
    ``slot``'s chain. Returns the new root or raises ``ValueError``."""

    stack: list[list[int]] = field(default_factory=list)  # [slot, confirmations], bottom first
    root: int | None = None

    def vote(self, slot: int, chain: Callable[[int], bool]) -> int | None:
        if self.stack and slot <= self.stack[-1][0]:
            raise ValueError(f"vote on {slot} not newer than the last vote {self.stack[-1][0]}")
        if self.root is not None and not chain(self.root):
            raise ValueError(f"vote on {slot} does not descend from the root {self.root}")
        for s, conf in self.stack:
            expiry = s + INITIAL_LOCKOUT**conf
            if slot <= expiry and not chain(s):
                raise ValueError(f"vote on {slot} breaks the lockout of the vote on {s} (expires at {expiry})")
        while self.stack and self.stack[-1][0] + INITIAL_LOCKOUT ** self.stack[-1][1] < slot:
            self.stack.pop()
        new_root = None
        if len(self.stack) == MAX_LOCKOUT_HISTORY:
            new_root = self.stack.pop(0)[0]
            self.root = new_root
        self.stack.append([slot, 0])
        height = len(self.stack)
        for i, entry in enumerate(self.stack):
            entry[1] = max(entry[1], height - i)
        return new_root


# ---------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------
@dataclass
class SimResult:
    seed: int
    slots: int
    roots: list[int]
    events: int
    votes: int
    exempt: str | None = None  # why liveness was not required (see Simulation._unconfirmed_split)


class Simulation:
    def __init__(self, sc: Scenario, real_crypto: bool = False, node_factory: NodeFactory = SimNode,
                 strict_liveness: bool = False, tower_loss: bool = False) -> None:
        """``strict_liveness``: require liveness even after an unconfirmed equivocation split
        (the known gap; see :meth:`_unconfirmed_split`). ``tower_loss``: every restart finds
        its tower file deleted (the node knows it: spec/tower.md "Restart without a tower")."""
        self.sc = sc
        self.tower_loss = tower_loss
        self.strict_liveness = strict_liveness
        self.n = len(sc.stakes)
        self.rng = random.Random(sc.seed ^ 0x5EED)
        self.keys = keypairs(self.n, not real_crypto)
        self.real_crypto = real_crypto
        self.stakes = {k.pubkey: s for k, s in zip(self.keys, sc.stakes, strict=True)}
        self.index_of = {k.pubkey: i for i, k in enumerate(self.keys)}
        self.schedule = _schedule(sc.stakes, self.n)
        self.node_factory = node_factory
        self.disks = [Disk() for _ in range(self.n)]
        self.nodes: list[SimNode | None] = [self._boot(i) for i in range(self.n)]
        self.tree: dict[bytes, Block] = {GENESIS_HASH: GENESIS}
        self.oracles = [LockoutOracle() for _ in range(self.n)]
        self.last_root = [0] * self.n
        self.highest_root: Block = GENESIS
        self.heap: list[tuple[int, int, int, int, Any]] = []
        self.seq = 0
        self.now = 0
        self.slot = 0
        self.groups: tuple[frozenset[int], ...] | None = None
        self.trace: deque[str] = deque(maxlen=TRACE_LEN)
        self.events = 0
        self.votes = 0
        self.equivocated: set[int] = set()
        self.exempt: str | None = None
        self.stacks_at_end: set[tuple[int, int]] = set()  # oracle (slot, confirmations) after the faults
        self.last_vote_block: list[Block] = [GENESIS] * self.n
        self.voters_of: dict[bytes, set[int]] = {}
        self.highest_oc: Block = GENESIS
        self.tick_due: set[int] = set()

    def _boot(self, i: int) -> SimNode:
        return self.node_factory(i, self.keys[i], dict(self.stakes), self.disks[i], self.index_of)

    # -- network --------------------------------------------------------------------------
    def _connected(self, a: int, b: int) -> bool:
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    def _send(self, src: int, dst: int, msg: Message) -> None:
        if not self._connected(src, dst):
            return
        faulty = self.slot < self.sc.fault_end
        if faulty and self.rng.random() < self.sc.drop:
            return
        copies = 2 if faulty and self.rng.random() < self.sc.duplicate else 1
        jitter = self.sc.jitter_ms if faulty else min(self.sc.jitter_ms, 50)
        for _ in range(copies):
            at = self.now + self.sc.link_delay_ms[src][dst] + (self.rng.randint(0, jitter) if jitter else 0)
            self.seq += 1
            heapq.heappush(self.heap, (at, self.seq, src, dst, msg))

    def _flush(self, i: int, decide: bool = True) -> None:
        """Perform node ``i``'s outputs; ``decide``: run its vote decision first (a replay
        loop iteration), otherwise schedule one ``REPLAY_TICK_MS`` later if it is due."""
        node = self.nodes[i]
        assert node is not None
        if decide:
            node.decide(self.now)
        elif node.dirty and i not in self.tick_due:
            self.tick_due.add(i)
            self.seq += 1
            heapq.heappush(self.heap, (self.now + REPLAY_TICK_MS, self.seq, -1, i, TICK))
        while node.out:
            outs, node.out = node.out, []
            for o in outs:
                self._output(i, o)
            if decide:
                node.decide(self.now)

    def _output(self, i: int, o: Output) -> None:
        if isinstance(o, Send):
            for dst in (range(self.n) if o.dst is None else (o.dst,)):
                if dst != i:
                    self._send(i, dst, o.msg)
        elif isinstance(o, PersistTower):
            self.disks[i].tower = o.record
        elif isinstance(o, SendVote):
            self._check_vote(i, o.vote)
            self._check_optimistic(i, o.vote.bank_hash)
            self.votes += 1
            self.last_vote_block[i] = self.tree[o.vote.bank_hash]
            self.trace.append(f"t={self.now} n{i} vote {o.vote.slot}:{o.vote.bank_hash.hex()[:6]}")
            for dst in range(self.n):
                if dst != i:
                    self._send(i, dst, VoteMsg(o.vote))
        elif isinstance(o, NewRoot):
            self._check_root(i, o.slot)

    # -- checks ---------------------------------------------------------------------------
    def fail(self, kind: str, detail: str) -> SimFailure:
        return SimFailure(kind, self.sc, detail, list(self.trace) + self.node_states())

    def node_states(self) -> list[str]:
        out = []
        for i, nd in enumerate(self.nodes):
            if nd is None:
                out.append(f"n{i}: down")
                continue
            t, fc = nd.cons.tower, nd.cons.forkchoice
            votes = " ".join(f"{v.slot}/{v.confirmation_count}" for v in t.votes)
            latest = {self.index_of[k]: s for k, s in fc.latest_vote.items()}
            out.append(
                f"n{i}: root {nd.cons.root} best {fc.best_slot()} tower [{votes}] fc-latest {latest} "
                f"dups {sorted(nd.dups)} fork-tips {sorted(s for s, c in fc.children.items() if not c)}"
            )
        return out

    def _check_vote(self, i: int, vote: Vote) -> None:
        b = self.tree.get(vote.bank_hash)
        if b is None or b.slot != vote.slot:
            raise self.fail("SAFETY", f"n{i} voted on slot {vote.slot} with a bank hash no leader produced")
        chain_slots = set()
        x: Block | None = b
        while x is not None:
            chain_slots.add(x.slot)
            x = self.tree.get(x.parent_hash)
        try:
            self.oracles[i].vote(vote.slot, chain_slots.__contains__)
        except ValueError as e:
            raise self.fail("SAFETY", f"n{i} lockout: {e}") from None
        if len(self.nodes[i].cons.tower.votes) > MAX_LOCKOUT_HISTORY:  # type: ignore[union-attr]
            raise self.fail("SAFETY", f"n{i} tower holds more than {MAX_LOCKOUT_HISTORY} votes")

    def _is_ancestor(self, a: Block, b: Block) -> bool:
        x: Block | None = b
        while x is not None and x.slot > a.slot:
            x = self.tree.get(x.parent_hash)
        return x is not None and x.hash == a.hash

    def _check_root(self, i: int, slot: int) -> None:
        self.trace.append(f"t={self.now} n{i} root {slot}")
        if slot <= self.last_root[i]:
            raise self.fail("SAFETY", f"n{i} NewRoot {slot} not above its previous root {self.last_root[i]}")
        self.last_root[i] = slot
        node = self.nodes[i]
        assert node is not None
        b = self.tree[node.version[slot]]
        oc = self.highest_oc
        if not (self._is_ancestor(b, oc) or self._is_ancestor(oc, b)):
            raise self.fail(
                "SAFETY", f"n{i} rooted {slot}:{b.hash.hex()[:6]}, conflicting with optimistically confirmed "
                f"{oc.slot}:{oc.hash.hex()[:6]}"
            )
        if self._is_ancestor(b, self.highest_root):
            return
        if self._is_ancestor(self.highest_root, b):
            self.highest_root = b
            return
        raise self.fail(
            "SAFETY", f"n{i} rooted {slot}:{b.hash.hex()[:6]}, conflicting with rooted "
            f"{self.highest_root.slot}:{self.highest_root.hash.hex()[:6]}"
        )

    def _check_optimistic(self, i: int, h: bytes) -> None:
        """Optimistic confirmation (agave's guarantee with < 1/3 faulty stake; every voter here
        votes honestly): a block that > 2/3 of LStake voted on is never contradicted by another
        such block or by a root. All of them lie on one chain with the roots."""
        voters = self.voters_of.setdefault(h, set())
        if i in voters:
            return
        voters.add(i)
        total = sum(self.sc.stakes)
        before = sum(self.sc.stakes[j] for j in voters if j != i)
        after = before + self.sc.stakes[i]
        if not (Fraction(after, total) > SUPERMAJORITY >= Fraction(before, total)):
            return
        b = self.tree[h]
        self.trace.append(f"t={self.now} optimistically confirmed {b.slot}:{h.hex()[:6]}")
        for other, what in ((self.highest_oc, "optimistically confirmed"), (self.highest_root, "rooted")):
            if not (self._is_ancestor(b, other) or self._is_ancestor(other, b)):
                raise self.fail(
                    "SAFETY", f"{b.slot}:{h.hex()[:6]} optimistically confirmed, conflicting with {what} "
                    f"{other.slot}:{other.hash.hex()[:6]}"
                )
        if self._is_ancestor(self.highest_oc, b):
            self.highest_oc = b

    # -- the run --------------------------------------------------------------------------
    def _slot_start(self, s: int) -> None:
        sc = self.sc
        self.slot = s
        self.groups = None
        for first, stop, gs in sc.partitions:
            if first <= s < stop:
                self.groups = gs
                self.trace.append(f"slot {s}: partition {'|'.join(''.join(map(str, sorted(g))) for g in gs)}")
        for who, down, up in sc.crashes:
            if s == down and self.nodes[who] is not None:
                self.nodes[who] = None
                self.trace.append(f"slot {s}: crash n{who}")
            if s == up and self.nodes[who] is None:
                if self.tower_loss:
                    self.disks[who].tower, self.disks[who].tower_lost = None, True
                booted = self.nodes[who] = self._boot(who)
                self.last_root[who] = max(self.last_root[who], booted.cons.root)
                self.trace.append(f"slot {s}: restart n{who} (tower root {booted.cons.root})")
                self._flush(who)
        leader = self.schedule[s % len(self.schedule)]
        node = self.nodes[leader]
        if node is not None:
            equivocate = (
                sc.byzantine is not None and sc.byzantine[0] == leader and s < sc.fault_end
                and self.rng.random() < sc.byzantine[1]
            )
            blocks = node.produce(s, 2 if equivocate else 1)
            for b in blocks:
                self.tree[b.hash] = b
            if len(blocks) > 1:
                self.equivocated.add(s)
            if blocks:
                self.trace.append(f"t={self.now} n{leader} produce {s}<-{blocks[0].parent_slot} x{len(blocks)}")
            if len(blocks) == 1:
                for dst in range(self.n):
                    if dst != leader:
                        self._send(leader, dst, BlockMsg(blocks[0]))
            elif blocks:
                others = [d for d in range(self.n) if d != leader]
                self.rng.shuffle(others)
                cut = self.rng.randint(1, len(others))
                for k, dst in enumerate(others):
                    self._send(leader, dst, BlockMsg(blocks[0] if k < cut - 1 else blocks[1]))
            node.dirty = True
            self._flush(leader)
        for i, nd in enumerate(self.nodes):
            if nd is not None:
                nd.on_slot(self.now)
                self._flush(i)

    def run(self, max_slots: int | None = None) -> SimResult:
        """Run to ``max_slots`` (no liveness check), or until every root passes the end of
        faults; the liveness deadline is ``liveness_slots`` after the end of faults or after
        the last lockout any vote sent before then still holds (a partition that stacked k
        votes on a losing fork locks its voters out for 2^k slots: Tower BFT's price)."""
        sc = self.sc
        deadline = max_slots if max_slots is not None else sc.fault_end + sc.liveness_slots
        ctx = contextlib.nullcontext() if self.real_crypto else fast_signatures()
        with ctx:
            s = 0
            horizon = 0
            while True:
                if s == deadline and max_slots is None and horizon == 0:
                    if not self.strict_liveness and self._unconfirmed_split() is not None:
                        break  # stuck for the documented reason: no point running on
                    # lockouts stacked during the faults may hold voters off the winning fork
                    deadline = max(deadline, self._lockout_horizon() + sc.liveness_slots)
                    horizon = deadline
                if s >= deadline:
                    break
                s += 1
                if s in (sc.fault_end, sc.fault_end + HORIZON_GRACE_SLOTS) and max_slots is None:
                    self.stacks_at_end |= {(v, c) for o in self.oracles for v, c in o.stack}
                self._slot_start(s)
                end = s * SLOT_MS + SLOT_MS
                while self.heap and self.heap[0][0] < end:
                    at, _, src, dst, msg = heapq.heappop(self.heap)
                    self.now = at
                    self.events += 1
                    node = self.nodes[dst]
                    if msg is TICK:
                        self.tick_due.discard(dst)
                        if node is not None:
                            self._flush(dst)
                        continue
                    if node is None or not self._connected(src, dst):
                        continue
                    if isinstance(msg, BlockMsg):
                        node.on_block(msg.block, src)
                    elif isinstance(msg, VoteMsg):
                        node.on_vote(msg.vote)
                    else:
                        node.on_repair_request(msg.bank_hash, src)
                    self._flush(dst, decide=False)
                self.now = end
                if s >= sc.fault_end and min(self._roots()) >= sc.fault_end and max_slots is None:
                    return SimResult(sc.seed, s, self._roots(), self.events, self.votes)
        if max_slots is None:
            split = None if self.strict_liveness else self._unconfirmed_split()
            if split is not None:
                self.exempt = split
                return SimResult(sc.seed, s, self._roots(), self.events, self.votes, exempt=split)
            raise self.fail(
                "LIVENESS", f"roots {self._roots()} did not all pass slot {sc.fault_end} (the end of faults) "
                f"by slot {deadline}"
            )
        return SimResult(sc.seed, s, self._roots(), self.events, self.votes)

    def _lockout_horizon(self) -> int:
        """The last slot on which a vote sent up to ``HORIZON_GRACE_SLOTS`` after the faults
        still locks its voter off the fork that wins (the block that most LStake's last votes
        extend): a losing fork's voters may not switch before then."""
        def support(b: Block) -> int:
            return sum(self.sc.stakes[i] for i, lb in enumerate(self.last_vote_block) if self._is_ancestor(b, lb))

        winner = max(self.last_vote_block, key=lambda b: (support(b), b.slot))
        chain = set()
        x: Block | None = winner
        while x is not None:
            chain.add(x.slot)
            x = self.tree.get(x.parent_hash)
        return max((v + INITIAL_LOCKOUT**c for v, c in self.stacks_at_end if v not in chain), default=0)

    def _unconfirmed_split(self) -> str | None:
        """The one known liveness gap (spec/tower.md "Known gaps"): a leader equivocated, the
        nodes hold or last voted different versions of the slot, and no version has > 52% of
        LStake whose last vote is on it or a descendant, so nobody dumps its version and each
        side's votes sit on blocks the other side cannot replay, or (for nodes that saw both
        versions) on a fork that stays ineligible (one version per slot)."""
        voted: dict[int, dict[bytes, set[int]]] = {}  # slot -> version -> nodes whose last vote extends it
        for i, last in enumerate(self.last_vote_block):
            b: Block | None = last
            while b is not None and b.slot > 0:
                if b.slot in self.equivocated:
                    voted.setdefault(b.slot, {}).setdefault(b.hash, set()).add(i)
                b = self.tree.get(b.parent_hash)
        total = sum(self.sc.stakes)
        for slot in sorted(self.equivocated):
            seen = {v for nd in self.nodes if nd is not None and (v := nd.version.get(slot)) is not None}
            by_version = voted.get(slot, {})
            seen |= set(by_version)
            if len(seen) < 2:
                continue
            stake = [sum(self.sc.stakes[i] for i in voters) for voters in by_version.values()]
            if all(Fraction(st, total) <= DUPLICATE_THRESHOLD for st in stake):
                return f"nodes hold or voted {len(seen)} versions of equivocated slot {slot}, none voted by > 52%"
        return None

    def _roots(self) -> list[int]:
        return [nd.cons.root if nd is not None else -1 for nd in self.nodes]


@functools.cache
def _schedule(stakes: tuple[int, ...], n: int) -> tuple[int, ...]:
    keys = keypairs(n, True)
    weights = {k.pubkey: s for k, s in zip(keys, stakes, strict=True)}
    index = {k.pubkey: i for i, k in enumerate(keys)}
    seed = crypto.sha256(b"sim-schedule", bytes(stakes))
    return tuple(index[p] for p in leader_schedule(weights, seed, SCHEDULE_SLOTS, LEADER_SLOTS))


def run_seed(seed: int, **kw: Any) -> SimResult:
    return Simulation(Scenario.draw(seed), **kw).run()


def run_seeds(seeds: Sequence[int], **kw: Any) -> list[SimResult]:
    return [run_seed(s, **kw) for s in seeds]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="rerun consensus simulation seeds")
    ap.add_argument("--seed", type=int, help="one seed (prints the trace on failure)")
    ap.add_argument("--seeds", type=int, default=0, help="run N seeds from --first")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--real-crypto", action="store_true")
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    t0 = time.perf_counter()
    bad = 0
    for s in seeds:
        try:
            r = run_seed(s, real_crypto=args.real_crypto)
            if r.exempt:
                print(f"seed {s}: safe; liveness not required: {r.exempt}")
            if args.seed is not None:
                print(f"seed {s}: ok in {r.slots} slots, roots {r.roots}, {r.events} deliveries, {r.votes} votes")
                print(f"scenario: {Scenario.draw(s).describe()}")
        except SimFailure as e:
            bad += 1
            print(e if args.seed is not None else str(e).splitlines()[0])
    print(f"{len(seeds)} seeds, {bad} failed, {time.perf_counter() - t0:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    sys.exit(main())

