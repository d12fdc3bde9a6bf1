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
from ..core.miner_policy import RESEND_SLOTS
from ..net.messages import PolOpenRequest, PolOpenResponse
from ..net.reqresp import PROTO_POL_OPEN, ReqRespError
from .blobs import DEFAULT_FETCH_TIMEOUT_S
from .miner import PROOF_DIR, BlobAccess, auction_view

if TYPE_CHECKING:  # pragma: no cover
    from ..core.bank import Bank
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
#: checks of one query that may fail (data unavailable) before this node gives up on it
MAX_CHECK_ATTEMPTS = 3


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
                 threads: int = DEFAULT_POOL_THREADS, rng: random.Random | None = None) -> None:
        self.v = v
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
        self.busy: set[bytes] = set()
        self.attempts: dict[bytes, int] = {}
        self.settle_sent: dict[bytes, int] = {}

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
        queries, _bids = auction_view(bank)
        view = pool_view(bank)
        for qid, q in queries.items():
            if q.status != au.QueryStatus.RESULT_POSTED:
                self.sent.pop(qid, None)
                self.verdicts.pop(qid, None)
                self.settle_sent.pop(qid, None)
                self.attempts.pop(qid, None)
                continue
            d = lp.draw_of(view, q, qid)
            if d is None or me not in d.validators:
                continue
            i = d.validators.index(me)
            accepts, rejects = d.count(lp.ACCEPT), d.count(lp.REJECT)
            decided = accepts >= lp.VERDICT_QUORUM or rejects >= lp.VERDICT_QUORUM
            if decided or bank.slot + 1 > d.verify_end_slot:
                last = self.settle_sent.get(qid)
                if last is None or slot - last >= RESEND_SLOTS:
                    self.settle_sent[qid] = slot
                    self.stats.settles_sent += 1
                    await self.send(atx.settle_transaction(self.kp, q, qid, d.validators, bank.last_blockhash))
                continue
            if i not in d.current() or d.verdicts[i] != lp.NO_VERDICT:
                continue
            if qid in self.verdicts:
                last = self.sent.get(qid, slot)
                if slot - last >= RESEND_SLOTS:
                    self.sent[qid] = slot
                    accept, ev = self.verdicts[qid]
                    await self.send(atx.verdict_transaction(self.kp, qid, accept, ev, bank.last_blockhash))
                continue
            if qid not in self.busy and self.attempts.get(qid, 0) < MAX_CHECK_ATTEMPTS:
                self.busy.add(qid)
                self.attempts[qid] = self.attempts.get(qid, 0) + 1
                if self.attempts[qid] == 1:
                    self.stats.drawn += 1
                nursery.start_soon(self.check, qid, q, list(lp.positions_for(q, d.beacon_of(i), me)))

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

    async def check(self, qid: bytes, q: au.QueryAccount, positions: list[int]) -> None:
        assert self.lm is not None
        try:
            cmt = q.pol_commitment()
            t_window = max(1.0, (q.result_slot + lp.DRAW_DELAY_SLOTS + lp.VERIFY_WINDOW_SLOTS - self.slot())
                           * self.v.slot_ms / 1000 / 2)
            prompt_b = await self.blobs.fetch(q.prompt_hash, timeout_s=DEFAULT_FETCH_TIMEOUT_S)
            output_b = await self.blobs.fetch(q.output_hash, timeout_s=DEFAULT_FETCH_TIMEOUT_S)
            openings = await self._openings(cmt.hash(), positions, t_window)
            if openings is None:
                return self._fail("openings-unavailable")
            if prompt_b is None or output_b is None:
                # no answer to check against: the committed leaves themselves may still fail
                # the token rule; otherwise no verdict (the miner earns nothing, spec)
                return self._fail("blobs-unavailable")
            try:
                if sha256(prompt_b) != q.prompt_hash or sha256(output_b) != q.output_hash:
                    return self._fail("blob-mismatch")
                prompt, output = blob_tokens(prompt_b), blob_tokens(output_b)
            except BlobError:
                return self._fail("blob-malformed")
            check, total_s = await trio.to_thread.run_sync(_validate, self.lm, cmt, prompt, output, positions,
                                                           openings, limiter=self.worker)
            self.stats.validate_s = [*self.stats.validate_s, round(total_s, 3)][-STATUS_RECENT:]
            evidence = None
            if not check.ok:
                by_pos = {o.fp.pos: o for o in openings}
                evidence = by_pos.get(check.position if check.position is not None else -1, openings[0])
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

    def status(self) -> dict[str, Any]:
        s = self.stats
        bank = self.bank()
        return {"state": self.state, "drawn": s.drawn, "verdicts_sent": s.verdicts_sent, "accepted": s.accepted,
                "rejected": s.rejected, "settles_sent": s.settles_sent, "failures": dict(s.failures),
                "recent": list(s.recent), "validate_s": list(s.validate_s),
                "chain": chain_counts(bank) if bank is not None else None}

    def status_line(self) -> str:
        s = self.stats
        return f"pool={self.state} drawn={s.drawn} ok={s.accepted} rej={s.rejected}"
