"""A node's roles composed onto the networking node (``join``/``run --validator``,
``--miner``; spec/auction.md "Roles"): the validator is the extension the networking node
knows (net/node.py ``NodeExtension``); a miner runs beside it on the validator's banks.
This module delegates to the validator and adds

* the miner service's task, status (``status`` JSON: ``roles.miner``) and status-line cells;
* the read-only auction control commands a requester uses (``ambient-p2p query``):
  ``auction_query`` {query: base58} -> the query account and its bids, ``balance``
  {address: base58} -> lamports, ``recent_blockhash`` -> the best bank's last blockhash.
  All read the node's best (processed) frozen bank and say which slot it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ..core import auction as au
from ..core.crypto import CryptoError, decode_address, encode_address
from .miner import MinerService, auction_view
from .validator_pool import PoolValidator, ProofStore, chain_counts

if TYPE_CHECKING:  # pragma: no cover
    from ..core.bank import Bank
    from ..net.gossip import Delivery, PayloadCheck
    from ..net.reqresp import ShredStore
    from .validator import Validator


AUCTION_COMMANDS = ("auction_query", "balance", "recent_blockhash", "pool_draw")


def query_json(q: au.QueryAccount) -> dict[str, Any]:
    """A query account as JSON (addresses base58, hashes hex, status by name)."""
    return {
        "status": q.status.name, "requester": encode_address(q.requester), "nonce": q.nonce,
        "model_id": q.model_id.hex(), "prompt_hash": q.prompt_hash.hex(), "prompt_tokens": q.prompt_tokens,
        "max_output_tokens": q.max_output_tokens, "max_price_per_token": q.max_price_per_token,
        "temp_milli": q.temp_milli, "sample_seed": q.sample_seed.hex(), "request_slot": q.request_slot,
        "commit_end_slot": q.commit_end_slot, "reveal_end_slot": q.reveal_end_slot,
        "deadline_slot": q.deadline_slot, "escrow_lamports": q.escrow_lamports, "bond_lamports": q.bond_lamports,
        "bid_count": q.bid_count, "revealed_count": q.revealed_count, "lowest_price": q.lowest_price,
        "second_price": q.second_price, "clearing_price": q.clearing_price,
        "winner": encode_address(q.winner) if q.winner != bytes(32) else None, "result_slot": q.result_slot,
        "output_hash": q.output_hash.hex(), "num_tokens": q.num_tokens, "tier": q.tier, "top_k": q.top_k,
        "vocab": q.vocab, "pol_root": q.pol_root.hex(),
        "pol_commitment_hash": q.pol_commitment().hash().hex() if q.status == au.QueryStatus.RESULT_POSTED else None,
    }


def pool_draw_json(bank: Bank, qid: bytes) -> dict[str, Any]:
    """The Logit Pool's draw of query ``qid`` as ``bank`` (frozen) sees it (spec/logit_pool.md
    "The draw"): the pool account's when one exists, else the round-0 draw a verdict would
    make now; ``draw`` is None while the query has no result or the beacon is not an ancestor."""
    from ..core import logit_pool as lp
    from ..core.bank import pool_view

    data = bank.auction_accounts.get(qid)
    if data is None or data[:1] != bytes([au.Kind.QUERY]):
        return {"query": None, "draw": None}
    q = au.QueryAccount.unpack(data)
    d = None
    if q.status in (au.QueryStatus.RESULT_POSTED, au.QueryStatus.FINALIZED_VERIFIED,
                    au.QueryStatus.FINALIZED_REJECTED):
        d = lp.draw_of(pool_view(bank), q, qid) if q.status == au.QueryStatus.RESULT_POSTED else \
            lp.load_pool(pool_view(bank), lp.pool_address(qid))
    if d is None:
        return {"query": query_json(q), "draw": None}
    names = {lp.NO_VERDICT: None, lp.ACCEPT: "accept", lp.REJECT: "reject", lp.UNAVAILABLE: "unavailable"}
    return {"query": query_json(q), "draw": {
        "stored": lp.pool_address(qid) in bank.auction_accounts, "round": d.round,
        "beacon_slot": d.beacon_slot, "beacon": d.beacon.hex(), "verify_end_slot": d.verify_end_slot,
        "quorum": d.quorum, "seed": lp.draw_seed(q.pol_commitment().hash(), qid, d.first_beacon).hex(),
        "validators": [{"validator": encode_address(v), "round": d.round_of(i),
                        "positions": d.positions_of(q, i), "verdict": names[d.verdicts[i]]}
                       for i, v in enumerate(d.validators)]}}


def bid_json(b: au.BidAccount) -> dict[str, Any]:
    return {"bidder": encode_address(b.bidder), "index": b.index, "status": b.status.name, "price": b.price,
            "bond_lamports": b.bond_lamports, "commit_slot": b.commit_slot, "reveal_slot": b.reveal_slot}


def _address(req: dict[str, Any], key: str) -> bytes:
    v = req.get(key)
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a base58 address")
    try:
        return decode_address(v)
    except (CryptoError, ValueError):
        raise ValueError(f"{key} is not a base58 address: {v!r}") from None


def auction_control(bank: Bank, slot: int, req: dict[str, Any]) -> dict[str, Any] | None:
    """The read-only auction commands over ``bank`` (the node's best frozen bank at ``slot``)."""
    cmd = req.get("cmd")
    try:
        if cmd == "auction_query":
            qid = _address(req, "query")
            data = bank.auction_accounts.get(qid)
            if data is None or data[:1] != bytes([au.Kind.QUERY]):
                return {"ok": True, "bank_slot": slot, "query": None, "bids": []}
            _qs, bids = auction_view(bank)
            mine = sorted(bids.get(qid, {}).values(), key=lambda b: b.index)
            return {"ok": True, "bank_slot": slot, "query": query_json(au.QueryAccount.unpack(data)),
                    "bids": [bid_json(b) for b in mine]}
        if cmd == "balance":
            return {"ok": True, "bank_slot": slot, "lamports": bank.balance(_address(req, "address"))}
        if cmd == "recent_blockhash":
            return {"ok": True, "bank_slot": slot, "blockhash": bank.last_blockhash.hex()}
        if cmd == "pool_draw":
            return {"ok": True, "bank_slot": slot, **pool_draw_json(bank, _address(req, "query"))}
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    return None


class RoleNode:
    """The node extension for a validator with (optionally) a miner beside it."""

    def __init__(self, validator: Validator, miner: MinerService | None = None,
                 pool: PoolValidator | None = None) -> None:
        self.validator = validator
        self.miner = miner
        self.pool = pool
        #: serves /ambient/pol-open/1 from this node's miner's proofs (spec/logit_pool.md)
        self.proofs = ProofStore(validator.data_dir)

    def payload_checks(self) -> dict[str, PayloadCheck]:
        return self.validator.payload_checks()

    def shred_store(self) -> ShredStore | None:
        return self.validator.shred_store()

    def reqresp_handlers(self) -> dict[str, Any]:
        from ..net.reqresp import PROTO_POL_OPEN

        return {**self.validator.reqresp_handlers(), PROTO_POL_OPEN: self.proofs.handler}

    def on_delivery(self, d: Delivery) -> bool:
        return self.validator.on_delivery(d)

    def status(self) -> dict[str, Any]:
        out = self.validator.status()
        c = out.get("consensus", {})
        roles: dict[str, Any] = {"validator": {"produced": c.get("produced"), "votes_out": c.get("votes_out"),
                                               "weight": self.validator.cons.stakes.get(self.validator.kp.pubkey, 0)}}
        if self.miner is not None:
            roles["miner"] = self.miner.status()
        if self.pool is not None:
            roles["pool"] = self.pool.status()
        else:
            res = self.validator.banks.get(self.validator.cons.processed_slot()) if self.validator.loaded else None
            roles["pool"] = {"state": "off", "chain": chain_counts(res.bank) if res is not None else None}
        roles["pool"]["openings_served"] = self.proofs.served
        return {**out, "roles": roles}

    def status_line(self) -> str:
        line = self.validator.status_line()
        line += " " + self.miner.status_line() if self.miner is not None else ""
        line += " " + self.pool.status_line() if self.pool is not None else ""
        v = self.validator
        res = v.banks.get(v.cons.processed_slot()) if v.loaded else None
        if res is not None:  # the chain's Logit Pool outcomes: answered/accepted/rejected/slashed
            c = chain_counts(res.bank)
            line += f" queries={c['answered']}/{c['accepted']}/{c['rejected']}/{c['slashed']}"
        return line

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        v = self.validator
        if req.get("cmd") in AUCTION_COMMANDS:
            slot = v.cons.processed_slot()
            res = v.banks.get(slot) if v.loaded else None
            if res is None:
                return {"ok": False, "error": "the validator has no frozen bank yet"}
            return auction_control(res.bank, slot, req)
        return await v.control(req)

    async def run(self, node: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.validator.run, node)
            if self.miner is not None:
                nursery.start_soon(self.miner.run)
            if self.pool is not None:
                nursery.start_soon(self._run_pool)

    async def _run_pool(self) -> None:
        """The pool's model loads after the miner's: two threads importing transformers at
        once can fail (its lazy module is not thread-safe)."""
        assert self.pool is not None
        # the miner (another helper's service) has no event for "loaded": poll its state
        while self.miner is not None and self.miner.state == "loading-model":  # noqa: ASYNC110
            await trio.sleep(0.5)
        await self.pool.run()

    def close(self) -> None:
        self.validator.close()
