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
has passed the last slot of epoch E - 2; before that :meth:`leader` answers None (the slot's
shreds cannot be verified yet) rather than guessing from an incomplete snapshot.

No I/O, no clock: the validator calls :meth:`on_rooted` and :meth:`leader`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..core.lstake import LStakeLedger, WorkKind, epoch_of, epoch_weights, schedule_for_epoch
from ..core.messages import Genesis
from ..core.work import WorkEvent

if TYPE_CHECKING:
    from ..ledger.snapshot import ScheduleBookState

#: Voters whose votes landed in a (rooted) slot.
LandedVoters = Callable[[int], Sequence[bytes]]
#: Work credits and slashes the Logit Pool booked in a (rooted) slot's bank (core/work.py).
SlotWork = Callable[[int], Sequence[WorkEvent]]

#: Schedules kept in memory (the current epoch, its neighbours, some slack).
MAX_CACHED_EPOCHS = 8


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

    def available(self, epoch: int) -> bool:
        """True when the snapshot the schedule of ``epoch`` needs is final here."""
        basis = epoch - 2
        return basis < 0 or self.credited_through >= (basis + 1) * self.spe - 1

    def schedule(self, epoch: int) -> list[bytes] | None:
        s = self._cache.get(epoch)
        if s is None:
            if not self.available(epoch):
                return None
            s = schedule_for_epoch(self.genesis, self.ledger, epoch)
            self._cache[epoch] = s
            while len(self._cache) > MAX_CACHED_EPOCHS:
                del self._cache[min(self._cache)]
        return s

    def vote_weights(self, epoch: int) -> dict[bytes, int] | None:
        """LStake that weighs the votes of ``epoch`` (the schedule's basis), or None while
        that snapshot is not final here."""
        w = self._weights.get(epoch)
        if w is None:
            if not self.available(epoch):
                return None
            w = epoch_weights(self.genesis, self.ledger, epoch)
            self._weights[epoch] = w
            while len(self._weights) > MAX_CACHED_EPOCHS:
                del self._weights[min(self._weights)]
        return w

    def leader(self, slot: int) -> bytes | None:
        if slot <= 0:
            return None
        s = self.schedule(epoch_of(slot, self.spe))
        return None if s is None else s[slot % self.spe]

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
            leader = self.leader(s)
            if leader is not None:
                self.ledger.credit(leader, epoch, WorkKind.LEADER_SLOTS, 1)
                self.leader_credits[leader] += 1
            if landed is not None:
                weights = self.vote_weights(epoch) or {}
                for voter in landed(s):
                    if weights.get(voter, 0) > 0:
                        self.ledger.credit(voter, epoch, WorkKind.VOTES, 1)
                        self.vote_credits[voter] += 1
            if work is not None:
                for ev in work(s):
                    self.ledger.apply_work(ev.identity, epoch, ev.tokens_served, ev.positions_validated,
                                           ev.is_slash)
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
        from ..ledger.snapshot import IdentityCount, LStakeBucket, ScheduleBookState

        floor = self.ledger.min_kept_epoch(epoch_of(self.credited_through, self.spe))
        return ScheduleBookState(
            self.credited_through,
            tuple(LStakeBucket(i, e, c, s, p) for i, e, c, s, p in self.ledger.pool_buckets() if e >= floor),
            tuple(IdentityCount(k, v) for k, v in sorted(self.leader_credits.items()) if v > 0),
            tuple(IdentityCount(k, v) for k, v in sorted(self.vote_credits.items()) if v > 0),
        )

    @classmethod
    def from_state(cls, genesis: Genesis, state: ScheduleBookState) -> ScheduleBook:
        """Inverse of :meth:`to_state` (schedules and weights are recomputed on demand)."""
        book = cls(genesis)
        for b in state.lstake:
            book.ledger.restore_bucket(b.identity, b.epoch, b.credits, b.slashes, b.pool_credits)
        book.credited_through = state.credited_through
        book.leader_credits.update({c.identity: c.count for c in state.leader_credits})
        book.vote_credits.update({c.identity: c.count for c in state.vote_credits})
        return book

    def lstake_table(self, epoch: int) -> dict[str, int]:
        return {k.hex(): v for k, v in sorted(self.ledger.snapshot(epoch).items())}
