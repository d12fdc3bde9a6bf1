"""Faults a miner can commit, for tests only (issue 12 item 6): a devnet harness outside the
production code path, selected by the hidden ``join``/``run --miner-fault KIND`` flag (like
``--equivocate-slot``). Each kind is the honest miner (node/miner.py) with one step changed:

| kind | what it does | what the chain does (spec/auction.md) |
| --- | --- | --- |
| ``never-post`` | wins, never runs the model or posts | anyone's ``expire`` after the deadline: requester refunded, bond to the incinerator |
| ``post-late`` | holds its result until the deadline slot, then posts | ``auction-deadline-passed``; then ``expire`` as above |
| ``wrong-output`` | posts a result whose ``output_hash`` is not its answer's (signed, so the program accepts it) | ``RESULT_POSTED``; only the Logit Pool can catch it (the answer blob does not hash to it) |
| ``wrong-reveal`` | reveals a price one lamport above the one it committed | ``auction-bid-mismatch``; the bid stays ``COMMITTED`` and forfeits its bond at close |
| ``perturbed-model`` | answers from the embedded model with every weight scaled by ``1 + 1e-3 * N(0, 1)`` (a cheaper or altered model claimed as the real one; it still names the real ``model_id``) | ``RESULT_POSTED``; the drawn validators' forward pass rejects its openings (spec/pol.md: 1e-3 noise moves committed values by a median 216 grid units, tau is 4): ``FINALIZED_REJECTED``, bond slashed (spec/logit_pool.md) |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import auction as au
from ..core import auction_tx as atx
from ..core import miner_policy as mp
from ..core.crypto import sha256
from ..node.miner import MinerService

if TYPE_CHECKING:  # pragma: no cover
    import trio

    from ..core.bank import Bank

FAULTS = ("never-post", "post-late", "wrong-output", "wrong-reveal", "perturbed-model")
#: relative weight noise of ``perturbed-model`` and the seed of its generator
PERTURB_RELATIVE = 1e-3
PERTURB_SEED = 13


def perturb_weights(lm: object) -> None:
    """Worker thread: scale every parameter of ``lm.model`` by ``1 + PERTURB_RELATIVE * N(0, 1)``."""
    import torch

    gen = torch.Generator().manual_seed(PERTURB_SEED)
    with torch.no_grad():
        for p in lm.model.parameters():  # type: ignore[attr-defined]
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
            p.mul_(1 + PERTURB_RELATIVE * noise)


class FaultyMiner(MinerService):
    """The honest miner with the fault ``kind`` (module docstring)."""

    fault: str = ""
    late: set[bytes]
    perturbed: bool = False

    async def serve(self, q: au.QueryAccount) -> None:
        if self.fault == "perturbed-model" and not self.perturbed and self.lm is not None:
            import trio

            await trio.to_thread.run_sync(perturb_weights, self.lm, limiter=self.worker)
            self.perturbed = True
            self.failures["fault-perturbed-model"] = 1
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
        if f == "wrong-output" and isinstance(act, mp.Post) and act.query in self.jobs:
            job, q = self.jobs[act.query], queries[act.query]
            bad = sha256(b"not the answer", job.result.output_hash)
            r = atx.sign_result(self.kp, q, output_hash=bad, num_tokens=job.result.num_tokens, tier=job.result.tier,
                                top_k=job.result.top_k, vocab=job.result.vocab, pol_root=job.result.pol_root)
            await self.send(atx.post_result_transaction(self.kp, act.query, r, bank.last_blockhash))
            return
        await super().perform(act, bank, queries, bids, nursery)


def faulty_miner(kind: str, *args: object, **kw: object) -> FaultyMiner:
    if kind not in FAULTS:
        raise ValueError(f"unknown miner fault {kind!r} (one of {', '.join(FAULTS)})")
    m = FaultyMiner(*args, **kw)  # type: ignore[arg-type]
    m.fault = kind
    m.late = set()
    return m
