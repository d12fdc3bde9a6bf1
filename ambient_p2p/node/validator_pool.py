"""The Logit Pool on a node (normative text: spec/logit_pool.md "The node side").

Two parts, composed onto the validator by node/roles.py:

* :class:`ProofStore` serves ``/ambient/pol-open/1`` from the PoL proofs this node's miner
  kept (``DATA_DIR/pol-proofs/<query hex>.cbor``, node/miner.py): a request names a
  commitment hash and positions; the answer is one encoded :class:`~ambient_p2p.core.pol.PolOpening`
  per position. Files are decoded in a worker thread (a proof is up to a few hundred KiB).
* :class:`PoolValidator` (``--logit-pool``): at every frozen slot it reads the
  ``RESULT_POSTED`` queries of the node's best frozen bank and derives each one's draw
  (core/logit_pool.py ``draw_of``, as the program will). Where this node is drawn and has not
  voted it fetches the prompt and answer blobs (by ``prompt_hash``/``output_hash``) and the
  openings at its positions (``/ambient/pol-open/1``, from any peer; they are checked against
  the commitment, so a wrong peer cannot fool it), re-runs the model once per proof in a worker
  thread (model/validate.py; torch releases the GIL, the event loop keeps producing and voting)
  and sends the verdict transaction (a reject carries the failing opening). Once a quorum is
  visible, or the window is over, it sends ``settle``.
* Retrospective slashing (spec/logit_pool.md "Retrospective slashing"): a node whose reject
  was outvoted challenges the verified result (with the opening at the failing position when
  that leaf contradicts itself, else its evidence); a drawn juror re-runs the model at the
  disputed position and rules; decided disputes and, after the window, the held bond are
  ``close``d.
* Audits (spec/logit_pool.md "The node side", audits): a node that was not drawn checks a
  share of the verified results whose bond is still held (``audit_percent``, picked by a hash
  of the round-0 beacon, its key and the query, so nobody knows before the beacon which results
  a node audits) exactly as a drawn validator would; a failure is challenged as above. Without
  it a result whose whole draw colluded would never be challenged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..core import auction as au
from ..core import auction_tx as atx
from ..core import logit_pool as lp
from ..core import pol
from ..core.bank import pool_view
from ..core.blobs import BlobError, blob_tokens
from ..core.codec import DecodeError, decode, encode
from ..core.crypto import encode_address, sha256
from ..core.lstake import epoch_of, epoch_shares
from ..core.miner_policy import RESEND_SLOTS
from ..core.shard import load_route
from ..net.messages import PolOpenRequest, PolOpenResponse
from ..net.reqresp import PROTO_POL_OPEN, ReqRespError
from .blobs import DEFAULT_FETCH_TIMEOUT_S
from .miner import PROOF_DIR, BlobAccess, auction_view

if TYPE_CHECKING:  # pragma: no cover
    from ..core.bank import Bank
    from ..core.schedule import ScheduleBook
    from ..model.runner import LoadedModel
    from .validator import Validator

#: seconds one pol-open request may take (the openings of one validator: 8 x ~0.5 KiB)
POL_OPEN_TIMEOUT_S = 4.0
#: peers asked per round of an openings fetch, and seconds between rounds
POL_OPEN_MAX_PEERS = 8
POL_OPEN_RETRY_S = 0.5
#: torch CPU threads of the pool's worker: one, as the miner's (node/miner.py)
DEFAULT_POOL_THREADS = 1
#: recent verdicts listed in ``status``
STATUS_RECENT = 8
#: checks of one query that may fail (data unavailable) before this node gives up on it and
#: says so on chain (an unavailable verdict, spec/logit_pool.md "Unavailable data")
MAX_CHECK_ATTEMPTS = 3
#: a failed check this close to the window's end sends the unavailable verdict at once: a
#: check waits up to half the window for openings (and 10 s per blob), so a second attempt
#: would end past the window, and the verdict takes a few slots to land
UNAVAILABLE_MARGIN_SLOTS = lp.VERIFY_WINDOW_SLOTS // 2
#: percent of the verified results (bond still held) a validator that was not drawn for them
#: re-checks during the challenge window (spec/logit_pool.md "The node side", audits): a tenth
#: adds a tenth of a drawn validator's work per outsider, and a result that a colluding draw
#: verified is audited by some honest outsider with probability 1 - 0.9^n over n outsiders
DEFAULT_AUDIT_PERCENT = 10
#: domain of the audit pick: sha256(AUDIT_DOMAIN || round-0 beacon || node key || query id)
AUDIT_DOMAIN = b"ambient/pool-audit/v1\x00"
#: seconds an audit waits for its openings (the challenge window is 64 slots)
AUDIT_OPEN_TIMEOUT_S = 10.0


class ProofStore:
    """The PoL proofs of ``DATA_DIR/pol-proofs``, by commitment hash."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / PROOF_DIR
        self._by_cmt: dict[bytes, Path] = {}
        self._seen: set[str] = set()
        self.served = 0
        self.unknown = 0

    def _scan(self) -> None:
        if not self.dir.is_dir():
            return
        for p in sorted(self.dir.glob("*.cbor")):
            if p.name in self._seen:
                continue
            self._seen.add(p.name)
            try:
                proof = decode(p.read_bytes(), expected=pol.PolProof)
            except (OSError, DecodeError):
                continue
            self._by_cmt[proof.commitment.hash()] = p

    def openings(self, cmt_hash: bytes, positions: tuple[int, ...]) -> list[bytes] | None:
        """Encoded openings at ``positions`` of the proof whose commitment hashes to
        ``cmt_hash`` (blocking: call it in a worker thread), or None."""
        if cmt_hash not in self._by_cmt:
            self._scan()
        path = self._by_cmt.get(cmt_hash)
        if path is None:
            self.unknown += 1
            return None
        try:
            proof = decode(path.read_bytes(), expected=pol.PolProof)
        except (OSError, DecodeError):
            return None
        if any(not 0 <= p < len(proof.fps) for p in positions):
            return None
        self.served += 1
        return [encode(o) for o in pol.open_positions(proof, positions)]

    async def handler(self, _peer: Any, req: PolOpenRequest) -> PolOpenResponse:
        got = await trio.to_thread.run_sync(self.openings, req.commitment, tuple(req.positions))
        if got is None:
            raise ReqRespError("not-found", "no proof for this commitment and positions")
        return PolOpenResponse(nonce=req.nonce, openings=tuple(got))


@dataclass
class PoolStats:
    drawn: int = 0
    verdicts_sent: int = 0
    accepted: int = 0
    rejected: int = 0
    settles_sent: int = 0
    challenges_sent: int = 0
    rulings_sent: int = 0
    closes_sent: int = 0
    #: verified results this node re-checked without being drawn, and those that failed
    audits: int = 0
    audit_failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    recent: list[dict[str, Any]] = field(default_factory=list)
    #: seconds of model work per verdict (the forward pass and checks), last few
    validate_s: list[float] = field(default_factory=list)


def chain_counts(bank: Bank) -> dict[str, int]:
    """Queries by Logit Pool outcome in ``bank`` (``status``): answered (a result was
    posted), accepted, rejected, slashed (a rejected result's bond), awaiting a verdict."""
    queries, bids = auction_view(bank)
    out = {"answered": 0, "accepted": 0, "rejected": 0, "slashed": 0, "awaiting": 0}
    for qid, q in queries.items():
        if q.status in (au.QueryStatus.RESULT_POSTED, au.QueryStatus.FINALIZED_VERIFIED,
                        au.QueryStatus.FINALIZED_REJECTED):
            out["answered"] += 1
        if q.status == au.QueryStatus.RESULT_POSTED:
            out["awaiting"] += 1
        elif q.status == au.QueryStatus.FINALIZED_VERIFIED:
            out["accepted"] += 1
        elif q.status == au.QueryStatus.FINALIZED_REJECTED:
            out["rejected"] += 1
            b = bids.get(qid, {}).get(q.winner)
            if b is not None and b.status == au.BidStatus.SLASHED:
                out["slashed"] += 1
    return out


def work_table(bank: Bank) -> dict[str, dict[str, int]]:
    """The work accounts of ``bank`` (``status``): per identity its epoch's pool work and slashes."""
    out: dict[str, dict[str, int]] = {}
    for k in sorted(bank.work_accounts):
        w = bank.work_account(k)
        if w is not None:
            out[encode_address(k)] = {"tokens_served": w.tokens_served, "positions_validated": w.positions_validated,
                                      "slashes": w.slashes, "total_tokens_served": w.total_tokens_served,
                                      "total_positions_validated": w.total_positions_validated,
                                      "total_slashes": w.total_slashes, "last_slash_slot": w.last_slash_slot}
    return out


#: epochs below the root's epoch whose shares ``status`` lists (with the root's and the next)
STATUS_PAST_EPOCHS = 2


def epoch_table(book: ScheduleBook) -> dict[str, dict[str, dict[str, int]]]:
    """``status``'s ``epochs``: for each epoch near the root whose LStake snapshot is rooted
    here (``ScheduleBook.available``), per identity its LStake (the epoch's vote and draw
    weight), leader slots and first-pick draw probability in ppm (core/lstake.py
    ``epoch_shares``)."""
    root_epoch = epoch_of(book.credited_through, book.spe)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for e in range(max(0, root_epoch - STATUS_PAST_EPOCHS), root_epoch + 2):
        if not book.available(e):
            continue
        weights, schedule = book.vote_weights(e), book.schedule(e)
        if weights is None or schedule is None:
            continue
        out[str(e)] = {encode_address(k): {"lstake": s.lstake, "leader_slots": s.leader_slots, "draw_ppm": s.draw_ppm}
                       for k, s in epoch_shares(weights, schedule).items()}
    return out


def _judge(lm: LoadedModel, cmt: pol.PolCommitment, prompt: list[int], output: list[int],
           opening: pol.PolOpening) -> tuple[bool, str, float]:
    """Worker thread: a juror's check of one disputed opening (spec/pol.md ``check_opening``
    and ``compare`` at its position, one forward pass). Returns (fraud, reason, seconds)."""
    import time

    from ..model.validate import recompute_logprobs

    t0 = time.perf_counter()
    pos = opening.fp.pos
    if not 0 <= pos < len(output):
        return True, pol.Reason.WRONG_POSITION, 0.0
    shape = pol.check_opening(cmt, opening, pos, output)
    if not shape.ok:
        return True, shape.reason, time.perf_counter() - t0
    res = pol.compare(cmt, opening.fp, recompute_logprobs(lm, prompt, output, [pos])[pos])
    return not res.ok, res.reason, time.perf_counter() - t0


def _load_model(name: str, threads: int) -> LoadedModel:
    import torch

    from ..model import runner

    torch.set_num_threads(threads)
    return runner.load_model(name)


def _validate(lm: LoadedModel, cmt: pol.PolCommitment, prompt: list[int], output: list[int], positions: list[int],
              openings: list[pol.PolOpening]) -> tuple[pol.Check, float]:
    """Worker thread: one forward pass over the proof (model/validate.py)."""
    from ..model.validate import validate

    res = validate(lm, cmt, prompt, output, positions, openings)
    return res.check, res.total_s


class PoolValidator:
    def __init__(self, v: Validator, blobs: BlobAccess, *, model: str = "default",
                 threads: int = DEFAULT_POOL_THREADS, rng: random.Random | None = None,
                 audit_percent: int = DEFAULT_AUDIT_PERCENT) -> None:
        if not 0 <= audit_percent <= 100:
            raise ValueError(f"audit_percent must be 0..100, not {audit_percent}")
        self.v = v
        self.audit_percent = audit_percent
        self.kp = v.kp
        self.blobs = blobs
        self.model = model
        self.threads = threads
        self.rng = rng or random.SystemRandom()
        self.lm: LoadedModel | None = None
        self.state = "loading-model"
        self.stats = PoolStats()
        self.worker = trio.CapacityLimiter(1)
        #: query -> the slot its verdict was sent (resent after RESEND_SLOTS while it has not landed)
        self.sent: dict[bytes, int] = {}
        #: query -> the verdict transaction already built (resent as is, newer blockhash aside)
        self.verdicts: dict[bytes, tuple[bool, pol.PolOpening | None]] = {}
        #: queries whose verdict is "unavailable" (this node could not obtain what it must check)
        self.unavailable: set[bytes] = set()
        self.busy: set[bytes] = set()
        self.attempts: dict[bytes, int] = {}
        self.settle_sent: dict[bytes, int] = {}
        #: queries this node rejected: (the failing position, its evidence), for a challenge
        #: if the result is verified anyway
        self.disputable: dict[bytes, tuple[int | None, pol.PolOpening]] = {}
        #: query -> (evidence, slot sent) of this node's challenge
        self.challenged: dict[bytes, tuple[pol.PolOpening, int]] = {}
        #: query -> (fraud, slot sent) of this node's ruling as a juror
        self.ruled: dict[bytes, tuple[bool, int]] = {}
        self.close_sent: dict[bytes, int] = {}
        #: verified queries this node audited (or began to)
        self.audited: set[bytes] = set()

    async def run(self) -> None:
        from ..model.gguf_loader import GgufError

        try:
            self.lm = await trio.to_thread.run_sync(_load_model, self.model, self.threads, limiter=self.worker)
        except (GgufError, OSError, ValueError) as exc:
            self.state = f"model-failed: {exc}"
            return
        self.state = "validating"
        async with trio.open_nursery() as nursery:
            while True:
                if self.v.loaded:
                    await self.tick(nursery)
                with trio.move_on_after(self.v.slot_ms / 2000):
                    await self.v.frozen_event.wait()

    def bank(self) -> Bank | None:
        res = self.v.banks.get(self.v.cons.processed_slot())
        return None if res is None else res.bank

    def slot(self) -> int:
        return self.v.slot_at(self.v.clock.wall_ms())

    async def send(self, raw: bytes) -> None:
        self.v.add_tx(raw)
        if self.v.port is not None:
            await self.v.port.publish("txs", raw)

    def _fail(self, why: str) -> None:
        self.stats.failures[why] = self.stats.failures.get(why, 0) + 1

    async def tick(self, nursery: trio.Nursery) -> None:
        bank = self.bank()
        if bank is None:
            return
        slot = self.slot()
        me = self.kp.pubkey
        queries, bids = auction_view(bank)
        view = pool_view(bank)
        for qid, q in queries.items():
            if q.status == au.QueryStatus.FINALIZED_VERIFIED:
                bid = bids.get(qid, {}).get(q.winner)
                if bid is not None and bid.status == au.BidStatus.HELD:
                    await self.retro(bank, slot, qid, q, nursery)
                    continue
            if q.status != au.QueryStatus.RESULT_POSTED:
                for memo in (self.disputable, self.challenged, self.ruled, self.close_sent):
                    memo.pop(qid, None)
                self.audited.discard(qid)
                self.sent.pop(qid, None)
                self.verdicts.pop(qid, None)
                self.unavailable.discard(qid)
                self.settle_sent.pop(qid, None)
                self.attempts.pop(qid, None)
                continue
            d = lp.draw_of(view, q, qid)
            if d is None or me not in d.validators:
                continue
            i = d.validators.index(me)
            accepts, rejects = d.count(lp.ACCEPT), d.count(lp.REJECT)
            decided = accepts >= d.quorum or rejects >= d.quorum
            if decided or bank.slot + 1 > d.verify_end_slot:
                last = self.settle_sent.get(qid)
                if last is None or slot - last >= RESEND_SLOTS:
                    self.settle_sent[qid] = slot
                    self.stats.settles_sent += 1
                    await self.send(atx.settle_transaction(self.kp, q, qid, d.validators, bank.last_blockhash,
                                                           load_route(view, qid)))  # a sharded answer's stages
                continue
            if i not in d.current() or d.verdicts[i] != lp.NO_VERDICT:
                continue
            if qid in self.verdicts:
                last = self.sent.get(qid, slot)
                if slot - last >= RESEND_SLOTS:
                    self.sent[qid] = slot
                    accept, ev = self.verdicts[qid]
                    await self.send(atx.verdict_transaction(self.kp, qid, accept, ev, bank.last_blockhash,
                                                            unavailable=qid in self.unavailable))
                continue
            if qid not in self.busy and self.attempts.get(qid, 0) < MAX_CHECK_ATTEMPTS:
                self.busy.add(qid)
                self.attempts[qid] = self.attempts.get(qid, 0) + 1
                if self.attempts[qid] == 1:
                    self.stats.drawn += 1
                nursery.start_soon(self.check, qid, q, d.positions_of(q, i), d.verify_end_slot)

    async def _openings(self, cmt_hash: bytes, positions: list[int], timeout_s: float) -> list[pol.PolOpening] | None:
        port = self.v.port
        if port is None:
            return None
        deadline = trio.current_time() + timeout_s
        while trio.current_time() < deadline:
            peers = list(port.peers())
            self.rng.shuffle(peers)
            for peer in peers[:POL_OPEN_MAX_PEERS]:
                req = PolOpenRequest(commitment=cmt_hash, positions=tuple(positions),
                                     nonce=self.rng.getrandbits(32))
                try:
                    resp = await port.request(peer, PROTO_POL_OPEN, req, POL_OPEN_TIMEOUT_S)
                except ReqRespError:
                    continue
                try:
                    ops = [decode(b, expected=pol.PolOpening) for b in resp.openings]
                except DecodeError:
                    continue
                if len(ops) == len(positions) and all(o.cmt == cmt_hash for o in ops):
                    return ops
            await trio.sleep(POL_OPEN_RETRY_S)
        return None

    async def _unavailable(self, qid: bytes, why: str, verify_end: int | None) -> None:
        """A check that found no data: counted; on the last attempt, or near the window's end,
        the unavailable verdict (spec/logit_pool.md "Unavailable data")."""
        self._fail(why)
        if self.attempts.get(qid, 0) < MAX_CHECK_ATTEMPTS and (
                verify_end is None or self.slot() < verify_end - UNAVAILABLE_MARGIN_SLOTS):
            return  # tick tries again
        self.verdicts[qid] = (False, None)
        self.unavailable.add(qid)
        self.sent[qid] = self.slot()
        self.stats.verdicts_sent += 1
        self.stats.recent = [*self.stats.recent, {"query": encode_address(qid), "accept": False, "reason": why,
                                                  "unavailable": True, "s": 0.0}][-STATUS_RECENT:]
        bank = self.bank()
        if bank is not None:
            await self.send(atx.verdict_transaction(self.kp, qid, False, None, bank.last_blockhash, unavailable=True))

    async def check(self, qid: bytes, q: au.QueryAccount, positions: list[int], verify_end: int | None = None) -> None:
        assert self.lm is not None
        try:
            cmt = q.pol_commitment()
            # half of what is left of this round's window (an extension's ends long after
            # round 0's, which the result slot alone would give)
            end = verify_end if verify_end is not None else \
                q.result_slot + lp.DRAW_DELAY_SLOTS + lp.VERIFY_WINDOW_SLOTS
            t_window = max(1.0, (end - self.slot()) * self.v.slot_ms / 1000 / 2)
            prompt_b = await self.blobs.fetch(q.prompt_hash, timeout_s=DEFAULT_FETCH_TIMEOUT_S)
            output_b = await self.blobs.fetch(q.output_hash, timeout_s=DEFAULT_FETCH_TIMEOUT_S)
            openings = await self._openings(cmt.hash(), positions, t_window)
            if openings is None:
                return await self._unavailable(qid, "openings-unavailable", verify_end)
            if prompt_b is None or output_b is None:
                # no answer to check against (a miner that committed to an answer it does not
                # serve: devnet fault wrong-output)
                return await self._unavailable(qid, "blobs-unavailable", verify_end)
            try:
                if sha256(prompt_b) != q.prompt_hash or sha256(output_b) != q.output_hash:
                    return await self._unavailable(qid, "blob-mismatch", verify_end)
                prompt, output = blob_tokens(prompt_b), blob_tokens(output_b)
            except BlobError:
                return await self._unavailable(qid, "blob-malformed", verify_end)
            check, total_s = await trio.to_thread.run_sync(_validate, self.lm, cmt, prompt, output, positions,
                                                           openings, limiter=self.worker)
            self.stats.validate_s = [*self.stats.validate_s, round(total_s, 3)][-STATUS_RECENT:]
            evidence = None
            if not check.ok:
                by_pos = {o.fp.pos: o for o in openings}
                evidence = by_pos.get(check.position if check.position is not None else -1, openings[0])
                self.disputable[qid] = (check.position, evidence)
            self.verdicts[qid] = (check.ok, evidence)
            self.sent[qid] = self.slot()
            if check.ok:
                self.stats.accepted += 1
            else:
                self.stats.rejected += 1
            self.stats.verdicts_sent += 1
            self.stats.recent = [*self.stats.recent, {"query": encode_address(qid), "accept": check.ok,
                                                      "reason": check.reason, "s": round(total_s, 2)}][-STATUS_RECENT:]
            bank = self.bank()
            if bank is not None:
                await self.send(atx.verdict_transaction(self.kp, qid, check.ok, evidence, bank.last_blockhash))
        except (RuntimeError, ValueError, OSError) as exc:
            self._fail(f"error: {type(exc).__name__}")
        finally:
            self.busy.discard(qid)

    # -- retrospective slashing (spec/logit_pool.md "Retrospective slashing") --------------
    async def _resend(self, sent: dict[bytes, int], qid: bytes, slot: int, raw: bytes) -> bool:
        last = sent.get(qid)
        if last is not None and slot - last < RESEND_SLOTS:
            return False
        sent[qid] = slot
        await self.send(raw)
        return True

    async def retro(self, bank: Bank, slot: int, qid: bytes, q: au.QueryAccount, nursery: trio.Nursery) -> None:
        """A verified query whose bond is still held: rule, challenge or close as this node's part is."""
        me = self.kp.pubkey
        view = pool_view(bank)
        pool = lp.load_pool(view, lp.pool_address(qid))
        if pool is None or pool.settled_slot == 0:
            return
        d = lp.jury_of(view, q, qid)
        involved = me in pool.validators or (d is not None and (me == d.challenger or me in d.jurors))
        if d is not None and d.state == lp.OPEN:
            if me in d.jurors and bank.slot + 1 < d.judge_end_slot:
                i = d.jurors.index(me)
                if d.rulings[i] == lp.NO_RULING:
                    if qid in self.ruled:
                        fraud, last = self.ruled[qid]
                        if slot - last >= RESEND_SLOTS:
                            self.ruled[qid] = (fraud, slot)
                            await self.send(atx.ruling_transaction(self.kp, qid, fraud, bank.last_blockhash))
                    elif qid not in self.busy:
                        self.busy.add(qid)
                        nursery.start_soon(self.judge, qid, q, d)
            decided = (d.count(lp.FRAUD) >= lp.RULING_QUORUM or d.count(lp.NO_FRAUD) >= lp.RULING_QUORUM
                       or (d.drawn and bank.slot + 1 >= d.judge_end_slot))
            if decided and involved and await self._resend(self.close_sent, qid, slot, atx.close_transaction(
                    self.kp, q, qid, [d.challenger, *d.jurors], bank.last_blockhash)):
                self.stats.closes_sent += 1
            return
        release = lp.release_slot(pool, d)
        if bank.slot + 1 >= release:
            if involved and await self._resend(self.close_sent, qid, slot, atx.close_transaction(
                    self.kp, q, qid, [], bank.last_blockhash)):
                self.stats.closes_sent += 1
            return
        if qid not in self.disputable and qid not in self.audited and qid not in self.busy \
                and me not in pool.validators and me != q.winner and self.audits(qid, pool.first_beacon):
            self.audited.add(qid)
            self.busy.add(qid)
            nursery.start_soon(self.audit, qid, q, pool)
            return
        if qid not in self.disputable or (d is not None and d.challenger == me):
            return  # nothing to challenge, or this node's challenge was already decided
        if qid in self.challenged:
            ev, last = self.challenged[qid]
            if slot - last >= RESEND_SLOTS:
                self.challenged[qid] = (ev, slot)
                await self.send(atx.challenge_transaction(self.kp, q, qid, ev, bank.last_blockhash))
        elif qid not in self.busy:
            self.busy.add(qid)
            nursery.start_soon(self.challenge, qid, q)

    def audits(self, qid: bytes, beacon: bytes) -> bool:
        """Whether this node audits verified query ``qid`` (round-0 beacon ``beacon``): its
        ``audit_percent`` share, picked by ``sha256(AUDIT_DOMAIN || beacon || key || qid)``;
        never without the model (a node that checks nothing audits nothing)."""
        if self.lm is None or self.audit_percent <= 0:
            return False
        h = sha256(AUDIT_DOMAIN, beacon, self.kp.pubkey, qid)
        return int.from_bytes(h[:8], "little") % 100 < self.audit_percent

    async def audit(self, qid: bytes, q: au.QueryAccount, pool: lp.PoolAccount) -> None:
        """Not drawn: re-check a verified result as a drawn validator would (its own positions
        from the round-0 beacon, the same ``_validate``); a failure makes the result
        disputable, and ``retro`` challenges it at its next pass."""
        assert self.lm is not None
        try:
            cmt = q.pol_commitment()
            positions = lp.positions_for(q, pool.first_beacon, self.kp.pubkey, pool.positions)
            prompt_b = await self.blobs.fetch(q.prompt_hash, timeout_s=DEFAULT_FETCH_TIMEOUT_S)
            output_b = await self.blobs.fetch(q.output_hash, timeout_s=DEFAULT_FETCH_TIMEOUT_S)
            if prompt_b is None or output_b is None or sha256(prompt_b) != q.prompt_hash \
                    or sha256(output_b) != q.output_hash:
                return self._fail("audit-blobs-unavailable")
            openings = await self._openings(cmt.hash(), positions, AUDIT_OPEN_TIMEOUT_S)
            if openings is None:
                return self._fail("audit-openings-unavailable")
            prompt, output = blob_tokens(prompt_b), blob_tokens(output_b)
            check, total_s = await trio.to_thread.run_sync(_validate, self.lm, cmt, prompt, output, positions,
                                                           openings, limiter=self.worker)
            self.stats.audits += 1
            self.stats.recent = [*self.stats.recent, {"query": encode_address(qid), "audit": check.ok,
                                                      "reason": check.reason, "s": round(total_s, 2)}][-STATUS_RECENT:]
            if not check.ok:
                self.stats.audit_failed += 1
                by_pos = {o.fp.pos: o for o in openings}
                self.disputable[qid] = (check.position,
                                        by_pos.get(check.position if check.position is not None else -1, openings[0]))
        except (RuntimeError, ValueError, OSError, BlobError) as exc:
            self._fail(f"audit-error: {type(exc).__name__}")
        finally:
            self.busy.discard(qid)

    async def challenge(self, qid: bytes, q: au.QueryAccount) -> None:
        """This node rejected a result the pool verified: post a fraud proof. A leaf that
        contradicts itself (decided by the program alone) is preferred: the opening at the
        failing position is fetched when it is not one this node already holds."""
        try:
            bad_pos, evidence = self.disputable[qid]
            cmt = q.pol_commitment()
            if lp.self_contradiction(cmt, evidence.fp) is None and bad_pos is not None and bad_pos != evidence.fp.pos:
                got = await self._openings(cmt.hash(), [bad_pos], POL_OPEN_TIMEOUT_S * 2)
                if got and lp.evidence_error(cmt, got[0], [bad_pos]) is None \
                        and lp.self_contradiction(cmt, got[0].fp) is not None:
                    evidence = got[0]
            bank = self.bank()
            if bank is None:
                return
            self.challenged[qid] = (evidence, self.slot())
            self.stats.challenges_sent += 1
            await self.send(atx.challenge_transaction(self.kp, q, qid, evidence, bank.last_blockhash))
        finally:
            self.busy.discard(qid)

    async def judge(self, qid: bytes, q: au.QueryAccount, d: lp.DisputeAccount) -> None:
        """A drawn juror: fetch the prompt and answer, re-run the model at the disputed position, rule."""
        assert self.lm is not None
        try:
            cmt = q.pol_commitment()
            opening = decode(d.opening, expected=pol.PolOpening)
            prompt_b = await self.blobs.fetch(q.prompt_hash, timeout_s=DEFAULT_FETCH_TIMEOUT_S)
            output_b = await self.blobs.fetch(q.output_hash, timeout_s=DEFAULT_FETCH_TIMEOUT_S)
            if prompt_b is None or output_b is None or sha256(prompt_b) != q.prompt_hash \
                    or sha256(output_b) != q.output_hash:
                return self._fail("jury-blobs-unavailable")
            prompt, output = blob_tokens(prompt_b), blob_tokens(output_b)
            fraud, reason, secs = await trio.to_thread.run_sync(_judge, self.lm, cmt, prompt, output, opening,
                                                                limiter=self.worker)
            self.stats.rulings_sent += 1
            self.stats.recent = [*self.stats.recent, {"query": encode_address(qid), "ruling": "fraud" if fraud else
                                                      "no-fraud", "reason": reason, "s": round(secs, 2)}][-STATUS_RECENT:]
            self.ruled[qid] = (fraud, self.slot())
            bank = self.bank()
            if bank is not None:
                await self.send(atx.ruling_transaction(self.kp, qid, fraud, bank.last_blockhash))
        except (RuntimeError, ValueError, OSError, DecodeError, BlobError) as exc:
            self._fail(f"jury-error: {type(exc).__name__}")
        finally:
            self.busy.discard(qid)

    def status(self) -> dict[str, Any]:
        s = self.stats
        bank = self.bank()
        return {"state": self.state, "drawn": s.drawn, "verdicts_sent": s.verdicts_sent, "accepted": s.accepted,
                "rejected": s.rejected, "settles_sent": s.settles_sent, "challenges_sent": s.challenges_sent,
                "rulings_sent": s.rulings_sent, "closes_sent": s.closes_sent, "audits": s.audits,
                "audit_failed": s.audit_failed, "audit_percent": self.audit_percent, "failures": dict(s.failures),
                "recent": list(s.recent), "validate_s": list(s.validate_s),
                "chain": chain_counts(bank) if bank is not None else None,
                "work": work_table(bank) if bank is not None else None,
                "slots_per_epoch": self.v.book.spe, "epochs": epoch_table(self.v.book)}

    def status_line(self) -> str:
        s = self.stats
        return f"pool={self.state} drawn={s.drawn} ok={s.accepted} rej={s.rejected}"
