"""The Logit Pool: who checks a posted answer, and how the auction settles on their
verdicts (normative text: spec/logit_pool.md).

In plain words:

* **The draw.** Once a query's result lands (``RESULT_POSTED`` at ``result_slot``), its
  validators are fixed by a seed nobody controls in advance:
  ``sha256(DRAW_DOMAIN || commitment hash || query id || beacon)``, where the *beacon* is
  the PoH hash (last blockhash) of the first slot at or after ``result_slot +
  DRAW_DELAY_SLOTS`` on the fork. ``VALIDATORS_PER_QUERY`` identities are drawn
  LStake-weighted without replacement (core/lstake.py ``stake_weighted_sample``) from the
  identities with the *validator role*: a vote landed for a slot at or after ``beacon_slot
  - VALIDATOR_ACTIVE_SLOTS`` (the bank's vote state) and LStake above zero; the miner is
  excluded. Each drawn validator opens ``POSITIONS_PER_VALIDATOR`` positions chosen by the
  existing challenge derivation (core/pol.py ``challenge_seed``/``select_positions`` with
  the beacon). Integers only.
* **Verdicts** (auction instruction 7): a drawn validator signs a transaction with accept
  or reject; a reject carries the failing opening as evidence, which the program checks
  for everything that needs no model (commitment, drawn position, Merkle path, canonical
  fingerprint). Verdicts land until ``verify_end_slot``.
* **Settlement** (auction instruction 8, anyone): ``VERDICT_QUORUM`` accepts ->
  ``FINALIZED_VERIFIED``: the winner is paid ``clearing_price * num_tokens`` and its bond
  back, the query fee goes to the accepting validators, the rest to the requester.
  ``VERDICT_QUORUM`` rejects -> ``FINALIZED_REJECTED``: the bond is slashed
  (``SLASH_TO_REQUESTER_PERCENT`` to the requester, the rest to the rejecting validators),
  the requester refunded. Without a quorum at ``verify_end_slot``: absent validators lose
  work credit, the draw is extended once to fresh validators (a new window), then the query
  settles on what arrived.

Pure: the bank passes its slot and a view (balances, auction accounts, PoH hashes of
ancestors, the validator set with LStake, work credit).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from . import crypto, shard
from .auction import (
    INCINERATOR_ID,
    AccountsView,
    AuctionError,
    BidAccount,
    BidStatus,
    IxAccount,
    Kind,
    QueryAccount,
    QueryStatus,
    _expect,
    _load_query,
    _move,
    _need,
    _pda,
    _signer,
    _status,
    _writable,
    bid_address,
)
from .codec import DecodeError, decode
from .difficulty import MAX_VALIDATORS, Difficulty, EpochObservation, adjust
from .lstake import stake_weighted_sample
from .merkle import MerkleProof, proof_depth, verify_proof
from .pol import (
    DEFAULT_CHECKED_POSITIONS,
    LogitFingerprint,
    PolCommitment,
    PolOpening,
    challenge_seed,
    check_token_rule,
    leaf_bytes,
    select_positions,
)

# ---------------------------------------------------------------------------------------
# Constants (spec/logit_pool.md "Constants")
# ---------------------------------------------------------------------------------------
#: validators drawn per query (Ambient's interface: 3 verifiers)
VALIDATORS_PER_QUERY = 3
#: verdicts of one side that decide (Ambient's interface: quorum 2)
VERDICT_QUORUM = 2
#: the beacon is the first slot at or after result_slot + this: the miner cannot know its
#: PoH hash when it posts
DRAW_DELAY_SLOTS = 4
#: slots after the beacon slot during which the drawn validators' verdicts land (prior art: 32)
VERIFY_WINDOW_SLOTS = 32
#: an identity has the validator role when one of its votes for a slot at or after
#: beacon_slot - this landed on the fork (it is alive and voting)
VALIDATOR_ACTIVE_SLOTS = 64
#: positions each drawn validator opens (pol.DEFAULT_CHECKED_POSITIONS)
POSITIONS_PER_VALIDATOR = DEFAULT_CHECKED_POSITIONS
#: how often the draw is extended to fresh validators when verdicts are missing
MAX_DRAW_ROUNDS = 2
#: share of a slashed bond that goes to the requester (the rest to the rejecting validators)
SLASH_TO_REQUESTER_PERCENT = 50
DRAW_DOMAIN = b"ambient/pool-draw/v1\x00"
POOL_SEED = b"pool"
#: a draw asked this many slots after its beacon slot, whose blockhash the bank no longer
#: holds, finds the beacon lost and draws nobody (core/bank.py keeps MAX_RECENT_BLOCKHASHES
#: = 300 blockhashes, one per frozen ancestor, so a beacon is known at least this long;
#: without the rule an undrawn query or dispute would wait for ever, spec/logit_pool.md
#: "Lost beacons")
BEACON_LOST_SLOTS = 300
#: the pool account has room for the most validators dynamic difficulty may draw, per round
MAX_DRAWN = MAX_VALIDATORS * MAX_DRAW_ROUNDS

#: verdict bytes in the pool account; UNAVAILABLE: the validator was present but could not
#: obtain the answer, prompt or its openings from anyone (spec/logit_pool.md "Unavailable data")
NO_VERDICT, ACCEPT, REJECT, UNAVAILABLE = 0, 1, 2, 3
#: the verdict byte of ``verdict``'s data (the pool account's byte differs: REJECT is 2 there)
DATA_REJECT, DATA_ACCEPT, DATA_UNAVAILABLE = 0, 1, 2
_DATA_VERDICT = {DATA_REJECT: REJECT, DATA_ACCEPT: ACCEPT, DATA_UNAVAILABLE: UNAVAILABLE}


class PoolView(AccountsView, Protocol):
    """What the Logit Pool sees of the bank besides balances and auction accounts."""

    def poh_hash_at_or_after(self, slot: int) -> tuple[int, bytes] | None:
        """(s, last blockhash of s) for the first ancestor s >= ``slot`` of the executing
        bank, or None when no ancestor that high exists yet (or it is too old to know)."""
        ...

    def validator_weights(self, active_since_slot: int) -> Mapping[bytes, int]:
        """Identities with the validator role (a landed vote for a slot >= the argument)
        and their LStake (> 0)."""
        ...

    def credit_work(self, identity: bytes, *, tokens_served: int = 0, positions_validated: int = 0) -> None: ...

    def slash_work(self, identity: bytes, reason: str) -> None: ...

    def epoch(self) -> int:
        """The executing bank's epoch (the epoch dynamic difficulty's knobs belong to)."""
        ...


def quorum(per_round: int) -> int:
    """Agreeing verdicts that decide a round of ``per_round`` drawn validators: a majority
    (``VERDICT_QUORUM`` = 2 for Ambient's 3)."""
    return per_round // 2 + 1


# ---------------------------------------------------------------------------------------
# The draw (pure)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DrawnValidator:
    validator: bytes
    positions: tuple[int, ...]


@dataclass(frozen=True)
class Draw:
    beacon_slot: int
    beacon: bytes
    seed: bytes
    validators: tuple[DrawnValidator, ...]


def draw_seed(commitment_hash: bytes, query: bytes, beacon: bytes) -> bytes:
    """``sha256(DRAW_DOMAIN || commitment hash || query id || beacon)``."""
    return crypto.sha256(DRAW_DOMAIN, bytes(commitment_hash), bytes(query), bytes(beacon))


def draw_validators(
    commitment_hash: bytes,
    query: bytes,
    beacon_slot: int,
    beacon: bytes,
    weights: Mapping[bytes, int],
    exclude: Sequence[bytes],
    num_tokens: int,
    count: int = VALIDATORS_PER_QUERY,
    positions: int = POSITIONS_PER_VALIDATOR,
) -> Draw:
    """``count`` validators (fewer if fewer are eligible), LStake-weighted without
    replacement from ``weights`` minus ``exclude`` (the miner, earlier rounds), each with its
    positions ``select_positions(challenge_seed(beacon, validator, commitment hash),
    num_tokens, POSITIONS_PER_VALIDATOR)``."""
    seed = draw_seed(commitment_hash, query, beacon)
    excluded = set(exclude)
    pool = {k: v for k, v in weights.items() if k not in excluded and v > 0}
    chosen = stake_weighted_sample(pool, seed, count)
    return Draw(beacon_slot, bytes(beacon), seed, tuple(
        DrawnValidator(v, tuple(select_positions(challenge_seed(beacon, v, commitment_hash), num_tokens,
                                                 positions)))
        for v in chosen))


def positions_for(q: QueryAccount, beacon: bytes, validator: bytes, count: int = POSITIONS_PER_VALIDATOR) -> list[int]:
    return select_positions(challenge_seed(beacon, validator, q.pol_commitment().hash()), q.num_tokens, count)


# ---------------------------------------------------------------------------------------
# The pool account (kind 4; PDA ["pool", query]; spec/logit_pool.md "The pool account")
# ---------------------------------------------------------------------------------------
#: kind u8, round u8, drawn_count u8, positions u8, per_round u8, pad 3, beacon_slot u64,
#: verify_end_slot u64, beacon[32], round-0 beacon[32] (positions of round-0 validators),
#: validators 14 x [32], verdicts 14 x u8, pad 2, settled_slot u64 (0 until settle decided;
#: the challenge window counts from it)
_POOL = struct.Struct("<BBBBB3xQQ32s32s" + "32s" * MAX_DRAWN + "B" * MAX_DRAWN + "2xQ")
POOL_ACCOUNT_BYTES = _POOL.size
KIND_POOL = Kind.POOL


@dataclass(frozen=True)
class PoolAccount:
    round: int  # 0, or 1 after the extension
    beacon_slot: int  # of the current round
    verify_end_slot: int  # of the current round
    beacon: bytes  # of the current round
    first_beacon: bytes  # of round 0 (the positions of round-0 validators use it)
    validators: tuple[bytes, ...]  # in draw order; round r's are those drawn in round r
    verdicts: tuple[int, ...]  # per validator: NO_VERDICT, ACCEPT, REJECT
    round_starts: tuple[int, ...] = (0,)  # index of each round's first validator
    settled_slot: int = 0  # the slot settle decided the query in (0 before)
    positions: int = POSITIONS_PER_VALIDATOR  # each validator opens this many (the epoch's difficulty)
    per_round: int = VALIDATORS_PER_QUERY  # validators drawn per round (the epoch's difficulty)

    def pack(self) -> bytes:
        vals = list(self.validators) + [bytes(32)] * (MAX_DRAWN - len(self.validators))
        verd = list(self.verdicts) + [NO_VERDICT] * (MAX_DRAWN - len(self.verdicts))
        # round 1 starts where round 0 ended: stored implicitly as drawn_count of round 0 in
        # the high nibble of the round byte (round 0: 0)
        round_byte = self.round | ((self.round_starts[1] if len(self.round_starts) > 1 else 0) << 4)
        return _POOL.pack(KIND_POOL, round_byte, len(self.validators), self.positions, self.per_round,
                          self.beacon_slot, self.verify_end_slot, self.beacon, self.first_beacon, *vals, *verd,
                          self.settled_slot)

    @classmethod
    def unpack(cls, data: bytes) -> PoolAccount:
        if len(data) != POOL_ACCOUNT_BYTES or data[0] != KIND_POOL:
            raise ValueError("not a pool account")
        f = _POOL.unpack(data)
        _, round_byte, n, positions, per_round, beacon_slot, verify_end, beacon, first = f[:9]
        if n > MAX_DRAWN:
            raise ValueError("pool account out of range")
        vals = tuple(f[9:9 + n])
        verd = tuple(f[9 + MAX_DRAWN:9 + MAX_DRAWN + n])
        rnd = round_byte & 0x0F
        starts = (0,) if rnd == 0 else (0, round_byte >> 4)
        return cls(rnd, beacon_slot, verify_end, beacon, first, vals, verd, starts, f[-1], positions, per_round)

    def round_of(self, index: int) -> int:
        return 1 if len(self.round_starts) > 1 and index >= self.round_starts[1] else 0

    def beacon_of(self, index: int) -> bytes:
        return self.first_beacon if self.round_of(index) == 0 else self.beacon

    def current(self) -> range:
        return range(self.round_starts[-1], len(self.validators))

    def count(self, verdict: int) -> int:
        return sum(1 for v in self.verdicts if v == verdict)

    @property
    def quorum(self) -> int:
        return quorum(self.per_round)

    def positions_of(self, q: QueryAccount, index: int) -> list[int]:
        """The positions the validator at ``index`` was drawn to open."""
        return positions_for(q, self.beacon_of(index), self.validators[index], self.positions)


# ---------------------------------------------------------------------------------------
# Dynamic difficulty in the chain (spec/difficulty.md "In the chain")
# ---------------------------------------------------------------------------------------
DIFFICULTY_SEED = b"difficulty"
#: kind u8, positions u8, validators u8, pad 5, epoch u64, results u64, rejected u64,
#: drawn u64, missed u64
_DIFF = struct.Struct("<BBB5xQQQQQ")
DIFFICULTY_ACCOUNT_BYTES = _DIFF.size


@dataclass(frozen=True)
class DifficultyAccount:
    """The knobs in force for ``epoch`` and what that epoch's settlements observed so far."""

    knobs: Difficulty
    epoch: int
    results: int = 0
    rejected: int = 0
    drawn: int = 0
    missed: int = 0

    def pack(self) -> bytes:
        return _DIFF.pack(Kind.DIFFICULTY, self.knobs.positions, self.knobs.validators, self.epoch, self.results,
                          self.rejected, self.drawn, self.missed)

    @classmethod
    def unpack(cls, data: bytes) -> DifficultyAccount:
        if len(data) != DIFFICULTY_ACCOUNT_BYTES or data[0] != Kind.DIFFICULTY:
            raise ValueError("not a difficulty account")
        _, positions, validators, epoch, results, rejected, drawn, missed = _DIFF.unpack(data)
        return cls(Difficulty(positions, validators), epoch, results, rejected, drawn, missed)

    def observation(self) -> EpochObservation:
        return EpochObservation(self.results, min(self.rejected, self.results), self.drawn,
                                min(self.missed, self.drawn))


def difficulty_address() -> bytes:
    """The one difficulty account: PDA of ``["difficulty"]``."""
    return _pda([DIFFICULTY_SEED])


def difficulty_at(view: AccountsView, epoch: int) -> DifficultyAccount:
    """The difficulty in force in ``epoch``: the stored account's knobs if it is of ``epoch``,
    else its knobs adjusted once by its epoch's observation (core/difficulty.py ``adjust``;
    an epoch with no settlement changes nothing, so one step covers any gap), with zero counts.
    Defaults (8 positions, 3 validators) before any settlement."""
    data = view.auction_data(difficulty_address())
    acct = DifficultyAccount(Difficulty(), epoch) if data is None else DifficultyAccount.unpack(data)
    if acct.epoch < epoch:
        knobs, _row = adjust(acct.knobs, acct.observation())
        acct = DifficultyAccount(knobs, epoch)
    return acct


def observe(view: PoolView, *, results: int = 0, rejected: int = 0, drawn: int = 0, missed: int = 0) -> None:
    """Add to the executing epoch's observation (settle, extensions, upheld fraud proofs)."""
    if not (results or rejected or drawn or missed):
        return
    a = difficulty_at(view, view.epoch())
    view.set_auction_data(difficulty_address(), replace(a, results=a.results + results, rejected=a.rejected + rejected,
                                                        drawn=a.drawn + drawn, missed=a.missed + missed).pack())


def pool_address(query: bytes) -> bytes:
    """The pool account of a query: PDA of ``["pool", query]``."""
    return _pda([POOL_SEED, bytes(query)])


def load_pool(view: AccountsView, key: bytes) -> PoolAccount | None:
    data = view.auction_data(key)
    return None if data is None else PoolAccount.unpack(data)


# ---------------------------------------------------------------------------------------
# Instruction data
# ---------------------------------------------------------------------------------------
TAG_VERDICT = 7
TAG_SETTLE = 8
_VERDICT_HEAD = struct.Struct("<IB")


def verdict_data(accept: bool, evidence: PolOpening | None = None) -> bytes:
    """``u32 tag 7 || u8 accept || evidence`` (the failing opening's encoding; only on a reject)."""
    from .codec import encode

    return _VERDICT_HEAD.pack(TAG_VERDICT, 1 if accept else 0) + (b"" if evidence is None else encode(evidence))


def unavailable_data() -> bytes:
    """``u32 tag 7 || u8 2``: the drawn validator could not obtain what it must check."""
    return _VERDICT_HEAD.pack(TAG_VERDICT, DATA_UNAVAILABLE)


def settle_data() -> bytes:
    return struct.pack("<I", TAG_SETTLE)


def evidence_error(cmt: PolCommitment, opening: PolOpening, positions: Sequence[int]) -> str | None:
    """Why ``opening`` cannot be evidence against ``cmt`` for a validator drawn to open
    ``positions`` (everything checkable without the model), or None."""
    fp = opening.fp
    if opening.cmt != cmt.hash():
        return "the opening is for another commitment"
    if fp.pos not in positions:
        return f"position {fp.pos} is not one this validator was drawn to open"
    if len(opening.sibs) != proof_depth(cmt.num_tokens) or not verify_proof(
            cmt.root, leaf_bytes(fp), MerkleProof(fp.pos, opening.sibs), cmt.num_tokens):
        return "the Merkle path does not lead to the committed root"
    return None


# ---------------------------------------------------------------------------------------
# Handlers (called from auction.process_instruction)
# ---------------------------------------------------------------------------------------
def _beacon(view: PoolView, after_slot: int, slot: int | None) -> tuple[int, bytes] | None:
    """The beacon of a draw asked at ``slot``: the first ancestor at or after ``after_slot``
    and its last blockhash; None when it is lost (``slot >= after_slot +
    BEACON_LOST_SLOTS`` and the bank no longer knows it: the draw then has nobody);
    ``auction-draw-not-ready`` before it exists (and whenever ``slot`` is None)."""
    got = view.poh_hash_at_or_after(after_slot)
    if got is not None:
        return got
    if slot is not None and slot >= after_slot + BEACON_LOST_SLOTS:
        return None
    raise AuctionError("auction-draw-not-ready", f"no slot at or after {after_slot} is an ancestor yet")


def _draw_round(view: PoolView, q: QueryAccount, qkey: bytes, after_slot: int, exclude: Sequence[bytes],
                knobs: Difficulty, slot: int | None = None) -> Draw | None:
    """The round's draw; None when its beacon is lost (spec/logit_pool.md "Lost beacons")."""
    got = _beacon(view, after_slot, slot)
    if got is None:
        return None
    beacon_slot, beacon = got
    weights = view.validator_weights(max(0, beacon_slot - VALIDATOR_ACTIVE_SLOTS))
    return draw_validators(q.pol_commitment().hash(), qkey, beacon_slot, beacon, weights, exclude, q.num_tokens,
                           knobs.validators, knobs.positions)


def _open_pool(view: PoolView, q: QueryAccount, qkey: bytes, pkey: bytes, slot: int | None = None) -> PoolAccount:
    pool = load_pool(view, pkey)
    if pool is not None:
        return pool
    knobs = difficulty_at(view, view.epoch()).knobs  # fixed for this query from here on
    d = _draw_round(view, q, qkey, q.result_slot + DRAW_DELAY_SLOTS, [q.winner], knobs, slot)
    if d is None:  # lost: nobody drawn, no extension (its window would be long over): settle refunds
        end = q.result_slot + DRAW_DELAY_SLOTS + VERIFY_WINDOW_SLOTS
        return PoolAccount(MAX_DRAW_ROUNDS - 1, q.result_slot + DRAW_DELAY_SLOTS, end, bytes(32), bytes(32), (), (),
                           round_starts=(0, 0), positions=knobs.positions, per_round=knobs.validators)
    return PoolAccount(0, d.beacon_slot, d.beacon_slot + VERIFY_WINDOW_SLOTS, d.beacon, d.beacon,
                       tuple(v.validator for v in d.validators), tuple(NO_VERDICT for _ in d.validators),
                       positions=knobs.positions, per_round=knobs.validators)


def verdict(view: PoolView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    if len(data) < _VERDICT_HEAD.size:
        raise AuctionError("auction-bad-data", "verdict data is at least 5 bytes")
    _, kind = _VERDICT_HEAD.unpack_from(data)
    evidence_bytes = data[_VERDICT_HEAD.size:]
    if kind not in _DATA_VERDICT or (kind == DATA_REJECT) != bool(evidence_bytes):
        raise AuctionError("auction-bad-data", "the verdict is 0 reject (with evidence), 1 accept or 2 unavailable "
                           "(without)")
    _need(accs, 3, "verdict")
    validator, qacct, pacct = accs
    _signer(validator, "validator")
    _writable(validator, qacct, pacct)
    _expect(pacct, pool_address(qacct.key), "pool")
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.RESULT_POSTED)
    pool = _open_pool(view, q, qacct.key, pacct.key, slot)
    if validator.key not in pool.validators:
        raise AuctionError("auction-not-drawn", "the signer is not drawn for this query")
    i = pool.validators.index(validator.key)
    if i not in pool.current():
        raise AuctionError("auction-verify-closed", "this validator's round is over")
    if slot >= pool.verify_end_slot:
        raise AuctionError("auction-verify-closed", f"verdicts closed at slot {pool.verify_end_slot}")
    if pool.verdicts[i] != NO_VERDICT:
        raise AuctionError("auction-verdict-exists", "this validator already posted its verdict")
    if kind == DATA_REJECT:
        try:
            opening = decode(evidence_bytes, expected=PolOpening)
        except DecodeError as exc:
            raise AuctionError("auction-bad-evidence", f"evidence is not a PolOpening: {exc}") from None
        why = evidence_error(q.pol_commitment(), opening, pool.positions_of(q, i))
        if why is not None:
            raise AuctionError("auction-bad-evidence", why)
    verdicts = list(pool.verdicts)
    verdicts[i] = _DATA_VERDICT[kind]
    view.set_auction_data(pacct.key, replace(pool, verdicts=tuple(verdicts)).pack())


def settle(view: PoolView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    _need(accs, 7, "settle", exact=False)
    qacct, pacct, requester, winner, bacct, incin, dacct = accs[:7]
    _writable(*accs)
    _expect(pacct, pool_address(qacct.key), "pool")
    _expect(dacct, difficulty_address(), "difficulty")
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.RESULT_POSTED)
    _expect(requester, q.requester, "requester")
    _expect(winner, q.winner, "winner")
    _expect(bacct, bid_address(qacct.key, q.winner), "winning bid")
    _expect(incin, INCINERATOR_ID, "incinerator")
    pool = _open_pool(view, q, qacct.key, pacct.key, slot)
    listed, extra = accs[7 : 7 + len(pool.validators)], accs[7 + len(pool.validators) :]
    if [a.key for a in listed] != list(pool.validators):
        raise AuctionError("auction-bad-accounts", f"settle lists the {len(pool.validators)} drawn validators "
                           "in draw order")
    route = shard.settle_route(view, qacct.key, extra)  # a sharded answer: its stages are paid (spec/shard.md)
    accepts, rejects = pool.count(ACCEPT), pool.count(REJECT)
    decided = accepts >= pool.quorum or rejects >= pool.quorum
    if not decided and slot < pool.verify_end_slot:
        raise AuctionError("auction-verify-open", f"no quorum yet and verdicts land until {pool.verify_end_slot}")
    if not decided:
        absent = [pool.validators[i] for i in pool.current() if pool.verdicts[i] == NO_VERDICT]
        d = None
        if pool.round + 1 < MAX_DRAW_ROUNDS:
            d = _draw_round(view, q, qacct.key, pool.verify_end_slot, [q.winner, *pool.validators],
                            Difficulty(pool.positions, pool.per_round), slot)
        for v in absent:  # absent validators of the round that just closed lose credit
            view.slash_work(v, "absent")
        observe(view, missed=len(absent))
        if d is not None and d.validators:
            # the extension's window counts from the slot it is drawn in, not from its beacon:
            # the fresh validators learn of their draw only when this settle lands, which may be
            # long after the beacon slot (a late settle); a window measured from the beacon
            # would then be partly or wholly over and they would be slashed as absent
            new = replace(pool, round=pool.round + 1, beacon_slot=d.beacon_slot,
                          verify_end_slot=max(d.beacon_slot, slot) + VERIFY_WINDOW_SLOTS, beacon=d.beacon,
                          validators=pool.validators + tuple(v.validator for v in d.validators),
                          verdicts=pool.verdicts + tuple(NO_VERDICT for _ in d.validators),
                          round_starts=(0, len(pool.validators)))
            view.set_auction_data(pacct.key, new.pack())
            return
    bid_data = view.auction_data(bacct.key)
    if bid_data is None:  # an invariant: a RESULT_POSTED query's winning bid exists
        raise AuctionError("auction-no-bid", "the winning bid account is empty")
    bid = BidAccount.unpack(bid_data)
    observe(view, drawn=len(pool.validators), results=1 if accepts + rejects else 0,
            rejected=1 if accepts + rejects and not (rejects < pool.quorum and accepts >= rejects) else 0)
    if accepts == rejects == 0:  # nobody checked it: the requester is made whole
        _move(view, qacct.key, q.requester, q.escrow_lamports)
        unavailable = pool.count(UNAVAILABLE) >= pool.quorum
        if unavailable:  # present validators found nothing to check: the miner withheld it
            _move(view, bacct.key, INCINERATOR_ID, bid.bond_lamports)
        else:  # nobody was there to check: not the miner's fault
            _move(view, bacct.key, q.winner, bid.bond_lamports)
        view.set_auction_data(bacct.key, replace(bid, status=BidStatus.SLASHED if unavailable
                                                 else BidStatus.REFUNDED).pack())
        view.set_auction_data(qacct.key, replace(q, status=QueryStatus.FINALIZED_REJECTED, escrow_lamports=0).pack())
        if unavailable:
            view.slash_work(q.winner, "result-unavailable")
        return
    verified = rejects < pool.quorum and accepts >= rejects
    side = ACCEPT if verified else REJECT
    counted = [listed[i].key for i, v in enumerate(pool.verdicts) if v == side]
    fee_share = q.escrow_lamports - q.max_payment  # QUERY_FEE_LAMPORTS
    escrow_left = q.escrow_lamports
    if counted:
        each = fee_share // len(counted)
        for v in counted:
            _move(view, qacct.key, v, each)
            escrow_left -= each
    if verified:  # the bond stays in the bid account until the challenge window closes
        pay = q.clearing_price * q.num_tokens
        if route is None:
            _move(view, qacct.key, q.winner, pay)
        else:
            shard.pay_route(view, qacct.key, route, pay, q.num_tokens)
        _move(view, qacct.key, q.requester, escrow_left - pay)
        view.set_auction_data(bacct.key, replace(bid, status=BidStatus.HELD).pack())
        status = QueryStatus.FINALIZED_VERIFIED
    else:
        to_requester = bid.bond_lamports * SLASH_TO_REQUESTER_PERCENT // 100
        rest = bid.bond_lamports - to_requester
        each = rest // len(counted)  # counted >= 1: rejects > accepts >= 0
        for v in counted:
            _move(view, bacct.key, v, each)
        _move(view, bacct.key, q.requester, bid.bond_lamports - each * len(counted))
        _move(view, qacct.key, q.requester, escrow_left)
        view.set_auction_data(bacct.key, replace(bid, status=BidStatus.SLASHED).pack())
        status = QueryStatus.FINALIZED_REJECTED
    view.set_auction_data(qacct.key, replace(q, status=status, escrow_lamports=0).pack())
    view.set_auction_data(pacct.key, replace(pool, settled_slot=slot).pack())
    if verified and route is None:
        view.credit_work(q.winner, tokens_served=q.num_tokens)
    elif verified and route is not None:
        shard.credit_route(view, route, q.num_tokens)
    if not verified:
        view.slash_work(q.winner, "result-rejected")
    for v in counted:
        view.credit_work(v, positions_validated=len(pool.positions_of(q, pool.validators.index(v))))


def draw_of(view: PoolView, q: QueryAccount, qkey: bytes) -> PoolAccount | None:
    """The draw as the chain holds it: the pool account when one exists, else the round-0
    draw a verdict at this point would create (None while the beacon slot is not an
    ancestor). What ``pol draw`` prints and the validator service acts on."""
    try:
        return _open_pool(view, q, qkey, pool_address(qkey))
    except AuctionError:
        return None


# ---------------------------------------------------------------------------------------
# Retrospective slashing (spec/logit_pool.md "Retrospective slashing")
# ---------------------------------------------------------------------------------------
#: slots after settlement during which a fraud proof against a verified result may be filed;
#: the winner's bond stays in its bid account (``HELD``) until then
CHALLENGE_WINDOW_SLOTS = 64
#: after a dispute is dismissed or lapses, a fresh challenge may still be filed this long
#: (a quick bogus challenge near the window's end cannot shut honest challengers out)
CHALLENGE_GRACE_SLOTS = 16
#: what a challenger of a model fault puts at stake (a dismissed challenge loses it)
CHALLENGE_BOND_LAMPORTS = 10_000
#: jurors drawn per model dispute and rulings of one side that decide (as the draw)
JURORS_PER_DISPUTE = VALIDATORS_PER_QUERY
RULING_QUORUM = VERDICT_QUORUM
#: the largest encoded PolOpening a dispute account holds (top_k 64, a 4096-leaf path: 1132)
OPENING_MAX_BYTES = 1152
JURY_DOMAIN = b"ambient/pool-jury/v1\x00"
DISPUTE_SEED = b"dispute"
TAG_CHALLENGE = 9
TAG_RULING = 10
TAG_CLOSE = 11

#: dispute states
OPEN, UPHELD, DISMISSED, LAPSED = 1, 2, 3, 4
#: fault classes: decided by the program alone / by a jury that re-runs the model
SELF_CONTRADICTION, MODEL_FAULT = 1, 2
#: rulings in the dispute account
NO_RULING, FRAUD, NO_FRAUD = 0, 1, 2

#: kind u8, state u8, class u8, juror_count u8, position u32, challenge_slot u64, beacon_slot u64
#: (0: jury not drawn), judge_end_slot u64, bond u64, closed_slot u64, challenger[32], beacon[32],
#: jurors 3 x [32], rulings 3 x u8, pad 1, opening_len u16, pad 2, opening (encoded PolOpening)
_DISPUTE = struct.Struct("<BBBBIQQQQQ32s32s" + "32s" * JURORS_PER_DISPUTE + "B" * JURORS_PER_DISPUTE
                         + f"xH2x{OPENING_MAX_BYTES}s")
DISPUTE_ACCOUNT_BYTES = _DISPUTE.size


@dataclass(frozen=True)
class DisputeAccount:
    state: int  # OPEN, UPHELD, DISMISSED, LAPSED
    fault_class: int  # SELF_CONTRADICTION, MODEL_FAULT
    position: int  # the disputed output position
    challenge_slot: int
    challenger: bytes
    bond_lamports: int  # the challenge bond, held in this account while OPEN
    opening: bytes  # the evidence: the encoded PolOpening
    beacon_slot: int = 0  # 0 until the jury is drawn
    judge_end_slot: int = 0
    beacon: bytes = bytes(32)
    jurors: tuple[bytes, ...] = ()
    rulings: tuple[int, ...] = ()
    closed_slot: int = 0  # the slot the dispute left OPEN (0 while open)

    def pack(self) -> bytes:
        n = len(self.jurors)
        jur = list(self.jurors) + [bytes(32)] * (JURORS_PER_DISPUTE - n)
        rul = list(self.rulings) + [NO_RULING] * (JURORS_PER_DISPUTE - n)
        return _DISPUTE.pack(Kind.DISPUTE, self.state, self.fault_class, n, self.position, self.challenge_slot,
                             self.beacon_slot, self.judge_end_slot, self.bond_lamports, self.closed_slot,
                             self.challenger, self.beacon, *jur, *rul, len(self.opening),
                             self.opening.ljust(OPENING_MAX_BYTES, b"\0"))

    @classmethod
    def unpack(cls, data: bytes) -> DisputeAccount:
        if len(data) != DISPUTE_ACCOUNT_BYTES or data[0] != Kind.DISPUTE:
            raise ValueError("not a dispute account")
        f = _DISPUTE.unpack(data)
        (_, state, klass, n, pos, cslot, bslot, jend, bond, closed, challenger, beacon) = f[:12]
        j = JURORS_PER_DISPUTE
        jurors, rulings = f[12:12 + j], f[12 + j:12 + 2 * j]
        olen, opening = f[12 + 2 * j], f[13 + 2 * j]
        if n > j or olen > OPENING_MAX_BYTES:
            raise ValueError("dispute account out of range")
        return cls(state, klass, pos, cslot, challenger, bond, opening[:olen], bslot, jend, beacon,
                   tuple(jurors[:n]), tuple(rulings[:n]), closed)

    def count(self, ruling: int) -> int:
        return sum(1 for r in self.rulings if r == ruling)

    @property
    def drawn(self) -> bool:
        return self.beacon_slot > 0


def dispute_address(query: bytes) -> bytes:
    """The dispute account of a query: PDA of ``["dispute", query]``."""
    return _pda([DISPUTE_SEED, bytes(query)])


def load_dispute(view: AccountsView, key: bytes) -> DisputeAccount | None:
    data = view.auction_data(key)
    return None if data is None else DisputeAccount.unpack(data)


def challenge_data(evidence: PolOpening) -> bytes:
    """``u32 tag 9 || evidence`` (the encoded opening the challenger says fails)."""
    from .codec import encode

    return struct.pack("<I", TAG_CHALLENGE) + encode(evidence)


def ruling_data(fraud: bool) -> bytes:
    """``u32 tag 10 || u8 fraud``."""
    return struct.pack("<IB", TAG_RULING, 1 if fraud else 0)


def close_data() -> bytes:
    return struct.pack("<I", TAG_CLOSE)


def self_contradiction(cmt: PolCommitment, fp: LogitFingerprint) -> str | None:
    """Why the committed leaf ``fp`` contradicts the commitment without any model (integer
    checks only), or None. Greedy proofs only for the token rule: a sampled proof's rule reads
    ``exp`` (spec/pol.md), which two implementations may round differently in the last ulp,
    so it is left to the jury."""
    k = len(fp.ids)
    if k != cmt.top_k:
        return f"{k} candidates, the commitment says {cmt.top_k}"
    if len(set(fp.ids)) != k or max(fp.ids) >= cmt.vocab:
        return "repeated or out-of-vocabulary candidate id"
    if list(zip(fp.lps, fp.ids, strict=True)) != sorted(zip(fp.lps, fp.ids, strict=True)):
        return "candidates not in canonical order"
    if fp.tok not in fp.ids:  # greedy or sampled, the token is one of the committed candidates
        return f"token {fp.tok} is not among the committed candidates"
    if cmt.temp_milli == 0:
        rule = check_token_rule(cmt, fp)
        if not rule.ok:
            return f"greedy token rule: {rule.detail}"
    return None


def accepters(pool: PoolAccount) -> list[bytes]:
    """The validators whose accept counted for a verified result (the accused of a fraud proof)."""
    return [v for v, x in zip(pool.validators, pool.verdicts, strict=True) if x == ACCEPT]


def release_slot(pool: PoolAccount, dispute: DisputeAccount | None) -> int:
    """The first slot at which the held bond may be released (and after which no challenge
    is taken): the window's end, or a closed dispute's grace end if later."""
    end = pool.settled_slot + CHALLENGE_WINDOW_SLOTS
    if dispute is not None and dispute.state in (DISMISSED, LAPSED):
        end = max(end, dispute.closed_slot + CHALLENGE_GRACE_SLOTS)
    return end


def jury_seed(commitment_hash: bytes, query: bytes, position: int, beacon: bytes) -> bytes:
    """``sha256(JURY_DOMAIN || commitment hash || query id || u32_le position || beacon)``."""
    return crypto.sha256(JURY_DOMAIN, bytes(commitment_hash), bytes(query), struct.pack("<I", position),
                         bytes(beacon))


def _settled_pool(view: PoolView, q: QueryAccount, pkey: bytes) -> PoolAccount:
    pool = load_pool(view, pkey)
    if pool is None or pool.settled_slot == 0:  # an invariant for a FINALIZED_VERIFIED query
        raise AuctionError("auction-wrong-status", "the query was not verified by the Logit Pool")
    return pool


def _verified_accounts(view: PoolView, qacct: IxAccount, pacct: IxAccount, bacct: IxAccount, dacct: IxAccount,
                       requester: IxAccount, diff: IxAccount) -> tuple[QueryAccount, PoolAccount]:
    """The accounts ``challenge`` and ``close`` share, checked in the order the spec lists:
    the pool, dispute and difficulty addresses, a ``FINALIZED_VERIFIED`` query, its winning
    bid and requester, and its settled pool account."""
    _expect(pacct, pool_address(qacct.key), "pool")
    _expect(dacct, dispute_address(qacct.key), "dispute")
    _expect(diff, difficulty_address(), "difficulty")
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.FINALIZED_VERIFIED)
    _expect(bacct, bid_address(qacct.key, q.winner), "winning bid")
    _expect(requester, q.requester, "requester")
    return q, _settled_pool(view, q, pacct.key)


def _held_bid(view: PoolView, bacct: IxAccount) -> BidAccount:
    data = view.auction_data(bacct.key)
    if data is None:
        raise AuctionError("auction-no-bid", "the winning bid account is empty")
    bid = BidAccount.unpack(data)
    if bid.status != BidStatus.HELD:  # an invariant while the query is FINALIZED_VERIFIED
        raise AuctionError("auction-wrong-status", f"the winning bid is {bid.status.name}, not HELD")
    return bid


def _uphold(view: PoolView, slot: int, q: QueryAccount, qkey: bytes, pool: PoolAccount, bkey: bytes, bid: BidAccount,
            challenger: bytes) -> None:
    """Fraud proven: the held bond is slashed (``SLASH_TO_REQUESTER_PERCENT`` to the requester,
    the rest to the challenger), the query becomes ``FINALIZED_REJECTED``, the miner and every
    validator that accepted lose their epoch's work credit (``slash_work``)."""
    to_requester = bid.bond_lamports * SLASH_TO_REQUESTER_PERCENT // 100
    _move(view, bkey, q.requester, to_requester)
    _move(view, bkey, challenger, bid.bond_lamports - to_requester)
    view.set_auction_data(bkey, replace(bid, status=BidStatus.SLASHED).pack())
    view.set_auction_data(qkey, replace(q, status=QueryStatus.FINALIZED_REJECTED).pack())
    observe(view, results=1, rejected=1)  # a fraud proven counts as a rejected result of this epoch
    view.slash_work(q.winner, "fraud-proven")
    for v in accepters(pool):
        view.slash_work(v, "accepted-fraud")


def challenge(view: PoolView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    """A fraud proof against a ``FINALIZED_VERIFIED`` result (tag 9)."""
    _need(accs, 7, "challenge")
    challenger, qacct, pacct, bacct, dacct, requester, diff = accs
    _signer(challenger, "challenger")
    _writable(*accs)
    q, pool = _verified_accounts(view, qacct, pacct, bacct, dacct, requester, diff)
    old = load_dispute(view, dacct.key)
    if old is not None and old.state == OPEN:
        raise AuctionError("auction-dispute-open", "a dispute about this result is still open")
    if slot >= release_slot(pool, old):
        raise AuctionError("auction-challenge-closed", f"challenges closed at slot {release_slot(pool, old)}")
    if challenger.key == q.winner or challenger.key in accepters(pool):
        raise AuctionError("auction-bad-challenger", "the miner and the validators that accepted cannot challenge")
    evidence = data[4:]
    if len(evidence) > OPENING_MAX_BYTES:
        raise AuctionError("auction-bad-evidence", f"evidence is over {OPENING_MAX_BYTES} bytes")
    try:
        opening = decode(evidence, expected=PolOpening)
    except DecodeError as exc:
        raise AuctionError("auction-bad-evidence", f"evidence is not a PolOpening: {exc}") from None
    cmt = q.pol_commitment()
    why = evidence_error(cmt, opening, range(cmt.num_tokens))
    if why is not None:
        raise AuctionError("auction-bad-evidence", why)
    bid = _held_bid(view, bacct)
    contradiction = self_contradiction(cmt, opening.fp)
    if contradiction is not None:  # decided here: the miner's own signed leaf convicts it
        d = DisputeAccount(UPHELD, SELF_CONTRADICTION, opening.fp.pos, slot, challenger.key, 0, bytes(evidence),
                           closed_slot=slot)
        view.set_auction_data(dacct.key, d.pack())
        _uphold(view, slot, q, qacct.key, pool, bacct.key, bid, challenger.key)
        return
    if view.balance(challenger.key) < CHALLENGE_BOND_LAMPORTS:
        raise AuctionError("auction-insufficient-funds", f"a model-fault challenge puts up "
                           f"{CHALLENGE_BOND_LAMPORTS} lamports")
    _move(view, challenger.key, dacct.key, CHALLENGE_BOND_LAMPORTS)
    view.set_auction_data(dacct.key, DisputeAccount(OPEN, MODEL_FAULT, opening.fp.pos, slot, challenger.key,
                                                    CHALLENGE_BOND_LAMPORTS, bytes(evidence)).pack())


def _drawn_dispute(view: PoolView, q: QueryAccount, qkey: bytes, pool: PoolAccount, d: DisputeAccount,
                   slot: int | None = None) -> DisputeAccount:
    """``d`` with its jury: LStake-weighted from the validator role at the jury beacon (the
    first ancestor at or after challenge_slot + DRAW_DELAY_SLOTS), minus the miner, the
    validators that accepted and the challenger."""
    if d.drawn:
        return d
    after = d.challenge_slot + DRAW_DELAY_SLOTS
    got = _beacon(view, after, slot)
    if got is None:  # lost: a jury of nobody, the dispute can only lapse
        return replace(d, beacon_slot=after, judge_end_slot=after + VERIFY_WINDOW_SLOTS, beacon=bytes(32),
                       jurors=(), rulings=())
    beacon_slot, beacon = got
    excluded = {q.winner, d.challenger, *accepters(pool)}
    weights = {k: v for k, v in view.validator_weights(max(0, beacon_slot - VALIDATOR_ACTIVE_SLOTS)).items()
               if k not in excluded and v > 0}
    jurors = tuple(stake_weighted_sample(weights, jury_seed(q.pol_commitment().hash(), qkey, d.position, beacon),
                                         JURORS_PER_DISPUTE))
    return replace(d, beacon_slot=beacon_slot, judge_end_slot=beacon_slot + VERIFY_WINDOW_SLOTS, beacon=beacon,
                   jurors=jurors, rulings=tuple(NO_RULING for _ in jurors))


def jury_of(view: PoolView, q: QueryAccount, qkey: bytes) -> DisputeAccount | None:
    """The dispute as the chain holds it, with the jury a ruling here would draw (None when
    there is no dispute; an undrawn jury while its beacon is not an ancestor)."""
    d = load_dispute(view, dispute_address(qkey))
    pool = load_pool(view, pool_address(qkey))
    if d is None or pool is None or d.state != OPEN:
        return d
    try:
        return _drawn_dispute(view, q, qkey, pool, d)
    except AuctionError:
        return d


def ruling(view: PoolView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    """A drawn juror's ruling on an open model-fault dispute (tag 10)."""
    fraud = data[4]
    if fraud not in (0, 1):
        raise AuctionError("auction-bad-data", "fraud is 0 or 1")
    _need(accs, 4, "ruling")
    juror, qacct, pacct, dacct = accs
    _signer(juror, "juror")
    _writable(*accs)
    _expect(pacct, pool_address(qacct.key), "pool")
    _expect(dacct, dispute_address(qacct.key), "dispute")
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.FINALIZED_VERIFIED)
    pool = _settled_pool(view, q, pacct.key)
    d = load_dispute(view, dacct.key)
    if d is None or d.state != OPEN:
        raise AuctionError("auction-no-dispute", "no open dispute about this result")
    d = _drawn_dispute(view, q, qacct.key, pool, d, slot)
    if juror.key not in d.jurors:
        raise AuctionError("auction-not-drawn", "the signer is not on this dispute's jury")
    if slot >= d.judge_end_slot:
        raise AuctionError("auction-verify-closed", f"rulings closed at slot {d.judge_end_slot}")
    i = d.jurors.index(juror.key)
    if d.rulings[i] != NO_RULING:
        raise AuctionError("auction-verdict-exists", "this juror already ruled")
    rulings = list(d.rulings)
    rulings[i] = FRAUD if fraud else NO_FRAUD
    view.set_auction_data(dacct.key, replace(d, rulings=tuple(rulings)).pack())


def close(view: PoolView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    """Resolve an open dispute (quorum, or its window over), or release the held bond once
    the challenge window is over (tag 11, anyone)."""
    _need(accs, 8, "close", exact=False)
    qacct, pacct, bacct, dacct, requester, winner, incin, diff = accs[:8]
    rest = accs[8:]
    _writable(*accs)
    q, pool = _verified_accounts(view, qacct, pacct, bacct, dacct, requester, diff)
    _expect(winner, q.winner, "winner")
    _expect(incin, INCINERATOR_ID, "incinerator")
    bid = _held_bid(view, bacct)
    d = load_dispute(view, dacct.key)
    if d is None or d.state != OPEN:  # release
        if rest:
            raise AuctionError("auction-bad-accounts", "a release lists no challenger or jurors")
        if slot < release_slot(pool, d):
            raise AuctionError("auction-window-open", f"the bond is held until slot {release_slot(pool, d)}")
        _move(view, bacct.key, q.winner, bid.bond_lamports)
        view.set_auction_data(bacct.key, replace(bid, status=BidStatus.REFUNDED).pack())
        return
    d = _drawn_dispute(view, q, qacct.key, pool, d, slot)
    if [a.key for a in rest] != [d.challenger, *d.jurors]:
        raise AuctionError("auction-bad-accounts", "close of a dispute lists its challenger, then its jurors in "
                           "draw order")
    fraud, no_fraud = d.count(FRAUD), d.count(NO_FRAUD)
    if fraud < RULING_QUORUM and no_fraud < RULING_QUORUM and slot < d.judge_end_slot:
        raise AuctionError("auction-verify-open", f"no quorum yet and rulings land until {d.judge_end_slot}")
    for j, r in zip(d.jurors, d.rulings, strict=True):
        if r == NO_RULING:
            view.slash_work(j, "absent")
    if fraud >= RULING_QUORUM:
        _move(view, dacct.key, d.challenger, d.bond_lamports)
        _uphold(view, slot, q, qacct.key, pool, bacct.key, bid, d.challenger)
        state = UPHELD
        counted = [j for j, r in zip(d.jurors, d.rulings, strict=True) if r == FRAUD]
    elif no_fraud >= RULING_QUORUM:  # a false claim: the challenge bond compensates the miner
        _move(view, dacct.key, q.winner, d.bond_lamports)
        view.slash_work(d.challenger, "false-challenge")
        state = DISMISSED
        counted = [j for j, r in zip(d.jurors, d.rulings, strict=True) if r == NO_FRAUD]
    else:  # undecided: nobody is punished, the challenger gets its bond back
        _move(view, dacct.key, d.challenger, d.bond_lamports)
        state = LAPSED
        counted = []
    view.set_auction_data(dacct.key, replace(d, state=state, closed_slot=slot).pack())
    for j in counted:
        view.credit_work(j, positions_validated=1)


HANDLERS = {TAG_VERDICT: verdict, TAG_SETTLE: settle, TAG_CHALLENGE: challenge, TAG_RULING: ruling,
            TAG_CLOSE: close}
