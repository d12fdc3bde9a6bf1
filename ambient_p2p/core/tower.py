"""Tower BFT (normative text: spec/tower.md), following agave's ``vote_state`` and
``consensus.rs``.

Rules (the table is the protocol; code below implements exactly these rows):

| event / check             | rule                                                                        |
|---------------------------|-----------------------------------------------------------------------------|
| vote on slot s            | s must exceed the last voted slot (else TowerError "not newer")             |
|   1. expire               | pop from the top every vote v with v.slot + 2^v.conf < s                    |
|   2. root                 | if the tower holds 31 votes, pop the bottom one: its slot becomes the root  |
|   3. push                 | push (s, conf=1)                                                            |
|   4. double lockouts      | for vote i (0 = bottom): if depth > i + conf_i then conf_i += 1             |
| lockout of vote v         | 2^conf (INITIAL_LOCKOUT = 2); v locks out every slot <= v.slot + 2^conf     |
| locked out(s, ancestors)  | after simulating step 1-4, some vote or the root is neither s nor an        |
|                           | ancestor of s -> s is on a conflicting fork and may not be voted on         |
| threshold(s)              | after simulating the vote, the vote 8 deep must have > 2/3 of total LStake  |
|                           | voted on it or a descendant (skipped if that vote is unchanged by s)        |
| shallow threshold(s)      | the same at depth 4 with the same > 2/3: a slot the node has not seen > 2/3 |
|                           | vote on never reaches a confirmation count above 4 (lockout <= 16 slots)    |
| switch(s)                 | s not a descendant of the last vote L: needs > 38% of total LStake whose    |
|                           | latest vote v is on any fork other than L's and v > L or v + 2 >= L         |
|                           | (agave SWITCH_FORK_THRESHOLD; ForkChoice.other_fork_stake)                  |
| duplicate confirmed       | > 52% of LStake voted on a version of a duplicate slot (forkchoice.py)      |
| confirmed (commitment)    | > 2/3 of total LStake voted on the slot or a descendant                     |
| finalized / rooted        | the slot is the tower root (reached max lockout depth of 31 votes)          |
| restart, tower missing or | every frozen slot above the ledger root may carry a vote the node no longer |
| older than the ledger root| knows (``LostVotes``): voting on s is refused ("tower-unknown") while some  |
|                           | such slot u is not an ancestor of s and s <= u + 2^n(u), n(u) = 1 + how    |
|                           | many of them descend from u + the votes since on its descendants (a bound  |
|                           | on u's confirmation count; n >= 31: never expires, u may be the root);     |
|                           | until its first new vote, leaving the fork of any such u needs the switch  |
|                           | proof (> 38 %) as if u were the last vote; lifted once > 2/3 of LStake     |
|                           | reported a                                                                 |
|                           | root >= the highest of them (spec/tower.md "Restart without a tower")      |

Pure: the tower never reads the clock or disk; the node persists :meth:`Tower.to_record`
(signed by the identity) after every vote *before* sending it, so a restarted node never
votes against its own lockouts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from . import crypto
from .codec import Bytes, List, Opt, Rec, UInt, fld, message, record
from .messages import sign_message, verify_message

INITIAL_LOCKOUT = 2
MAX_LOCKOUT_HISTORY = 31
VOTE_THRESHOLD_DEPTH = 8
#: agave ``VOTE_THRESHOLD_DEPTH_SHALLOW`` (consensus.rs, 2024; there at 38 % and log-only).
#: Enforced here at ``VOTE_THRESHOLD_SIZE``: a vote that the node has not seen > 2/3 of LStake
#: vote on stops doubling at confirmation count 4, so a fork the cluster does not confirm (a
#: partition's side) locks its voters out for at most 2^4 = 16 slots, not 2^8 = 256
#: (spec/tower.md "Shallow threshold").
VOTE_THRESHOLD_DEPTH_SHALLOW = 4
VOTE_THRESHOLD_SIZE = Fraction(2, 3)
SWITCH_FORK_THRESHOLD = Fraction(38, 100)
DUPLICATE_THRESHOLD = Fraction(52, 100)
SUPERMAJORITY = Fraction(2, 3)


class TowerError(ValueError):
    pass


@record
@dataclass(frozen=True)
class Lockout:
    slot: int = fld(UInt(64))
    confirmation_count: int = fld(UInt(32))

    @property
    def lockout(self) -> int:
        return int(INITIAL_LOCKOUT**self.confirmation_count)

    @property
    def last_locked_out_slot(self) -> int:
        return self.slot + self.lockout

    def is_locked_out_at_slot(self, slot: int) -> bool:
        return self.last_locked_out_slot >= slot


@message(type_id=0x0301, version=1, max_size=2048)
@dataclass(frozen=True)
class TowerRecord:
    """A persisted tower, signed by its node (purpose ``vote``)."""

    identity: bytes = fld(Bytes(32, exact=True))
    root: int | None = fld(Opt(UInt(64)))
    votes: tuple[Lockout, ...] = fld(List(Rec(Lockout), MAX_LOCKOUT_HISTORY))
    signature: bytes = fld(Bytes(64, exact=True))


@dataclass
class Tower:
    votes: list[Lockout] = field(default_factory=list)
    root: int | None = None

    # -- state transitions ----------------------------------------------------------------
    @property
    def last_voted_slot(self) -> int | None:
        return self.votes[-1].slot if self.votes else None

    def record_vote(self, slot: int) -> int | None:
        """Apply a vote on ``slot``; returns the new root if this vote made one."""
        last = self.last_voted_slot
        if last is not None and slot <= last:
            raise TowerError(f"vote on slot {slot} is not newer than the last vote {last}")
        if self.root is not None and slot <= self.root:
            raise TowerError(f"vote on slot {slot} is not above the root {self.root}")
        votes = list(self.votes)
        while votes and not votes[-1].is_locked_out_at_slot(slot):
            votes.pop()
        new_root = None
        if len(votes) == MAX_LOCKOUT_HISTORY:
            new_root = votes.pop(0).slot
        votes.append(Lockout(slot, 1))
        depth = len(votes)
        self.votes = [
            Lockout(v.slot, v.confirmation_count + 1) if depth > i + v.confirmation_count else v
            for i, v in enumerate(votes)
        ]
        if new_root is not None:
            self.root = new_root
        return new_root

    def rooted_at_least(self, root: int) -> Tower:
        """This tower for a node that restarted from a bank at ``root`` (a node snapshot)
        while its tower's root is older or absent (the tower file is older than the
        snapshot, or lost): votes at or below ``root`` are dropped (the root settles them)
        and ``root`` becomes the root; later votes keep their lockouts (agave
        ``Tower::adjust_lockouts_after_replay``). Unchanged when the tower's root is at or
        above ``root``, or ``root`` is 0 (genesis)."""
        if root <= 0 or (self.root is not None and self.root >= root):
            return self
        return Tower([v for v in self.votes if v.slot > root], root)

    def simulate(self, slot: int) -> Tower:
        t = Tower(list(self.votes), self.root)
        t.record_vote(slot)
        return t

    # -- checks ---------------------------------------------------------------------------
    def is_locked_out(self, slot: int, ancestors: Container[int]) -> bool:
        """True if voting on ``slot`` (whose ancestors are ``ancestors``) would violate a
        lockout, or ``slot`` is not newer than the last vote."""
        last = self.last_voted_slot
        if last is not None and slot <= last:
            return True
        if self.root is not None and slot <= self.root:
            return True
        sim = self.simulate(slot)
        for v in sim.votes:
            if v.slot != slot and v.slot not in ancestors:
                return True
        return sim.root is not None and sim.root != slot and sim.root not in ancestors

    def check_threshold(self, slot: int, voted_stake: Callable[[int], int], total_stake: int,
                        depth: int = VOTE_THRESHOLD_DEPTH) -> bool:
        """Agave's ``check_vote_stake_threshold`` at ``depth`` (8, or the shallow 4) with
        > 2/3: the vote ``depth`` deep in the simulated tower needs > 2/3 of LStake voted on
        it or a descendant, unless this vote leaves its confirmation count unchanged."""
        if total_stake <= 0:
            return False
        sim = self.simulate(slot)
        if len(sim.votes) <= depth:
            return True
        vote = sim.votes[-1 - depth]
        for old in self.votes:
            if old.slot == vote.slot and old.confirmation_count == vote.confirmation_count:
                return True  # this vote does not deepen the threshold vote's lockout
        return Fraction(voted_stake(vote.slot), total_stake) > VOTE_THRESHOLD_SIZE

    def check_thresholds(self, slot: int, voted_stake: Callable[[int], int], total_stake: int) -> bool:
        """Both threshold checks a vote must pass: depth 4 and depth 8, each > 2/3."""
        return all(self.check_threshold(slot, voted_stake, total_stake, d)
                   for d in (VOTE_THRESHOLD_DEPTH_SHALLOW, VOTE_THRESHOLD_DEPTH))

    def check_switch(self, slot: int, ancestors: Container[int], other_fork_stake: int, total_stake: int) -> bool:
        """May we vote on ``slot``? Free on our own fork (``slot`` descends from our last
        vote); otherwise > 38% of LStake must be locked out on other forks."""
        last = self.last_voted_slot
        if last is None or last in ancestors:
            return True
        return total_stake > 0 and Fraction(other_fork_stake, total_stake) > SWITCH_FORK_THRESHOLD

    # -- persistence ----------------------------------------------------------------------
    def to_record(self, kp: crypto.Keypair) -> TowerRecord:
        rec = TowerRecord(kp.pubkey, self.root, tuple(self.votes), crypto.ZERO_SIGNATURE)
        signed: TowerRecord = sign_message(rec, kp, "vote")
        return signed

    @classmethod
    def from_record(cls, rec: TowerRecord, identity: bytes) -> Tower:
        """Restore a persisted tower, refusing one not signed by ``identity`` or whose
        votes are not a valid tower (strictly increasing slots above the root)."""
        if rec.identity != identity or not verify_message(rec, identity, "vote"):
            raise TowerError("tower record is not signed by this node's identity")
        slots = [v.slot for v in rec.votes]
        if any(a >= b for a, b in itertools.pairwise(slots)):
            raise TowerError("tower votes are not strictly increasing")
        if rec.root is not None and slots and slots[0] <= rec.root:
            raise TowerError("tower votes are not above its root")
        if any(not 1 <= v.confirmation_count <= MAX_LOCKOUT_HISTORY for v in rec.votes):
            raise TowerError("tower confirmation counts out of range")
        return cls(list(rec.votes), rec.root)


@dataclass(frozen=True)
class LostVotes:
    """Votes a restarted node may have cast and no longer knows (its tower file is missing,
    or older than the ledger's root): one possible vote per frozen slot above the ledger
    root (a node votes only on slots it replayed, and keeps every slot above its root).
    The votes above a vote u in an honest tower are all descendants of u (the tower is a
    chain) and lockout doubling needs depth > i + conf, so u's confirmation count is at
    most ``n(u)`` = 1 + the number of those slots descending from u, and u's lockout ends
    by ``u + 2^n(u)`` (the table row "restart, tower missing")."""

    slots: tuple[int, ...]  # ascending
    bounds: tuple[int, ...]  # n(slot), same order
    #: no vote since the restart: any of ``slots`` may be the last vote, which a vote on
    #: another fork may leave only with a switch proof (agave's stray last vote)
    last_unknown: bool = True

    def __post_init__(self) -> None:
        if list(self.slots) != sorted(set(self.slots)) or len(self.bounds) != len(self.slots):
            raise ValueError("lost-vote slots must be strictly ascending, one bound each")

    @classmethod
    def of(cls, parent: Callable[[int], int | None], slots: Iterable[int]) -> LostVotes:
        """From the frozen ``slots`` above the ledger root and their parents."""
        ordered = sorted(set(slots))
        desc = dict.fromkeys(ordered, 0)
        for s in ordered:  # every slot counts once for each of its ancestors among them
            p = parent(s)
            while p is not None and p in desc:
                desc[p] += 1
                p = parent(p)
        return cls(tuple(ordered), tuple(1 + desc[s] for s in ordered))

    @property
    def highest(self) -> int:
        return self.slots[-1] if self.slots else 0

    def lockout_end(self, i: int) -> int | None:
        """The last slot a possible vote on ``slots[i]`` locks; None: it may have become
        the root (31 votes deep) and never expires."""
        n = self.bounds[i]
        return None if n >= MAX_LOCKOUT_HISTORY else self.slots[i] + INITIAL_LOCKOUT**n

    def after_vote(self, slot: int, ancestors: Container[int]) -> LostVotes:
        """A new vote on ``slot`` stacks on every possibly-lost vote it descends from (the
        real tower is the lost votes with the new ones on top): one more confirmation each."""
        return LostVotes(self.slots, tuple(n + (u in ancestors and u != slot) for u, n in
                                           zip(self.slots, self.bounds, strict=True)), last_unknown=False)

    def blocking(self, slot: int, ancestors: Container[int]) -> int | None:
        """The first possibly-lost vote that a vote on ``slot`` could break, or None."""
        for i, u in enumerate(self.slots):
            if u in ancestors:
                continue
            end = self.lockout_end(i)
            if end is None or slot <= end:
                return u
        return None


def is_supermajority(stake: int, total_stake: int) -> bool:
    return total_stake > 0 and Fraction(stake, total_stake) > SUPERMAJORITY


def is_duplicate_confirmed(stake: int, total_stake: int) -> bool:
    """More than ``DUPLICATE_THRESHOLD`` (52 %) of LStake: the one place the duplicate
    confirmation rule is computed (fork choice over our subtree, core/duplicates.py over
    votes for other versions)."""
    return total_stake > 0 and Fraction(stake, total_stake) > DUPLICATE_THRESHOLD
