"""Leader schedule and LStake credits as a node sees them (spec/node.md "LStake credits").

Credits come only from *rooted* slots, so that every node applies the same credits in the
same order whatever forks it saw: when a slot is rooted, its scheduled leader is credited
one leader slot in the slot's epoch. The schedule of epoch E uses the LStake snapshot at
the end of epoch E - 2 (core/lstake.py), so it becomes computable once this node's root
has passed the last slot of epoch E - 2; before that :meth:`leader` answers None (the slot's
shreds cannot be verified yet) rather than guessing from an incomplete snapshot.

No I/O, no clock: the validator calls :meth:`on_rooted` and :meth:`leader`.
"""

from __future__ import annotations

from ..core.lstake import LStakeLedger, WorkKind, epoch_of, schedule_for_epoch
from ..core.messages import Genesis

#: Schedules kept in memory (the current epoch, its neighbours, some slack).
MAX_CACHED_EPOCHS = 8


class ScheduleBook:
    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.spe = genesis.epoch.slots_per_epoch
        self.ledger = LStakeLedger.from_genesis(genesis)
        self.credited_through = 0  # every rooted slot <= this has been credited
        self._cache: dict[int, list[bytes]] = {}

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

    def leader(self, slot: int) -> bytes | None:
        if slot <= 0:
            return None
        s = self.schedule(epoch_of(slot, self.spe))
        return None if s is None else s[slot % self.spe]

    def on_rooted(self, slots: list[int], new_root: int) -> None:
        """``slots`` (ascending) became rooted, the highest being ``new_root`` or below it;
        credit each slot's leader. Idempotent for slots at or below ``credited_through``."""
        for s in slots:
            if s <= self.credited_through or s == 0:
                continue
            leader = self.leader(s)
            if leader is not None:
                self.ledger.credit(leader, epoch_of(s, self.spe), WorkKind.LEADER_SLOTS, 1)
            self.credited_through = s  # a rooted slot decides every slot below it
        self.credited_through = max(self.credited_through, new_root)

    def lstake_table(self, epoch: int) -> dict[str, int]:
        return {k.hex(): v for k, v in sorted(self.ledger.snapshot(epoch).items())}
