"""TOPLOC side by side (benchmark only; ``toploc`` is never a runtime dependency).

TOPLOC (Ong et al. 2025, PyPI ``toploc``) commits to the top-k values of the last hidden
state, bf16, encoded as a polynomial per chunk of ``TOPLOC_DECODE_BATCH`` decode tokens;
the verifier recomputes the hidden states with one prefill pass and compares exponents
and mantissas. We run it on the same model, prompts and (cheating) producers as our
detection experiment and report its bytes, costs and detection next to ours.

Thresholds are the ones TOPLOC's README uses for bf16 with top-k 128.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..model import runner
from . import polbench

TOPLOC_TOPK = 128
TOPLOC_DECODE_BATCH = 32
TOPLOC_MAX_EXP_MISMATCHES = 90
TOPLOC_MAX_MANT_ERR_MEAN = 10
TOPLOC_MAX_MANT_ERR_MEDIAN = 8


def _import_toploc() -> Any:
    try:
        import toploc
    except ImportError as exc:
        raise RuntimeError(
            "toploc is not importable: build it against this torch with "
            "'pip install --no-build-isolation --no-binary toploc toploc' (benchmark only)"
        ) from exc
    return toploc


@torch.inference_mode()
def generate_hidden(lm: runner.LoadedModel, prompt: Sequence[int], n_new: int) -> tuple[list[int], list[torch.Tensor], float]:
    """Greedy single-sequence KV-cache generation keeping the final hidden state of every
    step (TOPLOC's activations). Returns output, activations, generation seconds."""
    from transformers import DynamicCache

    t0 = time.perf_counter()
    ids = torch.tensor([list(prompt)], device=lm.device)
    cache = DynamicCache()
    acts: list[torch.Tensor] = []
    out_ids: list[int] = []
    for step in range(n_new):
        h = lm.model.model(input_ids=ids, use_cache=True, **runner.cache_kwargs(lm.model.model, cache)).last_hidden_state[0]
        acts.append(h if step == 0 else h[-1])
        tok = int(lm.model.lm_head(h[-1]).argmax())
        out_ids.append(tok)
        ids = torch.tensor([[tok]], device=lm.device)
    return out_ids, acts, time.perf_counter() - t0


@torch.inference_mode()
def recompute_hidden(lm: runner.LoadedModel, prompt: Sequence[int], output: Sequence[int]) -> list[torch.Tensor]:
    """The validator's activations from one prefill pass over prompt + output[:-1]."""
    seq = list(prompt) + list(output[:-1])
    h = lm.model.model(input_ids=torch.tensor([seq], device=lm.device)).last_hidden_state[0]
    n_prompt = len(prompt)
    return [h[:n_prompt]] + [h[n_prompt + i] for i in range(len(output) - 1)]


def _passes(results: Sequence[Any]) -> bool:
    return all(
        r.exp_mismatches <= TOPLOC_MAX_EXP_MISMATCHES
        and r.mant_err_mean <= TOPLOC_MAX_MANT_ERR_MEAN
        and r.mant_err_median <= TOPLOC_MAX_MANT_ERR_MEDIAN
        for r in results
    )


def _bf16(acts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [a.to(torch.bfloat16).cpu() for a in acts]


def compare(lm: runner.LoadedModel, args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """TOPLOC's cost figures on one chat prompt, then its detection on ``args.toploc_proofs``
    prompts per case (batched generation, the same producers as our experiment)."""
    toploc = _import_toploc()
    kw = {"decode_batching_size": TOPLOC_DECODE_BATCH, "topk": TOPLOC_TOPK, "skip_prefill": True}
    out: dict[str, Any] = {
        "topk": TOPLOC_TOPK,
        "decode_batching_size": TOPLOC_DECODE_BATCH,
        "skip_prefill": True,
        "thresholds": [TOPLOC_MAX_EXP_MISMATCHES, TOPLOC_MAX_MANT_ERR_MEAN, TOPLOC_MAX_MANT_ERR_MEDIAN],
        "cases": {},
    }
    chat = lm.encode_prompt("Write a short paragraph about why the sky is blue.")
    generate_hidden(lm, chat, 2)  # warm-up
    output, acts, gen_s = generate_hidden(lm, chat, args.cost_tokens)
    t0 = time.perf_counter()
    proofs = toploc.build_proofs_bytes(_bf16(acts), **kw)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ok = _passes(toploc.verify_proofs_bytes(_bf16(recompute_hidden(lm, chat, output)), proofs, **kw))
    verify_s = time.perf_counter() - t0
    out["cost"] = {
        "tokens": len(output),
        "generation_s": gen_s,
        "build_s": build_s,
        "commit_overhead_fraction": build_s / gen_s,
        "validate_s": verify_s,
        "validate_vs_generation": verify_s / gen_s,
        "proof_bytes": sum(len(x) for x in proofs),
        "proof_bytes_per_token": sum(len(x) for x in proofs) / len(output),
        "honest_accepted": ok,
    }
    log(f"  toploc cost: {out['cost']}")
    producers: dict[str, Callable[[], runner.LoadedModel]] = {
        "honest": lambda: lm,
        "noise-1e-3": lambda: polbench.variant(lm, polbench.add_noise(polbench.NOISE_REL)),
        "bf16-producer": lambda: polbench.variant(lm, lambda m: None, dtype=torch.bfloat16),
        "int8-weights": lambda: polbench.variant(lm, polbench.int8_per_channel),
        "int4-weights": lambda: polbench.variant(lm, polbench.int4_grouped),
        "different-model": lambda: polbench.different_model(lm),
    }
    prompts = [lm.encode_prompt(p, chat=False) for p in polbench.prompts(args.toploc_proofs)]
    for case, make in producers.items():
        producer = make()
        rejected = 0
        t_case = time.perf_counter()
        for s in range(0, len(prompts), args.batch):
            chunk = prompts[s : s + args.batch]
            for p, (o, _fps, hid) in zip(chunk, polbench.generate_batch(producer, chunk, args.toploc_tokens, keep_hidden=True), strict=True):
                pr = toploc.build_proofs_bytes(_bf16(hid), **kw)
                res = toploc.verify_proofs_bytes(_bf16(recompute_hidden(lm, p, o)), pr, **kw)
                rejected += not _passes(res)
        out["cases"][case] = {"proofs": len(prompts), "reject_rate": rejected / len(prompts), "seconds": round(time.perf_counter() - t_case, 1)}
        log(f"  toploc {case}: {out['cases'][case]}")
    return out
