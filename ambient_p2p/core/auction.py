"""The query auction: one query's reverse, sealed-bid, second-price auction, run by the
native auction program in the bank (normative text: spec/auction.md).

In plain words:

* A *requester* escrows the most it will pay (``max_price_per_token * max_output_tokens``)
  plus ``QUERY_FEE_LAMPORTS`` (kept for the Logit Pool's verifiers) in a *query account*
  (a program-derived address of requester and nonce), naming the model, the prompt's hash
  and size, the sampling parameters and a deadline in slots.
* During the commit window registered *miners* post ``sha256(BID_DOMAIN || query ||
  bidder || salt || price u64 LE)`` and lock a bond in a *bid account*. During the reveal
  window they reveal price and salt. Nothing about a price is on chain before the reveal
  window, and the 32-byte salt (never the bidder's key: a reveal with a guessable salt is
  refused) makes the commitment unguessable.
* After the reveal window anyone closes the auction: the lowest revealed price wins (ties:
  the earlier commitment) at the second-lowest revealed price (the requester's maximum with
  one revealed bid); losing bonds go back; unrevealed bonds are forfeited. No revealed bid
  (or a close only after the deadline): the requester gets the escrow back.
* The winner alone posts the result (output hash, token count and the proof-of-logits
  commitment, which the program rebuilds from the query's own model, prompt hash and
  sampling parameters, so it cannot name another query) before the deadline. The escrow
  and the winner's bond then wait for the Logit Pool (``RESULT_POSTED``).
* A winner that misses the deadline: anyone calls ``expire``; the requester gets the whole
  escrow back and the winner's bond is slashed.
* Forfeited and slashed bonds go to ``INCINERATOR_ID`` (Solana's incinerator address, whose
  key nobody holds): out of circulation, yet visible. Nobody gains from a bid failing, so no
  leader, requester or rival is paid to censor a reveal or a result.

Query statuses and the instructions that move them (``*`` = any signer may send it; every
slot condition is on the slot of the bank executing the instruction)::

    instruction    signer        from           slot condition                  to
    -------------  ------------  -------------  ------------------------------  -------------
    register_miner miner         (no miner acct) -                              (miner acct)
    request        requester     (no query)     -                               OPEN
    commit_bid     reg. miner    OPEN           slot < commit_end               OPEN
    reveal_bid     the bidder    OPEN           commit_end <= slot < reveal_end OPEN
    close_auction  *             OPEN           reveal_end <= slot < deadline,  AWARDED
                                                >= 1 revealed bid
    close_auction  *             OPEN           reveal_end <= slot, no revealed REFUNDED
                                                bid or deadline <= slot
    post_result    the winner    AWARDED        slot < deadline                 RESULT_POSTED
    expire         *             AWARDED        deadline <= slot                EXPIRED
    verdict        drawn valid.  RESULT_POSTED  beacon an ancestor, slot < verify_end  RESULT_POSTED
    settle         *             RESULT_POSTED  quorum, or window over (spec/   FINALIZED_VERIFIED /
                                                logit_pool.md; else extends)    FINALIZED_REJECTED
    challenge      anyone but    FINALIZED_     slot < settled + challenge      FINALIZED_VERIFIED /
                   the accused   VERIFIED       window (spec/logit_pool.md      FINALIZED_REJECTED
                                                "Retrospective slashing")
    ruling         drawn juror   FINALIZED_VERIFIED  jury beacon an ancestor    FINALIZED_VERIFIED
    close          *             FINALIZED_VERIFIED  a decided/expired dispute, FINALIZED_VERIFIED /
                                                or the challenge window over    FINALIZED_REJECTED

Money on each move (all integer lamports; every path conserves the total)::

    request        requester -> query account: escrow = max_price*max_tokens + QUERY_FEE
    commit_bid     bidder -> bid account: bond = max(max_payment*BID_BOND_PERCENT/100, MIN)
    close (award)  revealed losers' bonds -> their bidders; unrevealed bonds -> incinerator;
                   escrow and the winner's bond stay (for post_result / the Logit Pool)
    close (refund) escrow -> requester; revealed bonds -> bidders; unrevealed -> incinerator
    post_result    none (escrow and the winner's bond held for the Logit Pool)
    expire         escrow -> requester; winner's bond -> incinerator

Bid statuses: COMMITTED -> REVEALED (reveal_bid) -> WON | REFUNDED (close) ; WON ->
SLASHED (expire); COMMITTED -> FORFEITED (close).

Error codes (``AuctionError.reason``; ``AUCTION_ERRORS`` maps each to its number, the
``Custom(u32)`` an SBF build of this program returns). Checks run in this order: data,
accounts, signer, writability, account existence, status, role, window, values::

    code                          n   when
    auction-bad-data              1   unknown instruction tag or wrong data length
    auction-bad-accounts          2   wrong number of accounts, a wrong address (program-
                                      derived address, requester, incinerator, bid list)
                                      or a written account not writable
    auction-missing-signature     3   the account that must sign did not
    auction-bad-params            4   request values out of range (tokens, temperature,
                                      price, deadline, u64 overflow)
    auction-insufficient-funds    5   the payer cannot cover the escrow or the bond
    auction-miner-exists          6   register_miner twice
    auction-query-exists          7   request on an address already holding a query
    auction-no-query              8   the query account holds no query
    auction-wrong-status          9   the instruction is not allowed in the query's status
    auction-not-miner             10  commit_bid by a key without a miner account
    auction-commit-closed         11  commit_bid at or after commit_end
    auction-bid-exists            12  a second commit_bid by the same bidder
    auction-too-many-bids         13  MAX_BIDS_PER_QUERY bids already committed
    auction-no-bid                14  reveal_bid without a committed bid
    auction-reveal-too-early      15  reveal_bid before commit_end
    auction-reveal-too-late       16  reveal_bid at or after reveal_end
    auction-already-revealed      17  a second reveal_bid
    auction-bid-mismatch          18  price and salt do not hash to the commitment
    auction-weak-salt             19  salt is zero, the bidder's key or the query's address
    auction-price-out-of-range    20  revealed price 0 or above max_price_per_token
    auction-reveal-not-over       21  close_auction before reveal_end
    auction-not-winner            22  post_result signed by anyone but the winner
    auction-deadline-passed       23  post_result at or after the deadline
    auction-bad-result            24  token count 0 or above max_output_tokens, or PoL
                                      fields out of range (tier, top_k, vocab)
    auction-bad-commitment        25  the PoL commitment signature (by the winner, over
                                      the commitment bound to this query) fails
    auction-deadline-not-reached  26  expire before the deadline
    auction-draw-not-ready        27  the draw's beacon slot is not an ancestor yet
    auction-not-drawn             28  verdict by a key the draw did not pick
    auction-verify-closed         29  verdict after its round's window
    auction-verdict-exists        30  a second verdict by the same validator
    auction-bad-evidence          31  a reject's evidence fails the pure checks
    auction-verify-open           32  settle without a quorum inside the window
    auction-challenge-closed      33  a fraud proof after the challenge window
    auction-bad-challenger        34  the winner or an accepting validator challenges
    auction-dispute-open          35  a second challenge while one is open; release during one
    auction-no-dispute            36  a ruling without an open jury dispute
    auction-window-open           37  release of a held bond inside the challenge window
    auction-bad-route             38  post_route: stages that do not tile the layers or
                                      whose commitments do not verify for this query
    auction-route-exists          39  a second post_route for the same query

Pure: no I/O, no clock; the bank passes its slot and a view of its accounts.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol, cast

from . import crypto
from .crypto import decode_address
from .errors import ProtocolError
from .messages import verify_message
from .pol import MAX_OUTPUT_TOKENS, MAX_PROMPT_TOKENS, MAX_TEMPERATURE_MILLI, TIERS, PolCommitment

if TYPE_CHECKING:
    from . import logit_pool, shard

# ---------------------------------------------------------------------------------------
# Constants (spec/auction.md "Constants")
# ---------------------------------------------------------------------------------------
#: the auction program's address (the one Ambient's public auction-api uses)
AUCTION_PROGRAM_ID = decode_address("Auction111111111111111111111111111111111111")
#: Solana's incinerator address: forfeited and slashed bonds go here (nobody holds its key)
INCINERATOR_ID = decode_address("1nc1nerator11111111111111111111111111111111")
#: time after the request slot during which bids may be committed. The windows are times,
#: not slot counts: a bid must cross gossip and land in a leader's block however short the
#: chain's slots are (8 slots of 400 ms lost reveals in the localnet acceptance)
COMMIT_WINDOW_MS = 6_400
#: time after the commit window during which bids may be revealed
REVEAL_WINDOW_MS = 6_400
#: the deadline leaves the winner at least this long after the reveal window
MIN_SERVE_MS = 6_400
#: the longest deadline a request may name (about a day at 400 ms slots)
MAX_DEADLINE_SLOTS = 216_000


def window_slots(window_ms: int, slot_duration_us: int) -> int:
    """Slots a time window spans on a chain of ``slot_duration_us`` slots (the genesis
    ``PohParams.slot_duration_us``): ``ceil(window_ms * 1000 / slot_duration_us)``, in
    integers, so every node converts alike (spec/auction.md "Windows")."""
    if slot_duration_us < 1:
        raise ValueError("slot_duration_us must be >= 1")
    return -(-window_ms * 1000 // slot_duration_us)


@dataclass(frozen=True)
class Windows:
    """The auction windows in slots of one chain."""

    commit_slots: int
    reveal_slots: int
    min_serve_slots: int

    @classmethod
    def for_slot(cls, slot_duration_us: int) -> Windows:
        return cls(window_slots(COMMIT_WINDOW_MS, slot_duration_us),
                   window_slots(REVEAL_WINDOW_MS, slot_duration_us),
                   window_slots(MIN_SERVE_MS, slot_duration_us))

    @property
    def min_deadline_slots(self) -> int:
        """The shortest ``deadline_slots`` a request may name."""
        return self.commit_slots + self.reveal_slots + self.min_serve_slots


#: bids per query (bounded so that close_auction, which lists every bid, fits a packet)
MAX_BIDS_PER_QUERY = 8
#: a bid's bond as a percentage of the query's maximum payment
BID_BOND_PERCENT = 100
#: floor for the bond, so that a tiny query still costs a dishonest bidder something
MIN_BID_BOND_LAMPORTS = 10_000
#: escrowed with every query for the Logit Pool's verifiers (refunded with the escrow)
QUERY_FEE_LAMPORTS = 10_000
#: domain of a bid commitment
BID_DOMAIN = b"ambient/auction-bid/v1\x00"
#: seeds of the program-derived addresses
QUERY_SEED = b"query"
BID_SEED = b"bid"
MINER_SEED = b"miner"
U64_MAX = (1 << 64) - 1
NO_WINNER = 0xFF


class Instr(IntEnum):
    """Instruction tags (first 4 bytes of the data, u32 LE, as Solana's native programs)."""

    REGISTER_MINER = 0
    REQUEST = 1
    COMMIT_BID = 2
    REVEAL_BID = 3
    CLOSE_AUCTION = 4
    POST_RESULT = 5
    EXPIRE = 6
    #: the Logit Pool's (core/logit_pool.py, spec/logit_pool.md)
    VERDICT = 7
    SETTLE = 8
    #: retrospective slashing (core/logit_pool.py, spec/logit_pool.md "Retrospective slashing")
    CHALLENGE = 9
    RULING = 10
    CLOSE = 11
    #: the route of a sharded answer, for settle's payment split (core/shard.py, spec/shard.md "Payment")
    POST_ROUTE = 12


class Kind(IntEnum):
    """Byte 0 of every auction account."""

    QUERY = 1
    BID = 2
    MINER = 3
    #: the Logit Pool's draw and verdicts of one query (core/logit_pool.py)
    POOL = 5
    #: a fraud proof against a verified result and its jury (core/logit_pool.py)
    DISPUTE = 6
    #: the Logit Pool's dynamic difficulty: the epoch's knobs and observation (core/logit_pool.py)
    DIFFICULTY = 7
    #: the stages of a sharded answer (core/shard.py ``RouteAccount``, spec/shard.md "Payment")
    ROUTE = 8


class QueryStatus(IntEnum):
    OPEN = 1
    AWARDED = 2
    RESULT_POSTED = 3
    EXPIRED = 4
    REFUNDED = 5
    #: set by the Logit Pool's settle (core/logit_pool.py)
    FINALIZED_VERIFIED = 6
    FINALIZED_REJECTED = 7


class BidStatus(IntEnum):
    COMMITTED = 1
    REVEALED = 2
    WON = 3
    REFUNDED = 4
    FORFEITED = 5
    SLASHED = 6
    #: the result was verified and paid; the bond stays in the bid account until the
    #: challenge window closes (core/logit_pool.py "Retrospective slashing")
    HELD = 7


#: every (instruction, from status, to status) the program may perform; the state-machine
#: test checks every observed move against this set (None = the account did not exist)
QUERY_TRANSITIONS: frozenset[tuple[Instr, QueryStatus | None, QueryStatus]] = frozenset({
    (Instr.REQUEST, None, QueryStatus.OPEN),
    (Instr.COMMIT_BID, QueryStatus.OPEN, QueryStatus.OPEN),
    (Instr.REVEAL_BID, QueryStatus.OPEN, QueryStatus.OPEN),
    (Instr.CLOSE_AUCTION, QueryStatus.OPEN, QueryStatus.AWARDED),
    (Instr.CLOSE_AUCTION, QueryStatus.OPEN, QueryStatus.REFUNDED),
    (Instr.POST_RESULT, QueryStatus.AWARDED, QueryStatus.RESULT_POSTED),
    (Instr.EXPIRE, QueryStatus.AWARDED, QueryStatus.EXPIRED),
    (Instr.VERDICT, QueryStatus.RESULT_POSTED, QueryStatus.RESULT_POSTED),
    (Instr.SETTLE, QueryStatus.RESULT_POSTED, QueryStatus.RESULT_POSTED),  # the draw extended
    (Instr.SETTLE, QueryStatus.RESULT_POSTED, QueryStatus.FINALIZED_VERIFIED),
    (Instr.SETTLE, QueryStatus.RESULT_POSTED, QueryStatus.FINALIZED_REJECTED),
    (Instr.CHALLENGE, QueryStatus.FINALIZED_VERIFIED, QueryStatus.FINALIZED_VERIFIED),  # a jury is called
    (Instr.CHALLENGE, QueryStatus.FINALIZED_VERIFIED, QueryStatus.FINALIZED_REJECTED),  # self-contradiction
    (Instr.RULING, QueryStatus.FINALIZED_VERIFIED, QueryStatus.FINALIZED_VERIFIED),
    (Instr.CLOSE, QueryStatus.FINALIZED_VERIFIED, QueryStatus.FINALIZED_VERIFIED),  # dismissed/lapsed/released
    (Instr.CLOSE, QueryStatus.FINALIZED_VERIFIED, QueryStatus.FINALIZED_REJECTED),  # fraud upheld
    (Instr.POST_ROUTE, QueryStatus.RESULT_POSTED, QueryStatus.RESULT_POSTED),  # a sharded answer's route
})
BID_TRANSITIONS: frozenset[tuple[Instr, BidStatus | None, BidStatus]] = frozenset({
    (Instr.COMMIT_BID, None, BidStatus.COMMITTED),
    (Instr.REVEAL_BID, BidStatus.COMMITTED, BidStatus.REVEALED),
    (Instr.CLOSE_AUCTION, BidStatus.REVEALED, BidStatus.WON),
    (Instr.CLOSE_AUCTION, BidStatus.REVEALED, BidStatus.REFUNDED),
    (Instr.CLOSE_AUCTION, BidStatus.COMMITTED, BidStatus.FORFEITED),
    (Instr.EXPIRE, BidStatus.WON, BidStatus.SLASHED),
    (Instr.SETTLE, BidStatus.WON, BidStatus.REFUNDED),  # nobody checked the answer
    (Instr.SETTLE, BidStatus.WON, BidStatus.HELD),  # verified: the bond waits out the challenge window
    (Instr.SETTLE, BidStatus.WON, BidStatus.SLASHED),
    (Instr.CHALLENGE, BidStatus.HELD, BidStatus.HELD),
    (Instr.CHALLENGE, BidStatus.HELD, BidStatus.SLASHED),
    (Instr.RULING, BidStatus.HELD, BidStatus.HELD),
    (Instr.CLOSE, BidStatus.HELD, BidStatus.HELD),
    (Instr.CLOSE, BidStatus.HELD, BidStatus.SLASHED),
    (Instr.CLOSE, BidStatus.HELD, BidStatus.REFUNDED),
})

#: error code -> its number (an SBF build returns it as ``InstructionError::Custom``)
AUCTION_ERRORS: dict[str, int] = {
    code: n for n, code in enumerate((
        "auction-bad-data", "auction-bad-accounts", "auction-missing-signature", "auction-bad-params",
        "auction-insufficient-funds", "auction-miner-exists", "auction-query-exists", "auction-no-query",
        "auction-wrong-status", "auction-not-miner", "auction-commit-closed", "auction-bid-exists",
        "auction-too-many-bids", "auction-no-bid", "auction-reveal-too-early", "auction-reveal-too-late",
        "auction-already-revealed", "auction-bid-mismatch", "auction-weak-salt", "auction-price-out-of-range",
        "auction-reveal-not-over", "auction-not-winner", "auction-deadline-passed", "auction-bad-result",
        "auction-bad-commitment", "auction-deadline-not-reached",
        # the Logit Pool's (core/logit_pool.py)
        "auction-draw-not-ready", "auction-not-drawn", "auction-verify-closed", "auction-verdict-exists",
        "auction-bad-evidence", "auction-verify-open",
        # retrospective slashing (core/logit_pool.py)
        "auction-challenge-closed", "auction-bad-challenger", "auction-dispute-open", "auction-no-dispute",
        "auction-window-open",
        # sharded answers (core/shard.py post_route)
        "auction-bad-route", "auction-route-exists",
    ), start=1)
}


class AuctionError(ProtocolError, ValueError):
    """An auction instruction failed; ``reason`` is one of :data:`AUCTION_ERRORS`. The bank
    rolls the transaction back (the fee stays)."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in AUCTION_ERRORS:
            raise AssertionError(f"unlisted auction error code {reason}")
        super().__init__(reason, detail)


# ---------------------------------------------------------------------------------------
# Account layouts (fixed, little-endian; spec/auction.md "Account layouts")
# ---------------------------------------------------------------------------------------
#: kind u8, status u8, bid_count u8, revealed_count u8, winner_index u8, tier u8, top_k u8,
#: reserved u8, prompt_tokens u32, max_output_tokens u32, temp_milli u32, vocab u32,
#: num_tokens u32, reserved u32, nonce u64, max_price_per_token u64, request_slot u64,
#: commit_end_slot u64, reveal_end_slot u64, deadline_slot u64, escrow_lamports u64,
#: bond_lamports u64, lowest_price u64, second_price u64, clearing_price u64, result_slot
#: u64, requester, model_id, prompt_hash, sample_seed, winner, output_hash, pol_root (32
#: bytes each), pol_signature (64 bytes)
_QUERY = struct.Struct("<8B6I12Q32s32s32s32s32s32s32s64s")
_BID = struct.Struct("<4B4x5Q32s32s32s")
_MINER = struct.Struct("<B7xQ32s")
QUERY_ACCOUNT_BYTES = _QUERY.size
BID_ACCOUNT_BYTES = _BID.size
MINER_ACCOUNT_BYTES = _MINER.size


@dataclass(frozen=True)
class QueryAccount:
    status: QueryStatus
    requester: bytes
    nonce: int
    model_id: bytes
    prompt_hash: bytes
    prompt_tokens: int
    max_output_tokens: int
    max_price_per_token: int
    temp_milli: int
    sample_seed: bytes
    request_slot: int
    commit_end_slot: int
    reveal_end_slot: int
    deadline_slot: int
    escrow_lamports: int
    bond_lamports: int
    bid_count: int = 0
    revealed_count: int = 0
    winner_index: int = NO_WINNER
    lowest_price: int = 0
    second_price: int = 0
    clearing_price: int = 0
    winner: bytes = bytes(32)
    result_slot: int = 0
    output_hash: bytes = bytes(32)
    num_tokens: int = 0
    tier: int = 0
    top_k: int = 0
    vocab: int = 0
    pol_root: bytes = bytes(32)
    pol_signature: bytes = crypto.ZERO_SIGNATURE

    def pack(self) -> bytes:
        return _QUERY.pack(
            Kind.QUERY, self.status, self.bid_count, self.revealed_count, self.winner_index, self.tier, self.top_k, 0,
            self.prompt_tokens, self.max_output_tokens, self.temp_milli, self.vocab, self.num_tokens, 0,
            self.nonce, self.max_price_per_token, self.request_slot, self.commit_end_slot, self.reveal_end_slot,
            self.deadline_slot, self.escrow_lamports, self.bond_lamports, self.lowest_price, self.second_price,
            self.clearing_price, self.result_slot, self.requester, self.model_id, self.prompt_hash,
            self.sample_seed, self.winner, self.output_hash, self.pol_root, self.pol_signature,
        )

    @classmethod
    def unpack(cls, data: bytes) -> QueryAccount:
        if len(data) != QUERY_ACCOUNT_BYTES or data[0] != Kind.QUERY:
            raise ValueError("not a query account")
        (_, status, bid_count, revealed, winner_index, tier, top_k, _r, prompt_tokens, max_out, temp, vocab,
         num_tokens, _r2, nonce, max_price, req_slot, commit_end, reveal_end, deadline, escrow, bond, lowest,
         second, clearing, result_slot, requester, model_id, prompt_hash, seed, winner, output_hash, root,
         sig) = _QUERY.unpack(data)
        return cls(QueryStatus(status), requester, nonce, model_id, prompt_hash, prompt_tokens, max_out, max_price,
                   temp, seed, req_slot, commit_end, reveal_end, deadline, escrow, bond, bid_count, revealed,
                   winner_index, lowest, second, clearing, winner, result_slot, output_hash, num_tokens, tier,
                   top_k, vocab, root, sig)

    @property
    def max_payment(self) -> int:
        return self.max_price_per_token * self.max_output_tokens

    def pol_commitment(self) -> PolCommitment:
        """The proof-of-logits commitment the winner signed (status RESULT_POSTED)."""
        return PolCommitment(model_id=self.model_id, tier=self.tier, vocab=self.vocab, top_k=self.top_k,
                             temp_milli=self.temp_milli, sample_seed=self.sample_seed, prompt_hash=self.prompt_hash,
                             output_hash=self.output_hash, num_tokens=self.num_tokens, root=self.pol_root,
                             miner=self.winner, signature=self.pol_signature)


@dataclass(frozen=True)
class BidAccount:
    status: BidStatus
    index: int
    query: bytes
    bidder: bytes
    commitment: bytes
    bond_lamports: int
    commit_slot: int
    price: int = 0
    reveal_slot: int = 0

    def pack(self) -> bytes:
        return _BID.pack(Kind.BID, self.status, self.index, 0, self.price, self.bond_lamports, self.commit_slot,
                         self.reveal_slot, 0, self.query, self.bidder, self.commitment)

    @classmethod
    def unpack(cls, data: bytes) -> BidAccount:
        if len(data) != BID_ACCOUNT_BYTES or data[0] != Kind.BID:
            raise ValueError("not a bid account")
        _, status, index, _r, price, bond, commit_slot, reveal_slot, _r2, query, bidder, cmt = _BID.unpack(data)
        return cls(BidStatus(status), index, query, bidder, cmt, bond, commit_slot, price, reveal_slot)


@dataclass(frozen=True)
class MinerAccount:
    authority: bytes
    registered_slot: int

    def pack(self) -> bytes:
        return _MINER.pack(Kind.MINER, self.registered_slot, self.authority)

    @classmethod
    def unpack(cls, data: bytes) -> MinerAccount:
        if len(data) != MINER_ACCOUNT_BYTES or data[0] != Kind.MINER:
            raise ValueError("not a miner account")
        _, slot, authority = _MINER.unpack(data)
        return cls(authority, slot)


# ---------------------------------------------------------------------------------------
# Addresses and commitments
# ---------------------------------------------------------------------------------------
def _pda(seeds: Sequence[bytes]) -> bytes:
    from solders.pubkey import Pubkey

    addr, _bump = Pubkey.find_program_address(list(seeds), Pubkey(AUCTION_PROGRAM_ID))
    return bytes(addr)


def query_address(requester: bytes, nonce: int) -> bytes:
    """The query account: PDA of ``["query", requester, nonce u64 LE]``; it is the query id."""
    return _pda([QUERY_SEED, bytes(requester), struct.pack("<Q", nonce)])


def bid_address(query: bytes, bidder: bytes) -> bytes:
    """A bid account: PDA of ``["bid", query, bidder]`` (one bid per bidder and query)."""
    return _pda([BID_SEED, bytes(query), bytes(bidder)])


def miner_address(miner: bytes) -> bytes:
    """A miner's registration: PDA of ``["miner", miner]``."""
    return _pda([MINER_SEED, bytes(miner)])


def bid_commitment(query: bytes, bidder: bytes, salt: bytes, price: int) -> bytes:
    """``sha256(BID_DOMAIN || query || bidder || salt || price u64 LE)``."""
    if len(salt) != 32:
        raise ValueError("the salt is 32 bytes")
    return crypto.sha256(BID_DOMAIN, bytes(query), bytes(bidder), bytes(salt), struct.pack("<Q", price))


def bond_for(max_payment: int) -> int:
    return max(max_payment * BID_BOND_PERCENT // 100, MIN_BID_BOND_LAMPORTS)


# ---------------------------------------------------------------------------------------
# Instruction data (fixed layouts; spec/auction.md "Instructions")
# ---------------------------------------------------------------------------------------
_TAG = struct.Struct("<I")
#: nonce u64, model_id, prompt_hash, prompt_tokens u32, max_output_tokens u32,
#: max_price_per_token u64, temp_milli u32, sample_seed, deadline_slots u64
_REQUEST = struct.Struct("<IQ32s32sIIQI32sQ")
_COMMIT = struct.Struct("<I32s")
_REVEAL = struct.Struct("<IQ32s")
#: output_hash, num_tokens u32, tier u8, top_k u8, vocab u32, pol_root, pol_signature
_POST = struct.Struct("<I32sIBBI32s64s")


@dataclass(frozen=True)
class RequestParams:
    nonce: int
    model_id: bytes
    prompt_hash: bytes
    prompt_tokens: int
    max_output_tokens: int
    max_price_per_token: int
    temp_milli: int
    sample_seed: bytes
    deadline_slots: int


@dataclass(frozen=True)
class ResultParams:
    output_hash: bytes
    num_tokens: int
    tier: int
    top_k: int
    vocab: int
    pol_root: bytes
    pol_signature: bytes


def register_miner_data() -> bytes:
    return _TAG.pack(Instr.REGISTER_MINER)


def request_data(p: RequestParams) -> bytes:
    return _REQUEST.pack(Instr.REQUEST, p.nonce, p.model_id, p.prompt_hash, p.prompt_tokens, p.max_output_tokens,
                         p.max_price_per_token, p.temp_milli, p.sample_seed, p.deadline_slots)


def commit_bid_data(commitment: bytes) -> bytes:
    return _COMMIT.pack(Instr.COMMIT_BID, commitment)


def reveal_bid_data(price: int, salt: bytes) -> bytes:
    return _REVEAL.pack(Instr.REVEAL_BID, price, salt)


def close_auction_data() -> bytes:
    return _TAG.pack(Instr.CLOSE_AUCTION)


def post_result_data(r: ResultParams) -> bytes:
    return _POST.pack(Instr.POST_RESULT, r.output_hash, r.num_tokens, r.tier, r.top_k, r.vocab, r.pol_root,
                      r.pol_signature)


def expire_data() -> bytes:
    return _TAG.pack(Instr.EXPIRE)


_FIXED = {Instr.REGISTER_MINER: _TAG, Instr.REQUEST: _REQUEST, Instr.COMMIT_BID: _COMMIT,
          Instr.REVEAL_BID: _REVEAL, Instr.CLOSE_AUCTION: _TAG, Instr.POST_RESULT: _POST, Instr.EXPIRE: _TAG}


def instruction_tag(data: bytes) -> Instr:
    """The instruction a data blob names; raises ``auction-bad-data``."""
    if len(data) < 4:
        raise AuctionError("auction-bad-data", "instruction data shorter than its 4-byte tag")
    (tag,) = _TAG.unpack_from(data)
    try:
        ins = Instr(tag)
    except ValueError:
        raise AuctionError("auction-bad-data", f"unknown instruction tag {tag}") from None
    if ins in (Instr.VERDICT, Instr.CHALLENGE):  # variable: the evidence follows (core/logit_pool.py)
        return ins
    if ins == Instr.POST_ROUTE:  # variable: the stages follow (core/shard.py)
        from .shard import post_route_size

        if len(data) != post_route_size(data):
            raise AuctionError("auction-bad-data", f"post_route data is {post_route_size(data)} bytes, got {len(data)}")
        return ins
    size = {Instr.SETTLE: _TAG.size, Instr.CLOSE: _TAG.size, Instr.RULING: _TAG.size + 1}.get(ins) or _FIXED[ins].size
    if len(data) != size:
        raise AuctionError("auction-bad-data", f"{ins.name.lower()} data is {size} bytes, got {len(data)}")
    return ins


# ---------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------
class AccountsView(Protocol):
    """What the program sees of the bank: lamports and auction-account data."""

    def balance(self, pubkey: bytes) -> int: ...

    def set_balance(self, pubkey: bytes, lamports: int) -> None: ...

    def auction_data(self, pubkey: bytes) -> bytes | None: ...

    def set_auction_data(self, pubkey: bytes, data: bytes) -> None: ...

    @property
    def slot_duration_us(self) -> int:
        """The chain's slot duration (genesis ``PohParams.slot_duration_us``): the windows'
        unit."""
        ...


@dataclass(frozen=True)
class IxAccount:
    """One account of an instruction, as the transaction lists it."""

    key: bytes
    signer: bool
    writable: bool


def _need(accs: Sequence[IxAccount], n: int, name: str, *, exact: bool = True) -> None:
    if len(accs) < n or (exact and len(accs) != n):
        raise AuctionError("auction-bad-accounts", f"{name} takes {n} accounts, got {len(accs)}")


def _signer(a: IxAccount, role: str) -> None:
    if not a.signer:
        raise AuctionError("auction-missing-signature", f"the {role} must sign the transaction")


def _writable(*accs: IxAccount) -> None:
    for a in accs:
        if not a.writable:
            raise AuctionError("auction-bad-accounts", f"account {crypto.encode_address(a.key)} must be writable")


def _expect(a: IxAccount, key: bytes, what: str) -> None:
    if a.key != key:
        raise AuctionError("auction-bad-accounts", f"the {what} account must be {crypto.encode_address(key)}")


def _move(view: AccountsView, src: bytes, dst: bytes, lamports: int) -> None:
    if lamports == 0 or src == dst:
        return
    have = view.balance(src)
    if have < lamports:  # an invariant (escrow and bonds sit in program accounts); checked anyway
        raise AuctionError("auction-insufficient-funds", f"{crypto.encode_address(src)} has {have} < {lamports}")
    view.set_balance(src, have - lamports)
    view.set_balance(dst, view.balance(dst) + lamports)  # total supply < 2**64, so no overflow


def _load_query(view: AccountsView, key: bytes) -> QueryAccount:
    data = view.auction_data(key)
    if data is None or data[0] != Kind.QUERY:
        raise AuctionError("auction-no-query", f"{crypto.encode_address(key)} holds no query")
    return QueryAccount.unpack(data)


def _status(q: QueryAccount, *allowed: QueryStatus) -> None:
    if q.status not in allowed:
        raise AuctionError("auction-wrong-status", f"the query is {q.status.name}, this needs "
                           f"{' or '.join(s.name for s in allowed)}")


def process_instruction(view: AccountsView, slot: int, accounts: Sequence[IxAccount], data: bytes) -> Instr:
    """Run one auction-program instruction in a bank at ``slot``. Raises
    :class:`AuctionError`; the caller rolls back whatever was written (the bank does).
    Returns the instruction it ran."""
    ins = instruction_tag(data)
    if ins in (Instr.VERDICT, Instr.SETTLE, Instr.CHALLENGE, Instr.RULING, Instr.CLOSE):
        from . import logit_pool  # it builds on this module

        pool_view = cast("logit_pool.PoolView", view)
        logit_pool.HANDLERS[ins](pool_view, slot, accounts, data)
        return ins
    if ins == Instr.POST_ROUTE:
        from . import shard

        shard.post_route(view, slot, accounts, data)
        return ins
    _HANDLERS[ins](view, slot, accounts, data)
    return ins


def _register_miner(view: AccountsView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    _need(accs, 2, "register_miner")
    miner, macct = accs
    _signer(miner, "miner")
    _writable(macct)
    _expect(macct, miner_address(miner.key), "miner registration")
    if view.auction_data(macct.key) is not None:
        raise AuctionError("auction-miner-exists", f"{crypto.encode_address(miner.key)} is already registered")
    view.set_auction_data(macct.key, MinerAccount(miner.key, slot).pack())


def validate_request(p: RequestParams, slot_duration_us: int) -> None:
    """Range checks of a request (``auction-bad-params``) on a chain of ``slot_duration_us``
    slots."""
    least = Windows.for_slot(slot_duration_us).min_deadline_slots
    checks = (
        (1 <= p.prompt_tokens <= MAX_PROMPT_TOKENS, f"prompt_tokens must be 1..{MAX_PROMPT_TOKENS}"),
        (1 <= p.max_output_tokens <= MAX_OUTPUT_TOKENS, f"max_output_tokens must be 1..{MAX_OUTPUT_TOKENS}"),
        (p.max_price_per_token >= 1, "max_price_per_token must be at least 1"),
        (p.temp_milli <= MAX_TEMPERATURE_MILLI, f"temp_milli must be <= {MAX_TEMPERATURE_MILLI}"),
        (least <= p.deadline_slots <= MAX_DEADLINE_SLOTS, f"deadline_slots must be {least}..{MAX_DEADLINE_SLOTS}"),
    )
    for ok, why in checks:
        if not ok:
            raise AuctionError("auction-bad-params", why)
    max_payment = p.max_price_per_token * p.max_output_tokens
    if max_payment + QUERY_FEE_LAMPORTS > U64_MAX or bond_for(max_payment) > U64_MAX:
        raise AuctionError("auction-bad-params", "the escrow or the bond does not fit in u64")


def _request(view: AccountsView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    (_, nonce, model_id, prompt_hash, prompt_tokens, max_out, max_price, temp, seed,
     deadline_slots) = _REQUEST.unpack(data)
    p = RequestParams(nonce, model_id, prompt_hash, prompt_tokens, max_out, max_price, temp, seed, deadline_slots)
    _need(accs, 2, "request")
    requester, qacct = accs
    _signer(requester, "requester")
    _writable(requester, qacct)
    _expect(qacct, query_address(requester.key, nonce), "query")
    if view.auction_data(qacct.key) is not None:
        raise AuctionError("auction-query-exists", f"nonce {nonce} of this requester is taken")
    validate_request(p, view.slot_duration_us)
    win = Windows.for_slot(view.slot_duration_us)
    escrow = p.max_price_per_token * p.max_output_tokens + QUERY_FEE_LAMPORTS
    if view.balance(requester.key) < escrow:
        raise AuctionError("auction-insufficient-funds", f"the escrow is {escrow}, the requester has "
                           f"{view.balance(requester.key)}")
    q = QueryAccount(QueryStatus.OPEN, requester.key, nonce, model_id, prompt_hash, prompt_tokens, max_out,
                     max_price, temp, seed, slot, slot + win.commit_slots,
                     slot + win.commit_slots + win.reveal_slots, slot + deadline_slots, escrow,
                     bond_for(max_price * max_out))
    _move(view, requester.key, qacct.key, escrow)
    view.set_auction_data(qacct.key, q.pack())


def _commit_bid(view: AccountsView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    (_, commitment) = _COMMIT.unpack(data)
    _need(accs, 4, "commit_bid")
    bidder, qacct, bacct, macct = accs
    _signer(bidder, "bidder")
    _writable(bidder, qacct, bacct)
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.OPEN)
    _expect(macct, miner_address(bidder.key), "miner registration")
    if view.auction_data(macct.key) is None:
        raise AuctionError("auction-not-miner", f"{crypto.encode_address(bidder.key)} is not a registered miner")
    if slot >= q.commit_end_slot:
        raise AuctionError("auction-commit-closed", f"commits closed at slot {q.commit_end_slot}")
    _expect(bacct, bid_address(qacct.key, bidder.key), "bid")
    if view.auction_data(bacct.key) is not None:
        raise AuctionError("auction-bid-exists", "this bidder already committed a bid on this query")
    if q.bid_count >= MAX_BIDS_PER_QUERY:
        raise AuctionError("auction-too-many-bids", f"the query has {MAX_BIDS_PER_QUERY} bids")
    if view.balance(bidder.key) < q.bond_lamports:
        raise AuctionError("auction-insufficient-funds", f"the bond is {q.bond_lamports}, the bidder has "
                           f"{view.balance(bidder.key)}")
    _move(view, bidder.key, bacct.key, q.bond_lamports)
    bid = BidAccount(BidStatus.COMMITTED, q.bid_count, qacct.key, bidder.key, commitment, q.bond_lamports, slot)
    view.set_auction_data(bacct.key, bid.pack())
    view.set_auction_data(qacct.key, replace(q, bid_count=q.bid_count + 1).pack())


def _reveal_bid(view: AccountsView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    (_, price, salt) = _REVEAL.unpack(data)
    _need(accs, 3, "reveal_bid")
    bidder, qacct, bacct = accs
    _signer(bidder, "bidder")
    _writable(qacct, bacct)
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.OPEN)
    _expect(bacct, bid_address(qacct.key, bidder.key), "bid")
    bdata = view.auction_data(bacct.key)
    if bdata is None:
        raise AuctionError("auction-no-bid", "this bidder has no bid on this query")
    bid = BidAccount.unpack(bdata)
    if slot < q.commit_end_slot:
        raise AuctionError("auction-reveal-too-early", f"reveals open at slot {q.commit_end_slot}")
    if slot >= q.reveal_end_slot:
        raise AuctionError("auction-reveal-too-late", f"reveals closed at slot {q.reveal_end_slot}")
    if bid.status != BidStatus.COMMITTED:
        raise AuctionError("auction-already-revealed", f"the bid is {bid.status.name}")
    if bid_commitment(qacct.key, bidder.key, salt, price) != bid.commitment:
        raise AuctionError("auction-bid-mismatch", "price and salt do not match the commitment")
    if salt in (bytes(32), bidder.key, qacct.key):
        raise AuctionError("auction-weak-salt", "the salt is zero, the bidder's key or the query id")
    if not 1 <= price <= q.max_price_per_token:
        raise AuctionError("auction-price-out-of-range", f"price must be 1..{q.max_price_per_token}")
    lowest, second, win = q.lowest_price, q.second_price, q.winner_index
    if win == NO_WINNER or price < lowest or (price == lowest and bid.index < win):
        second = lowest if win != NO_WINNER else 0
        lowest, win = price, bid.index
    elif second == 0 or price < second:
        second = price
    view.set_auction_data(bacct.key, replace(bid, status=BidStatus.REVEALED, price=price, reveal_slot=slot).pack())
    view.set_auction_data(qacct.key, replace(q, revealed_count=q.revealed_count + 1, lowest_price=lowest,
                                             second_price=second, winner_index=win).pack())


def _close_auction(view: AccountsView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    _need(accs, 3, "close_auction", exact=False)
    qacct, requester, incin = accs[:3]
    _writable(*accs)
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.OPEN)
    if slot < q.reveal_end_slot:
        raise AuctionError("auction-reveal-not-over", f"reveals close at slot {q.reveal_end_slot}")
    _expect(requester, q.requester, "requester")
    _expect(incin, INCINERATOR_ID, "incinerator")
    pairs = accs[3:]
    if len(pairs) != 2 * q.bid_count:
        raise AuctionError("auction-bad-accounts", f"close_auction lists every bid and its bidder: "
                           f"{q.bid_count} pairs, got {len(pairs)} accounts")
    bids = []
    for i in range(q.bid_count):
        bacct, bidder = pairs[2 * i], pairs[2 * i + 1]
        _expect(bacct, bid_address(qacct.key, bidder.key), f"bid {i}")
        bdata = view.auction_data(bacct.key)
        bid = BidAccount.unpack(bdata) if bdata is not None else None
        if bid is None or bid.index != i:
            raise AuctionError("auction-bad-accounts", f"account pair {i} is not bid {i} of this query")
        bids.append((bacct.key, bid))
    award = q.revealed_count >= 1 and slot < q.deadline_slot
    for bkey, bid in bids:
        if bid.status == BidStatus.COMMITTED:
            new, dst = BidStatus.FORFEITED, INCINERATOR_ID
        elif award and bid.index == q.winner_index:
            new, dst = BidStatus.WON, bkey
        else:
            new, dst = BidStatus.REFUNDED, bid.bidder
        _move(view, bkey, dst, bid.bond_lamports)
        view.set_auction_data(bkey, replace(bid, status=new).pack())
    if award:
        winner = bids[q.winner_index][1].bidder
        clearing = q.second_price if q.revealed_count >= 2 else q.max_price_per_token
        view.set_auction_data(qacct.key, replace(q, status=QueryStatus.AWARDED, winner=winner,
                                                 clearing_price=clearing).pack())
    else:
        _move(view, qacct.key, q.requester, q.escrow_lamports)
        view.set_auction_data(qacct.key, replace(q, status=QueryStatus.REFUNDED, escrow_lamports=0).pack())


def result_commitment(q: QueryAccount, r: ResultParams) -> PolCommitment:
    """The PoL commitment a result stands for: the query's model, prompt hash and sampling
    parameters with the result's fields, by the winner. Raises ``auction-bad-result``."""
    if not 1 <= r.num_tokens <= q.max_output_tokens:
        raise AuctionError("auction-bad-result", f"num_tokens must be 1..{q.max_output_tokens}")
    if r.tier not in {int(t) for t in TIERS}:
        raise AuctionError("auction-bad-result", f"unknown tier {r.tier}")
    try:
        return PolCommitment(model_id=q.model_id, tier=r.tier, vocab=r.vocab, top_k=r.top_k,
                             temp_milli=q.temp_milli, sample_seed=q.sample_seed, prompt_hash=q.prompt_hash,
                             output_hash=r.output_hash, num_tokens=r.num_tokens, root=r.pol_root, miner=q.winner,
                             signature=r.pol_signature)
    except ValueError as exc:
        raise AuctionError("auction-bad-result", str(exc)) from None


def _post_result(view: AccountsView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    (_, output_hash, num_tokens, tier, top_k, vocab, root, sig) = _POST.unpack(data)
    r = ResultParams(output_hash, num_tokens, tier, top_k, vocab, root, sig)
    _need(accs, 2, "post_result")
    winner, qacct = accs
    _signer(winner, "winner")
    _writable(qacct)
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.AWARDED)
    if winner.key != q.winner:
        raise AuctionError("auction-not-winner", f"only {crypto.encode_address(q.winner)} may post the result")
    if slot >= q.deadline_slot:
        raise AuctionError("auction-deadline-passed", f"the deadline was slot {q.deadline_slot}")
    cmt = result_commitment(q, r)
    if not verify_message(cmt, q.winner, "pol-commitment"):
        raise AuctionError("auction-bad-commitment", "the PoL commitment signature does not verify for this query")
    view.set_auction_data(qacct.key, replace(q, status=QueryStatus.RESULT_POSTED, result_slot=slot,
                                             output_hash=output_hash, num_tokens=num_tokens, tier=tier,
                                             top_k=top_k, vocab=vocab, pol_root=root, pol_signature=sig).pack())


def _expire(view: AccountsView, slot: int, accs: Sequence[IxAccount], data: bytes) -> None:
    _need(accs, 4, "expire")
    qacct, requester, incin, bacct = accs
    _writable(*accs)
    q = _load_query(view, qacct.key)
    _status(q, QueryStatus.AWARDED)
    if slot < q.deadline_slot:
        raise AuctionError("auction-deadline-not-reached", f"the deadline is slot {q.deadline_slot}")
    _expect(requester, q.requester, "requester")
    _expect(incin, INCINERATOR_ID, "incinerator")
    _expect(bacct, bid_address(qacct.key, q.winner), "winning bid")
    bdata = view.auction_data(bacct.key)
    if bdata is None:  # an invariant: an AWARDED query's winning bid exists
        raise AuctionError("auction-no-bid", "the winning bid account is empty")
    bid = BidAccount.unpack(bdata)
    _move(view, bacct.key, INCINERATOR_ID, bid.bond_lamports)
    _move(view, qacct.key, q.requester, q.escrow_lamports)
    view.set_auction_data(bacct.key, replace(bid, status=BidStatus.SLASHED).pack())
    view.set_auction_data(qacct.key, replace(q, status=QueryStatus.EXPIRED, escrow_lamports=0).pack())


_HANDLERS = {
    Instr.REGISTER_MINER: _register_miner,
    Instr.REQUEST: _request,
    Instr.COMMIT_BID: _commit_bid,
    Instr.REVEAL_BID: _reveal_bid,
    Instr.CLOSE_AUCTION: _close_auction,
    Instr.POST_RESULT: _post_result,
    Instr.EXPIRE: _expire,
}


def decode_account(
        data: bytes,
) -> (QueryAccount | BidAccount | MinerAccount | logit_pool.PoolAccount | logit_pool.DisputeAccount
      | logit_pool.DifficultyAccount | shard.RouteAccount):
    """Any auction account by its kind byte (raises ValueError)."""
    if not data:
        raise ValueError("empty account")
    if data[0] == Kind.ROUTE:
        from .shard import RouteAccount

        return RouteAccount.unpack(data)
    if data[0] in (Kind.POOL, Kind.DISPUTE, Kind.DIFFICULTY):
        from . import logit_pool

        if data[0] == Kind.DISPUTE:
            return logit_pool.DisputeAccount.unpack(data)
        if data[0] == Kind.DIFFICULTY:
            return logit_pool.DifficultyAccount.unpack(data)
        return logit_pool.PoolAccount.unpack(data)
    kinds: dict[int, type[QueryAccount] | type[BidAccount] | type[MinerAccount]] = {
        Kind.QUERY: QueryAccount, Kind.BID: BidAccount, Kind.MINER: MinerAccount}
    cls = kinds.get(data[0])
    if cls is None:
        raise ValueError(f"unknown account kind {data[0]}")
    return cls.unpack(data)
