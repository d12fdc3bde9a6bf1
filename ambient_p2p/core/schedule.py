"""Leader schedule and LStake credits as a node sees them (spec/node.md "LStake credits").

Credits come only from *rooted* slots, so that every node applies the same credits in the
same order whatever forks it saw: when a slot is rooted, its scheduled leader is credited
one leader slot in the slot's epoch, and every vote that landed in the slot (the bank's
vote program, core/bank.py) earns its voter one vote credit in that epoch, if the voter
has vote weight in that epoch (an identity without LStake can pay for vote transactions,
but cannot vote itself into LStake).

Vote weights: the votes of epoch E are weighted by the same LStake snapshot that schedules
E's leaders (end of E - 2; genesis LStake for epochs 0 and 1). The schedule of epoch E uses the LStake snapshot at
the end of epoch E - 2 (core/lstake.py), so it becomes computable once this node's root
has passed the last slot of epoch E - 2.

Before that, the schedule comes from the *fork* (spec/node.md "Leader schedule on a fork"),
as agave takes a slot's leader from the epoch stakes of the bank it builds or replays on,
not from the root: the snapshot at the end of E - 2 on a fork is the rooted ledger plus the
credits of the fork's unrooted slots up to that boundary, applied exactly as rooting them
would (so the schedule is the same one the root gives once it passes the boundary on that
fork). A long finality stall therefore never stops production or replay. The fork is the
one a block extends (``leader(slot, fork)``: replay passes the parent's ancestry) or, where
no block is at hand (shred checks, the leader decision), the node's working fork
(``working_fork``: the ancestry of its heaviest frozen bank), usable for epochs whose
boundary that fork has reached (agave's working bank knows its epoch and the next), and for
later epochs only while this node knows of no slot between the fork's tip and the epoch's
boundary that it has not replayed (``unreplayed_above``): then the next block, wherever it
comes, extends the fork as it stands, which is what a cluster whose whole epoch passed
without a block must assume to resume, and a node that has heard of the slots it missed
(a cut-off node after the heal) does not guess (spec/node.md "Leader schedule on a fork").

No I/O, no clock: the validator calls :meth:`on_rooted` and :meth:`leader`.
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .codec import Bytes, List, Rec, UInt, fld, record
from .lstake import (
    SCHEDULE_LAG_EPOCHS,
    LStakeLedger,
    WorkKind,
    epoch_of,
    epoch_weights,
    schedule_for_epoch,
)
from .messages import Genesis
from .work import WorkEvent

#: Voters whose votes landed in a (rooted) slot.
LandedVoters = Callable[[int], Sequence[bytes]]
#: Work credits and slashes the Logit Pool booked in a (rooted) slot's bank (core/work.py).
SlotWork = Callable[[int], Sequence[WorkEvent]]

#: Schedules kept in memory (the current epoch, its neighbours, some slack).
MAX_CACHED_EPOCHS = 8
#: Fork-derived LStake snapshots kept in memory (per epoch and boundary block; a stall
#: with a few competing forks needs a handful).
MAX_CACHED_FORK_BASES = 16


# -- the book as a node snapshot holds it (ledger/snapshot.py ``NodeSnapshot.schedule``) ---------
MAX_SNAPSHOT_LSTAKE_BUCKETS = 8_192
MAX_SNAPSHOT_CREDITED_IDENTITIES = 4_096


@record
@dataclass(frozen=True)
class LStakeBucket:
    """Work credited to ``identity`` in ``epoch`` (core/lstake.py)."""

    identity: bytes = fld(Bytes(32, exact=True))
    epoch: int = fld(UInt(64))
    credits: int = fld(UInt(64))
    slashes: int = fld(UInt(64))
    pool_credits: int = fld(UInt(64), default=0)  # the Logit Pool share of credits (NodeSnapshot v3)


@record
@dataclass(frozen=True)
class IdentityCount:
    identity: bytes = fld(Bytes(32, exact=True))
    count: int = fld(UInt(64))


@record
@dataclass(frozen=True)
class LStakeForfeit:
    """A slash of ``identity`` booked in ``epoch`` (core/lstake.py ``forfeit``)."""

    identity: bytes = fld(Bytes(32, exact=True))
    epoch: int = fld(UInt(64))


@record
@dataclass(frozen=True)
class ScheduleBookState:
    """core/schedule.py ``ScheduleBook`` without its caches: the LStake buckets (pruned to
    the root's epoch), the highest credited rooted slot, and the per-identity counters of
    leader slots and landed votes credited (all epochs), sorted by identity."""

    credited_through: int = fld(UInt(64))
    lstake: tuple[LStakeBucket, ...] = fld(List(Rec(LStakeBucket), MAX_SNAPSHOT_LSTAKE_BUCKETS))
    leader_credits: tuple[IdentityCount, ...] = fld(List(Rec(IdentityCount), MAX_SNAPSHOT_CREDITED_IDENTITIES))
    vote_credits: tuple[IdentityCount, ...] = fld(List(Rec(IdentityCount), MAX_SNAPSHOT_CREDITED_IDENTITIES))
    forfeits: tuple[LStakeForfeit, ...] = fld(List(Rec(LStakeForfeit), MAX_SNAPSHOT_LSTAKE_BUCKETS), default=())



@dataclass(frozen=True)
class ForkSlot:
    """One frozen, not yet rooted block of a fork, with what rooting it would credit."""

    slot: int
    block_id: bytes  # its bank hash: tells two forks' blocks of one slot apart
    voters: Sequence[bytes]  # voters whose votes landed in it
    work: Sequence[WorkEvent]  # work credits and slashes its bank booked


#: A fork's unrooted frozen blocks, ascending (slots at or below the book's credited root
#: are ignored).
Fork = Sequence[ForkSlot]


@dataclass(frozen=True)
class _Basis:
    schedule: list[bytes]
    weights: dict[bytes, int]


class ScheduleBook:
    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.spe = genesis.epoch.slots_per_epoch
        self.ledger = LStakeLedger.from_genesis(genesis)
        self.credited_through = 0  # every rooted slot <= this has been credited
        self._cache: dict[int, list[bytes]] = {}
        self._weights: dict[int, dict[bytes, int]] = {}
        self.leader_credits: Counter[bytes] = Counter()  # leader slots credited, all epochs
        self.vote_credits: Counter[bytes] = Counter()  # landed votes credited, all epochs
        #: the node's working fork (the validator sets it: the heaviest frozen bank's
        #: unrooted ancestry); None: none known, only the rooted schedule answers
        self.working_fork: Callable[[], Fork] | None = None
        #: the lowest slot above the given one that this node holds or has heard of (stored
        #: shreds, a parent a stored child names, a peer's vote) but has not replayed, dead
        #: slots excepted; None: none. Unset: the node cannot tell, so the working fork never
        #: answers beyond the boundary it has reached (the validator sets it)
        self.unreplayed_above: Callable[[int], int | None] | None = None
        self._fork_cache: OrderedDict[tuple[int, int, bytes | None], _Basis] = OrderedDict()

    def available(self, epoch: int) -> bool:
        """True when the snapshot the schedule of ``epoch`` needs is final here."""
        basis = epoch - 2
        return basis < 0 or self.credited_through >= (basis + 1) * self.spe - 1

    def schedule(self, epoch: int, fork: Fork | None = None, *, extends: bool = False) -> list[bytes] | None:
        """The schedule of ``epoch``: from the root when its snapshot is final here, else
        from ``fork`` (default: the working fork) when the fork has passed the epoch's
        basis boundary, or ``extends`` says the block asked about extends ``fork`` beyond
        it; None otherwise."""
        s = self._cache.get(epoch)
        if s is None:
            if not self.available(epoch):
                basis = self._fork_basis(epoch, fork, extends)
                return None if basis is None else basis.schedule
            s = schedule_for_epoch(self.genesis, self.ledger, epoch)
            self._cache[epoch] = s
            while len(self._cache) > MAX_CACHED_EPOCHS:
                del self._cache[min(self._cache)]
        return s

    def vote_weights(self, epoch: int, fork: Fork | None = None, *, extends: bool = False) -> dict[bytes, int] | None:
        """LStake that weighs the votes of ``epoch`` (the schedule's basis), or None while
        that snapshot is neither final here nor known on the fork (as :meth:`schedule`)."""
        w = self._weights.get(epoch)
        if w is None:
            if not self.available(epoch):
                basis = self._fork_basis(epoch, fork, extends)
                return None if basis is None else basis.weights
            w = epoch_weights(self.genesis, self.ledger, epoch)
            self._weights[epoch] = w
            while len(self._weights) > MAX_CACHED_EPOCHS:
                del self._weights[min(self._weights)]
        return w

    def leader(self, slot: int, fork: Fork | None = None) -> bytes | None:
        """The leader of ``slot``; ``fork``: the unrooted ancestry of the block's parent
        (the block extends it), default the working fork."""
        if slot <= 0:
            return None
        # a given fork is extended by the block asked about; the working fork only as
        # _fork_basis allows (nothing unreplayed known between its tip and the boundary)
        s = self.schedule(epoch_of(slot, self.spe), fork, extends=fork is not None)
        return None if s is None else s[slot % self.spe]

    def _boundary(self, epoch: int) -> int:
        """Last slot of epoch ``epoch - 2``: the schedule basis of ``epoch``."""
        return (epoch - SCHEDULE_LAG_EPOCHS + 1) * self.spe - 1

    def _fork_basis(self, epoch: int, fork: Fork | None, extends: bool) -> _Basis | None:
        """Schedule and vote weights of ``epoch`` on ``fork`` (spec/node.md "Leader
        schedule on a fork")."""
        working = fork is None
        if fork is None:
            if self.working_fork is None:
                return None
            fork = self.working_fork()
        boundary = self._boundary(epoch)
        tip = fork[-1].slot if fork else self.credited_through  # empty: the root is the tip
        if not extends and tip < boundary and not (working and self._nothing_unreplayed(tip, boundary)):
            return None  # the fork may still grow below the boundary, or already did elsewhere
        below = [f for f in fork if self.credited_through < f.slot <= boundary]
        key = (epoch, self.credited_through, below[-1].block_id if below else None)
        hit = self._fork_cache.get(key)
        if hit is not None:
            self._fork_cache.move_to_end(key)
            return hit
        ledger = copy.deepcopy(self.ledger)
        for n, f in enumerate(below):
            e = epoch_of(f.slot, self.spe)
            prefix = below[:n]  # the block's parent's ancestry (the lower epochs' bases)
            self._credit(ledger, e, self.leader(f.slot, prefix), f.voters, f.work,
                         self.vote_weights(e, prefix, extends=True) or {})
        basis = _Basis(schedule_for_epoch(self.genesis, ledger, epoch), epoch_weights(self.genesis, ledger, epoch))
        self._fork_cache[key] = basis
        while len(self._fork_cache) > MAX_CACHED_FORK_BASES:
            self._fork_cache.popitem(last=False)
        return basis

    def _nothing_unreplayed(self, tip: int, boundary: int) -> bool:
        """True when this node knows of no unreplayed slot in ``(tip, boundary]``: the next
        block extends the working fork as it stands, whatever its slot. A slot known there
        (a cut-off node hearing of the blocks it missed, a block still being repaired or
        replayed) means the fork's basis is not known yet; slots above the boundary (the
        block that resumes a stalled cluster, votes for it) change nothing below it."""
        if self.unreplayed_above is None:
            return False
        nxt = self.unreplayed_above(tip)
        return nxt is None or nxt > boundary

    @staticmethod
    def _credit(ledger: LStakeLedger, epoch: int, leader: bytes | None, voters: Sequence[bytes],
                work: Sequence[WorkEvent], weights: dict[bytes, int]) -> list[bytes]:
        """Book what rooting one slot of ``epoch`` credits (one rule for the root and for a
        fork): its leader's slot, the landed votes of voters with weight in ``epoch``, its
        bank's work events. Returns the voters credited."""
        if leader is not None:
            ledger.credit(leader, epoch, WorkKind.LEADER_SLOTS, 1)
        credited = [v for v in voters if weights.get(v, 0) > 0]
        for voter in credited:
            ledger.credit(voter, epoch, WorkKind.VOTES, 1)
        for ev in work:
            ledger.apply_work(ev.identity, epoch, ev.tokens_served, ev.positions_validated, ev.is_slash)
        return credited

    def on_rooted(self, slots: list[int], new_root: int, landed: LandedVoters | None = None,
                  work: SlotWork | None = None) -> None:
        """``slots`` (ascending) became rooted, the highest being ``new_root`` or below it;
        credit each slot's leader, the voters whose votes landed in it (``landed``) and the
        Logit Pool work credits and slashes its bank booked (``work``, spec/lstake.md "Work
        accounts in the bank"). Idempotent for slots at or below ``credited_through``."""
        for s in slots:
            if s <= self.credited_through or s == 0:
                continue
            epoch = epoch_of(s, self.spe)
            # every slot below s on its chain is credited: the rooted ledger is s's fork
            # (an empty unrooted ancestry), also when skipped slots span a whole epoch
            leader = self.leader(s, ())
            voters = landed(s) if landed is not None else ()
            weights = (self.vote_weights(epoch, (), extends=True) or {}) if voters else {}
            credited = self._credit(self.ledger, epoch, leader, voters, work(s) if work is not None else (),
                                    weights)
            if leader is not None:
                self.leader_credits[leader] += 1
            self.vote_credits.update(credited)
            self.credited_through = s  # a rooted slot decides every slot below it
        self.credited_through = max(self.credited_through, new_root)

    def credit_replayed_root(self, slot: int, landed: Sequence[tuple[bytes, int]],
                             work: Sequence[WorkEvent] = ()) -> None:
        """Credit a stored root as it replays (a restarted node, ``ledger verify``), given
        its bank's landed votes ``(voter, slot)`` and work events; slots already credited
        are skipped."""
        if slot > self.credited_through:
            voters = [voter for voter, _s in landed]
            events = list(work)
            self.on_rooted([slot], slot, lambda _s: voters, lambda _s: events)

    def to_state(self) -> ScheduleBookState:
        """The book without its caches, for a node snapshot (ledger/snapshot.py); the LStake
        buckets are pruned to the credited root's epoch (core/lstake.py ``prune``: every
        query that can still be asked answers the same)."""
        floor = self.ledger.min_kept_epoch(epoch_of(self.credited_through, self.spe))
        return ScheduleBookState(
            self.credited_through,
            tuple(LStakeBucket(i, e, c, s, p) for i, e, c, s, p in self.ledger.pool_buckets() if e >= floor),
            tuple(IdentityCount(k, v) for k, v in sorted(self.leader_credits.items()) if v > 0),
            tuple(IdentityCount(k, v) for k, v in sorted(self.vote_credits.items()) if v > 0),
            tuple(LStakeForfeit(i, e) for i, e in self.ledger.forfeits() if e >= floor),
        )

    @classmethod
    def from_state(cls, genesis: Genesis, state: ScheduleBookState) -> ScheduleBook:
        """Inverse of :meth:`to_state` (schedules and weights are recomputed on demand)."""
        book = cls(genesis)
        for b in state.lstake:
            book.ledger.restore_bucket(b.identity, b.epoch, b.credits, b.slashes, b.pool_credits)
        for f in state.forfeits:
            book.ledger.restore_forfeit(f.identity, f.epoch)
        book.credited_through = state.credited_through
        book.leader_credits.update({c.identity: c.count for c in state.leader_credits})
        book.vote_credits.update({c.identity: c.count for c in state.vote_credits})
        return book

    def frozen_leaders(self, epochs: Sequence[int]) -> Callable[[int], bytes | None]:
        """A frozen copy of the schedules of ``epochs`` that are computable now (for worker
        threads: it never changes under them), as a slot -> leader function."""
        spe = self.spe
        table = {k: s for k in epochs if (s := self.schedule(k)) is not None}
        return lambda slot: None if (s := table.get(slot // spe)) is None else s[slot % spe]

    def lstake_table(self, epoch: int) -> dict[str, int]:
        return {k.hex(): v for k, v in sorted(self.ledger.snapshot(epoch).items())}
