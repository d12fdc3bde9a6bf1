"""Auction-program transactions: Solana wire transactions that wallets and SDKs can build
(normative text: spec/auction.md "Instructions"). Each builder returns a signed transaction
with one auction instruction; the signer named first pays the fee.

Pure: no I/O, no clock. The caller supplies the salt of a bid (a fresh 32-byte random
value, e.g. ``secrets.token_bytes(32)``: never a key or a counter, or the sealed price can be
brute-forced).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .auction import (
    AUCTION_PROGRAM_ID,
    INCINERATOR_ID,
    QueryAccount,
    RequestParams,
    ResultParams,
    bid_address,
    bid_commitment,
    close_auction_data,
    commit_bid_data,
    expire_data,
    miner_address,
    post_result_data,
    query_address,
    register_miner_data,
    request_data,
    reveal_bid_data,
)
from .crypto import ZERO_SIGNATURE, Keypair
from .messages import sign_message
from .pol import PolOpening

if TYPE_CHECKING:  # sharded answers (core/shard.py)
    from .shard import RouteAccount, StageCommitment

#: (pubkey, is_signer, is_writable)
Meta = tuple[bytes, bool, bool]


def auction_transaction(signers: Sequence[Keypair], metas: Sequence[Meta], data: bytes,
                        recent_blockhash: bytes) -> bytes:
    """One auction instruction over ``metas`` (its accounts) with ``data``, signed by
    ``signers``; the first signer pays the fee (it need not be one of ``metas``: anyone may
    send the permissionless instructions)."""
    from solders.hash import Hash
    from solders.instruction import AccountMeta, Instruction
    from solders.keypair import Keypair as SKeypair
    from solders.pubkey import Pubkey
    from solders.transaction import Transaction

    skps = [SKeypair.from_seed(kp.seed) for kp in signers]
    ix = Instruction(Pubkey(AUCTION_PROGRAM_ID), bytes(data),
                     [AccountMeta(Pubkey(k), s, w) for k, s, w in metas])
    return bytes(Transaction.new_signed_with_payer([ix], skps[0].pubkey(), skps, Hash(bytes(recent_blockhash))))


def register_miner_transaction(miner: Keypair, recent_blockhash: bytes) -> bytes:
    metas = [(miner.pubkey, True, True), (miner_address(miner.pubkey), False, True)]
    return auction_transaction([miner], metas, register_miner_data(), recent_blockhash)


def request_transaction(requester: Keypair, params: RequestParams, recent_blockhash: bytes) -> bytes:
    query = query_address(requester.pubkey, params.nonce)
    metas = [(requester.pubkey, True, True), (query, False, True)]
    return auction_transaction([requester], metas, request_data(params), recent_blockhash)


def commit_bid_transaction(bidder: Keypair, query: bytes, price: int, salt: bytes, recent_blockhash: bytes) -> bytes:
    metas = [(bidder.pubkey, True, True), (query, False, True), (bid_address(query, bidder.pubkey), False, True),
             (miner_address(bidder.pubkey), False, False)]
    cmt = bid_commitment(query, bidder.pubkey, salt, price)
    return auction_transaction([bidder], metas, commit_bid_data(cmt), recent_blockhash)


def reveal_bid_transaction(bidder: Keypair, query: bytes, price: int, salt: bytes, recent_blockhash: bytes) -> bytes:
    metas = [(bidder.pubkey, True, True), (query, False, True), (bid_address(query, bidder.pubkey), False, True)]
    return auction_transaction([bidder], metas, reveal_bid_data(price, salt), recent_blockhash)


def close_auction_transaction(payer: Keypair, query: bytes, requester: bytes, bidders: Sequence[bytes],
                              recent_blockhash: bytes) -> bytes:
    """``bidders`` in commit order (``BidAccount.index``), every bid of the query."""
    metas: list[Meta] = [(query, False, True), (requester, False, True), (INCINERATOR_ID, False, True)]
    for b in bidders:
        metas += [(bid_address(query, b), False, True), (b, False, True)]
    return auction_transaction([payer], metas, close_auction_data(), recent_blockhash)


def post_result_transaction(winner: Keypair, query: bytes, result: ResultParams, recent_blockhash: bytes) -> bytes:
    metas = [(winner.pubkey, True, True), (query, False, True)]
    return auction_transaction([winner], metas, post_result_data(result), recent_blockhash)


def post_route_transaction(winner: Keypair, query: bytes, stages: Sequence[StageCommitment],
                           recent_blockhash: bytes) -> bytes:
    """The route of a sharded answer (core/shard.py ``post_route``), after its result."""
    from .shard import post_route_data, route_address

    metas: list[Meta] = [(winner.pubkey, True, True), (query, False, False), (route_address(query), False, True)]
    return auction_transaction([winner], metas, post_route_data(stages), recent_blockhash)


def expire_transaction(payer: Keypair, query: bytes, requester: bytes, winner: bytes, recent_blockhash: bytes) -> bytes:
    metas: list[Meta] = [(query, False, True), (requester, False, True), (INCINERATOR_ID, False, True),
                         (bid_address(query, winner), False, True)]
    return auction_transaction([payer], metas, expire_data(), recent_blockhash)


def sign_result(winner: Keypair, query: QueryAccount, *, output_hash: bytes, num_tokens: int, tier: int,
                top_k: int, vocab: int, pol_root: bytes) -> ResultParams:
    """The result fields with the winner's PoL commitment signature over the commitment
    bound to ``query`` (``auction.result_commitment``). A miner that ran
    ``pol.commit`` already holds this signature: it signs the same commitment."""
    from .pol import PolCommitment

    cmt = PolCommitment(model_id=query.model_id, tier=tier, vocab=vocab, top_k=top_k, temp_milli=query.temp_milli,
                        sample_seed=query.sample_seed, prompt_hash=query.prompt_hash, output_hash=output_hash,
                        num_tokens=num_tokens, root=pol_root, miner=winner.pubkey, signature=ZERO_SIGNATURE)
    signed = sign_message(cmt, winner, "pol-commitment")
    return ResultParams(output_hash, num_tokens, tier, top_k, vocab, pol_root, signed.signature)


# -- the Logit Pool's instructions (core/logit_pool.py, spec/logit_pool.md) -----------------
def verdict_transaction(validator: Keypair, query: bytes, accept: bool, evidence: PolOpening | None,
                        recent_blockhash: bytes, *, unavailable: bool = False) -> bytes:
    """A drawn validator's verdict: accept, or reject with the failing opening as evidence, or
    (``unavailable``) that it could not obtain what it must check."""
    from .logit_pool import pool_address, unavailable_data, verdict_data

    metas = [(validator.pubkey, True, True), (query, False, True), (pool_address(query), False, True)]
    data = unavailable_data() if unavailable else verdict_data(accept, evidence)
    return auction_transaction([validator], metas, data, recent_blockhash)


def settle_transaction(payer: Keypair, query: QueryAccount, query_id: bytes, drawn: Sequence[bytes],
                       recent_blockhash: bytes, route: RouteAccount | None = None) -> bytes:
    """Settle (or extend the draw of) a posted result; ``drawn`` = every validator drawn so
    far, in draw order (the pool account's list, or the round-0 draw when none exists);
    ``route`` = the posted route of a sharded answer (core/shard.py ``load_route``): its
    account and stage keys follow the validators."""
    from .logit_pool import difficulty_address, pool_address, settle_data

    metas: list[Meta] = [(query_id, False, True), (pool_address(query_id), False, True),
                         (query.requester, False, True), (query.winner, False, True),
                         (bid_address(query_id, query.winner), False, True), (INCINERATOR_ID, False, True),
                         (difficulty_address(), False, True), *((v, False, True) for v in drawn)]
    if route is not None:
        from .shard import route_address

        metas += [(route_address(query_id), False, True), *((k, False, True) for k in route.payees())]
    return auction_transaction([payer], metas, settle_data(), recent_blockhash)


def challenge_transaction(challenger: Keypair, query: QueryAccount, query_id: bytes, evidence: PolOpening,
                          recent_blockhash: bytes) -> bytes:
    """A fraud proof against a verified result (spec/logit_pool.md "Retrospective slashing")."""
    from .logit_pool import challenge_data, difficulty_address, dispute_address, pool_address

    metas: list[Meta] = [(challenger.pubkey, True, True), (query_id, False, True), (pool_address(query_id), False, True),
                         (bid_address(query_id, query.winner), False, True), (dispute_address(query_id), False, True),
                         (query.requester, False, True), (difficulty_address(), False, True)]
    return auction_transaction([challenger], metas, challenge_data(evidence), recent_blockhash)


def ruling_transaction(juror: Keypair, query_id: bytes, fraud: bool, recent_blockhash: bytes) -> bytes:
    """A drawn juror's ruling on a dispute."""
    from .logit_pool import dispute_address, pool_address, ruling_data

    metas: list[Meta] = [(juror.pubkey, True, True), (query_id, False, True), (pool_address(query_id), False, True),
                         (dispute_address(query_id), False, True)]
    return auction_transaction([juror], metas, ruling_data(fraud), recent_blockhash)


def close_transaction(payer: Keypair, query: QueryAccount, query_id: bytes, dispute_parties: Sequence[bytes],
                      recent_blockhash: bytes) -> bytes:
    """Resolve an open dispute (``dispute_parties`` = its challenger, then its jurors in draw
    order) or release the held bond (``dispute_parties`` empty)."""
    from .logit_pool import close_data, difficulty_address, dispute_address, pool_address

    metas: list[Meta] = [(query_id, False, True), (pool_address(query_id), False, True),
                         (bid_address(query_id, query.winner), False, True), (dispute_address(query_id), False, True),
                         (query.requester, False, True), (query.winner, False, True), (INCINERATOR_ID, False, True),
                         (difficulty_address(), False, True), *((k, False, True) for k in dispute_parties)]
    return auction_transaction([payer], metas, close_data(), recent_blockhash)
