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

from . import crypto
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
from .lstake import stake_weighted_sample
from .merkle import MerkleProof, proof_depth, verify_proof
from .pol import DEFAULT_CHECKED_POSITIONS, PolCommitment, PolOpening, challenge_seed, leaf_bytes, select_positions

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
MAX_DRAWN = VALIDATORS_PER_QUERY * MAX_DRAW_ROUNDS

#: verdict bytes in the pool account
NO_VERDICT, ACCEPT, REJECT = 0, 1, 2


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
                                                 POSITIONS_PER_VALIDATOR)))
        for v in chosen))


def positions_for(q: QueryAccount, beacon: bytes, validator: bytes) -> list[int]:
    return select_positions(challenge_seed(beacon, validator, q.pol_commitment().hash()), q.num_tokens,
                            POSITIONS_PER_VALIDATOR)


# ---------------------------------------------------------------------------------------
# The pool account (kind 4; PDA ["pool", query]; spec/logit_pool.md "The pool account")
# ---------------------------------------------------------------------------------------
#: kind u8, round u8, drawn_count u8, pad 5, beacon_slot u64, verify_end_slot u64, beacon[32],
#: round-0 beacon[32] (positions of round-0 validators), validators 6 x [32], verdicts 6 x u8, pad 2
_POOL = struct.Struct("<BBB5xQQ32s32s" + "32s" * MAX_DRAWN + "B" * MAX_DRAWN + "2x")
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

    def pack(self) -> bytes:
        vals = list(self.validators) + [bytes(32)] * (MAX_DRAWN - len(self.validators))
        verd = list(self.verdicts) + [NO_VERDICT] * (MAX_DRAWN - len(self.verdicts))
        # round 1 starts where round 0 ended: stored implicitly as drawn_count of round 0 in
        # the high nibble of the round byte (round 0: 0)
        round_byte = self.round | ((self.round_starts[1] if len(self.round_starts) > 1 else 0) << 4)
        return _POOL.pack(KIND_POOL, round_byte, len(self.validators), self.beacon_slot, self.verify_end_slot,
                          self.beacon, self.first_beacon, *vals, *verd)

    @classmethod
    def unpack(cls, data: bytes) -> PoolAccount:
        if len(data) != POOL_ACCOUNT_BYTES or data[0] != KIND_POOL:
            raise ValueError("not a pool account")
        f = _POOL.unpack(data)
        _, round_byte, n, beacon_slot, verify_end, beacon, first = f[:7]
        vals = tuple(f[7:7 + n])
        verd = tuple(f[7 + MAX_DRAWN:7 + MAX_DRAWN + n])
        rnd = round_byte & 0x0F
        starts = (0,) if rnd == 0 else (0, round_byte >> 4)
        return cls(rnd, beacon_slot, verify_end, beacon, first, vals, verd, starts)

    def round_of(self, index: int) -> int:
        return 1 if len(self.round_starts) > 1 and index >= self.round_starts[1] else 0

    def beacon_of(self, index: int) -> bytes:
        return self.first_beacon if self.round_of(index) == 0 else self.beacon

    def current(self) -> range:
        return range(self.round_starts[-1], len(self.validators))

    def count(self, verdict: int) -> int:
        return sum(1 for v in self.verdicts if v == verdict)


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
def _draw_round(view: PoolView, q: QueryAccount, qkey: bytes, after_slot: int, exclude: Sequence[bytes]) -> Draw:
    got = view.poh_hash_at_or_after(after_slot)
    if got is None:
        raise AuctionError("auction-draw-not-ready", f"no slot at or after {after_slot} is an ancestor yet")
    beacon_slot, beacon = got
    weights = view.validator_weights(max(0, beacon_slot - VALIDATOR_ACTIVE_SLOTS))
    return draw_validators(q.pol_commitment().hash(), qkey, beacon_slot, beacon, weights, exclude, q.num_tokens)


def _open_pool(view: PoolView, q: QueryAccount, qkey: bytes, pkey: bytes) -> PoolAccount:
    pool = load_pool(view, pkey)
    if pool is not None:
        return pool
    d = _draw_round(view, q, qkey, q.result_slot + DRAW_DELAY_SLOTS, [q.winner])
    return PoolAccount(0, d.beacon_slot, d.beacon_slot + VERIFY_WINDOW_SLOTS, d.beacon, d.beacon,
                       tuple(v.validator for v in d.validators), tuple(NO_VERDICT for _ in d.validators))


def verdict(view: PoolView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    if len(data) < _VERDICT_HEAD.size:
        raise AuctionError("auction-bad-data", "verdict data is at least 5 bytes")
    _, accept = _VERDICT_HEAD.unpack_from(data)
    evidence_bytes = data[_VERDICT_HEAD.size:]
    if accept not in (0, 1) or (accept == 1) == bool(evidence_bytes):
        raise AuctionError("auction-bad-data", "accept is 0 (with evidence) or 1 (without)")
    _need(accs, 3, "verdict")
    validator, qacct, pacct = accs
    _signer(validator, "validator")
    _writable(validator, qacct, pacct)
    _expect(pacct, pool_address(qacct.key), "pool")
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.RESULT_POSTED)
    pool = _open_pool(view, q, qacct.key, pacct.key)
    if validator.key not in pool.validators:
        raise AuctionError("auction-not-drawn", "the signer is not drawn for this query")
    i = pool.validators.index(validator.key)
    if i not in pool.current():
        raise AuctionError("auction-verify-closed", "this validator's round is over")
    if slot >= pool.verify_end_slot:
        raise AuctionError("auction-verify-closed", f"verdicts closed at slot {pool.verify_end_slot}")
    if pool.verdicts[i] != NO_VERDICT:
        raise AuctionError("auction-verdict-exists", "this validator already posted its verdict")
    if not accept:
        try:
            opening = decode(evidence_bytes, expected=PolOpening)
        except DecodeError as exc:
            raise AuctionError("auction-bad-evidence", f"evidence is not a PolOpening: {exc}") from None
        why = evidence_error(q.pol_commitment(), opening, positions_for(q, pool.beacon_of(i), validator.key))
        if why is not None:
            raise AuctionError("auction-bad-evidence", why)
    verdicts = list(pool.verdicts)
    verdicts[i] = ACCEPT if accept else REJECT
    view.set_auction_data(pacct.key, replace(pool, verdicts=tuple(verdicts)).pack())


def settle(view: PoolView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    _need(accs, 6, "settle", exact=False)
    qacct, pacct, requester, winner, bacct, incin = accs[:6]
    listed = accs[6:]
    _writable(*accs)
    _expect(pacct, pool_address(qacct.key), "pool")
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.RESULT_POSTED)
    _expect(requester, q.requester, "requester")
    _expect(winner, q.winner, "winner")
    _expect(bacct, bid_address(qacct.key, q.winner), "winning bid")
    _expect(incin, INCINERATOR_ID, "incinerator")
    pool = _open_pool(view, q, qacct.key, pacct.key)
    if [a.key for a in listed] != list(pool.validators):
        raise AuctionError("auction-bad-accounts", f"settle lists the {len(pool.validators)} drawn validators "
                           "in draw order")
    accepts, rejects = pool.count(ACCEPT), pool.count(REJECT)
    decided = accepts >= VERDICT_QUORUM or rejects >= VERDICT_QUORUM
    if not decided and slot < pool.verify_end_slot:
        raise AuctionError("auction-verify-open", f"no quorum yet and verdicts land until {pool.verify_end_slot}")
    if not decided:
        absent = [pool.validators[i] for i in pool.current() if pool.verdicts[i] == NO_VERDICT]
        d = None
        if pool.round + 1 < MAX_DRAW_ROUNDS:
            d = _draw_round(view, q, qacct.key, pool.verify_end_slot, [q.winner, *pool.validators])
        for v in absent:  # absent validators of the round that just closed lose credit
            view.slash_work(v, "absent")
        if d is not None and d.validators:
            new = replace(pool, round=pool.round + 1, beacon_slot=d.beacon_slot,
                          verify_end_slot=d.beacon_slot + VERIFY_WINDOW_SLOTS, beacon=d.beacon,
                          validators=pool.validators + tuple(v.validator for v in d.validators),
                          verdicts=pool.verdicts + tuple(NO_VERDICT for _ in d.validators),
                          round_starts=(0, len(pool.validators)))
            view.set_auction_data(pacct.key, new.pack())
            return
    bid_data = view.auction_data(bacct.key)
    if bid_data is None:  # an invariant: a RESULT_POSTED query's winning bid exists
        raise AuctionError("auction-no-bid", "the winning bid account is empty")
    bid = BidAccount.unpack(bid_data)
    if accepts == rejects == 0:  # nobody checked it: the requester is made whole, nobody is slashed
        _move(view, qacct.key, q.requester, q.escrow_lamports)
        _move(view, bacct.key, q.winner, bid.bond_lamports)
        view.set_auction_data(bacct.key, replace(bid, status=BidStatus.REFUNDED).pack())
        view.set_auction_data(qacct.key, replace(q, status=QueryStatus.FINALIZED_REJECTED, escrow_lamports=0).pack())
        return
    verified = rejects < VERDICT_QUORUM and accepts >= rejects
    side = ACCEPT if verified else REJECT
    counted = [listed[i].key for i, v in enumerate(pool.verdicts) if v == side]
    fee_share = q.escrow_lamports - q.max_payment  # QUERY_FEE_LAMPORTS
    escrow_left = q.escrow_lamports
    if counted:
        each = fee_share // len(counted)
        for v in counted:
            _move(view, qacct.key, v, each)
            escrow_left -= each
    if verified:
        pay = q.clearing_price * q.num_tokens
        _move(view, qacct.key, q.winner, pay)
        _move(view, bacct.key, q.winner, bid.bond_lamports)
        _move(view, qacct.key, q.requester, escrow_left - pay)
        view.set_auction_data(bacct.key, replace(bid, status=BidStatus.REFUNDED).pack())
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
    if verified:
        view.credit_work(q.winner, tokens_served=q.num_tokens)
    if not verified:
        view.slash_work(q.winner, "result-rejected")
    for v in counted:
        view.credit_work(v, positions_validated=len(positions_for(q, pool.beacon_of(pool.validators.index(v)), v)))


def draw_of(view: PoolView, q: QueryAccount, qkey: bytes) -> PoolAccount | None:
    """The draw as the chain holds it: the pool account when one exists, else the round-0
    draw a verdict at this point would create (None while the beacon slot is not an
    ancestor). What ``pol draw`` prints and the validator service acts on."""
    try:
        return _open_pool(view, q, qkey, pool_address(qkey))
    except AuctionError:
        return None
