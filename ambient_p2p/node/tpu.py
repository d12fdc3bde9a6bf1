"""Transaction ingress like agave's TPU (normative text: spec/tpu.md).

Clients (the CLI's ``submit_tx`` control command, the RPC's ``sendTransaction``) hand
transactions to :meth:`Tpu.submit_transactions`. The node admits them to its own mempool and
sends them in batches (``TxBatch``, at most ``MAX_TXS_PER_TX_BATCH``) over the
``/ambient/tpu/1`` request/response protocol straight to the leaders of the current slot and
the next ``LEADER_FORWARD_SLOTS`` slots (agave forwards to the current and next leaders
too). The ``txs`` gossip topic is only the fallback: used for a batch when no leader
answered.

Every arriving transaction (own submission, a peer's ``TxBatch``) passes, in this order:

1. size and shape (``oversized``, ``short-transaction``), dedupe within the batch;
2. the mempool's byte-only admission checks against the tip bank (``duplicate``,
   ``already-processed``, ``blockhash-expired``, ``mempool-full``; core/pools.py) - no
   signature work is spent on what would be refused anyway;
3. ed25519 verification of what is left, once per node, in batches on a worker pool
   (:class:`SigVerifier`, processes sized to the cores: solders' verify holds the GIL);
4. admission to the mempool marked verified, so the leader executes it without verifying
   again.

Refusals are counted per reason (``Tpu.refused`` and the mempool's ``dropped``) and answered
to the sender in ``TxBatchAck``.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ..core.bank import verify_transaction_signatures
from ..ledger.parallel import exit_with_parent
from ..net.messages import MAX_TPU_REASONS, MAX_TPU_TX_BYTES, MAX_TXS_PER_TX_BATCH, TxBatch, TxBatchAck
from ..net.node import ExtensionBase
from ..net.reqresp import PROTO_TPU, ReqRespError, TokenBucket

if TYPE_CHECKING:  # pragma: no cover
    from .validator import Validator

log = logging.getLogger(__name__)

#: Besides the current slot's leader, the leaders of this many following slots get each
#: batch (distinct identities only): a transaction sent near a slot boundary still reaches
#: the leader that will build the next slot.
LEADER_FORWARD_SLOTS = 4
#: How long a leader gets to acknowledge a batch before the gossip fallback is used.
TPU_REQUEST_TIMEOUT_S = 2.0
#: Below this many transactions a batch is verified in one worker thread: the round trip
#: to a worker process costs more than it saves.
MIN_TXS_FOR_VERIFY_POOL = 32
#: Transactions waiting to be forwarded; more are kept in this node's mempool only (counted).
FORWARD_QUEUE_LEN = 16_384
#: Most transactions one forwarding round sends (8 batches per leader).
FORWARD_MAX_TXS = 8 * MAX_TXS_PER_TX_BATCH
#: A forwarding round waits this long for more submissions to join it.
FORWARD_LINGER_S = 0.005
#: The gossip fallback's token bucket (capacity, transactions per second): gossip carries one
#: transaction per message through every node's shared inbox, where a flood crowds out
#: votes (issue 17); what is over the bucket stays in this node's mempool for its own slots.
GOSSIP_FALLBACK_BUCKET = (64.0, 32.0)
#: Signatures one ``tx_status`` control request may ask about.
MAX_STATUS_SIGNATURES = 1024


#: Most signature-verify worker processes one node starts (``--verify-jobs`` overrides).
MAX_VERIFY_JOBS = 64


def default_verify_jobs(cores: int | None = None) -> int:
    """Signature-verify workers a node starts by default: half the cores, at least one. A
    node's verification shares the machine with its own event loop, replay and PoH worker
    (and, on a localnet, with the other nodes: 4 nodes each starting one worker per core
    on 2 cores ran 8 verifying processes against 2 cores; ``ambient-p2p localnet`` and
    ``bench chain`` pass ``--verify-jobs`` sized to cores per node)."""
    n = (os.cpu_count() or 1) if cores is None else cores
    return max(1, min(MAX_VERIFY_JOBS, n // 2))


def _verify_chunk(raws: list[bytes]) -> list[str | None]:
    """Module-level (picklable) for the worker processes."""
    return verify_transaction_signatures(raws)


class SigVerifier:
    """Batched signature verification off the event loop: ``jobs`` worker processes
    (default :func:`default_verify_jobs`; solders' ed25519 verify holds the GIL, so threads
    would not run in parallel; measured in spec/tpu.md). ``jobs=0`` verifies in a worker
    thread of the node's own process only."""

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = max(0, jobs if jobs is not None else default_verify_jobs())
        self._pool: ProcessPoolExecutor | None = None
        self._limiter = trio.CapacityLimiter(max(1, self.jobs))
        self.verified = 0
        self.batches = 0

    def start(self) -> None:
        if self.jobs >= 1 and self._pool is None:  # one worker too: its verify holds that process's GIL, not ours
            # spawn: the node process runs trio and worker threads; fork would copy their locks
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=exit_with_parent, initargs=(os.getpid(),))
            for _ in range(self.jobs):  # start and import in every worker now, not on the first batch
                self._pool.submit(_verify_chunk, [])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def verify(self, raws: Sequence[bytes]) -> list[str | None]:
        """For each transaction: None if it parses and every signature verifies, else the
        refusal reason (``bad-signature``, ``bad-transaction``, ...)."""
        if not raws:
            return []
        self.batches += 1
        self.verified += len(raws)
        raws = list(raws)
        pool = self._pool
        if pool is None or len(raws) < MIN_TXS_FOR_VERIFY_POOL:
            out = await trio.to_thread.run_sync(verify_transaction_signatures, raws, limiter=self._limiter)
        else:
            n = self.jobs
            size = -(-len(raws) // n)
            chunks = [raws[i:i + size] for i in range(0, len(raws), size)]
            futs = [pool.submit(_verify_chunk, c) for c in chunks]
            out = []
            for f in futs:
                out += await trio.to_thread.run_sync(f.result, limiter=self._limiter)
        return [None if r is None else r.split(":", 1)[0] for r in out]


@dataclass
class TpuStats:
    batches_in: int = 0  # TxBatch requests served
    txs_in: int = 0  # transactions offered (own submissions and peers' batches)
    admitted: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    batches_out: int = 0  # TxBatch requests answered by a leader
    send_failed: collections.Counter[str] = field(default_factory=collections.Counter)  # by error code
    gossip_fallback: int = 0  # transactions published on the txs topic because no leader answered
    fallback_refused: int = 0  # not gossiped: over GOSSIP_FALLBACK_TXS_PER_S (a flood must not reach the votes' inbox)
    forward_self: int = 0  # not forwarded: no other leader in the forward window
    forward_queue_full: int = 0  # admitted here but not forwarded (queue full): they wait for our own slot


class Tpu:
    """The node's transaction ingress (module docstring)."""

    def __init__(self, v: Validator, verifier: SigVerifier | None = None) -> None:
        self.v = v
        self.verifier = verifier or SigVerifier()
        self.stats = TpuStats()
        self._nonce = 0
        self._fwd_send, self._fwd_recv = trio.open_memory_channel[bytes](FORWARD_QUEUE_LEN)
        self._forwarding = False
        self._fallback_bucket = TokenBucket(*GOSSIP_FALLBACK_BUCKET)

    # -- admission --------------------------------------------------------------------------
    async def ingest(self, raws: Sequence[bytes]) -> tuple[int, collections.Counter[str]]:
        """Steps 1-4 of the module docstring: ``(admitted, refused per reason)``."""
        v = self.v
        self.stats.txs_in += len(raws)
        refused: collections.Counter[str] = collections.Counter()
        tip = v.tip_bank()
        seen: set[bytes] = set()
        todo: list[bytes] = []
        for raw in raws:
            raw = bytes(raw)
            if len(raw) > MAX_TPU_TX_BYTES:
                refused["oversized"] += 1
                continue
            reason = v.mempool.precheck(raw, tip)
            if reason is None and raw[1:65] in seen:
                reason = "duplicate"
            if reason is not None:
                refused[reason] += 1
                continue
            seen.add(raw[1:65])
            todo.append(raw)
        for reason, n in refused.items():
            self.v.mempool.refuse(reason, n)  # counted with the mempool's own refusals
        admitted = 0
        if todo:
            for raw, problem in zip(todo, await self.verifier.verify(todo), strict=True):
                if problem is not None:
                    refused[problem] += 1
                    v.mempool.refuse(problem)
                elif v.add_tx(raw, verified=True):
                    admitted += 1
                else:  # the pool changed while we verified (a copy arrived, it filled up); add counted it
                    refused[v.mempool.precheck(raw, v.tip_bank()) or "duplicate"] += 1
        self.stats.admitted += admitted
        self.stats.refused.update(refused)
        return admitted, refused

    async def handle_batch(self, _peer: Any, req: TxBatch) -> TxBatchAck:
        """``/ambient/tpu/1``: admit a peer's batch; answer what became of it."""
        self.stats.batches_in += 1
        if not self.v.loaded:
            raise ReqRespError("unavailable", "the node is still loading its ledger")
        admitted, refused = await self.ingest(req.txs)
        top = refused.most_common(MAX_TPU_REASONS)
        return TxBatchAck(nonce=req.nonce, admitted=admitted, reasons=tuple(r for r, _n in top),
                          counts=tuple(n for _r, n in top))

    # -- submission -------------------------------------------------------------------------
    def forward_targets(self, now_ms: int | None = None) -> list[bytes]:
        """The distinct leaders of the current slot and the next ``LEADER_FORWARD_SLOTS``
        slots, in slot order, this node excluded."""
        v = self.v
        s = v.slot_at(v.clock.wall_ms() if now_ms is None else now_ms)
        out: list[bytes] = []
        for slot in range(s, s + LEADER_FORWARD_SLOTS + 1):
            leader = v.book.leader(slot)
            if leader is not None and leader != v.kp.pubkey and leader not in out:
                out.append(leader)
        return out

    async def submit_transactions(self, raws: Sequence[bytes]) -> dict[str, Any]:
        """Admit ``raws`` here and queue what is pending here for the current and next
        leaders (module docstring); the one entry point for the CLI and the RPC. Returns
        at once (agave's sendTransaction does not wait for the leader either): counts
        ``admitted`` and ``refused`` (per reason) here, ``queued`` for forwarding. Without
        a running forwarder (:meth:`forwarder`) the batch is forwarded before returning."""
        admitted, refused = await self.ingest(raws)
        # what is pending here (admitted now, or earlier: a client retry is forwarded again), once each
        ok_raws = list({bytes(r)[1:65]: bytes(r) for r in raws
                        if 65 <= len(r) <= MAX_TPU_TX_BYTES and bytes(r) in self.v.mempool}.values())
        queued = 0
        if self._forwarding:
            for raw in ok_raws:
                try:
                    self._fwd_send.send_nowait(raw)
                    queued += 1
                except trio.WouldBlock:
                    self.stats.forward_queue_full += 1  # it stays in this node's mempool
        elif ok_raws:
            await self.forward_or_gossip(ok_raws)
            queued = len(ok_raws)
        return {"ok": True, "admitted": admitted, "refused": dict(refused), "queued": queued}

    async def forwarder(self) -> None:
        """Forward queued transactions: take what is queued (up to ``FORWARD_MAX_TXS``),
        send it to the leaders, repeat."""
        self._forwarding = True
        try:
            while True:
                batch = [await self._fwd_recv.receive()]
                await trio.sleep(FORWARD_LINGER_S)  # let a burst of submissions join one round
                while len(batch) < FORWARD_MAX_TXS:
                    try:
                        batch.append(self._fwd_recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self.forward_or_gossip(batch)
        finally:
            self._forwarding = False

    async def forward_or_gossip(self, raws: Sequence[bytes]) -> int:
        """:meth:`forward`; when no leader acknowledged, the ``txs`` gossip topic (the
        fallback). Returns the leaders that acknowledged."""
        if not self.forward_targets():
            self.stats.forward_self += len(raws)  # this node leads every upcoming slot: its own pool
            return 0
        timeouts = self.stats.send_failed["timeout"]
        leaders_ok = await self.forward(raws)
        # a timeout means a slow leader (it most likely admitted the batch): gossiping then
        # would amplify an overload; only unreachable leaders fall back
        if leaders_ok == 0 and self.stats.send_failed["timeout"] == timeouts and self.v.port is not None:
            for raw in raws:
                if not self._fallback_bucket.take():
                    self.stats.fallback_refused += 1  # still in this node's mempool for its own slots
                    continue
                await self.v.port.publish("txs", raw)
                self.stats.gossip_fallback += 1
        return leaders_ok

    async def forward(self, raws: Sequence[bytes]) -> int:
        """Send ``raws`` in batches to every forward target at once; how many leaders
        acknowledged every batch."""
        port = self.v.port
        if port is None:
            return 0
        from ..net.host import peer_id_of

        batches = [tuple(raws[i:i + MAX_TXS_PER_TX_BATCH]) for i in range(0, len(raws), MAX_TXS_PER_TX_BATCH)]
        ok: list[bool] = []

        async def send(leader: bytes) -> None:
            peer = peer_id_of(leader)
            for b in batches:
                self._nonce = (self._nonce + 1) & 0xFFFFFFFF
                try:
                    await port.request(peer, PROTO_TPU, TxBatch(nonce=self._nonce, txs=b), TPU_REQUEST_TIMEOUT_S)
                except ReqRespError as exc:
                    self.stats.send_failed[exc.code] += 1
                    return
                except Exception as exc:  # noqa: BLE001 - a broken stream is one failed send, counted
                    self.stats.send_failed[type(exc).__name__] += 1
                    return
                self.stats.batches_out += 1
            ok.append(True)

        async with trio.open_nursery() as nursery:
            for leader in self.forward_targets():
                nursery.start_soon(send, leader)
        return len(ok)

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {"batches_in": s.batches_in, "txs_in": s.txs_in, "admitted": s.admitted, "refused": dict(s.refused),
                "batches_out": s.batches_out, "send_failed": dict(s.send_failed), "gossip_fallback": s.gossip_fallback,
                "forward_queue_full": s.forward_queue_full, "forward_self": s.forward_self,
                "fallback_refused": s.fallback_refused,
                "verified": self.verifier.verified, "verify_jobs": self.verifier.jobs,
                "mempool": len(self.v.mempool), "mempool_dropped": dict(self.v.mempool.dropped),
                "mempool_landed_removed": self.v.mempool.landed_removed}


class TpuExtension(ExtensionBase):
    """The TPU as a node extension (node/compose.py): serves ``/ambient/tpu/1``, answers the
    ``submit_tx`` / ``submit_txs`` control commands (compose it before the validator's part,
    which answers ``submit_tx`` by gossip alone), adds ``tpu`` to status."""

    def __init__(self, tpu: Tpu) -> None:
        self.tpu = tpu

    def reqresp_handlers(self) -> dict[str, Any]:
        return {PROTO_TPU: self.tpu.handle_batch}

    def status(self) -> dict[str, Any]:
        return {"tpu": self.tpu.status()}

    def status_line(self) -> str:
        return f"mempool={len(self.tpu.v.mempool)}"

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        cmd = req.get("cmd")
        if cmd == "tx_status":
            return self.tx_status(req)
        if cmd not in ("submit_tx", "submit_txs"):
            return None
        try:
            hexes = [req["tx_hex"]] if cmd == "submit_tx" else list(req["txs_hex"])
            raws = [bytes.fromhex(h) for h in hexes]
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"bad transaction hex: {exc}"}
        if not self.tpu.v.loaded:
            return {"ok": False, "error": "the node is still loading its ledger"}
        return await self.tpu.submit_transactions(raws)

    def tx_status(self, req: dict[str, Any]) -> dict[str, Any]:
        """``tx_status``: for each first signature (hex) in ``sigs_hex`` (at most
        ``MAX_STATUS_SIGNATURES``), the highest commitment whose bank processed it here:
        ``finalized``, ``confirmed``, ``processed`` or null (bench chain's probe; the
        RPC's getSignatureStatuses is the client API)."""
        v = self.tpu.v
        try:
            sigs = [bytes.fromhex(h) for h in req["sigs_hex"]][:MAX_STATUS_SIGNATURES]
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"bad signature hex: {exc}"}
        levels = []
        for name, slot in (("finalized", v.cons.finalized_slot()), ("confirmed", v.cons.confirmed_slot()),
                           ("processed", v.cons.processed_slot())):
            res = v.banks.get(slot)
            if res is not None:
                levels.append((name, res.bank.status_cache))
        out: list[str | None] = []
        for sig in sigs:
            out.append(next((name for name, cache in levels if sig in cache), None))
        return {"ok": True, "status": out, "finalized_slot": v.cons.finalized_slot()}

    async def run(self, node: Any) -> None:
        self.tpu.verifier.start()
        try:
            await self.tpu.forwarder()
        finally:
            self.tpu.verifier.close()
