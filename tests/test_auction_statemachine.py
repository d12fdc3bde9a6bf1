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
FUNDS = {**{k.pubkey: 10**9 for k in ACTORS}, MINERS[3].pubkey: 40_000}
BLOCKED = "block-error"  # the transaction was refused whole (a block error), not executed
actor = st.sampled_from(ACTORS)
bidder = st.sampled_from([*MINERS, MINERS[0], MINERS[1], F.OUTSIDER])  # mostly miners, some unregistered
KEYS = {k.pubkey: k for k in ACTORS}
#: identities whose votes land (the validator role of the Logit Pool's draw)
VOTERS = [F.OUTSIDER, *MINERS]
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
    "posted_query": dict(nonce=st.integers(10, 12), tokens=st.integers(1, 10)),
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

    def post(self, pick: int, other: crypto.Keypair, by_other: bool, tokens: int, tamper: bool) -> None:
        """Mostly a result for an awarded query (``pick`` < 20), by its winner or another key."""
        awarded = [q for q in self.queries if (qa := self._qacct(q)) and qa.status == A.QueryStatus.AWARDED]
        q = awarded[pick % len(awarded)] if pick != 20 and awarded else self._query(pick % 10)
        qa = self._qacct(q)
        who = KEYS[qa.winner] if not by_other and qa is not None and qa.winner in KEYS else other
        base = qa or dataclasses.replace(self._dummy_query(), winner=who.pubkey)
        signed_over = dataclasses.replace(base, prompt_hash=bytes(32)) if tamper else base
        proof = F.pool_proof(who, dataclasses.replace(signed_over, winner=who.pubkey), tokens)
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

    def posted_query(self, nonce: int, tokens: int) -> None:
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
        self.post(len(self.queries) - 1, MINERS[0], False, tokens, False)

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
            if new.status != A.QueryStatus.RESULT_POSTED:
                self.proofs.pop(q, None)
        elif code != BLOCKED and d is not None and qa.status == A.QueryStatus.RESULT_POSTED and not shuffle:
            decided = max(d.count(L.ACCEPT), d.count(L.REJECT)) >= d.quorum
            assert code in ("auction-verify-open", "auction-draw-not-ready") and not decided, code

    def _marks(self) -> list[int]:
        """Window boundaries ahead: every query's commit_end, reveal_end and deadline."""
        pools = [p.verify_end_slot for q in self.queries
                 if (p := L.load_pool(_view(self.bank), L.pool_address(q))) is not None]
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
        name = data.draw(st.sampled_from([*ACTIONS, "advance", "commit", "reveal", "verdict"]), label="action")
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
