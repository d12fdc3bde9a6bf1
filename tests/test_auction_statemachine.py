"""Random instruction sequences through the real bank (spec/auction.md): valid and invalid
auction instructions, wrong signers, late and early ones, duplicated transactions. After
every step: no lamport created or lost (balances + escrow + bonds + burned fees, escrow and
bonds being balances of the program's accounts), every status move is a row of the table
with its slot condition, a failed instruction changed nothing but the fee, and the
instructions the table allows (a right reveal in the window, a close after it, ...) succeed.

Transactions go into an open (unfrozen) bank, several per slot as in a real block; the
``advance`` rule freezes it and opens a later slot, so sequences cross every window.
The default suite runs a few dozen sequences (seconds); ``-m slow`` runs 10,000."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from ambient_p2p.core import auction as A
from ambient_p2p.core import auction_tx as T
from ambient_p2p.core import crypto
from ambient_p2p.core import logit_pool as L
from ambient_p2p.core import pol as P
from ambient_p2p.core.bank import LAMPORTS_PER_SIGNATURE, BlockError, parse_transaction
from ambient_p2p.interop.formats import auction as F

MINERS = F.MINERS[:4]
ACTORS = [F.REQUESTER, F.OUTSIDER, *MINERS]
#: MINERS[3] is poor: a few fees and about one bond, so insufficient-funds paths run (for
#: the escrow, the bond and, once it is drained, the fee: a block error)
#: validators that never bid: with them a dispute's jury (the miner, the accepters and the
#: challenger excluded) can reach its quorum, so upheld and dismissed disputes run too
JURY = F.MINERS[4:7]
FUNDS = {**{k.pubkey: 10**9 for k in [*ACTORS, *JURY]}, MINERS[3].pubkey: 40_000}
BLOCKED = "block-error"  # the transaction was refused whole (a block error), not executed
actor = st.sampled_from(ACTORS)
bidder = st.sampled_from([*MINERS, MINERS[0], MINERS[1], F.OUTSIDER])  # mostly miners, some unregistered
KEYS = {k.pubkey: k for k in [*ACTORS, *JURY]}
#: identities whose votes land (the validator role of the Logit Pool's draw)
VOTERS = [F.OUTSIDER, *MINERS, *JURY]
salts = st.binary(max_size=8).map(lambda b: crypto.sha256(b"salt", b))  # fresh-looking, never weak
query_pick = st.integers(0, 9)  # 0: an address holding no query; else one of the requested queries
# Hypothesis favours small values, so the simplest draw is the interesting one: aimed (where
# the table allows the instruction), a committed bid, a window boundary
aimed = st.integers(0, 3).map(lambda x: x != 3)

Status = A.QueryStatus | A.BidStatus | None


def _status(data: bytes | None) -> tuple[int, Status]:
    if data is None:
        return 0, None
    acct = A.decode_account(data)
    if isinstance(acct, A.QueryAccount):
        return A.Kind.QUERY, acct.status
    if isinstance(acct, A.BidAccount):
        return A.Kind.BID, acct.status
    if isinstance(acct, L.PoolAccount):
        return A.Kind.POOL, None
    if isinstance(acct, L.DifficultyAccount):
        return A.Kind.DIFFICULTY, None
    if isinstance(acct, L.DisputeAccount):
        return A.Kind.DISPUTE, None
    return A.Kind.MINER, None


ACTIONS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "register": dict(who=actor),
    "request": dict(who=actor, nonce=st.integers(0, 2), tokens=st.integers(0, 8), price=st.integers(1, 50),
                    deadline=st.integers(20, 44)),
    "commit": dict(aim=aimed, who=bidder, qi=query_pick, price=st.integers(1, 60), weak=st.booleans(),
                   salt=salts),
    "reveal": dict(aim=aimed, pick=st.integers(0, 20), other=bidder,
                   mode=st.sampled_from(["right", "right", "right", "wrong-salt", "wrong-price", "wrong-signer"])),
    "close": dict(aim=aimed, qi=query_pick, payer=actor, drop=st.booleans()),
    "post": dict(pick=st.integers(0, 20), other=bidder, by_other=st.booleans(), tokens=st.integers(1, 10),
                 tamper=st.booleans()),
    "expire": dict(aim=aimed, qi=query_pick, payer=actor),
    "verdict": dict(pick=st.integers(0, 20), who=st.integers(0, 9), accept=st.booleans(),
                    evidence=st.sampled_from(["mine", "mine", "other-position", "garbage"])),
    "settle": dict(pick=st.integers(0, 20), payer=actor, shuffle=st.booleans()),
    "posted_query": dict(nonce=st.integers(10, 12), tokens=st.integers(1, 10), cheat=st.booleans()),
    "verified_query": dict(pick=st.integers(0, 20)),
    "challenge": dict(pick=st.integers(0, 20), who=st.integers(0, 9), payer=actor,
                      evidence=st.sampled_from(["cheat", "cheat", "consistent", "consistent", "other-query", "garbage"])),
    "ruling": dict(pick=st.integers(0, 20), who=st.integers(0, 9), fraud=st.booleans()),
    "disputed_query": dict(nonce=st.integers(20, 22), rulings=st.lists(st.sampled_from(["fraud", "no-fraud", "absent"]),
                                                                      min_size=L.JURORS_PER_DISPUTE,
                                                                      max_size=L.JURORS_PER_DISPUTE),
                           release=st.booleans()),
    "close_dispute": dict(pick=st.integers(0, 20), payer=actor, drop=st.integers(0, 3).map(lambda x: x == 3)),
    "advance": dict(by=st.sampled_from([0, 1, 3, 7])),
    "advance_to_last_slot_before_a_boundary": dict(),
    "duplicate": dict(),
}


class AuctionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.chain = F.Chain(dict(FUNDS))
        self.total0 = self.chain.total()
        self.bank = self.chain.open()  # the slot transactions land in (unfrozen)
        self.queries: list[bytes] = []
        self.sealed: dict[tuple[bytes, bytes], tuple[int, bytes]] = {}  # (query, bidder) -> price, salt
        self.last_raw: bytes | None = None
        self.proofs: dict[bytes, P.PolProof] = {}  # query -> the posted result's proof

    # -- helpers ---------------------------------------------------------------------------
    @property
    def blockhash(self) -> bytes:
        return self.chain.blockhash

    def _query(self, qi: int) -> bytes:
        if qi == 0 or not self.queries:
            return A.query_address(F.OUTSIDER.pubkey, 999)
        return self.queries[-1 - (qi - 1) % len(self.queries)]  # the newest most often

    def _qacct(self, q: bytes) -> A.QueryAccount | None:
        data = self.bank.auction_data(q)
        return A.QueryAccount.unpack(data) if data is not None else None

    def _bidders(self, q: bytes) -> list[bytes]:
        qa = self._qacct(q)
        out = [b"" for _ in range(qa.bid_count if qa else 0)]
        for data in self.bank.auction_accounts.values():
            if data[0] == A.Kind.BID:
                b = A.BidAccount.unpack(data)
                if b.query == q:
                    out[b.index] = b.bidder
        return out

    def _due(self, status: A.QueryStatus, lo: str | None, hi: str | None) -> list[bytes]:
        """Queries in ``status`` whose window ``lo <= slot < hi`` (field names) holds now or
        is one slot away (its edges are where off-by-one bugs live)."""
        out = []
        for q in self.queries:
            qa = self._qacct(q)
            if qa is None or qa.status != status:
                continue
            s = self.bank.slot
            if (lo is None or getattr(qa, lo) - 1 <= s) and (hi is None or s <= getattr(qa, hi)):
                out.append(q)
        return out

    def _apply(self, ins: A.Instr, raw: bytes) -> tuple[str | None, int]:
        """Run ``raw`` in the open bank; check its effects; return (error code or None, slot)."""
        bank = self.bank
        before_data = dict(bank.auction_accounts)
        before_bal = dict(bank.accounts)
        slot = bank.slot
        tx = parse_transaction(raw)
        payer = tx.account_keys[0]
        # block-invalidating: the same transaction again (the same instruction with the same
        # blockhash), or an unfunded fee payer; refused before any change
        blocked = ("already-processed" if tx.signatures[0] in bank.status_cache else
                   "insufficient-funds-for-fee" if bank.balance(payer) < LAMPORTS_PER_SIGNATURE else None)
        if blocked is not None:
            with pytest.raises(BlockError, match=blocked):
                bank.process_transactions([raw])
            assert bank.accounts == before_bal and bank.auction_accounts == before_data
            return BLOCKED, slot
        (res,) = bank.process_transactions([raw])
        self.last_raw = raw
        if res.error is not None:
            code = res.error.split(":")[0]
            assert code in A.AUCTION_ERRORS, res.error
            assert bank.auction_accounts == before_data
            moved = {k for k in set(bank.accounts) | set(before_bal) if bank.accounts.get(k) != before_bal.get(k)}
            assert moved == {payer}
            assert bank.balance(payer) == before_bal[payer] - res.fee
            return code, slot
        for key, data in bank.auction_accounts.items():
            old = before_data.get(key)
            if old == data:
                continue
            kind, new = _status(data)
            _, prev = _status(old)
            if kind == A.Kind.QUERY:
                assert (ins, prev, new) in A.QUERY_TRANSITIONS, (ins, prev, new)
                self._check_window(ins, A.QueryAccount.unpack(old) if old else None, A.QueryAccount.unpack(data), slot)
            elif kind == A.Kind.BID:  # a bid is only ever rewritten by a status move
                assert prev != new and (ins, prev, new) in A.BID_TRANSITIONS, (ins, prev, new)
            elif kind == A.Kind.POOL:  # the draw and its verdicts: only the Logit Pool writes it
                assert ins in (A.Instr.VERDICT, A.Instr.SETTLE)
            elif kind == A.Kind.DIFFICULTY:  # the epoch's observation: settlements and upheld fraud proofs
                assert ins in (A.Instr.SETTLE, A.Instr.CHALLENGE, A.Instr.CLOSE)
            elif kind == A.Kind.DISPUTE:
                assert ins in (A.Instr.CHALLENGE, A.Instr.RULING, A.Instr.CLOSE)
            else:
                assert ins == A.Instr.REGISTER_MINER and old is None
        assert set(before_data) <= set(bank.auction_accounts)  # accounts are never deleted
        return None, slot

    @staticmethod
    def _check_window(ins: A.Instr, old: A.QueryAccount | None, new: A.QueryAccount, slot: int) -> None:
        q = old or new
        if ins == A.Instr.COMMIT_BID:
            assert slot < q.commit_end_slot
        elif ins == A.Instr.REVEAL_BID:
            assert q.commit_end_slot <= slot < q.reveal_end_slot
        elif ins == A.Instr.CLOSE_AUCTION:
            assert slot >= q.reveal_end_slot
            awarded = q.revealed_count >= 1 and slot < q.deadline_slot
            assert new.status == (A.QueryStatus.AWARDED if awarded else A.QueryStatus.REFUNDED)
            if awarded:  # the second price, or the maximum with one revealed bid
                assert new.clearing_price == (q.second_price if q.revealed_count > 1 else q.max_price_per_token)
                assert q.lowest_price <= new.clearing_price <= q.max_price_per_token
        elif ins == A.Instr.POST_RESULT:
            assert slot < q.deadline_slot
        elif ins == A.Instr.EXPIRE:
            assert slot >= q.deadline_slot

    # -- rules -----------------------------------------------------------------------------
    @initialize(price=st.integers(1, 50), deadline=st.integers(24, 44))
    def three_miners_and_a_query(self, price: int, deadline: int) -> None:
        """MINERS[0..2] start registered (MINERS[3] and the outsider only if a rule registers
        them) and one query is open, so that every sequence reaches the auction."""
        self.chain.register(*MINERS[:3])
        p = F.request_params(100, max_output_tokens=8, max_price_per_token=price, deadline_slots=deadline)
        self.queries.append(self.chain.request(p))
        self.bank = self.chain.open()

    def register(self, who: crypto.Keypair) -> None:
        already = self.bank.auction_data(A.miner_address(who.pubkey)) is not None
        code, _ = self._apply(A.Instr.REGISTER_MINER, T.register_miner_transaction(who, self.blockhash))
        assert code in (BLOCKED, "auction-miner-exists" if already else None)

    def request(self, who: crypto.Keypair, nonce: int, tokens: int, price: int, deadline: int) -> None:
        p = F.request_params(nonce, max_output_tokens=tokens, max_price_per_token=price, deadline_slots=deadline)
        q = A.query_address(who.pubkey, nonce)
        exists = self.bank.auction_data(q) is not None
        code, _ = self._apply(A.Instr.REQUEST, T.request_transaction(who, p, self.blockhash))
        if code is None:
            self.queries.append(q)
        valid = not exists and tokens >= 1 and deadline >= 24
        if code != BLOCKED and who != MINERS[3]:  # everyone else can afford any request here
            assert (code is None) == valid, code

    def commit(self, aim: bool, who: crypto.Keypair, qi: int, price: int, weak: bool, salt: bytes) -> None:
        due = self._due(A.QueryStatus.OPEN, None, "commit_end_slot") if aim else []
        q = due[qi % len(due)] if due else self._query(qi)
        salt = who.pubkey if weak else salt
        qa = self._qacct(q)
        registered = self.bank.auction_data(A.miner_address(who.pubkey)) is not None
        had_bid = self.bank.auction_data(A.bid_address(q, who.pubkey)) is not None
        code, slot = self._apply(A.Instr.COMMIT_BID, T.commit_bid_transaction(who, q, price, salt, self.blockhash))
        if code is None:
            self.sealed[(q, who.pubkey)] = (price, salt)
        if code != BLOCKED and who != MINERS[3] and qa is not None and qa.status == A.QueryStatus.OPEN:
            valid = registered and not had_bid and slot < qa.commit_end_slot and qa.bid_count < A.MAX_BIDS_PER_QUERY
            assert (code is None) == valid, code

    def reveal(self, aim: bool, pick: int, other: crypto.Keypair, mode: str) -> None:
        """Mostly a committed bid (``pick`` < 20) revealed by its bidder, sometimes with the
        wrong salt or price, or by another key that copies its price and salt; aimed: a bid
        whose reveal window is open."""
        due = set(self._due(A.QueryStatus.OPEN, "commit_end_slot", "reveal_end_slot")) if aim else set()
        sealed = [(k, v) for k, v in self.sealed.items() if k[0] in due
                  and A.BidAccount.unpack(self.bank.auction_data(A.bid_address(*k)) or b"").status
                  == A.BidStatus.COMMITTED] or list(self.sealed.items())
        if pick == 20 or not sealed:
            q, who, price, salt = self._query(1), other, 1, bytes(range(32))
        else:
            (q, pub), (price, salt) = sealed[pick % len(sealed)]
            who = KEYS[pub]
        if mode == "wrong-salt":
            salt = bytes(31) + b"\x01"
        elif mode == "wrong-price":
            price += 1
        elif mode == "wrong-signer" and other != who:
            who = other
        mine = self.sealed.get((q, who.pubkey))
        qa, bid = self._qacct(q), self.bank.auction_data(A.bid_address(q, who.pubkey))
        code, slot = self._apply(A.Instr.REVEAL_BID, T.reveal_bid_transaction(who, q, price, salt, self.blockhash))
        if code is None:
            assert mine is not None and (price, salt) == mine and who.pubkey == A.BidAccount.unpack(bid or b"").bidder
        if (code != BLOCKED and mine is not None and (price, salt) == mine and qa is not None and bid is not None
                and qa.status == A.QueryStatus.OPEN):
            b = A.BidAccount.unpack(bid)
            valid = (qa.commit_end_slot <= slot < qa.reveal_end_slot and b.status == A.BidStatus.COMMITTED
                     and salt not in (bytes(32), who.pubkey, q) and 1 <= price <= qa.max_price_per_token)
            assert (code is None) == valid, code

    def close(self, aim: bool, qi: int, payer: crypto.Keypair, drop: bool) -> None:
        due = self._due(A.QueryStatus.OPEN, "reveal_end_slot", None) if aim else []
        q = due[qi % len(due)] if due else self._query(qi)
        qa = self._qacct(q)
        bidders = self._bidders(q)
        requester = qa.requester if qa is not None else F.REQUESTER.pubkey
        if drop and bidders:
            bidders = bidders[1:]
        code, slot = self._apply(A.Instr.CLOSE_AUCTION, T.close_auction_transaction(
            payer, q, requester, bidders, self.blockhash))
        if code != BLOCKED and qa is not None and qa.status == A.QueryStatus.OPEN and not (drop and qa.bid_count):
            assert (code is None) == (slot >= qa.reveal_end_slot), code

    def post(self, pick: int, other: crypto.Keypair, by_other: bool, tokens: int, tamper: bool,
             cheat_at: int | None = None) -> None:
        """Mostly a result for an awarded query (``pick`` < 20), by its winner or another key."""
        awarded = [q for q in self.queries if (qa := self._qacct(q)) and qa.status == A.QueryStatus.AWARDED]
        q = awarded[pick % len(awarded)] if pick != 20 and awarded else self._query(pick % 10)
        qa = self._qacct(q)
        who = KEYS[qa.winner] if not by_other and qa is not None and qa.winner in KEYS else other
        base = qa or dataclasses.replace(self._dummy_query(), winner=who.pubkey)
        signed_over = dataclasses.replace(base, prompt_hash=bytes(32)) if tamper else base
        proof = F.pool_proof(who, dataclasses.replace(signed_over, winner=who.pubkey), tokens, cheat_at)
        c = proof.commitment
        r = T.sign_result(who, signed_over, output_hash=c.output_hash, num_tokens=tokens, tier=c.tier, top_k=c.top_k,
                          vocab=c.vocab, pol_root=c.root)
        code, slot = self._apply(A.Instr.POST_RESULT, T.post_result_transaction(who, q, r, self.blockhash))
        if code is None:
            self.proofs[q] = proof
        if code != BLOCKED and qa is not None and qa.status == A.QueryStatus.AWARDED:
            valid = (who.pubkey == qa.winner and slot < qa.deadline_slot and not tamper
                     and tokens <= qa.max_output_tokens)
            assert (code is None) == valid, code

    def expire(self, aim: bool, qi: int, payer: crypto.Keypair) -> None:
        due = self._due(A.QueryStatus.AWARDED, "deadline_slot", None) if aim else []
        q = due[qi % len(due)] if due else self._query(qi)
        qa = self._qacct(q)
        winner = qa.winner if qa is not None else F.OUTSIDER.pubkey
        requester = qa.requester if qa is not None else F.REQUESTER.pubkey
        code, slot = self._apply(A.Instr.EXPIRE, T.expire_transaction(payer, q, requester, winner, self.blockhash))
        if code != BLOCKED and qa is not None and qa.status == A.QueryStatus.AWARDED:
            assert (code is None) == (slot >= qa.deadline_slot), code

    def posted_query(self, nonce: int, tokens: int, cheat: bool = False) -> None:
        """A whole auction to a posted result in a few steps (random sequences rarely get
        there), so the Logit Pool's verdicts and settlement run in most sequences."""
        p = F.request_params(nonce, max_output_tokens=8, max_price_per_token=40, deadline_slots=40)
        q = A.query_address(F.REQUESTER.pubkey, nonce)
        if self.bank.auction_data(q) is not None:
            return
        if self._apply(A.Instr.REQUEST, T.request_transaction(F.REQUESTER, p, self.blockhash))[0] is not None:
            return
        self.queries.append(q)
        salt = crypto.sha256(b"posted", q)
        self._apply(A.Instr.COMMIT_BID, T.commit_bid_transaction(MINERS[0], q, 30, salt, self.blockhash))
        qa = self._qacct(q)
        assert qa is not None
        self._advance_to(qa.commit_end_slot)
        self._apply(A.Instr.REVEAL_BID, T.reveal_bid_transaction(MINERS[0], q, 30, salt, self.blockhash))
        self._advance_to(qa.reveal_end_slot)
        self._apply(A.Instr.CLOSE_AUCTION, T.close_auction_transaction(F.OUTSIDER, q, F.REQUESTER.pubkey,
                                                                       self._bidders(q), self.blockhash))
        # ``cheat``: its first leaf contradicts itself (a fraud proof the program decides alone)
        self.post(len(self.queries) - 1, MINERS[0], False, tokens, False, 0 if cheat else None)

    def _posted(self, pick: int) -> bytes:
        posted = [q for q in self.queries if (qa := self._qacct(q)) and qa.status == A.QueryStatus.RESULT_POSTED]
        return posted[pick % len(posted)] if pick != 20 and posted else self._query(pick % 10)

    def _draw(self, q: bytes) -> L.PoolAccount | None:
        """The draw an instruction in the open bank sees (core/logit_pool.py ``draw_of``)."""
        qa = self._qacct(q)
        if qa is None or qa.status != A.QueryStatus.RESULT_POSTED:
            return None
        return L.draw_of(_view(self.bank), qa, q)

    def verdict(self, pick: int, who: int, accept: bool, evidence: str) -> None:
        """A verdict on a posted result, mostly by a drawn validator (``who`` < 6 picks from
        the draw), with real evidence at one of its positions, another position, or garbage."""
        q = self._posted(pick)
        qa, d = self._qacct(q), self._draw(q)
        drawn = list(d.validators) if d is not None else []
        key = KEYS[drawn[who % len(drawn)]] if who < 6 and drawn else VOTERS[who % len(VOTERS)]
        ev: P.PolOpening | None = None
        proof = self.proofs.get(q)
        if not accept and proof is not None and qa is not None and d is not None and key.pubkey in drawn:
            pos = d.positions_of(qa, drawn.index(key.pubkey))
            if evidence == "mine":
                ev = P.open_positions(proof, [pos[0]])[0]
            elif evidence == "other-position" and len(pos) < qa.num_tokens:
                ev = P.open_positions(proof, [next(p for p in range(qa.num_tokens) if p not in pos)])[0]
        if not accept and ev is None:
            raw = T.auction_transaction([key], [(key.pubkey, True, True), (q, False, True),
                                                (L.pool_address(q), False, True)],
                                        L.verdict_data(False)[:5] + b"\x00junk", self.blockhash)
        else:
            raw = T.verdict_transaction(key, q, accept, ev, self.blockhash)
        code, slot = self._apply(A.Instr.VERDICT, raw)
        if code is None:  # it was a drawn validator of the open round, inside the window
            after = L.load_pool(_view(self.bank), L.pool_address(q))
            assert after is not None and key.pubkey in after.validators
            i = after.validators.index(key.pubkey)
            assert i in after.current() and slot < after.verify_end_slot
            assert after.verdicts[i] == (L.ACCEPT if accept else L.REJECT)
            assert accept or evidence == "mine"
        elif code != BLOCKED and qa is not None and qa.status != A.QueryStatus.RESULT_POSTED:
            assert code == "auction-wrong-status", code
        elif code != BLOCKED and d is not None and key.pubkey not in drawn:
            assert code == "auction-not-drawn", code

    def settle(self, pick: int, payer: crypto.Keypair, shuffle: bool) -> None:
        q = self._posted(pick)
        qa, d = self._qacct(q), self._draw(q)
        if qa is None:
            qa = dataclasses.replace(self._dummy_query(), winner=F.OUTSIDER.pubkey)
        listed = list(d.validators) if d is not None else []
        if shuffle and len(listed) > 1:
            listed = listed[1:] + listed[:1]
        code, slot = self._apply(A.Instr.SETTLE, T.settle_transaction(payer, qa, q, listed, self.blockhash))
        if code is None:
            assert d is not None
            new = self._qacct(q)
            assert new is not None
            decided = max(d.count(L.ACCEPT), d.count(L.REJECT)) >= d.quorum
            assert decided or slot >= d.verify_end_slot
        elif code != BLOCKED and d is not None and qa.status == A.QueryStatus.RESULT_POSTED and not shuffle:
            decided = max(d.count(L.ACCEPT), d.count(L.REJECT)) >= d.quorum
            assert code in ("auction-verify-open", "auction-draw-not-ready") and not decided, code

    # -- retrospective slashing (spec/logit_pool.md "Retrospective slashing", tags 9-11) ----
    def _balances(self) -> dict[bytes, int]:
        return dict(self.bank.accounts)

    def _moved(self, before: dict[bytes, int], payer: bytes) -> dict[bytes, int]:
        """Lamports each account gained (negative: lost) in the last instruction, the payer's
        fee added back."""
        out = {}
        for k in set(before) | set(self.bank.accounts):
            d = self.bank.balance(k) - before.get(k, 0) + (LAMPORTS_PER_SIGNATURE if k == payer else 0)
            if d:
                out[k] = d
        return out

    def verified_query(self, pick: int) -> None:
        """A posted result driven to ``FINALIZED_VERIFIED`` in a few steps: the draw's beacon
        slot reached, a quorum of the open round's validators accept, settle."""
        q = self._posted(pick)
        qa = self._qacct(q)
        if qa is None or qa.status != A.QueryStatus.RESULT_POSTED:
            return
        d = self._draw(q)
        if d is None:
            self._advance_to(qa.result_slot + L.DRAW_DELAY_SLOTS)
            d = self._draw(q)
        if d is None or not d.validators:
            return
        for i in list(d.current())[:d.quorum]:
            key = KEYS[d.validators[i]]
            self._apply(A.Instr.VERDICT, T.verdict_transaction(key, q, True, None, self.blockhash))
        d = self._draw(q)
        if d is not None:
            self._apply(A.Instr.SETTLE, T.settle_transaction(F.OUTSIDER, qa, q, list(d.validators), self.blockhash))

    def _verified(self, pick: int) -> bytes:
        done = [q for q in self.queries if (qa := self._qacct(q)) and qa.status == A.QueryStatus.FINALIZED_VERIFIED]
        return done[pick % len(done)] if pick != 20 and done else self._query(pick % 10)

    def challenge(self, pick: int, who: int, payer: crypto.Keypair, evidence: str) -> None:
        """A fraud proof against a verified result, mostly by someone allowed to file it
        (``who`` < 2: one of the validators that accepted, who may not), with the leaf that
        contradicts itself, a consistent leaf (a model-fault claim: a jury and a bond), an
        opening of another query's proof, or bytes that are no opening."""
        q = self._verified(pick)
        qa = self._qacct(q)
        view = _view(self.bank)
        pool = L.load_pool(view, L.pool_address(q))
        old = L.load_dispute(view, L.dispute_address(q))
        acc = L.accepters(pool) if pool is not None else []
        key = KEYS[acc[who % len(acc)]] if who < 2 and acc else ACTORS[who % len(ACTORS)]
        proof = self.proofs.get(q)
        # another result's proof (identical requests give identical commitments: those are this one's)
        others = [p for p in self.proofs.values() if proof is None or p.commitment.hash() != proof.commitment.hash()]
        ev: P.PolOpening | None = None
        if proof is not None and evidence in ("cheat", "consistent"):
            n = proof.commitment.num_tokens
            ev = P.open_positions(proof, [0 if evidence == "cheat" else n - 1])[0]
        elif evidence == "other-query" and others:
            ev = P.open_positions(others[0], [0])[0]
        target = qa or dataclasses.replace(self._dummy_query(), winner=F.OUTSIDER.pubkey)
        if ev is not None:
            raw = T.challenge_transaction(key, target, q, ev, self.blockhash)
        else:
            metas = [(key.pubkey, True, True), (q, False, True), (L.pool_address(q), False, True),
                     (A.bid_address(q, target.winner), False, True), (L.dispute_address(q), False, True),
                     (target.requester, False, True), (L.difficulty_address(), False, True)]
            raw = T.auction_transaction([key], metas, struct.pack("<I", L.TAG_CHALLENGE) + b"\x01garbage",
                                        self.blockhash)
        bid = self.bank.auction_data(A.bid_address(q, target.winner))
        before = self._balances()
        code, slot = self._apply(A.Instr.CHALLENGE, raw)
        if code is None:
            assert qa is not None and pool is not None and ev is not None and proof is not None
            assert qa.status == A.QueryStatus.FINALIZED_VERIFIED and evidence in ("cheat", "consistent")
            assert old is None or old.state != L.OPEN
            assert slot < L.release_slot(pool, old)
            assert key.pubkey != qa.winner and key.pubkey not in acc
            d = L.load_dispute(_view(self.bank), L.dispute_address(q))
            assert d is not None and d.challenger == key.pubkey and d.position == ev.fp.pos
            moved = self._moved(before, key.pubkey)
            bond = A.BidAccount.unpack(bid or b"").bond_lamports
            if L.self_contradiction(qa.pol_commitment(), ev.fp) is not None:
                # decided by the program: bond split requester / challenger, query rejected
                assert (d.state, d.fault_class, d.bond_lamports) == (L.UPHELD, L.SELF_CONTRADICTION, 0)
                half = bond * L.SLASH_TO_REQUESTER_PERCENT // 100
                assert self._qacct(q).status == A.QueryStatus.FINALIZED_REJECTED  # type: ignore[union-attr]
                want = {qa.requester: half, key.pubkey: bond - half, A.bid_address(q, qa.winner): -bond}
                if qa.requester == key.pubkey:
                    want = {qa.requester: bond, A.bid_address(q, qa.winner): -bond}
                assert moved == want, (moved, want)
            else:  # a jury is called: the challenger's bond moves into the dispute account
                assert (d.state, d.fault_class) == (L.OPEN, L.MODEL_FAULT)
                assert moved == {key.pubkey: -L.CHALLENGE_BOND_LAMPORTS, L.dispute_address(q): L.CHALLENGE_BOND_LAMPORTS}
        elif (code != BLOCKED and qa is not None and pool is not None and qa.status == A.QueryStatus.FINALIZED_VERIFIED
              and ev is not None and evidence in ("cheat", "consistent") and key != MINERS[3]
              and (old is None or old.state != L.OPEN) and key.pubkey not in (qa.winner, *acc)):
            # every precondition held but the window: it must have been the window
            assert code == "auction-challenge-closed" and slot >= L.release_slot(pool, old), code
        if code is not None and code != BLOCKED and qa is not None and qa.status == A.QueryStatus.FINALIZED_VERIFIED \
                and ev is None:
            assert code == "auction-bad-evidence" or code in ("auction-dispute-open", "auction-challenge-closed",
                                                             "auction-bad-challenger", "auction-no-bid"), code

    def _pick_of(self, q: bytes) -> int:
        """The ``pick`` that makes :meth:`_verified` return ``q`` (while it is verified)."""
        done = [x for x in self.queries if (qa := self._qacct(x)) and qa.status == A.QueryStatus.FINALIZED_VERIFIED]
        return done.index(q) if q in done else 20

    def disputed_query(self, nonce: int, rulings: list[str], release: bool) -> None:
        """A whole model-fault dispute in a few steps (random sequences rarely get there):
        a verified result, a consistent leaf challenged by someone allowed to, the jury's
        beacon reached, each juror rules or stays away, close (at the ruling window's end
        when undecided), then, when the result still stands, the release after the window.
        Every step goes through the rules above, so their checks apply."""
        q = A.query_address(F.REQUESTER.pubkey, nonce)
        if self._qacct(q) is None:
            self.posted_query(nonce, 3, False)
        qa = self._qacct(q)
        if qa is not None and qa.status == A.QueryStatus.RESULT_POSTED:
            posted = [x for x in self.queries if (a := self._qacct(x)) and a.status == A.QueryStatus.RESULT_POSTED]
            self.verified_query(posted.index(q))
        qa = self._qacct(q)
        pool = L.load_pool(_view(self.bank), L.pool_address(q))
        if qa is None or qa.status != A.QueryStatus.FINALIZED_VERIFIED or pool is None:
            return
        acc = L.accepters(pool)
        allowed = [i for i in range(2, 2 + len(ACTORS)) if (k := ACTORS[i % len(ACTORS)]).pubkey not in (qa.winner, *acc)
                   and k != MINERS[3]]
        if not allowed:
            return
        self.challenge(self._pick_of(q), allowed[0], F.OUTSIDER, "consistent")
        d = L.load_dispute(_view(self.bank), L.dispute_address(q))
        if d is None or d.state != L.OPEN:
            return
        self._advance_to(d.challenge_slot + L.DRAW_DELAY_SLOTS)
        for i, r in enumerate(rulings):
            if r != "absent":
                self.ruling(self._pick_of(q), i, r == "fraud")
        d = L.jury_of(_view(self.bank), qa, q)
        if d is not None and d.drawn and max(d.count(L.FRAUD), d.count(L.NO_FRAUD)) < L.RULING_QUORUM:
            self._advance_to(d.judge_end_slot)
        self.close_dispute(self._pick_of(q), F.OUTSIDER, False)
        if release and self._pick_of(q) != 20:
            pool = L.load_pool(_view(self.bank), L.pool_address(q))
            assert pool is not None
            self._advance_to(L.release_slot(pool, L.load_dispute(_view(self.bank), L.dispute_address(q))))
            self.close_dispute(self._pick_of(q), F.OUTSIDER, False)

    def _open_dispute(self, pick: int) -> tuple[bytes, A.QueryAccount | None, L.DisputeAccount | None]:
        q = self._verified(pick)
        qa = self._qacct(q)
        if qa is None or qa.status != A.QueryStatus.FINALIZED_VERIFIED:
            return q, qa, None
        return q, qa, L.jury_of(_view(self.bank), qa, q)

    def ruling(self, pick: int, who: int, fraud: bool) -> None:
        """A ruling on an open dispute, mostly by a drawn juror (``who`` < 6)."""
        q, _qa, d = self._open_dispute(pick)
        jurors = list(d.jurors) if d is not None else []
        key = KEYS[jurors[who % len(jurors)]] if who < 6 and jurors else VOTERS[who % len(VOTERS)]
        before = self._balances()
        code, slot = self._apply(A.Instr.RULING, T.ruling_transaction(key, q, fraud, self.blockhash))
        if code is None:  # a drawn juror of an open dispute, once, inside its window; no lamport moves
            assert d is not None and d.state == L.OPEN and d.drawn and key.pubkey in d.jurors
            i = d.jurors.index(key.pubkey)
            assert d.rulings[i] == L.NO_RULING and slot < d.judge_end_slot
            after = L.load_dispute(_view(self.bank), L.dispute_address(q))
            assert after is not None and after.rulings[i] == (L.FRAUD if fraud else L.NO_FRAUD)
            assert self._moved(before, key.pubkey) == {}
        elif code != BLOCKED and d is not None and d.state == L.OPEN and d.drawn:
            i = d.jurors.index(key.pubkey) if key.pubkey in d.jurors else -1
            if i < 0:
                assert code == "auction-not-drawn", code
            elif d.rulings[i] != L.NO_RULING:
                assert code in ("auction-verdict-exists", "auction-verify-closed"), code
            else:
                assert code == "auction-verify-closed" and slot >= d.judge_end_slot, code

    def close_dispute(self, pick: int, payer: crypto.Keypair, drop: bool) -> None:
        """Tag 11: resolve an open dispute (its challenger and jurors listed, or one dropped),
        or release the held bond once the challenge window is over. The lamports each party
        gets are the spec's: upheld, the bond split requester / challenger and the challenge
        bond back; dismissed, the challenge bond to the miner; lapsed, back to the challenger;
        released, the bond to the miner."""
        q, qa, d = self._open_dispute(pick)
        view = _view(self.bank)
        pool = L.load_pool(view, L.pool_address(q))
        target = qa or dataclasses.replace(self._dummy_query(), winner=F.OUTSIDER.pubkey)
        is_open = d is not None and d.state == L.OPEN
        parties = [d.challenger, *d.jurors] if d is not None and is_open else []
        if drop and parties:
            parties = parties[:-1]
        bid = self.bank.auction_data(A.bid_address(q, target.winner))
        before = self._balances()
        code, slot = self._apply(A.Instr.CLOSE, T.close_transaction(payer, target, q, parties, self.blockhash))
        if qa is None or qa.status != A.QueryStatus.FINALIZED_VERIFIED or pool is None or bid is None:
            assert code is not None  # only a verified result has a dispute to close or a bond to release
            return
        bond = A.BidAccount.unpack(bid).bond_lamports
        moved = self._moved(before, payer.pubkey) if code is None else None
        bkey = A.bid_address(q, qa.winner)
        if not is_open:  # a release
            if code is None:
                assert slot >= L.release_slot(pool, d)
                assert moved == {bkey: -bond, qa.winner: bond}, moved
                assert A.BidAccount.unpack(self.bank.auction_data(bkey) or b"").status == A.BidStatus.REFUNDED
            elif code != BLOCKED and A.BidAccount.unpack(bid).status != A.BidStatus.HELD:  # released already
                assert code == "auction-wrong-status", code
            elif code != BLOCKED:
                assert code == "auction-window-open" and slot < L.release_slot(pool, d), code
            return
        assert d is not None
        if not d.drawn:
            assert code in (BLOCKED, "auction-draw-not-ready", "auction-bad-accounts"), code
            return
        fraud, no_fraud = d.count(L.FRAUD), d.count(L.NO_FRAUD)
        decided = fraud >= L.RULING_QUORUM or no_fraud >= L.RULING_QUORUM or slot >= d.judge_end_slot
        if code is None:
            assert not drop and decided
            after = L.load_dispute(_view(self.bank), L.dispute_address(q))
            assert after is not None and after.closed_slot == slot
            cb, dkey = d.bond_lamports, L.dispute_address(q)
            want: dict[bytes, int] = {}

            def add(k: bytes, n: int) -> None:
                want[k] = want.get(k, 0) + n

            add(dkey, -cb)
            if fraud >= L.RULING_QUORUM:
                half = bond * L.SLASH_TO_REQUESTER_PERCENT // 100
                add(d.challenger, cb + bond - half)
                add(qa.requester, half)
                add(bkey, -bond)
                assert after.state == L.UPHELD
                assert self._qacct(q).status == A.QueryStatus.FINALIZED_REJECTED  # type: ignore[union-attr]
            elif no_fraud >= L.RULING_QUORUM:
                add(qa.winner, cb)
                assert after.state == L.DISMISSED
            else:
                add(d.challenger, cb)
                assert after.state == L.LAPSED
            assert moved == {k: v for k, v in want.items() if v}, (moved, want)
        elif code != BLOCKED:
            if drop:
                assert code == "auction-bad-accounts", code
            else:
                assert code == "auction-verify-open" and not decided, code

    def _marks(self) -> list[int]:
        """Window boundaries ahead: every query's commit_end, reveal_end and deadline."""
        view = _view(self.bank)
        pools = [p.verify_end_slot for q in self.queries if (p := L.load_pool(view, L.pool_address(q))) is not None]
        for q in self.queries:  # the challenge window's end, a dispute's jury beacon and ruling window
            p, d = L.load_pool(view, L.pool_address(q)), L.load_dispute(view, L.dispute_address(q))
            if p is not None and p.settled_slot:
                pools.append(L.release_slot(p, d))
            if d is not None and d.state == L.OPEN:
                pools += [d.challenge_slot + L.DRAW_DELAY_SLOTS, d.judge_end_slot]
        return sorted({m for q in self.queries if (qa := self._qacct(q)) is not None
                       for m in (qa.commit_end_slot, qa.reveal_end_slot, qa.deadline_slot, *pools)
                       if m > self.bank.slot})

    def _advance_to(self, slot: int) -> None:
        """Freeze the open slot and open ``slot`` (the slots between are skipped). The
        validators' votes (every actor but the requester) land in every slot (vote state
        given, as the vote program would leave it), so they keep the validator role."""
        self.chain.commit(self.bank)
        self.bank = self.chain.open(max(slot, self.bank.slot + 1))
        for k in VOTERS:
            self.bank.last_votes[k.pubkey] = self.bank.parent_slot

    def advance(self, by: int) -> None:
        """To the next window boundary (where the table's slot conditions flip), or ``by``
        slots."""
        marks = self._marks()
        self._advance_to(marks[0] if by == 0 and marks else self.bank.slot + max(by, 1))

    def advance_to_last_slot_before_a_boundary(self) -> None:
        marks = self._marks()
        self._advance_to(marks[0] - 1 if marks else self.bank.slot + 1)

    def duplicate(self) -> None:
        """The last transaction again: a block error (already processed, or its blockhash
        aged out), refused before it touches anything."""
        if self.last_raw is None:
            return
        before = (dict(self.bank.accounts), dict(self.bank.auction_accounts), self.bank.fees_collected)
        with pytest.raises(BlockError):
            self.bank.process_transactions([self.last_raw])
        assert (self.bank.accounts, self.bank.auction_accounts, self.bank.fees_collected) == before

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        """One step: an action drawn from ``ACTIONS`` with its arguments. (One rule, not one
        per action, so that Hypothesis' swarm testing, which switches whole rules off per
        sequence, cannot starve the auction of the instructions that drive it forward.)"""
        name = data.draw(st.sampled_from([*ACTIONS, "advance", "commit", "reveal", "verdict", "challenge", "ruling"]),
                         label="action")
        getattr(self, name)(**data.draw(st.fixed_dictionaries(ACTIONS[name]), label=name))

    @staticmethod
    def _dummy_query() -> A.QueryAccount:
        p = F.request_params()
        return A.QueryAccount(A.QueryStatus.OPEN, F.REQUESTER.pubkey, 0, p.model_id, p.prompt_hash, 1, 8, 1,
                              p.temp_milli, p.sample_seed, 0, 0, 0, 0, 0, 0)

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def lamports_are_conserved(self) -> None:
        # the open slot's fees are collected but not yet split (half to the leader at freeze)
        assert sum(self.bank.accounts.values()) + self.bank.fees_collected + self.chain.burned == self.total0

    @invariant()
    def escrow_and_bonds_sit_in_program_accounts(self) -> None:
        bank = self.bank
        forfeited = 0
        for key, data in bank.auction_accounts.items():
            acct = A.decode_account(data)
            if isinstance(acct, A.QueryAccount):
                assert bank.balance(key) == acct.escrow_lamports
                if acct.status in (A.QueryStatus.EXPIRED, A.QueryStatus.REFUNDED, A.QueryStatus.FINALIZED_VERIFIED,
                                   A.QueryStatus.FINALIZED_REJECTED):
                    assert acct.escrow_lamports == 0
                else:
                    assert acct.escrow_lamports == acct.max_payment + A.QUERY_FEE_LAMPORTS
            elif isinstance(acct, A.BidAccount):
                held = acct.status in (A.BidStatus.COMMITTED, A.BidStatus.REVEALED, A.BidStatus.WON, A.BidStatus.HELD)
                assert bank.balance(key) == (acct.bond_lamports if held else 0)
                qd = bank.auction_data(acct.query)
                settled = qd is not None and A.QueryAccount.unpack(qd).status == A.QueryStatus.FINALIZED_REJECTED
                # a bond slashed by settle goes to the requester and the rejecters, not the incinerator
                if acct.status == A.BidStatus.FORFEITED or (acct.status == A.BidStatus.SLASHED and not settled):
                    forfeited += acct.bond_lamports
            elif isinstance(acct, (L.PoolAccount, L.DifficultyAccount)):  # data only
                assert bank.balance(key) == 0
            elif isinstance(acct, L.DisputeAccount):  # the challenge bond, while the dispute is open
                assert bank.balance(key) == (acct.bond_lamports if acct.state == L.OPEN else 0)
        assert bank.balance(A.INCINERATOR_ID) == forfeited


def _view(bank: Any) -> Any:
    from ambient_p2p.core.bank import _AuctionView

    return _AuctionView(bank)


def _settings(n: int, steps: int) -> settings:
    return settings(max_examples=n, stateful_step_count=steps, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_auction_sequences_conserve_lamports_and_follow_the_table() -> None:
    run_state_machine_as_test(AuctionMachine, settings=_settings(60, 60))


@pytest.mark.slow
def test_auction_sequences_conserve_lamports_10k() -> None:
    run_state_machine_as_test(AuctionMachine, settings=_settings(10_000, 60))



# ---------------------------------------------------------------------------------------
# whole auctions: every bidder count, price pattern, reveal subset, close time and ending
# ---------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, A.MAX_BIDS_PER_QUERY), max_price=st.integers(1, 50),
       prices=st.lists(st.integers(1, 55), min_size=A.MAX_BIDS_PER_QUERY, max_size=A.MAX_BIDS_PER_QUERY),
       revealed=st.lists(st.booleans(), min_size=A.MAX_BIDS_PER_QUERY, max_size=A.MAX_BIDS_PER_QUERY),
       close_at_deadline=st.booleans(), ending=st.sampled_from(["post", "expire", "none"]))
def test_whole_auctions_pay_the_second_price_and_conserve_lamports(
        n: int, max_price: int, prices: list[int], revealed: list[bool], close_at_deadline: bool, ending: str) -> None:
    c = F.Chain()
    total0 = c.total()
    miners = F.MINERS[:n]
    if miners:
        c.register(*miners)
    q = c.request(F.request_params(max_output_tokens=8, max_price_per_token=max_price, deadline_slots=30))
    qa = c.query(q)
    bond = qa.bond_lamports
    if miners:
        c.commit_bids(q, [(m, prices[i]) for i, m in enumerate(miners)])
    shown = [(i, m) for i, m in enumerate(miners) if revealed[i]]
    if shown:
        results = c.send(*(T.reveal_bid_transaction(m, q, prices[i], F.salt_for(m), c.blockhash) for i, m in shown),
                         slot=qa.commit_end_slot)
        for (i, _), r in zip(shown, results, strict=True):
            assert (r.error or "").split(":")[0] == ("" if prices[i] <= max_price else "auction-price-out-of-range")
    counted = [(prices[i], i) for i, _ in shown if prices[i] <= max_price]  # a price above the maximum is refused
    before = {m.pubkey: c.bank.balance(m.pubkey) for m in miners}
    req_before, incin_before = c.bank.balance(F.REQUESTER.pubkey), c.bank.balance(A.INCINERATOR_ID)
    c.ok(c.close_tx(q), slot=qa.deadline_slot if close_at_deadline else qa.reveal_end_slot)
    qa = c.query(q)
    awarded = bool(counted) and not close_at_deadline
    if awarded:
        best = min(counted)
        assert (qa.status, qa.winner) == (A.QueryStatus.AWARDED, miners[best[1]].pubkey)
        assert qa.clearing_price == (sorted(counted)[1][0] if len(counted) > 1 else max_price)
    else:
        assert qa.status == A.QueryStatus.REFUNDED
        assert c.bank.balance(F.REQUESTER.pubkey) == req_before + qa.max_payment + A.QUERY_FEE_LAMPORTS
    counted_idx = {i for _, i in counted}
    for i, m in enumerate(miners):
        won = awarded and i == min(counted)[1]
        expect = before[m.pubkey] + (bond if i in counted_idx and not won else 0)
        assert c.bank.balance(m.pubkey) == expect
    forfeits = sum(1 for i in range(n) if i not in counted_idx)
    assert c.bank.balance(A.INCINERATOR_ID) == incin_before + forfeits * bond
    if awarded and ending == "post":
        c.ok(c.post_tx(q, miners[min(counted)[1]], num_tokens=8))
        assert c.query(q).status == A.QueryStatus.RESULT_POSTED
        assert c.bank.balance(q) == qa.max_payment + A.QUERY_FEE_LAMPORTS  # held for the Logit Pool
    elif awarded and ending == "expire":
        req = c.bank.balance(F.REQUESTER.pubkey)
        c.ok(c.expire_tx(q), slot=qa.deadline_slot)
        assert c.query(q).status == A.QueryStatus.EXPIRED
        assert c.bank.balance(F.REQUESTER.pubkey) == req + qa.max_payment + A.QUERY_FEE_LAMPORTS
        assert c.bank.balance(A.INCINERATOR_ID) == incin_before + (forfeits + 1) * bond
    assert c.total() == total0
