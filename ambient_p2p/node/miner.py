"""The miner service (``join``/``run --miner``; normative text: spec/auction.md "The miner
service"). A shell around the pure policy ``core/miner_policy.py``: at every frozen slot
(at least twice a slot) it reads the auction accounts of the node's best bank, asks the
policy what to do, and does it:

* registers the node's identity as a miner (``register_miner``) before anything else;
* commits, reveals and closes through the node's own mempool and the ``txs`` gossip topic
  (what the ``submit_tx`` control command does);
* when it won, fetches the prompt blob by the query's ``prompt_hash``, runs the model with
  PoL fingerprints from the same pass (``model/runner.prove``) in a worker thread (one job
  at a time, ``trio.to_thread``: torch releases the GIL, the event loop keeps running),
  stores the answer blob under ``output_hash`` and the PoL proof on disk (the openings the
  Logit Pool will ask for), and posts the result.

The model is loaded and its speed measured (a short calibration generation) in the worker
before the first bid: the policy's "cannot finish in time, do not bid" rule uses it.

A route miner (``--route``, spec/shard.md "Route drivers") never loads the weights: every
forward pass runs on the stage servers, so it reads only the model's metadata
(``model/stages.py model_meta``: id, layer count, eos, dtype -> PoL tier) and measures its
speed with the same calibration generation driven through the route itself.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..core import auction as au
from ..core import auction_tx as atx
from ..core import miner_policy as mp
from ..core.blobs import BLOB_RETENTION_SLOTS, BlobError, blob_tokens, token_blob
from ..core.codec import encode
from ..core.crypto import encode_address, sha256
from .blobs import DEFAULT_FETCH_TIMEOUT_S

if TYPE_CHECKING:  # pragma: no cover
    from ..core.bank import Bank
    from ..model.runner import LoadedModel
    from ..model.stages import ModelMeta
    from .validator import Validator

#: The default ask, lamports per output token (``--miner-price``).
DEFAULT_PRICE_PER_TOKEN = 10
#: Torch CPU threads of the miner's worker (``--miner-threads``): one keeps the node's own
#: work (replay, PoH, gossip) responsive on a small machine.
DEFAULT_MODEL_THREADS = 1
#: Calibration: tokens generated from a short prompt to measure ms per token at start-up.
CALIBRATION_PROMPT = "Count from one to ten."
CALIBRATION_TOKENS = 8
#: A miner that declines queries as too slow for them ("cannot-finish-in-time") and has no
#: job measures its speed again after this long: the speed only changes by serving, so one
#: calibration taken under a passing load (a newcomer's start-up calibrates while it repairs
#: and replays its way to the tip: 871 ms a token observed, 30 times the idle figure) would
#: otherwise keep it from ever bidding.
RECALIBRATE_S = 60.0
#: A route miner's calibration waits this long for its libp2p host to come up and its
#: route to answer; past it (or on a route error) it bids with ``ROUTE_FALLBACK_SPEED``.
ROUTE_CALIBRATION_TIMEOUT_S = 120.0
#: A route miner's speed when its start-up calibration through the route failed: slow
#: (2 s a token, ~25x the ~77 ms a 2-3 stage route took here, issue 21) so it bids only on queries with
#: deadline room; the first served query's ``job_done`` then measures the real figure.
ROUTE_FALLBACK_SPEED_MS_PER_TOKEN = 2000.0
#: Calibration prompt of a route miner, which has no tokenizer: fixed token ids (the speed
#: does not depend on which ids) as long as ``CALIBRATION_PROMPT`` chat-formatted.
ROUTE_CALIBRATION_PROMPT_TOKENS = 24
#: Recent served queries listed in ``status``.
STATUS_RECENT = 8
PROOF_DIR = "pol-proofs"


class BlobAccess(Protocol):
    """What the miner needs of the node's blob service (node/blobs.py ``BlobService``)."""

    async def put(self, data: bytes, keep_until_slot: int) -> bytes: ...

    async def fetch(self, h: bytes, *, timeout_s: float = ...) -> bytes | None: ...


@dataclass(frozen=True)
class MinerOptions:
    price_per_token: int = DEFAULT_PRICE_PER_TOKEN
    model: str = "default"
    threads: int = DEFAULT_MODEL_THREADS
    #: sharded inference (spec/shard.md): serve won queries through a route of these stage
    #: servers (``A:B@/ip4/../p2p/PEER``, node/route.py ``parse_stage_spec``) instead of the
    #: local model; the route's stages are posted for settlement (``post_route``)
    route: tuple[str, ...] = ()


def auction_view(bank: Bank) -> tuple[dict[bytes, au.QueryAccount], dict[bytes, dict[bytes, au.BidAccount]]]:
    """Every query account of ``bank`` and its bids (query -> bidder -> bid)."""
    queries: dict[bytes, au.QueryAccount] = {}
    bids: dict[bytes, dict[bytes, au.BidAccount]] = {}
    for addr, data in bank.auction_accounts.items():
        if data[:1] == bytes([au.Kind.QUERY]):
            queries[addr] = au.QueryAccount.unpack(data)
        elif data[:1] == bytes([au.Kind.BID]):
            b = au.BidAccount.unpack(data)
            bids.setdefault(b.query, {})[b.bidder] = b
    return queries, bids


@dataclass
class _Job:
    result: au.ResultParams
    output: list[int]
    model_s: float
    #: a sharded answer: the stages' signed commitments, posted after the result
    route: tuple[Any, ...] = ()
    route_sent: int | None = None


def _load_and_calibrate(opts: MinerOptions) -> tuple[LoadedModel, mp.Speed]:
    """Worker thread: load the model and measure prefill and decode speed."""
    import torch

    from ..model import runner

    torch.set_num_threads(opts.threads)
    lm = runner.load_model(opts.model)
    return lm, _calibrate(lm)


def _calibrate(lm: LoadedModel) -> mp.Speed:
    """Worker thread: measure prefill and decode speed on the loaded model."""
    from ..model import runner

    prompt = lm.encode_prompt(CALIBRATION_PROMPT)
    runner.generate(lm, prompt, 2, stop_at_eos=False)  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    runner.generate(lm, prompt, 1, stop_at_eos=False)
    prefill_ms = (time.perf_counter() - t0) * 1000
    gen = runner.generate(lm, prompt, CALIBRATION_TOKENS, stop_at_eos=False)
    return _speed_of(prefill_ms, len(prompt), gen.total_s * 1000, len(gen.output))


def _load_meta(opts: MinerOptions) -> ModelMeta:
    """Worker thread: a route miner's model metadata (GGUF header only, no weights)."""
    from ..model.stages import model_meta

    return model_meta(opts.model)


def _speed_of(prefill_ms: float, prompt_len: int, total_ms: float, outputs: int) -> mp.Speed:
    per_token = max(0.0, total_ms - prefill_ms) / max(1, outputs - 1)
    return mp.Speed(ms_per_prompt_token=prefill_ms / prompt_len, ms_per_output_token=per_token)


def _prove(lm: LoadedModel, kp: Any, prompt: list[int], q: au.QueryAccount, proof_path: Path) -> _Job:
    """Worker thread: generate with fingerprints from the same pass, commit, keep the proof."""
    import torch

    from ..core import pol
    from ..model import runner

    tier = pol.Tier.FP32 if lm.dtype == torch.float32 else pol.Tier.BF16
    t0 = time.perf_counter()
    proof, gen, _commit_s = runner.prove(lm, kp, prompt, q.max_output_tokens, tier=tier, temp_milli=q.temp_milli,
                                         sample_seed=q.sample_seed)
    model_s = time.perf_counter() - t0
    proof_path.parent.mkdir(parents=True, exist_ok=True)
    proof_path.write_bytes(encode(proof))
    c = proof.commitment
    return _Job(au.ResultParams(c.output_hash, c.num_tokens, c.tier, c.top_k, c.vocab, c.root, c.signature),
                list(gen.output), model_s)


class MinerService:
    def __init__(self, v: Validator, opts: MinerOptions, blobs: BlobAccess, *,
                 rng: random.Random | None = None) -> None:
        self.v = v
        self.kp = v.kp
        self.opts = opts
        self.blobs = blobs
        self.rng = rng or random.SystemRandom()
        self.book: mp.MinerBook | None = None
        self.lm: LoadedModel | None = None  # the local model (None for a route miner)
        self.meta: ModelMeta | None = None  # a route miner's model metadata (no weights)
        self.route_calibrated = False  # a route miner measured its route (else: the fallback speed)
        self.state = "loading-model"
        self.register_sent: int | None = None
        self.jobs: dict[bytes, _Job] = {}
        self.failures: dict[str, int] = {}
        self.recent: list[dict[str, Any]] = []
        self.txs_sent = 0
        self.worker = trio.CapacityLimiter(1)
        self.wake = trio.Event()
        self.calibrated_at = 0.0  # trio time of the last speed measurement
        self.recalibrations = 0
        self._too_slow_seen = 0  # the policy's "cannot-finish-in-time" count at the last measurement

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        from ..model.gguf_loader import GgufError

        try:
            if self.opts.route:
                self.meta = await trio.to_thread.run_sync(_load_meta, self.opts, limiter=self.worker)
                model_id = self.meta.model_id
            else:
                lm, speed = await trio.to_thread.run_sync(_load_and_calibrate, self.opts, limiter=self.worker)
                self.lm, model_id = lm, lm.model_id
        except (GgufError, OSError, ValueError) as exc:  # a missing model package or file: the node keeps validating
            self.state = f"model-failed: {exc}"
            return
        if self.opts.route:
            self.state = "calibrating-route"
            speed = await self._calibrate_route()
        self.calibrated_at = trio.current_time()
        cfg = mp.MinerConfig(model_id=model_id, price_per_token=self.opts.price_per_token,
                             slot_ms=self.v.slot_ms)
        self.book = mp.MinerBook(cfg, self.kp.pubkey, speed, self.rng)
        self.state = "registering"
        async with trio.open_nursery() as nursery:
            while True:
                if self.v.loaded:
                    await self.tick(nursery)
                with trio.move_on_after(self.v.slot_ms / 2000):
                    await self._woken()

    async def _woken(self) -> None:
        async with trio.open_nursery() as n:
            async def frozen() -> None:
                await self.v.frozen_event.wait()
                n.cancel_scope.cancel()

            async def job() -> None:
                await self.wake.wait()
                self.wake = trio.Event()
                n.cancel_scope.cancel()

            n.start_soon(frozen)
            n.start_soon(job)

    def bank(self) -> Bank | None:
        res = self.v.banks.get(self.v.cons.processed_slot())
        return None if res is None else res.bank

    def slot(self) -> int:
        return self.v.slot_at(self.v.clock.wall_ms())

    async def tick(self, nursery: trio.Nursery) -> None:
        bank, book = self.bank(), self.book
        if bank is None or book is None:
            return
        slot = self.slot()
        me = self.kp.pubkey
        if au.miner_address(me) not in bank.auction_accounts:
            if self.register_sent is None or slot - self.register_sent >= mp.RESEND_SLOTS:
                self.register_sent = slot
                await self.send(atx.register_miner_transaction(self.kp, bank.last_blockhash))
            return
        self.state = "mining"
        queries, bids = auction_view(bank)
        mine = {qid: b[me] for qid, b in bids.items() if me in b}
        listed = {qid: q for qid, q in queries.items() if q.status == au.QueryStatus.OPEN or qid in book.memos}
        for act in book.tick(slot, listed, mine, bank.balance(me)):
            await self.perform(act, bank, queries, bids, nursery)
        await self.post_routes(bank, queries, slot)
        self._maybe_recalibrate(nursery)

    def _maybe_recalibrate(self, nursery: trio.Nursery) -> None:
        """Measure the speed again (``RECALIBRATE_S``) when it declined queries as too slow
        since the last measurement and holds no bid or job (the worker is free)."""
        book, too_slow = self.book, (self.book.refused.get("cannot-finish-in-time", 0) if self.book else 0)
        if (book is None or (self.lm is None and self.meta is None) or too_slow <= self._too_slow_seen or book.memos
                or trio.current_time() - self.calibrated_at < RECALIBRATE_S):
            return
        self._too_slow_seen, self.calibrated_at = too_slow, trio.current_time()
        nursery.start_soon(self._recalibrate, self.lm)

    async def _recalibrate(self, lm: LoadedModel | None) -> None:
        """Measure again: the local model ``lm``, or (a route miner, ``lm`` None) the route."""
        if lm is not None:
            speed = await trio.to_thread.run_sync(_calibrate, lm, limiter=self.worker)
        else:
            async with self.worker:  # one job at a time: the route is the route miner's model
                speed = await self._calibrate_route()
        if self.book is not None:
            self.book.speed = speed
            self.recalibrations += 1
        self.calibrated_at = trio.current_time()

    def _route_driver(self) -> Any:
        """A driver over the configured stage servers (RuntimeError without a libp2p host)."""
        from .route import RouteDriver, parse_stage_spec

        assert self.meta is not None
        host = getattr(getattr(self.v.port, "node", None), "host", None)
        if host is None:
            raise RuntimeError("no libp2p host to drive the route from")
        return RouteDriver(host, [parse_stage_spec(s) for s in self.opts.route],
                           total_layers=self.meta.total_layers, model_id=self.meta.model_id)

    async def _calibrate_route(self) -> mp.Speed:
        """A route miner's speed: ``_calibrate``'s warm-up, one-token and
        ``CALIBRATION_TOKENS`` generations, driven through the route (each its own session
        under a fresh random id, which no query account names). Until the host is up and the
        route answers (``ROUTE_CALIBRATION_TIMEOUT_S``), or on a route error, the
        conservative ``ROUTE_FALLBACK_SPEED_MS_PER_TOKEN``; the first served query's
        measurement replaces it."""
        from .route import RouteError

        assert self.meta is not None
        prompt = [(7 + 31 * i) % self.meta.vocab_size for i in range(ROUTE_CALIBRATION_PROMPT_TOKENS)]
        deadline = trio.current_time() + ROUTE_CALIBRATION_TIMEOUT_S
        while trio.current_time() < deadline:
            with trio.move_on_at(deadline):
                try:
                    speed = await self._measure_route(prompt)
                    self.route_calibrated = True
                    return speed
                except (RuntimeError, RouteError, ValueError, OSError):
                    await trio.sleep(1.0)  # the host is not up yet or a stage is starting: poll, bounded
        self.route_calibrated = False
        return mp.Speed(ms_per_prompt_token=ROUTE_FALLBACK_SPEED_MS_PER_TOKEN / 10,
                        ms_per_output_token=ROUTE_FALLBACK_SPEED_MS_PER_TOKEN)

    async def _measure_route(self, prompt: list[int]) -> mp.Speed:
        driver = self._route_driver()
        await driver.generate(secrets.token_bytes(32), prompt, 2)  # warm-up (connections, allocations)
        t0 = time.perf_counter()
        await driver.generate(secrets.token_bytes(32), prompt, 1)
        prefill_ms = (time.perf_counter() - t0) * 1000
        ans = await driver.generate(secrets.token_bytes(32), prompt, CALIBRATION_TOKENS)
        return _speed_of(prefill_ms, len(prompt), ans.total_s * 1000, len(ans.output))

    async def perform(self, act: mp.Action, bank: Bank, queries: dict[bytes, au.QueryAccount],
                      bids: dict[bytes, dict[bytes, au.BidAccount]], nursery: trio.Nursery) -> None:
        bh = bank.last_blockhash
        if isinstance(act, mp.Commit):
            await self.send(atx.commit_bid_transaction(self.kp, act.query, act.price, act.salt, bh))
        elif isinstance(act, mp.Reveal):
            await self.send(atx.reveal_bid_transaction(self.kp, act.query, act.price, act.salt, bh))
        elif isinstance(act, mp.Close):
            q = queries[act.query]
            order = sorted(bids.get(act.query, {}).values(), key=lambda b: b.index)
            if len(order) == q.bid_count:
                await self.send(atx.close_auction_transaction(self.kp, act.query, q.requester,
                                                              [b.bidder for b in order], bh))
        elif isinstance(act, mp.Serve):
            nursery.start_soon(self.serve, queries[act.query])
        elif isinstance(act, mp.Post):
            job = self.jobs.get(act.query)
            if job is not None:
                await self.send(atx.post_result_transaction(self.kp, act.query, job.result, bh))
                if job.route:
                    # right behind the result (arrival order holds through the mempool and
                    # gossip), not a slot later: a settle must find the route account, or it
                    # pays the answer as unsharded (spec/shard.md "Settlement")
                    await self._post_route(act.query, job, bank)

    async def send(self, raw: bytes) -> None:
        self.txs_sent += 1
        self.v.add_tx(raw)
        if self.v.port is not None:
            await self.v.port.publish("txs", raw)

    # -- serving a won query ---------------------------------------------------------------
    def _fail(self, qid: bytes, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1
        if self.book is not None:
            self.book.job_failed(qid)

    async def serve(self, q: au.QueryAccount) -> None:
        assert (self.lm is not None or self.meta is not None) and self.book is not None
        qid = au.query_address(q.requester, q.nonce)
        try:
            data = await self.blobs.fetch(q.prompt_hash, timeout_s=DEFAULT_FETCH_TIMEOUT_S)
        except BlobError:  # e.g. the store is full
            data = None
        if data is None:
            return self._fail(qid, "prompt-unavailable")
        try:
            if sha256(data) != q.prompt_hash:
                raise BlobError("bad-hash", "the prompt blob does not hash to the query's prompt_hash")
            prompt = blob_tokens(data)
        except BlobError:
            return self._fail(qid, "prompt-malformed")
        proof_path = self.v.data_dir / PROOF_DIR / f"{qid.hex()}.cbor"
        try:
            if self.opts.route:
                job = await self._prove_route(prompt, q, qid, proof_path)
            else:
                assert self.lm is not None
                job = await trio.to_thread.run_sync(_prove, self.lm, self.kp, prompt, q, proof_path,
                                                    limiter=self.worker)
        except (RuntimeError, ValueError, OSError):
            return self._fail(qid, "model-error")
        try:
            await self.blobs.put(token_blob(job.output), q.deadline_slot + BLOB_RETENTION_SLOTS)
        except BlobError:
            return self._fail(qid, "answer-not-stored")
        self.jobs[qid] = job
        self.v.timings.observe("model_prove", job.model_s)  # /metrics: the model's forward passes for one query
        self.book.job_done(qid, len(prompt), len(job.output), job.model_s * 1000)
        self.recent = [*self.recent, {"query": encode_address(qid), "tokens": len(job.output),
                                      "model_s": round(job.model_s, 2)}][-STATUS_RECENT:]
        self.wake.set()

    async def _prove_route(self, prompt: list[int], q: au.QueryAccount, qid: bytes, proof_path: Path) -> _Job:
        """Serve through the configured route (node/route.py): the same proof bytes as the
        local model on the same build; the stage commitments go into the job for
        ``post_route``. A route failure is a ``RuntimeError`` (``model-error``)."""
        import torch

        from ..core import pol
        from .route import RouteError, prove_through_route

        assert self.meta is not None
        driver = self._route_driver()
        tier = pol.Tier.FP32 if self.meta.dtype == torch.float32 else pol.Tier.BF16
        t0 = time.perf_counter()
        try:
            proof, ans = await prove_through_route(driver, self.kp, qid, prompt, q.max_output_tokens, tier=tier,
                                                   temp_milli=q.temp_milli, sample_seed=q.sample_seed,
                                                   eos_token_id=self.meta.eos_token_id)
        except RouteError as exc:
            raise RuntimeError(str(exc)) from None
        model_s = time.perf_counter() - t0

        def keep() -> None:  # the proof store (disk): off the event loop
            proof_path.parent.mkdir(parents=True, exist_ok=True)
            proof_path.write_bytes(encode(proof))

        await trio.to_thread.run_sync(keep)
        c = proof.commitment
        return _Job(au.ResultParams(c.output_hash, c.num_tokens, c.tier, c.top_k, c.vocab, c.root, c.signature),
                    list(ans.output), model_s, route=tuple(ans.commitments))

    async def post_routes(self, bank: Bank, queries: dict[bytes, au.QueryAccount], slot: int) -> None:
        """A sharded answer whose result landed: post its route (spec/shard.md "Payment")
        until the route account exists or the query moved on (the first send goes right
        behind ``post_result``)."""
        for qid, job in self.jobs.items():
            q = queries.get(qid)
            if not job.route or q is None or q.status != au.QueryStatus.RESULT_POSTED:
                continue
            if job.route_sent is None or slot - job.route_sent >= mp.RESEND_SLOTS:
                await self._post_route(qid, job, bank)

    async def _post_route(self, qid: bytes, job: _Job, bank: Bank) -> None:
        """Send ``post_route`` for a sharded answer unless its route account exists."""
        from ..core.shard import route_address

        if route_address(qid) in bank.auction_accounts:
            return
        job.route_sent = self.slot()
        await self.send(atx.post_route_transaction(self.kp, qid, job.route, bank.last_blockhash))

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        b = self.book
        bank = self.bank()
        locked = 0
        if b is not None and bank is not None:
            _q, bids = auction_view(bank)
            locked = b.bonds_locked({qid: bb[self.kp.pubkey] for qid, bb in bids.items() if self.kp.pubkey in bb})
        out: dict[str, Any] = {"state": self.state, "price_per_token": self.opts.price_per_token,
                               "model": self.lm.name if self.lm else self.meta.name if self.meta else None, "txs_sent": self.txs_sent,
                               "failures": dict(self.failures), "recent": list(self.recent), "bonds_locked": locked}
        if b is not None:
            out |= {"model_id": b.cfg.model_id.hex(), "ms_per_output_token": round(b.speed.ms_per_output_token, 1),
                    "ms_per_prompt_token": round(b.speed.ms_per_prompt_token, 2), "auctions_entered": b.entered,
                    "auctions_won": b.won, "queries_served": b.served, "auctions_lost": b.lost,
                    "expired": b.expired, "in_flight": len(b.memos), "not_bid": dict(b.refused),
                    "recalibrations": self.recalibrations}
        if self.opts.route:
            out["route_calibrated"] = self.route_calibrated
        return out

    def status_line(self) -> str:
        s = self.status()
        return (f"miner={s['state']} entered={s.get('auctions_entered', 0)} won={s.get('auctions_won', 0)} "
                f"served={s.get('queries_served', 0)} bonds={s['bonds_locked']}")
