"""The PoH recorder: the running hash and tick count of one leader slot, as a sans-IO state
machine (normative text: spec/poh.md, "Recorder"; agave ``poh/src/poh_recorder.rs``
``PohRecorder::{tick, record}`` and ``entry/src/poh.rs`` ``Poh``).

It owns a :class:`~ambient_p2p.core.poh.Poh` started at the parent slot's last entry hash
and counts ticks up to the slot's *max tick height*, ``ticks_per_slot * (slot -
parent_slot)`` (a slot carries the ticks of the slots skipped since its parent):

* ``hash(n)``: hash at most ``n`` times, never the tick's own last hash; True when the next
  hash must be a tick (agave ``Poh::hash``);
* ``tick()``: finish the current tick and return the tick entry;
* ``record(mixin, transactions)``: mix ``mixin`` in (one hash) and return the transaction
  entry; when only the tick's last hash is left, tick first and record after it (agave
  ``PohRecorder::record``'s tick-then-retry loop);
* once the slot's last tick is reached, ``hash``/``tick``/``record`` raise
  :class:`MaxHeightReached` (agave ``PohRecorderError::MaxHeightReached``): the slot is
  complete and nothing more may go in it.

Every entry produced (ticks, also those a ``record`` forced, and records) is appended to
an outbox the shell drains with :meth:`PohRecorder.take_entries`, in chain order. The
entries of a completed slot pass :func:`~ambient_p2p.core.poh.check_slot_ticks` and
:func:`~ambient_p2p.core.poh.verify_entries`.

Pacing is a rule of the clock, not of the chain, and also lives here as pure arithmetic on
injected times (:meth:`PohRecorder.next_due_ns`): hash ``J`` of the slot is due
``J * tick_duration / hashes_per_tick`` after the slot's origin, and tick ``k`` at
``k * tick_duration``; a shell that is ahead waits, one that is behind hashes on.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from .poh import HASH_BYTES, Entry, Poh, hash_transactions


class MaxHeightReached(Exception):
    """The slot's last tick has been produced: nothing more may be hashed, ticked or
    recorded in it (agave ``PohRecorderError::MaxHeightReached``)."""

    reason = "max-height-reached"

    def __init__(self, slot: int, max_tick_height: int) -> None:
        self.slot = slot
        self.max_tick_height = max_tick_height
        super().__init__(f"{self.reason}: slot {slot} already has its {max_tick_height} ticks")


class PohRecorder:
    """The PoH of one working slot: ``slot`` built on ``parent_slot`` from ``start_hash``
    (the parent's last entry hash)."""

    def __init__(
        self,
        start_hash: bytes,
        hashes_per_tick: int,
        ticks_per_slot: int,
        *,
        slot: int,
        parent_slot: int,
    ) -> None:
        if len(start_hash) != HASH_BYTES:
            raise ValueError("start hash must be 32 bytes")
        if ticks_per_slot < 1:
            raise ValueError("ticks_per_slot must be >= 1")
        if slot <= parent_slot:
            raise ValueError(f"slot {slot} must be above its parent {parent_slot}")
        self._poh = Poh(start_hash, hashes_per_tick)
        self.start_hash = start_hash
        self.hashes_per_tick = hashes_per_tick
        self.ticks_per_slot = ticks_per_slot
        self.slot = slot
        self.parent_slot = parent_slot
        self.max_tick_height = ticks_per_slot * (slot - parent_slot)
        self.tick_height = 0
        self.records = 0  # transaction entries recorded so far
        self._outbox: list[Entry] = []

    # -- state ---------------------------------------------------------------------
    @property
    def current_hash(self) -> bytes:
        """The running hash (after every hash done so far)."""
        return self._poh.hash

    @property
    def complete(self) -> bool:
        """The slot's last tick has been produced."""
        return self.tick_height >= self.max_tick_height

    @property
    def tick_due(self) -> bool:
        """Only the current tick's own last hash is left: the next step must be ``tick``."""
        return self._poh.remaining_hashes == 1

    @property
    def hashes_in_tick(self) -> int:
        """Hashes done since the last tick (records included)."""
        return self.hashes_per_tick - self._poh.remaining_hashes

    @property
    def total_hashes(self) -> int:
        """Hashes done in this slot so far (ticks, plain hashes and records)."""
        return self.tick_height * self.hashes_per_tick + self.hashes_in_tick

    def _check_open(self) -> None:
        if self.complete:
            raise MaxHeightReached(self.slot, self.max_tick_height)

    # -- transitions ---------------------------------------------------------------
    def hash(self, max_num_hashes: int) -> bool:
        """Hash up to ``max_num_hashes`` times, stopping before the tick's last hash.
        Returns True when the next step must be :meth:`tick`."""
        self._check_open()
        if max_num_hashes < 0:
            raise ValueError("max_num_hashes must be >= 0")
        return self._poh.hash_some(max_num_hashes)

    def tick(self) -> Entry:
        """Finish the current tick (hashing whatever is left of it) and return the tick."""
        self._check_open()
        entry = self._poh.tick_entry()
        self.tick_height += 1
        self._outbox.append(entry)
        return entry

    def record(self, mixin: bytes, transactions: Sequence[bytes]) -> Entry:
        """Mix ``mixin`` (the Merkle root of ``transactions``' signatures, agave
        ``hash_transactions``; the caller computes it, as agave's banking stage does) into
        the chain and return the transaction entry. If the next hash must be a tick, the
        tick is produced first (it lands in the outbox before the record); if that tick was
        the slot's last, the record is refused with :class:`MaxHeightReached`."""
        if not transactions:
            raise ValueError("a record needs transactions (an entry without them is a tick)")
        if len(mixin) != HASH_BYTES:
            raise ValueError("mixin must be 32 bytes")
        while True:
            self._check_open()
            rec = self._poh.record(mixin)
            if rec is not None:
                entry = Entry(rec[0], rec[1], tuple(transactions))
                self._outbox.append(entry)
                self.records += 1
                return entry
            self.tick()

    def retarget(self, slot: int) -> None:
        """Make the chain so far (ticks only) the start of a later ``slot`` on the same
        parent: the ticks hashed for the old slot are the skipped-slot ticks of the new one,
        so nothing is hashed twice (the PoH service's slot preparation, spec/poh.md).
        Refused once a transaction was recorded or the old slot is complete."""
        if slot <= self.slot:
            raise ValueError(f"retarget to slot {slot} must move past slot {self.slot}")
        if self.records or self.complete:
            raise ValueError("only an incomplete slot holding ticks alone can be retargeted")
        self.slot = slot
        self.max_tick_height = self.ticks_per_slot * (slot - self.parent_slot)

    def record_transactions(self, transactions: Sequence[bytes]) -> Entry:
        """:meth:`record` with the mixin computed from ``transactions``."""
        return self.record(hash_transactions(transactions), transactions)

    def take_entries(self) -> list[Entry]:
        """The entries produced since the last call, in chain order."""
        out, self._outbox = self._outbox, []
        return out

    # -- clock ---------------------------------------------------------------------
    def next_due_ns(self, origin_ns: int, tick_duration_ns: int) -> int:
        """Earliest time the next step is due on a clock where the slot's first hash starts
        at ``origin_ns``: before a tick, ``origin + (tick_height + 1) * tick_duration``
        (a tick is never published early); otherwise ``origin + total_hashes *
        tick_duration / hashes_per_tick`` (hashes are spread evenly over the tick)."""
        if self.tick_due:
            return origin_ns + (self.tick_height + 1) * tick_duration_ns
        return origin_ns - (-self.total_hashes * tick_duration_ns // self.hashes_per_tick)  # ceil

    def hashes_due_by(self, origin_ns: int, tick_duration_ns: int, t_ns: int) -> int:
        """How many more hashes are due by ``t_ns`` (hash ``J``, counted from 0, is due at
        ``origin + J * tick_duration / hashes_per_tick``); the tick rule still applies."""
        if t_ns < origin_ns:
            return 0
        due = (t_ns - origin_ns) * self.hashes_per_tick // tick_duration_ns + 1
        return max(0, due - self.total_hashes)

    def tick_due_ns(self, origin_ns: int, tick_duration_ns: int) -> int:
        """When the current (next) tick is due."""
        return origin_ns + (self.tick_height + 1) * tick_duration_ns


def record_slot_entries(
    start_hash: bytes,
    hashes_per_tick: int,
    ticks_per_slot: int,
    slot: int,
    parent_slot: int,
    batches: Sequence[Sequence[bytes]],
) -> list[Entry]:
    """The one-shot slot construction (what ``node/leader.py`` ``build_slot`` does and
    replay expects): every batch recorded as early as it fits, in order, then ticks to the
    slot's end. Raises :class:`MaxHeightReached` if the batches do not all fit (each record
    costs one hash; at most ``hashes_per_tick - 1`` fit in one tick)."""
    rec = PohRecorder(start_hash, hashes_per_tick, ticks_per_slot, slot=slot, parent_slot=parent_slot)
    for batch in batches:
        rec.record_transactions(batch)
    while not rec.complete:
        rec.tick()
    return rec.take_entries()
