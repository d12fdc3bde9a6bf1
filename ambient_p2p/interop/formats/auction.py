"""Auction-program vectors (spec/auction.md): one auction instruction executed on a given
bank state, for every transition of the table and every must-reject case.

``<instruction>/<case>``: input.json {slot, accounts: [[address, lamports]],
auction_accounts: [[address, hex data]], tx: hex wire transaction; for ``request`` also
slot_duration_us, the chain's slot duration that converts the windows to slots}: a bank at
``slot`` holding those balances and auction accounts (its only recent blockhash is the
transaction's) runs the transaction. Output {accounts, auction_accounts (every account
after the transaction, sorted by address), changed: {address: decoded auction account}
for the auction accounts it wrote, auction_delta_hash (bank.auction_delta_hash of those)}.
An instruction error makes the case a must-reject with the program's error code
(``auction-...``); the transaction fee is charged either way, nothing else changes.

``bid-commitment/<case>``: input.json {query, bidder (addresses), salt (hex), price} ->
{commitment: hex} (``sha256(BID_DOMAIN || query || bidder || salt || price u64 LE)``).

The :class:`Chain` below (a bank advanced slot by slot) builds the pre-states by running
the program itself; the tests use it too.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import struct
from collections.abc import Sequence
from typing import Any

from ...core import auction as A
from ...core import auction_tx as T
from ...core import crypto
from ...core import logit_pool as L
from ...core import pol as P
from ...core import shard as S
from ...core.bank import ZERO_HASH, Bank, BlockError, TxResult, auction_delta_hash, parse_transaction, pool_view
from ...core.codec import encode
from ...core.difficulty import Difficulty
from ...core.messages import sign_message
from ...core.pol import TOP_K, Tier
from .. import Case, Rejected, case_from_run

FORMAT = "auction"
HANDLERS = ("register_miner", "request", "commit_bid", "reveal_bid", "close_auction", "post_result", "expire",
            "verdict", "settle", "challenge", "ruling", "close", "post_route")
#: handlers whose input carries the chain context the Logit Pool's draw reads
POOL_HANDLERS = ("verdict", "settle", "challenge", "ruling", "close")

LEADER = crypto.Keypair.deterministic("vectors/auction/leader")
REQUESTER = crypto.Keypair.deterministic("vectors/auction/requester")
OUTSIDER = crypto.Keypair.deterministic("vectors/auction/outsider")
MINERS = [crypto.Keypair.deterministic("vectors/auction/miner", i) for i in range(A.MAX_BIDS_PER_QUERY + 1)]
GENESIS_HASH = hashlib.sha256(b"vectors/auction/genesis").digest()
FUNDS = 10**12
MODEL_ID = hashlib.sha256(b"vectors/auction/model").digest()
#: the vectors' chain runs 800 ms slots, so its windows are 8 slots (spec/auction.md
#: "Windows"); the ``-400ms`` request cases run the genesis default of 400 ms
SLOT_DURATION_US = 800_000
WINDOWS = A.Windows.for_slot(SLOT_DURATION_US)


def account_json(acct: A.QueryAccount | A.BidAccount | A.MinerAccount | L.PoolAccount | L.DisputeAccount
                 | L.DifficultyAccount | S.RouteAccount) -> dict[str, Any]:
    """A decoded auction account: addresses base58, other bytes hex, enums by name."""
    out: dict[str, Any] = {"kind": type(acct).__name__}
    for f in dataclasses.fields(acct):
        v = getattr(acct, f.name)
        if f.name in ("validators", "jurors"):
            out[f.name] = [crypto.encode_address(x) for x in v]
        elif f.name == "stages":  # a route account (core/shard.py)
            out[f.name] = [{"stage": crypto.encode_address(x.stage), "start": x.start, "end": x.end, "tier": x.tier,
                            "root": x.root.hex()} for x in v]
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            out[f.name] = dataclasses.asdict(v)
        elif isinstance(v, enum.Enum):
            out[f.name] = v.name
        elif isinstance(v, bytes):
            addr = f.name in {"requester", "winner", "query", "bidder", "authority", "challenger"}
            out[f.name] = crypto.encode_address(v) if addr else v.hex()
        else:
            out[f.name] = v
    return out


def request_params(nonce: int = 1, **over: Any) -> A.RequestParams:
    p = A.RequestParams(nonce=nonce, model_id=MODEL_ID, prompt_hash=hashlib.sha256(b"vectors/auction/prompt").digest(),
                        prompt_tokens=12, max_output_tokens=64, max_price_per_token=1_000, temp_milli=700,
                        sample_seed=hashlib.sha256(b"vectors/auction/seed").digest(), deadline_slots=48)
    return dataclasses.replace(p, **over)


def salt_for(kp: crypto.Keypair, tag: str = "") -> bytes:
    """A deterministic stand-in for a fresh random salt (vectors must be reproducible)."""
    return hashlib.sha256(b"vectors/auction/salt/" + kp.pubkey + tag.encode()).digest()


class Chain:
    """A bank advanced one frozen slot per :meth:`send`; what the vectors and tests drive."""

    def __init__(self, funded: dict[bytes, int] | None = None, slot_duration_us: int = SLOT_DURATION_US) -> None:
        if funded is None:
            funded = {k.pubkey: FUNDS for k in [REQUESTER, OUTSIDER, *MINERS]}
        self.bank = Bank.genesis(GENESIS_HASH, funded, LEADER.pubkey, GENESIS_HASH)
        self.bank.slot_duration_us = slot_duration_us
        #: lamports removed from supply: the burned half of every slot's fees
        self.burned = 0
        #: LStake the Logit Pool's draw weighs (every epoch alike; empty: weight 1 each)
        self.lstake: dict[bytes, int] = {}

    @property
    def blockhash(self) -> bytes:
        return self.bank.last_blockhash

    def open(self, slot: int | None = None) -> Bank:
        """An unfrozen child at ``slot`` (default: the next slot)."""
        child = self.bank.child(self.bank.slot + 1 if slot is None else slot, LEADER.pubkey)
        if self.lstake:
            stakes = dict(self.lstake)
            child.lstake_provider = lambda _epoch: stakes
        return child

    def commit(self, child: Bank) -> None:
        before = child.fees_collected
        child.freeze(hashlib.sha256(b"vectors/auction/entry" + child.slot.to_bytes(8, "little")).digest())
        self.burned += before * 50 // 100
        self.bank = child

    def send(self, *raws: bytes, slot: int | None = None) -> list[TxResult]:
        child = self.open(slot)
        results = child.process_transactions(list(raws))
        self.commit(child)
        return results

    def ok(self, *raws: bytes, slot: int | None = None) -> None:
        for r in self.send(*raws, slot=slot):
            if r.error is not None:
                raise AssertionError(r.error)

    def query(self, key: bytes) -> A.QueryAccount:
        data = self.bank.auction_data(key)
        assert data is not None
        return A.QueryAccount.unpack(data)

    def bid(self, query: bytes, bidder: bytes) -> A.BidAccount:
        data = self.bank.auction_data(A.bid_address(query, bidder))
        assert data is not None
        return A.BidAccount.unpack(data)

    def total(self) -> int:
        return sum(self.bank.accounts.values()) + self.burned

    def input_json(self, raw: bytes, slot: int | None = None, *, pool: bool = False, timed: bool = False) -> bytes:
        """The vector input for running ``raw`` on this chain's state at ``slot`` (``pool``:
        with the recent blockhashes, ancestors' bank hashes, last votes and LStake the Logit
        Pool's draw reads; ``timed``: with the slot duration a request's windows need)."""
        inp: dict[str, Any] = {
            "slot": self.bank.slot + 1 if slot is None else slot,
            "accounts": [[crypto.encode_address(k), n] for k, n in sorted(self.bank.accounts.items())],
            "auction_accounts": [[crypto.encode_address(k), v.hex()]
                                 for k, v in sorted(self.bank.auction_accounts.items())],
            "tx": raw.hex()}
        if timed:
            inp["slot_duration_us"] = self.bank.slot_duration_us
        if pool:
            child = self.open(slot)
            inp["blockhashes"] = [h.hex() for h in child.blockhashes]
            inp["slot_hashes"] = [[s, h.hex()] for s, h in sorted(child.slot_hashes.items())]
            inp["last_votes"] = [[crypto.encode_address(k), s] for k, s in sorted(child.last_votes.items())]
            inp["lstake"] = [[crypto.encode_address(k), n] for k, n in sorted(self.lstake.items())]
        return (json.dumps(inp, indent=1, sort_keys=True) + "\n").encode()

    # -- scripted steps ------------------------------------------------------------------
    def register(self, *miners: crypto.Keypair) -> None:
        self.ok(*(T.register_miner_transaction(m, self.blockhash) for m in miners))

    def request(self, params: A.RequestParams | None = None, requester: crypto.Keypair = REQUESTER) -> bytes:
        p = params or request_params()
        self.ok(T.request_transaction(requester, p, self.blockhash))
        return A.query_address(requester.pubkey, p.nonce)

    def commit_bids(self, query: bytes, bids: Sequence[tuple[crypto.Keypair, int]]) -> None:
        self.ok(*(T.commit_bid_transaction(m, query, price, salt_for(m), self.blockhash) for m, price in bids))

    def reveal_bids(self, query: bytes, bids: Sequence[tuple[crypto.Keypair, int]]) -> None:
        q = self.query(query)
        slot = max(self.bank.slot + 1, q.commit_end_slot)
        self.ok(*(T.reveal_bid_transaction(m, query, price, salt_for(m), self.blockhash) for m, price in bids),
                slot=slot)

    def bidders(self, query: bytes) -> list[bytes]:
        out = [b"" for _ in range(self.query(query).bid_count)]
        for data in self.bank.auction_accounts.values():
            if data[0] == A.Kind.BID:
                b = A.BidAccount.unpack(data)
                if b.query == query:
                    out[b.index] = b.bidder
        return out

    def close_tx(self, query: bytes, payer: crypto.Keypair = OUTSIDER) -> bytes:
        return T.close_auction_transaction(payer, query, self.query(query).requester, self.bidders(query),
                                           self.blockhash)

    def close(self, query: bytes) -> None:
        slot = max(self.bank.slot + 1, self.query(query).reveal_end_slot)
        self.ok(self.close_tx(query), slot=slot)

    def result(self, query: bytes, winner: crypto.Keypair, **over: Any) -> A.ResultParams:
        fields: dict[str, Any] = {"output_hash": hashlib.sha256(b"vectors/auction/output").digest(), "num_tokens": 40,
                                  "tier": int(Tier.FP32), "top_k": TOP_K, "vocab": 50_257,
                                  "pol_root": hashlib.sha256(b"vectors/auction/root").digest()}
        fields.update(over)
        return T.sign_result(winner, self.query(query), **fields)

    def post_tx(self, query: bytes, winner: crypto.Keypair, **over: Any) -> bytes:
        return T.post_result_transaction(winner, query, self.result(query, winner, **over), self.blockhash)

    def expire_tx(self, query: bytes, payer: crypto.Keypair = OUTSIDER) -> bytes:
        q = self.query(query)
        return T.expire_transaction(payer, query, q.requester, q.winner, self.blockhash)


def bank_from_input(handler: str, v: dict[str, Any], slot: int, accounts: dict[bytes, int],
                    auction_accounts: dict[bytes, bytes], recent_blockhash: bytes) -> Bank:
    """The unfrozen bank a case's transaction runs on: ``slot``, the balances and auction
    accounts, the transaction's blockhash as the only recent one; for the Logit Pool's
    handlers also the input's blockhashes, ancestors' bank hashes, last votes and LStake."""
    if handler not in POOL_HANDLERS:
        plain = Bank(slot, slot - 1, ZERO_HASH, bytes(32), dict(accounts), [recent_blockhash], {},
                     auction_accounts=dict(auction_accounts))
        if handler == "request":
            plain.slot_duration_us = int(v["slot_duration_us"])
            if plain.slot_duration_us < 1:
                raise ValueError("slot_duration_us must be >= 1")
        return plain
    bank = Bank(slot, slot - 1, ZERO_HASH, bytes(32), dict(accounts), [bytes.fromhex(h) for h in v["blockhashes"]],
                {}, auction_accounts=dict(auction_accounts),
                slot_hashes={int(s): bytes.fromhex(h) for s, h in v["slot_hashes"]},
                last_votes={crypto.decode_address(a): int(s) for a, s in v["last_votes"]})
    stakes = {crypto.decode_address(a): int(n) for a, n in v["lstake"]}
    if stakes:
        bank.lstake_provider = lambda _epoch: stakes
    return bank


def run(handler: str, data: bytes) -> Any:
    try:
        v = json.loads(data)
        if handler == "bid-commitment":
            cmt = A.bid_commitment(crypto.decode_address(v["query"]), crypto.decode_address(v["bidder"]),
                                   bytes.fromhex(v["salt"]), int(v["price"]))
            return {"commitment": cmt.hex()}
        if handler not in HANDLERS:
            raise Rejected("unknown-handler", handler)
        slot = int(v["slot"])
        accounts = {crypto.decode_address(a): int(n) for a, n in v["accounts"]}
        auction_accounts = {crypto.decode_address(a): bytes.fromhex(d) for a, d in v["auction_accounts"]}
        raw = bytes.fromhex(v["tx"])
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError) as exc:
        raise Rejected("malformed", str(exc)) from None
    try:
        tx = parse_transaction(raw)
    except BlockError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    if len(tx.instructions) != 1 or tx.account_keys[tx.instructions[0][0]] != A.AUCTION_PROGRAM_ID:
        raise Rejected("malformed", "the transaction must carry exactly one auction instruction")
    if slot < 1:
        raise Rejected("malformed", "slot must be at least 1")
    try:
        bank = bank_from_input(handler, v, slot, accounts, auction_accounts, tx.recent_blockhash)
    except (ValueError, KeyError, TypeError, crypto.CryptoError) as exc:
        raise Rejected("malformed", str(exc)) from None
    try:
        (res,) = bank.process_transactions([raw])
    except BlockError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    if res.error is not None:
        raise Rejected(res.error.split(":")[0], res.error)
    changed = {k: bank.auction_accounts[k] for k in bank.auction_modified}
    extra: dict[str, Any] = {}
    if handler in POOL_HANDLERS:  # the work credit settlement booked (core/work.py layout)
        extra["work_accounts"] = {crypto.encode_address(k): bank.work_accounts[k].hex()
                                  for k in sorted(bank.work_modified)}
    return extra | {
        "accounts": [[crypto.encode_address(k), n] for k, n in sorted(bank.accounts.items())],
        "auction_accounts": [[crypto.encode_address(k), d.hex()] for k, d in sorted(bank.auction_accounts.items())],
        "changed": {crypto.encode_address(k): account_json(A.decode_account(d)) for k, d in sorted(changed.items())},
        "auction_delta_hash": auction_delta_hash(changed).hex(),
    }


def cases() -> list[Case]:
    out: list[Case] = []
    m0, m1, m2 = MINERS[:3]

    def case(handler: str, name: str, desc: str, chain: Chain, raw: bytes, slot: int | None = None) -> None:
        out.append(case_from_run(run, handler, name, chain.input_json(raw, slot, pool=handler in POOL_HANDLERS,
                                                                      timed=handler == "request"),
                                 desc, "input.json"))

    def js(obj: Any) -> bytes:
        return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()

    # bid commitments
    q0 = A.query_address(REQUESTER.pubkey, 1)
    out.append(case_from_run(run, "bid-commitment", "price-1000", js({
        "query": crypto.encode_address(q0), "bidder": crypto.encode_address(m0.pubkey),
        "salt": salt_for(m0).hex(), "price": 1000}), "the commitment of price 1000 with a 32-byte salt", "input.json"))

    # register_miner
    c = Chain()
    case("register_miner", "registers", "a key registers as a miner: its miner account is created", c,
         T.register_miner_transaction(m0, c.blockhash))
    c.register(m0, m1, m2)
    case("register_miner", "twice", "a second registration: must reject", c,
         T.register_miner_transaction(m0, c.blockhash))
    case("register_miner", "unsigned", "the miner is not a signer (someone else pays): must reject", c,
         T.auction_transaction([OUTSIDER], [(MINERS[3].pubkey, False, True), (A.miner_address(MINERS[3].pubkey),
                                                                               False, True)],
                               A.register_miner_data(), c.blockhash))
    case("register_miner", "wrong-address", "the miner account is not the miner's derived address: must reject", c,
         T.auction_transaction([MINERS[3]], [(MINERS[3].pubkey, True, True), (A.miner_address(m0.pubkey), False, True)],
                               A.register_miner_data(), c.blockhash))

    # request
    p = request_params()
    case("request", "opens", "a request escrows max_price*max_tokens + the query fee: the query is OPEN", c,
         T.request_transaction(REQUESTER, p, c.blockhash))
    poor = Chain({REQUESTER.pubkey: 60_000})
    case("request", "insufficient-funds", "the requester cannot cover the escrow: must reject", poor,
         T.request_transaction(REQUESTER, p, poor.blockhash))
    for name, over, desc in (
        ("zero-output-tokens", {"max_output_tokens": 0}, "max_output_tokens 0"),
        ("too-many-output-tokens", {"max_output_tokens": 4097}, "max_output_tokens above 4096"),
        ("zero-prompt", {"prompt_tokens": 0}, "an empty prompt"),
        ("zero-price", {"max_price_per_token": 0}, "max_price_per_token 0"),
        ("hot", {"temp_milli": 10_001}, "temperature above 10.0"),
        ("short-deadline", {"deadline_slots": 23}, "a deadline inside the auction windows + MIN_SERVE_MS "
         "(24 slots of 800 ms)"),
        ("long-deadline", {"deadline_slots": A.MAX_DEADLINE_SLOTS + 1}, "a deadline beyond MAX_DEADLINE_SLOTS"),
        ("overflow", {"max_price_per_token": 1 << 62}, "max_price*max_tokens beyond u64"),
    ):
        case("request", name, f"{desc}: must reject", c, T.request_transaction(REQUESTER, request_params(**over),
                                                                                 c.blockhash))
    fast = Chain(slot_duration_us=400_000)
    case("request", "opens-400ms", "at 400 ms slots the 6.4 s windows are 16 slots: commit_end = slot + 16, "
         "reveal_end = slot + 32", fast, T.request_transaction(REQUESTER, request_params(deadline_slots=48),
                                                                fast.blockhash))
    case("request", "short-deadline-400ms", "deadline_slots 47 at 400 ms slots (the windows + MIN_SERVE_MS are "
         "48 slots): must reject", fast, T.request_transaction(REQUESTER, request_params(deadline_slots=47),
                                                               fast.blockhash))
    odd = Chain(slot_duration_us=650_000)
    case("request", "opens-650ms", "at 650 ms slots a 6.4 s window is ceil(6400/650) = 10 slots", odd,
         T.request_transaction(REQUESTER, p, odd.blockhash))
    case("request", "bad-data", "request data one byte short: must reject", c,
         T.auction_transaction([REQUESTER], [(REQUESTER.pubkey, True, True), (q0, False, True)],
                               A.request_data(p)[:-1], c.blockhash))
    case("request", "unknown-instruction", "instruction tag 99: must reject", c,
         T.auction_transaction([REQUESTER], [(REQUESTER.pubkey, True, True)], (99).to_bytes(4, "little"),
                               c.blockhash))
    case("request", "wrong-address", "the query account is not the derived address of requester and nonce: "
         "must reject", c, T.auction_transaction([REQUESTER], [(REQUESTER.pubkey, True, True),
                                                               (A.query_address(REQUESTER.pubkey, 2), False, True)],
                                                 A.request_data(p), c.blockhash))
    q = c.request(p)
    r_slot = c.bank.slot
    case("request", "query-exists", "the same nonce again: must reject", c,
         T.request_transaction(REQUESTER, p, c.blockhash))

    # commit_bid (the commit window is slots r_slot .. r_slot+7)
    case("commit_bid", "commits", "a registered miner commits a sealed bid and locks its bond", c,
         T.commit_bid_transaction(m0, q, 700, salt_for(m0), c.blockhash))
    case("commit_bid", "last-commit-slot", "a commit in the last slot of the commit window", c,
         T.commit_bid_transaction(m0, q, 700, salt_for(m0), c.blockhash), slot=r_slot + WINDOWS.commit_slots - 1)
    case("commit_bid", "not-miner", "a key without a miner account bids: must reject", c,
         T.commit_bid_transaction(OUTSIDER, q, 700, salt_for(OUTSIDER), c.blockhash))
    case("commit_bid", "late", "a commit at commit_end: must reject", c,
         T.commit_bid_transaction(m0, q, 700, salt_for(m0), c.blockhash), slot=r_slot + WINDOWS.commit_slots)
    case("commit_bid", "no-query", "a bid on an address holding no query: must reject", c,
         T.commit_bid_transaction(m0, A.query_address(REQUESTER.pubkey, 9), 700, salt_for(m0), c.blockhash))
    case("commit_bid", "unsigned", "the bidder does not sign (another key pays): must reject", c,
         T.auction_transaction([OUTSIDER], [(m0.pubkey, False, True), (q, False, True),
                                            (A.bid_address(q, m0.pubkey), False, True),
                                            (A.miner_address(m0.pubkey), False, False)],
                               A.commit_bid_data(bytes(32)), c.blockhash))
    case("commit_bid", "readonly-bid", "the bid account is passed read-only: must reject", c,
         T.auction_transaction([m0], [(m0.pubkey, True, True), (q, False, True),
                                      (A.bid_address(q, m0.pubkey), False, False),
                                      (A.miner_address(m0.pubkey), False, False)],
                               A.commit_bid_data(bytes(32)), c.blockhash))
    broke = Chain({REQUESTER.pubkey: FUNDS, m0.pubkey: 70_000})
    broke.register(m0)
    bq = broke.request()
    case("commit_bid", "insufficient-funds", "the bidder cannot cover the bond: must reject", broke,
         T.commit_bid_transaction(m0, bq, 700, salt_for(m0), broke.blockhash))
    full = Chain()
    full.register(*MINERS)
    fq = full.request()
    full.commit_bids(fq, [(m, 500 + i) for i, m in enumerate(MINERS[:A.MAX_BIDS_PER_QUERY])])
    case("commit_bid", "too-many-bids", f"a bid after {A.MAX_BIDS_PER_QUERY} bids: must reject", full,
         T.commit_bid_transaction(MINERS[-1], fq, 1, salt_for(MINERS[-1]), full.blockhash))

    weak_price = 650
    c.commit_bids(q, [(m0, 700), (m1, 600)])
    c.ok(T.commit_bid_transaction(m2, q, weak_price, m2.pubkey, c.blockhash))  # the prior art's weak default salt
    case("commit_bid", "twice", "a second bid by the same bidder: must reject", c,
         T.commit_bid_transaction(m0, q, 500, salt_for(m0, "again"), c.blockhash))

    # reveal_bid (the reveal window is commit_end .. reveal_end-1)
    ce, re_ = r_slot + WINDOWS.commit_slots, r_slot + WINDOWS.commit_slots + WINDOWS.reveal_slots
    reveal0 = T.reveal_bid_transaction(m0, q, 700, salt_for(m0), c.blockhash)
    case("reveal_bid", "reveals-first", "the first reveal: lowest price 700", c, reveal0, slot=ce)
    case("reveal_bid", "last-reveal-slot", "a reveal in the last slot of the reveal window", c, reveal0, slot=re_ - 1)
    case("reveal_bid", "early", "a reveal during the commit window: must reject", c, reveal0, slot=ce - 1)
    case("reveal_bid", "late", "a reveal at reveal_end: must reject", c, reveal0, slot=re_)
    case("reveal_bid", "wrong-salt", "the right price with another salt: must reject", c,
         T.reveal_bid_transaction(m0, q, 700, salt_for(m0, "other"), c.blockhash), slot=ce)
    case("reveal_bid", "wrong-price", "another price than committed: must reject", c,
         T.reveal_bid_transaction(m0, q, 699, salt_for(m0), c.blockhash), slot=ce)
    case("reveal_bid", "weak-salt", "a bid committed with the bidder's key as salt: must reject (it forfeits)", c,
         T.reveal_bid_transaction(m2, q, weak_price, m2.pubkey, c.blockhash), slot=ce)
    case("reveal_bid", "wrong-signer", "a miner without a bid on the query reveals another's price and salt: "
         "must reject", c, T.reveal_bid_transaction(MINERS[3], q, 700, salt_for(m0), c.blockhash), slot=ce)
    case("reveal_bid", "unsigned", "the bidder does not sign (another key pays): must reject", c,
         T.auction_transaction([OUTSIDER], [(m0.pubkey, False, True), (q, False, True),
                                            (A.bid_address(q, m0.pubkey), False, True)],
                               A.reveal_bid_data(700, salt_for(m0)), c.blockhash), slot=ce)
    hi = Chain()
    hi.register(m0)
    hq = hi.request()
    hi.commit_bids(hq, [(m0, 1_001)])
    case("reveal_bid", "above-max", "a committed price above max_price_per_token: must reject (it forfeits)", hi,
         T.reveal_bid_transaction(m0, hq, 1_001, salt_for(m0), hi.blockhash), slot=hi.query(hq).commit_end_slot)
    c.reveal_bids(q, [(m0, 700)])
    case("reveal_bid", "reveals-lower", "a lower reveal: it leads, the first becomes the second price", c,
         T.reveal_bid_transaction(m1, q, 600, salt_for(m1), c.blockhash))
    case("reveal_bid", "twice", "a second reveal of a revealed bid: must reject", c,
         T.reveal_bid_transaction(m0, q, 700, salt_for(m0), c.blockhash))
    c.reveal_bids(q, [(m1, 600)])

    # close_auction
    case("close_auction", "early", "a close inside the reveal window: must reject", c, c.close_tx(q), slot=re_ - 1)
    case("close_auction", "awards", "m1 (600) wins at the second price 700; m0's bond back; m2 (unrevealed) "
         "forfeits to the incinerator", c, c.close_tx(q), slot=re_)
    case("close_auction", "after-deadline", "a close only at the deadline: nobody can serve, the requester and "
         "revealed bidders are refunded, the unrevealed bond forfeits", c, c.close_tx(q), slot=r_slot + 48)
    case("close_auction", "missing-bid", "a close that leaves out a bid: must reject", c,
         T.close_auction_transaction(OUTSIDER, q, REQUESTER.pubkey, [m0.pubkey, m1.pubkey], c.blockhash), slot=re_)
    case("close_auction", "wrong-requester", "a close that names another requester: must reject", c,
         T.close_auction_transaction(OUTSIDER, q, OUTSIDER.pubkey, c.bidders(q), c.blockhash), slot=re_)
    one = Chain()
    one.register(m0)
    oq = one.request()
    one.commit_bids(oq, [(m0, 300)])
    one.reveal_bids(oq, [(m0, 300)])
    case("close_auction", "single-bid", "one revealed bid wins at the requester's maximum price", one,
         one.close_tx(oq), slot=one.query(oq).reveal_end_slot)
    none = Chain()
    nq = none.request()
    case("close_auction", "no-bids", "no bids: the requester gets the whole escrow back", none, none.close_tx(nq),
         slot=none.query(nq).reveal_end_slot)
    case("close_auction", "no-query", "a close of an address holding no query: must reject", none,
         T.close_auction_transaction(OUTSIDER, A.query_address(REQUESTER.pubkey, 5), REQUESTER.pubkey, [],
                                     none.blockhash), slot=none.query(nq).reveal_end_slot)
    c.close(q)
    case("close_auction", "twice", "a second close: must reject", c, c.close_tx(q))
    case("commit_bid", "after-close", "a bid on an awarded query: must reject", c,
         T.commit_bid_transaction(MINERS[3], q, 1, salt_for(MINERS[3]), c.blockhash))

    # post_result (deadline = r_slot + 48)
    deadline = c.query(q).deadline_slot
    case("post_result", "posts", "the winner posts output hash, token count and its PoL commitment", c,
         c.post_tx(q, m1))
    case("post_result", "last-slot", "a post in the last slot before the deadline", c, c.post_tx(q, m1),
         slot=deadline - 1)
    case("post_result", "not-winner", "a losing bidder posts a result: must reject", c, c.post_tx(q, m0))
    case("post_result", "late", "a post at the deadline: must reject", c, c.post_tx(q, m1), slot=deadline)
    case("post_result", "too-many-tokens", "more tokens than max_output_tokens: must reject", c,
         c.post_tx(q, m1, num_tokens=65))
    case("post_result", "bad-tier", "an unknown precision tier: must reject", c, c.post_tx(q, m1, tier=9))
    other = dataclasses.replace(c.query(q), prompt_hash=bytes(32))
    wrong = T.sign_result(m1, other, output_hash=bytes(32), num_tokens=40, tier=int(Tier.FP32), top_k=TOP_K,
                          vocab=50_257, pol_root=bytes(32))
    case("post_result", "commitment-for-another-prompt", "a PoL commitment signed over another prompt hash: "
         "must reject", c, T.post_result_transaction(m1, q, wrong, c.blockhash))
    case("post_result", "before-close", "a post on a query still OPEN: must reject", one, one.post_tx(oq, m0))

    # expire
    case("expire", "expires", "the winner missed the deadline: the requester gets the whole escrow, the "
         "winner's bond goes to the incinerator", c, c.expire_tx(q), slot=deadline)
    case("expire", "early", "an expire before the deadline: must reject", c, c.expire_tx(q), slot=deadline - 1)
    case("expire", "wrong-requester", "an expire that pays another account: must reject", c,
         T.expire_transaction(OUTSIDER, q, OUTSIDER.pubkey, m1.pubkey, c.blockhash), slot=deadline)
    c.ok(c.post_tx(q, m1))
    case("expire", "after-result", "an expire after the result was posted: must reject", c, c.expire_tx(q),
         slot=deadline)
    case("post_result", "twice", "a second post: must reject", c, c.post_tx(q, m1))
    pool_cases(out)
    route_cases(out)
    return out


# ---------------------------------------------------------------------------------------
# The Logit Pool (spec/logit_pool.md): verdict and settle
# ---------------------------------------------------------------------------------------
VALIDATORS = [crypto.Keypair.deterministic("vectors/auction/validator", i) for i in range(8)]
POOL_TOKENS = 40
POOL_CLEARING = 700


#: the position a ``cheat_at`` proof's greedy token is not the committed argmax
CHEAT_POSITION = 7


def pool_proof(miner: crypto.Keypair, q: A.QueryAccount, tokens: int = POOL_TOKENS,
               cheat_at: int | None = None) -> P.PolProof:
    """A PoL proof bound to ``q`` (its model, prompt hash, sampling) over ``tokens``
    synthetic fingerprints: the program checks commitments and Merkle paths, never the model.
    ``cheat_at``: at that position the emitted token is none of the committed candidates (a
    leaf that contradicts itself, whatever the temperature)."""
    out = [100 + i for i in range(tokens)]
    fps = [P.LogitFingerprint(pos=i, tok=out[i], ids=(out[i], *range(1, P.TOP_K)),
                              lps=(0, *range(10, 10 * P.TOP_K, 10))) for i in range(tokens)]
    if cheat_at is not None:
        out[cheat_at] = 999
        fps[cheat_at] = dataclasses.replace(fps[cheat_at], tok=999)
    proof = P.commit(miner, model_id=q.model_id, tier=P.Tier.FP32, vocab=50_257, top_k=P.TOP_K,
                     temp_milli=q.temp_milli, sample_seed=q.sample_seed, prompt=[1, 2, 3], output=out, fps=fps)
    cmt = dataclasses.replace(proof.commitment, prompt_hash=q.prompt_hash, signature=crypto.ZERO_SIGNATURE)
    return dataclasses.replace(proof, commitment=sign_message(cmt, miner, "pol-commitment"))


def unavailable_cases(case: Any) -> None:
    """Verdicts that the answer or its openings could not be obtained (spec/logit_pool.md
    "Unavailable data"): two voters besides the miner, so both are drawn and nobody is left
    for the extension."""
    u = PoolChain(n_validators=2)
    u.advance(L.DRAW_DELAY_SLOTS + 1)
    d = u.draw()
    assert d is not None and len(d.validators) == 2
    a, b = u.kp(d.validators[0]), u.kp(d.validators[1])
    case("verdict", "unavailable", "a drawn validator that could not obtain the answer or its openings says so "
         "(verdict byte 2, no evidence): recorded as 3 in the pool account", u,
         T.verdict_transaction(a, u.qid, False, None, u.blockhash, unavailable=True))
    case("verdict", "unavailable-with-evidence", "an unavailable verdict that carries evidence: must reject", u,
         T.auction_transaction([a], [(a.pubkey, True, True), (u.qid, False, True), (L.pool_address(u.qid), False, True)],
                               L.unavailable_data() + encode(u.evidence(a.pubkey)), u.blockhash))
    case("verdict", "unknown-verdict-byte", "a verdict byte of 3: must reject", u,
         T.auction_transaction([a], [(a.pubkey, True, True), (u.qid, False, True), (L.pool_address(u.qid), False, True)],
                               L.unavailable_data()[:4] + b"\x03", u.blockhash))
    one = PoolChain(n_validators=2)
    one.advance(L.DRAW_DELAY_SLOTS + 1)
    d1 = one.draw()
    assert d1 is not None
    one.ok(T.verdict_transaction(one.kp(d1.validators[0]), one.qid, False, None, one.blockhash, unavailable=True))
    u.ok(T.verdict_transaction(a, u.qid, False, None, u.blockhash, unavailable=True),
         T.verdict_transaction(b, u.qid, False, None, u.blockhash, unavailable=True))
    case("settle", "unavailable-window-open", "two unavailable verdicts decide nothing before verify_end_slot: "
         "must reject", u, u.settle_tx())
    u.advance_to(d.verify_end_slot + 1)
    case("settle", "unavailable", "a quorum of unavailable verdicts and no accept or reject, nobody fresh to draw: "
         "the requester gets the whole escrow, the bond goes to the incinerator (bid SLASHED), the miner's work is "
         "slashed (result-unavailable), FINALIZED_REJECTED", u, u.settle_tx())
    one.advance_to(d1.verify_end_slot + 1)
    case("settle", "one-unavailable", "one unavailable verdict (no quorum), the other validator absent: the "
         "requester and the winner are refunded as when nobody checked, the absent validator loses its work credit",
         one, one.settle_tx())


def lost_beacon_cases(case: Any) -> None:
    """A posted result nobody drew while its beacon was known (spec/logit_pool.md "Lost
    beacons"): a settle then finds nobody drawn and no extension, and refunds as when nobody
    checked; a draw already written goes on with its validators."""
    c = PoolChain(n_validators=3)
    q = c.query(c.qid)
    after = q.result_slot + L.DRAW_DELAY_SLOTS
    # every slot here is frozen, so the blockhash stays known a few slots past BEACON_LOST_SLOTS
    c.advance_to(after + L.BEACON_LOST_SLOTS + 5)
    case("settle", "beacon-lost-refunds", "round 0's beacon is lost before anyone drew: nobody checked the answer: "
         "the requester gets the whole escrow, the winner its bond, FINALIZED_REJECTED", c,
         T.settle_transaction(OUTSIDER, q, c.qid, [], c.blockhash))
    case("settle", "beacon-lost-lists-nobody", "a settle of a query whose round-0 beacon is lost that lists "
         "validators: must reject", c, T.settle_transaction(OUTSIDER, q, c.qid, [VALIDATORS[0].pubkey], c.blockhash))


class PoolChain(Chain):
    """A chain with one posted result (MINERS[0] won at POOL_CLEARING against MINERS[1]) and
    ``n_validators`` validators whose votes landed (the miner's too: it is excluded)."""

    def __init__(self, n_validators: int = 5, lstake: dict[bytes, int] | None = None,
                 cheat_at: int | None = None, knobs: tuple[int, int] | None = None) -> None:
        funded = {k.pubkey: FUNDS for k in [REQUESTER, OUTSIDER, *MINERS, *VALIDATORS]}
        super().__init__(funded)
        self.lstake = dict(lstake or {})
        self.miner = MINERS[0]
        self.register(MINERS[0], MINERS[1])
        self.qid = self.request(request_params(max_price_per_token=1_000))
        self.commit_bids(self.qid, [(MINERS[0], 500), (MINERS[1], POOL_CLEARING)])
        self.reveal_bids(self.qid, [(MINERS[0], 500), (MINERS[1], POOL_CLEARING)])
        self.close(self.qid)
        self.proof = pool_proof(self.miner, self.query(self.qid), cheat_at=cheat_at)
        c = self.proof.commitment
        r = T.sign_result(self.miner, self.query(self.qid), output_hash=c.output_hash, num_tokens=c.num_tokens,
                          tier=c.tier, top_k=c.top_k, vocab=c.vocab, pol_root=c.root)
        self.ok(T.post_result_transaction(self.miner, self.qid, r, self.blockhash))
        for v in VALIDATORS[:n_validators]:  # the validator role: a landed vote (state given, as a snapshot)
            self.bank.last_votes[v.pubkey] = self.bank.slot - 1
        self.bank.last_votes[self.miner.pubkey] = self.bank.slot - 1
        if knobs is not None:  # dynamic difficulty in force (state given, as a snapshot)
            self.bank.auction_accounts[L.difficulty_address()] = L.DifficultyAccount(
                Difficulty(*knobs), self.bank.epoch).pack()
        self.start_total = self.total()

    def draw(self) -> L.PoolAccount | None:
        return L.draw_of(pool_view(self.bank), self.query(self.qid), self.qid)

    def advance(self, n: int = 1) -> None:
        for _ in range(n):
            self.ok()

    def advance_to(self, slot: int) -> None:
        """Freeze empty slots until the next slot is ``slot``."""
        while self.bank.slot + 1 < slot:
            self.ok()

    @staticmethod
    def kp(pub: bytes) -> crypto.Keypair:
        return next(v for v in VALIDATORS if v.pubkey == pub)

    def verdict_tx(self, v: crypto.Keypair, accept: bool, evidence: P.PolOpening | None = None) -> bytes:
        return T.verdict_transaction(v, self.qid, accept, evidence, self.blockhash)

    def verdict(self, v: crypto.Keypair, accept: bool, evidence: P.PolOpening | None = None) -> str | None:
        (r,) = self.send(self.verdict_tx(v, accept, evidence))
        return r.error

    def evidence(self, v: bytes, which: int = 0) -> P.PolOpening:
        """An opening at one of ``v``'s drawn positions (a real one: its Merkle path holds)."""
        d = self.draw()
        assert d is not None
        pos = d.positions_of(self.query(self.qid), d.validators.index(v))
        return P.open_positions(self.proof, [pos[which]])[0]

    def settle_tx(self, drawn: Sequence[bytes] | None = None) -> bytes:
        d = self.draw()
        assert d is not None
        return T.settle_transaction(OUTSIDER, self.query(self.qid), self.qid,
                                    d.validators if drawn is None else drawn, self.blockhash)

    def settle(self) -> str | None:
        (r,) = self.send(self.settle_tx())
        return r.error

    # -- retrospective slashing ------------------------------------------------------------
    def verify_by(self, *accepting: int) -> list[crypto.Keypair]:
        """Advance to the draw, let the drawn validators at ``accepting`` (draw order) accept
        and settle verified; the three drawn validators' keys in draw order."""
        self.advance(L.DRAW_DELAY_SLOTS + 1)
        d = self.draw()
        assert d is not None
        for i in accepting:
            self.ok(self.verdict_tx(self.kp(d.validators[i]), True))
        self.ok(self.settle_tx())
        return [self.kp(v) for v in d.validators]

    def opening(self, pos: int) -> P.PolOpening:
        return P.open_positions(self.proof, [pos])[0]

    def challenge_tx(self, who: crypto.Keypair, evidence: P.PolOpening) -> bytes:
        return T.challenge_transaction(who, self.query(self.qid), self.qid, evidence, self.blockhash)

    def jury(self) -> L.DisputeAccount | None:
        return L.jury_of(pool_view(self.bank), self.query(self.qid), self.qid)

    def ruling_tx(self, juror: bytes, fraud: bool) -> bytes:
        return T.ruling_transaction(self.kp(juror), self.qid, fraud, self.blockhash)

    def close_dispute_tx(self) -> bytes:
        j = self.jury()
        parties = [j.challenger, *j.jurors] if j is not None and j.state == L.OPEN else []
        return T.close_transaction(OUTSIDER, self.query(self.qid), self.qid, parties, self.blockhash)


def pool_cases(out: list[Case]) -> None:
    def case(handler: str, name: str, desc: str, chain: Chain, raw: bytes, slot: int | None = None) -> None:
        out.append(case_from_run(run, handler, name, chain.input_json(raw, slot, pool=True), desc, "input.json"))

    weights = {v.pubkey: 10 * (i + 1) for i, v in enumerate(VALIDATORS[:6])}
    c = PoolChain(n_validators=6, lstake=weights)
    early = c.verdict_tx(VALIDATORS[0], True)
    case("verdict", "draw-not-ready", "a verdict before the beacon slot is an ancestor: must reject", c, early)
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    d = c.draw()
    assert d is not None
    v0, v1, v2 = (c.kp(x) for x in d.validators[:3])
    outsider = next(v for v in VALIDATORS[:6] if v.pubkey not in d.validators)
    case("verdict", "accepts", "the first verdict draws 3 of 6 voters LStake-weighted (miner excluded) into the "
         "pool account and records an accept", c, c.verdict_tx(v0, True))
    case("verdict", "rejects-with-evidence", "a reject carrying an opening at one of the validator's positions "
         "whose Merkle path holds", c, c.verdict_tx(v0, False, c.evidence(v0.pubkey)))
    case("verdict", "not-drawn", "a voter that was not drawn: must reject", c, c.verdict_tx(outsider, True))
    q = c.query(c.qid)
    off = next(p for p in range(POOL_TOKENS) if p not in L.positions_for(q, d.beacon, v0.pubkey))
    case("verdict", "evidence-off-position", "evidence at a position this validator was not drawn to open: "
         "must reject", c, c.verdict_tx(v0, False, P.open_positions(c.proof, [off])[0]))
    good = c.evidence(v0.pubkey)
    forged = dataclasses.replace(good, fp=dataclasses.replace(good.fp, lps=(1, *good.fp.lps[1:])))
    case("verdict", "evidence-forged", "evidence whose fingerprint is not the committed leaf: must reject", c,
         c.verdict_tx(v0, False, forged))
    case("verdict", "evidence-garbage", "a reject whose evidence is no PolOpening: must reject", c,
         T.auction_transaction([v0], [(v0.pubkey, True, True), (c.qid, False, True),
                                      (L.pool_address(c.qid), False, True)],
                               L.verdict_data(False)[:5] + b"\x01\x02", c.blockhash))
    case("verdict", "accept-with-evidence", "an accept that carries evidence: must reject", c,
         T.auction_transaction([v0], [(v0.pubkey, True, True), (c.qid, False, True),
                                      (L.pool_address(c.qid), False, True)],
                               L.verdict_data(True) + b"\x00", c.blockhash))
    case("verdict", "unsigned", "the validator does not sign (another key pays): must reject", c,
         T.auction_transaction([OUTSIDER], [(v0.pubkey, False, True), (c.qid, False, True),
                                            (L.pool_address(c.qid), False, True)], L.verdict_data(True), c.blockhash))
    case("verdict", "wrong-pool", "the pool account is not the query's derived address: must reject", c,
         T.auction_transaction([v0], [(v0.pubkey, True, True), (c.qid, False, True),
                                      (L.pool_address(MINERS[5].pubkey), False, True)], L.verdict_data(True),
                               c.blockhash))
    case("verdict", "closed", "a verdict at verify_end_slot: must reject", c, c.verdict_tx(v0, True),
         slot=d.verify_end_slot)
    case("settle", "verify-open", "a settle without a quorum inside the window: must reject", c, c.settle_tx())
    c.ok(c.verdict_tx(v0, True))
    case("verdict", "twice", "a second verdict by the same validator: must reject", c, c.verdict_tx(v0, False,
                                                                                                 c.evidence(v0.pubkey)))
    c.ok(c.verdict_tx(v1, True))
    case("settle", "verified", "two accepts: the winner gets clearing price x tokens and its bond, the accepting "
         "validators the query fee, the requester the rest", c, c.settle_tx())
    case("settle", "wrong-list", "a settle that lists the drawn validators out of order: must reject", c,
         c.settle_tx(list(reversed(d.validators))))
    case("settle", "wrong-winner-bid", "a settle naming another bid account: must reject", c,
         T.auction_transaction([OUTSIDER], [(c.qid, False, True), (L.pool_address(c.qid), False, True),
                                            (q.requester, False, True), (q.winner, False, True),
                                            (A.bid_address(c.qid, MINERS[1].pubkey), False, True),
                                            (A.INCINERATOR_ID, False, True), (L.difficulty_address(), False, True),
                                            *((x, False, True) for x in d.validators)],
                               L.settle_data(), c.blockhash))
    c.ok(c.settle_tx())
    case("settle", "twice", "a second settle: must reject", c, c.settle_tx())
    case("verdict", "after-settle", "a verdict on a settled query: must reject", c, c.verdict_tx(v2, True))

    r = PoolChain(n_validators=6, lstake=weights)
    r.advance(L.DRAW_DELAY_SLOTS + 1)
    d = r.draw()
    assert d is not None
    r.ok(r.verdict_tx(r.kp(d.validators[0]), False, r.evidence(d.validators[0])))
    r.ok(r.verdict_tx(r.kp(d.validators[1]), False, r.evidence(d.validators[1])))
    r.ok(r.verdict_tx(r.kp(d.validators[2]), True))
    case("settle", "rejected", "two rejects with evidence beat one accept: the bond is slashed (half to the "
         "requester, half to the rejecting validators), the requester refunded, the fee to the rejecters", r,
         r.settle_tx())

    x = PoolChain(n_validators=6, lstake=weights)
    x.advance(L.DRAW_DELAY_SLOTS + 1)
    d = x.draw()
    assert d is not None
    x.ok(x.verdict_tx(x.kp(d.validators[0]), True))
    case("settle", "draw-not-ready", "a settle at verify_end_slot, whose extension beacon is not an ancestor yet: "
         "must reject", x, x.settle_tx(), slot=d.verify_end_slot)
    x.advance_to(d.verify_end_slot + 1)
    case("settle", "extends", "one verdict by verify_end_slot: the draw is extended to 3 fresh validators "
         "(absent ones lose work credit)", x, x.settle_tx())
    x.ok(x.settle_tx())
    d2 = x.draw()
    assert d2 is not None
    case("verdict", "old-round", "a round-0 validator after the extension: must reject", x,
         x.verdict_tx(x.kp(d.validators[1]), True))
    case("verdict", "extension-accepts", "a validator of the extension accepts", x,
         x.verdict_tx(x.kp(d2.validators[3]), True))
    x.advance_to(d2.verify_end_slot)
    case("settle", "settles-on-what-arrived", "after the extension's window one accept (of 6 drawn) settles "
         "verified", x, x.settle_tx())

    late = PoolChain(n_validators=6, lstake=weights)
    late.advance(L.DRAW_DELAY_SLOTS + 1)
    d = late.draw()
    assert d is not None
    late.ok(late.verdict_tx(late.kp(d.validators[0]), True))
    late_slot = d.verify_end_slot + 2 * L.VERIFY_WINDOW_SLOTS
    late.advance_to(late_slot)
    case("settle", "extends-late", "the extension drawn by a settle landing two windows after verify_end_slot: "
         "its beacon is still the first slot at or after verify_end_slot, its window counts from the settle's "
         "slot (verify_end_slot = settle slot + VERIFY_WINDOW_SLOTS)", late, late.settle_tx())
    late.ok(late.settle_tx())
    d2 = late.draw()
    assert d2 is not None and d2.verify_end_slot == late_slot + L.VERIFY_WINDOW_SLOTS > d2.beacon_slot + \
        L.VERIFY_WINDOW_SLOTS
    case("verdict", "extension-late-window", "a validator of a late extension accepts after its beacon slot + "
         "VERIFY_WINDOW_SLOTS, inside its own window", late, late.verdict_tx(late.kp(d2.validators[3]), True),
         slot=d2.verify_end_slot - 1)
    case("settle", "extension-late-open", "a settle before the late extension's own window ends (but after its "
         "beacon slot + VERIFY_WINDOW_SLOTS): must reject", late, late.settle_tx(), slot=d2.verify_end_slot - 1)

    n = PoolChain(n_validators=0)
    n.advance(L.DRAW_DELAY_SLOTS + 1)
    d = n.draw()
    assert d is not None and not d.validators
    n.advance_to(d.verify_end_slot + 1)
    case("settle", "nobody-to-draw", "no identity has the validator role: after the window nobody checked the "
         "answer: the requester gets the whole escrow, the winner its bond, FINALIZED_REJECTED", n, n.settle_tx())
    unavailable_cases(case)
    lost_beacon_cases(case)
    retro_cases(out)

    # dynamic difficulty in force: 16 positions, 4 validators per round (quorum 3)
    k = PoolChain(n_validators=6, lstake=weights, knobs=(16, 4))
    k.advance(L.DRAW_DELAY_SLOTS + 1)
    d = k.draw()
    assert d is not None and len(d.validators) == 4 and d.positions == 16 and d.quorum == 3
    case("verdict", "difficulty-draw", "with a difficulty account of 16 positions x 4 validators in force, the first "
         "verdict draws 4 validators opening 16 positions each", k, k.verdict_tx(k.kp(d.validators[0]), True))
    k.ok(k.verdict_tx(k.kp(d.validators[0]), True), k.verdict_tx(k.kp(d.validators[1]), True))
    case("settle", "difficulty-quorum", "two accepts of 4 drawn are no quorum (3): must reject", k, k.settle_tx())
    k.ok(k.verdict_tx(k.kp(d.validators[2]), True))
    case("settle", "difficulty-verified", "three accepts of 4 drawn: verified; the epoch's observation counts the "
         "result and 4 draws", k, k.settle_tx())


def retro_cases(out: list[Case]) -> None:
    """Retrospective slashing (spec/logit_pool.md "Retrospective slashing")."""
    def case(handler: str, name: str, desc: str, chain: Chain, raw: bytes, slot: int | None = None) -> None:
        out.append(case_from_run(run, handler, name, chain.input_json(raw, slot, pool=True), desc, "input.json"))

    weights = {v.pubkey: 10 * (i + 1) for i, v in enumerate(VALIDATORS[:6])}
    # a self-contradicting leaf, accepted by two colluders: the program convicts alone
    s = PoolChain(n_validators=6, lstake=weights, cheat_at=CHEAT_POSITION)
    v0, _, v2 = s.verify_by(0, 1)
    pool = L.load_pool(pool_view(s.bank), L.pool_address(s.qid))
    assert pool is not None
    bad = s.opening(CHEAT_POSITION)
    case("close", "window-open", "a release of the held bond inside the challenge window: must reject", s,
         s.close_dispute_tx())
    case("challenge", "by-accepter", "a validator that accepted challenges: must reject", s, s.challenge_tx(v0, bad))
    case("challenge", "by-winner", "the miner challenges its own result: must reject", s,
         s.challenge_tx(s.miner, bad))
    forged = dataclasses.replace(bad, fp=dataclasses.replace(bad.fp, tok=3))
    case("challenge", "evidence-forged", "evidence whose leaf is not the committed one: must reject", s,
         s.challenge_tx(v2, forged))
    case("challenge", "evidence-garbage", "evidence that is no PolOpening: must reject", s,
         T.auction_transaction([v2], [(v2.pubkey, True, True), (s.qid, False, True),
                                      (L.pool_address(s.qid), False, True),
                                      (A.bid_address(s.qid, s.miner.pubkey), False, True),
                                      (L.dispute_address(s.qid), False, True), (REQUESTER.pubkey, False, True),
                                      (L.difficulty_address(), False, True)],
                               struct.pack("<I", L.TAG_CHALLENGE) + b"\x01\x02", s.blockhash))
    case("challenge", "self-contradiction", "an outsider proves from the miner's own signed leaf that the "
         "emitted token is none of the committed candidates: upheld at once, the held bond split between the requester and "
         "the challenger, the query FINALIZED_REJECTED, the miner and both accepters slashed", s,
         s.challenge_tx(OUTSIDER, bad))
    case("challenge", "closed", "a fraud proof at the window's end: must reject", s, s.challenge_tx(OUTSIDER, bad),
         slot=pool.settled_slot + L.CHALLENGE_WINDOW_SLOTS)
    s.ok(s.challenge_tx(OUTSIDER, bad))
    case("challenge", "after-upheld", "a second challenge after the fraud was upheld: must reject", s,
         s.challenge_tx(v2, bad))

    # a model fault (consistent leaves): a jury drawn after the challenge decides
    m = PoolChain(n_validators=6, lstake=weights)
    _, _, v2 = m.verify_by(0, 1)
    ok_leaf = m.opening(3)
    case("ruling", "no-dispute", "a ruling while no dispute is open: must reject", m,
         m.ruling_tx(VALIDATORS[5].pubkey, True))
    case("challenge", "model-fault", "a consistent leaf the challenger says the model does not produce: the "
         "challenge bond is held and a dispute opened for a jury", m, m.challenge_tx(v2, ok_leaf))
    m.ok(m.challenge_tx(v2, ok_leaf))
    case("challenge", "dispute-open", "a second challenge while a dispute is open: must reject", m,
         m.challenge_tx(OUTSIDER, ok_leaf))
    case("ruling", "draw-not-ready", "a ruling before the jury beacon is an ancestor: must reject", m,
         m.ruling_tx(VALIDATORS[5].pubkey, True))
    m.advance(L.DRAW_DELAY_SLOTS + 1)
    j = m.jury()
    assert j is not None and len(j.jurors) == 3 and v2.pubkey not in j.jurors
    outsider = next(v.pubkey for v in VALIDATORS[:6] if v.pubkey not in j.jurors)
    case("ruling", "not-drawn", "a ruling by a key not on the jury: must reject", m, m.ruling_tx(outsider, True))
    case("ruling", "fraud", "the first ruling draws the jury (LStake-weighted; the miner, the accepters and the "
         "challenger excluded) and records fraud", m, m.ruling_tx(j.jurors[0], True))
    case("ruling", "closed", "a ruling at judge_end_slot: must reject", m, m.ruling_tx(j.jurors[0], True),
         slot=j.judge_end_slot)
    m.ok(m.ruling_tx(j.jurors[0], True))
    case("ruling", "twice", "a second ruling by the same juror: must reject", m, m.ruling_tx(j.jurors[0], False))
    case("close", "verify-open", "a close with one ruling inside the jury window: must reject", m, m.close_dispute_tx())
    m.ok(m.ruling_tx(j.jurors[1], True))
    case("close", "upheld", "two fraud rulings: the challenge bond returns, the held bond is slashed to the "
         "requester and the challenger, the miner and both accepters slashed, the absent juror too", m, m.close_dispute_tx())
    case("close", "wrong-parties", "a close that lists the jurors before the challenger: must reject", m,
         T.close_transaction(OUTSIDER, m.query(m.qid), m.qid, [*j.jurors, j.challenger], m.blockhash))

    f = PoolChain(n_validators=6, lstake=weights)
    _, _, v2 = f.verify_by(0, 1)
    f.ok(f.challenge_tx(v2, f.opening(3)))
    f.advance(L.DRAW_DELAY_SLOTS + 1)
    j = f.jury()
    assert j is not None
    f.ok(f.ruling_tx(j.jurors[0], False), f.ruling_tx(j.jurors[1], False))
    case("close", "dismissed", "two no-fraud rulings: a false claim; the challenge bond goes to the miner, the "
         "challenger is slashed, the bond stays held", f, f.close_dispute_tx())
    f.ok(f.close_dispute_tx())
    pool = L.load_pool(pool_view(f.bank), L.pool_address(f.qid))
    assert pool is not None
    end = L.release_slot(pool, f.jury())
    case("close", "release-early", "a release before the window (and the dismissal's grace) ended: must reject", f,
         f.close_dispute_tx(), slot=end - 1)
    f.advance_to(end)
    case("close", "released", "the window is over with no open dispute: the bond returns to the miner", f,
         f.close_dispute_tx())

    g = PoolChain(n_validators=6, lstake=weights)
    g.verify_by(0, 1)
    g.ok(g.challenge_tx(OUTSIDER, g.opening(3)))
    g.advance(L.DRAW_DELAY_SLOTS + 1)
    j = g.jury()
    assert j is not None
    g.ok(g.ruling_tx(j.jurors[0], True), g.ruling_tx(j.jurors[1], False))
    g.advance_to(j.judge_end_slot)
    case("close", "lapsed", "no ruling quorum by judge_end_slot: the challenger gets its bond back, the absent "
         "juror is slashed, nobody else", g, g.close_dispute_tx())


# ---------------------------------------------------------------------------------------
# Sharded answers (spec/shard.md "Payment"): post_route and settle's split over the stages
# ---------------------------------------------------------------------------------------
STAGES = [crypto.Keypair.deterministic("vectors/auction/stage", i) for i in range(4)]
#: uneven ranges so the split has remainders (7, 12, 11 layers of 30)
ROUTE_RANGES = [(0, 7), (7, 19), (19, 30)]


class RouteChain(PoolChain):
    """A PoolChain whose posted result was served by a route of STAGES over ROUTE_RANGES."""

    def stage_cmts(self, ranges: Sequence[tuple[int, int]] = ROUTE_RANGES,
                   signers: Sequence[crypto.Keypair] | None = None) -> list[S.StageCommitment]:
        q = self.query(self.qid)
        total = ranges[-1][1]
        out = []
        for i, (a, b) in enumerate(ranges):
            kp = STAGES[i]
            cmt = S.StageCommitment(query=self.qid, model_id=q.model_id, start=a, end=b, total=total,
                                    tier=int(Tier.FP32), prompt_hash=q.prompt_hash, num_tokens=q.num_tokens,
                                    root=hashlib.sha256(b"stage-root" + bytes([i])).digest(), stage=kp.pubkey,
                                    signature=crypto.ZERO_SIGNATURE)
            out.append(sign_message(cmt, (signers or STAGES)[i], "stage-commitment"))
        return out

    def route_tx(self, cmts: Sequence[S.StageCommitment] | None = None, winner: crypto.Keypair | None = None) -> bytes:
        return T.post_route_transaction(winner or self.miner, self.qid, self.stage_cmts() if cmts is None else cmts,
                                        self.blockhash)

    def settle_tx(self, drawn: Sequence[bytes] | None = None, with_route: bool = True) -> bytes:
        d = self.draw()
        assert d is not None
        route = S.load_route(pool_view(self.bank), self.qid) if with_route else None
        return T.settle_transaction(OUTSIDER, self.query(self.qid), self.qid,
                                    d.validators if drawn is None else drawn, self.blockhash, route)


def route_cases(out: list[Case]) -> None:
    def case(handler: str, name: str, desc: str, chain: Chain, raw: bytes, slot: int | None = None) -> None:
        out.append(case_from_run(run, handler, name, chain.input_json(raw, slot, pool=handler in POOL_HANDLERS), desc, "input.json"))

    weights = {v.pubkey: 10 * (i + 1) for i, v in enumerate(VALIDATORS[:6])}
    c = RouteChain(n_validators=6, lstake=weights)
    case("post_route", "posts", "the winner names the 3-stage route (0:7, 7:19, 19:30) that served its posted "
         "result; each stage's signed commitment over this query verifies", c, c.route_tx())
    case("post_route", "not-winner", "another miner posts the route: must reject", c,
         c.route_tx(winner=MINERS[1]))
    gap = c.stage_cmts([(0, 7), (8, 19), (19, 30)])
    case("post_route", "gap", "stages 0:7 then 8:19 leave layer 7 out: must reject", c, c.route_tx(gap))
    forged = c.stage_cmts(signers=[STAGES[0], STAGES[3], STAGES[2]])
    case("post_route", "forged-stage", "a stage commitment signed by another key than the stage's: must reject", c,
         c.route_tx(forged))
    empty = T.auction_transaction([c.miner], [(c.miner.pubkey, True, True), (c.qid, False, False),
                                              (S.route_address(c.qid), False, True)],
                                  struct.pack("<IB", A.Instr.POST_ROUTE, 0), c.blockhash)
    case("post_route", "no-stages", "a route of no stages: must reject", c, empty)
    wrong = T.auction_transaction([c.miner], [(c.miner.pubkey, True, True), (c.qid, False, False),
                                              (S.route_address(MINERS[5].pubkey), False, True)],
                                  S.post_route_data(c.stage_cmts()), c.blockhash)
    case("post_route", "wrong-account", "the route account is not the query's derived address: must reject", c, wrong)
    c.ok(c.route_tx())
    case("post_route", "twice", "a second route for the same query: must reject", c, c.route_tx())
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    d = c.draw()
    assert d is not None
    c.ok(c.verdict_tx(c.kp(d.validators[0]), True), c.verdict_tx(c.kp(d.validators[1]), True))
    case("settle", "route-not-listed", "a settle of a sharded answer that omits the route account and stage keys: "
         "must reject", c, c.settle_tx(with_route=False))
    case("settle", "route-verified", "two accepts of a sharded answer: clearing price x tokens (28,000 lamports) "
         "split over the stages by layers x tokens: 6,533 / 11,200 / 10,267 (the leftover lamport to the largest "
         "remainder); LStake work 9 / 16 / 15 tokens", c, c.settle_tx())
    c.ok(c.settle_tx())
    case("post_route", "after-settle", "a route posted after settlement: must reject", c, c.route_tx())
