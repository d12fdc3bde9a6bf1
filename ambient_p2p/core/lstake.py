"""LStake: validated-work credit that replaces stake (normative text: spec/lstake.md).

A node's LStake at epoch E is

    LStake(E) = bootstrap * BOOTSTRAP_FADE_UNITS // (BOOTSTRAP_FADE_UNITS + P(E))
              + (short_weight_bps  * W(E, short_window_epochs)
              +  medium_weight_bps * W(E, medium_window_epochs)) // 10_000

where W(E, n) = max(0, credits - slashes) summed over the n epochs E-n+1 .. E, and P(E) is
the whole network's Logit Pool work (accepted tokens served, positions validated, training
steps) in the medium window. Credits are awarded per epoch bucket for validated work (as
settlements of the Logit Pool reach rooted slots: bank work events), completed leader slots
and votes cast; a slash forfeits the identity's buckets in the medium window
(:meth:`LStakeLedger.forfeit`). Bootstrap LStake from genesis fades out as the network's
validated work accrues (it keeps a young network able to schedule leaders before any work
is validated, and returns if all work stops for a medium window).

The leader schedule for epoch E is derived from the LStake snapshot at the end of epoch
E - 2 (known a full epoch in advance, as Solana fixes stakes one epoch ahead) and a seed
from the genesis hash and E. Sampling is LStake-weighted with a SHA-256 counter-mode
stream (spec/lstake.md gives the exact procedure; interop vectors in interop/lstake/).

Pure and deterministic: no clock, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from .crypto import sha256
from .messages import BPS, Genesis, LStakeParams

#: Credit units per kind of work (validated tokens are the base unit).
CREDIT_PER_VALIDATED_TOKEN = 1
CREDIT_PER_TRAINING_STEP = 1
CREDIT_PER_LEADER_SLOT = 64
CREDIT_PER_VOTE = 1
#: Per position a drawn validator checked, when its verdict counted at settlement: a check
#: is one forward pass over prompt + answer (prefill, far cheaper per token than the
#: miner's decoding); at the default 8 positions (core/pol.py) 2 units a position give each
#: of the 3 validators of a 64-token answer a quarter of the miner's credit (spec/lstake.md).
CREDIT_PER_VALIDATED_POSITION = 2
#: Network Logit Pool work (units, medium window) at which bootstrap LStake is halved:
#: ``bootstrap * F // (F + P)``. 2^16 units is about a thousand validated 64-token answers.
BOOTSTRAP_FADE_UNITS = 1 << 16

SCHEDULE_SEED_DOMAIN = b"ambient/leader-schedule/v1\x00"
SCHEDULE_LAG_EPOCHS = 2  # schedule(E) uses the snapshot at the end of epoch E - 2
#: Epochs below the root's epoch whose schedule and vote weights stay exact after
#: :meth:`LStakeLedger.prune` (slots of the previous epoch can still replay just after the
#: root crosses an epoch boundary, e.g. from a node snapshot taken before it).
PRUNE_MARGIN_EPOCHS = 1


class WorkKind(Enum):
    INFERENCE_TOKENS = "inference-tokens"
    TRAINING_STEPS = "training-steps"
    LEADER_SLOTS = "leader-slots"
    VOTES = "votes"
    POSITIONS_VALIDATED = "positions-validated"


#: Kinds that are Logit Pool work (they count in P(E), the bootstrap fade).
POOL_KINDS = frozenset({WorkKind.INFERENCE_TOKENS, WorkKind.TRAINING_STEPS, WorkKind.POSITIONS_VALIDATED})

_UNIT = {
    WorkKind.POSITIONS_VALIDATED: CREDIT_PER_VALIDATED_POSITION,
    WorkKind.INFERENCE_TOKENS: CREDIT_PER_VALIDATED_TOKEN,
    WorkKind.TRAINING_STEPS: CREDIT_PER_TRAINING_STEP,
    WorkKind.LEADER_SLOTS: CREDIT_PER_LEADER_SLOT,
    WorkKind.VOTES: CREDIT_PER_VOTE,
}


class LStakeError(ValueError):
    pass


@dataclass
class _Bucket:
    credits: int = 0
    slashes: int = 0
    pool: int = 0  # the Logit Pool share of ``credits``

    @property
    def net(self) -> int:
        return self.credits - self.slashes


@dataclass
class LStakeLedger:
    """Per-identity, per-epoch work accounting. Mutated only by :meth:`credit` and
    :meth:`slash`; read by :meth:`lstake` and :meth:`snapshot`."""

    params: LStakeParams
    bootstrap: dict[bytes, int]
    _buckets: dict[bytes, dict[int, _Bucket]] = field(default_factory=lambda: defaultdict(dict))
    #: epochs in which each identity was slashed (:meth:`forfeit`)
    _forfeits: dict[bytes, set[int]] = field(default_factory=dict)

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> LStakeLedger:
        return cls(genesis.lstake, {n.identity: n.lstake for n in genesis.bootstrap_nodes})

    def _bucket(self, identity: bytes, epoch: int) -> _Bucket:
        if len(identity) != 32:
            raise LStakeError("identity must be a 32-byte public key")
        if epoch < 0:
            raise LStakeError("epoch must be >= 0")
        return self._buckets[identity].setdefault(epoch, _Bucket())

    def credit(self, identity: bytes, epoch: int, kind: WorkKind, amount: int) -> int:
        """Credit validated work; returns the credit units added. This is the entry point
        the Logit Pool calls when a verdict accepts a miner's (or validator's) work."""
        if amount < 0:
            raise LStakeError("credit amount must be >= 0")
        units = amount * _UNIT[kind]
        b = self._bucket(identity, epoch)
        b.credits += units
        if kind in POOL_KINDS:
            b.pool += units
        return units

    def slash(self, identity: bytes, epoch: int, units: int) -> None:
        """Retrospective slash (a PoL verdict found invalid work credited in ``epoch``)."""
        if units < 0:
            raise LStakeError("slash amount must be >= 0")
        self._bucket(identity, epoch).slashes += units

    def apply_work(self, identity: bytes, epoch: int, tokens_served: int, positions_validated: int,
                   slashed: bool) -> None:
        """Book one bank work event (core/work.py ``WorkEvent``) of a rooted slot in ``epoch``:
        a credit of accepted tokens and validated positions, or a slash (:meth:`forfeit`)."""
        if slashed:
            self.forfeit(identity, epoch)
            return
        self.credit(identity, epoch, WorkKind.INFERENCE_TOKENS, tokens_served)
        self.credit(identity, epoch, WorkKind.POSITIONS_VALIDATED, positions_validated)

    def forfeit(self, identity: bytes, epoch: int) -> int:
        """A slash booked in ``epoch`` (a rejected or fraudulent result, a validator that
        accepted a fraud): for every LStake query at ``E >= epoch``, the buckets of
        ``identity`` of epochs ``<= epoch`` no longer count (neither in its windows nor in
        P). Queries at epochs before ``epoch`` answer as before: a schedule or vote weight
        already fixed from an older snapshot never changes. Returns the medium-window work
        units this removed at ``epoch``."""
        if len(identity) != 32:
            raise LStakeError("identity must be a 32-byte public key")
        if epoch < 0:
            raise LStakeError("epoch must be >= 0")
        before = self.window_total(identity, epoch, self.params.medium_window_epochs)
        self._forfeits.setdefault(identity, set()).add(epoch)
        return before - self.window_total(identity, epoch, self.params.medium_window_epochs)

    def _cut(self, identity: bytes, epoch: int) -> int:
        """The latest forfeit of ``identity`` at or below ``epoch`` (-1: none)."""
        return max((s for s in self._forfeits.get(identity, ()) if s <= epoch), default=-1)

    def pool_work(self, epoch: int) -> int:
        """P(E): the network's Logit Pool work units in the medium window ending at ``epoch``
        (forfeited buckets excluded)."""
        lo = epoch - self.params.medium_window_epochs
        total = 0
        for identity, per in self._buckets.items():
            start = max(lo, self._cut(identity, epoch))
            total += sum(b.pool for e, b in per.items() if start < e <= epoch)
        return total

    def bootstrap_at(self, identity: bytes, epoch: int, pool_work: int | None = None) -> int:
        """Bootstrap LStake of ``identity`` at ``epoch``, faded by the network's pool work;
        0 while a forfeit of ``identity`` is in the medium window ending at ``epoch``."""
        m = self.params.medium_window_epochs
        if any(epoch - m < s <= epoch for s in self._forfeits.get(identity, ())):
            return 0
        p = self.pool_work(epoch) if pool_work is None else pool_work
        return self.bootstrap.get(identity, 0) * BOOTSTRAP_FADE_UNITS // (BOOTSTRAP_FADE_UNITS + p)

    def window_total(self, identity: bytes, epoch: int, n_epochs: int) -> int:
        buckets = self._buckets.get(identity, {})
        start = max(epoch - n_epochs, self._cut(identity, epoch))
        total = sum(b.net for e, b in buckets.items() if start < e <= epoch)
        return max(0, total)

    def lstake(self, identity: bytes, epoch: int, pool_work: int | None = None) -> int:
        p = self.params
        short = self.window_total(identity, epoch, p.short_window_epochs)
        medium = self.window_total(identity, epoch, p.medium_window_epochs)
        work = (p.short_weight_bps * short + p.medium_weight_bps * medium) // BPS
        return self.bootstrap_at(identity, epoch, pool_work) + work

    def min_kept_epoch(self, root_epoch: int) -> int:
        """Oldest epoch bucket any query that can still be asked reads, once the root is in
        ``root_epoch``: the schedules and vote weights of epochs ``>= root_epoch -
        PRUNE_MARGIN_EPOCHS`` read :meth:`lstake` at epochs ``E >= root_epoch -
        PRUNE_MARGIN_EPOCHS - SCHEDULE_LAG_EPOCHS``, whose windows reach back to ``E -
        medium_window_epochs + 1`` (the medium window is the longer one)."""
        return root_epoch - PRUNE_MARGIN_EPOCHS - SCHEDULE_LAG_EPOCHS - self.params.medium_window_epochs + 1

    def prune(self, root_epoch: int) -> int:
        """Drop the buckets older than :meth:`min_kept_epoch` (and identities left with
        none); returns how many were dropped. A pure function of the root's epoch: every
        :meth:`lstake` / :meth:`snapshot` at an epoch ``>= root_epoch - PRUNE_MARGIN_EPOCHS
        - SCHEDULE_LAG_EPOCHS`` answers as before (tests/test_cleanup.py compares pruned and
        unpruned ledgers), and the ledger holds at most ``medium_window_epochs + 3`` epochs
        of buckets per identity instead of one per epoch forever."""
        floor = self.min_kept_epoch(root_epoch)
        dropped = 0
        for identity in list(self._buckets):
            per = self._buckets[identity]
            old = [e for e in per if e < floor]
            for e in old:
                del per[e]
            dropped += len(old)
            if not per:
                del self._buckets[identity]
        for identity in list(self._forfeits):
            # a forfeit below the floor cuts only buckets already dropped
            self._forfeits[identity] = {e for e in self._forfeits[identity] if e >= floor}
            if not self._forfeits[identity]:
                del self._forfeits[identity]
        return dropped

    def buckets(self) -> list[tuple[bytes, int, int, int]]:
        """Every bucket as ``(identity, epoch, credits, slashes)``, sorted."""
        return sorted((i, e, b.credits, b.slashes) for i, per in self._buckets.items() for e, b in per.items())

    def pool_buckets(self) -> list[tuple[bytes, int, int, int, int]]:
        """Every bucket as ``(identity, epoch, credits, slashes, pool)``, sorted: the state a
        node snapshot persists (ledger/snapshot.py)."""
        return sorted((i, e, b.credits, b.slashes, b.pool) for i, per in self._buckets.items() for e, b in per.items())

    def forfeits(self) -> list[tuple[bytes, int]]:
        """Every forfeit as ``(identity, epoch)``, sorted (persisted with the buckets)."""
        return sorted((i, e) for i, es in self._forfeits.items() for e in es)

    def restore_forfeit(self, identity: bytes, epoch: int) -> None:
        if len(identity) != 32 or epoch < 0:
            raise LStakeError("a forfeit needs a 32-byte identity and an epoch >= 0")
        self._forfeits.setdefault(identity, set()).add(epoch)

    def restore_bucket(self, identity: bytes, epoch: int, credits: int, slashes: int, pool: int = 0) -> None:
        """Set one bucket (rebuilding a ledger from :meth:`pool_buckets`)."""
        if credits < 0 or slashes < 0 or not 0 <= pool <= credits:
            raise LStakeError("bucket credits and slashes must be >= 0, pool within credits")
        b = self._bucket(identity, epoch)
        b.credits, b.slashes, b.pool = credits, slashes, pool

    def snapshot(self, epoch: int) -> dict[bytes, int]:
        """LStake of every known identity at the end of ``epoch`` (zeros omitted)."""
        ids = set(self.bootstrap) | set(self._buckets)
        pool = self.pool_work(epoch)
        snap = {i: self.lstake(i, epoch, pool) for i in ids}
        return {i: v for i, v in snap.items() if v > 0}


# ---------------------------------------------------------------------------------------
# Leader schedule
# ---------------------------------------------------------------------------------------
def schedule_seed(genesis_hash: bytes, epoch: int) -> bytes:
    return sha256(SCHEDULE_SEED_DOMAIN, genesis_hash, epoch.to_bytes(8, "little"))


def sort_weights(weights: Mapping[bytes, int]) -> list[tuple[bytes, int]]:
    """Solana's order (agave ``sort_stakes``): LStake descending, then pubkey descending;
    zero weights dropped."""
    return sorted(((k, v) for k, v in weights.items() if v > 0), key=lambda kv: (kv[1], kv[0]), reverse=True)


class _Stream:
    """SHA-256 counter-mode stream of u64s: draw i = u64_le(sha256(seed || u64_le(i))[:8])."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.counter = 0

    def next_u64(self) -> int:
        out = int.from_bytes(sha256(self.seed, self.counter.to_bytes(8, "little"))[:8], "little")
        self.counter += 1
        return out

    def below(self, bound: int) -> int:
        """Uniform in [0, bound) by rejection (no modulo bias)."""
        if not 0 < bound <= 1 << 64:
            raise LStakeError("bound out of range")
        limit = (1 << 64) - ((1 << 64) % bound)
        while True:
            r = self.next_u64()
            if r < limit:
                return r % bound


def leader_schedule(weights: Mapping[bytes, int], seed: bytes, slots_per_epoch: int, leader_slots: int) -> list[bytes]:
    """Leader of every slot in an epoch: for each group of ``leader_slots`` consecutive
    slots, pick an identity with probability proportional to its weight."""
    ordered = sort_weights(weights)
    if not ordered:
        raise LStakeError("no identity has LStake: cannot schedule leaders")
    total = sum(v for _, v in ordered)
    if total >= 1 << 64:
        raise LStakeError("total LStake overflows u64")
    cumulative = []
    acc = 0
    for _, v in ordered:
        acc += v
        cumulative.append(acc)
    stream = _Stream(seed)
    out: list[bytes] = []
    for _ in range(slots_per_epoch // leader_slots):
        r = stream.below(total)
        # first index whose cumulative weight exceeds r
        lo, hi = 0, len(cumulative) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if cumulative[mid] > r:
                hi = mid
            else:
                lo = mid + 1
        out.extend([ordered[lo][0]] * leader_slots)
    return out


def epoch_of(slot: int, slots_per_epoch: int) -> int:
    return slot // slots_per_epoch


def epoch_weights(genesis: Genesis, ledger: LStakeLedger, epoch: int) -> dict[bytes, int]:
    """LStake that governs ``epoch`` (its leader schedule and its vote weights): the snapshot
    at the end of ``epoch - 2``, genesis LStake for epochs 0 and 1; zeros omitted."""
    basis = epoch - SCHEDULE_LAG_EPOCHS
    if basis >= 0:
        return ledger.snapshot(basis)
    return {n.identity: n.lstake for n in genesis.bootstrap_nodes if n.lstake > 0}


def schedule_for_epoch(genesis: Genesis, ledger: LStakeLedger, epoch: int) -> list[bytes]:
    """The schedule of ``epoch``: LStake-weighted over :func:`epoch_weights`, seeded by the
    genesis hash and ``epoch``."""
    return leader_schedule(
        epoch_weights(genesis, ledger, epoch), schedule_seed(genesis.hash(), epoch),
        genesis.epoch.slots_per_epoch, genesis.epoch.leader_slots,
    )


def stake_weighted_sample(weights: Mapping[bytes, int], seed: bytes, count: int) -> list[bytes]:
    """``count`` distinct identities drawn without replacement, LStake-weighted (used to pick
    validators for PoL work). Returns fewer if fewer identities have LStake."""
    remaining = dict(sort_weights(weights))
    stream = _Stream(seed)
    out: list[bytes] = []
    while remaining and len(out) < count:
        ordered = sort_weights(remaining)
        r = stream.below(sum(v for _, v in ordered))
        acc = 0
        for k, v in ordered:
            acc += v
            if r < acc:
                out.append(k)
                del remaining[k]
                break
    return out


# ---------------------------------------------------------------------------------------
# What one epoch's LStake snapshot gives each identity (spec/lstake.md "Shares of an epoch")
# ---------------------------------------------------------------------------------------
#: draw probabilities are reported in parts per million (integers: no floats in anything two
#: implementations compare)
PPM = 1_000_000


@dataclass(frozen=True)
class EpochShare:
    """One identity's part of an epoch: its LStake in the snapshot that governs the epoch,
    its leader slots in the epoch's schedule, and the probability (ppm, floor) that it is
    the first pick of a validator draw over every identity with LStake."""

    lstake: int
    leader_slots: int
    draw_ppm: int


def epoch_shares(weights: Mapping[bytes, int], schedule: list[bytes]) -> dict[bytes, EpochShare]:
    """Per identity with LStake or a leader slot: :class:`EpochShare` from the epoch's weights
    (:func:`epoch_weights`, which also weigh the epoch's votes and the Logit Pool's draws) and
    its schedule (:func:`schedule_for_epoch`). The first pick of
    :func:`stake_weighted_sample` takes ``k`` with probability ``w_k / total`` (later picks
    remove the chosen), so ``draw_ppm = w_k * PPM // total``."""
    total = sum(v for v in weights.values() if v > 0)
    slots: dict[bytes, int] = {}
    for leader in schedule:
        slots[leader] = slots.get(leader, 0) + 1
    ids = {k for k, v in weights.items() if v > 0} | set(slots)
    return {k: EpochShare(max(0, weights.get(k, 0)), slots.get(k, 0),
                          max(0, weights.get(k, 0)) * PPM // total if total else 0) for k in sorted(ids)}
