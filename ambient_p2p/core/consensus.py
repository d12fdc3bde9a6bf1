"""The consensus driver: fork choice + tower + votes, as one sans-IO state machine
(spec/tower.md). The node shell feeds it events and performs the effects it returns.

Events (methods)                  Effects (returned)
--------------------------------  ------------------------------------------------------
on_replayed(slot, parent, hash)   -
on_vote(vote)                     - (or VoteRejected reason, for peer scoring)
on_block_votes(votes)             - (votes that landed in a replayed block)
on_duplicate(slot)                -
set_stakes(weights)               - (a new epoch's vote weights; fork choice re-weighs)
dump_slot(slot)                   - the removed slots (our version of a duplicate lost)
decide()                          PersistTower(record) then SendVote(vote) when voting;
                                  NewRoot(slot) when the tower roots a slot
try_vote()                        the same, or NotVoted(reason) saying why no vote
                                  (agave's HeaviestForkFailures)
refresh_last_vote(now)            SendVote(the tower's last vote, re-signed, newer
                                  timestamp) once after a restart, when its slot is
                                  replayed here (agave refresh_last_vote); the tower is
                                  unchanged and already durable: no PersistTower
lift_lost_votes(cluster_root)     - (ends the restart guard ``lost``: spec/tower.md)

NotVoted reasons, checked in this order: ``no-candidate`` (the best slot is the root),
``not-replayed`` (no bank hash for it), ``already-voted`` (not newer than the last vote),
``locked-out``, ``tower-unknown`` (a vote this node may have cast before a restart
without its tower could be broken: ``core.tower.LostVotes``), ``threshold`` (the depth-4 or
depth-8 vote lacks > 2/3), ``switch`` (< 38 % on other forks). ``decide`` keeps the last reason in ``last_no_vote_reason`` (None after a vote).

The shell must perform PersistTower (durably) before SendVote, so that a crash can never
leave a vote on the wire that the restarted tower does not know about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from . import crypto
from .codec import Bytes, Opt, UInt, fld, message
from .errors import ProtocolError
from .forkchoice import ForkChoice
from .messages import sign_message, verify_message
from .tower import INITIAL_LOCKOUT, SWITCH_FORK_THRESHOLD, LostVotes, Tower, TowerRecord, is_supermajority

#: Votes for slots further than this behind our root are ignored (stale, can't matter).
VOTE_MAX_AGE_SLOTS = 512


@message(type_id=0x0302, version=1, max_size=512)
@dataclass(frozen=True)
class Vote:
    """A validator's vote on ``slot`` whose bank it replayed to ``bank_hash``; signed by
    ``voter`` for purpose ``vote`` (zeroed-signature rule)."""

    voter: bytes = fld(Bytes(32, exact=True))
    slot: int = fld(UInt(64))
    bank_hash: bytes = fld(Bytes(32, exact=True))
    root: int | None = fld(Opt(UInt(64)))
    timestamp_ms: int = fld(UInt(64))
    signature: bytes = fld(Bytes(64, exact=True))


@dataclass(frozen=True)
class PersistTower:
    record: TowerRecord


@dataclass(frozen=True)
class SendVote:
    vote: Vote


@dataclass(frozen=True)
class NewRoot:
    slot: int


Effect = PersistTower | SendVote | NewRoot

NO_VOTE_REASONS = ("no-candidate", "not-replayed", "already-voted", "locked-out", "tower-unknown", "threshold",
                   "switch")


@dataclass(frozen=True)
class NotVoted:
    """Why :meth:`Consensus.decide` did not vote (one of ``NO_VOTE_REASONS``)."""

    reason: str
    slot: int


class VoteRejected(ProtocolError, ValueError):
    """A peer's vote is invalid; ``reason`` is a stable code for logs and peer scoring."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)


@dataclass
class Consensus:
    keypair: crypto.Keypair
    stakes: Mapping[bytes, int]
    root: int = 0
    tower: Tower = field(default_factory=Tower)
    bank_hashes: dict[int, bytes] = field(default_factory=dict)
    forkchoice: ForkChoice = field(init=False)
    #: restart guard: votes this node may have cast and no longer knows (None: none)
    lost: LostVotes | None = None
    last_no_vote_reason: str | None = field(default=None, init=False)
    #: the tower's last vote is re-sent once after a restart (``refresh_last_vote``)
    refresh_due: bool = field(default=False, init=False)
    last_vote_ms: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.refresh_due = bool(self.tower.votes)
        self.forkchoice = ForkChoice(self.tower.root if self.tower.root is not None else self.root, self.stakes)
        self.root = self.forkchoice.root

    @property
    def total_stake(self) -> int:
        return self.forkchoice.total_stake

    # -- events ---------------------------------------------------------------------------
    def on_replayed(self, slot: int, parent: int, bank_hash: bytes) -> None:
        """``slot`` replayed successfully on top of ``parent`` giving ``bank_hash``."""
        if slot <= self.root:
            return
        self.forkchoice.add_slot(slot, parent)
        self.bank_hashes[slot] = bank_hash

    def on_duplicate(self, slot: int) -> None:
        self.forkchoice.mark_duplicate(slot)

    def dump_slot(self, slot: int) -> set[int]:
        """Forget our version of ``slot`` and everything built on it (agave's dump of a
        duplicate slot whose other version was duplicate-confirmed); the shell purges it and
        repairs the confirmed version. The tower is unchanged: its lockouts are by slot."""
        gone = self.forkchoice.remove_subtree(slot)
        for s in gone:
            self.bank_hashes.pop(s, None)
        return gone

    def set_stakes(self, stakes: Mapping[bytes, int]) -> None:
        """Weigh votes by ``stakes`` from now on (a new epoch's LStake snapshot). Every
        latest vote is re-weighed; the latest votes of identities without LStake are
        dropped. The tower is unchanged: its lockouts bind whatever the weights."""
        new = {k: v for k, v in stakes.items() if v > 0}
        self.stakes = new
        self.forkchoice.stakes = new
        self.forkchoice.latest_vote = {v: s for v, s in self.forkchoice.latest_vote.items() if v in new}

    def check_vote(self, vote: Vote) -> None:
        """Stateless checks a gossip validator can run: signer has LStake, signature."""
        if vote.voter not in self.stakes:
            raise VoteRejected("no-lstake", "voter has no LStake in this epoch")
        if not verify_message(vote, vote.voter, "vote"):
            raise VoteRejected("bad-signature", "vote signature does not verify")
        if vote.root is not None and vote.root > vote.slot:
            raise VoteRejected("bad-root", f"root {vote.root} above voted slot {vote.slot}")

    def on_vote(self, vote: Vote) -> bool:
        """Count a peer's vote for fork choice. Returns False if it cannot count (yet):
        unknown slot, a bank hash that differs from ours, stale."""
        self.check_vote(vote)
        if vote.slot + VOTE_MAX_AGE_SLOTS < self.root:
            return False
        ours = self.bank_hashes.get(vote.slot)
        if ours is None or ours != vote.bank_hash:
            return False
        return self.forkchoice.add_vote(vote.voter, vote.slot)

    def on_block_votes(self, landed: list[tuple[bytes, int]]) -> int:
        """Votes that landed in a replayed block, ``(voter, slot)``: the bank checked each
        against this fork's bank hash of ``slot``, so they count for fork choice like gossip
        votes (agave's replay votes). A node that misses gossip (restarted, mesh re-forming)
        still weighs forks by the votes the blocks carry. Returns how many counted."""
        return sum(1 for voter, slot in landed if slot > self.root and self.forkchoice.add_vote(voter, slot))

    # -- decisions ------------------------------------------------------------------------
    def decide(self, now_ms: int) -> list[Effect]:
        """Vote on the heaviest fork's tip if Tower BFT allows it."""
        out = self.try_vote(now_ms)
        if isinstance(out, NotVoted):
            self.last_no_vote_reason = out.reason
            return []
        self.last_no_vote_reason = None
        return out

    def try_vote(self, now_ms: int) -> list[Effect] | NotVoted:
        """:meth:`decide`, saying why when it does not vote."""
        best = self.forkchoice.best_slot()
        if best == self.forkchoice.root:
            return NotVoted("no-candidate", best)
        if best not in self.bank_hashes:
            return NotVoted("not-replayed", best)
        fc = self.forkchoice
        ancestors = fc.ancestors(best)
        t = self.tower
        last = t.last_voted_slot
        if last is not None and best <= last:
            return NotVoted("already-voted", best)
        if t.is_locked_out(best, ancestors):
            return NotVoted("locked-out", best)
        if self.lost is not None and (self.lost.blocking(best, ancestors) is not None
                                      or not self._lost_switch_ok(best, ancestors)):
            return NotVoted("tower-unknown", best)
        if not t.check_thresholds(best, fc.subtree_stake, self.total_stake):
            return NotVoted("threshold", best)
        if last is not None and last in fc.parent and not t.check_switch(
            best, ancestors, fc.other_fork_stake(last, best), self.total_stake
        ):
            return NotVoted("switch", best)
        new_root = t.record_vote(best)
        if self.lost is not None:
            self.lost = self.lost.after_vote(best, ancestors)
        self.refresh_due = False
        effects: list[Effect] = [PersistTower(t.to_record(self.keypair)), self._vote(best, now_ms)]
        fc.add_vote(self.keypair.pubkey, best)
        if new_root is not None and new_root in fc.parent and new_root > fc.root:
            fc.set_root(new_root)
            self.root = new_root
            self.bank_hashes = {s: h for s, h in self.bank_hashes.items() if s >= new_root}
            effects.append(NewRoot(new_root))
        return effects

    def _lost_switch_ok(self, slot: int, ancestors: set[int]) -> bool:
        """Until its first vote after a restart without its tower, any possibly-lost vote
        ``w`` may be this node's last vote: voting off ``w``'s fork needs the switch proof
        against ``w`` (> 38 % of LStake locked out on other forks, ours not counted)."""
        assert self.lost is not None
        if not self.lost.last_unknown:
            return True
        fc, me = self.forkchoice, self.keypair.pubkey
        for w in self.lost.slots:
            if w in ancestors or w not in fc.parent:
                continue
            anc, sub = fc.ancestors(w), fc.subtree(w)
            other = sum(fc.stakes[k] for k, v in fc.latest_vote.items()
                        if k != me and v not in anc and v not in sub and (v > w or v + INITIAL_LOCKOUT >= w))
            if not Fraction(other, self.total_stake) > SWITCH_FORK_THRESHOLD:
                return False
        return True

    def _vote(self, slot: int, now_ms: int) -> SendVote:
        # a re-sent vote needs a newer timestamp, or gossip's duplicate filter drops it
        self.last_vote_ms = max(now_ms, self.last_vote_ms + 1)
        vote = Vote(self.keypair.pubkey, slot, self.bank_hashes[slot], self.tower.root, self.last_vote_ms,
                    crypto.ZERO_SIGNATURE)
        return SendVote(sign_message(vote, self.keypair, "vote"))

    def refresh_last_vote(self, now_ms: int) -> list[Effect]:
        """Once after a restart with a tower: when the tower's last voted slot is replayed
        here, send that vote again (agave ``ReplayStage::refresh_last_vote``,
        ``Tower::refresh_last_vote_timestamp``) and count it in our fork choice, so that
        this node's LStake weighs its fork again at once, not only at its next new vote.
        No lockout changes: the vote is the one the durable tower already holds."""
        last = self.tower.last_voted_slot
        if not self.refresh_due or last is None or last not in self.bank_hashes:
            return []
        self.refresh_due = False
        self.forkchoice.add_vote(self.keypair.pubkey, last)
        return [self._vote(last, now_ms)]

    def lift_lost_votes(self, cluster_root: int) -> None:
        """The restart guard ends once the cluster rooted a slot at or above every slot a
        lost vote could be on: each lost vote is then an ancestor of that root or on a fork
        that can never be confirmed (> 2/3 of LStake rooted against it)."""
        if self.lost is not None and cluster_root >= self.lost.highest:
            self.lost = None

    def build_parent(self, slot: int) -> int:
        """The slot a leader of ``slot`` builds on: the best slot, unless this node's tower
        could not vote on ``slot`` as a child of it (locked out of that fork); then the
        heaviest slot descending from its last vote (agave's reset bank), so that it can
        vote on its own block."""
        fc, t = self.forkchoice, self.tower
        best = fc.best_slot()
        last = t.last_voted_slot
        if last is None or last not in fc.parent or not t.is_locked_out(slot, fc.ancestors(best) | {best}):
            return best
        w = fc.subtree_stakes()
        node = last
        while True:
            kids = [c for c in fc.children.get(node, ()) if fc.is_eligible(c)]
            if not kids:
                return node
            node = max(kids, key=lambda c: (w[c], -c))

    # -- commitment -----------------------------------------------------------------------
    def processed_slot(self) -> int:
        return self.forkchoice.best_slot()

    def confirmed_slot(self) -> int:
        """Highest slot on the best fork with > 2/3 of LStake voted on it or below."""
        s = self.forkchoice.best_slot()
        w = self.forkchoice.subtree_stakes()
        total = self.total_stake
        while s != self.forkchoice.root:
            if is_supermajority(w[s], total):
                return s
            parent = self.forkchoice.parent[s]
            assert parent is not None
            s = parent
        return s

    def finalized_slot(self) -> int:
        return self.root
