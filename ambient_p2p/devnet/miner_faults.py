"""Faults a miner can commit, for tests only (issue 12 item 6): a devnet harness outside the
production code path, selected by the hidden ``join``/``run --miner-fault KIND`` flag (like
``--equivocate-slot``). Each kind is the honest miner (node/miner.py) with one step changed:

| kind | what it does | what the chain does (spec/auction.md) |
| --- | --- | --- |
| ``never-post`` | wins, never runs the model or posts | anyone's ``expire`` after the deadline: requester refunded, bond to the incinerator |
| ``post-late`` | holds its result until the deadline slot, then posts | ``auction-deadline-passed``; then ``expire`` as above |
| ``wrong-output`` | posts a result whose ``output_hash`` is not its answer's (signed, so the program accepts it) | ``RESULT_POSTED``; no blob hashes to it and no proof has its commitment, so the drawn validators send unavailable verdicts: ``FINALIZED_REJECTED``, bond to the incinerator, the miner's work slashed (spec/logit_pool.md "Unavailable data") |
| ``wrong-reveal`` | reveals a price one lamport above the one it committed | ``auction-bid-mismatch``; the bid stays ``COMMITTED`` and forfeits its bond at close |
| ``perturbed-model`` | answers from the embedded model with every weight scaled by ``1 + 1e-3 * N(0, 1)`` (a cheaper or altered model claimed as the real one; it still names the real ``model_id``) | ``RESULT_POSTED``; the drawn validators' forward pass rejects its openings (spec/pol.md: 1e-3 noise moves committed values by a median 216 grid units, tau is 4): ``FINALIZED_REJECTED``, bond slashed (spec/logit_pool.md) |
| ``bf16-model`` | answers from the embedded model cast to bfloat16 (half the memory traffic) but commits as tier ``FP32`` (``tau`` 4 grid units), the tier the honest fp32 model earns | ``RESULT_POSTED``; bf16 moves committed values by up to 0.49 nats (spec/pol.md), far past ``tau``: ``FINALIZED_REJECTED``, bond slashed |
| ``int8-model`` | answers from the embedded model with every matrix quantized to int8 (llama.cpp ``Q8_0``: blocks of 32 along a row, one scale ``max(abs(w)) / 127`` per block, norms kept), committed as tier ``FP32`` | as ``bf16-model`` |
| ``other-prompt`` | answers a fixed other prompt (``OTHER_PROMPT``) with an honest proof of that prompt's generation, the commitment re-signed naming the query's prompt (its ``prompt_hash``); the answer blob is that other answer | ``RESULT_POSTED``; the validators' pass over the real prompt disagrees with the committed values: ``FINALIZED_REJECTED``, bond slashed |
| ``wrong-token`` | answers honestly, then replaces the last output token by one outside the committed top-k (the honest fingerprint kept, the commitment re-signed over the changed answer) | ``RESULT_POSTED``; an honest validator's greedy check rejects it, and its committed leaf contradicts itself: a fraud proof is decided by the program alone (spec/logit_pool.md "Retrospective slashing") |

Validator faults (``--logit-pool --pool-fault KIND``, :func:`faulty_pool`):

| kind | what it does | what the chain does |
| --- | --- | --- |
| ``always-accept`` | a drawn validator that accepts every answer without fetching or checking it (it loads no model) and, as a juror, rules every challenge unfounded; it never challenges | two such colluders verify a fraudulent result; an honest validator's fraud proof then slashes the miner and both of them (spec/logit_pool.md "Retrospective slashing") |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import auction as au
from ..core import auction_tx as atx
from ..core import miner_policy as mp
from ..core import pol
from ..core.crypto import sha256
from ..node.miner import PROOF_DIR, MinerService, _Job
from ..node.validator_pool import PoolValidator

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import trio

    from ..core.bank import Bank
    from ..core.crypto import Keypair
    from ..model.runner import LoadedModel

FAULTS = ("never-post", "post-late", "wrong-output", "wrong-reveal", "perturbed-model", "wrong-token", "bf16-model",
          "int8-model", "other-prompt")
#: faults that change the model once, before the first answer (worker thread)
MODEL_FAULTS = ("perturbed-model", "bf16-model", "int8-model")
POOL_FAULTS = ("always-accept",)
#: relative weight noise of ``perturbed-model`` and the seed of its generator
PERTURB_RELATIVE = 1e-3
PERTURB_SEED = 13
#: ``int8-model``: llama.cpp's Q8_0 block (weights per scale) and the int8 range it uses
Q8_BLOCK = 32
Q8_MAX = 127
#: ``other-prompt``: the prompt whose answer is served instead of the query's
OTHER_PROMPT = "Write one sentence about the sea."


def perturb_weights(lm: object) -> None:
    """Worker thread: scale every parameter of ``lm.model`` by ``1 + PERTURB_RELATIVE * N(0, 1)``."""
    import torch

    gen = torch.Generator().manual_seed(PERTURB_SEED)
    with torch.no_grad():
        for p in lm.model.parameters():  # type: ignore[attr-defined]
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
            p.mul_(1 + PERTURB_RELATIVE * noise)


def to_bf16(lm: object) -> None:
    """Worker thread: cast ``lm.model`` to bfloat16, leaving ``lm.dtype`` (float32) as it was,
    so the miner still declares the fp32 tier (node/miner.py picks the tier from ``lm.dtype``)."""
    import torch

    lm.model.to(torch.bfloat16)  # type: ignore[attr-defined]


def quantize_int8(lm: object) -> None:
    """Worker thread: round every matrix of ``lm.model`` to int8 as llama.cpp's ``Q8_0`` does
    (blocks of ``Q8_BLOCK`` along the last axis, scale ``max|w| / Q8_MAX``), stored dequantized
    in the model's dtype; vectors (norms) stay as they are, as in a Q8_0 file."""
    import torch

    with torch.no_grad():
        for p in lm.model.parameters():  # type: ignore[attr-defined]
            if p.dim() < 2 or p.shape[-1] % Q8_BLOCK:
                continue
            blocks = p.reshape(-1, Q8_BLOCK)
            scale = blocks.abs().amax(dim=1, keepdim=True) / Q8_MAX
            scale = torch.where(scale == 0, torch.ones_like(scale), scale)
            p.copy_((torch.round(blocks / scale).clamp(-Q8_MAX, Q8_MAX) * scale).reshape(p.shape))


MODEL_FAULT_FN = {"perturbed-model": perturb_weights, "bf16-model": to_bf16, "int8-model": quantize_int8}


def other_prompt_proof(lm: LoadedModel, kp: Keypair, prompt: list[int], max_tokens: int, *, tier: pol.Tier,
                       temp_milli: int, sample_seed: bytes, other: str = OTHER_PROMPT) -> pol.PolProof:
    """Worker thread (``other-prompt``): an honest generation and fingerprints for ``other``,
    committed and signed as the answer to ``prompt`` (the query's)."""
    from ..model import runner

    gen = runner.generate(lm, lm.encode_prompt(other), max_tokens, temp_milli=temp_milli, sample_seed=sample_seed)
    return pol.commit(kp, model_id=lm.model_id, tier=tier, vocab=lm.vocab_size, top_k=pol.TOP_K,
                      temp_milli=temp_milli, sample_seed=sample_seed, prompt=prompt, output=gen.output,
                      fps=gen.fingerprints)


def swap_other_prompt(lm: LoadedModel, kp: Keypair, proof_path: Path, job: _Job) -> _Job:
    """Worker thread (``other-prompt``): the kept proof replaced by :func:`other_prompt_proof`
    for the same query (its prompt, token budget, tier and sampling), the proof file rewritten."""
    import time

    from ..core.codec import decode, encode

    t0 = time.perf_counter()
    proof = decode(proof_path.read_bytes(), expected=pol.PolProof)
    c = proof.commitment
    new = other_prompt_proof(lm, kp, list(proof.prompt), max(1, c.num_tokens), tier=pol.Tier(c.tier),
                             temp_milli=c.temp_milli, sample_seed=c.sample_seed)
    proof_path.write_bytes(encode(new))
    n = new.commitment
    return _Job(au.ResultParams(n.output_hash, n.num_tokens, n.tier, n.top_k, n.vocab, n.root, n.signature),
                list(new.output), job.model_s + time.perf_counter() - t0)


class FaultyMiner(MinerService):
    """The honest miner with the fault ``kind`` (module docstring)."""

    fault: str = ""
    late: set[bytes]
    perturbed: bool = False

    async def serve(self, q: au.QueryAccount) -> None:
        if self.fault in MODEL_FAULTS and not self.perturbed and self.lm is not None:
            import trio

            await trio.to_thread.run_sync(MODEL_FAULT_FN[self.fault], self.lm, limiter=self.worker)
            self.perturbed = True
            self.failures[f"fault-{self.fault}"] = 1
        await super().serve(q)

    async def _post_at_deadline(self, qid: bytes, q: au.QueryAccount) -> None:
        import trio

        # sleep until the deadline slot begins (the node's slot clock)
        await trio.sleep(max(0.0, (self.v.slot_start_ms(q.deadline_slot) - self.v.clock.wall_ms()) / 1000))
        bank = self.bank()
        if bank is not None:
            self.failures["fault-post-late"] = self.failures.get("fault-post-late", 0) + 1
            await self.send(atx.post_result_transaction(self.kp, qid, self.jobs[qid].result, bank.last_blockhash))

    async def perform(self, act: mp.Action, bank: Bank, queries: dict[bytes, au.QueryAccount],
                      bids: dict[bytes, dict[bytes, au.BidAccount]], nursery: trio.Nursery) -> None:
        f = self.fault
        if f == "never-post" and isinstance(act, mp.Serve | mp.Post):
            self.failures["fault-never-post"] = self.failures.get("fault-never-post", 0) + 1
            return
        if f == "post-late" and isinstance(act, mp.Post):
            if act.query not in self.late:
                self.late.add(act.query)
                nursery.start_soon(self._post_at_deadline, act.query, queries[act.query])
            return
        if f == "wrong-reveal" and isinstance(act, mp.Reveal):
            await self.send(atx.reveal_bid_transaction(self.kp, act.query, act.price + 1, act.salt,
                                                       bank.last_blockhash))
            return
        if f == "wrong-token" and isinstance(act, mp.Post) and act.query in self.jobs and act.query not in self.late:
            # swap before the (only) post: the kept proof, the answer blob and the result change together
            import trio

            from ..core.blobs import BLOB_RETENTION_SLOTS, token_blob

            self.late.add(act.query)  # swapped once
            q = queries[act.query]
            job = await trio.to_thread.run_sync(swap_last_token, self.kp, self.v.data_dir / PROOF_DIR /
                                                f"{act.query.hex()}.cbor", self.jobs[act.query])
            await self.blobs.put(token_blob(job.output), q.deadline_slot + BLOB_RETENTION_SLOTS)
            self.jobs[act.query] = job
            self.failures["fault-wrong-token"] = self.failures.get("fault-wrong-token", 0) + 1
            await self.send(atx.post_result_transaction(self.kp, act.query, job.result, bank.last_blockhash))
            return
        if f == "other-prompt" and isinstance(act, mp.Post) and act.query in self.jobs and act.query not in self.late \
                and self.lm is not None:
            import trio

            from ..core.blobs import BLOB_RETENTION_SLOTS, token_blob

            self.late.add(act.query)  # swapped once
            q = queries[act.query]
            job = await trio.to_thread.run_sync(swap_other_prompt, self.lm, self.kp, self.v.data_dir / PROOF_DIR /
                                                f"{act.query.hex()}.cbor", self.jobs[act.query], limiter=self.worker)
            await self.blobs.put(token_blob(job.output), q.deadline_slot + BLOB_RETENTION_SLOTS)
            self.jobs[act.query] = job
            self.failures["fault-other-prompt"] = self.failures.get("fault-other-prompt", 0) + 1
            await self.send(atx.post_result_transaction(self.kp, act.query, job.result, bank.last_blockhash))
            return
        if f == "wrong-output" and isinstance(act, mp.Post) and act.query in self.jobs:
            job, q = self.jobs[act.query], queries[act.query]
            bad = sha256(b"not the answer", job.result.output_hash)
            r = atx.sign_result(self.kp, q, output_hash=bad, num_tokens=job.result.num_tokens, tier=job.result.tier,
                                top_k=job.result.top_k, vocab=job.result.vocab, pol_root=job.result.pol_root)
            await self.send(atx.post_result_transaction(self.kp, act.query, r, bank.last_blockhash))
            return
        await super().perform(act, bank, queries, bids, nursery)


def swap_last_token(kp: Keypair, proof_path: Path, job: _Job) -> _Job:
    """Worker thread (``wrong-token``): the kept proof with its last output token replaced by
    the smallest id outside the committed top-k, the fingerprint's ``tok`` with it (its values
    untouched), the commitment re-signed over the changed answer; the proof file rewritten."""
    from dataclasses import replace

    from ..core.codec import decode, encode

    proof = decode(proof_path.read_bytes(), expected=pol.PolProof)
    c, fps, output = proof.commitment, list(proof.fps), list(proof.output)
    tok = next(t for t in range(c.vocab) if t not in fps[-1].ids)
    output[-1] = tok
    fps[-1] = replace(fps[-1], tok=tok)
    new = pol.commit(kp, model_id=c.model_id, tier=pol.Tier(c.tier), vocab=c.vocab, top_k=c.top_k,
                     temp_milli=c.temp_milli, sample_seed=c.sample_seed, prompt=proof.prompt, output=output, fps=fps)
    proof_path.write_bytes(encode(new))
    n = new.commitment
    return _Job(au.ResultParams(n.output_hash, n.num_tokens, n.tier, n.top_k, n.vocab, n.root, n.signature), output,
                job.model_s)


class CollusivePool(PoolValidator):
    """``always-accept``: accepts whatever it is drawn for, unchecked; rules no fraud; never challenges."""

    fault: str = ""

    async def run(self) -> None:
        import trio

        self.state = "validating"  # no model: it never checks anything
        async with trio.open_nursery() as nursery:
            while True:
                if self.v.loaded:
                    await self.tick(nursery)
                with trio.move_on_after(self.v.slot_ms / 2000):
                    await self.v.frozen_event.wait()

    async def check(self, qid: bytes, q: au.QueryAccount, positions: list[int], verify_end: int | None = None) -> None:
        try:
            self.verdicts[qid] = (True, None)
            self.sent[qid] = self.slot()
            self.stats.accepted += 1
            self.stats.verdicts_sent += 1
            self.stats.failures["fault-always-accept"] = self.stats.failures.get("fault-always-accept", 0) + 1
            bank = self.bank()
            if bank is not None:
                await self.send(atx.verdict_transaction(self.kp, qid, True, None, bank.last_blockhash))
        finally:
            self.busy.discard(qid)

    async def judge(self, qid: bytes, q: au.QueryAccount, d: object) -> None:
        try:
            self.ruled[qid] = (False, self.slot())
            self.stats.rulings_sent += 1
            bank = self.bank()
            if bank is not None:
                await self.send(atx.ruling_transaction(self.kp, qid, False, bank.last_blockhash))
        finally:
            self.busy.discard(qid)

    async def challenge(self, qid: bytes, q: au.QueryAccount) -> None:
        self.busy.discard(qid)


def faulty_pool(kind: str, *args: object, **kw: object) -> CollusivePool:
    if kind not in POOL_FAULTS:
        raise ValueError(f"unknown pool fault {kind!r} (one of {', '.join(POOL_FAULTS)})")
    p = CollusivePool(*args, **kw)  # type: ignore[arg-type]
    p.fault = kind
    return p


def faulty_miner(kind: str, *args: object, **kw: object) -> FaultyMiner:
    if kind not in FAULTS:
        raise ValueError(f"unknown miner fault {kind!r} (one of {', '.join(FAULTS)})")
    m = FaultyMiner(*args, **kw)  # type: ignore[arg-type]
    m.fault = kind
    m.late = set()
    return m
