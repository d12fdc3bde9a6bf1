"""What a miner does about the queries it sees (normative text: spec/auction.md "Miner
policy"). Pure: the node's miner service (node/miner.py) hands it the slot, the query and
bid accounts it read from a frozen bank, its balance and its measured model speed; it
returns the transactions and jobs to start. Randomness (bid salts) comes through an
injected ``random.Random`` (the service passes ``random.SystemRandom()``), time as a slot.

| query status | miner's own state | slot | action |
| --- | --- | --- | --- |
| ``OPEN`` | no bid | ``slot + LAND_SLOTS < commit_end`` and ``bid_refusal`` is None | ``Commit`` (fresh 32-byte salt) |
| ``OPEN`` | commit sent, not landed | ``RESEND_SLOTS`` since the send, still in the commit window | ``Commit`` again (same salt and price) |
| ``OPEN`` | bid ``COMMITTED`` | ``commit_end <= slot < reveal_end`` | ``Reveal`` (again every ``RESEND_SLOTS`` until it lands) |
| ``OPEN`` | bid on the query | ``reveal_end <= slot`` | ``Close`` (anyone may; again every ``RESEND_SLOTS``) |
| ``AWARDED`` | winner is this miner, no job | ``slot < deadline`` | ``Serve`` (fetch the prompt, run the model) |
| ``AWARDED`` | job done | ``slot < deadline`` | ``Post`` (again every ``RESEND_SLOTS`` until it lands) |
| anything else | - | - | forget the query |

"Cannot finish in time, do not bid": the model's estimated time, ``prompt_tokens ×
ms_per_prompt_token + max_output_tokens × ms_per_output_token``, times
``SPEED_SAFETY_FACTOR``, plus the same estimate for every bid in flight not yet served
(jobs run one at a time), must fit in the slots between the earliest award (``reveal_end +
LAND_SLOTS``) and the latest post (``deadline − LAND_SLOTS``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .auction import MAX_BIDS_PER_QUERY, BidAccount, BidStatus, QueryAccount, QueryStatus

#: Slots a transaction may take from the miner's mempool to a frozen bank (gossip, the
#: leader's block, replay): an action is only started when this many slots remain.
LAND_SLOTS = 2
#: A sent transaction whose effect is not visible after this many slots is sent again
#: (with a newer blockhash: a new signature).
RESEND_SLOTS = 4
#: The speed estimate is multiplied by this before comparing with the time left: a loaded
#: machine runs slower than its calibration (2 cores shared by the localnet).
SPEED_SAFETY_FACTOR = 2.0
#: Weight of a new measurement in the exponential moving average of ms per token.
SPEED_EWMA_WEIGHT = 0.3
#: Lamports a miner keeps for fees on top of a bond: commit, reveal, close, post (one
#: signature each at 5,000, spec/bank.md) with room for resends.
FEE_RESERVE_LAMPORTS = 100_000


@dataclass(frozen=True)
class Speed:
    """Measured model speed (ms per token), prefill and decode."""

    ms_per_prompt_token: float
    ms_per_output_token: float

    def estimate_ms(self, prompt_tokens: int, output_tokens: int) -> float:
        return prompt_tokens * self.ms_per_prompt_token + output_tokens * self.ms_per_output_token

    def observe(self, prompt_tokens: int, output_tokens: int, elapsed_ms: float) -> Speed:
        """A finished job's time, attributed to decode (prefill is a small share and the
        estimate stays conservative)."""
        if output_tokens <= 0:
            return self
        per = max(0.0, elapsed_ms - prompt_tokens * self.ms_per_prompt_token) / output_tokens
        w = SPEED_EWMA_WEIGHT
        return replace(self, ms_per_output_token=(1 - w) * self.ms_per_output_token + w * per)


@dataclass(frozen=True)
class MinerConfig:
    model_id: bytes
    price_per_token: int  # the miner's ask, lamports per output token
    slot_ms: float


# -- actions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Commit:
    query: bytes
    price: int
    salt: bytes


@dataclass(frozen=True)
class Reveal:
    query: bytes
    price: int
    salt: bytes


@dataclass(frozen=True)
class Close:
    query: bytes


@dataclass(frozen=True)
class Serve:
    query: bytes


@dataclass(frozen=True)
class Post:
    query: bytes


Action = Commit | Reveal | Close | Serve | Post


@dataclass(frozen=True)
class BidMemo:
    """The miner's private record of one bid: what only it knows (salt, price) and when it
    last sent each transaction."""

    query: bytes
    price: int
    salt: bytes
    bond: int
    commit_sent: int
    est_ms: float = 0.0  # the job's estimated time with the safety factor
    landed: bool = False
    awarded: bool = False
    reveal_sent: int | None = None
    close_sent: int | None = None
    serving: bool = False
    result_ready: bool = False
    post_sent: int | None = None


def serve_window_ms(cfg: MinerConfig, q: QueryAccount) -> float:
    """Time between the earliest award and the latest post that still lands before the deadline."""
    return max(0, q.deadline_slot - q.reveal_end_slot - 2 * LAND_SLOTS) * cfg.slot_ms


def bid_refusal(cfg: MinerConfig, speed: Speed, q: QueryAccount, slot: int, balance: int,
                queued_ms: float = 0.0) -> str | None:
    """Why this miner does not bid on ``q`` now, or None: it bids. ``queued_ms``: the
    estimated work of its bids not yet served (it runs one job at a time)."""
    if q.status != QueryStatus.OPEN:
        return "not-open"
    if q.model_id != cfg.model_id:
        return "other-model"
    if slot + LAND_SLOTS >= q.commit_end_slot:
        return "commit-window-closing"
    if q.bid_count >= MAX_BIDS_PER_QUERY:
        return "bids-full"
    if cfg.price_per_token > q.max_price_per_token:
        return "price-above-max"
    need = speed.estimate_ms(q.prompt_tokens, q.max_output_tokens) * SPEED_SAFETY_FACTOR
    if need + queued_ms > serve_window_ms(cfg, q):
        return "cannot-finish-in-time"
    if balance < q.bond_lamports + FEE_RESERVE_LAMPORTS:
        return "bond-unaffordable"
    return None


def _due(sent: int | None, slot: int) -> bool:
    return sent is None or slot - sent >= RESEND_SLOTS


@dataclass
class MinerBook:
    """The miner's bids in flight, and the counters ``status`` shows."""

    cfg: MinerConfig
    me: bytes
    speed: Speed
    rng: random.Random
    memos: dict[bytes, BidMemo] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    considered: set[bytes] = field(default_factory=set)
    entered: int = 0
    won: int = 0
    served: int = 0
    lost: int = 0
    expired: int = 0

    def tick(self, slot: int, queries: Mapping[bytes, QueryAccount], my_bids: Mapping[bytes, BidAccount],
             balance: int) -> list[Action]:
        """``queries``: query id -> account (the open ones and those this miner bid on);
        ``my_bids``: query id -> this miner's bid account there. Returns what to send or start."""
        out: list[Action] = []
        for qid, q in queries.items():
            memo = self.memos.get(qid)
            if memo is None:
                if qid in self.considered:
                    continue
                why = bid_refusal(self.cfg, self.speed, q, slot, balance, self.queued_ms())
                if why is not None:
                    self.refused[why] = self.refused.get(why, 0) + 1
                    self.considered.add(qid)
                    continue
                price = self.cfg.price_per_token
                salt = self.rng.getrandbits(256).to_bytes(32, "little")
                est = self.speed.estimate_ms(q.prompt_tokens, q.max_output_tokens) * SPEED_SAFETY_FACTOR
                self.memos[qid] = BidMemo(qid, price, salt, q.bond_lamports, commit_sent=slot, est_ms=est)
                self.considered.add(qid)
                balance -= q.bond_lamports
                out.append(Commit(qid, price, salt))
                continue
            act = self._step(slot, q, my_bids.get(qid), memo)
            if act is not None:
                out.append(act)
        for qid in [k for k in self.memos if k not in queries]:
            del self.memos[qid]  # final and no longer listed
        return out

    def _step(self, slot: int, q: QueryAccount, bid: BidAccount | None, m: BidMemo) -> Action | None:
        qid = m.query
        if bid is not None and not m.landed:
            self.entered += 1
            m = self.memos[qid] = replace(m, landed=True)
        if q.status == QueryStatus.OPEN:
            if bid is None:
                if slot + LAND_SLOTS < q.commit_end_slot and _due(m.commit_sent, slot):
                    self.memos[qid] = replace(m, commit_sent=slot)
                    return Commit(qid, m.price, m.salt)
                if slot >= q.commit_end_slot + RESEND_SLOTS:
                    del self.memos[qid]  # the commit never landed: nothing locked
                return None
            if bid.status == BidStatus.COMMITTED and q.commit_end_slot <= slot < q.reveal_end_slot:
                if _due(m.reveal_sent, slot):
                    self.memos[qid] = replace(m, reveal_sent=slot)
                    return Reveal(qid, m.price, m.salt)
                return None
            if slot >= q.reveal_end_slot and _due(m.close_sent, slot):
                self.memos[qid] = replace(m, close_sent=slot)
                return Close(qid)
            return None
        if q.status == QueryStatus.AWARDED and q.winner == self.me:
            if not m.awarded:
                self.won += 1
                m = self.memos[qid] = replace(m, awarded=True)
            if slot >= q.deadline_slot:
                return None  # too late: expire (by anyone) slashes the bond
            if not m.serving:
                self.memos[qid] = replace(m, serving=True)
                return Serve(qid)
            if m.result_ready and _due(m.post_sent, slot):
                self.memos[qid] = replace(m, post_sent=slot)
                return Post(qid)
            return None
        # final for this miner: lost, refunded, posted, expired
        if q.status == QueryStatus.RESULT_POSTED and q.winner == self.me:
            self.served += 1
        elif q.status == QueryStatus.EXPIRED and q.winner == self.me:
            self.expired += 1
        elif m.landed:
            self.lost += 1
        del self.memos[qid]
        return None

    def queued_ms(self) -> float:
        """Estimated work of every bid in flight not yet served: each may still be won,
        and jobs run one at a time (so a backlog never makes a won query miss its deadline)."""
        return sum(m.est_ms for m in self.memos.values() if not m.result_ready)

    def job_done(self, query: bytes, prompt_tokens: int, output_tokens: int, elapsed_ms: float) -> None:
        m = self.memos.get(query)
        if m is not None:
            self.memos[query] = replace(m, result_ready=True)
        self.speed = self.speed.observe(prompt_tokens, output_tokens, elapsed_ms)

    def job_failed(self, query: bytes) -> None:
        """The prompt could not be fetched or the model failed: try again at the next tick."""
        m = self.memos.get(query)
        if m is not None:
            self.memos[query] = replace(m, serving=False)

    def bonds_locked(self, my_bids: Mapping[bytes, BidAccount]) -> int:
        return sum(b.bond_lamports for b in my_bids.values()
                   if b.status in (BidStatus.COMMITTED, BidStatus.REVEALED, BidStatus.WON, BidStatus.HELD))
